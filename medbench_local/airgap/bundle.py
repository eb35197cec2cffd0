"""Bundles: everything an air-gapped machine needs for a run, in one folder (or one .tar) with a manifest.

Layout of a bundle (paths relative to its root; the same inside a .tar, without a top-level folder)::

    MANIFEST.json        every other file's relative path, size and SHA-256, plus versions (see below)
    README.txt           what is inside and how to import it
    models.toml          the selected models and pairs, rewritten: path = "models/<file>", sha256 filled in
    models.lock          their lock entries (source "path"), each with the "origin" it was pulled from
    models/<file>.gguf   the GGUF files (a name clash gets the model id as prefix: models/<id>--<file>)
    indexes/<name>       the retrieval indexes of the selected arms ([arms.NAME], docs/retrieval.md)
    data/<name>          task data files or folders given with --data
    assets/<name>        metric assets given with --asset (BERTScore / UMLS folders, ...)

Why a manifest with hashes: a bundle travels on USB disks and through file transfer tools that can truncate or
flip bytes silently. ``bundle import`` copies every file into a temporary folder beside the destination while
hashing it, compares *every* file with the manifest (and refuses files the manifest does not list), and only
then renames the folder into place in one step. On any mismatch the temporary folder is removed and nothing is
installed.

Why this module is the only reader of tar files: an archive is input from outside, and Python's tarfile trusts
it. It reads a GNU long-name or PAX record whole into memory, whatever size its header announces (a 311 KB
.tar.gz once drove ``bundle verify`` to 4.4 GB and printed a 300 MB "name"), follows chains of such headers by
recursion, and lets each decompressor raise its own kind of error. Here every header's announced size is
checked *before* tarfile reads its payload (:class:`_CheckedTarInfo`), compressed archives are decompressed by
our own forward reader (:class:`_Decompressed`: bounded reads, a memory limit for xz, one error class for every
decoder failure), and every name quoted in an error line goes through :func:`_shown` (control characters
escaped, cut to ``SHOWN_NAME_CHARS``).
"""

from __future__ import annotations

import bz2
import errno
import hashlib
import importlib.metadata
import io
import json
import lzma
import os
import platform
import shutil
import stat
import sys
import tarfile
import zlib
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import IO, Any

from ..config import Config, HubSource, LocalSource, ModelSpec, PackageSource, parse_config
from ..errors import ModelFileError, UserError
from ..gates.files import create_private_file, move_into_place, private_dir
from ..modelfiles.lock import LOCK_NAME, LockEntry, lock_path, read_lock, render_lock, source_fields
from ..modelfiles.resolve import require
from ..modelfiles.verdict import verify
from ..units import human_size
from ..version import __version__

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: stale staging folders are reported, not removed
    fcntl = None  # type: ignore[assignment]

MANIFEST = "MANIFEST.json"
BUNDLE_FORMAT = "medbench-local.bundle"
BUNDLE_VERSION = 1
_CHUNK = 8 * 1024 * 1024
_SOURCE_KEYS = ("path", "repo", "file", "revision", "package", "sha256")
MAX_MANIFEST_BYTES = 64 * 1024 * 1024     # a manifest lists paths and hashes: a few KB per thousand files
MAX_BUNDLE_MEMBERS = 100_000              # files (and folders) in one bundle
MAX_CONTROL_BYTES = 4 * 1024 * 1024       # models.toml / models.lock inside a bundle
_CONTROL_FILES = ("models.toml", LOCK_NAME)
# Archive headers (issue 18, row 7): capped *before* tarfile reads their payload into memory.
MAX_MEMBER_NAME_BYTES = 4096              # a member name or link target (PATH_MAX); a GNU long-name record
MAX_EXTENDED_HEADER_BYTES = 64 * 1024     # one PAX header (real ones: a few hundred bytes)
MAX_EXTENDED_HEADERS = 8                  # extension headers in a row before one member (real archives: 1-3)
MAX_GLOBAL_HEADERS = 16                   # PAX global headers per archive (they accumulate; real archives: 0-1)
MAX_XZ_MEMORY = 128 * 1024 * 1024         # an xz decoder's memory (xz -9 needs 65 MiB)
SHOWN_NAME_CHARS = 200                    # a name from an archive or manifest, as quoted in an error line
MAX_PROBLEMS_SHOWN = 20                   # problems listed in one error message (the rest are counted)
_FILE_MODE = 0o600      # bundles carry model files and possibly patient data: owner-only


class BundleError(UserError):
    """A bundle cannot be written, read or installed; the message lists every problem."""


class Reporter:
    """Progress callbacks (the CLI draws a bar); the default does nothing."""

    def start(self, label: str, total: int) -> None: ...

    def advance(self, size: int) -> None: ...

    def end(self) -> None: ...


@dataclass
class BundleSummary:
    path: Path
    files: int
    total_bytes: int
    models: dict[str, str] = field(default_factory=dict)
    cleaned: list[str] = field(default_factory=list)  # staging folders of interrupted imports that were removed


# --------------------------------------------------------------------------------------------------- helpers


def _environment() -> dict[str, str]:
    def version(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    from ..metrics.icd import ICD_TABLE_VERSION
    from ..metrics.rouge import ROUGE_IMPL_VERSION

    return {
        "medbench_local": __version__, "python": sys.version.split()[0], "platform": platform.platform(),
        "llama_cpp_python": version("llama_cpp_python"), "huggingface_hub": version("huggingface_hub"),
        "icd10cm_table": ICD_TABLE_VERSION, "rouge": ROUGE_IMPL_VERSION,
    }


_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _shown(name: object) -> str:
    """A name from an archive or a manifest as an error line may quote it: control, bidi and other invisible
    characters as escapes (``\\x1b``, ``\\u202e``), at most ``SHOWN_NAME_CHARS`` characters, cut with an ellipsis.

    Why one helper: names are chosen by whoever made the archive. Every message that quotes one goes through
    here, so that none can print a 300 MB line or move the terminal's cursor."""
    text = str(name)[:SHOWN_NAME_CHARS + 1]  # nothing beyond what can be shown is looked at
    if not text.isprintable() or _BIDI_CONTROLS.intersection(text):
        text = "".join(char if char.isprintable() and char not in _BIDI_CONTROLS
                       else f"\\x{ord(char):02x}" if ord(char) <= 0xFF
                       else f"\\u{ord(char):04x}" if ord(char) <= 0xFFFF else f"\\U{ord(char):08x}"
                       for char in text)
    return text if len(text) <= SHOWN_NAME_CHARS else text[:SHOWN_NAME_CHARS - 1] + "…"


def _name_bytes(name: str) -> int:
    """A name's length in bytes as a file system counts it; never fails (a lone surrogate from JSON or an
    undecodable tar name counts as the bytes that carry it)."""
    return len(name.encode("utf-8", "surrogatepass"))


def _first_line(exc: BaseException) -> str:
    """An exception's message as one short line (a decoder's or tarfile's words, cut like a name)."""
    text = str(exc)[:4 * SHOWN_NAME_CHARS]
    return _shown(text.splitlines()[0] if text.strip() else type(exc).__name__)


def _safe_relative(name: str) -> bool:
    """A manifest/tar path may only point inside the bundle: relative, POSIX, no '..', no empty parts; and it
    must be storable as a file name (no NUL, nothing the file system encoding cannot write)."""
    if not name or name.startswith("/") or "\\" in name or ":" in name.split("/")[0] or "\0" in name:
        return False
    try:
        os.fsencode(name)
    except UnicodeError:
        return False
    return all(part not in ("", ".", "..") for part in name.split("/"))


def _copy_hashing(source: IO[bytes], target: IO[bytes], reporter: Reporter) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    while chunk := source.read(_CHUNK):
        digest.update(chunk)
        target.write(chunk)
        size += len(chunk)
        reporter.advance(len(chunk))
    return digest.hexdigest(), size


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        out = []
        for char in value:
            code = ord(char)
            if char in '"\\':
                out.append("\\" + char)
            elif char == "\n":
                out.append("\\n")
            elif char == "\t":
                out.append("\\t")
            elif code < 0x20 or code == 0x7F:
                out.append(f"\\u{code:04x}")
            else:
                out.append(char)
        return '"' + "".join(out) + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_value(str(k))} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise BundleError(f"cannot write {value!r} to models.toml")  # pragma: no cover - config.py allows no other types


