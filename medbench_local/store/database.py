"""Opening a results database: the database gate. Here (writing) and in ``readonly.py`` (reading) are the only
places the package connects to a results database; ``tests/test_hostile_databases.py`` scans for any other.

Why these pragmas: WAL lets ``compare`` read while ``run`` writes (no "database is locked"); synchronous=FULL
plus one transaction per item means a crash or SIGKILL loses at most the item in flight.

Why so careful before writing:
* **Only regular files.** The database and the files beside it (``-wal``, ``-shm``, ``-journal``,
  ``-claims``) must be regular files or absent before SQLite (or a chmod) touches anything: a FIFO would block
  SQLite's ``open`` forever, a device would be chmod-ed and get a ``-journal`` beside it (``readonly.check_files``).
* **Owner-only, always.** Prompts may contain patient text: a database we create is 0600, and a database we
  open for writing (a pre-existing empty or 0644 file, its ``-wal``/``-shm``) is tightened to 0600 first;
  SQLite gives the ``-wal``/``-shm`` files it creates the database file's mode. Folders we create are 0700.
* **Never someone else's file.** A non-empty SQLite file without our ``_migrations`` table is another
  program's database: it is refused *before* anything is written (no tables added, no switch to WAL, its bytes
  unchanged). A 0-byte file, or a SQLite file with an empty schema (e.g. left by a run killed while creating
  it), is initialised.
* **Reading never writes, never migrates** (``readonly.py``): read commands open the file read-only; an older
  database is read through a temporary upgraded copy that is never visible on disk.
* **Damage is one line.** :func:`reading` diagnoses a database before a read command reads it (schema, the
  storage class of every value, every JSON value's validity, type, size and depth, metrics that are not finite
  numbers), and every stored JSON value is parsed by ``gates/stored.py`` within the same bounds.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import sqlite_utils

from ..errors import StoreError
from ..gates.files import remember_database
from ..gates.stored import MAX_CHARS, MAX_DEPTH, DamagedValue, nesting_exceeds
from .migrations import MIGRATIONS, applied, migrate
from .readonly import (
    SQLITE_HEADER,
    check_files,
    configure,
    header,
    open_for_reading,
    open_read_only,
    quoted,
    read_only_uri,
    same_file,
    schema_state,
)
from .views import refresh_views

__all__ = ["SQLITE_HEADER", "close_database", "diagnose", "open_database", "read_only_uri", "reading"]

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def open_database(path: Path | str, *, create: bool = True, read_only: bool = False) -> sqlite_utils.Database:
    """Open a results database. Raises StoreError with one clear line.

    * ``create=True`` (``run``, ``merge`` OUT): create the file if missing, migrate it, refuse foreign, read-only
      and non-regular files.
    * ``create=False``: the same for an existing database only (``rescore``).
    * ``read_only=True``: never writes and never migrates (``readonly.open_read_only``; an older database is
      read through a temporary upgraded copy). Read commands use :func:`reading`, which also diagnoses.
    """
    path = Path(path)
    if read_only:
        return open_read_only(path)
    remember_database(path)  # no output of this command may replace it or its companion files
    return _open_for_writing(path, create)


def _open_for_writing(path: Path, create: bool) -> sqlite_utils.Database:
    created = False
    info = check_files(path)  # before anything is opened, chmod-ed or created beside it
    if info is not None:
        if not _writable(path):
            raise StoreError(f"{path}: results database is read-only (need write access to the file and its "
                             "folder)")
        _refuse_foreign(path, info)
        _make_private(path)
    elif not create:
        raise StoreError(f"{path}: no such results database (run 'medbench-local run ... --db {path}' first)")
    else:
        _create_private(path)
        created = True
        info = check_files(path)
        assert info is not None
    try:
        conn = configure(sqlite3.connect(str(path), timeout=30.0))
        same_file(path, info)
        db = sqlite_utils.Database(conn)
        _refuse_newer(db, path)  # before anything below may write (switching to WAL rewrites the header)
        conn.execute("pragma journal_mode=wal")
        conn.execute("pragma synchronous=full")
        conn.execute("pragma foreign_keys=on")
        migrate(db, str(path))
        refresh_views(db)  # the result views' metric columns follow the task registry (store/views.py)
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


@contextmanager
def reading(path: Path | str, *, tables: Sequence[str] | None = None) -> Iterator[sqlite_utils.Database]:
    """A read-only database for a read command (never written, never migrated: ``readonly.py``); damage
    becomes one clear line naming table, column and row.

    The file is checked against the schema our migrations define and its values are diagnosed before the
    command reads (:func:`diagnose`: SQLite's own functions, a scan in C, fast even for large databases), so a
    damaged value is reported instead of being skipped by a lenient reader; ``tables`` limits the value checks
    to the tables the command reads (``runs`` reads one). A damaged value met while reading
    (``gates/stored.py``) is the same line. Other errors while reading are diagnosed again (the file may change
    under a concurrent writer); an error on an intact file is a bug in our code and keeps its traceback.
    """
    path = Path(path)
    db = open_for_reading(path).db
    problem = diagnose(db, tables=tables)  # checked up front: damage must not be skipped by a lenient reader
    if problem is not None:
        db.conn.close()
        raise StoreError(f"{path}: damaged results database: {problem}")
    try:
        yield db
    except DamagedValue as exc:
        raise StoreError(f"{path}: damaged results database: {exc}") from None
    except sqlite3.DatabaseError as exc:
        problem = diagnose(db, tables=tables)
        if problem is None and isinstance(exc, sqlite3.OperationalError) and "malformed" not in str(exc):
            raise
        raise StoreError(f"{path}: damaged results database: {problem or exc}") from None
    except (ValueError, TypeError, AttributeError, KeyError):
        problem = diagnose(db, tables=tables)
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
    ("contamination_probes", "identity"): "object", ("contamination_corpora", "identity"): "object",
    ("retrievals", "passages"): "array",
}
# Members of stored JSON that the readers use as objects, arrays or strings: (table, column, path) -> JSON type
# (json_type's words). Absent or null is fine.
JSON_MEMBERS: dict[tuple[str, str, str], str] = {
    ("evaluations", "settings", "task"): "object", ("evaluations", "settings", "data"): "object",
    ("evaluations", "settings", "identity"): "object", ("evaluations", "settings", "task.data_sha256"): "text",
    ("evaluations", "settings", "data.path"): "text",
    ("runs", "settings", "models"): "array", ("runs", "settings", "tasks"): "array",
}
# The storage classes SQLite may hand back for a column of each declared type.
_STORAGE = {"TEXT": ("text",), "INTEGER": ("integer",), "FLOAT": ("real", "integer"), "REAL": ("real", "integer")}
_STORAGE_WORDS = {"text": "text", "integer": "an integer", "real": "a number", "blob": "binary data (a BLOB)"}


@lru_cache(maxsize=1)
def expected_types() -> dict[str, dict[str, str]]:
    """Table -> column -> declared type, as our named migrations create them (computed, so new migrations are
    covered)."""
    db = sqlite_utils.Database(memory=True)
    migrate(db, ":memory:")
    schema = {name: {row[1]: str(row[2]).upper() for row in db.conn.execute(f'pragma table_info("{name}")')}
              for name in db.table_names()}
    db.conn.close()
    return schema


def expected_schema() -> dict[str, list[str]]:
    """Table -> columns, as our named migrations create them."""
    return {table: list(columns) for table, columns in expected_types().items()}


def diagnose(db: sqlite_utils.Database, *, tables: Sequence[str] | None = None, text: bool = False) -> str | None:
    """The first damage found in a results database, or None when it looks intact: a missing table or column;
    a value of the wrong storage class (a BLOB or text where a number belongs, ...); a JSON value that is not
    valid JSON, not of its type, longer than ``gates.stored.MAX_CHARS`` or nested deeper than
    ``gates.stored.MAX_DEPTH``; a member the readers use as an object or array that is neither; a metric that
    is not a finite number; with ``text``, a text that is not valid UTF-8 (``merge``, which copies text, checks
    that; readers show such text replaced). ``tables`` limits the value checks (not the schema check)."""
    conn = db.conn
    try:
        problem = _schema_problem(conn)
        scope = set(expected_types()) if tables is None else set(tables)
        for check in (_storage_problem, _json_problem, _member_problem, _metric_problem):
            problem = problem or check(conn, scope)
        if text and problem is None:
            problem = _text_problem(conn, scope)
        return problem
    except sqlite3.DatabaseError as exc:
        return str(exc)


def _schema_problem(conn: sqlite3.Connection) -> str | None:
    actual = {name: {row[1] for row in conn.execute(f"pragma table_info({quoted(name)})")}
              for (name,) in conn.execute("select name from sqlite_master where type = 'table'")}
    for table, columns in expected_types().items():
        if table not in actual:
            return f"table '{table}' is missing"
        for column in columns:
            if column not in actual[table]:
                return f"table '{table}' has no column '{column}'"
    return None


def _storage_problem(conn: sqlite3.Connection, scope: set[str]) -> str | None:
    """One scan per table: every value of the storage class its column's declared type stands for (or null)."""
    for table, columns in expected_types().items():
        checked = [(column, _STORAGE[kind]) for column, kind in columns.items() if kind in _STORAGE]
        if table not in scope or not checked:
            continue
        types = ", ".join(f"typeof({quoted(column)})" for column, _ in checked)
        wrong = " or ".join(f"typeof({quoted(column)}) not in ({', '.join(repr(k) for k in (*allowed, 'null'))})"
                            for column, allowed in checked)
        row = conn.execute(f"select rowid, {types} from {quoted(table)} where {wrong} limit 1").fetchone()
        if row is None:
            continue
        for (column, allowed), found in zip(checked, row[1:]):
            if found not in (*allowed, "null"):
                return (f"{table}.{column} of row {row[0]} holds {_STORAGE_WORDS.get(found, found)}, "
                        f"expected {_STORAGE_WORDS[allowed[0]]}")
    return None


def _json_problem(conn: sqlite3.Connection, scope: set[str]) -> str | None:
    """Validity, type, size and depth of every JSON value. Depth: rows with more opening brackets than the
    bound are candidates (counted in SQL), and only those are scanned by ``gates.stored.nesting_exceeds``."""
    for (table, column), kind in JSON_COLUMNS.items():
        if table not in scope:
            continue
        c = quoted(column)
        cursor = conn.execute(
            f"select r, v, problem from (select rowid as r, {c} as v, case "
            f"when length({c}) > ? then 'long' when not json_valid({c}) then 'invalid' "
            f"when json_type({c}) not in (?, 'null') then 'kind' "
            f"when length({c}) - length(replace(replace({c}, '[', ''), '{{', '')) > ? then 'brackets' "
            f"else null end as problem from {quoted(table)} where {c} is not null) where problem is not null",
            (MAX_CHARS, kind, MAX_DEPTH))
        for rowid, value, problem in cursor:
            where = f"{table}.{column} of row {rowid}"
            if problem == "long":
                return f"{where} is longer than {MAX_CHARS:,} characters"
            if problem == "invalid":
                return f"{where} is not valid JSON"
            if problem == "kind":
                return f"{where} is not a JSON {kind}"
            if nesting_exceeds(value):
                return f"{where} is JSON nested deeper than {MAX_DEPTH} levels"
    return None


def _member_problem(conn: sqlite3.Connection, scope: set[str]) -> str | None:
    for (table, column, path), kind in JSON_MEMBERS.items():
        if table not in scope:
            continue
        json_path = "$" + "".join(f'."{key}"' for key in path.split("."))
        row = conn.execute(f"select rowid from {quoted(table)} where json_type({quoted(column)}, ?) "
                           "not in (?, 'null') limit 1", (json_path, kind)).fetchone()
        if row is not None:
            wanted = "string" if kind == "text" else kind
            return f"{table}.{column} of row {row[0]} has '{path}' that is not a JSON {wanted}"
    return None


def _metric_problem(conn: sqlite3.Connection, scope: set[str]) -> str | None:
    if "scores" not in scope:
        return None
    row = conn.execute("select s.rowid, j.key from scores s, json_each(s.metrics) j "
                       "where j.type not in ('integer', 'real') or abs(j.value) > 1.7976931348623157e308 "
                       "limit 1").fetchone()
    if row is not None:
        return f"scores.metrics of row {row[0]} has metric '{str(row[1])[:60]}' that is not a finite number"
    return None


def _text_problem(conn: sqlite3.Connection, scope: set[str]) -> str | None:
    """The first text value that is not valid UTF-8 (read as bytes: SQLite itself does not check)."""
    previous = conn.text_factory
    conn.text_factory = bytes
    try:
        for table, columns in expected_types().items():
            names = [column for column, kind in columns.items() if kind == "TEXT"]
            if table not in scope or not names:
                continue
            for row in conn.execute(f"select rowid, {', '.join(map(quoted, names))} from {quoted(table)}"):
                for column, value in zip(names, row[1:]):
                    if isinstance(value, bytes) and not value.isascii():
                        try:
                            value.decode("utf-8")
                        except UnicodeDecodeError:
                            return f"{table}.{column} of row {row[0]} is not valid UTF-8 text"
    finally:
        conn.text_factory = previous
    return None


def _refuse_foreign(path: Path, info: os.stat_result) -> None:
    """Refuse, without writing a byte or changing its mode, a file that is not ours: not SQLite, SQLite with
    someone's tables, or a newer medbench-local's database."""
    if info.st_size == 0:
        return  # an empty file (e.g. made by mktemp or touch) is initialised
    if header(path) != SQLITE_HEADER:
        raise StoreError(f"{path}: cannot use as a results database (file is not a database)")
    try:
        conn = configure(sqlite3.connect(read_only_uri(path), uri=True, timeout=30.0))
        try:
            names = {name for (name,) in conn.execute("select name from sqlite_master")}
            if names and "_migrations" not in names:
                raise StoreError(f"{path}: not a medbench-local results database (it holds other tables: "
                                 f"{', '.join(sorted(names)[:5])}); refusing to write into it, choose another --db")
            if names:
                schema_state(conn, path)  # a newer medbench-local's database: refused before it is chmod-ed
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path}: cannot use as a results database ({exc})") from None


