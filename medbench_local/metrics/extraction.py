"""Extract the chosen option letter from free-text model output.

Why a cascade with explicit outcomes: the most common silent failure of
LLM benchmark harnesses is mis-scoring answers they could not parse (a
regex grabs the "A" of "A 45-year-old man...", or an unparsed answer is
quietly counted as wrong or as option A).  Here every item gets an
``Extraction`` saying *which* letter was chosen, *how* it was found and
*why*, or an explicit ``None`` with the reason ("empty output",
"conflicting explicit answers: A, C", "ambiguous: ...", "no answer
found").  Stages run from most to least trustworthy and the first one that
yields a *unique* answer wins:

1. ``explicit``    - the model states its answer ("the answer is B").
2. ``lone_letter`` - the output is (or starts with) a bare option label.
3. ``fuzzy``       - the output quotes exactly one option's text (as whole words).

Two checks guard the stages against crediting a choice the model never made
(extraction version 2, issue 9; widened in version 3, issue 19):

- ``echo``: base models often just repeat the option list after the answer
  prefix ("The answer is:\\nA. Yes\\nB. No\\nC. Maybe").  Letters that belong
  to such a list (two or more options, each a label with that option's text,
  a bare label per line, a numbered line, the option text alone, a label whose
  "text" is a label or a format placeholder ("A. A.", "A. <text of option A>"),
  or three or more lines opening with consecutive labels, whatever their texts)
  are not statements; when nothing outside the list singles one option out,
  the output is unparseable with method ``echo``. So is a letter followed by
  a copy of the prompt's own format example (``instructions``), and a statement
  inside an example or condition ("If you choose option A ..., reply: ...") is
  no statement.
- ``conflict``: a letter is not credited when the words right after it *begin
  with* another option's text, whatever follows ("A. Tuberculosis is a serious
  disease" where that is option D's text), the longest option text first, or
  with a near copy of another option's text far from its own; text that begins
  with the letter's own option (also shortened), argues against the other
  option ("... is unlikely"), or names no option keeps the letter.

Anything still ambiguous is reported as ``None`` rather than guessed, so
unparsed items can be counted and audited instead of hiding in accuracy.
Every pattern is bounded and every pass is linear in the output's length
(``tools/bench_extraction.py`` measures it on pathological outputs). Error
rates against a human reading of real outputs: docs/extraction-labels.md
(tests/test_extraction_labelled.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from rapidfuzz import fuzz, process

__all__ = ["EXTRACTION_VERSION", "NO_ANSWER_METHODS", "Extraction", "extract_choice", "extraction_setting",
           "read_letter_at", "reads_with_this_extraction"]

# Part of the score identity: MCQ tasks put it into settings()["extraction"], so results scored by an older
# extraction are never mixed with new ones (``rescore --extraction`` re-scores them without regenerating).
# "2": option-list echoes are unparseable, letter-text conflicts are their own outcome.
# "3" (issue 19): a letter followed by another option's text is a conflict whatever follows that text ("A.
# Tuberculosis is ..."), longest option text first, and so is one followed by a near copy of it; lists of labels or
# placeholders for texts ("A. A.\nB. B.") and runs of consecutive labelled lines are echoes; so are copies of the
# prompt's format example; statements inside examples ("If you choose option A ...") are none; fuzzy quotes
# cover whole words.
EXTRACTION_VERSION = "3"
# Methods that credit no letter: nothing read, an echoed option list, or a letter contradicted by its text.
NO_ANSWER_METHODS = frozenset({"none", "echo", "conflict"})


def extraction_setting(cascade: str) -> str:
    """The ``settings()["extraction"]`` string of a task: its cascade plus the extraction version."""
    return f"{cascade} v{EXTRACTION_VERSION}"


def reads_with_this_extraction(setting: object) -> bool:
    """True for a task's ``settings()["extraction"]`` made by ``extraction_setting`` (a multiple-choice task
    read by this module), not e.g. the ICD regex of MeDiSumCode or LongHealth's reference-regex mode."""
    return isinstance(setting, str) and setting.endswith(f" v{EXTRACTION_VERSION}")


@dataclass(frozen=True)
class Extraction:
    """Outcome of answer extraction for one model output."""

    letter: str | None  # chosen option letter (upper case) or None when nothing is credited
    method: str  # "explicit" | "lone_letter" | "fuzzy" | "none" | "echo" | "conflict" (or a task's own)
    detail: str  # short human-readable reason


# Markdown/LaTeX decoration allowed around a letter: **B**, (B), [B], `B`, \boxed{B}.
# Repetitions are bounded so runs like "((((((" cannot make matching quadratic.
_DECOR = r"(?:(?:[*_(\[\"'“‘`$]|\\boxed\{|\\text(?:bf)?\{|\{)\s{0,3}){0,4}"
# Genus abbreviations ("C. difficile", "E. coli") look exactly like option labels.
_SPECIES = (
    r"(?!\.\s*(?:coli|difficile|diff|aureus|epidermidis|pylori|pertussis|pneumoniae|"
    r"jirovecii|trachomatis|gonorrhoeae|meningitidis|albicans|fumigatus|neoformans|"
    r"monocytogenes|perfringens|botulinum|tetani|pyogenes|agalactiae|faecalis|influenzae|"
    r"burgdorferi|falciparum|vivax|cholerae|vulnificus|lamblia|gondii)\b)"
)
# A standalone letter: never the first letter of a word ("Bronchitis", "B-cell").
_LET = r"(?P<letter>[A-Za-z])(?![\w-])" + _SPECIES
_CLOSE = r"[)\]}*_\"'”’`$]{0,6}"
_FILLER = r"(?:(?:probably|likely|clearly|definitely|either|then|therefore|most\s+likely)\s+)?"
_LABEL = r"(?:(?:option|choice|letter|answer)\s*)?"

