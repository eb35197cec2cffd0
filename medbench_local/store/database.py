"""Opening a results database safely.

Why these pragmas: WAL lets ``compare`` read while ``run`` writes (no "database is locked"); synchronous=FULL
plus one transaction per item means a crash or SIGKILL loses at most the item in flight. The file is created
owner-only (0600) because prompts may contain patient text.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import sqlite_utils

from ..errors import StoreError
from .migrations import migrate


def open_database(path: Path | str, *, create: bool = True) -> sqlite_utils.Database:
    """Open (and if needed create and migrate) a results database. Raises StoreError with a clear line.

    ``create=True`` is the writer's mode: the file and its folder must be writable (SQLite's WAL needs to
    create ``-wal``/``-shm`` files beside it), checked up front so that a run never starts on a database it
    cannot finish writing.
    """
    path = Path(path)
    if create and path.exists() and not _writable(path):
        raise StoreError(f"{path}: results database is read-only (need write access to the file and its folder)")
    if not path.exists():
        if not create:
            raise StoreError(f"{path}: no such results database (run 'medbench-local run ... --db {path}' first)")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        except OSError as exc:
            raise StoreError(f"{path}: cannot create results database ({exc.strerror})") from None
    elif path.is_dir():
        raise StoreError(f"{path}: is a directory, expected a SQLite results database file")
    try:
        conn = sqlite3.connect(str(path), timeout=30.0)
        db = sqlite_utils.Database(conn)
        conn.execute("pragma journal_mode=wal")
        conn.execute("pragma synchronous=full")
        conn.execute("pragma foreign_keys=on")
        conn.execute("pragma busy_timeout=30000")
        if create:
            migrate(db, str(path))
        elif "_migrations" not in db.table_names():
            raise StoreError(f"{path}: not a medbench-local results database (no _migrations table)")
        else:
            migrate(db, str(path)) if _writable(path) else None
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path}: cannot use as a results database ({exc})") from None
    return db


def _writable(path: Path) -> bool:
    return os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)


def close_database(db: sqlite_utils.Database) -> None:
    """Checkpoint the WAL into the main file and close, so the .db file alone is complete."""
    try:
        db.conn.execute("pragma wal_checkpoint(truncate)")
    except sqlite3.Error:
        pass  # another process is reading; the WAL stays and SQLite will merge it later
    db.conn.close()
