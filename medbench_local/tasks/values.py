"""The values that flow between a task's stages (load -> prompt -> score) and out of them, and the stable
hashing their identities are made of.

Why a module of its own, below the task contract (base.py): the data-file helpers (datafiles.py) make ``Item``s
and the prompt templates (prompts.py) hash with ``canonical_json``, while the contract itself names both of them
(``TaskBase.data_layout``, ``configure(prompts=...)``); with these values in base.py the three imported each other
(tests/test_layering.py now refuses any import circle between modules). base.py re-exports them: a task imports
the contract and its values from one place.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

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