_EXPLICIT_PATTERNS: tuple[re.Pattern[str], ...] = tuple(
    re.compile(p, re.IGNORECASE | re.MULTILINE)
    for p in (
        # "the (correct|best|final) answer is (B)", "Answer: B", "correct option is B",
        # "Answer - B", "**Answer:** B", "the answer to this question is B".
        r"\b(?:answer|option|choice)s?(?:\s+to\s+(?:this|the)\s+question)?\s*"
        r"(?:(?:is|was|would\s+be|will\s+be|should\s+be|must\s+be)\s*[:=\-–—]?|[:=\-–—])\s*"
        + _FILLER
        + _LABEL
        + _DECOR
        + _LET,
        # "the most likely diagnosis is B", "the next best step is (C)".
        r"\b(?:diagnosis|treatment|management|step|cause|explanation|mechanism|intervention)"
        r"\s+(?:is|would\s+be|will\s+be|should\s+be)\s*" + _FILLER + _LABEL + _DECOR + _LET,
        # "Final answer B" (no connector needed after "final answer").
        r"\bfinal\s+answer\s+" + _DECOR + _LET,
        # "I choose B", "I'd go with option C", "we select (D)".
        r"\b(?:I|we)(?:'d|'ll|\s+would|\s+will)?\s+(?:choose|pick|select|go\s+with|opt\s+for)\s+"
        + _LABEL
        + _DECOR
        + _LET,
        # "option B is correct", "(B) is the best answer", sentence-initial "B is correct"
        r"(?:\b(?:option|choice|answer)\s*|(?:^|(?<=[.!?:;,]))[ \t]{0,3}|(?=[(\[*]))"
        + _DECOR
        + _LET
        + _CLOSE
        + r"\s*(?:is|would\s+be|seems\s+to\s+be|appears\s+to\s+be)\s+(?:the\s+)?"
        r"(?:correct|right|best|true|answer|most\s+(?:likely|appropriate))\b",
        # "\boxed{B}" anywhere (reasoning-model convention for the final answer).
        r"\\boxed\{\s*(?:\\text(?:bf)?\{)?\s*" + _LET,
        # "not A but B": only the letter after "but" counts.
        r"\bnot\s+"
        + _LABEL
        + r"[(\[*]*[A-Za-z](?![\w-])[)\]*]*\s*,?\s*but\s+(?:rather\s+)?"
        + _LABEL
        + _DECOR
        + _LET,
    )
)
# "A is not correct" / "A is wrong" right after a captured letter: drop it.
_NEGATED_AFTER = re.compile(
    _CLOSE + r"\s*(?:(?:is|was)\s+(?:not|incorrect|wrong|unlikely|less\s+likely|ruled\s+out)\b"
    r"|(?:isn'?t|wasn'?t)\b)",
    re.IGNORECASE,
)
# "A or B", "A, B and C" right after a captured letter: a hedge, every letter counts.
_HEDGE_AFTER = re.compile(
    _CLOSE + r"\s*(?:,|/|&|\bor\b|\band\b|\band/or\b)\s*" + _LABEL + _DECOR + _LET, re.IGNORECASE
)
_FINAL_CUE = re.compile(
    r"\b(?:final|so|therefore|thus|hence|ultimately|conclusion|summary|overall)\b|\\boxed",
    re.IGNORECASE,
)
_CLOSE_RE = re.compile(_CLOSE)
_LONE = re.compile(r"[(\[]?\s*([A-Za-z])\s*[)\].:,]?")
_LABEL_PREFIX = re.compile(r"[(\[]?([A-Z])" + _SPECIES + r"(?:[.):\]]|\s+[-–—])(?=\s|$)")
_LABEL_ANYWHERE = re.compile(r"(?:^|\s)[(\[]?([A-Z])(?:[.):\]]|\s+[-–—])(?=\s)")

# ---- option lists (echo) ------------------------------------------------------------------------------------
# An option label inside a line: "A.", "A)", "(A)", "[A]", "A:", "A -", "**A.**", and numbered "1." / "(1)".
# Letter labels may follow a lower-case letter ("The answer isA. Yes": the prefix glued to an echo; see
# _scan_line for lower-case ones), never an upper-case letter or digit; number labels follow no letter,
# digit, "." or ",".
_ENTRY_LABEL = re.compile(
    r"(?:(?<![A-Z0-9])[*_]{0,2}(?:[(\[](?P<pl>[A-Za-z])[)\]]|(?P<l>[A-Za-z])" + _SPECIES
    + r"(?:[.):\]]|[ \t]{1,3}[-–—]))"
    r"|(?<![A-Za-z0-9.,])[*_]{0,2}(?:\((?P<pn>[1-9])\)|(?P<n>[1-9])[.)]))"
    r"[*_]{0,2}(?=[ \t]|$)"
)
# What may precede the first entry of a line: indentation, bullets, quote marks, markdown headings/emphasis.
_LINE_LEAD = re.compile(r"[ \t]*(?:[-*•+>#_][ \t]*){0,6}")
_BARE_LABEL = re.compile(r"[(\[]?[ \t]?([A-Za-z])[ \t]?[)\].:]?")
# A bare label ending a line that is not itself a list line ("The answer is A" followed by "B", "C" lines).
_BARE_TAIL = re.compile(r"(?:(?<=[\s:*_(\[>])[(\[]?(?P<any>[A-Za-z])|(?<=[a-z])[(\[]?(?P<upper>[A-Z]))"
                        r"[)\].:]?[*_]{0,3}[ \t]*$")
