"""``--scoring loglik``: the option whose continuation the model finds most probable after the prompt; nothing
is generated (tasks/loglik_scoring.py: the rules and the headline)."""

from __future__ import annotations

from typing import Any

from ...engine.base import Generation, LoglikelihoodRequest
from ...tasks.base import Item, Score
from ...tasks.loglik_scoring import HEADLINE, loglik_generation, require_decided, score_loglik
from ..context import Evaluation, ItemOutcome, NativeCall
from .choices import ChoiceMode


class Loglik(ChoiceMode):
    name = "loglik"

    def task_settings(self, target: str) -> dict[str, Any]:
        return {**super().task_settings(target), "loglik_headline": HEADLINE[target]}

    def ask(self, evaluation: Evaluation, item: Item, outcome: ItemOutcome, native: NativeCall) -> None:
        choices = self.choices(evaluation, item, outcome)
        assert outcome.prompt is not None
        with native():
            result = evaluation.engine.loglikelihood(LoglikelihoodRequest(outcome.prompt,
                                                                          tuple(choices.options.values())))
            require_decided(choices, result)  # a tie or a non-finite total is an error item, never option A
        outcome.result = result

    def score(self, evaluation: Evaluation, item: Item, outcome: ItemOutcome) -> tuple[Score, Generation]:
        assert outcome.choices is not None and outcome.result is not None
        score = score_loglik(outcome.choices, outcome.result, evaluation.run.options.loglik_target)
        return score, loglik_generation(outcome.choices, outcome.result, score)

    def progress_tokens(self, generation: Generation) -> int:
        """Loglik generates nothing: its rate is the prompt tokens it read (those not reused from the KV cache)."""
        return (generation.prompt_tokens if generation.prompt_tokens_evaluated is None
                else generation.prompt_tokens_evaluated)
