"""Bundles: everything an air-gapped machine needs for a run, in one folder (or one .tar) with a manifest.

Layout of a bundle (paths relative to its root; the same inside a .tar, without a top-level folder)::

    MANIFEST.json        every other file's relative path, size and SHA-256, plus versions (see below)
    README.txt           what is inside and how to import it
    models.toml          the selected models and pairs, rewritten: path = "models/<file>", sha256 filled in
    models.lock          their lock entries (source "path"), each with the "origin" it was pulled from
    models/<file>.gguf   the GGUF files (a name clash gets the model id as prefix: models/<id>--<file>)
    data/<name>          task data files or folders given with --data
    assets/<name>        metric assets given with --asset (BERTScore / UMLS folders, ...)

Why a manifest with hashes: a bundle travels on USB disks and through file transfer tools that can truncate or
flip bytes silently. ``bundle import`` copies every file into a temporary folder beside the destination while
hashing it, compares *every* file with the manifest (and refuses files the manifest does not list), and only
then renames the folder into place in one step. On any mismatch the temporary folder is removed and nothing is
installed.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import IO, Any

from .. import __version__
from ..config import Config, HubSource, ModelSpec, PackageSource, load_config
from ..errors import ModelFileError, UserError
from ..modelfiles.lock import LOCK_NAME, LockEntry, lock_path, read_lock, render_lock, source_fields, stale_reason
from ..modelfiles.resolve import require

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

MANIFEST = "MANIFEST.json"
BUNDLE_FORMAT = "medbench-local.bundle"
BUNDLE_VERSION = 1
_CHUNK = 8 * 1024 * 1024
_SOURCE_KEYS = ("path", "repo", "file", "revision", "package", "sha256")


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


def _safe_relative(name: str) -> bool:
    """A manifest/tar path may only point inside the bundle: relative, POSIX, no '..', no empty parts."""
    if not name or name.startswith("/") or "\\" in name or ":" in name.split("/")[0]:
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
        raise BundleError(f"{folder}: not enough free space ({free / 1e9:,.1f} GB free, the bundle needs "
                          f"{needed / 1e9:,.1f} GB)")


def _walk_files(root: Path) -> Iterator[tuple[Path, str]]:
    """(absolute path, relative POSIX name) of every regular file under ``root``, sorted."""
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            path = Path(folder) / name
            yield path, path.relative_to(root).as_posix()


# --------------------------------------------------------------------------------------------------- export


class _DirWriter:
    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True)

    def add(self, name: str, source: IO[bytes], size: int, reporter: Reporter) -> str:
        target = self.root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as handle:
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
        self.tar = tarfile.open(path, "w", format=tarfile.PAX_FORMAT)

    def add(self, name: str, source: IO[bytes], size: int, reporter: Reporter) -> str:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = size, 0o644, int(datetime.now(timezone.utc).timestamp())
        reader = _HashingReader(source, reporter)
        self.tar.addfile(info, reader)  # type: ignore[arg-type]
        return reader.digest.hexdigest()

    def close(self) -> None:
        self.tar.close()


@dataclass
class _Planned:
    name: str            # path inside the bundle
    source: Path
    size: int
    expected: str | None = None  # SHA-256 the file must have (lock or pin)
    what: str = ""


def _plan_tree(kind: str, paths: tuple[Path, ...], taken: set[str]) -> list[_Planned]:
    planned = []
    for given in paths:
        if not given.exists():
            raise BundleError(f"--{'data' if kind == 'data' else 'asset'} {given}: not found")
        top = f"{kind}/{given.resolve().name}"
        if top in taken:
            raise BundleError(f"--{'data' if kind == 'data' else 'asset'} {given}: a second '{given.name}' would "
                              f"overwrite {top} in the bundle; rename one of them")
        taken.add(top)
        if given.is_file():
            planned.append(_Planned(top, given, given.stat().st_size, what=str(given)))
            continue
        for path, rel in _walk_files(given):
            if path.is_file():
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
    lock = read_lock(lock_path(config))  # beside models.toml; the shipped demo config: the user config folder

    # Plan: models (deduplicated by real path), then data and assets.
    planned: list[_Planned] = []
    bundled: dict[str, str] = {}   # model id -> bundle path
    by_real: dict[str, str] = {}   # real source path -> bundle path
    taken: set[str] = set()
    lock_out: dict[str, LockEntry] = {}
    for spec in specs:
        path = require(spec)
        entry = lock.get(spec.id)
        if entry is not None and stale_reason(entry, spec, config.path.parent):
            entry = None
        expected = entry["sha256"] if entry else spec.sha256
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
    planned += _plan_tree("data", data, taken)
    planned += _plan_tree("assets", assets, taken)
    total = sum(p.size for p in planned)
    target.parent.mkdir(parents=True, exist_ok=True)
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
            "models.toml": _render_config(config, specs, pair_names, lock_out).encode("utf-8"),
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
        os.replace(partial, target)
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
        path.unlink(missing_ok=True)


def _render_config(config: Config, specs: list[ModelSpec], pair_names: tuple[str, ...],
                   lock_out: dict[str, LockEntry]) -> str:
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
    ids = {spec.id for spec in specs}
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


def _parse_manifest(content: bytes, where: str) -> dict[str, Any]:
    try:
        manifest = json.loads(content.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BundleError(f"{where}: {MANIFEST} is not valid JSON ({exc}); nothing was installed") from None
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{where}: not a medbench-local bundle ({MANIFEST} has no \"format\": "
                          f"\"{BUNDLE_FORMAT}\"); nothing was installed")
    if manifest.get("version") != BUNDLE_VERSION:
        raise BundleError(f"{where}: bundle version {manifest.get('version')!r} is not supported (this "
                          f"medbench-local reads version {BUNDLE_VERSION}); nothing was installed")
    files = manifest.get("files")
    if not isinstance(files, list):
        raise BundleError(f"{where}: {MANIFEST} has no file list; nothing was installed")
    seen: set[str] = set()
    for entry in files:
        ok = (isinstance(entry, dict) and isinstance(entry.get("path"), str) and isinstance(entry.get("size"), int)
              and isinstance(entry.get("sha256"), str) and len(entry["sha256"]) == 64)
        if not ok or not _safe_relative(entry["path"]) or entry["path"] == MANIFEST or entry["path"] in seen:
            raise BundleError(f"{where}: {MANIFEST} has an invalid or unsafe entry {entry!r}; nothing was installed")
        seen.add(entry["path"])
    return manifest


def _check_destination(dest: Path) -> None:
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise BundleError(f"{dest}: already exists and is not an empty folder; import into a new folder "
                          "(nothing was installed)")


@dataclass
class _Received:
    """What was copied into the staging folder: relative name -> (sha256, size), plus problems on the way."""

    files: dict[str, tuple[str, int]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    manifest: bytes | None = None


def _receive_folder(source: Path, staging: Path | None, reporter: Reporter) -> _Received:
    received = _Received()
    for folder, dirs, names in os.walk(source):
        dirs.sort()
        for name in sorted(names) + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            path = Path(folder) / name
            rel = path.relative_to(source).as_posix()
            if path.is_symlink() or not path.is_file():
                received.problems.append(f"{rel}: not a regular file (links are not allowed in a bundle)")
                continue
            if rel == MANIFEST:
                received.manifest = path.read_bytes()
                continue
            size = path.stat().st_size
            reporter.start(rel, size)
            try:
                with open(path, "rb") as handle:
                    received.files[rel] = _stage(handle, rel, staging, reporter)
            except OSError as exc:
                received.problems.append(f"{rel}: cannot read ({exc.strerror or exc})")
            finally:
                reporter.end()
    return received


def _receive_tar(source: Path, staging: Path | None, reporter: Reporter) -> _Received:
    received = _Received()
    try:
        with tarfile.open(source, "r:*") as tar:
            for member in tar:
                name = member.name.removeprefix("./").rstrip("/")
                if not name:
                    continue
                if not _safe_relative(name):
                    received.problems.append(f"{member.name}: unsafe path in the archive")
                    continue
                if member.isdir():
                    continue
                if not member.isfile():
                    received.problems.append(f"{name}: not a regular file (links and devices are not allowed)")
                    continue
                handle = tar.extractfile(member)
                assert handle is not None
                if name == MANIFEST:
                    received.manifest = handle.read()
                    continue
                reporter.start(name, member.size)
                try:
                    received.files[name] = _stage(handle, name, staging, reporter)
                finally:
                    reporter.end()
    except (tarfile.TarError, EOFError) as exc:
        received.problems.append(f"{source.name}: damaged archive ({exc})")
    return received


def _stage(handle: IO[bytes], rel: str, staging: Path | None, reporter: Reporter) -> tuple[str, int]:
    if staging is None:  # verify only
        digest, size = _copy_hashing(handle, _NullWriter(), reporter)
        return digest, size
    target = staging / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "wb") as out:
        return _copy_hashing(handle, out, reporter)


class _NullWriter:
    def write(self, data: bytes) -> int:
        return len(data)


def _compare(manifest: dict[str, Any], received: _Received) -> list[str]:
    problems = list(received.problems)
    listed = {entry["path"]: entry for entry in manifest["files"]}
    for name, entry in sorted(listed.items()):
        got = received.files.get(name)
        if got is None:
            problems.append(f"{name}: missing (listed in {MANIFEST})")
        elif got[1] != entry["size"]:
            problems.append(f"{name}: size {got[1]:,} bytes, {MANIFEST} says {entry['size']:,} (truncated or "
                            "replaced)")
        elif got[0] != entry["sha256"]:
            problems.append(f"{name}: SHA-256 mismatch ({got[0][:16]}…, {MANIFEST} says {entry['sha256'][:16]}…): "
                            "the file is corrupted or was modified")
    for name in sorted(set(received.files) - set(listed)):
        problems.append(f"{name}: not listed in {MANIFEST} (added after export?)")
    return problems


def _receive(source: Path, staging: Path | None, reporter: Reporter) -> tuple[dict[str, Any], list[str]]:
    if source.is_dir():
        if (source / MANIFEST).is_file():  # fail fast on a bad manifest, before copying gigabytes
            _parse_manifest((source / MANIFEST).read_bytes(), str(source))
        received = _receive_folder(source, staging, reporter)
    elif source.is_file() and tarfile.is_tarfile(source):
        received = _receive_tar(source, staging, reporter)
    elif source.exists():
        raise BundleError(f"{source}: neither a bundle folder nor a .tar archive; nothing was installed")
    else:
        raise BundleError(f"{source}: not found")
    if received.manifest is None:
        raise BundleError(f"{source}: no {MANIFEST}: not a medbench-local bundle (or an incomplete copy); "
                          "nothing was installed")
    manifest = _parse_manifest(received.manifest, str(source))
    return manifest, _compare(manifest, received)


def verify_bundle(source: Path, reporter: Reporter | None = None) -> dict[str, Any]:
    """Check every file of a bundle against its manifest without installing anything. Raises BundleError."""
    manifest, problems = _receive(source, None, reporter or Reporter())
    if problems:
        raise BundleError(_problem_text(source, problems, installed=False))
    return manifest


def _problem_text(source: Path, problems: list[str], *, installed: bool) -> str:
    head = f"{source}: {len(problems)} file{'s' if len(problems) != 1 else ''} failed verification"
    tail = "nothing was installed" if not installed else ""
    return "\n".join([head + (f"; {tail}" if tail else ""), *(f"  ✗ {p}" for p in problems)])


def import_bundle(source: Path, dest: Path, reporter: Reporter | None = None) -> BundleSummary:
    """Verify every file of the bundle at ``source`` while copying it, then install it at ``dest`` atomically.

    Files are copied into a temporary folder beside ``dest`` (same file system), hashed as they are written and
    compared with MANIFEST.json; only when every file matches (and no unlisted file is present) is the folder
    renamed to ``dest``. Otherwise the temporary folder is deleted and BundleError lists each bad file.
    """
    reporter = reporter or Reporter()
    source, dest = source.resolve(), dest.resolve()
    _check_destination(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    _free_space_check(dest.parent, source.stat().st_size if source.is_file() else
                      sum(p.stat().st_size for p, _ in _walk_files(source)) if source.is_dir() else 0)
    staging = dest.parent / f".{dest.name}.importing-{os.getpid()}"
    _remove(staging)
    staging.mkdir()
    done = False
    try:
        manifest, problems = _receive(source, staging, reporter)
        if problems:
            raise BundleError(_problem_text(source, problems, installed=False))
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n",
                                        encoding="utf-8")
        if (staging / "models.toml").is_file():
            try:
                load_config(staging / "models.toml")
            except UserError as exc:
                raise BundleError(f"{source}: the bundle's models.toml is invalid ({exc}); nothing was installed") \
                    from None
        _check_destination(dest)  # again: something may have appeared while we copied
        if dest.exists():
            dest.rmdir()
        os.replace(staging, dest)
        done = True
    finally:
        if not done:
            _remove(staging)
    files = manifest["files"]
    return BundleSummary(dest, len(files), sum(f["size"] for f in files), dict(manifest.get("models", {})))