# A listed label whose "text" is itself a label: "A. A.", "B) (B)", "C. D.", "A. Option A" (a garbled echo of the
# option list, issue 19). The first label is the entry's letter.
# A format placeholder naming an option ("<text of option B>"): a template's blank, never an option's text.
_PLACEHOLDER = r"<[^<>\n]{0,40}?\b(?:option|choice|letter|answer)[ \t]{1,3}(?P<ph>[A-Za-z])[ \t]{0,3}>"
_LABEL_PAIR = re.compile(r"[*_]{0,2}[(\[]?(?P<l>[A-Za-z])[.):\]][*_]{0,2}[ \t]{1,3}[*_]{0,2}"
                         r"(?:(?:(?:option|choice|answer)[ \t]{0,3})?[(\[]?[A-Za-z](?![\w-])[.):\]]?|"
                         + _PLACEHOLDER.replace("?P<ph>", "") + r")[*_]{0,2}[ \t]*", re.IGNORECASE)
_PLACEHOLDER_LINE = re.compile(r"[ \t]*" + _PLACEHOLDER + r"[ \t.]*", re.IGNORECASE)
# The same pair ending a line that is not a list line ("The answer is A. A." before "B. B.").
_PAIR_TAIL = re.compile(r"(?<=[\s:*_])" + _LABEL_PAIR.pattern + "$", re.IGNORECASE)
# Two or more such pairs ending a line after other text ("The answer is: A. A. B. B. C. C.").
_PAIR_RUN = re.compile(r"(?<=[\s:*_])(?:" + _LABEL_PAIR.pattern.replace("?P<l>", "") + "){2,}$", re.IGNORECASE)
# A line opening with an upper-case option label (see _label_sequences).
_SEQUENCE_LABEL = re.compile(r"[ \t]*(?:[-*•+>#_][ \t]*){0,6}[*_]{0,2}[(\[]?(?P<l>[A-Z])" + _SPECIES
                             + r"[.):\]][*_]{0,2}(?=[ \t]|$)")
_DECOR_CHARS = " \t\r\n*_`\"'“”‘’"  # stripped with str.strip: a regex "[...]+$" is quadratic on long runs

# ---- letter-text conflicts ----------------------------------------------------------------------------------
# Between a letter and the text that names its option: "A. x", "A: x", "(A) x", "**A.** x", "A - x", "A, x".
_AFTER_LETTER = re.compile(r"[)\]}*_\"'”’`$]{0,6}[ \t]{0,3}(?:[.:,=\-–—][ \t]{0,3})?[(\[*_\"'“‘`]{0,4}[ \t]{0,3}")
# Text after the letter that argues against another option, not naming its own: "D, not pulmonary embolism".
_NEGATED_TEXT = re.compile(r"(?:not|rather\s+than|instead\s+of|over|vs\.?|versus|than|unlike|excluding)\b",
                           re.IGNORECASE)
# After another option's text, words that argue against it ("B. Intracerebral hemorrhage is unlikely ..."): the
# letter's explanation, not a second answer. The same negations as after a letter (_NEGATED_AFTER), plus "can be
# ruled out / excluded" and "does not fit".
_ARGUED_AGAINST = re.compile(
    r"[ \t,)\]*_\"'”’`]{0,6}(?:(?:is|was|are|were|seems|appears)\s+(?:not|incorrect|wrong|unlikely|less\s+likely|"
    r"ruled\s+out|excluded)\b|(?:isn'?t|wasn'?t|aren'?t|doesn'?t|does\s+not|do\s+not)\b"
    r"|(?:can|could|should|must|may)\s+be\s+(?:ruled\s+out|excluded)\b)",
    re.IGNORECASE,
)
# A near copy of another option's text after a letter (see _near_copy): how far under the fuzzy threshold, and
# how far ahead of the letter's own option.
_NEAR_BELOW = 10.0
_NEAR_AHEAD = 20.0
# Words that make a statement on the same line an example or a condition, not a choice (see _hypothetical).
_HYPOTHETICAL = re.compile(r"\b(?:if\s+(?:you|we|I|one)\s+(?:choose|chose|pick|picked|select|selected|answer)|"
                           r"for\s+example|for\s+instance|e\.g\.)(?![\w-])", re.IGNORECASE)
# Below this partial ratio an output quotes no option (the fuzzy stage's word runs are not computed).
_QUOTE_FLOOR = 60.0
# A word of text after a letter, as options are compared: letters and digits, everything else separates.
_WORD = re.compile(r"[^\W_]+")
_MAX_TEXT = 400  # characters of a line read as the text after a letter


def _is_word(text: str, pos: int) -> bool:
    """True when the letter at ``pos`` is the article "a" ("the answer is a pneumonia")
    or the pronoun "I" ("Answer: I think...", "I'm"), not an option letter."""
    after = text[pos + 1 : pos + 3]
    if text[pos] == "a":
        return re.match(r"\s+[A-Za-z0-9]", after) is not None
    return text[pos] in "Ii" and re.match(r"\s+[a-z]|'", after) is not None


def _norm(s: str) -> str:
    """Casefold and collapse punctuation/whitespace so formatting never decides a match."""
    return " ".join(re.sub(r"[\W_]+", " ", s.casefold()).split())


def _same_text(option: str, text: str, threshold: float) -> bool:
    """``text`` *is* ``option`` (normalised; typos within the fuzzy threshold). Options shorter than 3
    characters ("no") must be equal: fuzzy matching means nothing at that length."""
    if len(option) < 3 or len(text) < 3:
        return option == text
    if abs(len(option) - len(text)) > 0.5 * max(len(option), len(text)):
        return False  # cannot reach any sensible threshold; skip the comparison (keeps long lines cheap)
    return fuzz.ratio(option, text) >= threshold


# ---- stage 0: option lists ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    """One listed option: the option letter it stands for, and where its label letter is (None: no letter)."""

    letter: str
    pos: int | None
    bare: bool = False  # a label without option text ("A" alone on its line)


@dataclass(frozen=True)
class _Line:
    entries: tuple[_Entry, ...]  # listed options in this line, in order
    starts_with_entry: bool  # the line *is* a list line (its first listed option opens it)
    tail: _Entry | None  # a lettered option (or bare label) that ends a line which is not a list line


