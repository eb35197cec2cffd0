"""``medbench-local tasks``: what can be run, what it measures and what data it reads."""

from __future__ import annotations

import textwrap

import click

from ..paths import default_data
from ..tasks import get_task, task_ids
from .common import stdout
from .declare import declare
from .safe_text import literal


def wrapped(text: str, width: int, indent: str = "  ", hanging: str = "    ") -> str:
    """``text`` wrapped at word boundaries to ``width`` columns (a word longer than a line, such as a long path,
    gets a line of its own and is never cut), continuation lines indented under the first."""
    return textwrap.fill(" ".join(text.split()), width=max(width, 40), initial_indent=indent,
                         subsequent_indent=hanging, break_long_words=False, break_on_hyphens=False)


@click.group("tasks")
def tasks_group() -> None:
    """Inspect the available tasks."""


@declare(example=("tasks", "list"))
@tasks_group.command("list")
def list_tasks() -> None:
    """List task ids with their metrics, token budget, input format and the sample 'run' uses without --data.
    Lines are wrapped at whole words to the terminal's width (set COLUMNS to choose another).

    \b
    Example:
      medbench-local tasks list
    """
    width = stdout.width
    for task_id in task_ids():
        task = get_task(task_id)
        sample = default_data(task_id)
        where = f"{sample.path}  ({sample.origin})" if sample else "(none)"
        lines = [wrapped(f"{task.id}  {task.title}", width, indent="", hanging="  "),
                 wrapped(task.description, width, hanging="  "),
                 wrapped(f"metrics: {', '.join(task.metric_names)} · max new tokens: {task.max_tokens}", width),
                 wrapped(f"data: {task.data_format}", width),
                 wrapped(f"sample: {where}", width)]
        stdout.print(literal("\n".join(lines)) + "\n", soft_wrap=True)