def _free_space_check(folder: Path, needed: int) -> None:
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    if free < needed + 64 * 1024 * 1024:
        raise BundleError(f"{folder}: not enough free space ({human_size(free)} free, the bundle needs "
                          f"{human_size(needed)})")


def _private_mkdir(path: Path) -> None:
    """Create ``path`` and its missing parents owner-only (0700) under any umask, through the files gate; folders
    that already exist (the user's USB disk) are left as they are."""
    private_dir(path, parents=True, tighten=False)


def _open_regular(path: Path) -> IO[bytes]:
    """Open for reading only if it is (still) a regular file: O_NONBLOCK so that a FIFO swapped in after the
    scan cannot block, O_NOFOLLOW so that a link swapped in is not followed."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0)
                 | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
    except OSError:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def _is_within(inner: Path, outer: Path) -> bool:
    inner, outer = Path(os.path.realpath(inner)), Path(os.path.realpath(outer))
    return inner == outer or outer in inner.parents


def _link_problem(path: Path) -> str:
    """Why a symbolic link cannot be part of a bundle, in words."""
    try:
        os.stat(path)
    except FileNotFoundError:
        return "dangling symbolic link (its target does not exist)"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symbolic link loop"
        return f"symbolic link that cannot be followed ({exc.strerror})"
    return "symbolic link"


def _walk_files(root: Path) -> Iterator[tuple[Path, str]]:
    """(path, relative POSIX name) of every file under ``root``, sorted, following symbolic links.

    Why follow and why strict: a data folder that holds a symlinked subfolder must be carried whole, never
    silently thinned out; what cannot be carried (a dangling link, a link loop, a pipe, socket or device, an
    unreadable folder) is a BundleError naming it.
    """
    stack: list[tuple[Path, tuple[str, ...]]] = [(root, (os.path.realpath(root),))]
    while stack:
        folder, ancestors = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            raise BundleError(f"{folder}: cannot read the folder ({exc.strerror}); nothing was exported") from None
        subfolders = []
        for entry in entries:
            path = Path(entry.path)
            try:
                info = path.stat()
            except OSError:
                raise BundleError(f"{path}: {_link_problem(path)}; fix or remove it (nothing was exported)") \
                    from None
            if stat.S_ISDIR(info.st_mode):
                real = os.path.realpath(path)
                if real in ancestors:
                    raise BundleError(f"{path}: symbolic link loop (it points back to {real}); nothing was "
                                      "exported")
                subfolders.append((path, ancestors + (real,)))
            elif stat.S_ISREG(info.st_mode):
                yield path, path.relative_to(root).as_posix()
            else:
                raise BundleError(f"{path}: not a regular file (a pipe, socket or device); nothing was exported")
        stack.extend(reversed(subfolders))


# --------------------------------------------------------------------------------------------------- export


class _DirWriter:
    def __init__(self, root: Path):
        self.root = root
        _private_mkdir(root)

    def add(self, name: str, source: IO[bytes], size: int, reporter: Reporter) -> str:
        target = self.root / name
        _private_mkdir(target.parent)
        with create_private_file(target) as handle:
            digest, written = _copy_hashing(source, handle, reporter)
        if written != size:
            raise BundleError(f"{name}: the source changed while it was copied ({written} of {size} bytes)")
        return digest

    def close(self) -> None:
        pass


class _HashingReader:
    def __init__(self, handle: IO[bytes], reporter: Reporter):
        self.handle, self.reporter, self.digest = handle, reporter, hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.handle.read(size)
        self.digest.update(data)
        self.reporter.advance(len(data))
        return data


class _TarWriter:
    def __init__(self, path: Path):
        self.file = create_private_file(path)
        self.tar = tarfile.open(fileobj=self.file, mode="w", format=tarfile.PAX_FORMAT)

    def add(self, name: str, source: IO[bytes], size: int, reporter: Reporter) -> str:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = size, _FILE_MODE, int(datetime.now(timezone.utc).timestamp())
        reader = _HashingReader(source, reporter)
        self.tar.addfile(info, reader)  # type: ignore[arg-type]
        return reader.digest.hexdigest()

    def close(self) -> None:
        try:
            self.tar.close()
        finally:
            self.file.close()


@dataclass
class _Planned:
    name: str            # path inside the bundle
    source: Path
    size: int
    expected: str | None = None  # SHA-256 the file must have (lock or pin)
    what: str = ""


def _plan_tree(kind: str, paths: tuple[Path, ...], taken: set[str]) -> list[_Planned]:
    option = "--data" if kind == "data" else "--asset"
    planned = []
    for given in paths:
        try:
            info = given.stat()
        except OSError:
            raise BundleError(f"{option} {given}: " + ("not found" if not os.path.lexists(given)
                                                       else _link_problem(given))) from None
        top = f"{kind}/{given.resolve().name}"
        if top in taken:
            raise BundleError(f"{option} {given}: a second '{given.name}' would "
                              f"overwrite {top} in the bundle; rename one of them")
        taken.add(top)
        if stat.S_ISREG(info.st_mode):
            planned.append(_Planned(top, given, info.st_size, what=str(given)))
            continue
        if not stat.S_ISDIR(info.st_mode):
            raise BundleError(f"{option} {given}: not a regular file or folder (a pipe, socket or device)")
        for path, rel in _walk_files(given):
            planned.append(_Planned(f"{top}/{rel}", path, path.stat().st_size, what=str(path)))
    return planned


def _bundle_name(spec: ModelSpec, path: Path) -> str:
    source = spec.source
    if isinstance(source, (HubSource, PackageSource)):
        return PurePosixPath(source.file).name
    return path.name


def export_bundle(config: Config, specs: list[ModelSpec], pair_names: tuple[str, ...], data: tuple[Path, ...],
                  assets: tuple[Path, ...], target: Path, *, as_tar: bool = False,
                  reporter: Reporter | None = None) -> BundleSummary:
    """Write a bundle of ``specs`` (+ data and assets) to ``target`` (a new folder, or a .tar with ``as_tar``).

    Model files are checked against models.lock (or the sha256 pinned in models.toml) while they are copied: a
    corrupted source aborts the export. The bundle appears at ``target`` only when complete.
    """
    reporter = reporter or Reporter()
    if as_tar and target.suffix != ".tar":
        target = target.with_name(target.name + ".tar")
    if target.exists() and not (target.is_dir() and not as_tar and not any(target.iterdir())):
        raise BundleError(f"{target}: already exists; choose a new {'file' if as_tar else 'folder'}")
    for source in (*data, *assets):
        if source.is_dir() and _is_within(target.parent, source):
            raise BundleError(f"{target}: inside {source}, which the bundle carries; write the bundle "
                              "somewhere else")
    lock = read_lock(lock_path(config))  # beside models.toml; the shipped demo config: the user config folder

    # Retrieval arms travel as their model (added when not selected itself) plus their index file.
    arms = [spec for spec in specs if spec.is_arm]
    specs = [spec for spec in specs if not spec.is_arm]
    for arm in arms:
        if arm.base is not None and arm.base not in {spec.id for spec in specs}:
            specs.append(config.model(arm.base))
    # Plan: models (deduplicated by real path), then indexes, data and assets.
    planned: list[_Planned] = []
    bundled: dict[str, str] = {}   # model id -> bundle path
    by_real: dict[str, str] = {}   # real source path -> bundle path
    taken: set[str] = set()
    lock_out: dict[str, LockEntry] = {}
    for spec in specs:
        path = require(spec)
        verdict = verify(spec, lock.get(spec.id), config.path.parent, digest=None, stale_fails=False)
        entry, expected = verdict.lock, verdict.expected  # the copy is hashed against ``expected`` below
        real = os.path.realpath(path)
        if real in by_real:
            bundled[spec.id] = by_real[real]
        else:
            name = f"models/{_bundle_name(spec, path)}"
            if name in taken:
                name = f"models/{spec.id}--{_bundle_name(spec, path)}"
            taken.add(name)
            by_real[real] = bundled[spec.id] = name
            planned.append(_Planned(name, path, path.stat().st_size, expected, f"model '{spec.id}'"))
        origin = {**source_fields(spec, config.path.parent)}
        if entry and entry.get("commit"):
            origin["commit"] = entry["commit"]
        if entry and entry.get("package_version"):
            origin["package_version"] = entry["package_version"]
        lock_out[spec.id] = {"source": "path", "path": bundled[spec.id], "origin": origin}
    indexes = _plan_indexes(arms, taken)
    planned += list(indexes.values())
    planned += _plan_tree("data", data, taken)
    planned += _plan_tree("assets", assets, taken)
    total = sum(p.size for p in planned)
    _private_mkdir(target.parent)
    _free_space_check(target.parent, total)

    partial = target.parent / f".{target.name}.partial-{os.getpid()}"
    _remove(partial)
    writer: _DirWriter | _TarWriter = _TarWriter(partial) if as_tar else _DirWriter(partial)
    files: list[dict[str, Any]] = []
    done = False
    try:
        hashes: dict[str, str] = {}
        for item in planned:
            reporter.start(item.name, item.size)
            try:
                with open(item.source, "rb") as handle:
                    digest = writer.add(item.name, handle, item.size, reporter)
            except OSError as exc:
                raise BundleError(f"{item.source}: cannot copy into the bundle ({exc})") from None
            finally:
                reporter.end()
            if item.expected and digest != item.expected:
                raise ModelFileError(f"{item.what}: {item.source} has SHA-256 {digest}, but models.lock/models.toml "
                                     f"say {item.expected}; the file is corrupted, nothing was exported (pull it "
                                     "again, then export)")
            hashes[item.name] = digest
            files.append({"path": item.name, "size": item.size, "sha256": digest})
        for mid, entry in lock_out.items():
            name = entry["path"]
            entry["sha256"] = hashes[name]
            entry["size"] = next(f["size"] for f in files if f["path"] == name)
        environment = _environment()
        generated = {
            "models.toml": _render_config(config, specs, pair_names, lock_out,
                                          {arm.id: indexes[arm.id].name for arm in arms}).encode("utf-8"),
            LOCK_NAME: render_lock(lock_out).encode("utf-8"),
            "README.txt": _render_readme(lock_out, environment, data, assets).encode("utf-8"),
        }
        for name, content in generated.items():
            digest = writer.add(name, _BytesReader(content), len(content), Reporter())
            files.append({"path": name, "size": len(content), "sha256": digest})
        manifest = {
            "format": BUNDLE_FORMAT, "version": BUNDLE_VERSION,
            "created": datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
            "environment": environment,
            "models": {mid: lock_out[mid]["path"] for mid in sorted(lock_out)},
            "files": sorted(files, key=lambda f: f["path"]),
        }
        content = (json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")
        writer.add(MANIFEST, _BytesReader(content), len(content), Reporter())
        writer.close()
        if target.is_dir():
            target.rmdir()  # the empty folder the user named
        move_into_place(partial, target)
        done = True
    finally:
        if not done:
            try:
                writer.close()
            except (OSError, tarfile.TarError):
                pass
            _remove(partial)
    return BundleSummary(target, len(files), sum(f["size"] for f in files), {k: v["path"] for k, v in
                                                                                 lock_out.items()})


class _BytesReader:
    def __init__(self, data: bytes):
        self.data, self.offset = data, 0

    def read(self, size: int = -1) -> bytes:
        end = len(self.data) if size < 0 else self.offset + size
        chunk = self.data[self.offset:end]
        self.offset += len(chunk)
        return chunk


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink(missing_ok=True)
        except OSError:
            pass


def _plan_indexes(arms: list[ModelSpec], taken: set[str]) -> dict[str, _Planned]:
    """Arm id -> the planned copy of its retrieval index (``indexes/<file name>``; one copy per file). The index
    is not opened here (airgap/ sits below the store): the manifest's hash carries it intact, and a run checks
    its content identity when it opens it."""
    planned: dict[str, _Planned] = {}
    by_real: dict[str, _Planned] = {}
    for arm in arms:
        assert arm.retrieval is not None
        path = arm.retrieval.index
        if not path.is_file():
            raise BundleError(f"arm '{arm.id}': its index {path} is not a file (build it with 'medbench-local "
                              "index build ... --out' first)")
        real = os.path.realpath(path)
        if real not in by_real:
            name = f"indexes/{path.name}"
            if name in taken:
                name = f"indexes/{arm.id}--{path.name}"
            taken.add(name)
            by_real[real] = _Planned(name, path, path.stat().st_size, None, f"index of arm '{arm.id}'")
        planned[arm.id] = by_real[real]
    return planned


def _render_config(config: Config, specs: list[ModelSpec], pair_names: tuple[str, ...],
                   lock_out: dict[str, LockEntry], arm_indexes: dict[str, str] | None = None) -> str:
    raw = tomllib.loads(config.path.read_text(encoding="utf-8"))
    lines = [
        "# medbench-local model registry, written by 'medbench-local bundle export'.",
        f"# Exported from {config.path.resolve()} on {datetime.now(timezone.utc):%Y-%m-%d}.",
        "# Every model points to its file inside this bundle (paths are relative to this file) and is pinned",
        "# by sha256; where each file came from is recorded as \"origin\" in models.lock.",
        "",
    ]
    for spec in specs:
        body = dict(raw["models"][spec.id])
        origin = lock_out[spec.id]["origin"]
        lines.append(f"[models.{_toml_value(spec.id)}]")
        lines.append(f"# origin: {spec.source.describe()}" + (f" (commit {origin['commit']})"
                                                               if origin.get("commit") else ""))
        lines.append(f"path = {_toml_value(lock_out[spec.id]['path'])}")
        lines.append(f"sha256 = {_toml_value(lock_out[spec.id]['sha256'])}")
        for key, value in body.items():
            if key not in _SOURCE_KEYS:
                lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    arm_indexes = arm_indexes or {}
    for arm_id, index in arm_indexes.items():
        lines.append(f"[arms.{_toml_value(arm_id)}]")
        lines.append(f"index = {_toml_value(index)}")
        for key, value in dict(raw["arms"][arm_id]).items():
            if key != "index":
                lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    ids = {spec.id for spec in specs} | set(arm_indexes)
    pairs = [p for p in config.pairs.values() if p.name in pair_names or {p.biomedical, p.general} <= ids]
    for pair in pairs:
        lines.append(f"[pairs.{_toml_value(pair.name)}]")
        lines.append(f"biomedical = {_toml_value(pair.biomedical)}")
        lines.append(f"general = {_toml_value(pair.general)}")
        if pair.description:
            lines.append(f"description = {_toml_value(pair.description)}")
        lines.append("")
    return "\n".join(lines)


def _render_readme(lock_out: dict[str, LockEntry], environment: dict[str, str], data: tuple[Path, ...],
                   assets: tuple[Path, ...]) -> str:
    lines = [
        "medbench-local bundle",
        "=====================",
        "",
        "Install it on the air-gapped machine (every file is checked against MANIFEST.json first):",
        "",
        "    medbench-local bundle import <this folder or .tar> --to /path/to/new/folder",
        "    medbench-local doctor --config /path/to/new/folder/models.toml --offline",
        "",
        "Models:",
    ]
    for mid in sorted(lock_out):
        origin = lock_out[mid]["origin"]
        where = {"hf": lambda o: f"{o['repo']}/{o['file']}@{o.get('commit') or o['revision']}",
                 "package": lambda o: f"package {o['package']} {o.get('package_version', '')}".rstrip(),
                 "path": lambda o: f"file {o['path']}"}[origin["source"]](origin)
        lines.append(f"  {mid}: {lock_out[mid]['path']}  (from {where})")
    if data:
        lines += ["", "Task data (give it to 'run --data'):"] + [f"  data/{p.resolve().name}" for p in data]
    if assets:
        lines += ["", "Metric assets:"] + [f"  assets/{p.resolve().name}" for p in assets]
    lines += [
        "", "Software versions on the exporting machine (install the same versions on the air-gapped machine;",
        "the ICD-10-CM table used for code validity ships inside the simple-icd-10-cm package):",
    ] + [f"  {k}: {v}" for k, v in environment.items()] + [""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------- import
# Order of work on import (and verify, which is the same without writing):
# 1. the manifest is read first (from a folder, or by a first pass over a tar's headers) and checked;
# 2. every file of the bundle is compared with it by name and size *before* a byte is copied: unlisted files,
#    files of another size, duplicate or colliding names, links, pipes and devices are problems, not copies;
# 3. listed files are copied (or only hashed) with a byte counter that stops at the size the manifest
#    declares, so a compressed or growing file can never fill the disk beyond the bundle's announced size;
# 4. hashes are compared, then the bundled models.toml and models.lock are checked; only then is the staging
#    folder renamed into place.


def _parse_manifest(content: bytes, where: str) -> dict[str, Any]:
    try:
        manifest = json.loads(content.decode("utf-8"))
    except RecursionError:
        raise BundleError(f"{where}: {MANIFEST} is nested too deeply to be a manifest; nothing was installed") \
            from None
    except (UnicodeDecodeError, ValueError) as exc:
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise BundleError(f"{where}: {MANIFEST} is not valid JSON ({reason}); nothing was installed") from None
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{where}: not a medbench-local bundle ({MANIFEST} has no \"format\": "
                          f"\"{BUNDLE_FORMAT}\"); nothing was installed")
    if manifest.get("version") != BUNDLE_VERSION:
        raise BundleError(f"{where}: bundle version {manifest.get('version')!r} is not supported (this "
                          f"medbench-local reads version {BUNDLE_VERSION}); nothing was installed")
    files = manifest.get("files")
    if not isinstance(files, list):
        raise BundleError(f"{where}: {MANIFEST} has no file list; nothing was installed")
    if len(files) > MAX_BUNDLE_MEMBERS:
        raise BundleError(f"{where}: {MANIFEST} lists {len(files):,} files, more than the {MAX_BUNDLE_MEMBERS:,} "
                          "a bundle may hold; nothing was installed")
    seen: set[str] = set()
    for entry in files:
        ok = (isinstance(entry, dict) and isinstance(entry.get("path"), str) and isinstance(entry.get("size"), int)
              and not isinstance(entry.get("size"), bool) and entry["size"] >= 0
              and isinstance(entry.get("sha256"), str) and len(entry["sha256"]) == 64)
        if not ok or not _safe_relative(entry["path"]) or entry["path"] == MANIFEST or entry["path"] in seen \
                or _name_bytes(entry["path"]) > MAX_MEMBER_NAME_BYTES:
            path = entry.get("path") if isinstance(entry, dict) else None
            shown = _shown(path) if isinstance(path, str) else f"a {type(entry).__name__} without a valid path"
            raise BundleError(f"{where}: {MANIFEST} has an invalid or unsafe entry ({shown}); nothing was installed")
        seen.add(entry["path"])
    folders = {"/".join(name.split("/")[:i]) for name in seen for i in range(1, name.count("/") + 1)}
    clash = sorted(seen & folders)
    if clash:
        raise BundleError(f"{where}: {MANIFEST} lists {_shown(clash[0])} both as a file and as a folder; nothing was "
                          "installed")
    return manifest


def _check_destination(dest: Path) -> None:
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise BundleError(f"{dest}: already exists and is not an empty folder; import into a new folder "
                          "(nothing was installed)")


@dataclass
class _Scan:
    """A bundle looked at before copying: its manifest, the regular files it offers (name -> size, and for a
    folder the path), and the problems found on the way (one line each)."""

    source: Path
    manifest: dict[str, Any]
    offered: dict[str, int] = field(default_factory=dict)
    paths: dict[str, Path] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    refused: set[str] = field(default_factory=set)  # listed names already reported (not reported again as missing)
    is_tar: bool = False

    @property
    def listed(self) -> dict[str, dict[str, Any]]:
        return {entry["path"]: entry for entry in self.manifest["files"]}

    @property
    def total(self) -> int:
        return sum(entry["size"] for entry in self.manifest["files"])


@dataclass
class _Received:
    """What was copied (or hashed): relative name -> (sha256, size); plus the control files' bytes."""

    files: dict[str, tuple[str, int]] = field(default_factory=dict)
    control: dict[str, bytes] = field(default_factory=dict)


