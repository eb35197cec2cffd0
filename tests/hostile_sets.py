"""The hostile-database set: one function per kind of results database a command must survive (issue 18,
classes 2 and 3), reusable by any test that attacks a command taking ``--db`` (or ``merge``'s databases).

``HOSTILE_DATABASES[name](tmp_path, good_db) -> Path`` makes the hostile file and returns the path to pass as
the database. ``good_db`` is a valid results database at today's schema with at least one row in every table
(:func:`good_database` makes one); it is never changed (the functions copy it). ``EXPECTED[name]`` says what a
command that reads the database must do with it, and how to run it safely:

* ``error``: a regular expression the one ``Error:`` line must match (exit 1, no traceback); None: the command
  succeeds (older schema, read-only media, text that is not UTF-8, which is shown replaced);
* ``table``: for a damaged *value*, the table it is in: a command that does not read that table (``runs``
  reads ``runs``) may succeed instead;
* ``blocking``: a FIFO, device or socket: run the command in a child process with a timeout, so that a
  regression fails instead of hanging the suite;
* ``other_user``: read-only media: when the tests run as root (file modes do not bind root), run the command
  as ``nobody`` (``setpriv``) in a child process; the file lies in a folder outside ``tmp_path`` (pytest's
  folders are private to root), removed by :func:`cleanup`;
* ``shown``: text a command that prints the damaged value must print (U+FFFD for bytes that are not UTF-8);
* ``merge_error``: what ``merge`` must say instead when the database is one of its inputs, where that differs
  (``merge`` copies text, so it refuses text that is not UTF-8 where the readers show it replaced).

After any command the file's bytes and mode are unchanged (``device`` and ``socket`` included), and nothing was
created beside a non-regular file.
"""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from medbench_local.store.database import JSON_COLUMNS
from medbench_local.store.migrations import MIGRATIONS

from .conftest import copy_db
from .synthetic import Side, build_pair_db

HostileDatabase = Callable[[Path, Path], Path]
NOBODY = 65534
_MADE_OUTSIDE: list[Path] = []


@dataclass(frozen=True)
class Expected:
    error: str | None
    table: str | None = None
    blocking: bool = False
    other_user: bool = False
    shown: str | None = None
    merge_error: str | None = None


def good_database(path: Path) -> Path:
    """A valid database with a row in every table: the synthetic pair 'demo' on jama (two items, both models
    disagreeing on both), plus a metric_runs row and a row in each contamination table and a retrievals row."""
    build_pair_db(path, "demo", Side("bio", [("correct", "A"), ("wrong", "B")]),
                  Side("gen", [("wrong", "B"), ("correct", "A")]))
    with _editing(path) as conn:
        conn.execute("insert into metric_runs values ('eval-biomedical', 'bertscore', '{\"model\": \"x\"}', 2, 't')")
        sha = conn.execute("select sha256 from models limit 1").fetchone()[0]
        conn.execute("insert into contamination_probes values ('probe', 'bio', ?, 'biomedical', 'demo', 'jama', "
                     "'{\"k\": 0.2}', 't')", (sha,))
        conn.execute("insert into contamination_signals values ('row', 'probe', 'original', 'i1', 'h', 10, 0, 1.5, "
                     "0.01, -4.0, -1.0, 0.1, 't')")
        conn.execute("insert into contamination_corpora values ('corpus', '{\"n\": 13}', 't')")
        conn.execute("insert into contamination_overlap values ('over', 'corpus', 'jama', 'i1', 'h', 40, 4, 0.1, 2, "
                     "'t')")
        conn.execute("insert into retrievals (evaluation, item, index_sha256, query, passages, placed, passage_tokens, "
                     "retrieval_ms) select evaluation, item, 'index', 'query', '[{\"id\": \"p\", \"score\": 1.5, "
                     "\"placed\": true}]', 1, 12, 0.25 from scores where evaluation = 'eval-biomedical' limit 1")
    return path


