"""The rows ``export`` writes: one per item of each evaluation (with the pair and role that compare it), or
``compare``'s numbers as flat rows (``--aggregate``).

Why flat rows: a spreadsheet or ``pandas.read_csv`` cannot filter on JSON inside a cell, so every metric is a
column of its own (``metric_<name>``; the union over the rows, empty where a row has no such metric). The
aggregate numbers are ``compare``'s own (``analysis.paired.compare_pairs``), never recomputed another way. How
the rows are written (CSV with formula-like cells neutralised, or JSONL) is the command's business
(cli/export.py).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import sqlite_utils

from ..gates.stored import load_metrics
from ..store.queries import INPUT_COLUMNS, evaluation_keys, model_tasks, summarize_evaluation
from ..store.queries import item_rows as stored_item_rows
from ..tasks.base import OUTCOMES
from .pair_sources import PairSource
from .paired import MetricComparison, PairReport, compare_pairs
from .pairing import pair_evaluations, pairing_columns


def compared_roles(db: sqlite_utils.Database, pair_list: Sequence[PairSource]) -> dict[str, list[tuple[str, str]]]:
    """Evaluation key -> [(pair name, role)] for every evaluation that ``compare`` compares in these pairs
    (the pairing rule of analysis/pairing.py; superseded evaluations are not compared)."""
    ran = model_tasks(db)
    found: dict[str, list[tuple[str, str]]] = {}
    for pair in pair_list:
        tasks = {t for m, t in ran if m == pair.biomedical} & {t for m, t in ran if m == pair.general}
        for task in sorted(tasks):
            for group in pair_evaluations(db, pair.biomedical, pair.general, task)[0]:
                found.setdefault(group.biomedical, []).append((pair.name, "biomedical"))
                found.setdefault(group.general, []).append((pair.name, "general"))
    return found


def _keep(model_id: str, task: str, models: Collection[str], tasks: Collection[str]) -> bool:
    return (not models or model_id in models) and (not tasks or task in tasks)


def item_rows(db: sqlite_utils.Database, pair_list: Sequence[PairSource], only_pairs: bool, models: Collection[str],
               tasks: Collection[str], omit_inputs: bool) -> list[dict[str, Any]]:
    """One row per item of an evaluation, and per pair that compares the evaluation (pair, role); evaluations no
    pair compares appear once with an empty pair and their stored role, unless pairs were asked for."""
    roles = compared_roles(db, pair_list)
    data = pairing_columns(db, pair_list)
    rows: list[dict[str, Any]] = []
    for item in stored_item_rows(db):
        score_row = item.pop("score_row")
        if not _keep(item["model_id"], item["task"], models, tasks):
            continue
        metrics = load_metrics(item.pop("metrics"), score_row)
        stored_role = item.pop("evaluation_role")
        if omit_inputs:
            for column in INPUT_COLUMNS:
                item.pop(column, None)
        where = data.get(item["evaluation"], {})
        sides: list[tuple[str | None, str]] = list(roles.get(item["evaluation"], []))
        if not sides and not only_pairs:
            sides = [(None, stored_role)]
        for pair, role in sides:
            rows.append({"pair": pair, "role": role, **item, "data_name": where.get("data_name"),
                         "data_sha256": where.get("data_sha256"),
                         **{f"metric_{name}": value for name, value in metrics.items()}})
    return rows


def _group_columns(row: MetricComparison) -> dict[str, Any]:
    return {"task": row.task, "data_name": None if row.data is None else row.data.name,
            "data_sha256": None if row.data is None else row.data.sha256,
            "scoring_mode": "generate" if row.data is None else row.data.mode,
            "different_data": row.different_data}


def comparison_rows(reports: list[PairReport]) -> list[dict[str, Any]]:
    """compare's numbers as flat rows: per pair x role x task x data x mode, each metric's estimate with its 95%
    CI ("model" rows); per pair x task x data x mode, each metric's difference with its CI, test, p-values (numbers,
    unrounded, for analysis) and compare's verdict in words ("delta")."""
    rows: list[dict[str, Any]] = []
    for report in reports:
        groups: dict[tuple[str, str, str], list[MetricComparison]] = {}
        for row in report.rows:
            groups.setdefault((row.group_label, row.evaluations["biomedical"], row.evaluations["general"]),
                              []).append(row)
        for group in groups.values():
            first = group[0]
            for role, model in (("biomedical", report.biomedical_model), ("general", report.general_model)):
                line: dict[str, Any] = {"row": "model", "pair": report.pair, "role": role, "model_id": model,
                                        "evaluation": first.evaluations[role], **_group_columns(first),
                                        "n": max(r.n for r in group)}
                for r in group:
                    interval = getattr(r, role)
                    line.update({f"metric_{r.metric}": interval.estimate, f"metric_{r.metric}_ci_low": interval.low,
                                 f"metric_{r.metric}_ci_high": interval.high, f"metric_{r.metric}_n": r.n})
                line.update({f"n_{k}": first.outcomes.get(role, {}).get(k, 0) for k in OUTCOMES})
                line["truncated_rate"] = first.truncated_rate.get(role)
                rows.append(line)
            delta: dict[str, Any] = {"row": "delta", "pair": report.pair, "biomedical_model": report.biomedical_model,
                                     "general_model": report.general_model,
                                     "biomedical_evaluation": first.evaluations["biomedical"],
                                     "general_evaluation": first.evaluations["general"], **_group_columns(first),
                                     "n": max(r.n for r in group)}
            for r in group:
                delta.update({f"delta_{r.metric}": r.delta.estimate, f"delta_{r.metric}_ci_low": r.delta.low,
                              f"delta_{r.metric}_ci_high": r.delta.high, f"delta_{r.metric}_n": r.n,
                              f"delta_{r.metric}_test": r.test, f"delta_{r.metric}_p": r.p_value,
                              f"delta_{r.metric}_p_adjusted": r.p_adjusted,
                              f"delta_{r.metric}_ahead": r.ahead, f"delta_{r.metric}_verdict": r.verdict})
            rows.append(delta)
    return rows


def aggregate_rows(db: sqlite_utils.Database, pair_list: Sequence[PairSource], only_pairs: bool,
                    models: Collection[str], tasks: Collection[str], resamples: int, seed: int) -> list[dict[str, Any]]:
    reports = compare_pairs(db, pair_list, task_filter=tuple(tasks), resamples=resamples, seed=seed)
    rows = [row for row in comparison_rows(reports)
            if not models or {row.get("model_id"), row.get("biomedical_model"), row.get("general_model")} & set(models)]
    pairing = pairing_columns(db, pair_list)  # the same pairing rule as compare: data, pair, counterpart, status
    compared = compared_roles(db, pair_list)
    for key in evaluation_keys(db):
        s = summarize_evaluation(db, key)
        if not _keep(s.model_id, s.task, models, tasks) or (only_pairs and key not in compared):
            continue
        where = pairing.get(key, {})
        role = next((r for name, r in compared.get(key, []) if name == where.get("pair")), None)
        rows.append({"row": "evaluation", "role": role, "model_id": s.model_id, "model_sha256": s.model_sha256, "task": s.task,
                     "evaluation": s.key, "n": s.n, **{f"metric_{k}": v for k, v in s.metrics.items()},
                     **{f"n_{k}": s.outcomes.get(k, 0) for k in OUTCOMES}, **where})
    return rows
