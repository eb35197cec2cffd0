"""The files gate: what a command reads, and what it may write, so that an output can never destroy an input.

Why one module: every command that reads a file (models.toml, data, prompts, models.lock, model files, results
databases) or writes one (``report``/``export`` ``-o``, plots, ``view --metadata-out``, ``merge`` OUT, bundles,
``models.lock``, the SHA-256 cache, assembled model files, cache folders) must refuse the same dangerous
inputs and targets and write the same safe way; a security review reads one place:

* **Inputs are regular files**, checked on the opened descriptor (``O_NONBLOCK``, so a FIFO swapped in after a
  check cannot block us): a pipe, socket or device is refused without waiting on it, a folder is named.
* **Every input is remembered for the whole command** (:func:`remember_input`, called by the reading gates
  themselves: this module, the database gate, the config and model loaders). An output target that is one of
  them, by resolved path *or* by device + inode (a hard link, a ``..`` detour), is refused. A results database
  brings its ``-wal``/``-shm``/``-journal``/``-claims`` files along, by path, since they may not exist yet.
* **Refused targets** (one line, exit 1): an input, a symbolic link, a folder, an existing file that is not a
  regular file (a device, FIFO or socket is never replaced and never chmod-ed), a missing folder.
* **Atomic**: data goes to a temporary file in the target's own folder (0600 from its first byte), is flushed,
  then renamed over the target. A failed or interrupted write leaves the old file (or nothing), never half.
* **Owner-only** under any umask: files 0600, folders we create 0700.
* **Names from stored data** (a pair name read from a database) become safe file names through
  :func:`safe_component` before they are part of a path.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ..errors import UserError

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal", "-claims")
_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_CHUNK = 1024 * 1024


class OutputError(UserError):
    """An output target that must not be written (it is an input, a link, not a regular file, or its folder
    is missing)."""


# ---------------------------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class _Input:
    path: Path                      # resolved
    identity: tuple[int, int] | None
    what: str


_lock = threading.Lock()
_inputs: list[_Input] = []


@contextmanager
def command_scope(*, inherit: bool = False) -> Iterator[None]:
    """The inputs remembered inside belong to one command; the CLI wraps every command in this. ``inherit``:
    keep what the enclosing scope remembered (the Python API inside a CLI command protects both its own inputs
    and the command's); either way the enclosing scope's list is restored on the way out."""
    with _lock:
        saved = list(_inputs)
        if not inherit:
            _inputs.clear()
    try:
        yield
    finally:
        with _lock:
            _inputs[:] = saved


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return None
    return info.st_dev, info.st_ino


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a symlink loop: compare as given
        return path.absolute()


def remember_input(path: Path | str, what: str = "an input of this command") -> None:
    """Record ``path`` as read by this command: no output of the same command may replace it."""
    path = Path(path)
    entry = _Input(_resolved(path), _identity(path), what)
    with _lock:
        if entry not in _inputs:
            _inputs.append(entry)


def remember_database(path: Path | str) -> None:
    """A results database and the files SQLite and medbench-local keep beside it are all inputs."""
    for file in database_files(path):
        remember_input(file, f"the results database {path} (or one of its files)")


def remembered_inputs() -> list[tuple[Path, str]]:
    with _lock:
        return [(entry.path, entry.what) for entry in _inputs]


def database_files(db_path: Path | str) -> list[Path]:
    """The results database and the companion files SQLite and medbench-local keep beside it."""
    path = Path(db_path)
    return [path, *(path.with_name(path.name + suffix) for suffix in SQLITE_COMPANIONS)]


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a plain file"


def regular_input(path: Path | str, fail: Callable[[str], Exception]) -> os.stat_result:
    """The input's stat when it is a regular file (symlinks followed); else ``fail(reason)`` is raised.

    Checks without opening (a FIFO would block an open for reading) and remembers the file as an input.
    ``fail`` turns the reason into the caller's one-line error (DataError, ConfigError, ModelFileError, ...).
    """
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise fail("no such file or directory") from None
    except OSError as exc:
        raise fail(f"cannot read ({exc.strerror or exc})") from None
    except ValueError:  # a NUL byte in the name
        raise fail("not a valid file name") from None
    if not stat.S_ISREG(info.st_mode):
        raise fail(_not_regular(info.st_mode))
    remember_input(path)
    return info


def regular_if_present(path: Path | str, fail: Callable[[str], Exception]) -> os.stat_result | None:
    """:func:`regular_input` for a file that may rightly be absent (a SQLite ``-wal``/``-shm``/``-journal`` or
    ``-claims`` file beside a database): None when nothing is there, its stat when it is a regular file, else
    ``fail(reason)``. Checked without opening. A symbolic link that leads nowhere is refused like other odd
    entries (SQLite would create the file it names, wherever that is)."""
    path = Path(path)
    try:
        os.lstat(path)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        pass  # regular_input words the reason
    return regular_input(path, fail)


def _not_regular(mode: int) -> str:
    """The one reason given for an input that is not a regular file."""
    if stat.S_ISDIR(mode):
        return "is a folder, expected a file"
    return f"not a regular file ({_kind(mode)}); give a file"


@contextmanager
def open_input(path: Path | str, fail: Callable[[str], Exception]) -> Iterator[IO[bytes]]:
    """Open a regular input file for reading in binary; the check is made again on the open descriptor (a
    FIFO swapped in after :func:`regular_input` does not block: ``O_NONBLOCK``)."""
    path = Path(path)
    regular_input(path, fail)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise fail(f"cannot open ({exc.strerror or exc})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise fail(_not_regular(info.st_mode))
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        handle = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with handle:
        yield handle


def read_input(path: Path | str, fail: Callable[[str], Exception], *, max_bytes: int | None = None) -> bytes:
    """A regular input file's bytes, refusing one larger than ``max_bytes`` before reading it."""
    with open_input(path, fail) as handle:
        size = os.fstat(handle.fileno()).st_size
        if max_bytes is not None and size > max_bytes:
            raise fail(f"{size:,} bytes: larger than the {max_bytes:,}-byte limit")
        try:
            data = handle.read() if max_bytes is None else handle.read(max_bytes + 1)
        except OSError as exc:
            raise fail(f"cannot read ({exc.strerror or exc})") from None
        if max_bytes is not None and len(data) > max_bytes:
            raise fail(f"larger than the {max_bytes:,}-byte limit")
        return data


# ---------------------------------------------------------------------------------------------- outputs


def check_output_target(target: Path | str, *, protect: Iterable[Path | str] = (), updating: bool = False) -> Path:
    """Refuse a target that must not be written; returns it as a Path. Checks only, writes nothing.

    Protected: every input this command has read (:func:`remember_input`) and the files in ``protect``.
    ``updating``: the command read this very file in order to rewrite it (models.lock, the SHA-256 cache):
    the target itself is allowed, every other input (a hard link to one included) is still refused.
    """
    target = Path(target)
    if target.is_symlink():
        raise OutputError(f"{target}: is a symbolic link; refusing to write through it (give a plain file name)")
    folder = target.parent
    if not folder.is_dir():
        raise OutputError(f"{target}: folder {folder} does not exist (create it first)")
    try:
        info: os.stat_result | None = os.stat(target)
    except FileNotFoundError:
        info = None
    except OSError as exc:
        raise OutputError(f"{target}: cannot use as an output ({exc.strerror or exc})") from None
    if info is not None and stat.S_ISDIR(info.st_mode):
        raise OutputError(f"{target}: is a directory, expected a file name")
    if info is not None and not stat.S_ISREG(info.st_mode):
        raise OutputError(f"{target}: is {_kind(info.st_mode)}; refusing to replace it (give a file name)")
    _refuse_inputs(target, protect, updating=updating)
    return target


def check_output_place(target: Path | str) -> Path:
    """For an output that may be a folder the command creates with its parents (a bundle, an import target):
    refuse a symbolic link, an existing FIFO, socket or device, and an input of this command."""
    target = Path(target)
    if target.is_symlink():
        raise OutputError(f"{target}: is a symbolic link; refusing to write through it (give a plain name)")
    try:
        info = os.stat(target)
    except FileNotFoundError:
        info = None
    except OSError as exc:
        raise OutputError(f"{target}: cannot use as an output ({exc.strerror or exc})") from None
    if info is not None and not (stat.S_ISDIR(info.st_mode) or stat.S_ISREG(info.st_mode)):
        raise OutputError(f"{target}: is {_kind(info.st_mode)}; refusing to replace it (give a new name)")
    _refuse_inputs(target, ())
    return target


def refuse_inputs(target: Path | str, protect: Iterable[Path | str] = ()) -> None:
    """OutputError when ``target`` is an input of this command (or one of ``protect``)."""
    _refuse_inputs(Path(target), protect)


def _refuse_inputs(target: Path, protect: Iterable[Path | str], *, updating: bool = False) -> None:
    resolved = _resolved(target)
    same_file = _identity(target)
    with _lock:
        candidates = [(entry.path, entry.identity, entry.what) for entry in _inputs]
    candidates += [(_resolved(Path(p)), _identity(Path(p)), f"an input of this command ({p})") for p in protect]
    for path, identity, what in candidates:
        if updating and path == resolved:
            continue  # the file this command read in order to rewrite it (maybe already rewritten once)
        if resolved == path or (same_file is not None and identity is not None and same_file == identity) \
                or (same_file is not None and same_file == _identity(path)):
            raise OutputError(f"{target}: is {what}; refusing to overwrite an input; choose another output name")


def private_dir(folder: Path | str, *, protect: Iterable[Path | str] = (), parents: bool = False,
                tighten: bool = True) -> Path:
    """Create ``folder`` 0700 (with its missing parents when ``parents``), or tighten an existing one to 0700
    (unless ``tighten`` is False: a folder the user named to put things in, such as a USB disk's, is theirs);
    refuse a symlink, a non-folder, a missing parent (unless ``parents``) or an input. Folders we create are
    0700 under any umask."""
    folder = Path(folder)
    if folder.is_symlink():
        raise OutputError(f"{folder}: is a symbolic link; refusing to write into it")
    if parents:
        missing = [p for p in [folder.parent, *folder.parent.parents] if not p.exists()]
        for parent in reversed(missing):
            _make_dir(parent)
    elif not folder.parent.is_dir():
        raise OutputError(f"{folder}: folder {folder.parent} does not exist (create it first)")
    _refuse_inputs(folder, protect)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{folder}: exists and is not a folder")
    if not tighten and folder.is_dir():
        return folder
    _make_dir(folder)
    try:
        if stat.S_IMODE(folder.stat().st_mode) != PRIVATE_DIR:
            os.chmod(folder, PRIVATE_DIR)  # mkdir's mode is filtered by the umask; an existing folder is tightened
    except OSError as exc:
        raise OutputError(f"{folder}: cannot make this folder private ({exc.strerror})") from None
    return folder


def _make_dir(folder: Path) -> None:
    try:
        folder.mkdir(mode=PRIVATE_DIR)
        os.chmod(folder, PRIVATE_DIR)
    except FileExistsError:
        if not folder.is_dir():
            raise OutputError(f"{folder}: exists and is not a folder") from None
    except OSError as exc:
        raise OutputError(f"{folder}: cannot create this folder ({exc.strerror})") from None


@contextmanager
def atomic_open(target: Path | str, mode: str = "w", *, protect: Iterable[Path | str] = (), updating: bool = False,
                encoding: str | None = "utf-8", newline: str | None = "") -> Iterator[IO]:  # type: ignore[type-arg]
    """Open a private temporary file beside ``target``; on success it replaces ``target`` atomically.

    On any exception (including KeyboardInterrupt) the temporary file is removed and ``target`` is untouched.
    """
    protect = list(protect)
    target = check_output_target(target, protect=protect, updating=updating)
    binary = "b" in mode
    try:
        fd, temporary = tempfile.mkstemp(prefix=f".{target.name[:100]}.", suffix=".partial", dir=target.parent)
    except OSError as exc:
        raise OutputError(f"{target}: cannot write in {target.parent} ({exc.strerror})") from None
    temp_path = Path(temporary)
    try:
        os.fchmod(fd, PRIVATE_FILE)  # mkstemp already uses 0600; say it explicitly, whatever the platform
        handle: IO[Any] = os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding=encoding, newline=newline)
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        check_output_target(target, protect=protect, updating=updating)  # nothing was swapped in while we wrote
        os.replace(temp_path, target)
    except OSError as exc:  # e.g. a full disk: the old file is untouched
        temp_path.unlink(missing_ok=True)
        raise OutputError(f"{target}: cannot write ({exc.strerror or exc}); nothing was changed") from None
    except BaseException:  # including KeyboardInterrupt and our own refusals
        temp_path.unlink(missing_ok=True)
        raise
    _sync_folder(target.parent)


