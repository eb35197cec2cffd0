"""``medbench-local show``: the items on which a pair's two models disagree, side by side."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import sqlite_utils
from rich.panel import Panel
from rich.table import Table

from ..errors import UserError
from ..store import open_database
from ..store.queries import latest_evaluation, pairs
from ..tasks.loglik_scoring import SCORING_MODES
from .common import db_option, stdout


def _side(db: sqlite_utils.Database, evaluation: str) -> dict[str, dict[str, Any]]:
    return {row["item"]: row for row in db.query(
        "select s.item, i.item_id, i.payload, g.prompt, g.output, s.outcome, s.extracted, s.gold, s.metrics "
        "from scores s join generations g on g.id = s.generation_id join items i on i.key = s.item "
        "where s.evaluation = ? order by g.id", [evaluation])}


def disagreements(db: sqlite_utils.Database, pair_name: str, task: str, metric: str | None = None,
                  mode: str | None = None) -> list[tuple[float, dict[str, Any], dict[str, Any]]]:
    """Items both models answered where they differ: (|difference|, biomedical row, general row), largest
    first. For a binary metric that is every item one model got right and the other wrong. ``mode`` limits both
    sides to one scoring mode (generate / loglik / constrained)."""
    pair = next((p for p in pairs(db) if p["name"] == pair_name), None)
    if pair is None:
        raise UserError(f"no pair '{pair_name}' in this database (run it first, or see 'compare')")
    keys = {role: latest_evaluation(db, pair[role], task, mode) for role in ("biomedical", "general")}
    if not all(keys.values()):
        raise UserError(f"pair '{pair_name}' has no results of both models on task '{task}'"
                        + (f" with --scoring {mode}" if mode else ""))
    return differing_items(db, keys["biomedical"] or "", keys["general"] or "", metric)


def mode_disagreements(db: sqlite_utils.Database, model_id: str, task: str, modes: tuple[str, str],
                       metric: str | None = None) -> list[tuple[float, dict[str, Any], dict[str, Any]]]:
    """The same model's two scoring modes on the same items (e.g. extraction vs likelihood): where they differ."""
    keys = [latest_evaluation(db, model_id, task, mode) for mode in modes]
    missing = [mode for mode, key in zip(modes, keys) if not key]
    if missing:
        raise UserError(f"model '{model_id}' has no {missing[0]} results on task '{task}' (run it with "
                        f"--scoring {'both' if set(modes) == {'generate', 'loglik'} else missing[0]})")
    return differing_items(db, keys[0] or "", keys[1] or "", metric)


def differing_items(db: sqlite_utils.Database, left: str, right: str, metric: str | None = None
                    ) -> list[tuple[float, dict[str, Any], dict[str, Any]]]:
    """Items two evaluations both scored whose ``metric`` (default: the first stored one) differs."""
    first, second = _side(db, left), _side(db, right)
    found = []
    for item, b in first.items():
        g = second.get(item)
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


def _answer(row: dict[str, Any], label: str) -> Panel:
    metrics = json.loads(row["metrics"] or "{}")
    head = f"outcome: [bold]{row['outcome']}[/bold]"
    if row["extracted"] is not None or row["gold"] is not None:
        head += f" · answer {row['extracted'] or '—'} (gold {row['gold'] or '—'})"
    if metrics and not set(metrics) <= {"accuracy"}:
        head += " · " + ", ".join(f"{k} {100 * v:.1f}" for k, v in metrics.items())
    return Panel(f"{head}\n\n{row['output'] if row['output'] is not None else '(no output: generation failed)'}",
                 title=label, title_align="left")


@click.command("show")
@db_option
@click.option("--pair", "pair_name", metavar="NAME", help="The pair to inspect (its two models side by side).")
@click.option("--model", "model_id", metavar="ID",
              help="Instead of a pair: one model, its two scoring modes side by side (with --modes).")
@click.option("--task", required=True, metavar="TASK", help="The task to inspect.")
@click.option("--mode", type=click.Choice(["generate", "loglik", "constrained"]), default="generate",
              show_default=True, help="With --pair: the scoring mode both models are compared in.")
@click.option("--modes", default="generate,loglik", show_default=True, metavar="A,B",
              help="With --model: the two scoring modes to put side by side.")
@click.option("--metric", help="Metric that defines disagreement (default: the task's first metric).")
@click.option("--limit", type=click.IntRange(min=1), default=10, show_default=True, help="At most N items.")
@click.option("--prompts", "with_prompts", is_flag=True, help="Also print each side's full rendered prompt.")
def show_command(db_path: Path, pair_name: str | None, model_id: str | None, task: str, mode: str, modes: str,
                 metric: str | None, limit: int, with_prompts: bool) -> None:
    """Show the items on which the biomedical and the general model disagree, answers side by side; or, with
    --model, the items on which one model's two scoring modes disagree (how often reading the generated text
    and the option likelihoods pick different answers is itself a finding).

    For accuracy these are the discordant items behind the McNemar test; for continuous metrics the items
    with the largest score difference come first.

    \b
    Examples:
      medbench-local show --db results.db --pair demo --task jama
      medbench-local show --db results.db --pair openbiollm-8b --task meqsum --metric rougeL --limit 3 --prompts
      medbench-local show --db results.db --model smollm2-135m-instruct --task jama --modes generate,loglik
    """
    if (pair_name is None) == (model_id is None):
        raise UserError("give either --pair NAME (two models) or --model ID (two scoring modes with --modes)")
    wanted = tuple(m.strip() for m in modes.split(","))
    if model_id is not None and (len(wanted) != 2 or not set(wanted) <= set(SCORING_MODES)):
        raise UserError(f"--modes takes two of {', '.join(SCORING_MODES)} separated by a comma, got '{modes}'")
    db = open_database(db_path, create=False)
    try:
        if pair_name is not None:
            found = disagreements(db, pair_name, task, metric, mode)
            title, labels = pair_name, ("biomedical", "general")
        else:
            assert model_id is not None
            found = mode_disagreements(db, model_id, task, (wanted[0], wanted[1]), metric)
            title, labels = model_id, (wanted[0], wanted[1])
    finally:
        db.conn.close()
    what = "the models" if pair_name is not None else f"{labels[0]} and {labels[1]}"
    stdout.print(f"[bold]{title} · {task}[/bold]: {len(found)} items where {what} disagree"
                 + (f" (showing {limit})" if len(found) > limit else ""))
    for _, left, right in found[:limit]:
        stdout.rule(f"item {left['item_id']}")
        payload = json.loads(left["payload"] or "{}")
        if payload.get("not_stored"):
            stdout.print("[dim](inputs were not stored for this run: --no-store-inputs)[/dim]")
        elif not with_prompts:
            stdout.print(_item_text(payload), soft_wrap=True)
        if with_prompts:
            stdout.print(Panel(left["prompt"], title=f"{labels[0]} prompt", title_align="left"))
            stdout.print(Panel(right["prompt"], title=f"{labels[1]} prompt", title_align="left"))
        grid = Table.grid(expand=True, padding=(0, 1))
        grid.add_column(ratio=1)
        grid.add_column(ratio=1)
        grid.add_row(_answer(left, labels[0]), _answer(right, labels[1]))
        stdout.print(grid)


def _item_text(payload: dict[str, Any]) -> str:
    parts = [str(payload[k]) for k in ("case", "context", "question") if payload.get(k)]
    options = payload.get("options")
    if isinstance(options, dict):
        parts.append("\n".join(f"{k}. {v}" for k, v in options.items()))
    return "\n".join(parts) if parts else json.dumps(payload, ensure_ascii=False)[:2000]