class _editing:
    """A plain read-write connection for damaging a copy (closed, so that no -wal is left beside it)."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path)

    def __enter__(self) -> sqlite3.Connection:
        return self.conn

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.conn.commit()
        self.conn.close()


def _copy(tmp_path: Path, good_db: Path, name: str = "hostile.db") -> Path:
    return copy_db(good_db, tmp_path / name)


def _first_row(conn: sqlite3.Connection, table: str) -> int:
    row = conn.execute(f'select min(rowid) from "{table}"').fetchone()
    assert row[0] is not None, f"the good database has no row in {table}"
    return int(row[0])


def _set(tmp_path: Path, good_db: Path, table: str, column: str, sql_value: str, *params: object) -> Path:
    """A copy with ``column`` of the first row of ``table`` set to ``sql_value`` (SQL, with ``params``)."""
    path = _copy(tmp_path, good_db)
    with _editing(path) as conn:
        conn.execute(f'update "{table}" set "{column}" = {sql_value} where rowid = ?',
                     (*params, _first_row(conn, table)))
    return path


# ------------------------------------------------------------------------------------------- not regular files


def _fifo(tmp_path: Path, good_db: Path) -> Path:
    path = tmp_path / "fifo.db"
    os.mkfifo(path, 0o600)
    return path


def _device(tmp_path: Path, good_db: Path) -> Path:
    """A character device with the numbers of /dev/null, made in tmp_path (never /dev/null itself: a command
    that chmod-ed it would break the machine). Needs root."""
    import pytest

    if os.geteuid() != 0:
        pytest.skip("making a device node needs root")
    path = tmp_path / "device.db"
    os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    return path


def _socket(tmp_path: Path, good_db: Path) -> Path:
    """A Unix socket (bound by a relative name: an absolute tmp_path may exceed the 107-byte limit)."""
    path = tmp_path / "socket.db"
    before = os.getcwd()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        os.chdir(tmp_path)
        server.bind("socket.db")
    finally:
        os.chdir(before)
        server.close()  # the socket file stays
    return path


def _link_to_fifo(tmp_path: Path, good_db: Path) -> Path:
    target = _fifo(tmp_path, good_db)
    link = tmp_path / "link.db"
    link.symlink_to(target)
    return link


def _beside(suffix: str, make: Callable[[Path], None]) -> HostileDatabase:
    def hostile(tmp_path: Path, good_db: Path) -> Path:
        path = _copy(tmp_path, good_db)
        make(path.with_name(path.name + suffix))
        return path
    return hostile


def _mknod_device(path: Path) -> None:
    import pytest

    if os.geteuid() != 0:
        pytest.skip("making a device node needs root")
    os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))


# ------------------------------------------------------------------------------------------- not ours, or damaged


def _text_file(tmp_path: Path, good_db: Path) -> Path:
    path = tmp_path / "notes.db"
    path.write_text("id,case\n1,not a database\n")
    return path


def _empty(tmp_path: Path, good_db: Path) -> Path:
    path = tmp_path / "empty.db"
    path.write_bytes(b"")
    return path


def _foreign(tmp_path: Path, good_db: Path) -> Path:
    path = tmp_path / "photos.db"
    with _editing(path) as conn:
        conn.execute("create table photos (id integer, name text)")
        conn.execute("insert into photos values (1, 'x')")
    return path


def _newer(tmp_path: Path, good_db: Path) -> Path:
    path = _copy(tmp_path, good_db)
    with _editing(path) as conn:
        conn.execute("insert into _migrations values ('m999_from_the_future', 'x')")
    return path


def _missing_table(tmp_path: Path, good_db: Path) -> Path:
    path = _copy(tmp_path, good_db)
    with _editing(path) as conn:
        conn.execute("drop table pairs")
    return path


def _missing_column(tmp_path: Path, good_db: Path) -> Path:
    path = _copy(tmp_path, good_db)
    with _editing(path) as conn:  # the m004 views read the column: SQLite refuses the drop while they exist
        conn.executescript("drop view item_results; drop view paired_items; alter table scores drop column metrics")
    return path


def deep_json(kind: str, depth: int = 990) -> str:
    """JSON of JSON type ``kind`` nested ``depth`` levels: SQLite's json_valid accepts it (up to 2000), Python's
    parser fails with RecursionError near 1000."""
    inner = "[" * (depth - 1) + "]" * (depth - 1)
    return "[" + inner + "]" if kind == "array" else '{"a": ' + inner + "}"


def _deep(table: str, column: str, kind: str) -> HostileDatabase:
    return lambda tmp_path, good_db: _set(tmp_path, good_db, table, column, "?", deep_json(kind))


def _bad_utf8(table: str, column: str) -> HostileDatabase:
    """The stored text with two bytes that are not UTF-8 added (SQLite keeps them as text as they are): at the
    end, or, in a JSON column, inside its first string (so that the JSON itself stays valid)."""
    def hostile(tmp_path: Path, good_db: Path) -> Path:
        path = _copy(tmp_path, good_db)
        with _editing(path) as conn:
            conn.text_factory = bytes
            row = _first_row(conn, table)
            (value,) = conn.execute(f'select "{column}" from "{table}" where rowid = ?', (row,)).fetchone()
            if (table, column) in JSON_COLUMNS:
                quote = value.index(b'"') + 1
                damaged = value[:quote] + b"\xff\xfe" + value[quote:]
            else:
                damaged = value + b"\xff\xfe"
            conn.execute(f'update "{table}" set "{column}" = cast(? as text) where rowid = ?', (damaged, row))
        return path
    return hostile


def _older(tmp_path: Path, good_db: Path) -> Path:
    """As written by the version before m004: without the views, the columns m005 and m008 add and the tables of
    m006 and m007."""
    path = _copy(tmp_path, good_db)
    with _editing(path) as conn:
        conn.executescript("drop view item_results; drop view paired_items; "
                           "alter table generations drop column prompt_tokens_evaluated; "
                           "alter table generations drop column server_requests; "
                           "alter table generations drop column server_tokens; "
                           "drop table contamination_overlap; drop table contamination_corpora; "
                           "drop table contamination_signals; drop table contamination_probes; "
                           "drop table retrievals; "
                           "delete from _migrations where name in ('m004_result_views', "
                           "'m005_prompt_tokens_evaluated', 'm006_contamination', 'm007_retrieval', "
                           "'m008_served_counts')")
    return path


def _read_only_media(make: HostileDatabase) -> HostileDatabase:
    """``make``'s database in a folder nobody can write (0555; owned by nobody when we are root, who then reads
    it as nobody). The folder is made outside tmp_path: pytest's folders are private to root."""
    def hostile(tmp_path: Path, good_db: Path) -> Path:
        folder = Path(tempfile.mkdtemp(prefix="medbench-ro-"))
        _MADE_OUTSIDE.append(folder)
        made = make(tmp_path, good_db)
        path = folder / "r.db"
        shutil.copyfile(made, path)
        if os.geteuid() == 0:
            os.chown(path, NOBODY, NOBODY)
            os.chown(folder, NOBODY, NOBODY)
        os.chmod(path, 0o600)
        os.chmod(folder, 0o555)
        return path
    return hostile