def _read_capped(handle: IO[bytes], limit: int) -> bytes | None:
    """At most ``limit`` bytes; None when there are more."""
    data = handle.read(limit + 1)
    return None if len(data) > limit else data


def _scan(source: Path) -> _Scan:
    if source.is_dir():
        return _scan_folder(source)
    try:
        info = source.stat()
    except FileNotFoundError:
        raise BundleError(f"{source}: not found") from None
    if stat.S_ISREG(info.st_mode):
        return _scan_tar(source)  # which says so when it is not a tar archive
    raise BundleError(f"{source}: {_NOT_A_TAR}; nothing was installed")


def _no_manifest(source: Path) -> BundleError:
    return BundleError(f"{source}: no {MANIFEST}: not a medbench-local bundle (or an incomplete copy); "
                       "nothing was installed")


def _scan_folder(source: Path) -> _Scan:
    path = source / MANIFEST
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise _no_manifest(source) from None
    except OSError as exc:
        raise BundleError(f"{source}: cannot read {MANIFEST} ({exc.strerror}); nothing was installed") from None
    if not stat.S_ISREG(info.st_mode):
        raise BundleError(f"{source}: {MANIFEST} is not a regular file; nothing was installed")
    try:
        with _open_regular(path) as handle:
            content = _read_capped(handle, MAX_MANIFEST_BYTES)
    except OSError as exc:
        raise BundleError(f"{source}: cannot read {MANIFEST} ({exc.strerror}); nothing was installed") from None
    if content is None:
        raise BundleError(f"{source}: {MANIFEST} is larger than {MAX_MANIFEST_BYTES:,} bytes; nothing was installed")
    scan = _Scan(source, _parse_manifest(content, str(source)))

    def unreadable(error: OSError) -> None:
        rel = Path(error.filename).relative_to(source).as_posix() if error.filename else "?"
        scan.problems.append(f"{_shown(rel)}: cannot read the folder ({error.strerror})")

    count = 0
    for folder, dirs, names in os.walk(source, onerror=unreadable):
        dirs.sort()
        for name in sorted(names) + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            count += 1
            if count > MAX_BUNDLE_MEMBERS:
                raise BundleError(f"{source}: more than {MAX_BUNDLE_MEMBERS:,} files; nothing was installed")
            entry = Path(folder) / name
            rel = entry.relative_to(source).as_posix()
            try:
                info = os.lstat(entry)
            except OSError as exc:
                scan.problems.append(f"{_shown(rel)}: cannot read ({exc.strerror})")
                continue
            if stat.S_ISLNK(info.st_mode):
                scan.problems.append(f"{_shown(rel)}: {_link_problem(entry)} (links are not allowed in a bundle)")
            elif not stat.S_ISREG(info.st_mode):
                scan.problems.append(f"{_shown(rel)}: not a regular file (a pipe, socket or device)")
            elif rel != MANIFEST:
                scan.offered[rel] = info.st_size
                scan.paths[rel] = entry
    return scan


