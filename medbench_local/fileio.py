"""Writing output files so that an output can never destroy an input, and is private from its first byte.

Why one module: every command that writes a file (``report``, ``export``, the report's plot folder) must
refuse the same dangerous targets and write the same safe way, and a security review reads one place:

* **Refused targets** (one line, exit 1): the results database or its ``-wal``/``-shm``/claims files (compared
  by resolved path *and* by inode, so a hard link or a ``..`` detour is caught too), a symbolic link (it could
  point anywhere, e.g. at the database or a system file), a directory, a folder that does not exist.
* **Atomic**: data goes to a temporary file in the target's own folder, is flushed to disk, then renamed over
  the target. A failed or interrupted write leaves the old file (or nothing), never half a file.
* **Owner-only**: files are created 0600 and folders 0700 whatever the umask; a folder we write into is
  tightened to 0700. Reports and exports may quote model outputs about patients.
* **Names from stored data** (a pair name read from a database) are turned into safe file names by
  :func:`safe_component` before they become part of a path.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from .errors import UserError

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal", "-claims")
_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


class OutputError(UserError):
    """An output target that must not be written (it is an input, a link, or its folder is missing)."""


def database_files(db_path: Path | str) -> list[Path]:
    """The results database and the companion files SQLite and medbench-local keep beside it."""
    path = Path(db_path)
    return [path, *(path.with_name(path.name + suffix) for suffix in SQLITE_COMPANIONS)]


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def check_output_target(target: Path | str, *, protect: Iterable[Path | str] = ()) -> Path:
    """Refuse a target that must not be written; returns it as a Path. Checks only, writes nothing.

    ``protect``: files that are inputs of this command (the results database: pass ``database_files(db)``).
    """
    target = Path(target)
    if target.is_symlink():
        raise OutputError(f"{target}: is a symbolic link; refusing to write through it (give a plain file name)")
    folder = target.parent
    if not folder.is_dir():
        raise OutputError(f"{target}: folder {folder} does not exist (create it first)")
    if target.is_dir():
        raise OutputError(f"{target}: is a directory, expected a file name")
    resolved = target.resolve()
    same_file = _identity(target)
    for protected in protect:
        protected = Path(protected)
        if resolved == protected.resolve() or (same_file is not None and same_file == _identity(protected)):
            raise OutputError(f"{target}: is the results database {protected} (or one of its files); refusing "
                              "to overwrite an input; choose another output name")
    return target


def private_dir(folder: Path | str, *, protect: Iterable[Path | str] = ()) -> Path:
    """Create ``folder`` (0700) or tighten an existing one to 0700; refuse a symlink or a non-folder."""
    folder = Path(folder)
    if folder.is_symlink():
        raise OutputError(f"{folder}: is a symbolic link; refusing to write into it")
    if not folder.parent.is_dir():
        raise OutputError(f"{folder}: folder {folder.parent} does not exist (create it first)")
    for protected in protect:
        if folder.resolve() == Path(protected).resolve():
            raise OutputError(f"{folder}: is an input of this command; refusing to write into it")
    try:
        if folder.exists() and not folder.is_dir():
            raise OutputError(f"{folder}: exists and is not a folder")
        folder.mkdir(mode=PRIVATE_DIR, exist_ok=True)
        os.chmod(folder, PRIVATE_DIR)  # mkdir's mode is filtered by the umask; an existing folder is tightened
    except OSError as exc:
        raise OutputError(f"{folder}: cannot create or use this folder ({exc.strerror})") from None
    return folder


@contextmanager
def atomic_open(target: Path | str, mode: str = "w", *, protect: Iterable[Path | str] = (),
                encoding: str | None = "utf-8", newline: str | None = "") -> Iterator[IO]:  # type: ignore[type-arg]
    """Open a private temporary file beside ``target``; on success it replaces ``target`` atomically.

    On any exception (including KeyboardInterrupt) the temporary file is removed and ``target`` is untouched.
    """
    protect = list(protect)
    target = check_output_target(target, protect=protect)
    binary = "b" in mode
    try:
        fd, temporary = tempfile.mkstemp(prefix=f".{target.name[:100]}.", suffix=".partial", dir=target.parent)
    except OSError as exc:
        raise OutputError(f"{target}: cannot write in {target.parent} ({exc.strerror})") from None
    temp_path = Path(temporary)
    try:
        os.fchmod(fd, PRIVATE_FILE)  # mkstemp already uses 0600; say it explicitly, whatever the platform
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": encoding,
                                                                          "newline": newline})) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        check_output_target(target, protect=protect)  # nothing was swapped in while we wrote
        os.replace(temp_path, target)
    except OSError as exc:  # e.g. a full disk: the old file is untouched
        temp_path.unlink(missing_ok=True)
        raise OutputError(f"{target}: cannot write ({exc.strerror or exc}); nothing was changed") from None
    except BaseException:  # including KeyboardInterrupt and our own refusals
        temp_path.unlink(missing_ok=True)
        raise
    _sync_folder(target.parent)


def atomic_write(target: Path | str, data: bytes, *, protect: Iterable[Path | str] = ()) -> Path:
    """Write ``data`` to ``target`` atomically and owner-only, refusing inputs, links and missing folders."""
    with atomic_open(target, "wb", protect=protect) as handle:
        handle.write(data)
    return Path(target)


def _sync_folder(folder: Path) -> None:
    """Make the rename itself durable (best effort: not every platform can open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def safe_component(name: str) -> str:
    """A file-name component made from a stored name (e.g. a pair name read from a database).

    A name that already follows the id rule (models.toml's) is kept as is; anything else (``../../x``,
    ``a/b``, control characters, a leading dot, an overlong name) is reduced to the safe characters and gets
    a short hash of the original, so that two different unsafe names never collide and never leave the folder.
    """
    if _SAFE.fullmatch(name) and name not in (".", ".."):
        return name
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    cleaned = _UNSAFE_CHARS.sub("_", name).strip("._-")[:40]
    return f"{cleaned}-{digest}" if cleaned else f"name-{digest}"


def is_private(path: Path | str) -> bool:
    """True when ``path`` is readable by its owner only (0600 for files, 0700 for folders)."""
    mode = stat.S_IMODE(os.stat(path).st_mode)
    return mode & 0o077 == 0
