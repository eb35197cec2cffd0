"""The task contract: what a task must provide, and the values that flow between stages.

A task is three small parts: ``load`` (dataset file -> Items with stable ids), ``prompt`` (Item -> Prompt) and
``score`` (Item + Generation -> Score). Everything a task's numbers depend on is returned by ``settings()``
and hashed into the evaluation identity, so changing a prompt or a token budget never mixes old and new
results.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..engine.base import Generation, Prompt

OUTCOMES: tuple[str, ...] = ("correct", "wrong", "unparseable", "truncated", "error")


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


class Task(Protocol):
    id: str
    title: str
    description: str
    data_format: str
    metric_names: tuple[str, ...]
    max_tokens: int
    stop: tuple[str, ...]

    def load(self, path: Path) -> list[Item]: ...

    def prompt(self, item: Item) -> Prompt: ...

    def score(self, item: Item, generation: Generation) -> Score: ...

    def settings(self) -> dict[str, Any]: ...
