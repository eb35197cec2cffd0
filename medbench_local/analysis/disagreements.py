"""Where two evaluations of the same items disagree: a pair's two models (``show``, the HTML report's examples)
or one model's two scoring modes (``show --model``).

Why here, in analysis/: which items count as a disagreement (the discordant items behind McNemar; for continuous
metrics the largest differences first) and which evaluations are compared (the pairing rule of
analysis/pairing.py) decide what ``show`` and ``report`` put in front of a reader; both commands call these
functions and only print.
"""

from __future__ import annotations

from typing import Any

import sqlite_utils

from ..errors import UserError
from ..gates.stored import load_metrics
from ..store.queries import answers_by_item, latest_evaluation
from .pair_sources import PairSource, database_pairs
from .pairing import PairedEvaluations, pair_evaluations


def _side(db: sqlite_utils.Database, evaluation: str) -> dict[str, dict[str, Any]]:
    return answers_by_item(db, evaluation)


def paired_group(db: sqlite_utils.Database, pair: PairSource | str, task: str, data: str | None = None,
                 mode: str = "generate") -> tuple[PairedEvaluations, list[PairedEvaluations]]:
    """The (task, data) row group of ``compare`` in scoring ``mode`` to inspect: the one whose data name or hash
    prefix is ``data``, else the newest; plus all groups of the task in that mode. One line, exit 1, when the
    pairing rule pairs nothing. ``pair``: as the read commands select it (analysis.pair_sources), or the name of
    a pair recorded in the database."""
    if isinstance(pair, str):
        found_pair = next((p for p in database_pairs(db) if p.name == pair), None)
        if found_pair is None:
            raise UserError(f"no pair '{pair}' in this database (run it first, or see 'compare')")
        pair = found_pair
    pair_name = pair.name
    groups, notes = pair_evaluations(db, pair.biomedical, pair.general, task)
    groups = [g for g in groups if g.data.mode == mode]
    if not groups:
        reason = notes[0].text if notes else (f"pair '{pair_name}' has no results of both models on task '{task}'"
                                              + (f" with --scoring {mode}" if mode != "generate" else ""))
        raise UserError(reason)
    if data is None:
        return groups[0], groups
    found = [g for g in groups if data in (g.data.name, g.data.short) or
             (len(data) >= 6 and (g.data.sha256 or "").startswith(data))]
    if not found:
        raise UserError(f"task '{task}' of pair '{pair_name}' has no paired results on data '{data}'; paired on: "
                        + ", ".join(g.data.short for g in groups))
    return found[0], groups


def disagreements_between(db: sqlite_utils.Database, biomedical: str, general: str, metric: str | None = None
                          ) -> list[tuple[float, dict[str, Any], dict[str, Any]]]:
    """Items both evaluations answered where they differ: (|difference|, first row, second row), largest
    first. For a binary metric that is every item one model got right and the other wrong."""
    first, second = _side(db, biomedical), _side(db, general)
    if metric is not None:
        present = sorted({name for side in (first, second) for row in side.values()
                          for name in load_metrics(row["metrics"], row["generation_id"])})
        if metric not in present:
            raise UserError(f"unknown metric '{metric}' for these results (metrics: {', '.join(present) or 'none'})")
    found = []
    for item, b in first.items():
        g = second.get(item)
        if g is None:
            continue
        mb, mg = load_metrics(b["metrics"], b["generation_id"]), load_metrics(g["metrics"], g["generation_id"])
        name = metric or next(iter(mb), None)
        if name is None or name not in mb or name not in mg:
            continue
        difference = abs(float(mb[name]) - float(mg[name]))
        if difference > 0:
            found.append((difference, b, g))
    return sorted(found, key=lambda entry: -entry[0])


def mode_disagreements(db: sqlite_utils.Database, model_id: str, task: str, modes: tuple[str, str],
                       metric: str | None = None) -> list[tuple[float, dict[str, Any], dict[str, Any]]]:
    """The same model's two scoring modes on the same items (e.g. extraction vs likelihood): where they differ."""
    keys = [latest_evaluation(db, model_id, task, mode) for mode in modes]
    missing = [mode for mode, key in zip(modes, keys) if not key]
    if missing:
        raise UserError(f"model '{model_id}' has no {missing[0]} results on task '{task}' (run it with "
                        f"--scoring {'both' if set(modes) == {'generate', 'loglik'} else missing[0]})")
    return disagreements_between(db, keys[0] or "", keys[1] or "", metric)


def disagreements(db: sqlite_utils.Database, pair_name: str, task: str, metric: str | None = None,
                  data: str | None = None) -> list[tuple[float, dict[str, Any], dict[str, Any]]]:
    """The disagreements within the evaluations ``compare`` pairs for this pair, task and data."""
    group, _ = paired_group(db, pair_name, task, data)
    return disagreements_between(db, group.biomedical, group.general, metric)
