"""The values a run passes around, and what a scoring mode implements.

Why one context: an evaluation's item loop needs the database, the engine, the loaded task, the scoring mode,
the key, the prompt context, the options, the summary, the reporter, the stop flag and the item claims; passed
one by one they were 11 to 13 arguments through five functions. ``RunContext`` holds what every evaluation of a
run shares, ``Evaluation`` one evaluation (one model, one task, one scoring mode, one key); the loop passes one
``Evaluation``.

Why strategies: each scoring mode (modes/: generate, loglik, constrained) differs in four places only: what it
adds to the task settings (so to the key), how it asks the engine for an item, how it scores the answer and which
tokens its progress counts. ``ScoringMode`` names those places; the loop in evaluation.py has no branch on a mode,
so a new mode is one module in modes/ and one line in its registry.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import sqlite_utils

from ..config import ModelSpec
from ..engine.base import Engine, Generation, Loglikelihoods
from ..prompting import Prompt
from ..signals import StopFlag
from ..store.claims import ItemClaims
from ..tasks.base import Item, PromptContext, Score, TaskBase
from ..tasks.loglik_scoring import ChoiceSet
from .arm import ArmRetrieval, ArmTask
from .inputs import LoadedTask, ModelRole, Shard

# The ranges of the numeric run and statistics settings (cli/limits.py explains why they are bounded): llama.cpp
# receives threads, batch size and seed as C integers; the API and the CLI check the same ranges.
MAX_THREADS = 512           # GGML_MAX_N_THREADS
MAX_BATCH = 65_536          # llama.cpp processes at most n_ctx tokens per batch anyway
MAX_LLAMA_SEED = 2**32 - 2  # uint32; 2**32 - 1 is LLAMA_DEFAULT_SEED, i.e. "random"
MAX_STATS_SEED = 2**32 - 1
MIN_RESAMPLES, MAX_RESAMPLES = 100, 1_000_000


@dataclass
class RunOptions:
    seed: int = 1234
    n_threads: int | None = None
    n_batch: int = 512
    limit: int | float | None = None   # N items, or a fraction in (0, 1) of each task's items
    limit_mode: str = "random"         # "random": seeded sample (see sample_items); "first": the file's first N
    retry_errors: bool = False
    store_inputs: bool = True
    allow_cpu: bool = False
    shard: Shard | None = None
    scoring: tuple[str, ...] = ("generate",)   # each mode is a separate evaluation of the same items
    loglik_target: str = "letter"              # continuations for loglik/constrained: " A" or the option text
    kv_reuse: bool = True                      # keep a shared prompt prefix in the KV cache (outputs unchanged)
    command: list[str] = field(default_factory=list)


@dataclass
class RunSummary:
    run_id: str
    status: str = "completed"
    generated: int = 0
    skipped: int = 0
    errors: int = 0
    held_elsewhere: int = 0   # items a concurrent run of the same model and task was generating: left to it
    done_elsewhere: int = 0   # items a concurrent run finished first (ours was dropped, theirs kept)
    stop_signal: str = ""     # the signal that stopped the run, if any (SIGINT, SIGTERM, SIGHUP)
    first_error: str = ""     # the first item error's message, as stored (for the line of a failed run)


class Reporter(Protocol):
    def begin(self, model_id: str, task_id: str, total: int, already_done: int) -> None: ...

    def advance(self, score: Score, tokens: int, seconds: float) -> None:
        """``tokens``: generated, or for loglik the prompt tokens read."""

    def end(self) -> None: ...

    def note(self, text: str) -> None: ...


EngineFactory = Callable[[ModelSpec, Path, RunOptions], Engine]


@dataclass(frozen=True)
class RunContext:
    """What every evaluation of one run shares. ``new_models``: the model rows this run added (taken back when
    the run stores nothing, ``writer.forget_unstarted_run``)."""

    db: sqlite_utils.Database
    options: RunOptions
    reporter: Reporter
    summary: RunSummary
    stop: StopFlag
    claims: ItemClaims
    new_models: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Evaluation:
    """One evaluation being run: one model, one task, one scoring mode, stored under ``key``."""

    run: RunContext
    entry: ModelRole
    engine: Engine
    loaded: LoadedTask
    mode: ScoringMode
    key: str
    context: PromptContext
    retrieval: ArmRetrieval | None = None   # an arm's retrieval (runner/arm.py); None for a plain model

    @property
    def task(self) -> TaskBase:
        """The task; for an arm, the task with passages added to its prompts (arm.ArmTask)."""
        if self.retrieval is None:
            return self.loaded.task
        return ArmTask(self.loaded.task, self.retrieval)  # type: ignore[return-value]


@dataclass
class ItemOutcome:
    """What computing one item produced, before anything is stored (evaluation.compute_item). A mode fills in
    ``prompt`` and ``choices`` before it asks the engine, so that a failure is stored with them."""

    prompt: Prompt | None
    choices: ChoiceSet | None = None
    result: Loglikelihoods | None = None   # loglik
    generation: Generation | None = None   # generate, constrained
    error: Exception | None = None


#: ``native()`` in ``ScoringMode.ask``: the engine call inside it may be aborted by a second stop signal.
NativeCall = Callable[[], AbstractContextManager[None]]


class ScoringMode:
    """How one scoring mode obtains and scores an item's answer (modes/: one subclass per mode).

    ``prepare`` runs before the net that turns engine failures into ``error`` items (a task's own prompt
    builder failing is a bug, not an item error); ``ask`` runs inside it (RuntimeError, ValueError and OSError
    become the item's error) and must not touch the database: for served models it runs in a worker thread.
    """

    name: str = ""
    needs_choices: bool = False  # the mode scores a task's options (``Task.choices``): multiple choice only

    def task_settings(self, target: str) -> dict[str, Any]:
        """What the mode adds to the task settings, hence to the evaluation key (``target``: --loglik-target)."""
        return {}

    def label(self, task_id: str) -> str:
        """How progress names the evaluation."""
        return f"{task_id} ({self.name})"

    def before(self, evaluation: Evaluation, identity: dict[str, Any], task_settings: dict[str, Any]) -> None:
        """Called once before the evaluation is recorded (its key may not exist yet): notes for the user."""

    def prepare(self, evaluation: Evaluation, item: Item) -> ItemOutcome:
        return ItemOutcome(None)

    def ask(self, evaluation: Evaluation, item: Item, outcome: ItemOutcome, native: NativeCall) -> None:
        raise NotImplementedError

    def score(self, evaluation: Evaluation, item: Item, outcome: ItemOutcome) -> tuple[Score, Generation]:
        """The verdict and the generation to store, for an outcome without an error."""
        raise NotImplementedError

    def progress_tokens(self, generation: Generation) -> int:
        """The tokens progress counts per second: generated ones."""
        return generation.completion_tokens
