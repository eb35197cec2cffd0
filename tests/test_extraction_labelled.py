"""Answer extraction measured on a labelled set of real model outputs (issue 19).

tests/data/extraction_labelled.jsonl: outputs of the demo pair on every multiple-choice task that reads free text
(several prompt variants, chat and base prompt modes, free and grammar-constrained generation, 3-, 4- and
5-option items), each labelled by a human reader with the answer the model gave (docs/extraction-labels.md is the
guide), plus adversarial rows written for every branch of the extractor. The bench must never credit a
non-answer, never miss a conflict and never read a wrong letter on any of them; missed answers (a labelled letter
read as nothing) are allowed but counted, and the docs show the confusion matrix, kept current here.
"""

from __future__ import annotations

import re
from collections import Counter

from .conftest import REPO
from .extraction_labels import FAILURES, load_rows, read, report, verdict

ROWS = load_rows()
MCQ_TASKS = {"nejm", "jama", "medqa", "pubmedqa", "mmlu_medical", "medmcqa", "longhealth"}


def test_no_credited_non_answer_no_missed_conflict_no_wrong_letter() -> None:
    failures = []
    for row in ROWS:
        reading = read(row)
        found = verdict(row["label"], reading)
        if found in FAILURES:
            failures.append(f"{row['id']}: {found}: label {row['label']}, read {reading.letter} ({reading.method}: "
                            f"{reading.detail}) from {row['answer_prefix'] + row['output']!r}")
    assert not failures, "\n".join(failures)


def test_the_set_covers_the_tasks_models_prompts_and_option_counts() -> None:
    real = [row for row in ROWS if row["kind"] == "real"]
    assert len(real) >= 600
    assert {row["task"] for row in real} == MCQ_TASKS
    assert {row["model"] for row in real} == {"smollm2-135m-instruct", "gemma3-270m", "smollm2-135m-base",
                                              "gemma3-270m-chat"}
    assert {row["prompt_mode"] for row in real} == {"chat", "base"}
    assert {row["scoring"] for row in real} >= {"generate", "constrained-letter", "constrained-text"}
    assert len({row["variant"] for row in real}) >= 7
    assert {len(row["options"]) for row in real} >= {3, 4, 5}
    labels = Counter("letter" if row["label"] in row["options"] else row["label"] for row in real)
    assert min(labels.values()) >= 30, labels  # answers, conflicts and non-answers all well represented


def test_adversarial_rows_reach_every_branch_of_the_extractor() -> None:
    """Every method, and every decision the text-after-a-letter check records, is taken by some adversarial row."""
    readings = [read(row) for row in ROWS if row["kind"] == "adversarial"]
    assert {r.method for r in readings} >= {"explicit", "lone_letter", "fuzzy", "label_word", "reference_regex",
                                            "none", "echo", "conflict"}
    details = " | ".join(r.detail for r in readings)
    for decision in ("stated with the text of option", "stated with a near copy of the text of option",
                     "the prompt's own format example", "argues against option", "which its own option's text "
                     "begins with", "which begins like option", "output lists options", "conflicting explicit answers",
                     "ambiguous: output matches options", "empty output", 'reply starts with "', "not among options"):
        assert decision in details, decision


def test_the_docs_show_the_current_confusion_matrix() -> None:
    """docs/extraction-labels.md pastes tools/extraction_confusion.py's output: it must be today's."""
    docs = (REPO / "docs" / "extraction-labels.md").read_text(encoding="utf-8")
    pasted = re.search(r"<!-- confusion:start -->\n(.*?)\n<!-- confusion:end -->", docs, re.DOTALL)
    assert pasted is not None, "the confusion block is missing from docs/extraction-labels.md"
    assert pasted.group(1).strip() == report(ROWS).strip(), "re-run tools/extraction_confusion.py and paste it"
