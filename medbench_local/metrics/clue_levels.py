"""CLUE Level-1 / Level-2 aggregate scores (paper.md §3.4).

Why a dedicated module: the Level scores are the headline numbers of the
CLUE leaderboard, and they are a mean *of task means*, not a mean over all
metrics -- getting the grouping wrong shifts them by several points.  The
definitions below reproduce every published June-2024 Level score from its
per-task numbers (paper.md §6.2):

* Level 1 = mean( MedNLI accuracy,
  mean(MeQSum R-L, R-1, R-2, BERT-F1),
  mean(ProbSum R-L, R-1, R-2, BERT-F1, UMLS-F1) )
* Level 2 = mean( mean(MeDiSumCode EM-F1, AP-F1, Valid),
  mean(MeDiSumQA R-L, R-1, R-2, BERT-F1, UMLS-F1),
  mean(LongHealth T1, T2, T3) )

The functions are scale-agnostic (plain means): feed fractions and get a
fraction, feed percentages (as the leaderboard does) and get a percentage --
just do not mix scales within one call.

``level1``/``level2`` refuse to produce a number when any component is
missing (a Level score over a subset of tasks is not comparable with the
leaderboard); ``level1_partial``/``level2_partial`` average whatever is
present and say exactly what was missing, for progress displays.
A component counts as missing if its task or metric key is absent, or its
value is ``None`` or NaN.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "level_spec",
    "LevelScore",
    "level1",
    "level2",
    "level1_partial",
    "level2_partial",
]

Scores = Mapping[str, Mapping[str, "float | None"]]

def level_spec(level: int) -> dict[str, tuple[str, ...]]:
    """task id -> metric names averaged into that task's component of CLUE Level ``level``, as each task
    declares it (``Task.clue_level``, ``Task.clue_metrics``), in registry order."""
    from ..tasks import get_task, task_ids

    spec = {}
    for task_id in task_ids():
        task = get_task(task_id)
        if task.clue_level == level:
            spec[task_id] = tuple(task.clue_metrics)
    return spec


@dataclass(frozen=True)
class LevelScore:
    """A Level score computed from whatever components were available.

    ``value`` is the mean of the available task means (``None`` if no task
    had any metric); ``task_means`` holds those task means; ``missing``
    lists absent components as ``"task.metric"``; ``complete`` is True only
    when nothing was missing, i.e. when ``value`` equals the strict
    ``level1``/``level2`` result.
    """

    value: float | None
    task_means: dict[str, float]
    missing: tuple[str, ...]

    @property
    def complete(self) -> bool:
        return not self.missing


def _get(scores: Scores, task: str, metric: str) -> float | None:
    metrics = scores.get(task)
    if metrics is None:
        return None
    value = metrics.get(metric)
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _partial(scores: Scores, spec: Mapping[str, tuple[str, ...]]) -> LevelScore:
    task_means: dict[str, float] = {}
    missing: list[str] = []
    for task, metric_names in spec.items():
        present = []
        for metric in metric_names:
            value = _get(scores, task, metric)
            if value is None:
                missing.append(f"{task}.{metric}")
            else:
                present.append(value)
        if present:
            task_means[task] = sum(present) / len(present)
    value = sum(task_means.values()) / len(task_means) if task_means else None
    return LevelScore(value=value, task_means=task_means, missing=tuple(missing))


def level1_partial(scores: Scores) -> LevelScore:
    """Level 1 over the available components, with a list of what was missing."""
    return _partial(scores, level_spec(1))


def level2_partial(scores: Scores) -> LevelScore:
    """Level 2 over the available components, with a list of what was missing."""
    return _partial(scores, level_spec(2))


def level1(scores: Scores) -> float | None:
    """CLUE Level 1, or ``None`` if any required component is missing.

    ``scores`` maps task id to metric name -> value (the Level-1 tasks and
    metrics: ``level_spec(1)``).  Extra tasks/metrics are ignored.
    """
    result = level1_partial(scores)
    return result.value if result.complete else None


def level2(scores: Scores) -> float | None:
    """CLUE Level 2, or ``None`` if any required component is missing.

    ``scores`` maps task id to metric name -> value (the Level-2 tasks and
    metrics: ``level_spec(2)``).  Extra tasks/metrics are ignored.
    """
    result = level2_partial(scores)
    return result.value if result.complete else None
