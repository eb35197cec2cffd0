"""Opening a results database for reading: the read half of the database gate (``database.py`` is the other).

Every command that only reads a results database (``runs``, ``view``, ``compare``, ``show``, ``export``,
``report``, ``reproduce``) and every input of ``merge`` opens it through :func:`open_for_reading`, and nothing
else in the package calls ``sqlite3.connect`` on a results database (``tests/test_hostile_databases.py`` scans
for it). What that gives, by construction:

* **Only regular files reach SQLite.** The database and the files SQLite and medbench-local keep beside it
  (``-wal``, ``-shm``, ``-journal``, ``-claims``) must be regular files or absent, checked without opening them
  (``gates/files.py``): a FIFO would block SQLite's ``open`` forever, a device would be read (or worse, see the
  write half). The header is read through a non-blocking descriptor, and after SQLite has opened the file it
  must still be the file that was checked (device and inode).
* **Reading never writes.** The file is opened with a read-only URI (``mode=ro``; ``immutable=1`` in a folder
  we cannot write and without an unmerged WAL, since SQLite could not create the ``-shm`` a WAL reader needs
  there, and nobody can be writing there through that folder) and ``query_only``.
* **Reading never migrates**, in one way for every read command: a database written by an older
  medbench-local is read through a *temporary upgraded copy*. Why a copy rather than reading the older schema
  as it is: every query of every read command would then have to know every older schema; the copy has
  exactly today's, so a migration added next year needs no change in any reader. The copy is a private file
  (0600) in the database's own folder when that is writable (where the user chose to keep this data), else in
  the system's temporary folder; it is **unlinked the moment SQLite has opened it, before a byte is copied
  into it**, and its journal is kept in memory. So no other process can open it, and nothing of it is left on
  disk when the command ends, however it ends (an error, a signal, even SIGKILL). The copy is filled with
  SQL (schema, then rows, then indexes and views) rather than SQLite's backup API, because the backup API
  copies the source's WAL flag into the copy, and a WAL database needs files beside it by name.
* **Text that is not UTF-8** is decoded with replacement characters (``gates/stored.py``'s ``decode_text`` is
  the ``text_factory`` of every connection opened here), so a damaged byte is shown replaced instead of
  failing the whole read.
* Another program's SQLite file (no ``_migrations``) and a database written by a newer medbench-local (a
  migration we do not know) are refused with one line.
"""

from __future__ import annotations

import os
import sqlite3
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import sqlite_utils

from ..errors import StoreError
from ..gates.files import (
    database_files,
    open_input,
    regular_if_present,
    remember_database,
    remember_input,
    scratch_name,
)
from ..gates.stored import decode_text
from .migrations import MIGRATIONS, migrate

SQLITE_HEADER = b"SQLite format 3\x00"
_COPY_ORDER = {"table": 0, "index": 1, "view": 2, "trigger": 3}


@dataclass(frozen=True)
class ReadSource:
    """An open read-only database; ``upgraded`` when it is a temporary upgraded copy of an older one."""

    db: sqlite_utils.Database
    upgraded: bool


def open_read_only(path: Path | str) -> sqlite_utils.Database:
    """A read-only connection to an existing medbench-local database at today's schema; StoreError (one line)
    otherwise. See :func:`open_for_reading`."""
    return open_for_reading(path).db


def open_for_reading(path: Path | str) -> ReadSource:
    """Open ``path`` read-only, at today's schema (an older database through a temporary upgraded copy).

    Raises StoreError with one line for a missing, non-regular, foreign, newer or unreadable file; writes
    nothing beside ``path`` (only SQLite's own ``-shm`` index, which a WAL reader needs, where the folder is
    writable).
    """
    path = Path(path)
    remember_database(path)  # no output of this command may replace it or its companion files
    info = check_files(path)
    if info is None:
        raise StoreError(f"{path}: no such results database (run 'medbench-local run ... --db {path}' first)")
    if not os.access(path, os.R_OK):
        raise StoreError(f"{path}: cannot read the results database (permission denied)")
    if header(path) != SQLITE_HEADER:
        raise StoreError(f"{path}: cannot use as a results database (file is not a database)")
    uri = read_only_uri(path)
    conn = _connect_read_only(path, uri)
    try:
        same_file(path, info)
        known = [name for name, _ in MIGRATIONS]
        done = schema_state(conn, path)
        upgraded = bool(set(known) - set(done))
        if upgraded:
            conn.close()
            conn = upgraded_copy(path, uri)
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise StoreError(f"{path}: cannot use as a results database ({exc})") from None
    except BaseException:
        conn.close()
        raise
    return ReadSource(sqlite_utils.Database(conn, recursive_triggers=False, execute_plugins=False), upgraded)


