"""``--scoring constrained``: greedy generation under a grammar that admits exactly the option continuations,
for chat models that must generate; the output is one of the options by construction."""

from __future__ import annotations

from typing import Any

from ...engine.base import GenerateRequest, Generation
from ...tasks.base import Item, Score
from ...tasks.loglik_scoring import choice_grammar, constrained_max_tokens, score_constrained
from ..context import Evaluation, ItemOutcome, NativeCall
from .choices import ChoiceMode

GRAMMAR_SETTING = "root ::= one of the option continuations (then end of generation)"


class Constrained(ChoiceMode):
    name = "constrained"

    def task_settings(self, target: str) -> dict[str, Any]:
        return {**super().task_settings(target), "grammar": GRAMMAR_SETTING}

    def ask(self, evaluation: Evaluation, item: Item, outcome: ItemOutcome, native: NativeCall) -> None:
        choices = self.choices(evaluation, item, outcome)
        assert outcome.prompt is not None
        engine = evaluation.engine
        with native():
            outcome.generation = engine.generate(GenerateRequest(
                outcome.prompt, constrained_max_tokens(choices, engine.count_tokens), grammar=choice_grammar(choices)))

    def score(self, evaluation: Evaluation, item: Item, outcome: ItemOutcome) -> tuple[Score, Generation]:
        assert outcome.choices is not None and outcome.generation is not None
        return score_constrained(outcome.choices, outcome.generation), outcome.generation
