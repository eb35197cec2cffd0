"""The membership probe of one model on one task's items: each item's own text and its control, scored through
the engine's whole-text path (``LlamaEngine.text_logits``), one stored row per item.

Why per model and not per pair: each model is loaded once and reads every text (originals and controls); the
pair's paired signal is computed afterwards from the stored rows (``summary.py``), so a rerun, a second pair
sharing a model, or a Ctrl-C in the middle costs nothing already stored.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import sqlite_utils

from ..engine.llama import TEXT_CHUNK  # positions per decode; recorded: chunking may change the last bits
from ..store import contamination as stored
from ..store.writer import record_model
from ..tasks.base import Item
from .control import REWRITE_VERSION, rewrite
from .signals import DEFAULT_K, TokenStats, item_signals, position_stats
from .text import TEXT_VERSION, item_text

PROBE_VERSION = "probe-1"


class TextScorer(Protocol):
    """What the probe needs of an engine: its identity, its model record and every position's logits."""

    info: Any

    def identity(self) -> dict[str, Any]: ...

    def text_logits(self, text: str, consume: Callable[[Any, Any], None], *, chunk: int = ...) -> tuple[int, int]: ...


@dataclass(frozen=True)
class ProbeSettings:
    """What, besides the model, decides a probe's numbers; all of it is in the stored identity."""

    k: float = DEFAULT_K
    seed: int = 0
    control: str = "rewrite"  # or "file:<sha256 of the user's control data>"

    def identity(self, task: str) -> dict[str, Any]:
        found: dict[str, Any] = {"probe_version": PROBE_VERSION, "text_version": TEXT_VERSION, "k": self.k,
                                 "control": self.control, "seed": self.seed, "chunk": TEXT_CHUNK, "task": task}
        if self.control == "rewrite":
            found["rewrite_version"] = REWRITE_VERSION
        return found


@dataclass(frozen=True)
class ProbeText:
    variant: str  # "original" or "control"
    item_id: str
    text: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


def probe_texts(items: list[Item], control_items: list[Item] | None, seed: int) -> list[ProbeText]:
    """The texts one model reads: every item's own text, then the controls (the tool's rewrite of the same items,
    or the user's own items)."""
    texts = [ProbeText("original", item.id, item_text(item.payload)) for item in items]
    if control_items is None:
        texts += [ProbeText("control", item.id, item_text(rewrite(item.payload, seed=seed, item_id=item.id)))
                  for item in items]
    else:
        texts += [ProbeText("control", item.id, item_text(item.payload)) for item in control_items]
    return [t for t in texts if t.text.strip()]


def probe_key(identity: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def probe_model(db: sqlite_utils.Database, engine: TextScorer, *, role: str, pair: str, task: str,
                texts: list[ProbeText], settings: ProbeSettings,
                advance: Callable[[bool], None] = lambda skipped: None) -> str:
    """Score every text not yet stored under this probe's identity; returns the probe key. Each item is committed
    on its own (store/contamination.py), so an interruption loses at most the item in flight. ``advance(skipped)``
    is called once per text."""
    identity = {**settings.identity(task), "engine": engine.identity()}
    key = probe_key(identity)
    record_model(db, engine.info)
    stored.record_probe(db, key, model_id=engine.info.model_id, model_sha256=engine.info.sha256, role=role,
                        pair=pair, task=task, identity=identity)
    done = stored.stored_signals(db, key)
    for text in texts:
        if done.get((text.variant, text.item_id)) == text.sha256:
            advance(True)
            continue
        parts: list[TokenStats] = []
        started = time.perf_counter()
        tokens, cut = engine.text_logits(text.text, lambda rows, targets: parts.append(position_stats(rows, targets)),
                                         chunk=TEXT_CHUNK)
        signals = item_signals(TokenStats.concat(parts), text.text, settings.k)
        stored.record_signals(db, key, text.variant, text.item_id, text_sha256=text.sha256, tokens=tokens,
                              truncated=cut, signals=signals, seconds=time.perf_counter() - started)
        advance(False)
    return key
