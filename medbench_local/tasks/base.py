"""The task contract: what a task must provide, and the values that flow between stages.

A task is three small parts: ``load`` (dataset file -> TaskData: items with stable ids, plus the few-shot
examples taken from the same file), ``prompt`` (Item + PromptContext -> Prompt) and ``score`` (Item +
Generation -> Score). Everything a task's numbers depend on is returned by ``settings()`` (and the few-shot
examples' hash) and goes into the evaluation identity, so changing a prompt, the shots or a token budget never
mixes old and new results.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from ..engine.base import Generation
from ..prompting import Prompt
from ..errors import UserError

if TYPE_CHECKING:
    from .datafiles import DataLayout

# correct/wrong: a discrete answer was read; scored: a free-text answer got continuous metrics (ROUGE, F1);
# unparseable: no answer could be read (or the output only echoed the options); conflict: a letter was stated
# with the text of a different option; truncated: the token budget ran out first; error: generation failed.
OUTCOMES: tuple[str, ...] = ("correct", "wrong", "scored", "unparseable", "conflict", "truncated", "error")


def canonical_json(value: Any) -> str:
    """Stable JSON for hashing: sorted keys, no whitespace variance, UTF-8 preserved."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Item:
    """One evaluation item. ``payload`` is task-specific and JSON-serialisable; ``source`` is file:line."""

    id: str
    payload: dict[str, Any]
    source: str = ""

    @property
    def content_sha256(self) -> str:
        return sha256_text(canonical_json(self.payload))


@dataclass(frozen=True)
class Score:
    """The scorer's verdict. ``outcome`` is always one of OUTCOMES: never a silent zero."""

    outcome: str
    extracted: str | None = None
    gold: str | None = None
    method: str = ""
    detail: str = ""
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskData:
    """What ``load`` returns: the items to evaluate, the few-shot examples (never evaluated), and shared
    documents that prompts draw from (LongHealth's patient records; stored once, not in every item)."""

    items: list[Item]
    shots: tuple[Item, ...] = ()
    documents: tuple[Item, ...] = ()

    @property
    def shots_sha256(self) -> str | None:
        return sha256_text(canonical_json([s.payload for s in self.shots])) if self.shots else None

    @property
    def documents_sha256(self) -> str | None:
        return sha256_text(canonical_json([[d.id, d.payload] for d in self.documents])) if self.documents else None


def _no_tokenizer(text: str) -> int:
    raise RuntimeError("this task needs the model's tokenizer, but none was given")


@dataclass(frozen=True)
class PromptContext:
    """What a prompt builder may use besides the item: few-shot examples, shared documents, and the model's
    token counter (LongHealth fills a token budget measured with the model's own tokenizer)."""

    shots: Sequence[Item] = ()
    documents: Sequence[Item] = ()
    count_tokens: Callable[[str], int] = _no_tokenizer
    n_ctx: int = 0


METRIC_KINDS: tuple[str, ...] = ("binary", "continuous")


@dataclass(frozen=True)
class MetricSpec:
    """One per-item metric a task writes, declared as a value so that nothing outside the task keeps a list.

    ``kind`` decides the statistics: ``binary`` (right/wrong per item: Wilson intervals, exact McNemar) or
    ``continuous`` (ROUGE, F1: bootstrap, permutation test). ``reported``: ``compare`` shows it (False for
    per-item accounting and components such as ICD precision/recall). ``optional``: written later by
    ``rescore`` (BERTScore, UMLS-F1), so a plain run does not have it and an error item does not get it.
    """

    name: str
    kind: str = "continuous"
    reported: bool = True
    optional: bool = False

    def __post_init__(self) -> None:
        if self.kind not in METRIC_KINDS:
            raise ValueError(f"metric {self.name!r}: kind must be one of {', '.join(METRIC_KINDS)}, got {self.kind!r}")


def binary(*names: str, reported: bool = True) -> tuple[MetricSpec, ...]:
    return tuple(MetricSpec(n, "binary", reported) for n in names)


def continuous(*names: str, reported: bool = True, optional: bool = False) -> tuple[MetricSpec, ...]:
    return tuple(MetricSpec(n, "continuous", reported, optional) for n in names)


#: What ``rescore --metric bertscore`` / ``--metric umls`` write, in display order.
BERTSCORE_METRICS = continuous("bertscore_f1", "bertscore_precision", "bertscore_recall", optional=True)
UMLS_METRICS = continuous("umls_f1", "umls_precision", "umls_recall", optional=True)

#: The options ``configure`` knows; a task lists the ones it takes in ``configurable``.
CONFIGURE_OPTIONS: tuple[str, ...] = ("prompts", "reference_quirks", "document_order")
DEFAULT_DOCUMENT_ORDER = "per-question"


