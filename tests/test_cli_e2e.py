"""End to end through the real CLI, with real llama.cpp inference on the demo pair (SmolLM2 vs Gemma 3)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from medbench_local.tasks.base import OUTCOMES

from .conftest import REPO, copy_db, invoke, rows

pytestmark = pytest.mark.e2e


def test_run_fills_every_table(demo_db: Path) -> None:
    (status, gpu, packages, settings, system_info), = rows(
        demo_db, "select status, gpu_offload_supported, packages, settings, llama_system_info from runs")
    assert status == "completed"
    assert gpu in (0, 1)
    assert "llama-cpp-python" in json.loads(packages)
    assert json.loads(settings)["seed"] == 1234
    assert system_info  # llama.cpp's compiled-backend line

    models = dict(rows(demo_db, "select file_name, sha256 from models"))
    assert set(models) == {"SmolLM2-135M-Instruct.Q4_1.gguf", "gemma-3-270m-q4_k_m.gguf"}
    for file_name, sha in models.items():
        (path,), = rows(demo_db, "select path from models where sha256 = ?", sha)
        assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == sha
    templates = dict(rows(demo_db, "select file_name, chat_template_sha256 from models"))
    assert templates["SmolLM2-135M-Instruct.Q4_1.gguf"] and templates["gemma-3-270m-q4_k_m.gguf"] is None

    evaluations = rows(demo_db, "select model_id, task, settings from evaluations order by model_id, task")
    assert [(m, t) for m, t, _ in evaluations] == [("gemma3-270m", "jama"), ("gemma3-270m", "nejm"),
                                                    ("smollm2-135m-instruct", "jama"),
                                                    ("smollm2-135m-instruct", "nejm")]
    engine = json.loads(evaluations[0][2])["engine"]
    assert engine["temperature"] == 0.0 and engine["seed"] == 1234 and engine["n_ctx"] == 2048

    assert rows(demo_db, "select count(*) from items") == [(20,)]
    assert rows(demo_db, "select count(*) from generations") == [(40,)]
    assert rows(demo_db, "select count(*) from scores") == [(40,)]


def test_generations_store_exact_prompts_and_accounting(demo_db: Path) -> None:
    records = rows(demo_db, """
        select e.model_id, i.payload, g.prompt, g.output, g.prompt_tokens, g.truncated_tokens,
               g.completion_tokens, g.finish_reason, g.seconds, s.outcome, s.extracted, s.gold
        from generations g join evaluations e on e.key = g.evaluation join items i on i.key = g.item
        join scores s on s.generation_id = g.id""")
    assert len(records) == 40
    for model, payload, prompt, output, p_tok, trunc, c_tok, finish, seconds, outcome, extracted, gold in records:
        item = json.loads(payload)
        assert item["case"] in prompt and prompt.endswith("The answer is")
        if model == "smollm2-135m-instruct":
            assert "<|im_start|>assistant" in prompt  # rendered from the GGUF's own chat template
        else:
            assert "<|im_start|>" not in prompt and "<start_of_turn>" not in prompt  # plain text base prompt
        assert isinstance(output, str) and p_tok > 50 and trunc == 0 and 0 <= c_tok <= 64
        assert finish in ("stop", "length") and seconds > 0
        assert outcome in OUTCOMES and gold == item["answer"]
        assert (extracted in item["options"]) if outcome in ("correct", "wrong") else extracted is None
        assert (outcome == "correct") == (extracted == gold)


def test_rerun_resumes_without_generating_again(demo_db: Path, tmp_path: Path, in_repo: Path) -> None:
    db = copy_db(demo_db, tmp_path / "copy.db")
    before = rows(db, "select id, output from generations order by id")
    result = invoke("run", "--pair", "demo", "--task", "nejm", "--task", "jama", "--db", str(db))
    assert "0 generated, 40 already done" in result.output
    assert rows(db, "select id, output from generations order by id") == before
    assert rows(db, "select status from runs order by started_at") == [("completed",), ("completed",)]


def test_partial_run_then_full_run_completes_only_the_rest(tmp_path: Path, in_repo: Path) -> None:
    db = tmp_path / "partial.db"
    invoke("run", "--pair", "demo", "--task", "jama", "--db", str(db), "--limit", "3")
    assert rows(db, "select count(*) from generations") == [(6,)]
    result = invoke("run", "--pair", "demo", "--task", "jama", "--db", str(db))
    assert "14 generated, 6 already done" in result.output
    assert rows(db, "select count(distinct item) from generations") == [(10,)]
    assert rows(db, "select count(*) from generations") == [(20,)]


def test_outputs_are_deterministic_across_fresh_runs(demo_db: Path, tmp_path: Path, in_repo: Path) -> None:
    db = tmp_path / "again.db"
    invoke("run", "--model", "smollm2-135m-instruct", "--task", "nejm", "--db", str(db), "--limit", "4")
    sql = ("select i.item_id, g.output from generations g join items i on i.key = g.item "
           "join evaluations e on e.key = g.evaluation where e.model_id = 'smollm2-135m-instruct' "
           "and e.task = 'nejm' order by i.item_id")
    again = rows(db, sql)
    assert len(again) == 4 and set(again) <= set(rows(demo_db, sql))  # the --limit sample, same outputs


def test_prompt_override_is_a_new_evaluation(tmp_path: Path, in_repo: Path) -> None:
    prompt_file = tmp_path / "prompt.toml"
    prompt_file.write_text('system = "Answer like a cautious internist."\nanswer_prefix = "Answer:"\n')
    db = tmp_path / "override.db"
    invoke("run", "--model", "smollm2-135m-instruct", "--task", "jama", "--db", str(db), "--limit", "2")
    invoke("run", "--model", "smollm2-135m-instruct", "--task", "jama", "--db", str(db), "--limit", "2",
           "--prompts", str(prompt_file))
    assert rows(db, "select count(*) from evaluations") == [(2,)]
    prompts = [p for (p,) in rows(db, "select prompt from generations")]
    assert sum("cautious internist" in p for p in prompts) == 2 and all(p.endswith(("is", ":")) for p in prompts)


def test_compare_shows_both_models_and_numbers_recompute_from_rows(demo_db: Path) -> None:
    table = invoke("compare", "--db", str(demo_db)).output
    for text in ("demo", "nejm", "jama", "smollm2-135m-instruct", "gemma3-270m", "accuracy"):
        assert text in table
    data = json.loads(invoke("compare", "--db", str(demo_db), "--json", "--resamples", "500").output)
    assert {(r["pair"], r["task"], r["metric"]) for r in data} == {("demo", "nejm", "accuracy"),
                                                                  ("demo", "jama", "accuracy")}
    for r in data:
        assert r["n"] == 10 and r["test"] == "mcnemar-exact" and 0 <= r["p_value"] <= r["p_adjusted"] <= 1
        correct = {}
        for role in ("biomedical", "general"):
            side = r[role]
            (n_correct, total), = rows(demo_db, "select sum(outcome = 'correct'), count(*) from scores "
                                                "where evaluation = ?", side["evaluation"])
            assert total == 10 and side["score"] == pytest.approx(n_correct / total)
            assert side["ci_low"] <= side["score"] <= side["ci_high"]
            assert sum(r["outcomes"][role].values()) == total
            correct[role] = {item for (item,) in rows(demo_db, "select item from scores where evaluation = ? "
                                                               "and outcome = 'correct'", side["evaluation"])}
        assert r["discordant"] == {"biomedical_only": len(correct["biomedical"] - correct["general"]),
                                   "general_only": len(correct["general"] - correct["biomedical"])}
        assert r["delta"]["score"] == pytest.approx(r["biomedical"]["score"] - r["general"]["score"])
    markdown = invoke("compare", "--db", str(demo_db), "--markdown", "--resamples", "500").output
    assert "| nejm | accuracy | 10 |" in markdown


def test_results_on_different_data_are_never_mixed(tmp_path: Path, in_repo: Path) -> None:
    db = tmp_path / "data.db"
    edited = tmp_path / "cases.csv"
    text = (REPO / "bench_data" / "jama" / "cases.csv").read_text(encoding="utf-8")
    edited.write_text(text.replace("generalized weakness", "generalised weakness"), encoding="utf-8")
    args = ["run", "--model", "smollm2-135m-instruct", "--task", "jama", "--limit", "2", "--db", str(db)]
    invoke(*args)
    result = invoke(*args, "--data", str(edited))
    assert "2 generated, 0 already done" in result.output  # another data file: a new evaluation
    keys = rows(db, "select key from evaluations")
    assert len(keys) == 2
    assert [n for (n,) in rows(db, "select count(*) from scores group by evaluation")] == [2, 2]


def test_compare_pairs_only_evaluations_on_the_same_data(tmp_path: Path, in_repo: Path) -> None:
    # issue 9: the biomedical model re-ran on an edited copy of the data; compare must not pair that with the
    # general model's evaluation on the original, and a renamed copy is the same data (resumes).
    db = tmp_path / "data.db"
    invoke("run", "--pair", "demo", "--task", "jama", "--limit", "3", "--db", str(db))
    edited = tmp_path / "edited.csv"
    text = (REPO / "bench_data" / "jama" / "cases.csv").read_text(encoding="utf-8")
    edited.write_text(text.replace("generalized weakness", "generalised weakness"), encoding="utf-8")
    bio = ["run", "--model", "smollm2-135m-instruct", "--task", "jama", "--limit", "3", "--db", str(db)]
    invoke(*bio, "--data", str(edited))
    (row,) = json.loads(invoke("compare", "--db", str(db), "--json", "--resamples", "200").output)
    assert row["n"] == 3 and row["missing"] == {"biomedical": 0, "general": 0}
    assert row["data"]["name"] == "jama" and row["superseded"] == []
    table = " ".join(invoke("compare", "--db", str(db)).output.split())
    assert "jama on edited.csv" in table and "only the biomedical model has results on this data" in table
    renamed = tmp_path / "renamed.csv"
    edited.rename(renamed)
    assert "0 generated, 3 already done" in invoke(*bio, "--data", str(renamed)).output
    for (settings,) in rows(db, "select settings from runs"):
        assert all(Path(t["data"]).is_absolute() for t in json.loads(settings)["tasks"])
    assert all(Path(source.rsplit(":", 1)[0]).is_absolute() for (source,) in rows(db, "select source from items"))


def test_compare_on_missing_database_is_one_clear_line(tmp_path: Path) -> None:
    result = invoke("compare", "--db", str(tmp_path / "nope.db"), expect=1)
    assert "no such results database" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "nope.db").exists()


def test_models_and_tasks_list(in_repo: Path) -> None:
    models = invoke("models", "list").output
    assert "smollm2-135m-instruct" in models and "gemma3-270m" in models and "present" in models
    tasks = invoke("tasks", "list").output
    assert "nejm" in tasks and "jama" in tasks and "accuracy" in tasks


def test_help_teaches_with_examples() -> None:
    for command in (["--help"], ["run", "--help"], ["compare", "--help"], ["models", "list", "--help"],
                    ["tasks", "list", "--help"]):
        assert "Example" in invoke(*command).output or "session" in invoke(*command).output


def test_bad_data_file_fails_before_touching_the_database(tmp_path: Path, in_repo: Path) -> None:
    bad = tmp_path / "cases.jsonl"
    bad.write_text('{"id": "x1", "case": "c", "question": "q", "options": {"A": "a", "B": "b"}, "answer": "Z"}\n')
    db = tmp_path / "r.db"
    result = invoke("run", "--pair", "demo", "--task", "jama", "--data", str(bad), "--db", str(db), expect=1)
    assert f"{bad}:1: field 'answer'" in result.output and "Traceback" not in result.output
    assert not db.exists()


def test_unknown_pair_is_one_clear_line(in_repo: Path) -> None:
    result = invoke("run", "--pair", "nope", "--task", "jama", expect=1)
    assert "unknown pair 'nope'" in result.output and "Traceback" not in result.output


def test_repo_tracks_no_weights_or_large_files() -> None:
    import subprocess

    listing = subprocess.run(["git", "-C", str(REPO), "ls-files"], capture_output=True, text=True)
    if listing.returncode != 0:
        pytest.skip("not a git checkout")
    tracked = [REPO / name for name in listing.stdout.splitlines()]
    assert not [p for p in tracked if p.suffix == ".gguf"]
    assert not [p for p in tracked if p.is_file() and p.stat().st_size > 5_000_000]
