"""MeDiSumCode (CLUE): list the ICD-10-CM codes of the diagnoses in a discharge letter.

The data cannot be shipped: the user builds it from MIMIC-IV-Note ``discharge.csv`` and MIMIC-IV
``hosp/diagnoses_icd.csv.gz`` with the CLUE script logic (docs/study-reference.md#medisumcode). That script
writes **JSON Lines** while the CLUE evaluator reads a **JSON array** (docs/study-reference.md#reference-quirks),
so both are accepted, detected from the first character. One record per discharge letter::

    {"hadm_id": "2xxxxxxx", "text": "<discharge letter>",
     "icd_codes": [{"code": "E119", "description": "..."}, {"code": "I10", "description": "..."}]}

This is the CLUE builder's own format. Also accepted, so that converted files need no second conversion:
``id`` instead of ``hadm_id``; instead of ``icd_codes`` a field ``codes``, ``icd10`` or ``target`` holding
either a comma-separated string (``"E119, I10"``; what the CLUE evaluator builds internally) or a list of
codes (strings, or objects with a ``code`` key). When several code fields are present they must agree.
Dots are optional (MIMIC writes ``E119``; ``E11.9`` is the same code). An empty code list is allowed (the
reference keeps such letters; they score 0 recall) but every code given must look like an ICD-10-CM code.

As in the reference (docs/study-reference.md#the-clue-pipeline): the **first record is the one-shot example**
and is not evaluated; the assistant turn of the shot and the answer prefix are ``"ICD-10 Codes: "``; at most 200 new
tokens; the output is cleaned with the reference's self-prompting regex, then codes are pulled out with the
reference regex (dots removed) and scored with exact-match and 3-character ("approximate") P/R/F1 and the
share of valid codes (``medbench_local.metrics.icd``). The wording of the prompts is our own, following the
described structure (the letter between begin/end markers, then the instruction to return only
the codes).

Outcomes: ``scored`` when at least one code was read; ``unparseable`` when the output holds no code at all
(the metrics are then all 0, as in the reference, but the item is visible as a failure to answer);
``truncated`` when the 200-token budget ran out (the codes written so far are still scored, as in the
reference). ``reference_quirks=True`` (``run --reference-quirks``) counts repeated codes as the reference
does (duplicates count in EM precision: docs/study-reference.md#reference-quirks).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..engine.base import Generation
from ..errors import DataError
from ..metrics.icd import ICD_PATTERN, ICD_TABLE_VERSION, extract_codes, icd_metrics, normalize_code, parse_reference
from ..prompting import Prompt
from .base import Item, MetricSpec, PromptContext, Score, StudyRole, TaskBase, TaskData
from .clue_common import CLEANUP_VERSION, clean_output, split_shots, user_block_stop
from .datafiles import DataLayout, check_unique_ids, find_data_file, json_kind, json_records, required_text
from .prompts import PromptTemplate

MEDISUMCODE_PROMPT = PromptTemplate(
    system=("You are a careful clinical coding assistant who supports physicians and medical coders. You will "
            "be given the discharge letter of a hospital stay. Identify every primary and secondary diagnosis "
            "documented in it and give the ICD-10 code of each."),
    user=("=== DISCHARGE LETTER ===\n{text}\n"
          "=== END OF DISCHARGE LETTER ===\n"
          "Now list the ICD-10 codes of the diagnoses in this letter, separated by commas. Write only the "
          "codes and nothing else."),
    answer_prefix="ICD-10 Codes: ",
)

ID_FIELDS = ("id", "hadm_id")
TEXT_FIELDS = ("text",)
CODE_FIELDS = ("icd_codes", "codes", "icd10", "target")
DATA_FILES = ("medisumcode.json", "medisumcode.jsonl")
N_SHOTS = 1

# Shape of a reference code after normalization (upper case, no dot): a letter, a digit, a digit or letter
# (C7A, M1A ...), then up to four more characters. Only catches files with descriptions or ICD-9 codes in
# the code field; whether a code exists in the table is the scorer's business (valid_ratio).
_CODE_SHAPE = re.compile(r"[A-Z][0-9][0-9A-Z][0-9A-Z]{0,4}")

DATA_FORMAT = ("JSON array or JSON Lines of {hadm_id|id, text, icd_codes:[{code}] | codes:\"E119, I10\"}; "
               "the first record is the 1-shot example (see bench_data/medisumcode/README.md)")

#: metric -> what one value means (the catalog's glossary), in display order.
METRICS: dict[str, str] = {
    "em_precision": "ICD-10 codes: exact-match precision",
    "em_recall": "ICD-10 codes: exact-match recall",
    "em_f1": "ICD-10 codes: exact-match F1",
    "ap_precision": "ICD-10 codes: precision on the first 3 characters (approximate match)",
    "ap_recall": "ICD-10 codes: recall on the first 3 characters (approximate match)",
    "ap_f1": "ICD-10 codes: F1 on the first 3 characters (approximate match)",
    "valid_ratio": "ICD-10 codes: share of predicted codes that exist in the ICD-10-CM table",
}


def _codes_of(path: Path, line: int, name: str, value: Any) -> list[str]:
    """The codes of one code field, stripped, empty entries dropped, in file order."""
    if isinstance(value, str):
        raw: list[Any] = value.split(",")
    elif isinstance(value, list):
        raw = [entry.get("code") if isinstance(entry, dict) else entry for entry in value]
    else:
        raise DataError(path, f"expected a comma-separated string or a list of codes, got {json_kind(value)}",
                        line=line, field=name)
    codes = []
    for code in raw:
        if not isinstance(code, str):
            raise DataError(path, f"expected each code as text (or an object with a 'code' key), got {code!r}",
                            line=line, field=name)
        if code.strip():
            if not _CODE_SHAPE.fullmatch(normalize_code(code)):
                raise DataError(path, f"'{code.strip()}' is not an ICD-10-CM code", line=line, field=name)
            codes.append(code.strip())
    return codes


def reference_codes(path: Path, line: int, record: dict[str, Any]) -> list[str]:
    """The gold codes of one record from whichever code field it has (they must agree if several)."""
    present = [name for name in CODE_FIELDS if record.get(name) is not None]
    if not present:
        also = ", ".join(repr(n) for n in CODE_FIELDS[1:])
        raise DataError(path, f"missing (also accepted: {also})", line=line, field=CODE_FIELDS[0])
    codes = _codes_of(path, line, present[0], record[present[0]])
    for name in present[1:]:
        if parse_reference(_codes_of(path, line, name, record[name])) != parse_reference(codes):
            raise DataError(path, f"disagrees with '{present[0]}' (give one code field, or the same codes)",
                            line=line, field=name)
    return codes


def load_medisumcode(path: Path) -> TaskData:
    """Items of a MeDiSumCode file (or of the one such file in a folder); the first record is the shot."""
    file = find_data_file(path, DATA_FILES, (".json", ".jsonl"), "MeDiSumCode")
    items = []
    for line, record in json_records(file):
        item_id = required_text(file, line, record, ID_FIELDS, numbers=True)
        text = required_text(file, line, record, TEXT_FIELDS, numbers=True, strip=False)
        payload = {"text": text, "codes": reference_codes(file, line, record)}
        items.append(Item(id=item_id, payload=payload, source=f"{file}:{line}"))
    check_unique_ids(items, ID_FIELDS[0])
    return split_shots(file, items, N_SHOTS)


@dataclass(frozen=True)
class IcdCodingTask(TaskBase):
    id: str = "medisumcode"
    title: str = "MeDiSumCode (CLUE): ICD-10 coding of discharge letters"
    description: str = ("List the ICD-10-CM codes of all diagnoses in a MIMIC-IV discharge letter; 1-shot. "
                        "Data built by the user from MIMIC-IV (PhysioNet credentialed).")
    template: PromptTemplate = MEDISUMCODE_PROMPT
    reference_quirks: bool = False
    max_tokens: int = 200
    data_format: str = DATA_FORMAT
    # CLUE reports EM-F1, AP-F1 and the valid-code ratio; precision and recall are components
    metrics: tuple[MetricSpec, ...] = tuple(
        MetricSpec(name, "continuous", reported=name in ("em_f1", "ap_f1", "valid_ratio"), description=text)
        for name, text in METRICS.items())
    configurable = ("prompts", "reference_quirks")
    study = StudyRole(quirk_counts_first_twice=True, clue_level=2, clue_metrics=("em_f1", "ap_f1", "valid_ratio"),
                      published_columns=(("medisumcode_em_f1", "em_f1"), ("medisumcode_ap_f1", "ap_f1"),
                                         ("medisumcode_valid_codes", "valid_ratio")))
    data_layout = DataLayout(
        DATA_FILES[1], "jsonl", tuple({"id": f"h{n}", "text": f"Discharge letter {n}: diabetes, hypertension.",
                                       "icd_codes": [{"code": "E119"}, {"code": "I10"}]} for n in range(3)),
        text_fields=("id", "text"), id_field="id")

    @property
    def stop(self) -> tuple[str, ...]:  # type: ignore[override]  # TaskBase declares it as a field
        # plain-text prompts only: a base model that is done starts a fake next letter with our marker line
        return user_block_stop(self.template)

    def load(self, path: Path) -> TaskData:
        return load_medisumcode(path)

    def _user(self, item: Item) -> str:
        return self.template.user.format(text=item.payload["text"])

    def prompt(self, item: Item, context: PromptContext) -> Prompt:
        shots = tuple((self._user(shot), ", ".join(shot.payload["codes"])) for shot in context.shots)
        return Prompt(system=self.template.system, user=self._user(item), shots=shots,
                      answer_prefix=self.template.answer_prefix)

    def score(self, item: Item, generation: Generation, plan: Any = None) -> Score:
        predicted = extract_codes(clean_output(generation.output))
        gold = parse_reference(item.payload["codes"])
        metrics = icd_metrics(predicted, gold, count_duplicates=self.reference_quirks)
        distinct = len(dict.fromkeys(predicted))
        detail = f"{len(predicted)} code(s) read ({distinct} distinct), {len(gold)} reference code(s)"
        if not gold:
            detail += "; the reference lists no code, so recall is 0"
        if generation.finish_reason == "length":
            outcome = "truncated"
            detail += f"; the {self.max_tokens}-token budget ran out, the codes written so far were scored"
        elif not predicted:
            outcome = "unparseable"
            detail = "no ICD-10 code in the output; " + detail
        else:
            outcome = "scored"
        return Score(outcome, ", ".join(predicted) or None, ", ".join(gold), "clue-icd-regex", detail, metrics)

    def settings(self) -> dict[str, Any]:
        return {"task": self.id, "max_tokens": self.max_tokens, "stop": list(self.stop),
                "prompt_sha256": self.template.sha256, "shots": N_SHOTS, "cleanup": CLEANUP_VERSION,
                "extraction": ICD_PATTERN.pattern, "icd_table": ICD_TABLE_VERSION,
                "reference_quirks": self.reference_quirks}


TASKS = [IcdCodingTask()]
