"""Opening a results database safely, for writing (``run``, ``rescore``) or for reading (everything else).

Why these pragmas: WAL lets ``compare`` read while ``run`` writes (no "database is locked"); synchronous=FULL
plus one transaction per item means a crash or SIGKILL loses at most the item in flight.

Why so careful before writing:
* **Owner-only, always.** Prompts may contain patient text: a database we create is 0600, and a database we
  open for writing (a pre-existing empty or 0644 file, its ``-wal``/``-shm``) is tightened to 0600 first;
  SQLite gives the ``-wal``/``-shm`` files it creates the database file's mode. Folders we create are 0700.
* **Never someone else's file.** A non-empty SQLite file without our ``_migrations`` table is another
  program's database: it is refused *before* anything is written (no tables added, no switch to WAL, its bytes
  unchanged). A 0-byte file, or a SQLite file with an empty schema (e.g. left by a run killed while creating
  it), is initialised.
* **Reading never writes.** Read commands open the file with a read-only URI; in a folder we cannot write
  (read-only media, a locked-down share) SQLite cannot create the ``-shm`` file WAL readers need, so the file
  is opened ``immutable`` there (safe: nobody can be writing it through that folder).
"""

from __future__ import annotations

import os
import sqlite3
import stat
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlite_utils

from ..errors import StoreError
from ..gates.files import remember_database
from .migrations import MIGRATIONS, applied, migrate

SQLITE_HEADER = b"SQLite format 3\x00"
PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def open_database(path: Path | str, *, create: bool = True, read_only: bool = False) -> sqlite_utils.Database:
    """Open a results database. Raises StoreError with one clear line.

    * ``create=True`` (``run``): create the file if missing, migrate it, refuse foreign and read-only files.
    * ``create=False``: the same for an existing database only (``rescore``).
    * ``read_only=True`` (``compare``, ``show``, ``export``, ``report``, ``reproduce``): never writes, except
      that a database written by an older medbench-local is upgraded in place by its named migrations when
      its folder is writable (in a read-only place it is refused with a hint).
    """
    path = Path(path)
    if path.is_dir():
        raise StoreError(f"{path}: is a directory, expected a SQLite results database file")
    remember_database(path)  # no output of this command may replace it or its companion files
    if read_only:
        return _open_for_reading(path)
    return _open_for_writing(path, create)


def _open_for_writing(path: Path, create: bool) -> sqlite_utils.Database:
    created = False
    if path.exists():
        if not _writable(path):
            raise StoreError(f"{path}: results database is read-only (need write access to the file and its "
                             "folder)")
        _refuse_foreign(path)
        _make_private(path)
    elif not create:
        raise StoreError(f"{path}: no such results database (run 'medbench-local run ... --db {path}' first)")
    else:
        _create_private(path)
        created = True
    try:
        conn = sqlite3.connect(str(path), timeout=30.0)
        db = sqlite_utils.Database(conn)
        conn.execute("pragma busy_timeout=30000")
        _refuse_newer(db, path)  # before anything below may write (switching to WAL rewrites the header)
        conn.execute("pragma journal_mode=wal")
        conn.execute("pragma synchronous=full")
        conn.execute("pragma foreign_keys=on")
        migrate(db, str(path))
    except sqlite3.DatabaseError as exc:
        _discard_if_created(locals().get("conn"), path, created)
        raise StoreError(f"{path}: cannot use as a results database ({exc})") from None
    except BaseException:
        _discard_if_created(locals().get("conn"), path, created)
        raise
    return db


def _refuse_newer(db: sqlite_utils.Database, path: Path) -> None:
    known = {name for name, _ in MIGRATIONS}
    newer = [name for name in applied(db) if name not in known]
    if newer:
        raise StoreError(f"{path}: written by a newer medbench-local (unknown schema migration '{newer[0]}'); "
                         "upgrade medbench-local to read it")


