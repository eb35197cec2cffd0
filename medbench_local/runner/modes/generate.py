"""``--scoring generate``: the model writes free text, the task reads and scores it (answer extraction, ROUGE,
ICD codes). The default, and the only mode of free-text tasks; it adds nothing to the task settings, so the
keys of evaluations stored before scoring modes existed stay valid."""

from __future__ import annotations

from typing import Any

from ...engine.base import GenerateRequest, Generation
from ...tasks.base import Item, Score
from ..context import Evaluation, ItemOutcome, NativeCall, ScoringMode
from ..legacy import data_variants, note_older_extraction


class Generate(ScoringMode):
    name = "generate"

    def label(self, task_id: str) -> str:
        return task_id

    def before(self, evaluation: Evaluation, identity: dict[str, Any], task_settings: dict[str, Any]) -> None:
        loaded = evaluation.loaded
        note_older_extraction(evaluation.run.db, evaluation.key, evaluation.entry.spec.id, loaded.task.id, identity,
                              data_variants(task_settings, loaded.data_sha256, loaded.legacy_data_sha256),
                              evaluation.run.reporter.note)

    def prepare(self, evaluation: Evaluation, item: Item) -> ItemOutcome:
        return ItemOutcome(evaluation.task.prompt(item, evaluation.context))

    def ask(self, evaluation: Evaluation, item: Item, outcome: ItemOutcome, native: NativeCall) -> None:
        assert outcome.prompt is not None
        task = evaluation.task
        with native():
            outcome.generation = evaluation.engine.generate(GenerateRequest(outcome.prompt, task.max_tokens,
                                                                            task.stop))

    def score(self, evaluation: Evaluation, item: Item, outcome: ItemOutcome) -> tuple[Score, Generation]:
        assert outcome.prompt is not None and outcome.generation is not None
        return evaluation.task.score(item, outcome.generation, outcome.prompt.plan), outcome.generation