# --------------------------------------------------------------------------------------------- reading archives
# The only place a tar file is opened for reading (see the module docstring). Two passes use it: _scan_tar reads
# headers and the manifest, _transfer reads the chosen members' data.

_NOT_A_TAR = "neither a bundle folder nor a .tar archive (.tar, .tar.gz, .tar.bz2 or .tar.xz)"
_COMPRESSIONS = ((b"\x1f\x8b", "gzip"), (b"BZh", "bzip2"), (b"\xfd7zXZ\x00", "xz"))
_INPUT_CHUNK = 256 * 1024
_LONG_NAME_TYPES = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)
_PAX_TYPES = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE)


class _Refused(tarfile.TarError):
    """The archive asks for more than a bundle may (a header's size, a chain of headers, a sparse member).

    A TarError that is not a HeaderError: tarfile passes it on instead of reading it as the archive's end."""


class _Damaged(tarfile.TarError):
    """The archive's bytes are broken: a decoder error of any kind, a damaged header, a truncated copy."""


class _CheckedTarInfo(tarfile.TarInfo):
    """tarfile's header parser with our limits, checked before any payload is read.

    ``_proc_member`` is tarfile's documented hook for subclasses: it sees each header after its 512 bytes are
    parsed and before the payload of a GNU long-name (``L``/``K``) or PAX (``x``/``g``) record is read, whose
    size the header's size field announces. A record above the cap is refused without reading it; so is a chain
    of more than ``MAX_EXTENDED_HEADERS`` such headers (tarfile follows them by recursion), more than
    ``MAX_GLOBAL_HEADERS`` global ones (they accumulate for the rest of the archive), a name or link target
    longer than ``MAX_MEMBER_NAME_BYTES``, and sparse members (whose maps tarfile reads without a bound; a
    bundle never has them). A damaged header after the first is an error here, where tarfile would silently
    take it for the end of the archive."""

    @classmethod
    def fromtarfile(cls, archive: tarfile.TarFile) -> tarfile.TarInfo:  # type: ignore[override]
        position = archive.fileobj.tell()  # type: ignore[union-attr]
        try:
            return super().fromtarfile(archive)
        except tarfile.EOFHeaderError:
            if position == archive.offset:
                raise  # the end-of-archive marker, where a member could begin
            raise _Damaged(f"the extended header at byte {archive.offset:,} is followed by the end of the archive") \
                from None
        except tarfile.EmptyHeaderError:
            if position == 0:
                raise  # an empty file: tarfile says so, and it is not a tar archive
            raise _Damaged("the archive ends without its end-of-archive marker (a truncated copy?)") from None
        except tarfile.HeaderError as exc:
            if position == 0:
                raise  # the very first block is no tar header: not a tar archive
            raise _Damaged(f"the header at byte {position:,} is damaged ({_first_line(exc)})") from None

    def _proc_member(self, archive: tarfile.TarFile) -> tarfile.TarInfo:  # type: ignore[override]
        if self.type == tarfile.GNUTYPE_SPARSE:
            raise _Refused(f"the member at byte {self.offset:,} is a sparse file, which a bundle never holds")
        if self.type not in _LONG_NAME_TYPES + _PAX_TYPES:
            return self._checked_names(super()._proc_member(archive))
        what, limit = (("a GNU long-name record", MAX_MEMBER_NAME_BYTES) if self.type in _LONG_NAME_TYPES
                       else ("a PAX header", MAX_EXTENDED_HEADER_BYTES))
        if self.size > limit:
            raise _Refused(f"the archive member at byte {self.offset:,} is {what} of {self.size:,} bytes, more "
                           f"than the {limit:,} allowed")
        depth = getattr(archive, "_medbench_depth", 0)
        if depth >= MAX_EXTENDED_HEADERS:
            raise _Refused(f"more than {MAX_EXTENDED_HEADERS} extended headers in a row (at byte {self.offset:,})")
        if self.type == tarfile.XGLTYPE:
            archive._medbench_globals = getattr(archive, "_medbench_globals", 0) + 1  # type: ignore[attr-defined]
            if archive._medbench_globals > MAX_GLOBAL_HEADERS:  # type: ignore[attr-defined]
                raise _Refused(f"more than {MAX_GLOBAL_HEADERS} PAX global headers (at byte {self.offset:,})")
        archive._medbench_depth = depth + 1  # type: ignore[attr-defined]
        try:
            return self._checked_names(super()._proc_member(archive))
        finally:
            archive._medbench_depth = depth  # type: ignore[attr-defined]

    def _checked_names(self, member: tarfile.TarInfo) -> tarfile.TarInfo:
        for what, value in (("name", member.name), ("link target", member.linkname)):
            size = _name_bytes(value)
            if size > MAX_MEMBER_NAME_BYTES:
                raise _Refused(f"the archive member at byte {member.offset:,} has a {what} of {size:,} bytes, more "
                               f"than the {MAX_MEMBER_NAME_BYTES:,} allowed ({_shown(value)})")
        return member

    def _refuse_sparse(self, *args: Any) -> None:
        raise _Refused(f"the member at byte {self.offset:,} is a sparse file, which a bundle never holds")

    _proc_sparse = _proc_gnusparse_00 = _proc_gnusparse_01 = _proc_gnusparse_10 = _refuse_sparse


