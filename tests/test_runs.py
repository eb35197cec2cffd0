"""``medbench-local runs``: the run history, newest first, with counts taken from the per-item rows, read-only."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from medbench_local.store import open_database
from medbench_local.store.readonly import open_read_only
from medbench_local.store.writer import start_run

from .conftest import REPO, copy_db, invoke, rows


def cli_run(*args: str) -> None:
    """A real ``run`` in its own process, as a user types it (so the recorded command line is the real one)."""
    done = subprocess.run([sys.executable, "-m", "medbench_local", "run", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr


def runs_json(db: Path, *args: str) -> list[dict]:
    return json.loads(invoke("runs", "--db", str(db), "--json", *args).output)


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three runs into one database, one model at a time, the last one a resume that generates nothing."""
    db = tmp_path_factory.mktemp("runs") / "study.db"
    cli_run("--model", "smollm2-135m-instruct", "--task", "jama", "--limit", "2", "--db", str(db))
    cli_run("--model", "gemma3-270m", "--task", "jama", "--task", "nejm", "--limit", "3", "--db", str(db))
    cli_run("--model", "smollm2-135m-instruct", "--task", "jama", "--limit", "2", "--db", str(db))
    return db


@pytest.mark.e2e
def test_runs_lists_newest_first_with_counts_from_the_item_rows(history: Path) -> None:
    listed = runs_json(history)
    stored = rows(history, "select id from runs order by started_at desc")
    assert [run["id"] for run in listed] == [row[0] for row in stored] and len(listed) == 3
    resumed, second, first = listed
    for run in listed:
        generated = rows(history, "select count(*) from generations where run_id = ?", run["id"])[0][0]
        by_outcome = dict(rows(history, "select s.outcome, count(*) from scores s join generations g "
                                        "on g.id = s.generation_id where g.run_id = ? group by s.outcome", run["id"]))
        assert run["generated"] == generated
        assert {k: v for k, v in run["outcomes"].items() if v} == by_outcome
        assert run["status"] == "completed" and run["duration_seconds"] >= 0
        assert run["config_origin"] == "working directory" and run["config"] == str(REPO / "models.toml")
    assert (first["generated"], second["generated"], resumed["generated"]) == (2, 6, 0)
    assert (first["planned"], second["planned"], resumed["planned"]) == (2, 6, 2)
    assert second["models"] == [{"id": "gemma3-270m", "role": "general"}]
    assert [(t["task"], t["items"]) for t in second["tasks"]] == [("jama", 3), ("nejm", 3)]
    assert second["tasks"][0]["data"] == str(REPO / "bench_data" / "jama")  # the default data, absolute
    assert second["command"][1:] == ["run", "--model", "gemma3-270m", "--task", "jama", "--task", "nejm",
                                     "--limit", "3", "--db", str(history)]
    assert [run["id"] for run in runs_json(history, "--limit", "1")] == [resumed["id"]]


@pytest.mark.e2e
def test_runs_text_reads_like_a_log(history: Path) -> None:
    text = invoke("runs", "--db", str(history)).output
    blocks = [block for block in text.strip().split("\n\n") if block.strip()]
    assert len(blocks) == 3
    newest = blocks[0]
    assert "completed" in newest and "UTC" in newest
    assert f"command: medbench-local run --model smollm2-135m-instruct --task jama --limit 2 --db {history}" in newest
    assert "models:  smollm2-135m-instruct (biomedical)" in newest
    assert "items:   0 generated in this run of 2 planned" in newest
    assert "tasks:   jama (3 items" in blocks[1] and "nejm (3 items" in blocks[1]


def test_a_killed_run_shows_that_no_end_was_recorded(tmp_path: Path) -> None:
    db_path = tmp_path / "r.db"
    db = open_database(db_path)
    start_run(db, "abc123", {"command": ["medbench-local", "run", "--pair", "demo"], "settings": {}})
    db.conn.close()
    text = invoke("runs", "--db", str(db_path)).output
    assert "run abc123" in text and "running" in text and "no end recorded" in text
    assert "items:   0 generated in this run" in text
    assert runs_json(db_path)[0]["duration_seconds"] is None


@pytest.mark.e2e
def test_runs_opens_the_database_read_only(demo_db: Path, tmp_path: Path) -> None:
    """Even a database one migration behind stays untouched (read commands that may write would upgrade it)."""
    db = copy_db(demo_db, tmp_path / "r.db")
    with sqlite3.connect(db) as conn:
        conn.execute("drop view item_results")
        conn.execute("drop view paired_items")
        conn.execute("delete from _migrations where name = 'm004_result_views'")
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    assert len(runs_json(db)) == rows(db, "select count(*) from runs")[0][0] >= 1
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    assert rows(db, "select count(*) from _migrations where name = 'm004_result_views'") == [(0,)]
    reader = open_read_only(db)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        reader.conn.execute("insert into pairs (name) values ('x')")
    reader.conn.close()


@pytest.mark.parametrize("make, message", [
    (lambda p: None, "no such results database"),
    (lambda p: p.write_bytes(b"not sqlite at all " * 64), "cannot use as a results database"),
    (lambda p: sqlite3.connect(p).execute("create table t (x)").connection.commit(),
     "not a medbench-local results database"),
    (lambda p: (open_database(p).conn.execute("insert into _migrations values ('m999_future', 'x')")
                .connection.commit()), "written by a newer medbench-local"),
], ids=["missing", "not-sqlite", "foreign-sqlite", "newer"])
def test_runs_on_a_bad_database_is_one_line(tmp_path: Path, make, message: str) -> None:
    path = tmp_path / "r.db"
    make(path)
    result = invoke("runs", "--db", str(path), expect=1)
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_planned_counts_each_scoring_mode() -> None:
    """``--scoring both`` stores two generations per item: 'planned' counts both, and says so."""
    from medbench_local.store.history import RunEntry

    settings = {"models": [{"id": "a"}, {"id": "b"}], "tasks": [{"task": "t", "items": 100}],
                "scoring": ["generate", "loglik"]}
    both = RunEntry("r", "2026-01-01T00:00:00", None, "running", [], None, settings, 400)
    assert (both.planned, both.modes) == (400, 2)
    older = RunEntry("r", "2026-01-01T00:00:00", None, "running", [], None,
                     {k: v for k, v in settings.items() if k != "scoring"}, 0)
    assert (older.planned, older.modes) == (200, 1)
