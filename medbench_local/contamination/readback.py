"""The stored probe of a pair on a task, as ``compare`` shows it: the shifts and the items flagged.

Which probes: for the pair's two models and the task, the newest biomedical probe, and the newest general probe
with the same settings (probe and text versions, k, control, seed: everything but the engine). Probes stored under
other settings are not mixed. ``FLAG_SIGNAL`` decides which items ``compare --exclude-flagged`` leaves out:
Min-K%, the signal that separated the planted set best with both demo models (docs/contamination.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlite_utils

from ..store import contamination as stored
from .summary import SignalShift, pair_shifts

FLAG_SIGNAL = "min_k"


@dataclass(frozen=True)
class PairProbe:
    pair: str
    task: str
    settings: dict[str, Any]
    shifts: tuple[SignalShift, ...]

    @property
    def flagged(self) -> frozenset[str]:
        """Item ids flagged on ``FLAG_SIGNAL``."""
        return frozenset(next((s.flagged for s in self.shifts if s.signal == FLAG_SIGNAL), ()))

    def shift(self, signal: str) -> SignalShift | None:
        return next((s for s in self.shifts if s.signal == signal), None)


def _settings(identity: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in identity.items() if k != "engine"}


def pair_probe(db: sqlite_utils.Database, pair: str, biomedical: str, general: str, task: str, *,
               resamples: int = 10_000, seed: int = 0, found: list[dict[str, Any]] | None = None) -> PairProbe | None:
    """The pair's probe on ``task`` (module docstring), or None when none is stored."""
    rows = [p for p in (stored.probes(db) if found is None else found) if p["task"] == task]
    bio = [p for p in rows if p["model_id"] == biomedical]
    if not bio:
        return None
    latest = bio[-1]
    settings = _settings(latest["identity"])
    gen = [p for p in rows if p["model_id"] == general and _settings(p["identity"]) == settings]
    if not gen:
        return None
    shifts = pair_shifts(stored.read_signals(db, latest["key"]), stored.read_signals(db, gen[-1]["key"]),
                         paired=settings.get("control") == "rewrite", resamples=resamples, seed=seed)
    return PairProbe(pair, task, settings, tuple(shifts))


def flagged_keys(db: sqlite_utils.Database, probe: PairProbe) -> frozenset[str]:
    """The items.key values of the task's items whose id the probe flagged."""
    return frozenset(key for key, item_id in stored.item_ids(db, probe.task).items() if item_id in probe.flagged)
