"""Tasks: each is a dataset loader + a prompt builder + a scorer (the inspect_ai shape)."""

from .base import Item, PromptContext, Score, Task, TaskData
from .registry import get_task, task_ids

__all__ = ["Item", "PromptContext", "Score", "Task", "TaskData", "get_task", "task_ids"]