def atomic_write(target: Path | str, data: bytes | str, *, protect: Iterable[Path | str] = (),
                 updating: bool = False) -> Path:
    """Write ``data`` (text is UTF-8) to ``target`` atomically and owner-only, refusing inputs, links,
    non-regular files and missing folders."""
    with atomic_open(target, "wb", protect=protect, updating=updating) as handle:
        handle.write(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(target)


@contextmanager
def atomic_path(target: Path | str, *, protect: Iterable[Path | str] = ()) -> Iterator[Path]:
    """A private temporary path beside ``target`` for a writer that needs a file name (a library that writes
    the file itself: a model assembler, SQLite); renamed over ``target`` when the block ends without error."""
    protect = list(protect)
    target = check_output_target(target, protect=protect)
    try:
        fd, temporary = tempfile.mkstemp(prefix=f".{target.name[:100]}.", suffix=".partial", dir=target.parent)
        os.fchmod(fd, PRIVATE_FILE)
        os.close(fd)
    except OSError as exc:
        raise OutputError(f"{target}: cannot write in {target.parent} ({exc.strerror})") from None
    temp_path = Path(temporary)
    try:
        yield temp_path
        if temp_path.is_symlink() or not temp_path.is_file():
            raise OutputError(f"{target}: the writer left no regular file; nothing was changed")
        os.chmod(temp_path, PRIVATE_FILE)  # a writer may have recreated the file under the umask
        check_output_target(target, protect=protect)
        os.replace(temp_path, target)
    except OSError as exc:
        raise OutputError(f"{target}: cannot write ({exc.strerror or exc}); nothing was changed") from None
    finally:
        temp_path.unlink(missing_ok=True)
    _sync_folder(target.parent)


def create_private_file(path: Path | str) -> IO[bytes]:
    """A new file opened for writing in binary, 0600 under any umask; it never follows a link and never replaces
    an existing entry (``O_EXCL | O_NOFOLLOW``): for files written into a private staging folder. An OSError
    (the name exists, is too long, the disk is full) is the caller's to word."""
    fd = os.open(Path(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
                 | getattr(os, "O_CLOEXEC", 0), PRIVATE_FILE)
    try:
        os.fchmod(fd, PRIVATE_FILE)
        return os.fdopen(fd, "wb")
    except BaseException:
        os.close(fd)
        raise


def move_into_place(staged: Path | str, target: Path | str) -> None:
    """Rename a file or folder we staged beside ``target`` onto it, atomically; the target is checked again (not
    a link, a special file or an input of this command) just before."""
    check_output_place(target)
    try:
        os.replace(staged, target)
    except OSError as exc:
        raise OutputError(f"{target}: cannot move the finished result into place ({exc.strerror or exc})") from None
    _sync_folder(Path(target).parent)


@contextmanager
def private_temporary_folder(prefix: str = "medbench-") -> Iterator[Path]:
    """A new 0700 folder in the system's temporary place, removed with everything in it when the block ends
    (also on errors and Ctrl-C): for files a child process needs (Datasette's metadata, a plugin)."""
    with tempfile.TemporaryDirectory(prefix=prefix) as folder:
        os.chmod(folder, PRIVATE_DIR)  # mkdtemp uses 0700 already; say it, whatever the platform
        yield Path(folder)


@contextmanager
def scratch_name(folder: Path | str | None, prefix: str) -> Iterator[Path]:
    """The name of a new, empty, private (0600) file in ``folder`` (the system's temporary folder when None),
    for a library that can only open a file by name (SQLite); the name is removed when the block ends. Open
    the file inside the block: what was opened stays usable, invisible to every other process, and its space
    is freed when it is closed or the process ends, however it ends (no data is ever on disk under a name if
    nothing is written before the block ends)."""
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=folder)
    try:
        os.fchmod(fd, PRIVATE_FILE)
    finally:
        os.close(fd)
    try:
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


def private_temporary_file() -> IO[bytes]:
    """An unnamed temporary file (0600, gone when closed): e.g. to capture what C code writes to stderr."""
    return tempfile.TemporaryFile()


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
