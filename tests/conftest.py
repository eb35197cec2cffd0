"""Shared fixtures. End-to-end tests run the real CLI with real llama.cpp inference on the demo pair."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from hypothesis import settings as hypothesis_settings

# CI (.ci/run) sets HYPOTHESIS_PROFILE=ci: the property tests then draw the same examples on every run, so a red
# CI always means a change broke something, never a newly drawn example. Locally the examples are fresh each
# run, which is how the property tests keep finding new inputs (and how they found the ones now in the tables).
hypothesis_settings.register_profile("ci", derandomize=True, deadline=None)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def _isolated_state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Keep the hash cache and assembled demo model out of the user's home; never touch the network."""
    home = tmp_path_factory.mktemp("medbench-home")
    old = {k: os.environ.get(k) for k in ("MEDBENCH_LOCAL_HOME", "HF_HUB_OFFLINE")}
    os.environ["MEDBENCH_LOCAL_HOME"] = str(home)
    os.environ["HF_HUB_OFFLINE"] = "1"
    yield
    for key, value in old.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture
def in_repo(monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run with the repository root as working directory (models.toml and bench_data/ are found there)."""
    monkeypatch.chdir(REPO)
    return REPO


def invoke(*args: str, expect: int | None = 0) -> Result:
    from medbench_local.cli import main

    result = CliRunner().invoke(main, list(args), catch_exceptions=False) if expect == 0 else \
        CliRunner().invoke(main, list(args))
    if expect is not None:
        assert result.exit_code == expect, result.output
    return result


@pytest.fixture(scope="session")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real demo run (both models, both case-challenge tasks), shared by the read-only e2e tests."""
    db = tmp_path_factory.mktemp("demo") / "results.db"
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        invoke("run", "--pair", "demo", "--task", "nejm", "--task", "jama", "--db", str(db))
    finally:
        os.chdir(cwd)
    return db


def rows(db: Path, sql: str, *params: object) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, params).fetchall()


def copy_db(source: Path, target: Path) -> Path:
    """Copy a results database consistently (WAL included) with SQLite's backup API."""
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    return target
