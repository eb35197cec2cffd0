"""LongHealth (CLUE Level 2): multiple-choice questions about fictional patients, asked over long documents.

Every question of ``benchmark_v5.json`` becomes 15 items (docs/study-reference.md#longhealth): Task 1 x 5 (the
patient's own documents, answer documents first; options A-E), Task 2 x 5 (the answer documents plus distractor
documents of *other* patients; options A-F, F = cannot be answered) and Task 3 x 5 (distractors only; gold F).
Task 3 is the study's hallucination probe: its accuracy is the rate of correct abstention
(docs/study-reference.md#hallucination).

Design, in the order the data flows (details and reasons in docs/tasks-longhealth.md):

* ``load`` expands questions into items and fixes everything that does not depend on the model: the gold
  letter, the options, and the *candidate* documents in priority order (answer documents, then the patient's
  other documents or the sampled distractors). Items carry document ids and SHA-256s, not texts; the texts
  travel once, as ``TaskData.documents``, which the runner hands to ``prompt`` as ``context.documents`` and
  hashes into the evaluation identity.
* ``prompt`` fills the token budget with the *model's* tokenizer (``context.count_tokens``), because only
  then is the budget known: ``min(token_budget, n_ctx - max_tokens - template_margin)`` tokens for system +
  user text. Question, options and instructions are reserved first; candidates are added in order; the
  first that does not fit is cut (on a word boundary) to the room left and assembly stops; the chosen
  documents are then put in a seeded random order. ``assemble`` is a pure function.
* ``score`` reads the letter with the reference regex ``The correct answer is (\\w):`` and, unless
  ``reference_quirks``, vets its letter like the cascade (a letter inside an echoed option list, or a copy of
  the prompt's own example "B: Iron deficiency anaemia", is no answer; "B: <text of option C>" is a
  ``conflict``) and falls back to our ``extract_choice`` cascade. The facts of the assembly (answer
  documents kept, tokens cut, the effective budget) travel from ``prompt`` to ``score`` as the prompt's ``plan``
  (the runner passes it on), accepted only if its user text is part of the prompt the model actually received.

Randomness is a pure function of (``seed``, item id, document id) through SHA-256, so every item is
reproducible on its own, whatever the order of items, ``--limit`` or a resumed run, and independent of
Python's ``random`` module.

``document_order`` (``run --document-order``, part of the evaluation identity): ``per-question`` (default, the
reference) shuffles the documents and draws the distractors per item. ``per-patient`` does both per patient and
repeat instead, fills the documents in that one order with the cut document last (``assemble(shared_prefix=True)``),
and runs the items grouped by patient, repeat and task, sorted by where their answer documents sit, so consecutive
prompts share the patient's records and the KV cache keeps them (``engine/kv.py``): the question and options come
after the documents. Repeats still differ from each other in document order. ``document_order_version`` in the
settings counts changes of this assembly (docs/tasks-longhealth.md).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..engine.base import Generation
from ..errors import DataError
from ..metrics.extraction import Extraction, extract_choice, extraction_setting, read_letter_at
from ..prompting import Prompt
from .base import ACCURACY, Item, MetricSpec, PromptContext, Score, StudyRole, TaskBase, TaskData, sha256_text
from .choice_scoring import score_choice
from .datafiles import (
    DataLayout,
    find_data_file,
    json_kind,
    json_object_file,
    key_lines,
    required_text,
    required_value,
    text_value,
)
from .loglik_scoring import ChoiceSet, continuation
from .prompts import PromptTemplate

LETTERS = "ABCDE"
ABSTAIN = "F"
# Our wording of the reference's "Question cannot be answered with provided documents" (same meaning).
OPTION_F = "The question cannot be answered with the provided documents"
DIVIDER = "\n\n--------------\n\n"  # between documents, as in the reference
# The reference budgets each document's separator with this string but inserts DIVIDER; reproduced under
# reference_quirks only (docs/study-reference.md#reference-quirks).
REFERENCE_SEPARATOR = "\n\n-------------- NEW DOCUMENT --------------\n\n"
REFERENCE_REGEX = re.compile(r"The correct answer is (\w):")
# log-likelihood / constrained scoring: the context ends with the words the reference's answer format starts with
CHOICE_PREFIX = "The correct answer is"
TASK_NUMBERS = (1, 2, 3)
#: LongHealth's metrics besides accuracy: each task's accuracy on its own items, and the two probes.
METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("task1", "binary", description="LongHealth Task 1 accuracy (the patient's own documents); only on "
                                              "Task 1 items"),
    MetricSpec("task2", "binary", description="LongHealth Task 2 accuracy (with other patients' documents); only on "
                                              "Task 2 items"),
    MetricSpec("task3", "binary", description="LongHealth Task 3 accuracy (answer documents removed: abstaining is "
                                              "correct); only on Task 3 items"),
    MetricSpec("task3_hallucinated", "binary", description="LongHealth Task 3: 1 when the model picked an answer "
                                                           "although its documents were removed (the hallucination "
                                                           "probe)"),
    MetricSpec("task2_abstained", "binary", description="LongHealth Task 2: 1 when the model abstained although the "
                                                        "answer documents were there"),
)
DOCUMENT_ORDERS = ("per-question", "per-patient")
PER_PATIENT_VERSION = 2  # of the per-patient assembly; in settings() (see there)

LONGHEALTH_PROMPT = PromptTemplate(
    system=("You are a meticulous assistant who helps physicians find information in hospital documents such "
            "as discharge letters, clinic letters and test reports. You will receive one or more documents "
            "followed by a multiple-choice question about a patient.\n\n"
            "Your answers must be:\n"
            "1. Grounded: use only what the documents say.\n"
            "2. Brief: give the answer without an explanation.\n"
            "3. Precise: read the question carefully and choose the option that fits it best."),
    user=("=== DOCUMENTS ===\n\n{documents}\n\n"
          "=== END OF DOCUMENTS ===\n\n"
          "{question}\n{options}\n\n"
          "Reply in this format:\n"
          "1. Start with the words \"The correct answer is\".\n"
          "2. Then give the letter of your choice ({letters}).\n"
          "3. After the letter write a colon and the text of that option exactly as given.\n"
          "4. Write a single sentence and nothing else.\n\n"
          "For example, if you choose option B and B reads 'Iron deficiency anaemia', reply: "
          "'The correct answer is B: Iron deficiency anaemia.'"),
    answer_prefix="",  # the reference used none
)


def _sample_patient(n: int) -> dict[str, Any]:
    question = {"question": f"What brought patient {n} to hospital?", "answer_a": "Pneumonia", "answer_b": "Fracture",
                "answer_c": "Stroke", "answer_d": "Sepsis", "answer_e": "Asthma", "correct": "Pneumonia",
                "answer_location": {"text_0": {}}}
    return {"name": f"Patient {n}", "texts": {"text_0": f"Discharge letter {n}: treated for pneumonia."},
            "questions": [question]}


DATA_LAYOUT = DataLayout("benchmark_v5.json", "json-keyed", (_sample_patient(1), _sample_patient(2)),
                         text_fields=("questions.0.question", "questions.0.answer_a", "questions.0.correct"),
                         field_label="patients.{key}.{field}")

DATA_FORMAT = ("LongHealth benchmark_v5.json: {patient_id: {name, texts{text_id: text}, questions[{question, "
               "answer_a..answer_e, correct, answer_location{text_id: ...}}]}} (see docs/tasks-longhealth.md)")


# --------------------------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class Question:
    patient: str
    number: int                   # 1-based position in the patient's question list
    text: str
    options: dict[str, str]       # A-E
    correct: str                  # the file's ``correct`` string
    gold: str                     # the option letter it designates
    answer_texts: tuple[str, ...]  # text ids named by ``answer_location``, in file order
    where: str                    # "patients.patient_01.questions[2]"


@dataclass(frozen=True)
class Patient:
    id: str
    texts: dict[str, str]         # text id -> text, in file order
    questions: tuple[Question, ...]


def load_benchmark(path: Path, *, reference_gold: bool = False) -> list[Patient]:
    """Parse and check a LongHealth file (or a folder holding ``benchmark_v5.json`` or a single .json).

    Errors name the file, the line where the patient starts and the field by its path
    (``patients.patient_01.questions[2].correct``); a patient id given twice is refused (JSON would keep the last).
    """
    path = data_file(path)
    text, data = json_object_file(path, 'patients keyed by id (e.g. "patient_01")')
    if isinstance(data.get("patients"), dict) and len(data) == 1:
        data = data["patients"]  # tolerate a {"patients": {...}} wrapper
    lines = key_lines(text)
    patients = [_patient(path, lines.get(str(pid)), str(pid), record, reference_gold) for pid, record in data.items()]
    if len(patients) < 2:
        raise DataError(path, f"found {len(patients)} patient(s); Tasks 2 and 3 take distractor documents from "
                              "other patients, so at least 2 are needed", field="patients")
    if not any(p.questions for p in patients):
        raise DataError(path, "no patient has any questions", field="patients")
    return patients


def data_file(path: Path) -> Path:
    """The LongHealth file: ``path`` itself, or in a folder benchmark_v5.json (else its only .json file)."""
    return find_data_file(path, ("benchmark_v5.json",), (".json",), "LongHealth")


def _patient(path: Path, line: int | None, pid: str, record: Any, reference_gold: bool) -> Patient:
    here = f"patients.{pid}"
    if not isinstance(record, dict):
        raise DataError(path, f"a patient must be an object, got {json_kind(record)}", line=line, field=here)
    texts_raw = record.get("texts")
    if isinstance(texts_raw, list):  # tolerate a list: ids text_0, text_1, ...
        texts_raw = {f"text_{i}": t for i, t in enumerate(texts_raw)}
    if not isinstance(texts_raw, dict) or not texts_raw:
        raise DataError(path, "needs 'texts', an object of text id -> document text"
                        + ("" if texts_raw is None else f" (got {json_kind(texts_raw)})"), line=line,
                        field=f"{here}.texts")
    texts = {str(tid): text_value(path, line, f"{here}.texts.{tid}", t, numbers=True, strip=False)
             for tid, t in texts_raw.items()}
    questions_raw = record.get("questions", [])
    if not isinstance(questions_raw, list):
        raise DataError(path, f"'questions' must be a list, got {json_kind(questions_raw)}", line=line,
                        field=f"{here}.questions")
    questions = tuple(_question(path, line, pid, i, q, texts, reference_gold) for i, q in enumerate(questions_raw))
    return Patient(pid, texts, questions)


def _question(path: Path, line: int | None, pid: str, index: int, record: Any, texts: Mapping[str, str],
              reference_gold: bool) -> Question:
    here = f"patients.{pid}.questions[{index}]"
    if not isinstance(record, dict):
        raise DataError(path, f"a question must be an object, got {json_kind(record)}", line=line, field=here)

    def text(key: str) -> str:
        return required_text(path, line, record, key, numbers=True, strip=False, prefix=f"{here}.")

    question = text("question")
    options = {c: text(f"answer_{c.lower()}") for c in LETTERS}
    correct = text("correct")
    gold = gold_letter(options, correct, reference=reference_gold)
    if gold is None:
        raise DataError(path, f"'{_clip(correct)}' matches none of answer_a..answer_e", line=line,
                        field=f"{here}.correct")
    _, location = required_value(path, line, record, "answer_location", prefix=f"{here}.")
    if isinstance(location, list):  # tolerate a plain list of text ids
        location = {str(t): None for t in location}
    if not isinstance(location, dict) or not location:
        raise DataError(path, "must name the text(s) holding the answer, e.g. {\"text_0\": {...}}", line=line,
                        field=f"{here}.answer_location")
    for tid in location:
        if str(tid) not in texts:
            raise DataError(path, f"names '{tid}', which {pid} does not have (texts: {', '.join(texts)})",
                            line=line, field=f"{here}.answer_location.{tid}")
    return Question(pid, index + 1, question, options, correct, gold, tuple(str(t) for t in location), here)


def gold_letter(options: Mapping[str, str], correct: str, *, reference: bool = False) -> str | None:
    """The option that ``correct`` designates.

    Reference rule: the *last* option whose text contains ``correct`` (case-sensitive), which picks "C:
    Pneumonia and sepsis" over "A: Pneumonia" for correct = "Pneumonia". Ours: an option equal to it
    (ignoring case and outer spaces) first, then the reference rule, then containment ignoring case.
    """
    contains = [c for c, text in options.items() if correct in text]
    if reference:
        return contains[-1] if contains else None
    wanted = correct.strip().casefold()
    equal = [c for c, text in options.items() if text.strip().casefold() == wanted]
    if equal:
        return equal[-1]
    if contains:
        return contains[-1]
    folded = [c for c, text in options.items() if wanted in text.casefold()]
    return folded[-1] if folded else None


def _clip(text: str, n: int = 60) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _rank(seed: int, item_id: str, purpose: str, doc_id: str) -> str:
    """A document's pseudo-random rank within one item: ordering by it is a seeded shuffle; taking the
    k smallest is a seeded sample. Depends on nothing but its arguments."""
    return hashlib.sha256(f"longhealth|{seed}|{item_id}|{purpose}|{doc_id}".encode()).hexdigest()


def doc_id(patient: str, text_id: str) -> str:
    return f"{patient}/{text_id}"


# --------------------------------------------------------------------------------------------- assembly


@dataclass(frozen=True)
class Assembly:
    """What ``assemble`` put into one prompt, in token terms of the model that will read it."""

    user: str                          # the user text, documents included
    order: tuple[str, ...]             # document ids in prompt order (after the shuffle)
    cut: str | None                    # the document that was truncated to fit, if any
    cut_tokens: int                    # tokens removed from it
    dropped: tuple[str, ...]           # candidates left out entirely
    answer_docs: int                   # how many answer documents the item has
    answer_docs_full: int              # how many of them are in the prompt in full
    budget: int                        # tokens allowed for system + user text
    used: int                          # tokens of system + user text as assembled

    @property
    def answer_docs_kept(self) -> float | None:
        return self.answer_docs_full / self.answer_docs if self.answer_docs else None

    def summary(self) -> str:
        parts = [f"{len(self.order)} documents in prompt"]
        if self.answer_docs:
            parts.append(f"{self.answer_docs_full}/{self.answer_docs} answer documents in full")
        if self.cut:
            parts.append(f"{self.cut} cut by {self.cut_tokens} tokens")
        if self.dropped:
            parts.append(f"{len(self.dropped)} left out")
        parts.append(f"{self.used}/{self.budget} budget tokens used")
        return ", ".join(parts)


def truncate_to_tokens(text: str, room: int, count_tokens: Callable[[str], int]) -> str:
    """The longest prefix of ``text`` with at most ``room`` tokens, ended on a word boundary (binary search
    on characters, so it works with any token counter)."""
    if room <= 0:
        return ""
    lo, hi = 0, len(text)
    while lo < hi:  # invariant: text[:lo] fits
        mid = (lo + hi + 1) // 2
        if count_tokens(text[:mid]) <= room:
            lo = mid
        else:
            hi = mid - 1
    cut = text[:lo]
    if lo < len(text) and not text[lo].isspace():
        boundary = max(cut.rfind(" "), cut.rfind("\n"))
        if boundary > 0:
            cut = cut[:boundary]
    return cut.rstrip()


def fill_user(template: PromptTemplate, payload: Mapping[str, Any], documents: str) -> str:
    options = payload["options"]
    letters = list(options)
    return template.user.format(
        documents=documents, question=payload["question"],
        options="\n".join(f"{letter}: {text}" for letter, text in options.items()),
        letters=", ".join(letters[:-1]) + " or " + letters[-1])


def order_rank(seed: int, shuffle_key: str, did: str) -> str:
    """The rank that orders documents in a prompt (``shuffle_key``: the item, or its patient and repeat)."""
    return _rank(seed, shuffle_key, "order", did)


def assemble(payload: Mapping[str, Any], texts: Mapping[str, str], template: PromptTemplate,
             count_tokens: Callable[[str], int], *, budget: int, seed: int, item_id: str,
             separator: str = DIVIDER, shared_prefix: bool = False) -> Assembly:
    """Fill ``budget`` tokens (system + user text) with the item's candidate documents, in priority order.

    The frame (question, options, instructions) is reserved first. Candidates (answer documents, then the
    others) are added while they fit, each after the first also paying for ``separator``; the first that does
    not fit is cut to the room left and assembly stops. The chosen documents are then ordered by their
    seeded rank. A last exact count guards against token merges at the joins.

    ``shared_prefix`` (``--document-order per-patient``; ``item_id`` is then the patient and repeat): the other
    documents are offered in their seeded order rank instead of their given order, and the prompt shows the
    documents in full in that rank with the cut one *last*. Questions of one patient and repeat then differ,
    in the documents block, only from their first answer document on (Tasks 1 and 2) or only in how much of
    the last, cut document fits (Task 3): the KV cache keeps the rest (docs/tasks-longhealth.md).
    """
    system_tokens = count_tokens(template.system)
    limit = budget - system_tokens  # tokens for the user text
    answer_ids = list(payload["answer_docs"])
    others = list(payload["other_docs"])
    if shared_prefix:
        others.sort(key=lambda did: order_rank(seed, item_id, did))
    candidates = answer_ids + others

    def arranged(chosen: Mapping[str, str], cut: str | None) -> list[str]:
        order = sorted(chosen, key=lambda did: order_rank(seed, item_id, did))
        if shared_prefix and cut is not None and cut in chosen:  # the one part whose length depends on the question goes last
            order = [d for d in order if d != cut] + [cut]
        return order

    room = limit - count_tokens(fill_user(template, payload, ""))
    sep = count_tokens(separator)
    parts: dict[str, str] = {}
    cut, dropped = None, []
    for i, did in enumerate(candidates):
        text = texts[did]
        gap = sep if parts else 0
        need = count_tokens(text) + gap
        if need <= room:
            parts[did] = text
            room -= need
            continue
        part = truncate_to_tokens(text, room - gap, count_tokens)
        if part:
            parts[did], cut = part, did
        dropped = candidates[i + 1:] if part else candidates[i:]
        break
    order = arranged(parts, cut)
    user = fill_user(template, payload, DIVIDER.join(parts[d] for d in order))
    for _ in range(8):  # the sum of parts can differ from the count of the whole by a few merged tokens
        over = count_tokens(user) - limit
        if over <= 0 or not order:
            break
        victim = cut or next(d for d in reversed(candidates) if d in parts)
        part = truncate_to_tokens(texts[victim], count_tokens(parts[victim]) - over, count_tokens)
        cut = victim
        if part:
            parts[victim] = part
            if shared_prefix:
                order = arranged(parts, cut)
        else:
            del parts[victim]
            order = [d for d in order if d != victim]
            dropped = [victim, *dropped]
            cut = None
        user = fill_user(template, payload, DIVIDER.join(parts[d] for d in order))
    cut_tokens = count_tokens(texts[cut]) - count_tokens(parts[cut]) if cut else 0
    full = sum(1 for d in answer_ids if parts.get(d) == texts[d])
    return Assembly(user=user, order=tuple(order), cut=cut, cut_tokens=cut_tokens, dropped=tuple(dropped),
                    answer_docs=len(answer_ids), answer_docs_full=full, budget=budget,
                    used=system_tokens + count_tokens(user))


# --------------------------------------------------------------------------------------------- the task


@dataclass(frozen=True)
class LongHealthTask(TaskBase):
    id: str = "longhealth"
    title: str = "LongHealth (long clinical documents, Tasks 1-3)"
    description: str = ("Multiple-choice questions about fictional patients over ~8k tokens of documents: "
                        "Task 1 own documents, Task 2 with other patients' documents, Task 3 answer "
                        "documents removed (correct answer F: cannot be answered = the hallucination probe).")
    template: PromptTemplate = LONGHEALTH_PROMPT
    token_budget: int = 8140       # system + user tokens (reference: run_LongHealth8k.sh)
    template_margin: int = 64      # tokens left for the chat template's own tokens when n_ctx is the limit
    seed: int = 1
    repeats: int = 5
    distractors: int = 10
    reference_quirks: bool = False
    max_tokens: int = 50
    stop: tuple[str, ...] = ("--------------",)  # a model that starts writing a new document is done
    document_order: str = "per-question"  # or "per-patient" (see the module docstring)
    data_format: str = DATA_FORMAT
    data_layout = DATA_LAYOUT
    metrics: tuple[MetricSpec, ...] = (ACCURACY, *METRICS)
    configurable = ("prompts", "reference_quirks", "document_order")
    multiple_choice = True
    # the reference's LongHealth script averaged every item once: no quirk_counts_first_twice
    study = StudyRole(clue_level=2, clue_metrics=("task1", "task2", "task3"),
                      published_columns=tuple((f"longhealth_task{n}_acc", f"task{n}") for n in TASK_NUMBERS))

    # ---- load

    def load(self, path: Path) -> TaskData:
        file = data_file(path)
        patients = load_benchmark(file, reference_gold=self.reference_quirks)
        source = str(file)
        corpus = tuple(
            Item(id=doc_id(p.id, tid), payload={"patient": p.id, "text_id": tid, "text": text},
                 source=f"{source}#patients.{p.id}.texts.{tid}")
            for p in patients for tid, text in p.texts.items())
        digests = {item.id: sha256_text(item.payload["text"]) for item in corpus}
        items: list[Item] = []
        for patient in patients:
            own = [doc_id(patient.id, t) for t in patient.texts]
            pool = [doc_id(p.id, t) for p in patients if p.id != patient.id for t in p.texts]
            for q in patient.questions:
                answers = [doc_id(patient.id, t) for t in q.answer_texts]
                for repeat in range(1, self.repeats + 1):
                    for task in TASK_NUMBERS:
                        item_id = f"{patient.id}/q{q.number:02d}/task{task}/r{repeat}"
                        if task == 1:
                            answer_docs, others = answers, [d for d in own if d not in answers]
                        else:
                            draw = self.shuffle_key(item_id, patient.id, repeat)
                            ranked = sorted(pool, key=lambda d: _rank(self.seed, draw, "distractor", d))
                            answer_docs, others = (answers if task == 2 else []), ranked[: self.distractors]
                        options = dict(q.options)
                        if task != 1:
                            options[ABSTAIN] = OPTION_F
                        payload = {
                            "patient": patient.id, "question_number": q.number, "task": task, "repeat": repeat,
                            "question": q.text, "options": options, "correct": q.correct,
                            "gold": q.gold if task != 3 else ABSTAIN,
                            "answer_docs": answer_docs, "other_docs": others,
                            "doc_sha256": {d: digests[d] for d in answer_docs + others},
                        }
                        items.append(Item(item_id, payload, source=f"{source}#{q.where}"))
        if self.document_order == "per-patient":  # prompts that share the patient's records run together
            items.sort(key=self._shared_prefix_run_order)
        return TaskData(items, documents=corpus)

    def _shared_prefix_run_order(self, item: Item) -> tuple[Any, ...]:
        """Per patient, repeat and task; within them by where the item's answer documents sit in the group's
        document order, so that consecutive prompts share the documents before the earlier one's first answer
        document (``assemble(shared_prefix=True)``); then by question."""
        p = item.payload
        key = self.shuffle_key(item.id, p["patient"], p["repeat"])
        places = tuple(sorted(order_rank(self.seed, key, d) for d in p["answer_docs"]))
        return (p["patient"], p["repeat"], p["task"], places, p["question_number"])

    def shuffle_key(self, item_id: str, patient: str, repeat: int) -> str:
        """What seeds an item's document order and distractor draw: the item, or its patient and repeat."""
        if self.document_order not in DOCUMENT_ORDERS:
            raise ValueError(f"document_order must be one of {', '.join(DOCUMENT_ORDERS)}")
        return item_id if self.document_order == "per-question" else f"{patient}/r{repeat}"

    # ---- prompt

    def effective_budget(self, n_ctx: int) -> int:
        """Tokens for system + user text: the reference's 8,140, or less when the model's context is smaller."""
        if n_ctx > 0:
            return min(self.token_budget, n_ctx - self.max_tokens - self.template_margin)
        return self.token_budget

    def prompt(self, item: Item, context: PromptContext) -> Prompt:
        texts = _documents(item, context)
        key = self.shuffle_key(item.id, item.payload["patient"], item.payload["repeat"])
        assembly = assemble(item.payload, texts, self.template, context.count_tokens,
                            budget=self.effective_budget(context.n_ctx), seed=self.seed, item_id=key,
                            separator=REFERENCE_SEPARATOR if self.reference_quirks else DIVIDER,
                            shared_prefix=self.document_order == "per-patient")
        return Prompt(system=self.template.system, user=assembly.user, answer_prefix=self.template.answer_prefix,
                      plan=assembly)

    # ---- score

    def read_letter(self, text: str, options: Mapping[str, str]) -> Extraction:
        """The reference regex first; then, unless reference_quirks, our cascade. The regex's letter is vetted
        like any other (an echoed option list is no answer; "B: <text of option C>" is a conflict; a copy of the
        prompt's own example, "B: Iron deficiency anaemia" where that is no option, is no answer), except under
        reference_quirks, which reproduces the reference exactly."""
        match = REFERENCE_REGEX.search(text)
        if match and self.reference_quirks:
            return Extraction(match.group(1), "reference_regex", f'matched "{match.group(0)}"')
        if match and match.group(1).upper() in options:
            vetted = read_letter_at(text, match.start(1), options, "reference_regex", f'matched "{match.group(0)}"',
                                    instructions=self.template.user)
            if vetted is not None:
                return vetted
            note = f'reference regex read "{match.group(1)}" inside an echoed option list or an example'
        else:
            note = (f'reference regex read "{match.group(1)}", not an option' if match
                    else "reference regex did not match")
        if self.reference_quirks:
            return Extraction(None, "none", note)
        found = extract_choice(text, options, instructions=self.template.user)
        return Extraction(found.letter, found.method, f"{note}; {found.detail}")

    def score(self, item: Item, generation: Generation, plan: Any = None) -> Score:
        """``plan``: the ``Assembly`` of this item's prompt (``Prompt.plan``); without it (``rescore``) the
        assembly metrics are left out and the detail says so."""
        p = item.payload
        task, gold, options = p["task"], p["gold"], p["options"]
        found = self.read_letter(self.template.answer_prefix + generation.output, options)

        def metrics_for(letter: str | None) -> dict[str, float]:
            correct = letter == gold
            metrics = {"accuracy": float(correct), f"task{task}": float(correct)}
            chose = (letter or "").upper()
            if task == 2:
                metrics["task2_abstained"] = float(chose == ABSTAIN)
            if task == 3:  # nothing read (or not credited) is a format failure, not a hallucination
                metrics["task3_hallucinated"] = float(chose != "" and chose in LETTERS)
            return metrics

        score = score_choice(gold, found, generation.finish_reason, metrics_for)
        metrics, detail = dict(score.metrics), score.detail
        assembly = plan if isinstance(plan, Assembly) else None
        if assembly is not None and assembly.user in generation.prompt_text:
            metrics["budget_tokens"] = float(assembly.budget)
            metrics["truncated_doc_tokens"] = float(assembly.cut_tokens)
            if assembly.answer_docs_kept is not None:
                metrics["answer_docs_kept"] = assembly.answer_docs_kept
            detail += f"; {assembly.summary()}"
        else:
            detail += "; document assembly not recorded (scored apart from prompt building)"
        if generation.truncated_tokens:
            detail += f"; the engine cut {generation.truncated_tokens} tokens from the start of the prompt"
        return replace(score, metrics=metrics, detail=detail)

    def error_metrics(self, item: Item) -> dict[str, float]:
        """Metrics of an item whose generation failed (the runner asks): zero on exactly the keys that item
        counts in, so an error weighs on its own task only and the per-task denominators stay equal."""
        task = item.payload["task"]
        metrics = {"accuracy": 0.0, f"task{task}": 0.0}
        if task == 2:
            metrics["task2_abstained"] = 0.0
        if task == 3:
            metrics["task3_hallucinated"] = 0.0
        return metrics

    def choices(self, item: Item, context: PromptContext, target: str = "letter") -> ChoiceSet:
        """The options A-E (F for Tasks 2 and 3) as continuations of the prompt followed by "The correct answer
        is" (``run --scoring loglik|constrained``); choosing a letter yields the same metrics as ``score``."""
        prompt = self.prompt(item, context)
        assembly = prompt.plan if isinstance(prompt.plan, Assembly) else None
        prefix = prompt.answer_prefix + CHOICE_PREFIX
        options = {k: continuation(prefix, k if target == "letter" else v) for k, v in item.payload["options"].items()}

        def key_metrics(letter: str | None) -> dict[str, float]:
            metrics = choice_metrics(item.payload, letter)
            if assembly is not None:
                metrics["budget_tokens"] = float(assembly.budget)
                metrics["truncated_doc_tokens"] = float(assembly.cut_tokens)
                if assembly.answer_docs_kept is not None:
                    metrics["answer_docs_kept"] = assembly.answer_docs_kept
            return metrics

        return ChoiceSet(replace(prompt, answer_prefix=prefix), options, item.payload["gold"], key_metrics)

    def settings(self) -> dict[str, Any]:
        # only when not the default, so that stored default evaluations keep their keys; the version counts
        # changes of the per-patient assembly (2: documents in the group order, the cut one last), so that a run
        # never resumes into an evaluation whose prompts were assembled another way
        order = ({"document_order": self.document_order, "document_order_version": PER_PATIENT_VERSION}
                 if self.document_order != "per-question" else {})
        return {
            **order,
            "task": self.id, "max_tokens": self.max_tokens, "stop": list(self.stop),
            "prompt_sha256": self.template.sha256, "token_budget": self.token_budget,
            "template_margin": self.template_margin, "seed": self.seed, "repeats": self.repeats,
            "distractors": self.distractors, "reference_quirks": self.reference_quirks,
            "divider": DIVIDER, "option_f": OPTION_F,
            "separator_budgeted": REFERENCE_SEPARATOR if self.reference_quirks else DIVIDER,
            "gold_rule": "last containing" if self.reference_quirks else "equal>last containing>casefold",
            # reference_quirks reads with the reference regex alone, which extraction versions do not change
            "extraction": ("reference_regex" if self.reference_quirks
                           else extraction_setting("reference_regex>explicit>lone_letter>fuzzy(85,5)")),
        }


