"""The CLUE free-text tasks, scored with ROUGE-1/2/L: MeQSum, Problem Summary (BioNLP 2023 1A) and MeDiSumQA.

Each reads the dataset as released (formats, accepted field names and ids: docs/tasks-clue.md) and follows
the CLUE reference (June-2024 TGI code; docs/study-reference.md#the-clue-pipeline, #tasks, #metrics):

- meqsum: ``MeQSum_ACL2019_BenAbacha_Demner-Fushman.xlsx`` (CHQ -> Summary); 3 shots; 200 tokens;
  prefix ``"Question: "``.
- problem_summary: ``BioNLP2023-1A-Test.csv`` (Subjectives + Assessment -> Summary); 3 shots; 100 tokens;
  prefix ``"Diagnoses/Patient problems: "``.
- medisumqa: PhysioNet MeDiSumQA, JSON array / JSON Lines / CSV (letter + Question -> Answer); 1 shot (*);
  200 tokens; prefix ``"Answer: "``.

(*) after ``random.Random(1).shuffle`` of the records (the reference's ``random.seed(1)``); the others take
the first records of the file unshuffled. Few-shot examples are never evaluated.

Scoring: the raw output (stored untouched) is post-processed as the reference did -- the line-local regex
clean-up for MeQSum and Problem Summary, ``strip()`` for MeDiSumQA -- and the result (kept in
``Score.extracted``) is scored against the reference text (``Score.gold``) with per-example ROUGE-1/2/L
F-measures (``metrics.rouge``: rouge-score, no stemming, fractions 0..1). Problem Summary lower-cases both
sides (2024 code; a no-op for ROUGE, kept for the optional BERTScore) and uses the reference summary with
";" replaced by ", ". Outcome ``scored``; ``truncated`` when the token budget ran out (still scored); an
output that is empty after clean-up is ``unparseable`` (ROUGE 0, as the reference scored it).

``reference_quirks=True`` (``run --reference-quirks``): no task stop strings (the reference passed none), and
for Problem Summary the reference's no-op attempt to drop a trailing ";" from the summary is reproduced (the
trailing ";" then becomes a trailing ", " in the reference text and the few-shot answers; ROUGE ignores it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..engine.base import Generation
from ..errors import DataError
from ..metrics.rouge import ROUGE_IMPL_VERSION, ROUGE_TYPES, rouge_scores
from ..prompting import Prompt
from .base import BERTSCORE_METRICS, UMLS_METRICS, Item, MetricSpec, PromptContext, Score, StudyRole, TaskBase, TaskData
from .clue_common import (
    CLEANUP_VERSION,
    MEDISUMQA_SHUFFLE_SEED,
    STRIP_VERSION,
    clean_output,
    seeded_shuffle,
    split_shots,
    strip_output,
    user_block_stop,
)
from .datafiles import (
    DataLayout,
    check_unique_ids,
    csv_records,
    find_data_file,
    json_records,
    jsonl_records,
    optional_text,
    required_text,
    xlsx_records,
)
from .prompts import PromptTemplate

#: ROUGE F1 per summary, one metric per ROUGE type (metrics/rouge.py).
ROUGE_METRICS: tuple[MetricSpec, ...] = tuple(MetricSpec(name, "continuous", description=text) for name, text in zip(
    ROUGE_TYPES, ("ROUGE-1 F1 (unigram overlap with the reference), 0-1",
                  "ROUGE-2 F1 (bigram overlap with the reference), 0-1",
                  "ROUGE-L F1 (longest common subsequence with the reference), 0-1"), strict=True))

#: The metrics CLUE averaged into a summarisation task's Level component (ProbSum and MeDiSumQA; MeQSum had no UMLS).
CLUE_METRICS = ("rougeL", "rouge1", "rouge2", "bertscore_f1", "umls_f1")
MEQSUM_CLUE_METRICS = CLUE_METRICS[:4]

MEQSUM_FILE = "MeQSum_ACL2019_BenAbacha_Demner-Fushman.xlsx"
PROBSUM_FILE = "BioNLP2023-1A-Test.csv"
MEDISUMQA_FILES = ("MeDiSumQA.json", "MeDiSumQA.jsonl", "MeDiSumQA.csv")
MEQSUM_COLUMNS: dict[str, tuple[str, ...]] = {"CHQ": ("CHQ",), "Summary": ("Summary",), "File": ("File",)}

MEQSUM_PROMPT = PromptTemplate(
    system=("You help patients put their health questions into words. You will read a message that a patient "
            "sent to a health information service. Rewrite it as a single short question that keeps exactly "
            "what the patient wants to know. Write that question only, with no introduction or explanation."),
    user="=== PATIENT MESSAGE ===\n{inquiry}\n=== END OF PATIENT MESSAGE ===",
    answer_prefix="Question: ",
)

PROBSUM_PROMPT = PromptTemplate(
    system=("You are a meticulous clinical documentation assistant working for physicians. You will be given "
            "an excerpt of a hospital note about one patient: the subjective findings and the clinician's "
            "assessment. Your job is to name the diagnoses and problems that explain why the patient is in "
            "hospital."),
    user=("=== NOTE EXCERPT ===\n{subjective}\n\n{assessment}\n=== END OF NOTE EXCERPT ===\n"
          "List the diagnoses and patient problems now. Write the list only, nothing else."),
    answer_prefix="Diagnoses/Patient problems: ",
)

MEDISUMQA_PROMPT = PromptTemplate(
    system=("You explain hospital discharge letters to patients and their families, who are not medical "
            "experts. You will receive a discharge letter and a question about it. Reply with the answer only: "
            "short, in plain words, without listing many specific details. If the question is about "
            "measurements such as laboratory values, say what they mean for the question instead of quoting "
            "the numbers. Write nothing else."),
    user="=== DISCHARGE LETTER ===\n{letter}\n=== END OF DISCHARGE LETTER ===\nThe patient asks: {question}",
    answer_prefix="Answer: ",
)


@dataclass(frozen=True)
class SummaryTask(TaskBase):
    """Shared prompt/score/settings of the ROUGE-scored CLUE tasks; subclasses load, format and clean."""

    id: str
    title: str
    description: str
    template: PromptTemplate
    max_tokens: int
    n_shots: int
    data_format: str
    reference_quirks: bool = False
    lowercase: bool = False
    # ROUGE on every run; BERTScore (and UMLS-F1 where the reference had it) later, from `rescore`
    metrics: tuple[MetricSpec, ...] = ROUGE_METRICS + BERTSCORE_METRICS
    configurable = ("prompts", "reference_quirks")

    @property
    def stop(self) -> tuple[str, ...]:  # type: ignore[override]  # TaskBase declares it as a field
        return () if self.reference_quirks else user_block_stop(self.template)

    # -- subclass hooks ------------------------------------------------------------------------------
    def load(self, path: Path) -> TaskData:  # pragma: no cover - abstract
        raise NotImplementedError

    def user_fields(self, item: Item) -> dict[str, str]:  # pragma: no cover - abstract
        raise NotImplementedError

    def reference(self, item: Item) -> str:
        """The reference text the output is scored against (and the few-shot answer)."""
        return str(item.payload["summary"])

    def postprocess(self, output: str) -> str:
        """The reference post-processing of the raw output (default: the regex clean-up)."""
        return clean_output(output)

    postprocess_version: str = CLEANUP_VERSION
    shuffle_seed: int | None = None

    # -- shared --------------------------------------------------------------------------------------
    def _user(self, item: Item) -> str:
        return self.template.user.format(**self.user_fields(item))

    def prompt(self, item: Item, context: PromptContext) -> Prompt:
        shots = tuple((self._user(shot), self.reference(shot)) for shot in context.shots)
        return Prompt(system=self.template.system, user=self._user(item), shots=shots,
                      answer_prefix=self.template.answer_prefix)

    def score(self, item: Item, generation: Generation, plan: Any = None) -> Score:
        prediction = self.postprocess(generation.output)
        reference = self.reference(item)
        metrics = rouge_scores(prediction, reference, lowercase=self.lowercase)
        method = f"{self.postprocess_version}+rouge" + ("(lowercased)" if self.lowercase else "")
        removed = "" if prediction == generation.output else \
            f"post-processing removed {len(generation.output) - len(prediction)} characters"
        if not prediction.strip():
            outcome = "truncated" if generation.finish_reason == "length" else "unparseable"
            detail = "empty output after post-processing" + (f"; {removed}" if removed else "")
        else:
            outcome = "truncated" if generation.finish_reason == "length" else "scored"
            detail = removed
        return Score(outcome, prediction, reference, method, detail, metrics)

    def settings(self) -> dict[str, Any]:
        selection = "first-k" if self.shuffle_seed is None else f"first-k after shuffle(seed={self.shuffle_seed})"
        return {"task": self.id, "max_tokens": self.max_tokens, "stop": list(self.stop),
                "prompt_sha256": self.template.sha256, "shots": self.n_shots, "shot_selection": selection,
                "reference_quirks": self.reference_quirks, "postprocess": self.postprocess_version,
                "rouge": ROUGE_IMPL_VERSION, "rouge_types": list(ROUGE_TYPES), "lowercase": self.lowercase}


# ---------------------------------------------------------------------------------------------------------
# MeQSum


@dataclass(frozen=True)
class MeQSumTask(SummaryTask):
    id: str = "meqsum"
    title: str = "MeQSum (CLUE)"
    description: str = ("Summarize a consumer health question as one short question. 3-shot, ROUGE-1/2/L "
                        "(BERTScore optional).")
    template: PromptTemplate = MEQSUM_PROMPT
    max_tokens: int = 200
    n_shots: int = 3
    study = StudyRole(quirk_counts_first_twice=True, clue_level=1, clue_metrics=MEQSUM_CLUE_METRICS,
                      published_columns=tuple((f"meqsum_{m}", m) for m in MEQSUM_CLUE_METRICS),
                      rescore_texts=(("bertscore", "as is"),), bertscore_model="scibert")
    data_layout = DataLayout(
        MEQSUM_FILE, "xlsx", tuple({"File": f"q{n}.txt", "CHQ": f"Message {n}: is my rash serious?",
                                    "Summary": f"Is rash {n} serious?"} for n in range(5)),
        text_fields=("CHQ", "Summary"), id_field="File")
    data_format: str = (f"MeQSum release {MEQSUM_FILE} (columns CHQ, Summary, File; first sheet), or the same "
                        "columns as JSON Lines (.jsonl); first 3 rows are few-shot examples")

    def load(self, path: Path) -> TaskData:
        file = find_data_file(path, (MEQSUM_FILE,), (".xlsx", ".jsonl"), "MeQSum")
        if file.suffix.lower() == ".xlsx":
            columns, cells = xlsx_records(file, MEQSUM_COLUMNS, optional=("File",))
            # the header may spell the columns in another case: read each under the released spelling
            rows = [(n, {name: row[column] for name, column in columns.items() if column}) for n, row in cells]
        else:
            rows = jsonl_records(file)
        items = []
        for line, record in rows:
            inquiry = required_text(file, line, record, "CHQ", numbers=True, strip=False)
            summary = required_text(file, line, record, "Summary", numbers=True, strip=False)
            source_id = optional_text(file, line, record, "File", numbers=True)
            items.append(Item(id=source_id or f"meqsum-{line}", payload={"inquiry": inquiry, "summary": summary},
                              source=f"{file}:{line}"))
        check_unique_ids(items, "File")
        return split_shots(file, items, self.n_shots)

    def user_fields(self, item: Item) -> dict[str, str]:
        return {"inquiry": item.payload["inquiry"]}


# ---------------------------------------------------------------------------------------------------------
# Problem Summary (BioNLP 2023 task 1A, "ProbSum")

PROBSUM_COLUMNS: dict[str, tuple[str, ...]] = {
    "id": ("File ID", "File_ID", "FileID"),
    "subjective": ("Subjectives", "Subjective Sections", "Subjective"),
    "assessment": ("Assessment",),
    "summary": ("Summary",),
}


def probsum_reference(summary: str, quirks: bool = False) -> str:
    """The reference summary as the CLUE loader made it: ";" -> ", ".

    The reference meant to drop one trailing ";" first but did not assign the result (a no-op;
    docs/study-reference.md#reference-quirks); by default we drop it, with ``quirks`` we do not (leaving a
    trailing ", ").
    """
    if not quirks and summary.endswith(";"):
        summary = summary[:-1]
    return summary.replace(";", ", ")


@dataclass(frozen=True)
class ProblemSummaryTask(SummaryTask):
    id: str = "problem_summary"
    title: str = "Problem Summary / ProbSum (CLUE)"
    description: str = ("List the diagnoses/problems from a progress-note excerpt (BioNLP 2023 task 1A). "
                        "3-shot, ROUGE-1/2/L on lower-cased text (BERTScore, UMLS-F1 optional).")
    template: PromptTemplate = PROBSUM_PROMPT
    max_tokens: int = 100
    n_shots: int = 3
    lowercase: bool = True
    metrics: tuple[MetricSpec, ...] = ROUGE_METRICS + BERTSCORE_METRICS + UMLS_METRICS
    study = StudyRole(quirk_counts_first_twice=True, clue_level=1, clue_metrics=CLUE_METRICS,
                      published_columns=tuple((f"probsum_{m}", m) for m in CLUE_METRICS),
                      rescore_texts=(("bertscore", "lower-cased"), ("umls", "original case")),
                      bertscore_model="clinicalbert")
    data_layout = DataLayout(
        PROBSUM_FILE, "csv", tuple({"File ID": f"f{n}", "Subjectives": f"Cough for {n} days.",
                                    "Assessment": "Likely pneumonia.", "Summary": "Pneumonia; cough"}
                                   for n in range(5)),
        text_fields=("Summary",), id_field="File ID")
    data_format: str = (f"BioNLP 2023 1A CSV ({PROBSUM_FILE}): File ID, Subjectives (or Subjective Sections), "
                        "Assessment, Summary (';'-separated); first 3 rows are few-shot examples")

    def load(self, path: Path) -> TaskData:
        file = find_data_file(path, (PROBSUM_FILE,), (".csv",), "Problem Summary")
        columns, rows = csv_records(file, PROBSUM_COLUMNS, optional=("id",))
        items = []
        for line, row in rows:
            subjective = row[columns["subjective"]]  # type: ignore[index]
            assessment = row[columns["assessment"]]  # type: ignore[index]
            if not subjective.strip() and not assessment.strip():
                raise DataError(file, "both the subjective sections and the assessment are empty", line=line,
                                field=columns["assessment"])
            summary = required_text(file, line, row, columns["summary"] or "Summary", strip=False)
            file_id = optional_text(file, line, row, columns["id"]) if columns["id"] else None
            items.append(Item(id=file_id or f"probsum-{line}",
                              payload={"subjective": subjective, "assessment": assessment, "summary": summary},
                              source=f"{file}:{line}"))
        check_unique_ids(items, columns["id"] or "File ID")
        return split_shots(file, items, self.n_shots)

    def user_fields(self, item: Item) -> dict[str, str]:
        return {"subjective": item.payload["subjective"], "assessment": item.payload["assessment"]}

    def reference(self, item: Item) -> str:
        return probsum_reference(item.payload["summary"], self.reference_quirks)

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "reference_text": "summary ';'->', '" +
                ("" if self.reference_quirks else " after dropping one trailing ';'")}


# ---------------------------------------------------------------------------------------------------------
# MeDiSumQA

MEDISUMQA_FIELDS: dict[str, tuple[str, ...]] = {
    "letter": ("without_discharge_summary", "discharge_summary"),
    "question": ("Question", "question"),
    "answer": ("Answer", "answer"),
    "id": ("note_id", "id"),
}


@dataclass(frozen=True)
class MeDiSumQATask(SummaryTask):
    id: str = "medisumqa"
    title: str = "MeDiSumQA (CLUE)"
    description: str = ("Answer a patient's question about their discharge letter (instructions section "
                        "removed). 1-shot after a seeded shuffle, ROUGE-1/2/L (BERTScore, UMLS-F1 optional).")
    template: PromptTemplate = MEDISUMQA_PROMPT
    max_tokens: int = 200
    n_shots: int = 1
    shuffle_seed: int | None = MEDISUMQA_SHUFFLE_SEED
    metrics: tuple[MetricSpec, ...] = ROUGE_METRICS + BERTSCORE_METRICS + UMLS_METRICS
    study = StudyRole(quirk_counts_first_twice=True, clue_level=2, clue_metrics=CLUE_METRICS,
                      published_columns=tuple((f"medisumqa_{m}", m) for m in CLUE_METRICS),
                      rescore_texts=(("bertscore", "as is"), ("umls", "original case")), bertscore_model="clinicalbert")
    postprocess_version: str = STRIP_VERSION
    data_layout = DataLayout(
        MEDISUMQA_FILES[0], "json-array",
        tuple({"note_id": f"n{n}", "without_discharge_summary": f"Letter {n}: admitted with chest pain.",
               "Question": "Why was I in hospital?", "Answer": "Chest pain."} for n in range(3)),
        text_fields=("without_discharge_summary", "Question", "Answer"))  # a note may carry several questions
    data_format: str = ("PhysioNet MeDiSumQA: JSON array, JSON Lines or CSV with discharge_summary (or "
                        "without_discharge_summary), Question, Answer, optional note_id; shuffled with seed 1, "
                        "first record is the few-shot example")

    def load(self, path: Path) -> TaskData:
        file = find_data_file(path, MEDISUMQA_FILES, (".json", ".jsonl", ".csv"), "MeDiSumQA")
        names = MEDISUMQA_FIELDS
        if file.suffix.lower() == ".csv":
            columns, rows = csv_records(file, MEDISUMQA_FIELDS, optional=("id",))
            # CSV headers are matched case-insensitively: read each cell under the column actually found
            names = {key: ((column,) if column else ()) for key, column in columns.items()}
            records: list[tuple[int, dict[str, Any]]] = list(rows)
        else:
            records = json_records(file)
        parsed = []
        for line, record in records:
            letter, question, answer = (required_text(file, line, record, names[key], numbers=True, strip=False)
                                        for key in ("letter", "question", "answer"))
            note_id = optional_text(file, line, record, names["id"], numbers=True) if names["id"] else None
            parsed.append((line, note_id or "", {"letter": letter, "question": question, "answer": answer}))
        # ids: note_id (with "#k" for the k-th question on a note that has several), else the record number
        totals: dict[str, int] = {}
        for _, note_id, _ in parsed:
            totals[note_id] = totals.get(note_id, 0) + 1
        seen: dict[str, int] = {}
        items = []
        for number, (line, note_id, payload) in enumerate(parsed, start=1):
            if note_id:
                seen[note_id] = seen.get(note_id, 0) + 1
                item_id = note_id if totals[note_id] == 1 else f"{note_id}#{seen[note_id]}"
            else:
                item_id = f"medisumqa-{number}"
            items.append(Item(id=item_id, payload=payload, source=f"{file}:{line}"))
        check_unique_ids(items, "note_id")
        ordered = items if self.shuffle_seed is None else seeded_shuffle(items, self.shuffle_seed)
        return split_shots(file, ordered, self.n_shots)

    def user_fields(self, item: Item) -> dict[str, str]:
        return {"letter": item.payload["letter"], "question": item.payload["question"]}

    def reference(self, item: Item) -> str:
        return str(item.payload["answer"])

    def postprocess(self, output: str) -> str:
        return strip_output(output)


TASKS = [MeQSumTask(), ProblemSummaryTask(), MeDiSumQATask()]
