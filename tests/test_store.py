"""The results store: named migrations recorded once (each all or nothing), newer or foreign databases refused
clearly and unchanged, damaged ones reported as one line, read-only places readable."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from medbench_local.errors import StoreError
from medbench_local.store import close_database, migrations, open_database
from medbench_local.store.database import read_only_uri
from medbench_local.store.migrations import MIGRATIONS

from .conftest import REPO, invoke
from .synthetic import Side, build_pair_db


def test_new_database_is_migrated_wal_and_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    db = open_database(path)
    assert [r["name"] for r in db.query("select name from _migrations")] == [n for n, _ in MIGRATIONS]
    assert {"runs", "models", "pairs", "evaluations", "items", "generations", "scores"} <= set(db.table_names())
    assert db.conn.execute("pragma journal_mode").fetchone()[0] == "wal"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_reopening_applies_nothing_twice(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    open_database(path).conn.close()
    db = open_database(path)
    assert db.conn.execute("select count(*) from _migrations").fetchone()[0] == len(MIGRATIONS)


def test_database_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    open_database(path).conn.execute("insert into _migrations values ('m999_future', 'x')").connection.commit()
    with pytest.raises(StoreError, match="newer medbench-local.*m999_future"):
        open_database(path)


def test_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="cannot use as a results database"):
        open_database(path)
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("create table t (x)").connection.commit()
    with pytest.raises(StoreError, match="not a medbench-local results database"):
        open_database(other, create=False)


def test_an_older_database_is_upgraded_by_its_named_migrations(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    open_database(path).conn.close()
    with sqlite3.connect(path) as conn:  # make it look like a database written before m002 existed
        conn.execute("drop table metric_runs")
        conn.execute("delete from _migrations where name = 'm002_metric_runs'")
    db = open_database(path)
    assert "metric_runs" in db.table_names()
    assert sorted(r["name"] for r in db.query("select name from _migrations")) == \
        sorted(name for name, _ in MIGRATIONS)


# ------------------------------------------------------------------ foreign and damaged databases (issue 10, class 9)

def _digest(path: Path) -> bytes:
    return path.read_bytes()


def _foreign_sqlite(path: Path) -> Path:
    with sqlite3.connect(path) as conn:
        conn.execute("create table patients (name text)")
        conn.execute("insert into patients values ('someone')")
    conn.close()
    return path


@pytest.mark.parametrize("journal", ["delete", "wal"])
def test_a_foreign_sqlite_file_is_refused_without_a_byte_changed(tmp_path: Path, journal: str) -> None:
    path = _foreign_sqlite(tmp_path / "other.db")
    with sqlite3.connect(path) as conn:
        conn.execute(f"pragma journal_mode={journal}")
    conn.close()
    before = _digest(path)
    with pytest.raises(StoreError, match="not a medbench-local results database"):
        open_database(path)
    with pytest.raises(StoreError, match="not a medbench-local results database"):
        open_database(path, read_only=True)
    assert _digest(path) == before  # no tables added, not switched to WAL
    with sqlite3.connect(path) as conn:
        assert [r[0] for r in conn.execute("select name from sqlite_master")] == ["patients"]
    conn.close()


def test_run_refuses_a_foreign_database_and_leaves_it_unchanged(tmp_path: Path) -> None:
    path = _foreign_sqlite(tmp_path / "other.db")
    before = _digest(path)
    result = invoke("run", "--model", "smollm2-135m-instruct", "--task", "jama", "--limit", "1", "--db", str(path),
                    "--config", str(REPO / "models.toml"), "--data", str(REPO / "bench_data" / "jama"), expect=1)
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "not a medbench-local results database" in errors[0]
    assert _digest(path) == before


@pytest.mark.parametrize("kind", ["zero bytes", "sqlite with an empty schema"])
def test_an_empty_file_is_initialised(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "r.db"
    if kind == "zero bytes":
        path.write_bytes(b"")
    else:
        sqlite3.connect(path).execute("pragma user_version = 0").connection.close()
        with sqlite3.connect(path) as conn:  # a file SQLite made, with nothing in it (e.g. a killed first run)
            conn.execute("pragma journal_mode=wal")
        conn.close()
    db = open_database(path)
    assert "_migrations" in db.table_names()
    db.conn.close()


def _failing_migration(db: object) -> None:
    db["half_done"].create({"x": int})  # type: ignore[index]
    db.conn.execute("insert into no_such_table values (1)")  # type: ignore[attr-defined]


def test_a_migration_that_fails_midway_leaves_the_file_as_it_was(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "r.db"
    close_database(open_database(path))
    before = _digest(path)
    monkeypatch.setattr(migrations, "MIGRATIONS", [*MIGRATIONS, ("m999_fails_midway", _failing_migration)])
    with pytest.raises(StoreError, match="no such table"):
        open_database(path)
    assert _digest(path) == before
    with sqlite3.connect(path) as conn:
        tables = {r[0] for r in conn.execute("select name from sqlite_master where type = 'table'")}
        assert "half_done" not in tables
        assert [r[0] for r in conn.execute("select name from _migrations")] == [n for n, _ in MIGRATIONS]
    conn.close()
    new = tmp_path / "new.db"  # a database created by the failing call is removed, never left half made
    with pytest.raises(StoreError):
        open_database(new)
    assert not new.exists()


def test_read_commands_never_write(tmp_path: Path) -> None:
    db = build_pair_db(tmp_path / "r.db", "demo", Side("bio", [("correct", "A"), ("wrong", "B")]),
                       Side("gen", [("wrong", "B"), ("correct", "A")]))
    before = (_digest(db), os.stat(db).st_mtime_ns)
    for args in (["compare", "--resamples", "200"], ["show", "--pair", "demo", "--task", "jama"], ["export"],
                 ["export", "--aggregate"], ["reproduce", "--resamples", "200"],
                 ["report", "-o", str(tmp_path / "r.html"), "--resamples", "200"]):
        invoke(*args, "--db", str(db))
    assert (_digest(db), os.stat(db).st_mtime_ns) == before


def test_read_only_places_use_an_immutable_uri() -> None:
    assert read_only_uri("/data/r.db", folder_writable=True) == "file:/data/r.db?mode=ro"
    assert read_only_uri("/media/cd/r.db", folder_writable=False) == "file:/media/cd/r.db?mode=ro&immutable=1"
    assert read_only_uri("/x/a b?#%.db", folder_writable=True) == "file:/x/a%20b%3F%23%25.db?mode=ro"


READ_ONLY_SCRIPT = """
import json, sys
from click.testing import CliRunner
from medbench_local.cli import main
results = {}
for args in (["compare", "--json", "--resamples", "200"], ["export", "--format", "jsonl"]):
    r = CliRunner().invoke(main, [*args, "--db", sys.argv[1]])
    results[args[0]] = [r.exit_code, r.output]
