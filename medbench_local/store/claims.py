"""Item claims: two ``run``s of the same model and task on one database split the items instead of colliding.

Why file locks and not rows: a claim must vanish the moment its run dies, including by SIGKILL or power loss,
or a killed run would block its items forever. The kernel gives exactly that for POSIX record locks: each
item is one byte of the lock file ``<database>-claims`` (offset = a hash of evaluation key and item key), locked
while the item is generated and committed. Another run that finds the byte locked skips the item and says
so; a run that finds it free but the item already stored (the other run finished it meanwhile) skips it too.

Every run also holds a shared lock on one "presence" byte while it uses the file; the run that closes last can
take it exclusively and removes the file, so no ``-claims`` file is left beside a database after its runs.

Where locks are unavailable (no ``fcntl``, or a file system without record locks), claims are off and the
writer's commit-time check still keeps the database consistent: the second result is dropped and counted.
Note that SQLite on a network file system is unsafe anyway; concurrent runs are meant for one machine.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

_OFFSET_SPACE = 1 << 56  # lock offsets below 2**56: far from any other use, fits every 64-bit off_t
_PRESENCE = 1 << 60      # one byte every run holds shared while it uses the file: the last one out removes it


def claims_path(db_path: Path | str) -> Path:
    path = Path(db_path)
    return path.with_name(path.name + "-claims")


def _offset(evaluation: str, item: str) -> int:
    digest = hashlib.sha256(f"{evaluation}\x00{item}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % _OFFSET_SPACE


class ItemClaims:
    """Per-item exclusive claims shared by all processes that use the same database file."""

    def __init__(self, db_path: Path | str | None) -> None:
        self._fd: int | None = None
        self._path: Path | None = None
        if fcntl is None or db_path is None or str(db_path) in ("", ":memory:"):
            return
        self._path = claims_path(db_path)
        for _ in range(5):  # a finishing run may remove the file between our open and our presence lock
            try:
                fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
                os.fchmod(fd, 0o600)
                fcntl.lockf(fd, fcntl.LOCK_SH, 1, _PRESENCE)  # "a run uses this file" until we close it
            except OSError:
                self._fd = None  # claims off; the commit-time check still protects the data
                return
            if _same_file(fd, self._path):
                self._fd = fd
                return
            os.close(fd)  # it was removed meanwhile: open the file that is there now

    @property
    def active(self) -> bool:
        return self._fd is not None

    @contextmanager
    def hold(self, evaluation: str, item: str) -> Iterator[bool]:
        """Yields True while this process holds the item, False when another live process holds it."""
        if self._fd is None:
            yield True
            return
        offset = _offset(evaluation, item)
        try:
            fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset)
        except (BlockingIOError, PermissionError):
            yield False
            return
        except OSError:  # e.g. ENOLCK: this file system keeps no record locks
            yield True
            return
        try:
            yield True
        finally:
            try:
                fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, offset)
            except OSError:
                pass

    def close(self) -> None:
        """Release the claims; the last run to close removes the file (no ``-claims`` left after a run)."""
        if self._fd is None:
            return
        try:
            fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, _PRESENCE)  # no other run holds the file
            if self._path is not None and _same_file(self._fd, self._path):
                self._path.unlink()
        except OSError:
            pass  # another run still uses it: it removes the file when it finishes
        finally:
            os.close(self._fd)
            self._fd = None


def _same_file(fd: int, path: Path) -> bool:
    try:
        opened, named = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (opened.st_dev, opened.st_ino) == (named.st_dev, named.st_ino)


def database_path(conn: object) -> str | None:
    """The file behind a SQLite connection (None for an in-memory database)."""
    try:
        rows = conn.execute("pragma database_list").fetchall()  # type: ignore[attr-defined]
    except Exception:
        return None
    main = next((row[2] for row in rows if row[1] == "main"), "")
    return main or None
