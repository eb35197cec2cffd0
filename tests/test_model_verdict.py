"""One model-file verdict (``modelfiles.verify``) for every situation a file can be in, and the callers that
phrase it (``models verify``, ``doctor``, ``run``'s pre-flight) agree on which files are acceptable."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from medbench_local.config import load_config
from medbench_local.modelfiles import verify
from medbench_local.modelfiles.hashing import sha256_file
from medbench_local.modelfiles.lock import source_fields
from medbench_local.modelfiles.verdict import (
    FAILURES,
    LOCK_MISMATCH,
    MISSING,
    PIN_MISMATCH,
    SIZE,
    STALE_LOCK,
    UNVERIFIABLE,
)

CONTENT = b"GGUF" + bytes(range(256)) * 4
DIGEST = hashlib.sha256(CONTENT).hexdigest()


def _spec(folder: Path, *, pin: str | None = None, name: str = "m.gguf"):  # type: ignore[no-untyped-def]
    extra = f'sha256 = "{pin}"\n' if pin else ""
    config = folder / "models.toml"
    config.write_text(f'[models.m]\nrole = "biomedical"\npath = "{folder / name}"\nn_ctx = 512\n{extra}',
                      encoding="utf-8")
    return load_config(config).models["m"]


def _lock(spec, folder: Path, *, sha: str = DIGEST, size: int = len(CONTENT)):  # type: ignore[no-untyped-def]
    return {**source_fields(spec, folder), "sha256": sha, "size": size}


# (situation, file content or None, models.toml pin, lock entry maker, expected problem, reference held to)
CASES = [
    ("locked and pinned", CONTENT, DIGEST, lambda s, f: _lock(s, f), None, "models.lock"),
    ("locked only", CONTENT, None, lambda s, f: _lock(s, f), None, "models.lock"),
    ("pinned only", CONTENT, DIGEST, None, None, "models.toml"),
    ("neither", CONTENT, None, None, UNVERIFIABLE, None),
    ("missing file", None, DIGEST, None, MISSING, "models.toml"),
    ("stale lock beats a missing file", None, None,
     lambda s, f: {**_lock(s, f), "path": "elsewhere.gguf"}, STALE_LOCK, None),
    ("stale lock", CONTENT, None, lambda s, f: {**_lock(s, f), "path": "elsewhere.gguf"}, STALE_LOCK, None),
    ("size differs from lock", CONTENT, None, lambda s, f: _lock(s, f, size=1), SIZE, "models.lock"),
    ("hash differs from lock", CONTENT, None, lambda s, f: _lock(s, f, sha="0" * 64), LOCK_MISMATCH, "models.lock"),
    ("hash differs from pin", CONTENT, "f" * 64, None, PIN_MISMATCH, "models.toml"),
    ("matches lock, not pin", CONTENT, "f" * 64, lambda s, f: _lock(s, f), PIN_MISMATCH, "models.toml"),
]


@pytest.mark.parametrize("situation,content,pin,lock,problem,reference", CASES, ids=[c[0] for c in CASES])
def test_verdict_for_every_situation(tmp_path: Path, situation: str, content: bytes | None, pin: str | None,
                                     lock, problem: str | None, reference: str | None) -> None:  # type: ignore[no-untyped-def]
    if content is not None:
        (tmp_path / "m.gguf").write_bytes(content)
    spec = _spec(tmp_path, pin=pin)
    entry = lock(spec, tmp_path) if lock else None
    verdict = verify(spec, entry, tmp_path, digest=sha256_file)
    assert (verdict.problem, verdict.reference) == (problem, reference), situation
    assert verdict.ok == (problem not in FAILURES)
    if verdict.sha256 is not None:
        assert verdict.sha256 == DIGEST
    if problem == STALE_LOCK:
        assert "models.toml now says" in verdict.detail and verdict.lock is None


def test_a_stale_lock_entry_is_only_ignored_when_asked(tmp_path: Path) -> None:
    """run and bundle fall back to the models.toml pin when models.lock was made for another source."""
    (tmp_path / "m.gguf").write_bytes(CONTENT)
    spec = _spec(tmp_path, pin=DIGEST)
    stale = {**_lock(spec, tmp_path, sha="0" * 64), "path": "elsewhere.gguf"}
    assert verify(spec, stale, tmp_path, digest=sha256_file).problem == STALE_LOCK
    lenient = verify(spec, stale, tmp_path, digest=sha256_file, stale_fails=False)
    assert lenient.ok and lenient.lock is None and lenient.reference == "models.toml"


def test_without_a_digest_nothing_is_read(tmp_path: Path) -> None:
    (tmp_path / "m.gguf").write_bytes(CONTENT)
    spec = _spec(tmp_path)
    verdict = verify(spec, _lock(spec, tmp_path, sha="0" * 64), tmp_path, digest=None)
    assert verdict.ok and verdict.sha256 is None and verdict.expected == "0" * 64  # bundle hashes while copying
