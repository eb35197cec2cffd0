"""Tasks: each is a dataset loader + a prompt builder + a scorer (the inspect_ai shape)."""

from .base import Item, Score, Task
from .registry import get_task, task_ids

__all__ = ["Item", "Score", "Task", "get_task", "task_ids"]
