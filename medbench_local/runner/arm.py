"""An arm's retrieval inside a run: the index opened once per model, each item's passages found before its
prompt is rendered, placed into the task's prompt, and handed to the item's commit to be stored.

Why a view of the task instead of a change to every scoring mode: the modes ask ``evaluation.task`` for an item's
prompt (generate) or its options with their context (loglik, constrained); for an arm, ``evaluation.task`` is an
``ArmTask`` whose ``prompt`` and ``choices`` return the task's own with the passages added (retrieval/augment.py).
So retrieval happens before rendering in every mode, and a new mode or task needs nothing for arms.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from typing import Any

from ..config import ModelSpec, RetrievalSpec
from ..errors import UserError
from ..prompting import Prompt
from ..retrieval.augment import fit_passages, room_for_passages, with_passages
from ..retrieval.index import RetrievalIndex
from ..retrieval.query import fts_query, query_text
from ..tasks.base import Item, PromptContext, TaskBase
from ..tasks.loglik_scoring import ChoiceSet

RETRIEVAL_VERSION = 1  # how passages are searched, fitted and placed; part of every arm's identity


def open_arm_index(spec: ModelSpec) -> RetrievalIndex:
    """The arm's index, opened read-only with its content identity checked; one line naming the arm otherwise."""
    assert spec.retrieval is not None
    try:
        return RetrievalIndex(spec.retrieval.index)
    except UserError as exc:
        raise UserError(f"arm '{spec.id}': {exc}") from None


def arm_identity(retrieval: RetrievalSpec, index: RetrievalIndex) -> dict[str, Any]:
    """What an arm adds to its model's identity (so to every evaluation key): the index's content SHA-256, the
    index's own settings and the arm's retrieval settings. The index's path is left out (moving the file changes
    nothing it computes)."""
    return {"version": RETRIEVAL_VERSION, "index_sha256": index.identity, "index_settings": index.settings,
            **retrieval.settings()}


class ArmRetrieval:
    """Retrieval for one arm in one evaluation. Results wait per item key until the item's commit takes them
    (items may be computed in worker threads, for served models)."""

    def __init__(self, spec: RetrievalSpec, index: RetrievalIndex, task: TaskBase) -> None:
        self.spec = spec
        self.index = index
        self.task = task
        self._found: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def augment(self, item: Item, prompt: Prompt, context: PromptContext) -> Prompt:
        """``prompt`` with the item's passages; the retrieval is recorded for the item's commit."""
        started = time.perf_counter()
        query = query_text(item.payload, self.spec.query, fallback=prompt.user)
        hits = self.index.search(fts_query(query), self.spec.k)
        elapsed_ms = (time.perf_counter() - started) * 1000
        budget = self.spec.passage_budget
        if context.n_ctx:
            budget = min(budget, room_for_passages(prompt, context.n_ctx, int(getattr(self.task, "max_tokens", 0)),
                                                   context.count_tokens))
        placed = fit_passages([(hit.id, hit.text) for hit in hits], budget, context.count_tokens, self.spec.order)
        record = {"index_sha256": self.index.identity, "query": query, "retrieval_ms": round(elapsed_ms, 3),
                  "passages": [{"id": hit.id, "score": round(hit.score, 6), "placed": hit.id in placed.ids,
                                "text": hit.text} for hit in hits],
                  "placed": len(placed.ids), "passage_tokens": placed.tokens}
        with self._lock:
            self._found[item.id] = record
        return with_passages(prompt, placed.block, self.spec.placement)

    def take(self, item: Item) -> dict[str, Any] | None:
        """The item's retrieval, once (None when its prompt was never built, e.g. a task error before it)."""
        with self._lock:
            return self._found.pop(item.id, None)


class ArmTask:
    """The task as an arm's evaluation sees it: its own prompts with passages added; everything else is the
    task's (scoring, settings, metrics)."""

    def __init__(self, task: TaskBase, retrieval: ArmRetrieval) -> None:
        self._task = task
        self._retrieval = retrieval

    def __getattr__(self, name: str) -> Any:
        return getattr(self._task, name)

    def prompt(self, item: Item, context: PromptContext) -> Prompt:
        return self._retrieval.augment(item, self._task.prompt(item, context), context)

    def choices(self, item: Item, context: PromptContext, target: str = "letter") -> ChoiceSet:
        found = self._task.choices(item, context, target)
        return replace(found, context=self._retrieval.augment(item, found.context, context))