def check_files(path: Path) -> os.stat_result | None:
    """The database's stat (None when it does not exist), after checking that it and each companion file
    (``-wal``, ``-shm``, ``-journal``, ``-claims``) is a regular file or absent. Nothing is opened."""
    def fail(file: Path) -> Callable[[str], Exception]:
        if file == path:
            return lambda reason: StoreError(f"{file}: {reason} (a SQLite results database is needed)")
        return lambda reason: StoreError(f"{file}: {reason} (SQLite would open it as part of the database "
                                         f"{path.name}); refusing to open the database")

    info = regular_if_present(path, fail(path))
    for companion in database_files(path)[1:]:
        regular_if_present(companion, fail(companion))
    return info


def header(path: Path) -> bytes:
    """The first 16 bytes, read through a non-blocking descriptor that is checked to be a regular file."""
    with open_input(path, lambda reason: StoreError(f"{path}: {reason} (a SQLite results database is needed)")
                    ) as handle:
        try:
            return handle.read(len(SQLITE_HEADER))
        except OSError as exc:
            raise StoreError(f"{path}: cannot read the results database ({exc.strerror})") from None


def same_file(path: Path, checked: os.stat_result) -> None:
    """Refuse when the file SQLite opened may not be the one checked (replaced in between)."""
    try:
        now = os.stat(path)
    except OSError as exc:
        raise StoreError(f"{path}: changed while being opened ({exc.strerror}); try again") from None
    if (now.st_dev, now.st_ino) != (checked.st_dev, checked.st_ino):
        raise StoreError(f"{path}: was replaced while being opened; try again")


def read_only_uri(path: Path | str, *, folder_writable: bool | None = None) -> str:
    """The SQLite URI a reader opens ``path`` with.

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


def configure(conn: sqlite3.Connection) -> sqlite3.Connection:
    """What every connection the database gate opens gets: text decoded with replacement, a busy timeout."""
    conn.text_factory = decode_text
    conn.execute("pragma busy_timeout=30000")
    return conn


def _connect_read_only(path: Path, uri: str) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=30.0)
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot open the results database for reading ({exc})") from None
    try:
        configure(conn)
        conn.execute("pragma query_only=1")
    except sqlite3.Error as exc:
        conn.close()
        raise StoreError(f"{path}: cannot open the results database for reading ({exc})") from None
    return conn


def schema_state(conn: sqlite3.Connection, path: Path) -> list[str]:
    """The migrations ``path`` records; refuses another program's database and a newer medbench-local's."""
    tables = {name for (name,) in conn.execute("select name from sqlite_master where type = 'table'")}
    if "_migrations" not in tables:
        raise StoreError(f"{path}: not a medbench-local results database (no _migrations table)")
    done = [str(name) for (name,) in conn.execute("select name from _migrations order by rowid")]
    known = {name for name, _ in MIGRATIONS}
    newer = [name for name in done if name not in known]
    if newer:
        raise StoreError(f"{path}: written by a newer medbench-local (unknown schema migration '{newer[0][:80]}'); "
                         "upgrade medbench-local to read it")
    return done


def table_names(path: Path) -> set[str]:
    """The tables of a SQLite file that was checked to be a regular SQLite file (``merge`` asks whether an
    existing OUT is still empty before diagnosing it)."""
    return _names(path, ("table",))


def stored_names(path: Path) -> set[str]:
    """The tables and views of the file as it is stored (never an upgraded copy): what another reader of the
    file itself sees (``view`` serves the file with Datasette and leaves out what its views cannot answer)."""
    return _names(path, ("table", "view"))


def _names(path: Path, kinds: tuple[str, ...]) -> set[str]:
    conn = _connect_read_only(path, read_only_uri(path))
    try:
        marks = ", ".join("?" for _ in kinds)
        return {str(name) for (name,) in
                conn.execute(f"select name from sqlite_master where type in ({marks})", kinds)}
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path}: cannot use as a results database ({exc})") from None
    finally:
        conn.close()


def _scratch_folder(path: Path) -> Path | None:
    """Where the upgraded copy is made: beside the database when that folder is writable, else (None) in the
    system's temporary folder."""
    folder = path.absolute().parent
    return folder if os.access(folder, os.W_OK) else None


