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
3. ``fuzzy``       - the output quotes exactly one option's text.

Anything still ambiguous is reported as ``None`` rather than guessed, so
unparsed items can be counted and audited instead of hiding in accuracy.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from rapidfuzz import fuzz

__all__ = ["Extraction", "extract_choice"]


@dataclass(frozen=True)
class Extraction:
    """Outcome of answer extraction for one model output."""

    letter: str | None  # chosen option letter (upper case) or None when unparseable
    method: str  # "explicit" | "lone_letter" | "fuzzy" | "none"
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


def _is_word(text: str, pos: int) -> bool:
    """True when the letter at ``pos`` is the article "a" ("the answer is a pneumonia")
    or the pronoun "I" ("Answer: I think...", "I'm"), not an option letter."""
    after = text[pos + 1 : pos + 3]
    if text[pos] == "a":
        return re.match(r"\s+[A-Za-z0-9]", after) is not None
    return text[pos] in "Ii" and re.match(r"\s+[a-z]|'", after) is not None


def _explicit(text: str, valid: Mapping[str, str]) -> tuple[Extraction | None, set[str]]:
    """Stage 1: statements of an answer.

    Returns the outcome (None: no valid explicit answer, try the next stage) and
    the stated letters that are not options, so "Answer: E" on an A-D item is
    reported rather than silently dropped.
    """
    found: dict[int, tuple[int, int, set[str]]] = {}  # letter pos -> (start, end, letters)
    for pattern in _EXPLICIT_PATTERNS:
        for m in pattern.finditer(text):
            pos = m.start("letter")
            if pos in found or _is_word(text, pos) or _NEGATED_AFTER.match(text, pos + 1):
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
        return None, ignored
    distinct = sorted(set().union(*(ls for *_, ls in ordered)))
    pos, start, end, last = ordered[-1]
    snippet = " ".join(text[start:end].split())[-80:]
    if len(distinct) == 1:
        return Extraction(distinct[0], "explicit", f'matched "{snippet}"'), ignored
    sentence_start = max(text.rfind(c, 0, start) for c in ".!?;\n") + 1
    if len(last) == 1 and _FINAL_CUE.search(text, sentence_start, pos):
        detail = f'final statement "{snippet}" after conflicting answers: {", ".join(distinct)}'
        return Extraction(min(last), "explicit", detail), ignored
    return Extraction(None, "none", f"conflicting explicit answers: {', '.join(distinct)}"), ignored


def _lone_letter(text: str, valid: Mapping[str, str]) -> Extraction | None:
    """Stage 2: the output is a bare letter ("B", "(B)", "**B.**"), starts with an option
    label ("B. Pneumonia"), or ends with a line holding only a letter (reasoning, then "B")."""
    stripped = re.sub(r"[*_`\"'“”‘’]", "", text).strip()
    lines = stripped.splitlines() or [""]
    if m := _LONE.fullmatch(lines[0].strip()):
        letter, detail = m.group(1).upper(), "output is the lone letter"
    elif m := _LONE.fullmatch(lines[-1].strip()):
        letter, detail = m.group(1).upper(), "last line is the lone letter"
    elif m := _LABEL_PREFIX.match(stripped):
        letter, detail = m.group(1), "output starts with option label"
    else:
        return None
    # A repeated option list ("A. x  B. y  C. z", or "A\nB\nC") is not an answer.
    labels = {o.group(1) for o in _LABEL_ANYWHERE.finditer(stripped)}
    lone_lines = (_LONE.fullmatch(line.strip()) for line in lines)
    labels |= {o.group(1).upper() for o in lone_lines if o}
    if letter not in valid or (labels & valid.keys()) - {letter}:
        return None
    return Extraction(letter, "lone_letter", f"{detail} {letter}")


def _norm(s: str) -> str:
    """Casefold and collapse punctuation/whitespace so formatting never decides a match."""
    return " ".join(re.sub(r"[\W_]+", " ", s.casefold()).split())


def _score(option: str, output: str) -> float:
    """partial_ratio, except when the output is shorter than the option: then a
    partial match would only prove the output is *inside* the option text."""
    if len(output) < len(option):
        return fuzz.ratio(option, output)
    return fuzz.partial_ratio(option, output)


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


def extract_choice(
    text: str,
    options: Mapping[str, str],
    *,
    fuzzy_threshold: float = 85.0,
    fuzzy_margin: float = 5.0,
) -> Extraction:
    """Return the option letter chosen in ``text``; letters outside ``options`` never count.

    ``options`` maps upper-case letters to option text.  The result always
    carries an explicit method and reason; ``letter is None`` iff ``method == "none"``.
    """
    if not text or not text.strip():
        return Extraction(None, "none", "empty output")
    valid = {
        k.upper(): v for k, v in options.items() if len(k) == 1 and k.isascii() and k.isalpha()
    }
    explicit, ignored = _explicit(text, valid)
    result = (
        explicit or _lone_letter(text, valid) or _fuzzy(text, valid, fuzzy_threshold, fuzzy_margin)
    )
    if result.detail == "no answer found" and ignored:
        note = f" (stated {', '.join(sorted(ignored))}, not among options)"
        result = Extraction(None, "none", result.detail + note)
    return result
