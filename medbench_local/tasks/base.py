"""The task contract: what a task must provide (``TaskBase``), and the values that flow between stages
(values.py, re-exported here).

A task is three small parts: ``load`` (dataset file -> TaskData: items with stable ids, plus the few-shot
examples taken from the same file), ``prompt`` (Item + PromptContext -> Prompt) and ``score`` (Item +
Generation -> Score). Everything a task's numbers depend on is returned by ``settings()`` (and the few-shot
examples' hash) and goes into the evaluation identity, so changing a prompt, the shots or a token budget never
mixes old and new results.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from ..engine.base import Generation
from ..errors import UserError
from ..prompting import Prompt
from .datafiles import DataLayout
from .prompts import load_override
from .values import OUTCOMES, Item, PromptContext, Score, TaskData, canonical_json, sha256_text

__all__ = ["ACCURACY", "BERTSCORE_METRICS", "METRIC_KINDS", "OUTCOMES", "TASK_OPTIONS", "UMLS_METRICS", "Item",
           "MetricSpec", "PromptContext", "Score", "StudyRole", "TaskBase", "TaskData", "TaskOption", "binary",
           "canonical_json", "continuous", "sha256_text"]

METRIC_KINDS: tuple[str, ...] = ("binary", "continuous")


@dataclass(frozen=True)
class MetricSpec:
    """One per-item metric a task writes, declared as a value so that nothing outside the task keeps a list.

    ``kind`` decides the statistics: ``binary`` (right/wrong per item: Wilson intervals, exact McNemar) or
    ``continuous`` (ROUGE, F1: bootstrap, permutation test). ``reported``: ``compare`` shows it (False for
    per-item accounting and components such as ICD precision/recall). ``optional``: written later by
    ``rescore`` (BERTScore, UMLS-F1), so a plain run does not have it and an error item does not get it.
    ``description``: what one value means, for readers of the database (the glossary of 'view',
    store/catalog.py). The result views get a column for every metric a registered task declares (store/views.py),
    so a task with a new metric changes nothing outside its own module and the registry.
    """

    name: str
    kind: str = "continuous"
    reported: bool = True
    optional: bool = False
    description: str = ""

    def __post_init__(self) -> None:
        if self.kind not in METRIC_KINDS:
            raise ValueError(f"metric {self.name!r}: kind must be one of {', '.join(METRIC_KINDS)}, got {self.kind!r}")


def binary(*names: str, reported: bool = True) -> tuple[MetricSpec, ...]:
    return tuple(MetricSpec(n, "binary", reported) for n in names)


def continuous(*names: str, reported: bool = True, optional: bool = False) -> tuple[MetricSpec, ...]:
    return tuple(MetricSpec(n, "continuous", reported, optional) for n in names)


#: The multiple-choice metric, declared once for every task that reads one answer.
ACCURACY = MetricSpec("accuracy", "binary", description="1 when the extracted answer equals the gold answer, else 0 "
                                                        "(unparseable, truncated, error: 0)")


def _optional(family: str, title: str) -> tuple[MetricSpec, ...]:
    return tuple(MetricSpec(f"{family}_{part}", "continuous", optional=True,
                            description=f"{title} {word} (added by 'rescore --metric {family}')")
                 for part, word in (("f1", "F1"), ("precision", "precision"), ("recall", "recall")))


#: What ``rescore --metric bertscore`` / ``--metric umls`` write, in display order (the headline F1 first).
BERTSCORE_METRICS = _optional("bertscore", "BERTScore")
UMLS_METRICS = _optional("umls", "UMLS concept")

#: The options ``configure`` knows; a task lists the ones it takes in ``configurable``.


@dataclass(frozen=True)
class StudyRole:
    """How a task figures in the study medbench-local reproduces (Dorfner et al., and the CLUE benchmark's
    reference code and leaderboard): read only by ``reproduce``, ``rescore --metric`` and the reference-quirks
    aggregation, so the generic contract (``TaskBase``) carries one value instead of seven settings. A task
    outside the study leaves it empty.

    * ``quirk_counts_first_twice``: under ``--reference-quirks`` the CLUE reference counted the first item twice
      in its mean (``update_results``; every CLUE task but LongHealth; docs/study-reference.md#reference-quirks).
    * ``clue_level`` / ``clue_metrics``: the CLUE Level (1 or 2) this task is a component of, and the metrics
      averaged into it. ``published_columns``: published table column -> our metric name.
    * ``rescore_texts``: optional metric family (``bertscore``, ``umls``) -> how the reference prepared the texts
      (``as is``, ``lower-cased``, ``original case``); ``bertscore_model``: which BERTScore model (by name).
    * ``study_benchmark``: the benchmark's name in the study abstract's table (case challenges).
    """

    quirk_counts_first_twice: bool = False
    clue_level: int | None = None
    clue_metrics: tuple[str, ...] = ()
    published_columns: tuple[tuple[str, str], ...] = ()
    rescore_texts: tuple[tuple[str, str], ...] = ()
    bertscore_model: str | None = None
    study_benchmark: str | None = None

    def rescore_text(self, family: str) -> str | None:
        """How the texts are prepared for optional metric ``family``, or None when it does not apply."""
        return dict(self.rescore_texts).get(family)


@dataclass(frozen=True)
class TaskOption:
    """A ``run`` option that only some tasks take, beside ``prompts`` and ``reference_quirks``: a task that takes
    it lists ``name`` in ``configurable`` and has a field of that name; every task keeps its identity under the
    ``neutral`` value, and one without the option refuses any other value with its own line (``lacking``), since
    the option would silently mean nothing there."""

    name: str
    flag: str
    neutral: Any
    lacking: str


#: The task-specific options ``configure`` knows, declared as data so that the generic ``configure`` names none.
TASK_OPTIONS: dict[str, TaskOption] = {option.name: option for option in (
    TaskOption("document_order", "--document-order", "per-question",
               "has no documents to order (it applies to longhealth)"),
)}

T = TypeVar("T", bound="TaskBase")


class TaskBase:
    """The task contract, and what every built-in task shares: the metric views of ``metrics``, zero metrics for a
    failed item, and ``configure``. Tasks are frozen dataclasses that inherit from it, declare what is theirs and
    implement ``load``, ``prompt``, ``score`` and ``settings``.

    Declarations a task may override (class attributes or dataclass fields):

    * ``metrics``: the per-item metrics it writes (``MetricSpec``: kind, whether compare reports it, optional,
      what a value means), declared once: the statistics, the result views and their glossary follow from them.
    * ``configurable``: the ``configure`` options it takes (``prompts`` for every template task, and the
      task-specific ``TASK_OPTIONS`` it has a field for).
    * ``multiple_choice``: it has ``choices()`` (``run --scoring loglik|constrained``).
    * ``study``: its role in the study being reproduced (``StudyRole``).
    * ``data_layout``: what its data file looks like (``datafiles.DataLayout``: released name, record format, a
      minimal valid sample, required text fields, id field), from which the hostile-input table of
      tests/test_datafiles_all_tasks.py damages a file of this task's own format.
    """

    id: str
    title: str
    description: str
    data_format: str
    max_tokens: int
    stop: tuple[str, ...]  # a field, or a property computed from the task's template (mypy: override ignored there)
    metrics: tuple[MetricSpec, ...] = ()
    configurable: tuple[str, ...] = ()
    multiple_choice: bool = False
    study: StudyRole = StudyRole()
    data_layout: DataLayout | None = None

    def load(self, path: Path) -> TaskData:
        raise NotImplementedError

    def prompt(self, item: Item, context: PromptContext) -> Prompt:
        raise NotImplementedError

    def score(self, item: Item, generation: Generation, plan: Any = None) -> Score:
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        """Everything the task's numbers depend on: part of the evaluation key."""
        raise NotImplementedError

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

    def error_metrics(self, item: Item) -> dict[str, float]:
        """Metrics of an item whose generation failed: zero on every metric a run computes, so an error never
        flatters a model. Tasks whose metrics apply to subsets of items override it."""
        return {name: 0.0 for name in self.metric_names}

    def choices(self, item: Item, context: PromptContext, target: str = "letter") -> Any:
        raise UserError(f"task '{self.id}' is not multiple choice")

    def configure(self: T, *, prompts: Path | None = None, reference_quirks: bool = False, **options: Any) -> T:
        """A configured copy (the registry's task is never changed).

        ``prompts``: a prompt override file (``run --prompts``), checked against the task's template.
        ``reference_quirks``: reproduce the CLUE reference's quirks. A task that has none (its scoring already is
        the reference's, e.g. the case challenges) takes it as a no-op, so ``run --reference-quirks`` can name
        several tasks at once; its identity does not change. ``options``: the task-specific ``TASK_OPTIONS``
        (e.g. ``document_order``); None or the neutral value changes nothing, another value is set on a task
        that takes the option and refused, in one line, by one that does not.
        """
        changes: dict[str, Any] = {}
        if prompts is not None:
            if "prompts" not in self.configurable:
                raise UserError(f"task '{self.id}' has no prompt template to override (--prompts)")
            changes["template"] = load_override(Path(prompts), self.template)  # type: ignore[attr-defined]
        if reference_quirks and "reference_quirks" in self.configurable:
            changes["reference_quirks"] = True
        for name, value in options.items():
            option = TASK_OPTIONS.get(name)
            if option is None:
                raise TypeError(f"configure() got an unknown option {name!r} (known: {', '.join(TASK_OPTIONS)})")
            if value is None or value == option.neutral:
                continue
            if name not in self.configurable:
                raise UserError(f"{option.flag} {value}: task '{self.id}' {option.lacking}; run this task without it")
            changes[name] = value
        return replace(self, **changes) if changes else self  # type: ignore[type-var]
