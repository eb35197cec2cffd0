"""CLUE Level-1 / Level-2 aggregate scores (docs/study-reference.md#clue-levels).

Why a dedicated module: the Level scores are the headline numbers of the
CLUE leaderboard, and they are a mean *of task means*, not a mean over all
metrics -- getting the grouping wrong shifts them by several points.  The
definitions below reproduce every published June-2024 Level score from its
per-task numbers (docs/study-reference.md#published-numbers):

* Level 1 = mean( MedNLI accuracy,
  mean(MeQSum R-L, R-1, R-2, BERT-F1),
  mean(ProbSum R-L, R-1, R-2, BERT-F1, UMLS-F1) )
* Level 2 = mean( mean(MeDiSumCode EM-F1, AP-F1, Valid),
  mean(MeDiSumQA R-L, R-1, R-2, BERT-F1, UMLS-F1),
  mean(LongHealth T1, T2, T3) )

The functions are scale-agnostic (plain means): feed fractions and get a
fraction, feed percentages (as the leaderboard does) and get a percentage --
just do not mix scales within one call.

Which tasks and metrics make up a Level, each task declares (``Task.study.clue_level``,
``Task.study.clue_metrics``); the caller passes that ``spec`` in (``analysis.published.clue_level_spec``), so
these functions stay pure: plain numbers in, a number out. They live in analysis/ because only the read side
aggregates (``reproduce``, via analysis/reproduce.py); tasks never compute a Level.

``level_score`` refuses to produce a number when any component is
missing (a Level score over a subset of tasks is not comparable with the
leaderboard); ``level_score_partial`` averages whatever is
present and says exactly what was missing, for progress displays.
A component counts as missing if its task or metric key is absent, or its
value is ``None`` or NaN.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "LevelScore",
    "LevelSpec",
    "level_score",
    "level_score_partial",
]

Scores = Mapping[str, Mapping[str, "float | None"]]
#: task id -> the metric names averaged into that task's component of one Level, in the Level's task order
LevelSpec = Mapping[str, tuple[str, ...]]


@dataclass(frozen=True)
class LevelScore:
    """A Level score computed from whatever components were available.

    ``value`` is the mean of the available task means (``None`` if no task
    had any metric); ``task_means`` holds those task means; ``missing``
    lists absent components as ``"task.metric"``; ``complete`` is True only
    when nothing was missing, i.e. when ``value`` equals the strict
    ``level_score`` result.
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


def level_score_partial(scores: Scores, spec: LevelSpec) -> LevelScore:
    """A Level over the available components of ``spec``, with a list of what was missing."""
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


def level_score(scores: Scores, spec: LevelSpec) -> float | None:
    """The CLUE Level that ``spec`` defines, or ``None`` if any required component is missing.

    ``scores`` maps task id to metric name -> value (for Level 1: ``clue_level_spec(1)``'s tasks and
    metrics).  Extra tasks/metrics are ignored.
    """
    result = level_score_partial(scores, spec)
    return result.value if result.complete else None
