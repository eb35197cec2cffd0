"""``medbench-local tasks``: what can be run, what it measures and what data it reads."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from ..tasks import get_task, task_ids
from .common import stdout


@click.group("tasks")
def tasks_group() -> None:
    """Inspect the available tasks."""


@tasks_group.command("list")
def list_tasks() -> None:
    """List task ids with their metrics, token budget and input format.

    \b
    Example:
      medbench-local tasks list
    """
    table = Table(title="Tasks")
    for name in ("id", "title", "metrics", "max tokens", "data format", "bundled sample"):
        table.add_column(name)
    for task_id in task_ids():
        task = get_task(task_id)
        sample = Path("bench_data") / task_id
        table.add_row(task.id, f"{task.title}\n[dim]{task.description}[/dim]", ", ".join(task.metric_names),
                      str(task.max_tokens), task.data_format, str(sample) if sample.exists() else "—")
    stdout.print(table)