class _Inflater:
    """zlib's gzip decoder behind the interface that bz2's and lzma's decoders share (eof, unused_data,
    needs_input, decompress(data, max_length)), so that one reader serves all three."""

    def __init__(self) -> None:
        self._zlib = zlib.decompressobj(16 + zlib.MAX_WBITS)

    @property
    def eof(self) -> bool:
        return self._zlib.eof

    @property
    def unused_data(self) -> bytes:
        return self._zlib.unused_data

    @property
    def needs_input(self) -> bool:
        return not self._zlib.unconsumed_tail

    def decompress(self, data: bytes, max_length: int) -> bytes:
        return self._zlib.decompress(self._zlib.unconsumed_tail + data, max_length)


def _decoder(kind: str) -> Any:
    if kind == "gzip":
        return _Inflater()
    if kind == "bzip2":
        return bz2.BZ2Decompressor()
    return lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=MAX_XZ_MEMORY)


class _Decompressed:
    """A gzip, bzip2 or xz file read forward, decompressed piece by piece: what tarfile reads a compressed
    archive from, instead of gzip/bz2/lzma's own file objects.

    Why our own: every read returns at most what was asked for (decoders are called with ``max_length``); an
    xz stream whose dictionary needs more than ``MAX_XZ_MEMORY`` is refused, not allocated; every failure of
    every decoder (zlib.error, lzma.LZMAError, OSError from bz2, EOFError, a stream that stops before its end
    marker) becomes one :class:`_Damaged` naming the compression. Concatenated streams (``pigz``, ``pbzip2``,
    ``xz -T``) and zero padding between them are read as one. Seeking goes forward only (by reading), which is
    all that tarfile's reading mode needs."""

    def __init__(self, raw: IO[bytes], kind: str) -> None:
        self.raw, self.kind = raw, kind
        self.decoder = _decoder(kind)
        self.pending = b""   # compressed bytes read, not yet given to the decoder (the start of the next stream)
        self.position = 0    # decompressed bytes delivered
        self.finished = False

    def read(self, size: int = -1) -> bytes:
        wanted = size if size is not None and size >= 0 else sys.maxsize
        parts: list[bytes] = []
        while wanted > 0 and not self.finished:
            chunk = self._decompress(min(wanted, _CHUNK))
            parts.append(chunk)
            wanted -= len(chunk)
        data = b"".join(parts)
        self.position += len(data)
        return data

    def _decompress(self, limit: int) -> bytes:
        try:
            return self._next(limit)
        except _Damaged:
            raise
        except lzma.LZMAError as exc:
            if "memory" in str(exc).lower():
                raise _Damaged(f"the xz data needs more than {human_size(MAX_XZ_MEMORY)} of memory to decompress "
                               "(no xz preset does)") from None
            raise _Damaged(f"the xz data is damaged ({_first_line(exc)})") from None
        except (zlib.error, OSError, EOFError, ValueError) as exc:
            raise _Damaged(f"the {self.kind} data is damaged ({_first_line(exc)})") from None

    def _next(self, limit: int) -> bytes:
        """Up to ``limit`` decompressed bytes; b"" with ``finished`` set at the end of the last stream."""
        while True:
            if self.decoder.eof and not self._next_stream():
                self.finished = True
                return b""
            data = b""
            if self.decoder.needs_input:
                data, self.pending = self.pending or self.raw.read(_INPUT_CHUNK), b""
                if not data:
                    out = self.decoder.decompress(b"", limit)  # what the decoder still holds, if anything
                    if out:
                        return bytes(out)
                    raise _Damaged(f"the {self.kind} data ends before its end marker (a truncated copy?)")
            out = self.decoder.decompress(data, limit)
            if out:
                return bytes(out)

    def _next_stream(self) -> bool:
        """After a stream's end: start the next one if more data follows (zero padding skipped)."""
        data = (self.decoder.unused_data + self.pending).lstrip(b"\0")
        while not data:
            more = self.raw.read(_INPUT_CHUNK)
            if not more:
                return False
            data = more.lstrip(b"\0")
        self.decoder, self.pending = _decoder(self.kind), data
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        target = offset + (self.position if whence == io.SEEK_CUR else 0)
        if whence == io.SEEK_END or target < self.position:
            raise _Damaged("the archive asks to be read backwards, which a compressed archive cannot be")
        while self.position < target and self.read(min(target - self.position, _CHUNK)):
            pass
        return self.position

    def seekable(self) -> bool:
        return True