def _option_match(text: str, opts: Mapping[str, str], threshold: float) -> tuple[str, float] | None:
    """(letter, ratio) of the option whose whole text ``text`` is, if any (the best one when several)."""
    t = _norm(text.strip(_DECOR_CHARS))
    if not t:
        return None
    best: tuple[str, float] | None = None
    for letter, o in opts.items():
        if _same_text(o, t, threshold):
            score = fuzz.ratio(o, t)
            if best is None or score > best[1]:
                best = (letter, score)
    return best


def _matching_option(text: str, opts: Mapping[str, str], threshold: float) -> str | None:
    """The letter of the option whose whole text ``text`` is, if any."""
    found = _option_match(text, opts, threshold)
    return found[0] if found else None


def _label_pairs(body: str, offset: int, valid: Mapping[str, str]) -> tuple[_Entry, ...]:
    """The entries of a line made only of labels whose "text" is a label ("A. A.", "C. D.", "A. A. B. B."):
    bare entries (no option text), one per pair; empty unless the pairs fill the line."""
    entries, pos = [], 0
    while pos < len(body) and (m := _LABEL_PAIR.match(body, pos)) and m.end() > pos:
        if m.group("l").upper() in valid:
            entries.append(_Entry(m.group("l").upper(), offset + m.start("l"), bare=True))
        pos = m.end()
    return tuple(entries) if entries and not body[pos:].strip(_DECOR_CHARS) else ()


def _scan_line(line: str, offset: int, valid: Mapping[str, str], opts: Mapping[str, str],
               threshold: float) -> _Line:
    """Listed options in one line: labels followed by an option's text (up to the next label), a bare label
    filling the line, or an option's text filling the line."""
    lead = _LINE_LEAD.match(line)
    lead_end = lead.end() if lead else 0
    letters = list(valid)
    found = list(_ENTRY_LABEL.finditer(line))
    # A lower-case letter glued to a word ("diabetes. Type 2") is the word's end, unless an option's text
    # follows it to the end of the line ("The answer isa) yes" before a list): drop it, so that it does not
    # split an option's text.
    labels = [m for i, m in enumerate(found) if not (
        (m.group("pl") or m.group("l") or "A").islower() and m.start() > 0 and line[m.start() - 1].isalpha()
        and (i < len(found) - 1 or _matching_option(line[m.end():], opts, threshold) is None))]
    entries: list[tuple[_Entry, int]] = []  # (entry, label start)
    last: _Entry | None = None  # the listed option that the line's last label opens, if any
    i = 0
    while i < len(labels):
        m, last = labels[i], None
        raw = m.group("pl") or m.group("l")
        mid_line_lower = raw is not None and raw.islower() and m.start() > lead_end
        # The option's text runs to the next label, or past it when the text holds a label-like word
        # ("Vitamin D. deficiency"): up to three labels further; the best match wins, the longer on a tie.
        best: tuple[float, int, str] | None = None  # (ratio, end label index, letter)
        for j in range(i + 1, min(i + 4, len(labels)) + 1):
            end = labels[j].start() if j < len(labels) else len(line)
            if mid_line_lower and end != len(line):
                continue  # lower-case labels open a line ("a) yes") or end one ("is:a) yes"); else they are words
            if (found_option := _option_match(line[m.end() : end], opts, threshold)) and \
                    (best is None or found_option[1] >= best[0]):
                best = (found_option[1], j, found_option[0])
        i = best[1] if best else i + 1
        if best is None:
            continue
        matched = best[2]
        if raw is not None:
            if raw.upper() not in valid:
                continue
            last = _Entry(raw.upper(), offset + m.start("pl" if m.group("pl") else "l"))
        elif int(m.group("pn") or m.group("n")) <= len(letters):
            last = _Entry(matched, None)
        if last is not None and not mid_line_lower:
            entries.append((last, m.start()))
    if not entries:
        body = line[lead_end:]
        bare = _BARE_LABEL.fullmatch(body.strip(_DECOR_CHARS))
        if bare and bare.group(1).upper() in valid and body.strip():
            pos = offset + lead_end + body.index(bare.group(1))
            return _Line((_Entry(bare.group(1).upper(), pos, bare=True),), True, None)
        whole = _matching_option(body, opts, threshold) if body.strip() else None
        if whole is not None:
            return _Line((_Entry(whole, None),), True, None)
        if pairs := _label_pairs(body, offset + lead_end, valid):
            return _Line(pairs, True, None)
        if (blank := _PLACEHOLDER_LINE.fullmatch(body)) and blank.group("ph").upper() in valid:
            return _Line((_Entry(blank.group("ph").upper(), None, bare=True),), True, None)
        run = _PAIR_RUN.search(line, max(lead_end, len(line) - 200))
        if run and len(pairs := _label_pairs(line[run.start():], offset + run.start(), valid)) >= 2:
            return _Line(pairs, False, pairs[-1])
    starts = bool(entries) and entries[0][1] <= lead_end
    tail = None
    if not starts:
        if last is not None:
            tail = last
        elif (m_pair := _PAIR_TAIL.search(line, max(0, len(line) - 40))) and m_pair.group("l").upper() in valid:
            tail = _Entry(m_pair.group("l").upper(), offset + m_pair.start("l"), bare=True)
        elif m_tail := _BARE_TAIL.search(line, max(0, len(line) - 12)):
            group = "any" if m_tail.group("any") else "upper"
            if m_tail.group(group).upper() in valid:
                tail = _Entry(m_tail.group(group).upper(), offset + m_tail.start(group), bare=True)
        else:  # the line ends with an option's text ("The answer is yes" + "\nno\nmaybe")
            longest = max((len(o) for o in opts.values()), default=0)
            ending = _norm(line[-(2 * longest + 8) :])
            tail = next((_Entry(k, None) for k, o in opts.items()  # also glued: "The answer isyes" + "\nno"
                         if o and (ending == o or ending.endswith(" " + o) or (len(o) >= 3 and ending.endswith(o)))),
                        None)
    return _Line(tuple(e for e, _ in entries), starts, tail)


