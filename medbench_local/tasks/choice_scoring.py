"""One rule for turning an extracted choice into an outcome, shared by every multiple-choice task.

Why shared: the case challenges, the public MCQ sets and LongHealth used to map "no letter" to
unparseable/truncated each in their own words; a new way of *not* crediting an answer (an echoed option list,
a letter contradicted by its own text) must count the same everywhere, or one task would quietly keep
crediting what the others refuse.
"""

from __future__ import annotations

from collections.abc import Callable

from ..metrics.extraction import Extraction
from .base import Score

MetricsFor = Callable[[str | None], dict[str, float]]


def accuracy_metrics(gold: str) -> MetricsFor:
    """Metrics of a plain MCQ item: accuracy 1 for the gold letter, 0 for anything else or nothing."""
    return lambda letter: {"accuracy": 1.0 if letter == gold else 0.0}


def score_choice(gold: str, found: Extraction, finish_reason: str, metrics_for: MetricsFor | None = None) -> Score:
    """correct / wrong when a letter was read; otherwise ``conflict`` (a letter stated with another option's
    text), ``truncated`` (nothing read and the token budget ran out) or ``unparseable``.

    A conflict is never ``truncated``: the model did state an answer, it just contradicted itself. Anything
    not credited gets ``metrics_for(None)``, i.e. scores 0.
    """
    metrics = metrics_for or accuracy_metrics(gold)
    if found.letter is None:
        if found.method == "conflict":
            outcome = "conflict"
        else:
            outcome = "truncated" if finish_reason == "length" else "unparseable"
        return Score(outcome, None, gold, found.method, found.detail, metrics(None))
    outcome = "correct" if found.letter == gold else "wrong"
    return Score(outcome, found.letter, gold, found.method, found.detail, metrics(found.letter))
