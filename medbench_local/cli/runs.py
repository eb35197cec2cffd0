"""``medbench-local runs``: the history of ``run`` invocations in a results database, newest first."""

from __future__ import annotations

import shlex
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click
from rich.text import Text

from ..store.database import reading
from ..store.history import RunEntry, recent_runs
from ..tasks.base import OUTCOMES
from .common import db_option, stdout
from .declare import declare
from .layout import print_prose
from .safe_text import json_text, literal, plain

_STATUS_STYLE = {"completed": "green", "interrupted": "yellow", "failed": "red", "running": "cyan"}


def command_line(command: list[str] | str) -> str:
    """The recorded argv as a shell line, with the program shown as 'medbench-local' however it was started."""
    if isinstance(command, str):
        return command
    if not command:
        return "(not recorded)"
    line = shlex.join(["medbench-local", *command[1:]])
    return line + "  (from Python: medbench_local.evaluate)" if command[0] == "medbench_local.evaluate" else line


def plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def _count(value: object) -> int:
    """A count recorded in a run's settings; anything else (damaged, or not recorded) counts as 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def duration_text(seconds: float | None) -> str:
    if seconds is None:
        return "no end recorded (still running, or the process was killed)"
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def when_text(timestamp: str | None) -> str:
    try:
        moment = datetime.fromisoformat(timestamp)  # type: ignore[arg-type]
    except (TypeError, ValueError):  # not recorded, or not a time: shown as stored
        return str(timestamp)
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def as_json(run: RunEntry) -> dict[str, Any]:
    """One run with stable keys (the --json contract)."""
    return {
        "id": run.id, "started_at": run.started_at, "finished_at": run.finished_at, "status": run.status,
        "duration_seconds": run.duration_seconds, "command": run.command, "medbench_version": run.medbench_version,
        "config": run.settings.get("config"), "config_origin": run.settings.get("config_origin"),
        "models": [{"id": m.get("id"), "role": m.get("role")} for m in run.models],
        "tasks": [{"task": t.get("task"), "data": t.get("data"), "items": t.get("items")} for t in run.tasks],
        "planned": run.planned, "generated": run.generated,
        "outcomes": {name: run.outcomes.get(name, 0) for name in OUTCOMES},
        "retrieval": run.retrieval,
        "served_loglik": None if run.served is None else {
            "items": run.served[0], "requests": run.served[1], "tokens_sent": run.served[2]},
    }


def _print(run: RunEntry) -> None:
    """One run as a block of labelled lines, wrapped between words under their label (layout.print_prose)."""
    style = _STATUS_STYLE.get(run.status, "white")
    print_prose(stdout, f"[bold]run {literal(run.id[:12])}[/bold]  {literal(when_text(run.started_at))}  "
                        f"[{style}]{literal(run.status)}[/{style}] · {duration_text(run.duration_seconds)}")
    models = ", ".join(f"{m.get('id')} ({m.get('role')})" for m in run.models) or "(not recorded)"
    tasks = ", ".join(f"{t.get('task')} ({plural(_count(t.get('items')), 'item')}: {t.get('data')})"
                      for t in run.tasks) or "(not recorded)"
    counts = ", ".join(f"{name} {run.outcomes[name]}" for name in OUTCOMES if run.outcomes.get(name))
    planned = f" of {run.planned} planned" if run.planned is not None else ""
    if run.planned is not None and run.modes > 1:
        planned += f" = {run.planned // run.modes} × {run.modes} scoring modes"
    for label, value in (("command", command_line(run.command)), ("models", models), ("tasks", tasks),
                         ("items", f"{run.generated} generated in this run{planned}"
                                   + (f" ({counts})" if counts else "")),
                         *((("passages", _retrieval_text(run.retrieval)),) if run.retrieval else ()),
                         *served_line(run)):
        print_prose(stdout, Text(f"  {label + ':':<9}") + Text(plain(value)), hanging=" " * 11)
    stdout.print()


def _retrieval_text(found: dict[str, float]) -> str:
    """What a run of retrieval arms spent on retrieval (store/history.py)."""
    return (f"{plural(int(found['items']), 'item')} with retrieved passages, {found['ms_per_item']:.2f} ms per "
            f"search, {found['passage_tokens_per_item']:.0f} passage tokens per prompt")


def served_line(run: RunEntry) -> list[tuple[str, str]]:
    """The cost of a run's served log-likelihood items, per item (none: no line)."""
    per_item = run.served_per_item
    if per_item is None or run.served is None:
        return []
    requests, tokens = per_item
    return [("served", f"{plural(run.served[0], 'log-likelihood item')}: {requests:.1f} requests and "
                       f"{tokens:,.0f} tokens sent per item")]


@declare(reads=("database",), example=("runs", "--db", "{db}"))
@click.command("runs")
@db_option
@click.option("--limit", type=click.IntRange(min=0), default=20, show_default=True,
              help="Show the N most recent runs (0: all of them).")
@click.option("--json", "as_json_output", is_flag=True,
              help="Print a JSON list instead (keys: id, started_at, finished_at, status, duration_seconds, "
                   "command, medbench_version, config, config_origin, models, tasks, planned, generated, "
                   "outcomes, retrieval: null, or for runs of retrieval arms items, ms_per_item, "
                   "passage_tokens_per_item; served_loglik: items, requests and tokens_sent of served "
                   "log-likelihood items, or null).")
def runs_command(db_path: Path, limit: int, as_json_output: bool) -> None:
    """List the runs stored in a results database, newest first.

    For each run: when it started, its status (completed, interrupted, failed, or running: no end recorded,
    which also means the process was killed), how long it took, the command line, the models and tasks with
    their data, and how many items it generated, by outcome (items already done by an earlier run are
    counted in 'planned', not 'generated'); for retrieval arms, the time a search took per item and the passage
    tokens it put into each prompt. The database is opened read-only, so this works while a run is
    writing to it.

    \b
    Examples:
      medbench-local runs --db study.db
      medbench-local runs --db study.db --limit 1 --json
    """
    with reading(db_path, tables=("runs", "retrievals")) as db:  # read-only, never migrated; damage is one line
        runs = recent_runs(db, limit or None)
    if as_json_output:
        click.echo(json_text([as_json(run) for run in runs]))
        return
    if not runs:
        stdout.print(f"No runs in {literal(db_path)} yet.")
        return
    for run in runs:
        _print(run)