def _compression(handle: IO[bytes]) -> str | None:
    magic = handle.read(6)
    handle.seek(0)
    return next((kind for prefix, kind in _COMPRESSIONS if magic.startswith(prefix)), None)


@contextmanager
def _reading_tar(source: Path, *, to_the_end: bool = False) -> Iterator[tarfile.TarFile]:
    """The archive at ``source`` opened for reading through our checks; every failure, at opening or while the
    caller iterates and reads, is one BundleError line naming the archive (tracebacks never).

    ``to_the_end``: after the caller is done, a compressed archive is read to the end of its last stream, so
    that the compression's own check (gzip's CRC-32, xz's and bzip2's block checks) is verified too: tarfile
    stops at the end-of-archive marker, before the trailer that holds it."""
    with ExitStack() as stack:
        try:
            raw = stack.enter_context(_open_regular(source))
            kind = _compression(raw)
        except OSError as exc:
            raise BundleError(f"{source}: cannot read ({exc.strerror or exc}); nothing was installed") from None
        stream: Any = raw if kind is None else _Decompressed(raw, kind)
        try:
            try:
                tar = tarfile.open(fileobj=stream, mode="r:", tarinfo=_CheckedTarInfo)
            except tarfile.ReadError:  # the first header (ours are TarErrors, never ReadErrors: they pass)
                what = f"a {kind} file that holds no tar archive" if kind else _NOT_A_TAR
                raise BundleError(f"{source}: {what}; nothing was installed") from None
            yield tar
            if to_the_end and isinstance(stream, _Decompressed):
                while stream.read(_CHUNK):
                    pass
        except _Refused as exc:
            raise BundleError(f"{source}: refused: {exc}; nothing was installed") from None
        except (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError, ValueError) as exc:
            raise BundleError(f"{source}: damaged archive ({_first_line(exc)}); nothing was installed") from None


def _member_name(member: tarfile.TarInfo) -> str:
    return member.name.removeprefix("./").rstrip("/")