def _create_private(path: Path) -> None:
    try:
        missing = [p for p in [path.parent, *path.parent.parents] if not p.exists()]
        for folder in reversed(missing):
            folder.mkdir(mode=PRIVATE_DIR)
            os.chmod(folder, PRIVATE_DIR)  # mkdir's mode is filtered by the umask
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_NONBLOCK, PRIVATE_FILE))
        os.chmod(path, PRIVATE_FILE)
    except FileExistsError:
        pass  # another process created it at the same moment
    except OSError as exc:
        raise StoreError(f"{path}: cannot create results database ({exc.strerror})") from None


def _make_private(path: Path) -> None:
    """Tighten the database and its SQLite companions to owner-only before anything is written (each was
    checked to be a regular file: a device is never chmod-ed)."""
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


#: The table that marks an n-gram index file as ours (store/ngram_index.py).
INDEX_MARK = "ngram_index_meta"


def open_ngram_index(path: Path | str) -> sqlite3.Connection:
    """Open (creating when missing, owner-only) an n-gram index file of ``contamination --index``: its own SQLite
    file, never a results database. The same care as for a results database: only regular files, nothing
    written into another program's SQLite file (or a results database), WAL, synchronous=normal (an index
    lost in a crash is rebuilt from its corpus; the per-file mark is committed with the file's last rows)."""
    path = Path(path)
    info = check_files(path)
    created = info is None
    if info is not None and info.st_size > 0:
        if header(path) != SQLITE_HEADER:
            raise StoreError(f"{path}: not an n-gram index (file is not a database)")
        conn = configure(sqlite3.connect(read_only_uri(path), uri=True, timeout=30.0))
        try:
            names = {name for (name,) in conn.execute("select name from sqlite_master where type = 'table'")}
        finally:
            conn.close()
        if names and INDEX_MARK not in names:
            raise StoreError(f"{path}: not an n-gram index (it holds other tables: {', '.join(sorted(names)[:5])}); "
                             "choose another --index")
        _make_private(path)
    elif created:
        _create_private(path)
    try:
        conn = configure(sqlite3.connect(str(path), timeout=30.0))
        conn.execute("pragma journal_mode=wal")
        conn.execute("pragma synchronous=normal")
    except sqlite3.DatabaseError as exc:
        _discard_if_created(locals().get("conn"), path, created)
        raise StoreError(f"{path}: cannot use as an n-gram index ({exc})") from None
    return conn


def open_index_for_building(path: Path) -> sqlite3.Connection:
    """A connection to the empty private scratch file a retrieval index is built in (``gates.files.atomic_path``
    made it and renames it into place only when the build succeeds, so an index is never seen half-built).

    Why no WAL and an in-memory journal: the file has no reader until it is renamed; its atomicity is the rename,
    and a WAL would leave a ``-wal`` file behind the name that is renamed away. ``synchronous=full`` puts the
    pages on disk at the commit, before the rename."""
    try:
        conn = configure(sqlite3.connect(str(path), timeout=30.0))
        conn.execute("pragma journal_mode=memory")
        conn.execute("pragma synchronous=full")
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot build the retrieval index here ({exc})") from None
    return conn
