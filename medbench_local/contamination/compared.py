"""The contamination probes beside a comparison: which compared (pair, task) has a stored probe, and with
``exclude_flagged`` every row recomputed without the probe's flagged items.

Why here and not in the command: ``compare`` (CLI and Python API alike, api.compare) and ``report`` show the same
probes and the same recomputed deltas; the read side computes them once (analysis/ cannot import the probe, which
sits above it, so the probe's read-back joins the comparison here).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlite_utils

from ..analysis.pair_sources import PairSource
from ..analysis.paired import MetricComparison, PairReport, compare_pairs
from ..store.contamination import probes
from .readback import FLAG_SIGNAL, PairProbe, flagged_keys, pair_probe


@dataclass
class Contamination:
    """The stored contamination probes of the compared pairs, and with --exclude-flagged the rows recomputed
    without the flagged items."""

    probes: dict[tuple[str, str], PairProbe] = field(default_factory=dict)
    excluded: dict[tuple[str, str, str], MetricComparison] = field(default_factory=dict)  # (pair, group, metric)
    exclude_flagged: bool = False


def pair_probes(db: sqlite_utils.Database, reports: Sequence[PairReport], *, resamples: int, seed: int
                ) -> dict[tuple[str, str], PairProbe]:
    """(pair, task) -> the pair's stored contamination probe of that task, for every compared task that has one."""
    found: dict[tuple[str, str], PairProbe] = {}
    stored_probes = probes(db)
    if not stored_probes:
        return found
    for report in reports:
        for task in dict.fromkeys(row.task for row in report.rows):
            probe = pair_probe(db, report.pair, report.biomedical_model, report.general_model, task,
                               resamples=resamples, seed=seed, found=stored_probes)
            if probe is not None:
                found[(report.pair, task)] = probe
    return found


def contamination_of(db: sqlite_utils.Database, pairs: Sequence[PairSource], reports: Sequence[PairReport], *,
                     task_filter: Sequence[str], resamples: int, seed: int, allow_different_data: bool,
                     exclude_flagged: bool) -> Contamination:
    """The probes of the compared pairs; with ``exclude_flagged``, every row recomputed on the unflagged items."""
    found = Contamination(pair_probes(db, reports, resamples=resamples, seed=seed), exclude_flagged=exclude_flagged)
    if exclude_flagged and found.probes:
        exclude = {key: flagged_keys(db, probe) for key, probe in found.probes.items()}
        for report in compare_pairs(db, pairs, task_filter=tuple(task_filter), resamples=resamples, seed=seed,
                                    allow_different_data=allow_different_data, exclude=exclude):
            for row in report.rows:
                found.excluded[(report.pair, row.group_label, row.metric)] = row
    return found


def row_json(report: PairReport, row: MetricComparison, found: Contamination) -> dict[str, Any]:
    """compare's JSON row, with the pair's contamination probe of the task when one is stored, and with
    --exclude-flagged the Δ on the items not flagged."""
    data: dict[str, Any] = dict(row.to_json())
    probe = found.probes.get((report.pair, row.task))
    if probe is not None:
        data["contamination"] = {
            "settings": probe.settings, "flag_signal": FLAG_SIGNAL, "flagged": sorted(probe.flagged),
            "shifts": {s.signal: {"shift": s.shift, "ci_low": s.low, "ci_high": s.high, "p_value": s.p_value,
                                  "items": s.n_items} for s in probe.shifts}}
    if found.exclude_flagged:
        other = found.excluded.get((report.pair, row.group_label, row.metric))
        data["excluding_flagged"] = None if other is None else {
            "n": other.n, "delta": other.delta.estimate, "delta_low": other.delta.low,
            "delta_high": other.delta.high, "p_value": other.p_value}
    return data


def excluded_rows(found: Contamination) -> Mapping[tuple[str, str, str], MetricComparison] | None:
    return found.excluded if found.exclude_flagged else None