def cleanup() -> None:
    """Remove the folders made outside tmp_path (read-only media)."""
    while _MADE_OUTSIDE:
        folder = _MADE_OUTSIDE.pop()
        os.chmod(folder, 0o755)
        shutil.rmtree(folder, ignore_errors=True)


NON_REGULAR = r"not a regular file \((a FIFO|a device|a socket)\)"
HOSTILE_DATABASES: dict[str, HostileDatabase] = {
    "FIFO": _fifo,
    "device": _device,
    "socket": _socket,
    "symbolic link to a FIFO": _link_to_fifo,
    "FIFO as its -wal": _beside("-wal", lambda p: os.mkfifo(p, 0o600)),
    "FIFO as its -journal": _beside("-journal", lambda p: os.mkfifo(p, 0o600)),
    "device as its -shm": _beside("-shm", _mknod_device),
    "text file": _text_file,
    "empty file": _empty,
    "another program's SQLite": _foreign,
    "newer schema": _newer,
    "damaged schema: missing table": _missing_table,
    "damaged schema: missing column": _missing_column,
    **{f"deep JSON in {table}.{column}": _deep(table, column, kind) for (table, column), kind in JSON_COLUMNS.items()},
    "metric not a number": lambda t, g: _set(t, g, "scores", "metrics", "?", '{"accuracy": "high"}'),
    "metric not finite": lambda t, g: _set(t, g, "scores", "metrics", "?", '{"accuracy": 1e999}'),
    "settings.task not an object": lambda t, g: _set(t, g, "evaluations", "settings", "?", '{"task": [1, 2]}'),
    "BLOB in generations.output": lambda t, g: _set(t, g, "generations", "output", "x'00ff'"),
    "text in generations.prompt_tokens": lambda t, g: _set(t, g, "generations", "prompt_tokens", "'many'"),
    **{f"bad UTF-8 in {table}.{column}": _bad_utf8(table, column)
       for table, column in (("generations", "output"), ("generations", "prompt"), ("items", "item_id"),
                             ("items", "payload"), ("runs", "status"), ("runs", "command"),
                             ("pairs", "description"), ("models", "file_name"), ("scores", "gold"))},
    "older schema": _older,
    "read-only media": _read_only_media(lambda t, g: _copy(t, g)),
    "older schema on read-only media": _read_only_media(_older),
}


