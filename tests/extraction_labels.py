"""The labelled set of model outputs for answer extraction (issue 19), and how the bench reads each row.

``tests/data/extraction_labelled.jsonl`` holds real outputs of the demo pair (every multiple-choice task, several
prompt variants, chat and base prompt modes, free and constrained generation) and adversarial rows written by
hand for every branch of the extractor. Each row carries what a careful human reader says the model answered
(``label``: an option letter, ``"conflict"`` or ``"none"``; docs/extraction-labels.md is the labelling guide) and
everything the task's own reader needs. ``read`` scores a row exactly as the task scores a stored generation
(``Task.score``: the cascade on answer prefix + output, PubMedQA's label-word stage, LongHealth's reference regex),
so the measured error rates are those of the bench, not of a stand-alone function.

``tools/extraction_confusion.py`` prints ``report()``; the same text is pasted into docs/extraction-labels.md, and
tests/test_extraction_labelled.py checks that it is current.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from medbench_local.engine.base import Generation
from medbench_local.tasks import get_task
from medbench_local.tasks.base import Item
from medbench_local.tasks.prompts import PromptTemplate

DATA = Path(__file__).parent / "data" / "extraction_labelled.jsonl"
# The prompt variants the real outputs were generated with (``run --prompts``), per task family; "default" is the
# task's own template. The reader gets the same template, so the prompt's instructions are known to it.
PROMPTS = Path(__file__).parent / "data" / "extraction_prompts.json"
FAMILY = {"nejm": "case", "jama": "case", "medqa": "mcq", "mmlu_medical": "mcq", "medmcqa": "mcq",
          "pubmedqa": "pubmedqa", "longhealth": "longhealth"}
NO_LETTER_LABELS = ("conflict", "none")
REQUIRED = ("id", "kind", "task", "variant", "answer_prefix", "output", "finish_reason", "options", "gold", "label")


@dataclass(frozen=True)
class Reading:
    """What the bench made of one row: the credited letter (None: nothing credited), method and detail."""

    letter: str | None
    method: str
    outcome: str
    detail: str


def load_rows(path: Path = DATA) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    for row in rows:
        missing = [k for k in REQUIRED if k not in row]
        assert not missing, f"{row.get('id')}: missing {missing}"
        assert row["label"] in NO_LETTER_LABELS or row["label"] in row["options"], f"{row['id']}: bad label"
    return rows


def template(row: dict[str, Any]) -> PromptTemplate:
    """The prompt template a row's output was generated with: the task's own ("default"), the variant's override
    applied to it (keys it does not set keep the task's), or for adversarial rows the task's own with the row's
    answer prefix."""
    base = get_task(row["task"]).template  # type: ignore[attr-defined]
    if row["variant"] == "adversarial":
        return replace(base, answer_prefix=row["answer_prefix"])
    if row["variant"] != "default":
        override = json.loads(PROMPTS.read_text(encoding="utf-8"))[row["variant"]]
        base = replace(base, **override.get("all", override.get(FAMILY[row["task"]], {})))
    assert base.answer_prefix == row["answer_prefix"], f"{row['id']}: answer prefix differs from its variant's"
    return base


def read(row: dict[str, Any]) -> Reading:
    """Score the row's output with its task's own ``score``, configured with the row's prompt template."""
    prompt = template(row)
    task = replace(get_task(row["task"]), template=prompt)  # type: ignore[type-var]
    payload: dict[str, Any] = {"options": row["options"], "answer": row["gold"]}
    if row["task"] == "longhealth":
        payload = {"task": row.get("longhealth_task", 1), "gold": row["gold"], "options": row["options"]}
    generation = Generation(prompt_text="", output=row["output"], prompt_tokens=0, truncated_tokens=0,
                            completion_tokens=0, finish_reason=row["finish_reason"], seconds=0.0)
    score = task.score(Item(row["id"], payload, ""), generation)
    return Reading(score.extracted, score.method, score.outcome, score.detail)


def verdict(label: str, reading: Reading) -> str:
    """How the reading compares with the label: ``same`` letter, ``wrong letter``, ``credited non-answer``
    (a letter where the reader found none or a conflict), ``missed conflict`` (a labelled conflict read as a
    letter or as nothing), ``missed answer`` (a labelled letter not credited), or ``agrees`` (no letter, same
    kind)."""
    if label in NO_LETTER_LABELS:
        if reading.letter is not None:
            return "missed conflict" if label == "conflict" else "credited non-answer"
        if label == "conflict" and reading.method != "conflict":
            return "missed conflict"
        return "agrees"
    if reading.letter is None:
        return "missed answer"
    return "same" if reading.letter == label else "wrong letter"


FAILURES = ("credited non-answer", "missed conflict", "wrong letter")


def label_class(label: str) -> str:
    return label if label in NO_LETTER_LABELS else "letter"


def _matrix(readings: list[tuple[dict[str, Any], Reading]]) -> list[str]:
    """One markdown table: rows are the methods the bench read with, columns the human labels."""
    methods = sorted({r.method for _, r in readings}, key=lambda m: (m in ("none", "echo", "conflict"), m))
    cols = ("letter: same", "letter: other", "conflict", "none")
    lines = ["| method (what the bench read) | rows | " + " | ".join(f"label {c}" for c in cols) + " |",
             "|---" * (len(cols) + 2) + "|"]
    table: dict[str, Counter[str]] = {m: Counter() for m in methods}
    for row, reading in readings:
        label = row["label"]
        if label in NO_LETTER_LABELS:
            col = label
        else:
            col = "letter: same" if reading.letter in (None, label) else "letter: other"
        table[reading.method][col] += 1
    for method in methods:
        counts = table[method]
        lines.append(f"| {method} | {sum(counts.values())} | " + " | ".join(str(counts[c]) for c in cols) + " |")
    return lines


def report(rows: list[dict[str, Any]]) -> str:
    """The confusion matrix per method (markdown), for the real outputs and the adversarial rows, with the row
    counts and the failure counts."""
    readings = [(row, read(row)) for row in rows]
    lines: list[str] = []
    for kind, title in (("real", "Real outputs"), ("adversarial", "Adversarial rows")):
        part = [(row, reading) for row, reading in readings if row["kind"] == kind]
        labels = Counter(label_class(row["label"]) for row, _ in part)
        verdicts = Counter(verdict(row["label"], reading) for row, reading in part)
        lines += [f"**{title}**: {len(part)} rows; labels: {labels['letter']} letters, {labels['conflict']} "
                  f"conflicts, {labels['none']} none. Failures: "
                  + ", ".join(f"{v} {verdicts[v]}" for v in FAILURES)
                  + f"; missed answers (a labelled letter not credited): {verdicts['missed answer']}.", "",
                  *_matrix(part), ""]
    return "\n".join(lines).strip()
