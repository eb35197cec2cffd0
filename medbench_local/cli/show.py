"""``medbench-local show``: the items on which a pair's two models disagree, side by side."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import sqlite_utils
from rich.panel import Panel
from rich.table import Table

from ..analysis.pairing import PairedEvaluations, pair_evaluations
from ..errors import UserError
from ..store.database import reading
from ..store.queries import pairs
from .common import db_option, stdout
from .safe_text import literal


def _side(db: sqlite_utils.Database, evaluation: str) -> dict[str, dict[str, Any]]:
    return {row["item"]: row for row in db.query(
        "select s.item, i.item_id, i.payload, g.prompt, g.output, s.outcome, s.extracted, s.gold, s.metrics "
        "from scores s join generations g on g.id = s.generation_id join items i on i.key = s.item "
        "where s.evaluation = ? order by g.id", [evaluation])}


def paired_group(db: sqlite_utils.Database, pair_name: str, task: str, data: str | None = None
                 ) -> tuple[PairedEvaluations, list[PairedEvaluations]]:
    """The (task, data) row group of ``compare`` to inspect: the one whose data name or hash prefix is ``data``,
    else the newest; plus all groups of the task. One line, exit 1, when the pairing rule pairs nothing."""
    pair = next((p for p in pairs(db) if p["name"] == pair_name), None)
    if pair is None:
        raise UserError(f"no pair '{pair_name}' in this database (run it first, or see 'compare')")
    groups, notes = pair_evaluations(db, pair["biomedical"], pair["general"], task)
    if not groups:
        reason = notes[0].text if notes else f"pair '{pair_name}' has no results of both models on task '{task}'"
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
    """Items both evaluations answered where they differ: (|difference|, biomedical row, general row), largest
    first. For a binary metric that is every item one model got right and the other wrong."""
    bio, gen = _side(db, biomedical), _side(db, general)
    found = []
    for item, b in bio.items():
        g = gen.get(item)
        if g is None:
            continue
        mb, mg = json.loads(b["metrics"] or "{}"), json.loads(g["metrics"] or "{}")
        name = metric or next(iter(mb), None)
        if name is None or name not in mb or name not in mg:
            continue
        difference = abs(float(mb[name]) - float(mg[name]))
        if difference > 0:
            found.append((difference, b, g))
    return sorted(found, key=lambda entry: -entry[0])


def disagreements(db: sqlite_utils.Database, pair_name: str, task: str, metric: str | None = None,
                  data: str | None = None) -> list[tuple[float, dict[str, Any], dict[str, Any]]]:
    """The disagreements within the evaluations ``compare`` pairs for this pair, task and data."""
    group, _ = paired_group(db, pair_name, task, data)
    return disagreements_between(db, group.biomedical, group.general, metric)


def _answer(row: dict[str, Any], label: str) -> Panel:
    """One model's answer. Everything from the database is printed literally (safe_text.literal)."""
    metrics = json.loads(row["metrics"] or "{}")
    head = f"outcome: [bold]{literal(row['outcome'])}[/bold]"
    if row["extracted"] is not None or row["gold"] is not None:
        head += f" · answer {literal(row['extracted'] or '—')} (gold {literal(row['gold'] or '—')})"
    if metrics and not set(metrics) <= {"accuracy"}:
        head += " · " + ", ".join(f"{literal(k)} {100 * float(v):.1f}" for k, v in metrics.items())
    output = literal(row["output"]) if row["output"] is not None else "(no output: generation failed)"
    return Panel(f"{head}\n\n{output}", title=label, title_align="left")


@click.command("show")
@db_option
@click.option("--pair", "pair_name", required=True, metavar="NAME", help="The pair to inspect.")
@click.option("--task", required=True, metavar="TASK", help="The task to inspect.")
@click.option("--metric", help="Metric that defines disagreement (default: the task's first metric).")
@click.option("--data", "data_name", metavar="NAME|HASH",
              help="Which data's row group, when the pair ran the task on several files (default: the newest).")
@click.option("--limit", type=click.IntRange(min=1), default=10, show_default=True, help="At most N items.")
@click.option("--prompts", "with_prompts", is_flag=True, help="Also print each model's full rendered prompt.")
def show_command(db_path: Path, pair_name: str, task: str, metric: str | None, data_name: str | None, limit: int,
                 with_prompts: bool) -> None:
    """Show the items on which the biomedical and the general model disagree, answers side by side.

    For accuracy these are the discordant items behind the McNemar test; for continuous metrics the items
    with the largest score difference come first. The evaluations are those 'compare' pairs (same data, same
    task settings); with several data files, --data picks one.

    \b
    Examples:
      medbench-local show --db results.db --pair demo --task jama
      medbench-local show --db results.db --pair openbiollm-8b --task meqsum --metric rougeL --limit 3 --prompts
    """
    with reading(db_path) as db:  # stored JSON is parsed inside, where damage is diagnosed as one line
        group, groups = paired_group(db, pair_name, task, data_name)
        found = disagreements_between(db, group.biomedical, group.general, metric)
        shown = [(bio, gen, json.loads(bio["payload"] or "{}"), _answer(bio, "biomedical"), _answer(gen, "general"))
                 for _, bio, gen in found[:limit]]
    stdout.print(f"[bold]{literal(pair_name)} · {literal(task)}[/bold] on {literal(group.data.short)}: {len(found)} "
                 "items where the models disagree" + (f" (showing {limit})" if len(found) > limit else ""))
    others = [g.data.short for g in groups if g is not group]
    if others:
        stdout.print(f"[dim]also paired on: {literal(', '.join(others))} (choose with --data)[/dim]")
    for bio, gen, payload, bio_panel, gen_panel in shown:
        stdout.rule(f"item {literal(bio['item_id'], one_line=True)}")
        if isinstance(payload, dict) and payload.get("not_stored"):
            stdout.print("[dim](inputs were not stored for this run: --no-store-inputs)[/dim]")
        elif not with_prompts:
            stdout.print(literal(_item_text(payload)), soft_wrap=True)
        if with_prompts:
            stdout.print(Panel(literal(bio["prompt"] or ""), title="biomedical prompt", title_align="left"))
            stdout.print(Panel(literal(gen["prompt"] or ""), title="general prompt", title_align="left"))
        grid = Table.grid(expand=True, padding=(0, 1))
        grid.add_column(ratio=1)
        grid.add_column(ratio=1)
        grid.add_row(bio_panel, gen_panel)
        stdout.print(grid)


def _item_text(payload: Any) -> str:
    if not isinstance(payload, dict):
        return json.dumps(payload, ensure_ascii=False)[:2000]
    parts = [str(payload[k]) for k in ("case", "context", "question") if payload.get(k)]
    options = payload.get("options")
    if isinstance(options, dict):
        parts.append("\n".join(f"{k}. {v}" for k, v in options.items()))
    return "\n".join(parts) if parts else json.dumps(payload, ensure_ascii=False)[:2000]
