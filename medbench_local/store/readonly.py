"""Opening a results database strictly read-only, for commands that only look (``runs``, ``view``).

Why not ``open_database(create=False)``: that one upgrades an older database in place when it can, which is
right for ``compare`` but not for a command that must never write (a database on read-only media, or one that a
``run`` is writing right now). SQLite's ``mode=ro`` reads the WAL, so rows a running ``run`` has committed are
seen immediately.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import sqlite_utils

from ..errors import StoreError
from .migrations import MIGRATIONS


def open_read_only(path: Path | str) -> sqlite_utils.Database:
    """A read-only connection to an existing medbench-local database; StoreError (one line) otherwise."""
    path = Path(path)
    if not path.exists():
        raise StoreError(f"{path}: no such results database (run 'medbench-local run ... --db {path}' first)")
    if path.is_dir():
        raise StoreError(f"{path}: is a directory, expected a SQLite results database file")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30.0)
        conn.execute("pragma busy_timeout=30000")
        names = {row[0] for row in conn.execute("select name from sqlite_master where type = 'table'")}
        if "_migrations" not in names:
            conn.close()
            raise StoreError(f"{path}: not a medbench-local results database (no _migrations table)")
        known = {name for name, _ in MIGRATIONS}
        newer = [row[0] for row in conn.execute("select name from _migrations order by rowid")
                 if row[0] not in known]
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path}: cannot use as a results database ({exc})") from None
    if newer:
        conn.close()
        raise StoreError(f"{path}: written by a newer medbench-local (unknown schema migration '{newer[0]}'); "
                         "upgrade medbench-local to read it")
    return sqlite_utils.Database(conn)