def _label_sequences(text: str, valid: Mapping[str, str]) -> list[list[_Entry]]:
    """Lines opening with consecutive option labels ("A. ...", "B. ...", "C. ..."; blank lines between allowed),
    three or more, whatever their texts: the option list again, with texts changed ("A. The femur⏎B. The
    tibia⏎..."), shortened, or a discussion of each option in turn. Not a statement of its first letter
    ("Answer:⏎A. ...⏎B. ...⏎C. ..."), whatever follows the labels (issue 19)."""
    sequences: list[list[_Entry]] = []
    current: list[_Entry] = []
    offset = 0
    for line in text.split("\n"):
        start, offset = offset, offset + len(line) + 1
        if not line.strip():
            continue
        m = _SEQUENCE_LABEL.match(line)
        letter = m.group("l") if m else None
        if letter is not None and letter in valid and current and ord(letter) == ord(current[-1].letter) + 1:
            current.append(_Entry(letter, start + m.start("l")))  # type: ignore[union-attr]
            continue
        if len(current) >= 3:
            sequences.append(current)
        current = [_Entry(letter, start + m.start("l"))] if m and letter is not None and letter in valid else []
    if len(current) >= 3:
        sequences.append(current)
    return sequences


def _option_list(text: str, valid: Mapping[str, str], fuzzy_threshold: float
                 ) -> tuple[list[str], frozenset[int]]:
    """Find echoed option lists: (letters listed, positions of listed letters that must not count).

    A list is a run of list lines (blank lines allowed between them), or one line listing two or more
    options ("A. x  B. y"); the line just before a run may end with its first entry (the answer prefix glued
    to the echo: "The answer is A. Yes" + "\\nB. No", or "The answer is A" + "\\nB\\nC" for bare letters; a
    bare "The answer is B." before a list with option texts stays a statement). Only runs naming two or more
    distinct options count: one option with its text is an answer, not an echo.
    """
    # An echoed entry is a copy of the option: stricter than the fuzzy stage, so that a statement like
    # "B. Acute bronchitis over C. Pulmonary embolism" is not taken for a list of two options.
    threshold = (fuzzy_threshold + 100.0) / 2
    opts = {k: _norm(v) for k, v in valid.items()}
    groups: list[list[_Entry]] = []
    run: list[_Entry] = []
    tail: _Entry | None = None
    offset = 0
    for line in text.split("\n"):
        scanned = _scan_line(line, offset, valid, opts, threshold) if line.strip() else None
        offset += len(line) + 1
        if scanned is None:
            continue  # blank lines neither start nor end a run
        if len(scanned.entries) >= 2:
            groups.append(list(scanned.entries))
        if scanned.starts_with_entry:
            if not run and tail is not None and tail.bare == scanned.entries[0].bare:
                run.append(tail)
            run.extend(scanned.entries)
            tail = None
            continue
        if run:
            groups.append(run)
            run = []
        tail = scanned.tail
    if run:
        groups.append(run)
    groups += _label_sequences(text, valid)
    listed: set[str] = set()
    skip: set[int] = set()
    for group in groups:
        if len({e.letter for e in group}) >= 2:
            listed |= {e.letter for e in group}
            skip |= {e.pos for e in group if e.pos is not None}
    return sorted(listed), frozenset(skip)


# ---- letter-text conflicts -----------------------------------------------------------------------------------


def _words(text: str, limit: int) -> tuple[list[str], list[int]]:
    """The first ``limit`` words of ``text``, casefolded, and where each ends in ``text`` (the normalisation of
    ``_norm``, word by word)."""
    words: list[str] = []
    ends: list[int] = []
    for m in _WORD.finditer(text):
        if len(words) == limit:
            break
        words.append(m.group().casefold())
        ends.append(m.end())
    return words, ends


@dataclass(frozen=True)
class _Lead:
    """An option whose whole text the words after a letter begin with: how well (rapidfuzz ratio) and how many
    of those words it takes."""

    letter: str
    ratio: float
    words: int


def _window_ratio(option: list[str], words: list[str]) -> tuple[float, int]:
    """(ratio, n) of the best comparison of ``option``'s text with the first n of ``words`` (n = the option's
    word count, or one less or more, for a typo that splits or joins words); (0, 0) when the first words
    disagree, so that "not pulmonary embolism" never names "Pulmonary embolism"."""
    text, best = " ".join(option), (0.0, 0)
    for n in (len(option), len(option) - 1, len(option) + 1):
        if not 1 <= n <= len(words) or (len(option[0]) >= 3 and fuzz.ratio(option[0], words[0]) < 75):
            continue
        candidate = " ".join(words[:n])
        if abs(len(text) - len(candidate)) > 0.5 * max(len(text), len(candidate)):
            continue  # cannot reach any sensible ratio (as in _same_text)
        ratio = fuzz.ratio(text, candidate) if len(text) >= 3 and len(candidate) >= 3 else \
            100.0 * (text == candidate)
        if ratio > best[0]:
            best = (ratio, n)
    return best


def _leading_option(letter: str, option: list[str], words: list[str], threshold: float) -> _Lead | None:
    """Whether ``words`` *begin with* ``option``'s whole text, whatever follows: the first n words (see
    ``_window_ratio``) are that text within the fuzzy threshold."""
    if not option:
        return None
    ratio, n = _window_ratio(option, words)
    return _Lead(letter, ratio, n) if n and ratio >= threshold else None


