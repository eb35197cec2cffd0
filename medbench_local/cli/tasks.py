"""``medbench-local tasks``: what can be run, what it measures and what data it reads."""

from __future__ import annotations

from pathlib import Path

import click

from ..tasks import get_task, task_ids
from .common import stdout
from .safe_text import literal


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
    for task_id in task_ids():
        task = get_task(task_id)
        sample = Path("bench_data") / task_id
        stdout.print(f"[bold]{literal(task.id)}[/bold]  {literal(task.title)}")
        stdout.print(f"  {literal(task.description)}", soft_wrap=True)
        stdout.print(f"  metrics: {literal(', '.join(task.metric_names))} · max new tokens: {task.max_tokens}")
        stdout.print(f"  data:    {literal(task.data_format)}", soft_wrap=True)
        stdout.print(f"  sample:  {literal(sample) if sample.exists() else '(none here; run from the repository root)'}\n")
