"""SHA-256 of model files, cached by (path, size, mtime).

Why: model identity is the file's content hash (a fine-tune re-uploaded under the same name must not reuse
old results), but hashing 40 GB on every run is minutes of wasted disk I/O. The cache is a small JSON file
next to the user's other medbench-local state; a changed size or mtime invalidates the entry.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

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


def cached_sha256(path: Path | str, cache_file: Path | None = None) -> str:
    """Hash ``path``, reusing a previous result when its size and mtime are unchanged."""
    path = Path(path).resolve()
    stat = path.stat()
    cache_file = cache_file or cache_dir() / "sha256-cache.json"
    key = str(path)
    stamp = [stat.st_size, stat.st_mtime_ns]
    try:
        cache = json.loads(cache_file.read_text(encoding="utf-8"))
        if not isinstance(cache, dict):
            cache = {}
    except (OSError, ValueError):
        cache = {}
    entry = cache.get(key)
    if isinstance(entry, dict) and entry.get("stamp") == stamp and isinstance(entry.get("sha256"), str):
        return entry["sha256"]
    digest = sha256_file(path)
    cache[key] = {"stamp": stamp, "sha256": digest}
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(cache, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, cache_file)
    except OSError:
        pass  # a read-only home only costs us a re-hash next time
    return digest
