"""The task registry: CLI names -> task objects.

A new task is one module that defines ``TASKS`` (a list of task objects) plus one line in ``_MODULES``.
Modules are imported lazily, so a task family with heavy optional dependencies costs nothing until used.
"""

from __future__ import annotations

import importlib
from functools import lru_cache

from ..errors import UserError
from .base import Task

_MODULES: tuple[str, ...] = (
    "case_challenges",   # nejm, jama
    "public_mcq",        # medqa, pubmedqa, mmlu_medical, medmcqa
    "mednli",            # mednli
    "summarization",     # meqsum, problem_summary, medisumqa
    "icd_coding",        # medisumcode
    "longhealth",        # longhealth
)


@lru_cache(maxsize=1)
def _registry() -> dict[str, Task]:
    tasks: dict[str, Task] = {}
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


def task_ids() -> list[str]:
    return list(_registry())


def get_task(task_id: str) -> Task:
    tasks = _registry()
    if task_id not in tasks:
        raise UserError(f"unknown task '{task_id}' (known: {', '.join(tasks)}); see 'medbench-local tasks list'")
    return tasks[task_id]
