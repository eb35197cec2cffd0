"""``medbench-local export``: per-item or aggregated results as CSV or JSONL, for analysis elsewhere."""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path
from typing import IO, Any

import click

from ..analysis.pairing import pairing_columns
from ..store import open_database
from ..store.queries import INPUT_COLUMNS, evaluation_keys, item_rows, summarize_evaluation
from ..tasks.base import OUTCOMES
from .common import db_option


def _aggregate_rows(db_path: Path) -> list[dict[str, Any]]:
    db = open_database(db_path, create=False)
    try:
        rows = []
        pairing = pairing_columns(db)  # the same pairing rule as compare: data, pair, counterpart, status
        for key in evaluation_keys(db):
            s = summarize_evaluation(db, key)
            rows.append({"model_id": s.model_id, "model_sha256": s.model_sha256, "task": s.task,
                         "evaluation": s.key, "n": s.n, **{f"metric_{k}": v for k, v in s.metrics.items()},
                         **{f"n_{k}": s.outcomes.get(k, 0) for k in OUTCOMES}, **pairing.get(key, {})})
        return rows
    finally:
        db.conn.close()


def _item_rows(db_path: Path, omit_inputs: bool) -> list[dict[str, Any]]:
    db = open_database(db_path, create=False)
    try:
        rows = item_rows(db)
    finally:
        db.conn.close()
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
        writer.writerow({k: json.dumps(v) if isinstance(v, dict) else v for k, v in row.items()})


@click.command("export")
@db_option
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), default="csv", show_default=True)
@click.option("--aggregate", is_flag=True, help="One row per evaluation (n, metrics, outcome counts, data name "
                                                "and SHA-256, and how compare pairs it: pair, paired_with, "
                                                "pairing) instead of one row per item.")
@click.option("--omit-inputs", is_flag=True, help="Leave the rendered prompts (which contain the case text) out.")
@click.option("-o", "--output", "out_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write to this file (created owner-only) instead of standard output.")
def export_command(db_path: Path, fmt: str, aggregate: bool, omit_inputs: bool, out_path: Path | None) -> None:
    """Export results per item (default) or aggregated, as CSV or JSONL.

    \b
    Examples:
      medbench-local export --db results.db -o items.csv
      medbench-local export --db results.db --format jsonl --omit-inputs -o outputs.jsonl
      medbench-local export --db results.db --aggregate
    """
    rows = _aggregate_rows(db_path) if aggregate else _item_rows(db_path, omit_inputs)
    if out_path is None:
        _write(rows, fmt, sys.stdout)
        return
    fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
        _write(rows, fmt, handle)
    click.echo(f"wrote {len(rows)} rows to {out_path}", err=True)