def choice_metrics(payload: Mapping[str, Any], letter: str | None) -> dict[str, float]:
    """The metrics of choosing ``letter`` (None: nothing chosen) on one item, as ``score`` computes them."""
    task, gold = payload["task"], payload["gold"]
    correct = letter == gold
    metrics = {"accuracy": float(correct), f"task{task}": float(correct)}
    chose = (letter or "").upper()
    if task == 2:
        metrics["task2_abstained"] = float(chose == ABSTAIN)
    if task == 3:
        metrics["task3_hallucinated"] = float(chose in LETTERS)
    return metrics


def _documents(item: Item, context: PromptContext) -> dict[str, str]:
    """The item's document texts from ``context.documents`` (the corpus ``load`` returned), checked by SHA-256."""
    corpus = {doc.id: doc.payload.get("text") for doc in context.documents}
    texts = {}
    for did, digest in item.payload["doc_sha256"].items():
        text = corpus.get(did)
        if not isinstance(text, str):
            raise RuntimeError(f"LongHealth item {item.id}: document {did} is not in context.documents (the "
                             "documents travel as TaskData.documents from load())")
        if sha256_text(text) != digest:
            raise RuntimeError(f"LongHealth item {item.id}: document {did} differs from the one loaded")
        texts[did] = text
    return texts


TASKS = [LongHealthTask()]
