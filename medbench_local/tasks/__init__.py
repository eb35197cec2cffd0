"""Tasks: each is a dataset loader + a prompt builder + a scorer (the inspect_ai shape)."""

from .base import Item, MetricSpec, PromptContext, Score, StudyRole, TaskBase, TaskData
from .registry import get_task, register, task_ids, unregister

__all__ = ["Item", "MetricSpec", "PromptContext", "Score", "StudyRole", "TaskBase", "TaskData", "get_task", "register",
           "task_ids", "unregister"]
