"""The task registry: CLI names -> task objects.

A new task is one module that defines ``TASKS`` (a list of task objects) plus one line in ``_MODULES``.
Modules are imported lazily, so a task family with heavy optional dependencies costs nothing until used.
``register`` adds tasks at run time (a plug-in, or a toy task in a test; ``unregister`` takes them out again).
"""

from __future__ import annotations

import importlib
from functools import lru_cache

from ..errors import UserError
from .base import TaskBase

_MODULES: tuple[str, ...] = (
    "case_challenges",   # nejm, jama
    "public_mcq",        # medqa, pubmedqa, mmlu_medical, medmcqa
    "mednli",            # mednli
    "summarization",     # meqsum, problem_summary, medisumqa
    "icd_coding",        # medisumcode
    "longhealth",        # longhealth
)


@lru_cache(maxsize=1)
def _registry() -> dict[str, TaskBase]:
    tasks: dict[str, TaskBase] = {}
    for name in _MODULES:
        try:
            module = importlib.import_module(f"{__package__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{__package__}.{name}":
                continue  # not written yet
            raise
        for task in module.TASKS:
            tasks[task.id] = task
    return tasks


def register(*tasks: TaskBase) -> None:
    """Add tasks to the registry; an id that is already taken is refused (one id, one meaning)."""
    registry = _registry()
    for task in tasks:
        if task.id in registry:
            raise UserError(f"task '{task.id}' is already registered")
    for task in tasks:
        registry[task.id] = task


def unregister(*task_ids: str) -> None:
    """Remove tasks that ``register`` added (unknown ids are ignored)."""
    registry = _registry()
    for task_id in task_ids:
        registry.pop(task_id, None)


def task_ids() -> list[str]:
    return list(_registry())


def get_task(task_id: str) -> TaskBase:
    tasks = _registry()
    if task_id not in tasks:
        raise UserError(f"unknown task '{task_id}' (known: {', '.join(tasks)}); see 'medbench-local tasks list'")
    return tasks[task_id]
