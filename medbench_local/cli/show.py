"""``medbench-local show``: the items on which a pair's two models disagree, side by side (which items:
analysis/disagreements.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import sqlite_utils
from rich.panel import Panel
from rich.table import Table

from ..analysis.disagreements import disagreements_between, mode_disagreements, paired_group
from ..analysis.pair_sources import PairSource, check_models, check_tasks, read_pair_config, select_pairs
from ..errors import UserError
from ..gates.stored import load_array, load_metrics, load_object
from ..runner.modes import MODES
from ..store.database import reading
from .common import db_option, pair_options, split_commas, stdout
from .declare import declare
from .layout import print_heading, print_prose
from .safe_text import literal

# Below this many columns the two answers are printed one above the other, not side by side.
SIDE_BY_SIDE = 72


def _answer(row: dict[str, Any], label: str) -> Panel:
    """One model's answer. Everything from the database is printed literally (safe_text.literal)."""
    metrics = load_metrics(row["metrics"], row["generation_id"])
    head = f"outcome: [bold]{literal(row['outcome'])}[/bold]"
    if row["extracted"] is not None or row["gold"] is not None:
        head += f" · answer {literal(row['extracted'] or '—')} (gold {literal(row['gold'] or '—')})"
    if metrics and not set(metrics) <= {"accuracy"}:
        head += " · " + ", ".join(f"{literal(k)} {100 * float(v):.1f}" for k, v in metrics.items())
    output = literal(row["output"]) if row["output"] is not None else "(no output: generation failed)"
    retrieved = _retrieved(row)
    return Panel(f"{head}\n\n{output}{retrieved}", title=label, title_align="left")


SNIPPET = 160  # characters of each retrieved passage shown under its id


def _snippet(text: object) -> str:
    if not isinstance(text, str) or not text:
        return ""
    cut = text if len(text) <= SNIPPET else text[:SNIPPET].rsplit(" ", 1)[0] + " …"
    return f"\n  [dim]{literal(cut, one_line=True)}[/dim]"


def _retrieved(row: dict[str, Any]) -> str:
    """An arm's passages for the item, best first: id, BM25 score, whether it was placed in the prompt (within
    the token budget) and the start of its text (all of it is in the prompt: --prompts)."""
    if row.get("retrieved") is None:
        return ""
    passages = load_array(row["retrieved"], "retrievals", "passages", row["item"])
    lines = [f"{'✓' if p.get('placed') else '·'} {literal(str(p.get('id')), one_line=True)} "
             f"({float(p.get('score') or 0):.2f})" + _snippet(p.get("text"))
             for p in passages if isinstance(p, dict)]
    took = row.get("retrieval_ms")
    head = "retrieved passages (✓ in the prompt, BM25 score)" + (f", {float(took):.1f} ms" if took is not None
                                                                    else "")
    return f"\n\n[dim]{head}:[/dim]\n" + ("\n".join(lines) if lines else "(none matched)")


@declare(reads=("database", "config"), example=("show", "--db", "{db}", "--config", "{config}", "--pair", "demo", "--task", "{task}"))
@click.command("show")
@db_option
@pair_options
@click.option("--model", "model_id", metavar="ID",
              help="Instead of a pair: one model, its two scoring modes side by side (with --modes).")
@click.option("--task", "task_ids", required=True, multiple=True, metavar="TASK[,TASK...]", callback=split_commas,
              help="The task to inspect (repeatable, or comma-separated: one section per task).")
@click.option("--mode", type=click.Choice(["generate", "loglik", "constrained"]), default="generate",
              show_default=True, help="With --pair: the scoring mode both models are compared in.")
@click.option("--modes", default="generate,loglik", show_default=True, metavar="A,B",
              help="With --model: the two scoring modes to put side by side.")
@click.option("--metric", help="Metric that defines disagreement (default: the task's first metric); an unknown "
                               "one is an error naming those stored.")
@click.option("--data", "data_name", metavar="NAME|HASH",
              help="Which data's row group, when the pair ran the task on several files (default: the newest).")
