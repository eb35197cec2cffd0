"""Overlap of a run's tasks with an indexed corpus: each item's text (the same plain rendering as the probe's),
looked up and stored per item under the corpus identity (a lookup costs milliseconds, so a rerun simply
measures again and replaces the rows of the same identity)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import sqlite_utils

from ..runner.inputs import LoadedTask
from ..store import contamination as stored
from ..store.ngram_index import NgramIndex
from .overlap import NORMALISATION, ItemOverlap, corpus_files, corpus_identity, index_corpus, item_overlap
from .text import TEXT_VERSION, item_text

__all__ = ["NORMALISATION", "NgramIndex", "TaskOverlap", "corpus_files", "index_corpus", "measure"]


@dataclass
class TaskOverlap:
    task: str
    corpus: str
    identity: dict[str, Any]
    items: dict[str, ItemOverlap] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"task": self.task, "corpus": self.corpus, "n": self.identity["n"],
                "files": self.identity["files"],
                "items": [{"item": i, "ngrams": r.ngrams, "found": r.found, "share": r.share,
                           "longest_run": r.longest_run} for i, r in self.items.items()]}


def measure(db: sqlite_utils.Database, index: NgramIndex, tasks: list[LoadedTask], n: int) -> list[TaskOverlap]:
    identity = {**corpus_identity(index, n), "text_version": TEXT_VERSION}
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    stored.record_corpus(db, key, identity)
    found = []
    for loaded in tasks:
        result = TaskOverlap(loaded.task.id, key, identity)
        for item in loaded.items:
            text = item_text(item.payload)
            overlap = item_overlap(index, text, n)
            result.items[item.id] = overlap
            stored.record_overlap(db, key, loaded.task.id, item.id,
                                  text_sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
                                  ngrams=overlap.ngrams, found=overlap.found, longest_run=overlap.longest_run)
        found.append(result)
    return found
