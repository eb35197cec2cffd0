"""``medbench-local export``: per-item or aggregated results as CSV or JSONL, for analysis elsewhere.

Why CSV cells are neutralised: a cell starting with ``=``, ``+``, ``-`` or ``@`` (or a tab or carriage return)
is executed as a formula when the file is opened in a spreadsheet, and model outputs are text we do not
control (``=HYPERLINK("http://...?"&A1)`` would send a neighbouring cell away). Following OWASP's advice such
cells get a leading single quote, which spreadsheets show as text. JSONL stays verbatim (it is for programs).

Which rows (one per item, or compare's numbers with ``--aggregate``) is analysis/export.py's; this command turns
options into that call and writes the rows: every column of every row, in first-seen order, in CSV and JSONL
alike.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import IO, Any

import click

from ..api import results
from ..gates.files import atomic_open, check_output_target, database_files
from .common import db_option, pair_options, split_commas, task_option
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


def _write(rows: list[dict[str, Any]], fmt: str, handle: IO[str]) -> None:
    columns = list(rows[0]) if rows else []  # results() gives every row every column, in first-seen order
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
    rows = results(db_path, aggregate=aggregate, pairs=pair_filter, models=model_pair, tasks=task_ids,
                   model_ids=model_filter, omit_inputs=omit_inputs, config=config_path, resamples=resamples, seed=seed)
    if out_path is None:
        _write(rows, fmt, sys.stdout)
        return
    with atomic_open(out_path, "w", protect=database_files(db_path)) as handle:
        _write(rows, fmt, handle)
    count = len(rows)
    click.echo(f"wrote {count} row{'' if count == 1 else 's'} to {out_path}", err=True)