def _damaged(table: str, pattern: str) -> Expected:
    return Expected(rf"damaged results database: {pattern}", table=table)


EXPECTED: dict[str, Expected] = {
    "FIFO": Expected(NON_REGULAR, blocking=True),
    "device": Expected(NON_REGULAR, blocking=True),
    "socket": Expected(NON_REGULAR, blocking=True),
    "symbolic link to a FIFO": Expected(NON_REGULAR, blocking=True),
    "FIFO as its -wal": Expected(r"-wal: " + NON_REGULAR, blocking=True),
    "FIFO as its -journal": Expected(r"-journal: " + NON_REGULAR, blocking=True),
    "device as its -shm": Expected(r"-shm: " + NON_REGULAR, blocking=True),
    "text file": Expected(r"not a (SQLite results )?database"),
    "empty file": Expected(r"not a (SQLite results )?database"),
    "another program's SQLite": Expected(r"not a medbench-local results database"),
    "newer schema": Expected(r"written by a newer medbench-local \(unknown schema migration 'm999_from_the_future'\)"),
    "damaged schema: missing table": _damaged("pairs", r"table 'pairs' is missing"),
    "damaged schema: missing column": _damaged("scores", r"table 'scores' has no column 'metrics'"),
    **{f"deep JSON in {table}.{column}": _damaged(table, rf"{table}\.{column} of row \d+ is JSON nested deeper than "
                                                         r"100 levels")
       for table, column in JSON_COLUMNS},
    "metric not a number": _damaged("scores", r"scores\.metrics of row \d+ has metric 'accuracy' that is not a "
                                              r"finite number"),
    "metric not finite": _damaged("scores", r"scores\.metrics of row \d+ has metric 'accuracy' that is not a "
                                            r"finite number"),
    "settings.task not an object": _damaged("evaluations", r"evaluations\.settings of row \d+ has 'task' that is "
                                                           r"not a JSON object"),
    "BLOB in generations.output": _damaged("generations", r"generations\.output of row \d+ holds binary data "
                                                          r"\(a BLOB\), expected text"),
    "text in generations.prompt_tokens": _damaged("generations", r"generations\.prompt_tokens of row \d+ holds "
                                                                 r"text, expected an integer"),
    **{f"bad UTF-8 in {table}.{column}": Expected(None, table=table,
                                                  shown="\ufffd" if (table, column) == ("generations", "output")
                                                  else None,
                                                  merge_error=rf"{table}\.{column} of row \d+ is not valid UTF-8")
       for table, column in (("generations", "output"), ("generations", "prompt"), ("items", "item_id"),
                             ("items", "payload"), ("runs", "status"), ("runs", "command"),
                             ("pairs", "description"), ("models", "file_name"), ("scores", "gold"))},
    "older schema": Expected(None),
    "read-only media": Expected(None, other_user=True),
    "older schema on read-only media": Expected(None, other_user=True),
}

assert set(EXPECTED) == set(HOSTILE_DATABASES)
assert len(MIGRATIONS) >= 5  # _older undoes m004 and m005
