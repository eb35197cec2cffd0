"""``medbench-local compare``: each pair's biomedical and general model side by side, per task."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import sqlite_utils
from rich.table import Table

from ..store import open_database
from ..store.queries import EvaluationSummary, latest_evaluation, pairs, summarize_evaluation, tasks_for
from .common import DEFAULT_DB, stdout


def comparison_rows(db_path: Path, pair_filter: tuple[str, ...] = (), task_filter: tuple[str, ...] = ()
                    ) -> list[dict[str, Any]]:
    """One row per (pair, task) with both models' summaries, recomputed from the per-item scores."""
    db = open_database(db_path, create=False)
    try:
        return _rows(db, pair_filter, task_filter)
    finally:
        db.conn.close()


def _rows(db: sqlite_utils.Database, pair_filter: tuple[str, ...], task_filter: tuple[str, ...]
          ) -> list[dict[str, Any]]:
    rows = []
    for pair in pairs(db):
        if pair_filter and pair["name"] not in pair_filter:
            continue
        for task in tasks_for(db, [pair["biomedical"], pair["general"]]):
            if task_filter and task not in task_filter:
                continue
            sides: dict[str, EvaluationSummary | None] = {}
            for role in ("biomedical", "general"):
                key = latest_evaluation(db, pair[role], task)
                sides[role] = summarize_evaluation(db, key) if key else None
            rows.append({"pair": pair["name"], "task": task, **sides})
    return rows


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def _side_json(side: EvaluationSummary | None) -> dict[str, Any] | None:
    if side is None:
        return None
    return {"model": side.model_id, "model_sha256": side.model_sha256, "evaluation": side.key, "n": side.n,
            "metrics": side.metrics, "outcomes": side.outcomes}


@click.command("compare")
@click.option("--db", "db_path", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_DB,
              show_default=True, help="SQLite results database written by 'run'.")
@click.option("--pair", "pair_filter", multiple=True, metavar="NAME", help="Only these pairs (repeatable).")
@click.option("--task", "task_filter", multiple=True, metavar="TASK", help="Only these tasks (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def compare_command(db_path: Path, pair_filter: tuple[str, ...], task_filter: tuple[str, ...],
                    as_json: bool) -> None:
    """Compare each pair's biomedical model with its general counterpart, per task.

    Accuracy counts unparseable, truncated and error outcomes as wrong; their counts are shown so that a
    format failure is never mistaken for a knowledge failure. Numbers are recomputed from the per-item rows
    of the database; for each model and task the most recent evaluation (settings) is used.

    \b
    Examples:
      medbench-local compare --db results.db
      medbench-local compare --db results.db --pair demo --task jama --json
    """
    rows = comparison_rows(db_path, pair_filter, task_filter)
    if as_json:
        click.echo(json.dumps([{"pair": r["pair"], "task": r["task"], "biomedical": _side_json(r["biomedical"]),
                                "general": _side_json(r["general"])} for r in rows], indent=2))
        return
    if not rows:
        stdout.print(f"No paired results in {db_path} yet. Run e.g.: medbench-local run --pair demo --task jama "
                     f"--db {db_path}")
        return
    for pair_name in dict.fromkeys(r["pair"] for r in rows):
        stdout.print(_pair_table(pair_name, [r for r in rows if r["pair"] == pair_name]))
    stdout.print("[dim]acc% = correct / all items (unparseable, truncated and error count as wrong); "
                 "counts are biomedical/general. Δ > 0: the biomedical model is ahead.[/dim]")


def _pair_table(pair_name: str, rows: list[dict[str, Any]]) -> Table:
    models = {role: next((r[role].model_id for r in rows if r[role]), "(not run)") for role in ("biomedical",
                                                                                                "general")}
    table = Table(title=f"[bold]{pair_name}[/bold]: {models['biomedical']} (biomedical) vs "
                        f"{models['general']} (general)", title_justify="left")
    for name in ("task", "n", "bio acc%", "gen acc%", "Δ", "unparsed", "truncated", "errors"):
        table.add_column(name, justify="left" if name == "task" else "right")
    for r in rows:
        bio, gen = r["biomedical"], r["general"]
        delta = None
        if bio and gen and bio.accuracy is not None and gen.accuracy is not None:
            delta = bio.accuracy - gen.accuracy
        delta_text = "—" if delta is None else f"{100 * delta:+.1f}"
        if delta:
            delta_text = f"[{'green' if delta > 0 else 'red'}]{delta_text}[/]"

        def counts(outcome: str) -> str:
            return "/".join(str(side.outcomes.get(outcome, 0)) if side else "—" for side in (bio, gen))

        n = "/".join(str(side.n) if side else "0" for side in (bio, gen))
        table.add_row(r["task"], n, _fmt(bio.accuracy if bio else None), _fmt(gen.accuracy if gen else None),
                      delta_text, counts("unparseable"), counts("truncated"), counts("error"))
    return table
