"""The task registry: CLI names -> task objects. A new task is one module plus one line here."""

from __future__ import annotations

from .base import Task
from .case_challenges import CaseChallengeTask
from ..errors import UserError

_TASKS: dict[str, Task] = {
    "nejm": CaseChallengeTask(
        id="nejm", title="NEJM-style case challenges",
        description="Diagnosis from a clinical vignette (image findings described in text); usually 5 options."),
    "jama": CaseChallengeTask(
        id="jama", title="JAMA-style clinical challenges",
        description="Next step in management from a clinical vignette; usually 4 options."),
}


def task_ids() -> list[str]:
    return list(_TASKS)


def get_task(task_id: str) -> Task:
    if task_id not in _TASKS:
        raise UserError(f"unknown task '{task_id}' (known: {', '.join(_TASKS)}); see 'medbench-local tasks list'")
    return _TASKS[task_id]
