"""Public medical multiple-choice benchmarks, read in their original released formats: MedQA (USMLE),
PubMedQA (PQA-L), the six medical MMLU subjects and MedMCQA. Scored by accuracy.

Why original formats: these sets are public and widely reported, so the files people have are the released
ones (or, for MedMCQA, a common simplified export). Converting them first would add a step that can silently
drop or reorder items; reading them as released keeps item ids and counts checkable against the papers.

Prompting and scoring are those of the case challenges (our own wording, 0-shot, lettered options, answer
prefix "The answer is", the extraction cascade, explicit unparseable/truncated outcomes): each task here is a
``CaseChallengeTask`` with its own loader and prompt fields. PubMedQA replaces the fuzzy stage by a stricter
one: a reply that starts with the label word itself ("no", "Yes, ...") is read as that option ("no" is too
short for fuzzy matching, and one-word options would match inside other words).

Item selection and ids (docs/tasks-public-mcq.md has the details):

- medqa: every line of ``phrases_no_exclude_test.jsonl``; id ``<split>-<line>`` (the file has no ids).
- pubmedqa: from ``ori_pqal.json``, the PMIDs of ``test_ground_truth.json`` beside it (the official 500-item
  test split, in that file's order); any other file in the same schema is evaluated whole. id = PMID.
- mmlu_medical: the six subjects' ``<subject>_test.csv`` (all six required in a folder); id
  ``<subject>-<row>`` (``<subject>-<split>-<row>`` for val/dev files).
- medmcqa: the simplified export ``{question, choices, answer}`` (answer 0-based) or the original release
  ``{id, question, opa..opd, cop, ...}`` (cop 1-based); id = the original ``id``, else ``<stem>-<line>``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..engine.base import Generation
from ..errors import DataError
from ..metrics.extraction import Extraction, extract_choice, extraction_setting
from ..prompting import Prompt
from .base import Item, PromptContext, Score, TaskData
from .case_challenges import CaseChallengeTask
from .choice_scoring import score_choice
from .datafiles import (
    LETTERS,
    MIN_OPTIONS,
    DataLayout,
    check_options,
    check_unique_ids,
    csv_rows,
    existing_path,
    find_data_file,
    json_object_file,
    jsonl_records,
    key_lines,
    required_text,
)
from .prompts import PromptTemplate

MCQ_PROMPT = PromptTemplate(
    system=("You are a physician with broad knowledge of medicine and the biomedical sciences, answering a "
            "multiple-choice exam question. Consider every option, then commit to the single best answer."),
    user=("Question: {question}\n\nOptions:\n{options}\n\n"
          "Which option ({letters}) is the single best answer? Begin your reply with \"The answer is\" "
          "followed by its letter."),
    answer_prefix="The answer is",
)

PUBMEDQA_PROMPT = PromptTemplate(
    system=("You are a biomedical researcher. You answer a research question from the abstract of a study, "
            "judging only by the evidence that the abstract reports."),
    user=("Abstract:\n{context}\n\nResearch question: {question}\n\nOptions:\n{options}\n\n"
          "According to this abstract, which option ({letters}) answers the research question? Begin your "
          "reply with \"The answer is\" followed by its letter."),
    answer_prefix="The answer is",
)

PUBMEDQA_LABELS = ("yes", "no", "maybe")
MMLU_MEDICAL_SUBJECTS = ("anatomy", "clinical_knowledge", "college_biology", "college_medicine",
                         "medical_genetics", "professional_medicine")
MMLU_SPLITS = ("test", "val", "dev")
MEDQA_FILE = "phrases_no_exclude_test.jsonl"
MEDMCQA_FILES = ("validation.jsonl", "dev.json")


# ---------------------------------------------------------------------------------------------------------
# Tasks


def _letters(options: dict[str, str]) -> str:
    letters = list(options)
    return ", ".join(letters[:-1]) + " or " + letters[-1]


@dataclass(frozen=True)
class PublicMCQTask(CaseChallengeTask):
    """A case-challenge task whose items have no separate case: the prompt gets {question}, {options},
    {letters} and, where the dataset has one, {context}. Subclasses provide ``load``."""

    template: PromptTemplate = MCQ_PROMPT

    def prompt(self, item: Item, context: PromptContext) -> Prompt:
        payload = item.payload
        options = "\n".join(f"{letter}. {text}" for letter, text in payload["options"].items())
        user = self.template.user.format(question=payload["question"], context=payload.get("context", ""),
                                         options=options, letters=_letters(payload["options"]))
        return Prompt(system=self.template.system, user=user, answer_prefix=self.template.answer_prefix)


@dataclass(frozen=True)
class MedQATask(PublicMCQTask):
    data_format: str = (f"MedQA-USMLE JSONL as released ({MEDQA_FILE}): question, options {{A..D}}, answer_idx, "
                        "answer; a folder means its " + MEDQA_FILE)

    def load(self, path: Path) -> TaskData:
        return TaskData(load_medqa(path))


@dataclass(frozen=True)
class MMLUMedicalTask(PublicMCQTask):
    data_format: str = ("MMLU headerless CSV (question,A,B,C,D,answer) as released: the mmlu_medical folder "
                        "(test/), a folder of <subject>_<split>.csv for the six medical subjects, or one CSV")

    def load(self, path: Path) -> TaskData:
        return TaskData(load_mmlu_medical(path))


@dataclass(frozen=True)
class MedMCQATask(PublicMCQTask):
    data_format: str = ("MedMCQA JSONL: validation.jsonl {question, choices, answer (0-based)} or the original "
                        "dev.json {id, question, opa..opd, cop (1-based)}")

    def load(self, path: Path) -> TaskData:
        return TaskData(load_medmcqa(path))


# A reply that opens with the label word (after decoration, and after "The answer is" when the template has no
# answer prefix): "no.", " **Yes**, the abstract ...", ": maybe". A hedge ("yes or no", "yes/maybe") is not one.
_LABEL_WORD = re.compile(r"[\s:*_\"'`(\[\-]{0,8}(?:the\s+answer\s+is\b[\s:*_\"'`(\[\-]{0,8})?(yes|no|maybe)\b"
                         r"(?![\s*_\"'`)\]]*(?:(?:/|,|\bor\b|\band\b)\s*)+(?:yes|no|maybe)\b)", re.IGNORECASE)


@dataclass(frozen=True)
class PubMedQATask(PublicMCQTask):
    template: PromptTemplate = PUBMEDQA_PROMPT
    data_format: str = ("PubMedQA ori_pqal.json (+ test_ground_truth.json beside it selects the 500 test PMIDs), "
                        "or the folder holding them")

    def load(self, path: Path) -> TaskData:
        return TaskData(load_pubmedqa(path))

    def score(self, item: Item, generation: Generation, plan: Any = None) -> Score:
        """The case-challenge cascade without its fuzzy stage, plus one stage after lone_letter: a reply that
        starts with a label word ("no", "Yes, ...") chooses that option. Fuzzy matching is not used: "no" is
        too short for it, and one-word options match inside unrelated words ("eyes"). An echoed list of the
        labels ("yes\nno\nmaybe") or a letter stated with another label ("A. no") is never read as a label
        word: the cascade has already judged it (echo: unparseable; conflict)."""
        gold, options = item.payload["answer"], item.payload["options"]
        found = extract_choice(self.template.answer_prefix + generation.output, options,
                               instructions=self.template.user)
        if found.method in ("explicit", "lone_letter", "echo", "conflict"):
            return score_choice(gold, found, generation.finish_reason)
        match = _LABEL_WORD.match(generation.output)
        if match is None:
            detail = found.detail if found.method == "none" else "no answer found"
            return score_choice(gold, Extraction(None, "none", detail), generation.finish_reason)
        letter = next(k for k, v in options.items() if v == match.group(1).lower())
        word = Extraction(letter, "label_word", f'reply starts with "{match.group(1)}"')
        return score_choice(gold, word, generation.finish_reason)

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "extraction": extraction_setting("explicit>lone_letter>label_word")}


_OPTIONS = {"A": "ECG", "B": "Chest X-ray", "C": "Troponin", "D": "Discharge"}
MEDQA_LAYOUT = DataLayout(MEDQA_FILE, "jsonl", tuple(
    {"question": f"Vignette {n}: what next?", "answer": "ECG", "options": _OPTIONS, "answer_idx": "A"}
    for n in range(2)), text_fields=("question", "answer_idx"))
PUBMEDQA_LAYOUT = DataLayout("ori_pqal.json", "json-keyed", tuple(
    {"QUESTION": f"Does drug {n} help?", "CONTEXTS": ["Methods.", "Results."], "final_decision": "yes"}
    for n in range(2)), text_fields=("QUESTION",))
MMLU_LAYOUT = DataLayout(f"{MMLU_MEDICAL_SUBJECTS[0]}_test.csv", "csv-headerless", tuple(
    {"question": f"Question {n}?", **_OPTIONS, "answer": "B"} for n in range(2)), text_fields=("question", "A"))
MEDMCQA_LAYOUT = DataLayout(MEDMCQA_FILES[1], "jsonl", tuple(
    {"id": f"x{n}", "question": f"Question {n}?", "opa": "a", "opb": "b", "opc": "c", "opd": "d", "cop": 1}
    for n in range(2)), text_fields=("id", "question", "opa"), id_field="id")

TASKS = [
    MedQATask(
        id="medqa", title="MedQA (USMLE, 4 options)",
        description="USMLE-style clinical vignettes, 4 options; the official 1,273-item US test split.",
        data_layout=MEDQA_LAYOUT),
    PubMedQATask(
        id="pubmedqa", title="PubMedQA (PQA-L, reasoning-required)",
        description="Yes / no / maybe research questions answered from a PubMed abstract (without its "
                    "conclusion), as options A/B/C; the official 500-item test split.",
        data_layout=PUBMEDQA_LAYOUT),
    MMLUMedicalTask(
        id="mmlu_medical", title="MMLU medical subjects",
        description="4-option exam questions from six MMLU subjects (anatomy, clinical knowledge, college "
                    "biology, college medicine, medical genetics, professional medicine); 1,089 test items.",
        data_layout=MMLU_LAYOUT),
    MedMCQATask(
        id="medmcqa", title="MedMCQA (validation split)",
        description="4-option questions from Indian medical entrance exams (AIIMS / NEET-PG); the 4,183-item "
                    "validation split (the test answers are not public).",
        data_layout=MEDMCQA_LAYOUT),
]


# ---------------------------------------------------------------------------------------------------------
# Shared validation


def _item(item_id: str, path: Path, line: int, question: str, options: dict[str, str], answer: str,
          **extra: str) -> Item:
    return Item(id=item_id, payload={"question": question, **extra, "options": options, "answer": answer},
                source=f"{path}:{line}")


def _split_id(path: Path) -> str:
    """'phrases_no_exclude_test.jsonl' -> 'test'; 'validation.jsonl' -> 'validation'."""
    stem = path.stem
    for split in ("train", "dev", "test", "validation", "val"):
        if stem == split or stem.endswith("_" + split):
            return split
    return stem


# ---------------------------------------------------------------------------------------------------------
# MedQA


def load_medqa(path: Path) -> list[Item]:
    """MedQA-USMLE JSONL: ``{question, options{A..D}, answer_idx, answer, meta_info, metamap_phrases}``.

    ``answer_idx`` is the gold letter; ``answer`` (the gold text), when present, must equal that option.
    """
    path = find_data_file(path, (MEDQA_FILE,), (".jsonl",), "MedQA")
    split = _split_id(path)
    items = []
    for line, record in jsonl_records(path):
        question = required_text(path, line, record, "question")
        options = record.get("options")
        if not isinstance(options, dict):
            raise DataError(path, "expected an object of lettered options" if options is not None else
                            "missing", line=line, field="options")
        options = check_options(path, line, options, "options")
        answer = required_text(path, line, record, "answer_idx").upper()
        if answer not in options:
            raise DataError(path, f"'{record['answer_idx']}' is not one of the options "
                            f"{', '.join(options)}", line=line, field="answer_idx")
        text = record.get("answer")
        if text is not None and (not isinstance(text, str) or text.strip() != options[answer]):
            raise DataError(path, f"answer text {text!r} differs from option {answer} ({options[answer]!r})",
                            line=line, field="answer")
        items.append(_item(f"{split}-{line}", path, line, question, options, answer))
    return items


# ---------------------------------------------------------------------------------------------------------
# PubMedQA


def load_pubmedqa(path: Path) -> list[Item]:
    """PubMedQA PQA-L: ``ori_pqal.json`` maps PMID -> {QUESTION, CONTEXTS, LABELS, ..., final_decision}.

    Which items: for a file named ``ori_pqal.json`` (all 1,000 expert-labelled items, half of them the usual
    training folds), the PMIDs of ``test_ground_truth.json`` in the same folder, in that file's order: the
    official 500-item test split. Its labels must equal ``final_decision``. Any other file in the same schema
    (e.g. the split script's ``test_set.json``) is evaluated whole, gold = ``final_decision``.
    """
    path = find_data_file(path, ("ori_pqal.json",), (), "PubMedQA")
    text, data = json_object_file(path, "PMID -> item")
    selected: list[tuple[str, str | None]] = [(pmid, None) for pmid in data]
    if path.name == "ori_pqal.json":
        truth_path = path.with_name("test_ground_truth.json")
        if not truth_path.is_file():
            raise DataError(path, "test_ground_truth.json is not beside ori_pqal.json; it selects the official "
                            "500 test PMIDs (ori_pqal.json also holds the training folds). Copy it from the "
                            "PubMedQA repository's data/ folder, or pass a file holding only the items to evaluate")
        truth_text, truth = json_object_file(truth_path, "PMID -> label")
        truth_lines = key_lines(truth_text)
        selected = []
        for pmid, label in truth.items():
            if label not in PUBMEDQA_LABELS:
                raise DataError(truth_path, f"PMID {pmid}: label {label!r} is not yes, no or maybe",
                                line=truth_lines.get(pmid), field=pmid)
            if pmid not in data:
                raise DataError(truth_path, f"PMID {pmid} is not in {path.name}", line=truth_lines.get(pmid),
                                field=pmid)
            selected.append((pmid, label))
    lines = key_lines(text)
    items = []
    for pmid, truth_label in selected:
        record, line = data[pmid], lines.get(pmid, 1)
        where = f"PMID {pmid}: "
        if not isinstance(record, dict):
            hint = " (a PMID -> label file like test_ground_truth.json? pass ori_pqal.json)" \
                if isinstance(record, str) else ""
            raise DataError(path, f"{where}expected an object with QUESTION, CONTEXTS, final_decision, got "
                            f"{type(record).__name__}{hint}", line=line, field=pmid)
        question = required_text(path, line, record, "QUESTION", where=where)
        contexts = record.get("CONTEXTS")
        if not isinstance(contexts, list) or not contexts or \
                not all(isinstance(c, str) and c.strip() for c in contexts):
            raise DataError(path, f"{where}expected a non-empty list of non-empty texts", line=line,
                            field="CONTEXTS")
        decision = record.get("final_decision")
        if decision not in PUBMEDQA_LABELS:
            raise DataError(path, f"{where}{decision!r} is not yes, no or maybe", line=line, field="final_decision")
        if truth_label is not None and truth_label != decision:
            raise DataError(path, f"{where}'{decision}' differs from the test_ground_truth.json label "
                            f"'{truth_label}'", line=line, field="final_decision")
        options = {LETTERS[i]: label for i, label in enumerate(PUBMEDQA_LABELS)}
        answer = LETTERS[PUBMEDQA_LABELS.index(decision)]
        context = "\n".join(c.strip() for c in contexts)
        items.append(_item(pmid, path, line, question, options, answer, context=context))
    return items


# ---------------------------------------------------------------------------------------------------------
# MMLU (medical subjects)


def _mmlu_name(path: Path) -> tuple[str, str]:
    """'anatomy_test.csv' -> ('anatomy', 'test'); a file without a split suffix counts as test."""
    stem = path.stem
    for split in MMLU_SPLITS:
        if stem.endswith("_" + split):
            return stem[: -len(split) - 1], split
    return stem, "test"


def load_mmlu_medical(path: Path) -> list[Item]:
    """MMLU CSVs (no header; question, A, B, C, D, answer letter).

    A folder holding ``test/`` means that subfolder; any other folder must hold ``<subject>_<split>.csv`` for
    each of the six medical subjects (one split; other subjects' files are ignored, so the full MMLU
    ``data/test`` works too). A single CSV is read whatever its subject.
    """
    path = existing_path(path)
    if path.is_file():
        return _load_mmlu_csv(path)
    folder = path / "test" if (path / "test").is_dir() else path
    found: dict[str, dict[str, Path]] = {}
    for file in sorted(folder.glob("*.csv")):
        subject, split = _mmlu_name(file)
        if subject in MMLU_MEDICAL_SUBJECTS and file.stem.endswith("_" + split):
            found.setdefault(split, {})[subject] = file
    if not found:
        raise DataError(folder, "folder holds none of the medical MMLU files <subject>_test.csv for "
                        + ", ".join(MMLU_MEDICAL_SUBJECTS))
    if len(found) > 1:
        raise DataError(folder, f"folder mixes MMLU splits ({', '.join(sorted(found))}); pass one split's folder")
    (split, files), = found.items()
    missing = [s for s in MMLU_MEDICAL_SUBJECTS if s not in files]
    if missing:
        raise DataError(folder, f"missing {missing[0]}_{split}.csv (all six medical subjects are needed; pass "
                        "one CSV with --data to run a single subject)")
    return [item for subject in MMLU_MEDICAL_SUBJECTS for item in _load_mmlu_csv(files[subject])]


def _load_mmlu_csv(path: Path) -> list[Item]:
    if path.suffix.lower() != ".csv":
        raise DataError(path, f"unsupported file type '{path.suffix}' (expected an MMLU .csv)")
    subject, split = _mmlu_name(path)
    prefix = subject if split == "test" else f"{subject}-{split}"
    items, row_number = [], 0
    for start, row in csv_rows(path, strict=True):  # start: the record's first line; questions may span lines
        row_number += 1
        if len(row) != 6:
            raise DataError(path, f"expected 6 columns (question,A,B,C,D,answer), found {len(row)}", line=start)
        if row_number == 1 and [c.strip().lower() for c in row] == ["question", "a", "b", "c", "d", "answer"]:
            raise DataError(path, "MMLU CSVs have no header row; remove it", line=start)
        record = dict(zip(("question", "A", "B", "C", "D", "answer"), row))
        question = required_text(path, start, record, "question")
        options = {letter: record[letter] for letter in "ABCD"}
        for letter, text in options.items():
            if not text.strip():
                raise DataError(path, f"option {letter} is empty", line=start, field=letter)
        options = check_options(path, start, options, "options")
        answer = record["answer"].strip().upper()
        if answer not in options:
            raise DataError(path, f"'{record['answer']}' is not one of A, B, C, D", line=start, field="answer")
        items.append(_item(f"{prefix}-{row_number}", path, start, question, options, answer))
    if not items:
        raise DataError(path, "file holds no rows")
    return items


# ---------------------------------------------------------------------------------------------------------
# MedMCQA

_CHOICE_LABEL = re.compile(r"([A-J])\.(?:\s+|$)")


def load_medmcqa(path: Path) -> list[Item]:
    """MedMCQA JSONL, either layout (decided by the first record; a file may not mix them):

    - simplified export (our shared ``validation.jsonl``): ``{question, choices: ["A. ...", ...], answer}``,
      ``answer`` a 0-based index; the "A. " labels are stripped.
    - original release (``train.json`` / ``dev.json``, JSON lines): ``{id, question, opa, opb, opc, opd, cop,
      choice_type, exp, subject_name, topic_name}``, ``cop`` 1-based (1 = opa) as the MedMCQA README states.
      (The Hugging Face copy stores cop 0-based: such a file fails on its first cop 0, never mis-scores.)
    """
    path = find_data_file(path, MEDMCQA_FILES, (".jsonl", ".json"), "MedMCQA")
    records = jsonl_records(path)
    original = "cop" in records[0][1] or "opa" in records[0][1]
    read = _medmcqa_original if original else _medmcqa_simplified
    items = [read(path, line, record, required_text(path, line, record, "question")) for line, record in records]
    check_unique_ids(items, "id")  # the original release's ids; the export's are line numbers
    return items


def _medmcqa_original(path: Path, line: int, record: dict[str, Any], question: str) -> Item:
    if "choices" in record:
        raise DataError(path, "mixes the original (opa..opd, cop) and simplified (choices, answer) layouts",
                        line=line, field="choices")
    item_id = required_text(path, line, record, "id")
    options = check_options(path, line, {letter: required_text(path, line, record, f"op{letter.lower()}")
                                          for letter in "ABCD"}, "opa")
    cop = record.get("cop")
    if cop is None or cop == -1:
        raise DataError(path, "missing (the official MedMCQA test split has no public answers; use dev.json)",
                        line=line, field="cop")
    if not isinstance(cop, int) or isinstance(cop, bool) or not 1 <= cop <= 4:
        hint = " (cop is 1-based in the original release; a 0-based Hugging Face export is not supported)" \
            if cop == 0 else ""
        raise DataError(path, f"{cop!r} is not an option number 1-4{hint}", line=line, field="cop")
    return _item(item_id, path, line, question, options, LETTERS[cop - 1])


def _medmcqa_simplified(path: Path, line: int, record: dict[str, Any], question: str) -> Item:
    if "opa" in record or "cop" in record:
        raise DataError(path, "mixes the simplified (choices, answer) and original (opa..opd, cop) layouts",
                        line=line, field="cop" if "cop" in record else "opa")
    choices = record.get("choices")
    if not isinstance(choices, list):
        raise DataError(path, "expected a list of option texts" if choices is not None else "missing",
                        line=line, field="choices")
    if not MIN_OPTIONS <= len(choices) <= len(LETTERS):
        raise DataError(path, f"expected {MIN_OPTIONS}-{len(LETTERS)} choices, got {len(choices)}", line=line,
                        field="choices")
    options: dict[str, Any] = {}
    for letter, choice in zip(LETTERS, choices):
        if isinstance(choice, str) and (m := _CHOICE_LABEL.match(choice.strip())) and m.group(1) == letter:
            choice = choice.strip()[m.end():]
        options[letter] = choice
    options = check_options(path, line, options, "choices")
    answer = record.get("answer")
    if answer is None or answer == -1:
        raise DataError(path, "missing (the MedMCQA test split has no public answers; use the validation split)",
                        line=line, field="answer")
    if not isinstance(answer, int) or isinstance(answer, bool) or not 0 <= answer < len(options):
        raise DataError(path, f"{answer!r} is not a 0-based index of the {len(options)} choices", line=line,
                        field="answer")
    return _item(f"{_split_id(path)}-{line}", path, line, question, options, LETTERS[answer])
