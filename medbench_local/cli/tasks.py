"""``medbench-local tasks``: what can be run, what it measures and what data it reads."""

from __future__ import annotations

import click

from ..paths import default_data
from ..tasks import get_task, task_ids
from .common import stdout
from .safe_text import literal


@click.group("tasks")
def tasks_group() -> None:
    """Inspect the available tasks."""


@tasks_group.command("list")
def list_tasks() -> None:
    """List task ids with their metrics, token budget, input format and the sample 'run' uses without --data.

    \b
    Example:
      medbench-local tasks list
    """
    for task_id in task_ids():
        task = get_task(task_id)
        sample = default_data(task_id)
        stdout.print(f"[bold]{task.id}[/bold]  {task.title}")
        stdout.print(f"  {task.description}", soft_wrap=True)
        stdout.print(f"  metrics: {', '.join(task.metric_names)} · max new tokens: {task.max_tokens}")
        stdout.print(f"  data:    {task.data_format}", soft_wrap=True)
        stdout.print(f"  sample:  {literal(sample.path) if sample else '(none)'}"
                     + (f"  [dim]({sample.origin})[/dim]" if sample else "") + "\n", soft_wrap=True)
