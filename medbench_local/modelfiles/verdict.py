"""One verdict on one configured model file: is it there, and is it the file that models.lock / models.toml say?

Why one function: ``run``'s pre-flight, ``doctor``, ``bundle`` and ``models verify`` each used to decide this
themselves (which reference wins, when a models.lock entry no longer applies, when the size already proves a
change), and the answers drifted. ``verify`` decides once; callers only phrase the verdict for their audience
(a one-line refusal, a checklist line, a ✓/✗ row) and keep their own wording.

The order of the checks is the order of their cost: the file's presence, whether the models.lock entry was
made for today's models.toml source (a stale entry is reported and not used as a reference), the size
against models.lock (a stat, no read), then the SHA-256 (every byte, or the hash cache) against models.lock,
else against models.toml's ``sha256`` pin; a file that matches models.lock must also match a pin.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..config import ModelSpec
from ..errors import UserError
from .hashing import cached_sha256
from .lock import LockEntry, stale_reason
from .resolve import require

# Verdict problems, from the cheapest check to the most expensive.
MISSING = "missing"              # no file for the model (``detail``: the resolver's one line)
STALE_LOCK = "stale-lock"        # models.lock's entry was made for another source (``detail``: how it differs)
SIZE = "size"                    # the size differs from models.lock's
LOCK_MISMATCH = "lock-mismatch"  # the SHA-256 differs from models.lock's
PIN_MISMATCH = "pin-mismatch"    # the SHA-256 differs from models.toml's pin
UNVERIFIABLE = "unverifiable"    # neither models.lock nor models.toml has a hash for it (a warning, not a failure)

FAILURES = (MISSING, STALE_LOCK, SIZE, LOCK_MISMATCH, PIN_MISMATCH)


@dataclass(frozen=True)
class Verdict:
    """What ``verify`` found. ``expected``/``reference``: the hash the file is held to and where it comes from
    (``models.lock`` or ``models.toml``; None when neither has one). ``lock``: the models.lock entry when it
    applies to today's source (None when absent or stale). ``sha256`` is None when hashing was not asked for or
    not reached."""

    model_id: str
    path: Path | None = None
    size: int | None = None
    sha256: str | None = None
    expected: str | None = None
    reference: str | None = None
    lock: LockEntry | None = None
    problem: str | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.problem not in FAILURES


Digest = Callable[[Path], str]


def verify(spec: ModelSpec, lock_entry: LockEntry | None, config_dir: Path, *, digest: Digest | None = cached_sha256,
           stale_fails: bool = True) -> Verdict:
    """The verdict on ``spec``'s file (see the module docstring).

    ``digest``: how to hash (the cached hash by default; a full re-hash with progress for ``models verify``;
    None to skip hashing, for callers that hash while copying, like ``bundle``). ``stale_fails``: whether a
    models.lock entry made for another source is a failure (``doctor``, ``models verify``) or is just not used
    (``run`` and ``bundle`` fall back to the models.toml pin).
    """
    stale = stale_reason(lock_entry, spec, config_dir) if lock_entry is not None else None
    lock = lock_entry if stale is None else None
    expected, reference = (lock["sha256"], "models.lock") if lock is not None else \
        ((spec.sha256, "models.toml") if spec.sha256 else (None, None))
    base = Verdict(spec.id, expected=expected, reference=reference, lock=lock)
    try:
        path: Path | None = require(spec)
    except UserError as exc:
        path, missing = None, str(exc)
    if path is not None:
        base = _with(base, path=path, size=path.stat().st_size)
    if stale is not None and stale_fails:  # models.toml changed: say so first, whatever the file
        return _with(base, problem=STALE_LOCK, detail=stale)
    if path is None:
        return _with(base, problem=MISSING, detail=missing)
    size = path.stat().st_size
    if lock is not None and size != lock["size"]:
        return _with(base, problem=SIZE, detail=f"{size:,} bytes, models.lock says {lock['size']:,}")
    if digest is None:
        return _with(base, problem=None if expected else UNVERIFIABLE)
    sha256 = digest(path)
    base = _with(base, sha256=sha256)
    if lock is not None and sha256 != lock["sha256"]:
        return _with(base, problem=LOCK_MISMATCH)
    if spec.sha256 and sha256 != spec.sha256:
        return _with(base, problem=PIN_MISMATCH, expected=spec.sha256, reference="models.toml")
    return _with(base, problem=None if expected else UNVERIFIABLE)


def _with(verdict: Verdict, **changes: object) -> Verdict:
    from dataclasses import replace

    return replace(verdict, **changes)  # type: ignore[arg-type]
