"""The Python API (medbench_local.evaluate / compare / results) against the CLI: the same stored rows and the same
numbers, the same gates, and the CLI built on the same functions (issue 21, point 5)."""

from __future__ import annotations

import ast
import json
import sqlite3
import sys
import types
from pathlib import Path

import pytest

import medbench_local as mb
from medbench_local.errors import UserError

from .conftest import REPO, copy_db, invoke

pytestmark = pytest.mark.usefixtures("in_repo")

# volatile per run by nature (refactor_check leaves the same out): ids, times, the command line, the thread count
VOLATILE = {"id", "run_id", "run", "generation", "created_at", "started_at", "finished_at", "seconds", "command",
            "duration_s", "n_threads", "host", "source_revision"}


def _stored(db: Path, table: str) -> list[dict]:
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        rows = [dict(row) for row in conn.execute(f"select * from {table}")]
    return sorted(({k: _steady(k, v) for k, v in row.items() if k not in VOLATILE} for row in rows), key=repr)


def _steady(column: str, value: object) -> object:
    """An evaluation's settings without the thread count that run picks from the machine's load at the time."""
    if column != "settings" or not isinstance(value, str):
        return value
    settings = json.loads(value)
    for key in ("n_threads", "n_threads_batch", "threads_rule"):
        settings.get("engine", {}).pop(key, None)
    return settings


@pytest.mark.e2e
def test_evaluate_stores_what_run_stores_and_reads_back_like_the_commands(tmp_path: Path) -> None:
    """One API run and one CLI run of the same arguments: identical evaluations, items, generations and scores;
    compare(...).records() is compare --json, results(...) is export --format jsonl, aggregated too."""
    api_db, cli_db = tmp_path / "api.db", tmp_path / "cli.db"
    run = mb.evaluate(tasks="jama", pairs=["demo"], limit=2, db=api_db)
    assert run.status == "completed" and run.summary.generated == 4 and run.db == api_db
    invoke("run", "--pair", "demo", "--task", "jama", "--limit", "2", "--db", str(cli_db))
    for table in ("evaluations", "items", "scores"):
        assert _stored(api_db, table) == _stored(cli_db, table), table
    with sqlite3.connect(api_db) as a, sqlite3.connect(cli_db) as c:
        query = "select output, prompt, completion_tokens from generations order by output, prompt"
        assert a.execute(query).fetchall() == c.execute(query).fetchall()
        assert json.loads(a.execute("select command from runs").fetchone()[0])[0] == "medbench_local.evaluate"

    cli_json = json.loads(invoke("compare", "--db", str(api_db), "--json").output)
    assert mb.compare(api_db).records() == cli_json == run.compare().records()
    exported = [json.loads(line) for line in invoke("export", "--db", str(api_db), "--format", "jsonl").output
                .splitlines()]
    assert [_jsonable(row) for row in mb.results(api_db)] == exported
    aggregated = [json.loads(line) for line in invoke("export", "--db", str(api_db), "--aggregate", "--format",
                                                      "jsonl").output.splitlines()]
    assert [_jsonable(row) for row in mb.results(api_db, aggregate=True)] == aggregated

    again = mb.evaluate(tasks=["jama"], pairs="demo", limit=2, db=api_db)  # resumes: nothing left to do
    assert (again.summary.generated, again.summary.skipped) == (0, 4)


def _jsonable(row: dict) -> dict:
    return json.loads(json.dumps(row, ensure_ascii=False))


