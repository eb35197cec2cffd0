"""The data's identity: what ``load_tasks`` records as ``data_sha256`` (inputs.py), and what the fingerprint
older versions computed is built from (legacy.py)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from ..modelfiles.hashing import sha256_file


def data_fingerprint(path: Path) -> str:
    """The data's identity: a single file's own SHA-256; for a folder, SHA-256 over every file in it (relative
    names + contents).

    Why in the evaluation identity: results on the bundled sample and on the real file, or on a file edited
    in place, must never be averaged together. Why a file's bare content hash: renaming or moving a file does
    not change its data, so it must not start a new evaluation, and anyone can check it with ``sha256sum``.
    ``--limit`` does not change it, so a partial run resumes.
    """
    if path.is_file():
        return sha256_file(path)
    return folder_fingerprint(path)


def folder_fingerprint(path: Path) -> str:
    """SHA-256 over every file of a folder: relative names and contents, in name order."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode() + b"\0")
        digest.update(sha256_file(file).encode() + b"\0")
    return digest.hexdigest()