print(json.dumps(results))
"""


def test_read_commands_work_in_a_folder_that_is_really_read_only(tmp_path: Path) -> None:
    """A real read-only folder: as root (CI containers) file modes do not bind root, so the reading process
    drops to 'nobody' with setpriv; as a normal user the folder is simply chmod 0555."""
    folder = Path(tempfile.mkdtemp(prefix="medbench-ro-"))
    try:
        db = build_pair_db(folder / "r.db", "demo", Side("bio", [("correct", "A"), ("wrong", "B")]),
                           Side("gen", [("wrong", "B"), ("correct", "A")]))
        assert sorted(p.name for p in folder.iterdir()) == ["r.db"]  # checkpointed: no -wal/-shm beside it
        prefix: list[str] = []
        if os.geteuid() == 0:
            setpriv = shutil.which("setpriv")
            if setpriv is None:
                pytest.skip("running as root without setpriv: cannot make a folder read-only for this process")
            os.chmod(folder, 0o755)
            os.chown(folder, 65534, 65534)
            os.chown(db, 65534, 65534)
            prefix = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
        os.chmod(folder, 0o555)
        command = [*prefix, sys.executable, "-c", READ_ONLY_SCRIPT, str(db)]
        probe = subprocess.run([*prefix, sys.executable, "-c", f"import os; print(os.access({str(folder)!r}, 2))"],
                               capture_output=True, text=True, cwd=REPO)
        assert probe.stdout.strip() == "False", "the folder is writable for the reader; test set-up is wrong"
        done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=300,
                              env={**os.environ, "HOME": str(folder), "MEDBENCH_LOCAL_HOME": str(folder / "h")})
        assert done.returncode == 0, done.stderr
        results = json.loads(done.stdout.splitlines()[-1])
        assert results["compare"][0] == 0, results["compare"][1]
        assert json.loads(results["compare"][1])[0]["pair"] == "demo"
        assert results["export"][0] == 0 and len(results["export"][1].splitlines()) == 4
        assert sorted(p.name for p in folder.iterdir()) == ["r.db"]
    finally:
        os.chmod(folder, 0o755)
        shutil.rmtree(folder, ignore_errors=True)


DAMAGE = {
    # the SQL views (m004) read scores.metrics: SQLite refuses the drop while they exist
    "missing column": ("drop view item_results; drop view paired_items; alter table scores drop column metrics",
                       "table 'scores' has no column 'metrics'"),
    "missing table": ("drop table pairs", "table 'pairs' is missing"),
    "metrics not JSON": ("update scores set metrics = '{oops' where rowid = 1", "scores.metrics of row 1 is not "
                                                                                "valid JSON"),
    "metrics not an object": ("update scores set metrics = '[1]' where rowid = 1", "not a JSON object"),
    "metric not a number": ("update scores set metrics = '{\"accuracy\": \"high\"}' where rowid = 1",
                            "metric 'accuracy' that is not a finite number"),
    "settings not JSON": ("update evaluations set settings = 'x'", "evaluations.settings of row 1 is not valid"),
    "payload not JSON": ("update items set payload = '{'", "items.payload of row 1 is not valid JSON"),
}
READERS = {
    "compare": ["compare", "--resamples", "200"],
    "show": ["show", "--pair", "demo", "--task", "jama"],
    "export": ["export"],
    "export --aggregate": ["export", "--aggregate"],
    "report": ["report", "--resamples", "200"],
    "reproduce": ["reproduce", "--resamples", "200", "--as", "bio=Llama3-OpenBioLLM-8B", "--as",
                  "gen=Meta-Llama-3-8B-Instruct"],
}


@pytest.mark.parametrize("damage", list(DAMAGE), ids=list(DAMAGE))
def test_a_damaged_database_is_one_line_in_every_read_command(damage: str, tmp_path: Path) -> None:
    db = build_pair_db(tmp_path / "r.db", "demo", Side("bio", [("correct", "A"), ("wrong", "B")]),
                       Side("gen", [("wrong", "B"), ("correct", "A")]), task="nejm")
    sql, expected = DAMAGE[damage]
    with sqlite3.connect(db) as conn:
        conn.executescript(sql)
    conn.close()
    before = _digest(db)
    for name, args in READERS.items():
        args = [a.replace("jama", "nejm") for a in args]
        if name == "report":
            args = [*args, "-o", str(tmp_path / "r.html")]
        result = invoke(*args, "--db", str(db), expect=None)
        errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
        assert result.exit_code == 1 and "Traceback" not in result.output, (name, result.output)
        assert len(errors) == 1 and expected in errors[0], (name, result.output)
    assert _digest(db) == before


def test_a_newer_database_in_rollback_journal_mode_is_refused_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    close_database(open_database(path))
    with sqlite3.connect(path) as conn:
        conn.execute("pragma journal_mode=delete")
        conn.execute("insert into _migrations values ('m999_future', 'x')")
    conn.close()
    before = _digest(path)
    for read_only in (False, True):
        with pytest.raises(StoreError, match="newer medbench-local"):
            open_database(path, read_only=read_only)
    assert _digest(path) == before  # not even switched to WAL
