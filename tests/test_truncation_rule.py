"""One rule for items cut off by the token budget, implemented by every task and stated everywhere it is shown:
a truncated summary or ICD code list keeps the ROUGE/F1 of what it wrote (as the CLUE reference did); a
multiple-choice answer that could not be read before the cut scores 0; both are counted as 'truncated'."""

from __future__ import annotations

from pathlib import Path

import pytest

from medbench_local.analysis.paired import TRUNCATION_NOTE
from medbench_local.engine.base import Generation
from medbench_local.metrics.icd import icd_metrics
from medbench_local.metrics.rouge import rouge_scores
from medbench_local.tasks import get_task

from .conftest import REPO, invoke

RULE = "keeps the ROUGE/F1 of the text written before the cut"


def _cut(text: str) -> Generation:
    return Generation(prompt_text="p", output=text, prompt_tokens=1, truncated_tokens=0, completion_tokens=100,
                      finish_reason="length", seconds=0.1)


@pytest.mark.parametrize("task_id", ["meqsum", "problem_summary", "medisumqa"])
def test_a_truncated_summary_keeps_its_rouge(task_id: str) -> None:
    task = get_task(task_id)
    item = task.load(REPO / "bench_data" / task_id).items[0]
    reference = task.reference(item)  # type: ignore[attr-defined]
    half = " ".join(reference.split()[: max(2, len(reference.split()) // 2)])
    score = task.score(item, _cut(half))
    expected = rouge_scores(task.postprocess(half), reference, lowercase=task.lowercase)  # type: ignore[attr-defined]
    assert score.outcome == "truncated" and score.metrics == expected and score.metrics["rouge1"] > 0


def test_a_truncated_code_list_keeps_its_f1() -> None:
    task = get_task("medisumcode")
    item = next(i for i in task.load(REPO / "bench_data" / "medisumcode").items if len(i.payload["codes"]) > 1)
    written = item.payload["codes"][0]
    score = task.score(item, _cut(written))
    assert score.outcome == "truncated" and score.metrics["em_f1"] > 0
    assert score.metrics == icd_metrics([written.replace(".", "")], [c.replace(".", "") for c in
                                                                    item.payload["codes"]])


@pytest.mark.parametrize("task_id", ["jama", "nejm", "medqa", "pubmedqa", "mednli"])
def test_an_unreadable_truncated_answer_scores_zero(task_id: str) -> None:
    task = get_task(task_id)
    item = task.load(REPO / "bench_data" / task_id).items[0]
    score = task.score(item, _cut(" Let us consider the differential carefully, starting with"))
    assert score.outcome == "truncated" and score.metrics["accuracy"] == 0.0


def test_the_rule_is_stated_in_compare_report_help_and_readme() -> None:
    assert RULE in TRUNCATION_NOTE and "scores 0" in TRUNCATION_NOTE
    help_text = " ".join(invoke("compare", "--help").output.split())
    assert "a truncated summary or ICD code list keeps the ROUGE/F1 of what it wrote" in help_text
    assert "truncated items score 0" not in help_text.lower()
    readme = " ".join((REPO / "README.md").read_text(encoding="utf-8").split())
    assert "A truncated summary or ICD code list keeps the ROUGE/F1 of the text it wrote" in readme


def test_compare_footnote_states_the_rule(tmp_path: Path) -> None:
    from .test_paired import Ev, _store

    db = tmp_path / "r.db"
    rouge = [("s0", {"rougeL": 0.4})]
    _store(db, [Ev("bio", "meqsum", rouge, outcomes=["truncated"]), Ev("gen", "meqsum", rouge)])
    footnote = " ".join(invoke("compare", "--db", str(db)).output.split())
    assert RULE in footnote and "truncated items score 0" not in footnote.lower()
    assert "100%/0%" in footnote  # the truncation rate next to the summary metric
