"""SHA-256 of model files, cached by the file's identity and change stamps.

Why: model identity is the file's content hash (a fine-tune re-uploaded under the same name must not reuse
old results), but hashing 40 GB on every run is minutes of wasted disk I/O. The cache is a small owner-only
JSON file next to the user's other medbench-local state (written through gates/files.py). An entry is valid
only while the file's device, inode, size, mtime *and ctime* are unchanged: mtime can be set back with
``touch -d`` after a byte was swapped, but ctime changes with every write and cannot be set by a user, so a
rewritten model is hashed again (``doctor`` and ``run`` then see the swap).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ..gates.files import OutputError, atomic_write, private_dir, read_input

_CHUNK = 8 * 1024 * 1024


def cache_dir() -> Path:
    base = os.environ.get("MEDBENCH_LOCAL_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "medbench-local")
    return Path(base)


def sha256_file(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_stamp(path: Path) -> list[int]:
    """What must be unchanged for a cached hash to stay valid: device, inode, size, mtime and ctime."""
    info = path.stat()
    return [info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns]


def _read_cache(cache_file: Path) -> dict:  # type: ignore[type-arg]
    """The cache, or an empty one when it is missing, damaged, not a regular file or absurdly large."""
    try:
        cache = json.loads(read_input(cache_file, OSError, max_bytes=64 * 1024 * 1024).decode("utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    return cache if isinstance(cache, dict) else {}


def cached_sha256(path: Path | str, cache_file: Path | None = None) -> str:
    """Hash ``path``, reusing a previous result while the file's identity and change stamps are unchanged."""
    path = Path(path).resolve()
    cache_file = cache_file or cache_dir() / "sha256-cache.json"
    key = str(path)
    stamp = file_stamp(path)
    cache = _read_cache(cache_file)
    entry = cache.get(key)
    if isinstance(entry, dict) and entry.get("stamp") == stamp and isinstance(entry.get("sha256"), str):
        return entry["sha256"]
    digest = sha256_file(path)
    if file_stamp(path) != stamp:
        return digest  # the file changed while we read it: do not vouch for this hash next time
    cache[key] = {"stamp": stamp, "sha256": digest}
    try:
        private_dir(cache_file.parent, parents=True)
        atomic_write(cache_file, json.dumps(cache, indent=1, sort_keys=True), updating=True)
    except (OSError, OutputError):
        pass  # a read-only home (or a cache path that is not ours) only costs us a re-hash next time
    return digest
