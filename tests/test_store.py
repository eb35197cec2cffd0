"""The results store: named migrations recorded once, newer or foreign databases refused clearly."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest

from medbench_local.errors import StoreError
from medbench_local.store import open_database
from medbench_local.store.migrations import MIGRATIONS


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