def _open_for_reading(path: Path) -> sqlite_utils.Database:
    if not path.exists():
        raise StoreError(f"{path}: no such results database (run 'medbench-local run ... --db {path}' first)")
    if not os.access(path, os.R_OK):
        raise StoreError(f"{path}: cannot read the results database (permission denied)")
    if _header(path) != SQLITE_HEADER:
        raise StoreError(f"{path}: cannot use as a results database (file is not a database)")
    db = _connect_read_only(path)
    try:
        names = db.table_names()
        if "_migrations" not in names:
            raise StoreError(f"{path}: not a medbench-local results database (no _migrations table)")
        _refuse_newer(db, path)
        if len(applied(db)) < len(MIGRATIONS):  # written by an older medbench-local: upgrade once, in place
            db.conn.close()
            if not _writable(path):
                raise StoreError(f"{path}: written by an older medbench-local and stored where it cannot be "
                                 "upgraded (read-only); copy it to a writable folder once")
            _open_for_writing(path, create=False).conn.close()
            db = _connect_read_only(path)
    except sqlite3.DatabaseError as exc:
        db.conn.close()
        raise StoreError(f"{path}: cannot use as a results database ({exc})") from None
    except BaseException:
        db.conn.close()
        raise
    return db


def read_only_uri(path: Path | str, *, folder_writable: bool | None = None) -> str:
    """The SQLite URI a read command opens ``path`` with.

    ``mode=ro`` where the folder is writable (SQLite may create the ``-shm`` file a WAL reader needs, and a
    concurrent ``run`` stays visible); ``immutable=1`` where it is not and no unmerged WAL is lying beside the
    file (nothing can be writing there, and SQLite then needs no ``-shm``). A folder that is not writable but
    holds a non-empty ``-wal`` keeps ``mode=ro`` so that the WAL's content is not ignored.
    """
    absolute = Path(path).absolute()
    uri = "file:" + urllib.parse.quote(str(absolute)) + "?mode=ro"
    if folder_writable is None:
        folder_writable = os.access(absolute.parent, os.W_OK)
    if folder_writable:
        return uri
    wal = absolute.with_name(absolute.name + "-wal")
    try:
        unmerged = wal.stat().st_size > 0
    except OSError:
        unmerged = False
    return uri if unmerged else uri + "&immutable=1"


def _connect_read_only(path: Path) -> sqlite_utils.Database:
    try:
        conn = sqlite3.connect(read_only_uri(path), uri=True, timeout=30.0)
        conn.execute("pragma busy_timeout=30000")
        return sqlite_utils.Database(conn, recursive_triggers=False, execute_plugins=False)
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot open the results database for reading ({exc})") from None


@contextmanager
def reading(path: Path | str) -> Iterator[sqlite_utils.Database]:
    """A read-only database for a read command; damage becomes one clear line naming table, column and row.

    The file is checked against the schema our migrations define and every JSON column is validated before
    the command reads (SQLite's JSON functions: a scan in C, fast even for large databases), so a damaged
    value is reported instead of being silently skipped by a lenient reader. Errors while reading are
    diagnosed again (the file may change under a concurrent writer); an error on an intact file is a bug in
    our code and keeps its traceback.
    """
    path = Path(path)
    db = open_database(path, read_only=True)
    problem = diagnose(db)  # checked up front too: damage must not be skipped silently by a lenient reader
    if problem is not None:
        db.conn.close()
        raise StoreError(f"{path}: damaged results database: {problem}")
    try:
        yield db
    except sqlite3.DatabaseError as exc:
        problem = diagnose(db)
        if problem is None and isinstance(exc, sqlite3.OperationalError) and "malformed" not in str(exc):
            raise
        raise StoreError(f"{path}: damaged results database: {problem or exc}") from None
    except (ValueError, TypeError, AttributeError, KeyError):
        problem = diagnose(db)
        if problem is None:
            raise
        raise StoreError(f"{path}: damaged results database: {problem}") from None
    finally:
        db.conn.close()


# Columns holding JSON, and the JSON type each must have.
JSON_COLUMNS: dict[tuple[str, str], str] = {
    ("runs", "command"): "array", ("runs", "packages"): "object", ("runs", "settings"): "object",
    ("models", "metadata"): "object", ("evaluations", "settings"): "object", ("items", "payload"): "object",
    ("scores", "metrics"): "object", ("metric_runs", "identity"): "object",
}


def expected_schema() -> dict[str, list[str]]:
    """Table -> columns, as our named migrations create them (computed, so new migrations are covered)."""
    db = sqlite_utils.Database(memory=True)
    migrate(db, ":memory:")
    schema = {name: [c.name for c in db[name].columns] for name in db.table_names()}
    db.conn.close()
    return schema