def _near_copy(letter: str, options: Mapping[str, list[str]], words: list[str], threshold: float,
               margin: float) -> _Lead | None:
    """Another option whose text the words begin with *nearly* (one word changed: "C. Give intravenous
    epinephrine" where D is "Give intramuscular epinephrine", 83): at most ``_NEAR_BELOW`` under the fuzzy
    threshold, ``_NEAR_AHEAD`` ahead of the letter's own option and the fuzzy margin ahead of every other one.
    Only texts of two words or more: one-word texts that close are other words."""
    ratios = {k: _window_ratio(o, words) if o else (0.0, 0) for k, o in options.items()}
    others = sorted((k for k in options if k != letter), key=lambda k: -ratios[k][0])
    if not others:
        return None
    best, ratio = others[0], ratios[others[0]][0]
    runner_up = ratios[others[1]][0] if len(others) > 1 else 0.0
    if len(options[best]) < 2 or ratio < threshold - _NEAR_BELOW or ratio - ratios[letter][0] < _NEAR_AHEAD \
            or ratio - runner_up < margin:
        return None
    return _Lead(best, ratio, ratios[best][1])


def _named_option(leads: list[_Lead], margin: float) -> tuple[_Lead, list[_Lead]]:
    """The option the words begin with: the longest matching text first ("Aspirin and clopidogrel" beats
    "Aspirin"), then the best ratio. Also returns the runners-up that take as many words and are within the
    fuzzy margin of it (near-identical texts such as "Vitamin C" and "Vitamin D" need the margin)."""
    longest = max(lead.words for lead in leads)
    same = sorted((lead for lead in leads if lead.words == longest), key=lambda lead: -lead.ratio)
    return same[0], [lead for lead in same[1:] if same[0].ratio - lead.ratio < margin]


def _copies_example(line: str, instructions: str) -> bool:
    """The rest of a letter's line (naming no option) copies the text of an example answer in the prompt's
    instructions, i.e. text that follows an option label there ("... reply: 'The correct answer is B: Iron
    deficiency anaemia'", "for example: B. <text of option B>"): the model copied the prompt's format example
    instead of answering, whatever letter it put before it. A copy is the whole rest of the line, two words or
    more, found there (a copy cut short: "B: Iron deficiency"), or the rest beginning with a complete example,
    whatever follows ("B. <text of option B>" and garbage). Words that the instructions use otherwise ("the single
    best answer") do not count: only text after a capital label; "C. <text of option C>" is no copy of "B. <text
    of option B>"."""
    words = _WORD.findall(line)
    if not instructions or len(words) < 2:
        return False
    label = r"(?<![^\W_])[A-Z](?![^\W_])[\W_]{1,6}"

    def found(part: list[str], complete: bool) -> bool:
        end = r"(?=[^\w\s]|\Z)" if complete else r"(?![^\W_])"
        return re.search(label + "(?i:" + r"[\W_]+".join(map(re.escape, part)) + ")" + end, instructions) is not None

    return (len(words) <= 40 and found(words, complete=False)) or \
        any(found(words[:k], complete=True) for k in range(2, min(len(words), 12) + 1))


def _text_after(letter: str, after: str, valid: Mapping[str, str], threshold: float,
                margin: float, instructions: str = "") -> tuple[Extraction | None, str]:
    """Judge the text right after a read ``letter`` (on the same line): ``(conflict, "")`` when it begins with
    another option's whole text, whatever follows ("A. Tuberculosis is a serious disease" where D is
    "Tuberculosis"), else ``(None, note)`` with the note to add to the letter's detail ("" when nothing was
    decided).

    The options the words begin with are compared longest first: text that begins with the letter's own option
    keeps it, even when a shorter option's text begins it too ("B. Aspirin and clopidogrel", A "Aspirin"); a
    longer option's text beats the own shorter one ("A. Aspirin and clopidogrel" is a conflict). Another
    option's text keeps the letter when the own option's text begins with it ("B. Aspirin" for B "Aspirin and
    clopidogrel": a shortened own text), when words after it argue against it ("B. Intracerebral hemorrhage
    is unlikely"), or when the own option's text matches as well (within the fuzzy margin). Text that begins
    with no option's text keeps the letter (an explanation or paraphrase), unless letter and text copy the
    format example of the prompt's ``instructions`` (method ``echo``: no choice was made)."""
    start = _AFTER_LETTER.match(after)
    line = after[start.end() if start else 0 :].split("\n", 1)[0][:_MAX_TEXT]
    if not line.strip() or _NEGATED_TEXT.match(line):
        return None, ""
    options = {k: _words(v, 64)[0] for k, v in valid.items()}
    words, ends = _words(line, max((len(o) for o in options.values()), default=0) + 1)
    leads = [lead for k, o in options.items() if (lead := _leading_option(k, o, words, threshold))]
    if words and not leads and (near := _near_copy(letter, options, words, threshold, margin)):
        cut = ends[near.words - 1]
        shown = " ".join(line[:cut].split())[:60] + (" …" if line[cut:].strip() else "")
        return Extraction(None, "conflict", f'letter {letter} stated with a near copy of the text of option '
                                            f'{near.letter} ("{shown}" is {near.ratio:.0f} like '
                                            f'"{valid[near.letter]}", not "{valid[letter]}")'), ""
    if not words or not leads:
        if _copies_example(line, instructions):
            shown = " ".join(line.split())[:60]
            return Extraction(None, "echo", f'letter {letter} with the text of the prompt\'s own format example '
                                            f'("{shown}"), which is no option\'s'), ""
        return None, ""
    named, tied = _named_option(leads, margin)
    if named.letter == letter or letter in {lead.letter for lead in tied}:
        overlap = sorted({lead.letter for lead in leads} - {letter})
        return None, (f"; the text after it is its own option's, which begins like option {', '.join(overlap)}"
                      if overlap else "")
    cut = ends[named.words - 1]
    shown = " ".join(line[:cut].split())[:60] + (" …" if line[cut:].strip() else "")
    other = f'option {named.letter} ("{valid[named.letter]}")'
    if options[letter][: len(options[named.letter])] == options[named.letter]:
        return None, f'; the text after it, "{shown}", is {other}, which its own option\'s text begins with'
    if _ARGUED_AGAINST.match(line, cut):
        return None, f'; the text after it argues against {other}: "{" ".join(line.split())[:60]}"'
    return Extraction(None, "conflict", f'letter {letter} stated with the text of option {named.letter} '
                                        f'("{shown}" matches "{valid[named.letter]}", not "{valid[letter]}")'), ""