def _scan_tar(source: Path) -> _Scan:
    """First pass over the archive: headers only (member data is skipped), the manifest read."""
    content: bytes | None = None
    offered: dict[str, int] = {}
    counts: dict[str, int] = {}
    problems: list[str] = []
    with _reading_tar(source) as tar:
        for index, member in enumerate(tar):
            if index >= MAX_BUNDLE_MEMBERS:
                raise BundleError(f"{source}: more than {MAX_BUNDLE_MEMBERS:,} archive members; nothing was "
                                  "installed")
            tar.members = []  # tarfile keeps every header it has seen: we keep our own small summary
            name = _member_name(member)
            if not name:
                continue
            if not _safe_relative(name):
                problems.append(f"{_shown(member.name)}: unsafe path in the archive")
                continue
            if member.isdir():
                continue
            if not member.isfile():
                problems.append(f"{_shown(name)}: not a regular file (links and devices are not allowed)")
                continue
            counts[name] = counts.get(name, 0) + 1
            if name == MANIFEST and counts[name] == 1:
                if member.size > MAX_MANIFEST_BYTES:
                    raise BundleError(f"{source}: {MANIFEST} is larger than {MAX_MANIFEST_BYTES:,} bytes; "
                                      "nothing was installed")
                handle = tar.extractfile(member)
                assert handle is not None
                content = handle.read()
            elif name != MANIFEST:
                offered[name] = member.size
    if content is None:
        raise _no_manifest(source)
    scan = _Scan(source, _parse_manifest(content, str(source)), is_tar=True)
    for name, count in sorted(counts.items()):
        if count > 1:
            scan.problems.append(f"{_shown(name)}: appears {count} times in the archive (which copy is meant?)")
            offered.pop(name, None)
            scan.refused.add(name)
    scan.problems[:0] = problems
    scan.offered = offered
    return scan


def _name_problems(names: list[str], folder: Path | None) -> dict[str, str]:
    """Names the file system at ``folder`` cannot hold as listed: too long, or equal but for case where the
    file system ignores case. Nothing is checked without a folder (verify only)."""
    if folder is None:
        return {}
    problems: dict[str, str] = {}
    try:
        name_max = os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        name_max = 255
    for name in names:
        longest = max(_name_bytes(part) for part in name.split("/"))
        if longest > name_max:
            problems[name] = (f"a name of {longest} bytes is too long for this file system (at most {name_max}; "
                              "ENAMETOOLONG)")
    if _ignores_case(folder):
        first: dict[str, str] = {}
        for name in sorted(names):
            other = first.setdefault(name.casefold(), name)
            if other != name:
                problems[name] = f"differs from {_shown(other)} only in case, and this file system ignores case"
    return problems


def _ignores_case(folder: Path) -> bool:
    probe = folder / ".Case-Probe"
    try:
        with create_private_file(probe):
            pass
        return os.path.exists(folder / ".case-probe")
    except OSError:
        return False
    finally:
        try:
            probe.unlink()
        except OSError:
            pass


def _select(scan: _Scan, staging: Path | None) -> list[str]:
    """The names to copy: offered, listed with the same size, and storable here; problems for the rest."""
    listed = scan.listed
    storable = _name_problems(sorted(listed), staging)
    for name, reason in sorted(storable.items()):
        scan.problems.append(f"{_shown(name)}: {reason}")
        scan.refused.add(name)
    chosen = []
    for name, size in sorted(scan.offered.items()):
        if name not in listed:
            scan.problems.append(f"{_shown(name)}: not listed in {MANIFEST} (added after export?)")
        elif size != listed[name]["size"]:
            scan.problems.append(f"{_shown(name)}: size {size:,} bytes, {MANIFEST} says {listed[name]['size']:,} "
                                 "(truncated or replaced)")
            scan.refused.add(name)
        elif name not in storable:
            chosen.append(name)
    return chosen


class _TooLarge(Exception):
    pass


def _copy_capped(source: IO[bytes], target: IO[bytes], limit: int, reporter: Reporter) -> tuple[str, int]:
    """Copy and hash at most ``limit`` bytes; _TooLarge as soon as the source offers more."""
    digest = hashlib.sha256()
    size = 0
    while chunk := source.read(min(_CHUNK, limit - size + 1)):
        size += len(chunk)
        if size > limit:
            raise _TooLarge()
        digest.update(chunk)
        target.write(chunk)
        reporter.advance(len(chunk))
    return digest.hexdigest(), size


def _stage(scan: _Scan, name: str, handle: IO[bytes], staging: Path | None, received: _Received,
           reporter: Reporter) -> None:
    limit = scan.listed[name]["size"]
    keep = name in _CONTROL_FILES and limit <= MAX_CONTROL_BYTES
    sink: IO[bytes] | _NullWriter
    target = staging / name if staging is not None else None
    reporter.start(name, limit)
    try:
        if target is not None:
            _private_mkdir(target.parent)
            sink = create_private_file(target)
        else:
            sink = _NullWriter()
        with sink:
            collector = _Collector(sink) if keep else sink
            received.files[name] = _copy_capped(handle, collector, limit, reporter)  # type: ignore[arg-type]
            if keep:
                received.control[name] = collector.data  # type: ignore[union-attr]
    except _TooLarge:
        scan.problems.append(f"{_shown(name)}: larger than the {limit:,} bytes {MANIFEST} declares (copying stopped "
                             "there)")
        scan.refused.add(name)
    except OSError as exc:
        reason = ("name too long for this file system (ENAMETOOLONG)" if exc.errno == errno.ENAMETOOLONG
                  else f"cannot be copied ({exc.strerror or exc})")
        scan.problems.append(f"{_shown(name)}: {reason}")
        scan.refused.add(name)
    finally:
        reporter.end()


class _NullWriter:
    def write(self, data: bytes) -> int:
        return len(data)

    def __enter__(self) -> _NullWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class _Collector:
    """Passes writes on and keeps a copy (for models.toml / models.lock, checked after hashing)."""

    def __init__(self, sink: Any):
        self.sink, self.parts = sink, []  # type: ignore[var-annotated]

    def write(self, data: bytes) -> int:
        self.parts.append(data)
        return int(self.sink.write(data))

    @property
    def data(self) -> bytes:
        return b"".join(self.parts)


def _transfer(scan: _Scan, staging: Path | None, reporter: Reporter) -> _Received:
    received = _Received()
    chosen = set(_select(scan, staging))
    if not scan.is_tar:
        for name in sorted(chosen):
            try:
                handle = _open_regular(scan.paths[name])
            except OSError as exc:
                scan.problems.append(f"{_shown(name)}: cannot read ({exc.strerror})")
                scan.refused.add(name)
                continue
            with handle:
                _stage(scan, name, handle, staging, received, reporter)
        return received
    # second pass over the archive: only the chosen members' data is read
    with _reading_tar(scan.source, to_the_end=True) as tar:
        for member in tar:
            tar.members = []
            name = _member_name(member)
            if name in chosen and member.isfile():
                handle = tar.extractfile(member)
                assert handle is not None
                _stage(scan, name, handle, staging, received, reporter)
    return received


def _compare(scan: _Scan, received: _Received) -> list[str]:
    problems = list(scan.problems)
    for name, entry in sorted(scan.listed.items()):
        got = received.files.get(name)
        if name in scan.refused:
            continue
        if got is None:
            problems.append(f"{_shown(name)}: missing (listed in {MANIFEST})")
        elif got[1] != entry["size"]:
            problems.append(f"{_shown(name)}: size {got[1]:,} bytes, {MANIFEST} says {entry['size']:,} (truncated or "
                            "replaced)")
        elif got[0] != entry["sha256"]:
            problems.append(f"{_shown(name)}: SHA-256 mismatch ({got[0][:16]}…, {MANIFEST} says "
                            f"{entry['sha256'][:16]}…): "
                            "the file is corrupted or was modified")
    return problems