def test_results_filters_and_compare_options_match_the_commands(demo_db: Path, tmp_path: Path) -> None:
    db = copy_db(demo_db, tmp_path / "r.db")
    only = mb.results(db, tasks="nejm", model_ids=["gemma3-270m"], omit_inputs=True)
    exported = [json.loads(line) for line in invoke(
        "export", "--db", str(db), "--task", "nejm", "--model", "gemma3-270m", "--omit-inputs", "--format",
        "jsonl").output.splitlines()]
    assert only and [_jsonable(row) for row in only] == exported
    assert {row["task"] for row in only} == {"nejm"} and {row["model_id"] for row in only} == {"gemma3-270m"}
    ad_hoc = mb.compare(db, models=["smollm2-135m-instruct", "gemma3-270m"], tasks=["jama"], resamples=200, seed=3)
    assert ad_hoc.records() == json.loads(invoke(
        "compare", "--db", str(db), "--models", "smollm2-135m-instruct", "gemma3-270m", "--task", "jama",
        "--resamples", "200", "--seed", "3", "--json").output)
    assert not ad_hoc.empty


# every class of bad argument: one UserError line naming the argument, before anything is opened or written
BAD_CALLS = [
    ("unknown task", dict(tasks="no-such-task", pairs="demo"), "no-such-task"),
    ("no task", dict(tasks=[], pairs="demo"), "nothing to run"),
    ("empty name", dict(tasks="jama,,nejm", pairs="demo"), "tasks"),
    ("no model", dict(tasks="jama"), "nothing to run"),
    ("unknown pair", dict(tasks="jama", pairs="no-such-pair"), "no-such-pair"),
    ("scoring", dict(tasks="jama", pairs="demo", scoring="telepathy"), "scoring"),
    ("limit zero", dict(tasks="jama", pairs="demo", limit=0), "limit"),
    ("limit fraction", dict(tasks="jama", pairs="demo", limit=1.5), "limit"),
    ("limit bool", dict(tasks="jama", pairs="demo", limit=True), "limit"),
    ("seed", dict(tasks="jama", pairs="demo", seed=-1), "seed"),
    ("seed random", dict(tasks="jama", pairs="demo", seed=2**32 - 1), "seed"),
    ("threads", dict(tasks="jama", pairs="demo", threads=0), "threads"),
    ("batch", dict(tasks="jama", pairs="demo", batch_size=10**9), "batch_size"),
    ("limit mode", dict(tasks="jama", pairs="demo", limit_mode="best"), "limit_mode"),
    ("shard", dict(tasks="jama", pairs="demo", shard="3/2"), "3/2"),
    ("data for another task", dict(tasks="jama", pairs="demo", data={"nejm": "x.csv"}), "nejm"),
    ("missing data", dict(tasks="jama", pairs="demo", data={"jama": "/nonexistent/cases.csv"}), "cases.csv"),
]


@pytest.mark.parametrize("label, kwargs, named", BAD_CALLS, ids=[case[0] for case in BAD_CALLS])
def test_bad_arguments_are_one_line_and_leave_no_database(tmp_path: Path, label: str, kwargs: dict,
                                                          named: str) -> None:
    db = tmp_path / "never.db"
    with pytest.raises(UserError) as raised:
        mb.evaluate(db=db, **kwargs)
    message = str(raised.value)
    assert named in message and "\n" not in message, message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("call", [
    lambda db: mb.compare(db, resamples=5), lambda db: mb.compare(db, models=["only-one"]),
    lambda db: mb.results(db, seed=-3), lambda db: mb.results(db, tasks="no-such-task"),
    lambda db: mb.compare(db, pairs="no-such-pair"), lambda db: mb.results(db, model_ids="nobody"),
], ids=["resamples", "one model", "seed", "unknown task", "unknown pair", "unknown model"])
def test_bad_read_arguments_are_one_line(demo_db: Path, call: object) -> None:
    with pytest.raises(UserError) as raised:
        call(demo_db)  # type: ignore[operator]
    assert "\n" not in str(raised.value)


def test_the_api_passes_the_files_gate(tmp_path: Path, demo_db: Path) -> None:
    """The database given as the data file (an input replaced by an output) is refused, as by 'run'."""
    db = copy_db(demo_db, tmp_path / "both.db")
    before = db.read_bytes()
    with pytest.raises(UserError):
        mb.evaluate(tasks="jama", pairs="demo", data={"jama": db}, db=db)
    assert db.read_bytes() == before