def _hypothetical(text: str, start: int) -> bool:
    """The statement starting at ``start`` is part of an example or condition on its own line ("If you choose
    option A and A reads 'Croup', reply: 'The correct answer is A: Croup.'", "For example, the answer is B"): a
    model imitating the prompt's instructions, not choosing (issue 19)."""
    line_start = text.rfind("\n", 0, start) + 1
    return _HYPOTHETICAL.search(text, max(line_start, start - 300), start) is not None


# ---- stage 1: explicit statements -----------------------------------------------------------------------------


def _explicit(text: str, valid: Mapping[str, str], skip: frozenset[int]
              ) -> tuple[Extraction | None, set[str], list[int]]:
    """Stage 1: statements of an answer.

    Returns the outcome (None: no valid explicit answer, try the next stage), the stated letters that are
    not options (so "Answer: E" on an A-D item is reported rather than silently dropped), and the positions
    just after the letter of each statement that decided the outcome (for the conflict check). Letters at
    ``skip`` (entries of an echoed option list) are not statements.
    """
    found: dict[int, tuple[int, int, set[str]]] = {}  # letter pos -> (start, end, letters)
    for pattern in _EXPLICIT_PATTERNS:
        for m in pattern.finditer(text):
            pos = m.start("letter")
            if pos in found or pos in skip or _is_word(text, pos) or _NEGATED_AFTER.match(text, pos + 1) \
                    or _hypothetical(text, m.start()):
                continue
            letters, end = {text[pos].upper()}, max(m.end(), pos + 1)
            while (h := _HEDGE_AFTER.match(text, end)) and not _is_word(text, h.start("letter")):
                if not _NEGATED_AFTER.match(text, h.end()):  # "B, and C is wrong" is no hedge
                    letters.add(h.group("letter").upper())
                end = h.end()
            if close := _CLOSE_RE.match(text, end):
                end = close.end()
            found[pos] = (m.start(), end, letters)
    ignored = set().union(*(ls for _, _, ls in found.values())) - valid.keys()
    ordered = [(p, s, e, ls & valid.keys()) for p, (s, e, ls) in sorted(found.items())]
    ordered = [stmt for stmt in ordered if stmt[3]]
    if not ordered:
        return None, ignored, []
    distinct = sorted(set().union(*(ls for *_, ls in ordered)))
    pos, start, end, last = ordered[-1]
    snippet = " ".join(text[start:end].split())[-80:]
    if len(distinct) == 1:
        deciding = [p + 1 for p, *_ in ordered]
        return Extraction(distinct[0], "explicit", f'matched "{snippet}"'), ignored, deciding
    sentence_start = max(text.rfind(c, 0, start) for c in ".!?;\n") + 1
    if len(last) == 1 and _FINAL_CUE.search(text, sentence_start, pos):
        detail = f'final statement "{snippet}" after conflicting answers: {", ".join(distinct)}'
        return Extraction(min(last), "explicit", detail), ignored, [pos + 1]
    none = Extraction(None, "none", f"conflicting explicit answers: {', '.join(distinct)}")
    return none, ignored, []


# ---- stage 2: lone letter ------------------------------------------------------------------------------------


def _lone_letter(text: str, valid: Mapping[str, str], threshold: float) -> tuple[Extraction, str] | None:
    """Stage 2: the output is a bare letter ("B", "(B)", "**B.**"), starts with an option
    label ("B. Pneumonia"), or ends with a line holding only a letter (reasoning, then "B").
    Returns the extraction and the text after the letter (for the conflict check)."""
    stripped = re.sub(r"[*_`\"'“”‘’]", "", text).strip()
    lines = stripped.splitlines() or [""]
    after, searched = "", stripped
    if m := _LONE.fullmatch(lines[0].strip()):
        letter, detail = m.group(1).upper(), "output is the lone letter"
    elif m := _LONE.fullmatch(lines[-1].strip()):
        letter, detail = m.group(1).upper(), "last line is the lone letter"
    elif m := _LABEL_PREFIX.match(stripped):
        letter, detail, after = m.group(1), "output starts with option label", stripped[m.end(1) :]
        first_text = stripped[m.end() :].split("\n", 1)[0]
        opts = {k: _norm(v) for k, v in valid.items()}
        if _matching_option(first_text, opts, threshold) is not None:  # "C. Vitamin D. deficiency": one text
            searched = stripped[m.end() + len(first_text) :]
    else:
        return None
    # A repeated option list ("A. x  B. y  C. z", or "A\nB\nC") is not an answer.
    labels = {o.group(1) for o in _LABEL_ANYWHERE.finditer(searched)}
    lone_lines = (_LONE.fullmatch(line.strip()) for line in lines)
    labels |= {o.group(1).upper() for o in lone_lines if o}
    if letter not in valid or (labels & valid.keys()) - {letter}:
        return None
    return Extraction(letter, "lone_letter", f"{detail} {letter}"), after


# ---- stage 3: fuzzy --------------------------------------------------------------------------------------------


def _score(option: str, output: str) -> float:
    """How well ``output`` quotes ``option`` (both normalised): the best ratio of the option's text against a
    run of whole words of the output (as many words as the option, or one more, for a typo that splits a word;
    never fewer, which would let "vitamin" quote "Vitamin D"), so that an option's text inside longer words
    ("Vitamin D" in "a vitamin deficiency", "Malleus" in "smallest") is no quote (issue 19). When the output is shorter than the option, the plain
    ratio: a partial match would only prove the output is *inside* the option text."""
    if len(output) < len(option):
        return fuzz.ratio(option, output)
    partial = fuzz.partial_ratio(option, output)
    if partial < _QUOTE_FLOOR:
        return partial  # no run of words can reach a sensible threshold: skip the word runs (keeps long outputs cheap)
    words, n = output.split(), len(option.split())
    best = 0.0
    for k in (n, n + 1):
        runs = [" ".join(words[i : i + k]) for i in range(len(words) - k + 1)]
        if runs and (found := process.extractOne(option, runs, scorer=fuzz.ratio)) is not None:
            best = max(best, found[1])
    return best