def upgraded_copy(path: Path, uri: str) -> sqlite3.Connection:
    """A read-only connection to a private, already unlinked copy of ``path`` migrated to today's schema."""
    try:
        with scratch_name(_scratch_folder(path), ".medbench-upgrade-") as name:
            conn = sqlite3.connect("file:" + urllib.parse.quote(str(name)), uri=True, isolation_level=None)
            conn.execute("pragma journal_mode=memory")  # no journal file by name, before any data is written
    except (OSError, sqlite3.Error) as exc:
        raise StoreError(f"{path}: written by an older medbench-local; cannot make the temporary upgraded copy "
                         f"it is read through ({getattr(exc, 'strerror', None) or exc})") from None
    try:
        configure(conn)
        conn.execute("attach database ? as source", (uri,))
        _copy(conn)
        conn.execute("detach database source")
        migrate(sqlite_utils.Database(conn, recursive_triggers=False, execute_plugins=False), str(path))
        conn.execute("pragma query_only=1")
    except StoreError as exc:
        conn.close()
        raise StoreError(f"{path}: written by an older medbench-local and cannot be upgraded to be read ({exc})"
                         ) from None
    except sqlite3.Error as exc:
        conn.close()
        raise StoreError(f"{path}: written by an older medbench-local and cannot be read for an upgrade ({exc})"
                         ) from None
    except BaseException:
        conn.close()
        raise
    return conn


def quoted(name: str) -> str:
    """A SQLite identifier in double quotes (quotes inside doubled): table and column names from a file."""
    return '"' + name.replace('"', '""') + '"'


def _copy(conn: sqlite3.Connection) -> None:
    """Everything of the attached ``source`` into the copy, in one transaction: tables with their rows, then
    indexes (built once, over the copied rows), views and triggers."""
    entries = conn.execute("select type, name, sql from source.sqlite_master where sql is not null "
                           "and name not like 'sqlite!_%' escape '!' order by rowid").fetchall()
    conn.execute("begin")
    for kind, name, sql in sorted(entries, key=lambda entry: _COPY_ORDER.get(entry[0], len(_COPY_ORDER))):
        conn.execute(sql)
        if kind == "table":
            conn.execute(f"insert into main.{quoted(name)} select * from source.{quoted(name)}")
    conn.execute("commit")


def open_index(path: Path | str) -> sqlite3.Connection:
    """A read-only connection to a retrieval index (``store/retrieval_index.py``); StoreError (one line) for a
    missing, non-regular, non-SQLite or unreadable file.

    Why ``immutable=1``: an index is written once, into a scratch file renamed into place, and never changed
    afterwards (a rebuild replaces the file, i.e. the inode, not its pages), so SQLite needs no lock and writes
    nothing beside it, in any folder, read-only media included. Usable from a served run's worker threads (the
    caller serialises its queries: retrieval/index.py)."""
    path = Path(path)
    remember_input(path, "a retrieval index this command reads")

    def fail(reason: str) -> StoreError:
        return StoreError(f"{path}: {reason} (a retrieval index made by 'medbench-local index build' is needed)")

    info = regular_if_present(path, fail)
    if info is None:
        raise fail("no such file")
    with open_input(path, fail) as handle:
        try:
            start = handle.read(len(SQLITE_HEADER))
        except OSError as exc:
            raise fail(f"cannot read ({exc.strerror})") from None
    if start != SQLITE_HEADER:
        raise fail("not a SQLite file")
    uri = "file:" + urllib.parse.quote(str(path.absolute())) + "?mode=ro&immutable=1"
    try:
        conn = configure(sqlite3.connect(uri, uri=True, timeout=30.0, check_same_thread=False))
        conn.execute("pragma query_only=1")
    except sqlite3.Error as exc:
        raise fail(f"cannot open ({exc})") from None
    try:
        same_file(path, info)
    except BaseException:
        conn.close()
        raise
    return conn