def test_a_missing_database_is_one_line_for_readers(tmp_path: Path) -> None:
    for call in (mb.compare, mb.results):
        with pytest.raises(UserError) as raised:
            call(tmp_path / "absent.db")
        assert "absent.db" in str(raised.value)
    assert not (tmp_path / "absent.db").exists()


def test_to_pandas_builds_a_frame_from_the_records(monkeypatch: pytest.MonkeyPatch) -> None:
    """With pandas: a DataFrame of exactly the records (a stand-in module records the call, since pandas is an
    optional dependency); without it: one line saying how to get it."""
    seen: list[list[dict]] = []
    fake = types.ModuleType("pandas")
    fake.DataFrame = types.SimpleNamespace(from_records=lambda rows: seen.append(rows) or "frame")  # type: ignore
    monkeypatch.setitem(sys.modules, "pandas", fake)
    records = mb.Records([{"a": 1}, {"a": 2, "b": "x"}])
    assert records.to_pandas() == "frame" and seen == [[{"a": 1}, {"a": 2, "b": "x"}]]
    monkeypatch.setitem(sys.modules, "pandas", None)  # import fails
    with pytest.raises(UserError, match="pip install pandas"):
        records.to_pandas()


@pytest.mark.skipif(not __import__("importlib").util.find_spec("pandas"), reason="pandas not installed")
def test_to_pandas_with_the_real_pandas(demo_db: Path) -> None:
    frame = mb.results(demo_db).to_pandas()
    assert len(frame) == len(mb.results(demo_db)) and "metric_accuracy" in frame.columns


def test_the_commands_are_built_on_the_api() -> None:
    """run, compare and export call evaluate, compare and results, and none of them reaches the runner or the
    analysis functions the API wraps: there is one code path for a script and a command."""
    wrapped = {"run.py": ("evaluate", {"execute", "prepare", "open_for_run", "plan"}),
               "compare.py": ("compare", {"compare_pairs", "selected_pairs"}),
               "export.py": ("results", {"item_rows", "aggregate_rows", "selected_pairs"})}
    for name, (api_name, forbidden) in wrapped.items():
        tree = ast.parse((REPO / "medbench_local" / "cli" / name).read_text(encoding="utf-8"))
        imported = {alias.asname or alias.name: node.module for node in ast.walk(tree)
                    if isinstance(node, ast.ImportFrom) for alias in node.names}
        assert imported.get(api_name) == "api", name
        assert not forbidden & set(imported), (name, forbidden & set(imported))


def test_the_package_offers_the_api_lazily() -> None:
    assert set(mb.__all__) >= {"evaluate", "compare", "results", "Records", "Comparison", "RunResult"}
    assert mb.evaluate.__module__ == "medbench_local.api"
    with pytest.raises(AttributeError):
        mb.no_such_thing  # noqa: B018


@pytest.mark.e2e
def test_the_documented_example_runs_as_written(tmp_path: Path) -> None:
    """docs/python-api.md's example, run as a script in a fresh folder (the shipped demo config and sample data),
    twice: the second run resumes and generates nothing."""
    import os
    import re
    import subprocess

    text = (REPO / "docs" / "python-api.md").read_text(encoding="utf-8")
    script = tmp_path / "example.py"
    script.write_text(re.search(r"```python\n(.*?)```", text, re.S).group(1), encoding="utf-8")  # type: ignore
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("MEDBENCH_LOCAL_CONFIG", None)
    outputs = [subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=1800) for _ in range(2)]
    for done in outputs:
        assert done.returncode == 0, done.stderr[-2000:]
    first, second = (done.stdout.splitlines() for done in outputs)
    assert first[0] == "completed 6 generated, 0 already done"
    assert second[0] == "completed 0 generated, 6 already done"
    assert any(line.startswith("jama accuracy 3 ") for line in first)
    assert re.fullmatch(r"6 items; \d correct", first[-1])
    assert (tmp_path / "api-demo.db").is_file()