def _fuzzy(text: str, valid: Mapping[str, str], threshold: float, margin: float) -> Extraction:
    """Stage 3: the output quotes exactly one option's text (typos tolerated)."""
    out = _norm(text)
    opts = {k: _norm(v) for k, v in valid.items() if len(_norm(v)) >= 3}
    scores = {k: _score(v, out) for k, v in opts.items()}
    if not scores or (best := max(scores.values())) < threshold:
        return Extraction(None, "none", "no answer found")
    contenders = sorted(k for k, s in scores.items() if s > best - margin)
    winner = contenders[0] if len(contenders) == 1 else None
    # Containment ("Pneumonia" inside "Aspiration pneumonia"): the longer option
    # wins only if, with its matched span cut out, the shorter ones no longer match.
    for cand in sorted(contenders, key=lambda k: -len(opts[k])):
        if winner or scores[cand] < threshold:
            break
        others = [k for k in contenders if k != cand]
        if not all(opts[k] in opts[cand] for k in others):
            continue
        rest = ""  # an output shorter than the option is wholly inside the match
        if len(out) >= len(opts[cand]) and (al := fuzz.partial_ratio_alignment(opts[cand], out)):
            rest = f"{out[: al.dest_start]} | {out[al.dest_end :]}"
        if all(scores[cand] - _score(opts[k], rest) >= margin for k in others):
            winner = cand
    if winner is None:
        matched = ", ".join(contenders)
        return Extraction(None, "none", f"ambiguous: output matches options {matched}")
    detail = f'fuzzy {scores[winner]:.1f} on option {winner} ("{valid[winner]}")'
    return Extraction(winner, "fuzzy", detail)


# ---- the cascade ----------------------------------------------------------------------------------------------


def _valid_options(options: Mapping[str, str]) -> dict[str, str]:
    return {k.upper(): v for k, v in options.items() if len(k) == 1 and k.isascii() and k.isalpha()}


def _echo(listed: list[str]) -> Extraction:
    return Extraction(None, "echo", f"output lists options {', '.join(listed)} without a statement choosing one")


def extract_choice(
    text: str,
    options: Mapping[str, str],
    *,
    fuzzy_threshold: float = 85.0,
    fuzzy_margin: float = 5.0,
    instructions: str = "",
) -> Extraction:
    """Return the option letter chosen in ``text``; letters outside ``options`` never count.

    ``options`` maps upper-case letters to option text.  The result always
    carries an explicit method and reason; ``letter is None`` iff ``method`` is
    one of ``NO_ANSWER_METHODS`` ("none", "echo", "conflict"). ``instructions``:
    the prompt's instruction text (a task's user template), so that a letter
    stated with the prompt's own format example is not read as a choice.
    """
    if not text or not text.strip():
        return Extraction(None, "none", "empty output")
    valid = _valid_options(options)
    listed, skip = _option_list(text, valid, fuzzy_threshold)
    explicit, ignored, deciding = _explicit(text, valid, skip)
    if explicit is not None and explicit.letter is not None:
        notes = []
        for end in deciding:
            conflict, note = _text_after(explicit.letter, text[end : end + _MAX_TEXT], valid, fuzzy_threshold,
                                         fuzzy_margin, instructions)
            if conflict is not None:
                return conflict
            notes.append(note)
        note = "".join(dict.fromkeys(notes))  # each decision once, in order
        if listed:
            note += f" (after a listing of options {', '.join(listed)})"
        return Extraction(explicit.letter, explicit.method, explicit.detail + note)
    if explicit is not None:
        return explicit
    if listed:
        return _echo(listed)
    if lone := _lone_letter(text, valid, fuzzy_threshold):
        found, after = lone
        assert found.letter is not None
        conflict, note = _text_after(found.letter, after, valid, fuzzy_threshold, fuzzy_margin, instructions)
        return conflict or Extraction(found.letter, found.method, found.detail + note)
    result = _fuzzy(text, valid, fuzzy_threshold, fuzzy_margin)
    if result.detail == "no answer found" and ignored:
        note = f" (stated {', '.join(sorted(ignored))}, not among options)"
        result = Extraction(None, "none", result.detail + note)
    return result


def read_letter_at(
    text: str,
    pos: int,
    options: Mapping[str, str],
    method: str,
    detail: str,
    *,
    fuzzy_threshold: float = 85.0,
    fuzzy_margin: float = 5.0,
    instructions: str = "",
) -> Extraction | None:
    """Vet a letter that a task's own reader found at ``text[pos]`` (LongHealth's reference regex) with the
    same rules as the cascade: None when that letter opens an entry of an echoed option list or stands in an
    example or condition ("If you choose option A ..., reply: ...") (the caller should then run
    ``extract_choice``), a ``conflict`` when the text after it is another option's, an ``echo``
    when letter and text copy the format example of ``instructions``, else the letter with the caller's method
    and detail."""
    valid = _valid_options(options)
    letter = text[pos].upper()
    if letter not in valid:
        return Extraction(None, "none", f"{detail}: {letter} is not an option")
    _, skip = _option_list(text, valid, fuzzy_threshold)
    if pos in skip or _hypothetical(text, pos):
        return None
    conflict, note = _text_after(letter, text[pos + 1 : pos + 1 + _MAX_TEXT], valid, fuzzy_threshold, fuzzy_margin,
                                 instructions)
    return conflict or Extraction(letter, method, detail + note)
