"""Paired analysis on a hand-built database: alignment by item, unpaired items reported, test selection."""

from __future__ import annotations

from pathlib import Path

import pytest

from medbench_local.analysis.paired import compare_pairs
from medbench_local.engine.base import Generation, ModelInfo
from medbench_local.store import open_database, writer
from medbench_local.tasks.base import Item, Score


def _info(model_id: str, sha: str) -> ModelInfo:
    return ModelInfo(model_id=model_id, path=f"/m/{model_id}.gguf", sha256=sha * 64, size_bytes=1,
                     prompt_mode="base", chat_template=None, chat_template_sha256=None)


def _fill(db_path: Path, results: dict[str, dict[str, list[tuple[str, dict[str, float]]]]]) -> None:
    """results: model -> task -> [(item id, metrics)]"""
    db = open_database(db_path)
    writer.start_run(db, "run1", {"command": [], "packages": {}, "settings": {}})
    writer.record_pair(db, "p", "bio", "gen", "")
    for model, tasks in results.items():
        info = _info(model, "a" if model == "bio" else "b")
        writer.record_model(db, info)
        for task, items in tasks.items():
            key = f"{model}-{task}"
            writer.record_evaluation(db, key, info, "biomedical" if model == "bio" else "general", task, {}, "run1")
            for item_id, metrics in items:
                outcome = ("correct" if metrics.get("accuracy") == 1.0 else "wrong") if "accuracy" in metrics \
                    else "scored"
                generation = Generation("prompt", "out", 1, 0, 1, "stop", 0.1)
                writer.record_item(db, evaluation=key, run_id="run1", task=task,
                                   item=Item(item_id, {"q": item_id}), generation=generation,
                                   score=Score(outcome, metrics=metrics))
    db.conn.close()


def test_alignment_missing_items_and_tests(tmp_path: Path) -> None:
    acc = lambda *values: [(f"i{n}", {"accuracy": float(v)}) for n, v in enumerate(values)]  # noqa: E731
    _fill(tmp_path / "r.db", {
        "bio": {"mcq": acc(1, 1, 1, 0, 0, 1), "summ": [("s1", {"rougeL": 0.5}), ("s2", {"rougeL": 0.7})]},
        "gen": {"mcq": acc(1, 0, 0, 0, 1), "summ": [("s1", {"rougeL": 0.2}), ("s2", {"rougeL": 0.4})]},
    })
    db = open_database(tmp_path / "r.db", create=False)
    (report,) = compare_pairs(db, resamples=500)
    rows = {(r.task, r.metric): r for r in report.rows}
    mcq = rows[("mcq", "accuracy")]
    assert mcq.n == 5 and mcq.missing == {"biomedical": 0, "general": 1}  # i5 only has a biomedical result
    assert mcq.test == "mcnemar-exact" and mcq.discordant == (2, 1)
    assert mcq.biomedical.estimate == pytest.approx(3 / 5) and mcq.general.estimate == pytest.approx(2 / 5)
    assert mcq.delta.estimate == pytest.approx(1 / 5)
    summ = rows[("summ", "rougeL")]
    assert summ.test == "paired-permutation" and summ.discordant is None
    assert summ.delta.estimate == pytest.approx(0.3) and summ.p_value == pytest.approx(0.5)  # 2 of 4 sign flips
    assert all(r.p_adjusted >= r.p_value for r in report.rows)
    assert summ.outcomes["biomedical"]["scored"] == 2


def test_task_run_by_one_model_only_is_reported(tmp_path: Path) -> None:
    _fill(tmp_path / "r.db", {"bio": {"mcq": [("i0", {"accuracy": 1.0})]}, "gen": {}})
    db = open_database(tmp_path / "r.db", create=False)
    (report,) = compare_pairs(db, resamples=200)
    assert report.rows == [] and report.unpaired_tasks == {"mcq": "general"}
