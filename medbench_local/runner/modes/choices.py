"""What the multiple-choice modes (loglik, constrained) share: the task's options for an item
(``Task.choices``, tasks/loglik_scoring.py), and the task settings that identify choice scoring."""

from __future__ import annotations

from typing import Any

from ...tasks.base import Item
from ...tasks.loglik_scoring import SCORING_VERSION, ChoiceSet
from ..context import Evaluation, ItemOutcome, ScoringMode


class ChoiceMode(ScoringMode):
    needs_choices = True

    def task_settings(self, target: str) -> dict[str, Any]:
        return {"scoring_mode": self.name, "choice_scoring": SCORING_VERSION, "loglik_target": target}

    def choices(self, evaluation: Evaluation, item: Item, outcome: ItemOutcome) -> ChoiceSet:
        """The item's options; the prompt is their context (recorded in ``outcome`` before the engine is asked)."""
        choices = evaluation.task.choices(item, evaluation.context, evaluation.run.options.loglik_target)
        outcome.choices, outcome.prompt = choices, choices.context
        return choices