def diagnose(db: sqlite_utils.Database) -> str | None:
    """The first damage found in a results database (missing table or column, a JSON value that is not
    valid JSON or not of its type, a metric that is not a number), or None when it looks intact."""
    conn = db.conn
    try:
        actual = {name: {row[1] for row in conn.execute(f'pragma table_info("{name}")')}
                  for (name,) in conn.execute("select name from sqlite_master where type = 'table'")}
        for table, columns in expected_schema().items():
            if table not in actual:
                return f"table '{table}' is missing"
            for column in columns:
                if column not in actual[table]:
                    return f"table '{table}' has no column '{column}'"
        for (table, column), kind in JSON_COLUMNS.items():
            row = conn.execute(f'select rowid, json_valid("{column}") from "{table}" where "{column}" is not null '
                               f'and case when json_valid("{column}") then json_type("{column}") != ? else 1 end '
                               'limit 1', (kind,)).fetchone()
            if row is not None:
                what = "not valid JSON" if not row[1] else f"not a JSON {kind}"
                return f"{table}.{column} of row {row[0]} is {what}"
        row = conn.execute("select s.rowid, j.key from scores s, json_each(s.metrics) j "
                           "where j.type not in ('integer', 'real') limit 1").fetchone()
        if row is not None:
            return f"scores.metrics of row {row[0]}: metric '{row[1]}' is not a number"
    except sqlite3.DatabaseError as exc:
        return str(exc)
    return None


def _header(path: Path) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise StoreError(f"{path}: cannot read the results database ({exc.strerror})") from None


def _refuse_foreign(path: Path) -> None:
    """Refuse, without writing a byte, a file that is not ours: not SQLite, or SQLite with someone's tables."""
    if path.stat().st_size == 0:
        return  # an empty file (e.g. made by mktemp or touch) is initialised
    if _header(path) != SQLITE_HEADER:
        raise StoreError(f"{path}: cannot use as a results database (file is not a database)")
    try:
        conn = sqlite3.connect(read_only_uri(path), uri=True, timeout=30.0)
        try:
            names = {name for (name,) in conn.execute("select name from sqlite_master")}
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path}: cannot use as a results database ({exc})") from None
    if names and "_migrations" not in names:
        raise StoreError(f"{path}: not a medbench-local results database (it holds other tables: "
                         f"{', '.join(sorted(names)[:5])}); refusing to write into it, choose another --db")


def _create_private(path: Path) -> None:
    try:
        missing = [p for p in [path.parent, *path.parent.parents] if not p.exists()]
        for folder in reversed(missing):
            folder.mkdir(mode=PRIVATE_DIR)
            os.chmod(folder, PRIVATE_DIR)  # mkdir's mode is filtered by the umask
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, PRIVATE_FILE))
        os.chmod(path, PRIVATE_FILE)
    except FileExistsError:
        pass  # another process created it at the same moment
    except OSError as exc:
        raise StoreError(f"{path}: cannot create results database ({exc.strerror})") from None


def _make_private(path: Path) -> None:
    """Tighten the database and its SQLite companions to owner-only before anything is written."""
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            if stat.S_IMODE(file.stat().st_mode) & 0o077:
                os.chmod(file, PRIVATE_FILE)
        except FileNotFoundError:
            continue
        except PermissionError:
            raise StoreError(f"{file}: readable by others and not ours to make private (chmod 600 it, or "
                             "choose another --db)") from None


def _discard_if_created(conn: sqlite3.Connection | None, path: Path, created: bool) -> None:
    """A database we created in this call and could not initialise is removed, never left half-made."""
    if conn is not None:
        conn.close()
    if created:
        for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            file.unlink(missing_ok=True)


def _writable(path: Path) -> bool:
    return os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)


def close_database(db: sqlite_utils.Database) -> None:
    """Checkpoint the WAL into the main file and close, so the .db file alone is complete."""
    try:
        db.conn.execute("pragma wal_checkpoint(truncate)")
    except sqlite3.Error:
        pass  # another process is reading; the WAL stays and SQLite will merge it later
    db.conn.close()