class Task(Protocol):
    id: str
    title: str
    description: str
    data_format: str
    metrics: tuple[MetricSpec, ...]
    max_tokens: int
    stop: tuple[str, ...]
    multiple_choice: bool
    data_layout: DataLayout | None

    @property
    def metric_names(self) -> tuple[str, ...]: ...

    def load(self, path: Path) -> TaskData: ...

    def prompt(self, item: Item, context: PromptContext) -> Prompt: ...

    def score(self, item: Item, generation: Generation, plan: Any = None) -> Score: ...

    def error_metrics(self, item: Item) -> dict[str, float]: ...

    def settings(self) -> dict[str, Any]: ...

    def configure(self, *, prompts: Path | None = None, reference_quirks: bool = False,
                  document_order: str | None = None) -> "Task": ...


T = TypeVar("T", bound="TaskBase")


class TaskBase:
    """What every built-in task shares: the metric views of ``metrics``, zero metrics for a failed item, and
    ``configure``. Tasks are frozen dataclasses that inherit from it and override only what differs.

    Declarations a task may override (class attributes or dataclass fields):

    * ``configurable``: the ``configure`` options it takes (``prompts`` for every template task).
    * ``multiple_choice``: it has ``choices()`` (``run --scoring loglik|constrained``).
    * ``quirk_counts_first_twice``: under ``--reference-quirks`` the CLUE reference counted the first item twice
      in its mean (``update_results``; every CLUE task but LongHealth; docs/study-reference.md#reference-quirks).
    * ``clue_level`` / ``clue_metrics``: the CLUE Level (1 or 2) this task is a component of, and the metrics
      averaged into it. ``published_columns``: published table column -> our metric name.
    * ``rescore_texts``: optional metric family (``bertscore``, ``umls``) -> how the reference prepared the texts
      (``as is``, ``lower-cased``, ``original case``); ``bertscore_model``: which BERTScore model (by name).
    * ``study_benchmark``: the benchmark's name in the study abstract's table (case challenges).
    * ``data_layout``: what its data file looks like (``datafiles.DataLayout``: released name, record format, a
      minimal valid sample, required text fields, id field), from which the hostile-input table of
      tests/test_datafiles_all_tasks.py damages a file of this task's own format.
    """

    id: str
    metrics: tuple[MetricSpec, ...] = ()
    configurable: tuple[str, ...] = ()
    multiple_choice: bool = False
    quirk_counts_first_twice: bool = False
    clue_level: int | None = None
    clue_metrics: tuple[str, ...] = ()
    published_columns: tuple[tuple[str, str], ...] = ()
    rescore_texts: tuple[tuple[str, str], ...] = ()
    bertscore_model: str | None = None
    study_benchmark: str | None = None
    data_layout: DataLayout | None = None

    @property
    def metric_names(self) -> tuple[str, ...]:
        """The metrics ``score`` computes on every run (optional ones come from ``rescore``)."""
        return tuple(m.name for m in self.metrics if not m.optional)

    @property
    def reported_metrics(self) -> tuple[str, ...]:
        """What ``compare`` shows, in order (optional ones when present)."""
        return tuple(m.name for m in self.metrics if m.reported)

    def metric(self, name: str) -> MetricSpec | None:
        return next((m for m in self.metrics if m.name == name), None)

    def rescore_text(self, family: str) -> str | None:
        """How the texts are prepared for optional metric ``family``, or None when it does not apply."""
        return dict(self.rescore_texts).get(family)

    def error_metrics(self, item: Item) -> dict[str, float]:
        """Metrics of an item whose generation failed: zero on every metric a run computes, so an error never
        flatters a model. Tasks whose metrics apply to subsets of items override it."""
        return {name: 0.0 for name in self.metric_names}

    def choices(self, item: Item, context: PromptContext, target: str = "letter") -> Any:
        raise UserError(f"task '{self.id}' is not multiple choice")

    def configure(self: T, *, prompts: Path | None = None, reference_quirks: bool = False,
                  document_order: str | None = None) -> T:
        """A configured copy (the registry's task is never changed).

        ``prompts``: a prompt override file (``run --prompts``), checked against the task's template.
        ``reference_quirks``: reproduce the CLUE reference's quirks. A task that has none (its scoring already is
        the reference's, e.g. the case challenges) takes it as a no-op, so ``run --reference-quirks`` can name
        several tasks at once; its identity does not change. ``document_order``: LongHealth's document shuffle
        (``per-question`` | ``per-patient``); a non-default order on a task without documents is an error,
        because it would silently mean nothing.
        """
        changes: dict[str, Any] = {}
        task_id = self.id
        if prompts is not None:
            if "prompts" not in self.configurable:
                raise UserError(f"task '{task_id}' has no prompt template to override (--prompts)")
            from .prompts import load_override

            changes["template"] = load_override(Path(prompts), self.template)  # type: ignore[attr-defined]
        if reference_quirks and "reference_quirks" in self.configurable:
            changes["reference_quirks"] = True
        if document_order is not None and document_order != DEFAULT_DOCUMENT_ORDER:
            if "document_order" not in self.configurable:
                raise UserError(f"--document-order {document_order}: task '{task_id}' has no documents to order "
                                "(it applies to longhealth); run this task without it")
            changes["document_order"] = document_order
        return replace(self, **changes) if changes else self  # type: ignore[type-var]