def _check_bundled_config(scan: _Scan, received: _Received) -> None:
    """A bundle's models.toml must describe only what the bundle carries: every model a relative ``path`` to
    a file listed in the manifest, with that file's sha256, every retrieval arm an ``index`` listed there. Anything else (a path outside the bundle, a Hugging
    Face or package source, a missing or different hash) would make the air-gapped machine run something that
    was never verified; it is refused here, as is a models.toml that does not load or a broken models.lock."""
    where = f"{scan.source}: the bundle's models.toml"
    content = received.control.get("models.toml")
    if "models.toml" in scan.listed and content is None:
        raise BundleError(f"{where} is larger than {MAX_CONTROL_BYTES:,} bytes; nothing was installed")
    if content is not None:
        try:
            text = content.decode("utf-8")
            raw = tomllib.loads(text)
            config = parse_config(raw, scan.source / "models.toml", text)
        except UserError as exc:
            raise BundleError(f"{where} is invalid ({exc}); nothing was installed") from None
        except (ValueError, RecursionError) as exc:  # TOML syntax, encoding, absurd nesting or numbers
            reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc).splitlines()[0][:200]
            raise BundleError(f"{where} does not parse ({reason}); nothing was installed") from None
        listed = scan.listed
        for mid, spec in config.models.items():
            if spec.is_arm:  # an arm's model is checked as a model; its index must be a file the bundle carries
                index = raw["arms"][mid].get("index")
                if not isinstance(index, str) or not _safe_relative(index) or index not in listed:
                    raise BundleError(f"{where}: arm '{mid}' must point to an index inside the bundle (index = "
                                      f"\"indexes/<file>\", listed in {MANIFEST}); nothing was installed")
                continue
            body = raw["models"][mid]
            relative = body.get("path")
            if not isinstance(spec.source, LocalSource) or not isinstance(relative, str) \
                    or not _safe_relative(relative) or relative not in listed:
                raise BundleError(f"{where}: model '{mid}' must point to a file inside the bundle (path = "
                                  f"\"models/<file>\", listed in {MANIFEST}), found {spec.source.describe()}; "
                                  "nothing was installed")
            if spec.sha256 is None:
                raise BundleError(f"{where}: model '{mid}' carries no sha256; nothing was installed")
            if spec.sha256 != listed[relative]["sha256"]:
                raise BundleError(f"{where}: model '{mid}' pins sha256 {spec.sha256[:16]}…, but {relative} has "
                                  f"{listed[relative]['sha256'][:16]}… in {MANIFEST}; nothing was installed")
    lock = received.control.get(LOCK_NAME)
    if LOCK_NAME in scan.listed and lock is None:
        raise BundleError(f"{scan.source}: the bundle's {LOCK_NAME} is larger than {MAX_CONTROL_BYTES:,} bytes; "
                          "nothing was installed")
    if lock is not None:
        try:
            document = json.loads(lock.decode("utf-8"))
        except (ValueError, RecursionError):
            document = None
        if not isinstance(document, dict) or not isinstance(document.get("models"), dict):
            raise BundleError(f"{scan.source}: the bundle's {LOCK_NAME} is not a valid lock file; nothing was "
                              "installed")


def _verified(scan: _Scan, staging: Path | None, reporter: Reporter) -> None:
    received = _transfer(scan, staging, reporter)
    problems = _compare(scan, received)
    if problems:
        raise BundleError(_problem_text(scan.source, problems, installed=False))
    _check_bundled_config(scan, received)


def verify_bundle(source: Path, reporter: Reporter | None = None) -> dict[str, Any]:
    """Check every file of a bundle against its manifest without installing anything. Raises BundleError."""
    scan = _scan(source)
    _verified(scan, None, reporter or Reporter())
    return scan.manifest


def _problem_text(source: Path, problems: list[str], *, installed: bool) -> str:
    """The problems, one line each, the first ``MAX_PROBLEMS_SHOWN`` of them: an archive of 100,000 unlisted
    members is one short message, not 100,000 lines."""
    head = f"{source}: {len(problems):,} file{'s' if len(problems) != 1 else ''} failed verification"
    tail = "nothing was installed" if not installed else ""
    shown = [f"  ✗ {p}" for p in problems[:MAX_PROBLEMS_SHOWN]]
    if len(problems) > MAX_PROBLEMS_SHOWN:
        shown.append(f"  … and {len(problems) - MAX_PROBLEMS_SHOWN:,} more")
    return "\n".join([head + (f"; {tail}" if tail else ""), *shown])


def _staging_prefix(dest: Path) -> str:
    return f".{dest.name}.importing-"


def _clean_stale_staging(dest: Path) -> list[str]:
    """Remove staging folders that an interrupted (killed) import into ``dest`` left behind; refuse when one
    belongs to an import that is still running. Returns what was removed, for the report.

    How we tell them apart: a running import holds an exclusive lock (flock) on its staging folder; the
    kernel releases it when the process dies, however it dies."""
    removed: list[str] = []
    parent = dest.parent
    if not parent.is_dir():
        return removed
    for entry in sorted(parent.iterdir()):
        if not entry.name.startswith(_staging_prefix(dest)) or entry.is_symlink() or not entry.is_dir():
            continue
        if fcntl is None:
            raise BundleError(f"{entry}: left by an earlier import into {dest}; delete it, then import again")
        try:
            fd = os.open(entry, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise BundleError(f"{dest}: another import into this folder is running ({entry} is in use); wait for "
                              "it to finish (nothing was installed)") from None
        try:
            shutil.rmtree(entry)
        except OSError as exc:
            raise BundleError(f"{entry}: left by an interrupted import and cannot be removed ({exc.strerror}); "
                              "delete it, then import again") from None
        finally:
            os.close(fd)
        removed.append(str(entry))
    return removed


def import_bundle(source: Path, dest: Path, reporter: Reporter | None = None) -> BundleSummary:
    """Verify every file of the bundle at ``source`` while copying it, then install it at ``dest`` atomically.

    Files are copied into a temporary folder beside ``dest`` (same file system, owner-only), hashed as they
    are written and compared with MANIFEST.json; only when every file matches (and no unlisted file is present)
    is the folder renamed to ``dest``. Otherwise the temporary folder is deleted and BundleError lists each bad
    file. A staging folder left by a killed import is removed first (and reported in the summary).
    """
    reporter = reporter or Reporter()
    source, dest = source.resolve(), dest.resolve()
    if _is_within(dest, source):
        raise BundleError(f"{dest}: inside the bundle {source}; import into a folder outside it (nothing was "
                          "installed)")
    _check_destination(dest)
    cleaned = _clean_stale_staging(dest)
    scan = _scan(source)
    _private_mkdir(dest.parent)
    _free_space_check(dest.parent, scan.total)
    staging = dest.parent / f"{_staging_prefix(dest)}{os.getpid()}"
    _remove(staging)
    private_dir(staging)
    lock_fd = os.open(staging, os.O_RDONLY)
    if fcntl is not None:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    done = False
    try:
        _verified(scan, staging, reporter)
        with create_private_file(staging / MANIFEST) as handle:
            handle.write((json.dumps(scan.manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
                         .encode("utf-8"))
        _check_destination(dest)  # again: something may have appeared while we copied
        if dest.exists():
            dest.rmdir()
        move_into_place(staging, dest)
        done = True
    finally:
        os.close(lock_fd)
        if not done:
            _remove(staging)
    files = scan.manifest["files"]
    return BundleSummary(dest, len(files), sum(f["size"] for f in files), dict(scan.manifest.get("models", {})),
                         cleaned)