@click.option("--limit", type=click.IntRange(min=1), default=10, show_default=True, help="At most N items.")
@click.option("--prompts", "with_prompts", is_flag=True, help="Also print each side's full rendered prompt.")
def show_command(db_path: Path, pair_filter: tuple[str, ...], model_pair: tuple[str, str] | None,
                 config_path: Path | None, model_id: str | None, task_ids: tuple[str, ...], mode: str, modes: str,
                 metric: str | None, data_name: str | None, limit: int, with_prompts: bool) -> None:
    """Show the items on which the biomedical and the general model disagree, answers side by side; or, with
    --model, the items on which one model's two scoring modes disagree (how often reading the generated text
    and the option likelihoods pick different answers is itself a finding).

    For a retrieval arm (docs/retrieval.md) each answer lists the passages it retrieved, best first, with
    their BM25 scores and whether they were placed in the prompt; --prompts prints their text in the prompt.

    For accuracy these are the discordant items behind the McNemar test; for continuous metrics the items
    with the largest score difference come first. The evaluations are those 'compare' pairs (same data, same
    task settings); with several data files, --data picks one. The pair comes from the database or models.toml
    (--pair), or is any two models with results (--models BIO GEN).

    \b
    Examples:
      medbench-local show --db results.db --pair demo --task jama
      medbench-local show --db results.db --pair openbiollm-8b --task meqsum \\
          --metric rougeL --limit 3 --prompts
      medbench-local show --db study.db --task nejm,jama \\
          --models openbiollm-70b llama3-70b-instruct
      medbench-local show --db results.db --model smollm2-135m-instruct \\
          --task jama --modes generate,loglik
    """
    chosen = len(pair_filter) + (model_pair is not None) + (model_id is not None)
    if chosen != 1:
        raise UserError("give one of --pair NAME, --models BIO GEN (two models) or --model ID (two scoring modes "
                        "with --modes)")
    wanted = tuple(m.strip() for m in modes.split(","))
    if model_id is not None and (len(wanted) != 2 or not set(wanted) <= set(MODES)):
        raise UserError(f"--modes takes two of {', '.join(MODES)} separated by a comma, got '{modes}'")
    with reading(db_path) as db:  # stored JSON is parsed inside, where damage is diagnosed as one line
        pair: PairSource | None = None
        if model_id is None:
            (pair,) = select_pairs(db, read_pair_config(config_path), pair_filter, model_pair or (),
                                   str(db_path)).pairs
        else:
            check_models(db, [model_id], str(db_path))
        check_tasks(db, task_ids, str(db_path))
        sections = [_section(db, pair, model_id, task, mode, wanted, metric, data_name, limit) for task in task_ids]
    for section in sections:
        _print_section(section, limit, with_prompts)


def _section(db: sqlite_utils.Database, pair: PairSource | None, model_id: str | None, task: str, mode: str,
             wanted: tuple[str, ...], metric: str | None, data_name: str | None, limit: int) -> dict[str, Any]:
    """What show prints for one task, read while the database is open."""
    others: list[str] = []
    if pair is not None:
        group, groups = paired_group(db, pair, task, data_name, mode)
        found = disagreements_between(db, group.biomedical, group.general, metric)
        title, labels = f"{pair.name} · {task}", ("biomedical", "general")
        where = f" on {group.data.short}"
        others = [g.data.short for g in groups if g is not group]
    else:
        assert model_id is not None
        found = mode_disagreements(db, model_id, task, (wanted[0], wanted[1]), metric)
        title, labels, where = f"{model_id} · {task}", (wanted[0], wanted[1]), ""
    shown = [(left, right, load_object(left["payload"], "items", "payload", left["item"]), _answer(left, labels[0]),
              _answer(right, labels[1])) for _, left, right in found[:limit]]
    return {"title": title, "labels": labels, "where": where, "others": others, "found": len(found),
            "shown": shown, "pair": pair is not None}


def _print_section(section: dict[str, Any], limit: int, with_prompts: bool) -> None:
    labels = section["labels"]
    what = "the models" if section["pair"] else f"{labels[0]} and {labels[1]}"
    count = section["found"]
    print_prose(stdout, f"[bold]{literal(section['title'])}[/bold]{literal(section['where'])}: {count} "
                        f"item{'' if count == 1 else 's'} where {what} disagree"
                        + (f" (showing {limit})" if count > limit else ""))
    if section["others"]:
        print_prose(stdout, f"[dim]also paired on: {literal(', '.join(section['others']))} (choose with "
                            "--data)[/dim]")
    for left, right, payload, left_panel, right_panel in section["shown"]:
        print_heading(stdout, f"item {literal(left['item_id'], one_line=True)}")
        if isinstance(payload, dict) and payload.get("not_stored"):
            stdout.print("[dim](inputs were not stored for this run: --no-store-inputs)[/dim]")
        elif not with_prompts:
            stdout.print(literal(_item_text(payload)), soft_wrap=True)
        if with_prompts:
            stdout.print(Panel(literal(left["prompt"] or ""), title=f"{labels[0]} prompt", title_align="left"))
            stdout.print(Panel(literal(right["prompt"] or ""), title=f"{labels[1]} prompt", title_align="left"))
        if stdout.width >= SIDE_BY_SIDE:
            grid = Table.grid(expand=True, padding=(0, 1))
            grid.add_column(ratio=1)
            grid.add_column(ratio=1)
            grid.add_row(left_panel, right_panel)
            stdout.print(grid)
        else:  # too narrow for two answers side by side: one above the other
            stdout.print(left_panel)
            stdout.print(right_panel)


def _item_text(payload: Any) -> str:
    if not isinstance(payload, dict):
        return json.dumps(payload, ensure_ascii=False)[:2000]
    parts = [str(payload[k]) for k in ("case", "context", "question") if payload.get(k)]
    options = payload.get("options")
    if isinstance(options, dict):
        parts.append("\n".join(f"{k}. {v}" for k, v in options.items()))
    return "\n".join(parts) if parts else json.dumps(payload, ensure_ascii=False)[:2000]
