"""The contamination probe's rows (tables of migration m006_contamination): writing one item per transaction,
so Ctrl-C loses at most the item in flight, and reading them back for the summary.

Keys are SHA-256 hashes of what identifies a row (``row_key``), so a rerun finds what is stored and ``merge``
keeps the first copy of each."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import sqlite_utils

from ..gates.stored import load_object
from .writer import now, transaction

SIGNAL_COLUMNS = ("loss", "zlib", "min_k", "min_k_pp")


def row_key(*parts: object) -> str:
    return hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).hexdigest()


def record_probe(db: sqlite_utils.Database, key: str, *, model_id: str, model_sha256: str, role: str, pair: str,
                 task: str, identity: dict[str, Any]) -> None:
    with transaction(db):
        db.conn.execute("insert or ignore into contamination_probes (key, model_id, model_sha256, role, pair, task, "
                        "identity, created_at) values (?, ?, ?, ?, ?, ?, ?, ?)",
                        (key, model_id, model_sha256, role, pair, task, json.dumps(identity, sort_keys=True), now()))


def stored_signals(db: sqlite_utils.Database, probe: str) -> dict[tuple[str, str], str]:
    """(variant, item id) -> SHA-256 of the text stored for it, for every item this probe holds (a rerun skips
    those whose text is unchanged)."""
    return {(v, i): t for v, i, t in db.conn.execute(
        "select variant, item_id, text_sha256 from contamination_signals where probe = ?", (probe,))}


def record_signals(db: sqlite_utils.Database, probe: str, variant: str, item_id: str, *, text_sha256: str,
                   tokens: int, truncated: int, signals: dict[str, float], seconds: float) -> None:
    """One item's signals, in its own transaction."""
    with transaction(db):
        db.conn.execute(
            "insert or replace into contamination_signals (key, probe, variant, item_id, text_sha256, tokens, "
            "truncated_tokens, loss, zlib, min_k, min_k_pp, seconds, created_at) "
            "values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (row_key(probe, variant, item_id), probe, variant, item_id, text_sha256, tokens, truncated,
             *(float(signals[c]) for c in SIGNAL_COLUMNS), seconds, now()))


def read_signals(db: sqlite_utils.Database, probe: str) -> dict[tuple[str, str], dict[str, float]]:
    """(variant, item id) -> {signal: value} for one probe."""
    columns = ", ".join(SIGNAL_COLUMNS)
    cursor = db.conn.execute(f"select variant, item_id, {columns} from contamination_signals where probe = ?",
                             (probe,))
    return {(row[0], row[1]): dict(zip(SIGNAL_COLUMNS, map(float, row[2:]))) for row in cursor}


def probes(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    """Every stored probe, with its identity parsed (through the stored-values gate)."""
    cursor = db.conn.execute("select key, model_id, model_sha256, role, pair, task, identity, created_at "
                             "from contamination_probes order by created_at")
    names = [d[0] for d in cursor.description]
    found = []
    for row in cursor:
        entry = dict(zip(names, row))
        entry["identity"] = load_object(entry["identity"], "contamination_probes", "identity", entry["key"])
        found.append(entry)
    return found


def record_corpus(db: sqlite_utils.Database, key: str, identity: dict[str, Any]) -> None:
    with transaction(db):
        db.conn.execute("insert or ignore into contamination_corpora (key, identity, created_at) values (?, ?, ?)",
                        (key, json.dumps(identity, sort_keys=True), now()))


def stored_overlap(db: sqlite_utils.Database, corpus: str, task: str) -> set[str]:
    return {i for (i,) in db.conn.execute(
        "select item_id from contamination_overlap where corpus = ? and task = ?", (corpus, task))}


def record_overlap(db: sqlite_utils.Database, corpus: str, task: str, item_id: str, *, text_sha256: str,
                   ngrams: int, found: int, longest_run: int) -> None:
    with transaction(db):
        db.conn.execute(
            "insert or replace into contamination_overlap (key, corpus, task, item_id, text_sha256, ngrams, found, "
            "share, longest_run, created_at) values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (row_key(corpus, task, item_id), corpus, task, item_id, text_sha256, ngrams, found,
             found / ngrams if ngrams else 0.0, longest_run, now()))


def read_overlap(db: sqlite_utils.Database, corpus: str, task: str) -> dict[str, dict[str, Any]]:
    cursor = db.conn.execute("select item_id, ngrams, found, share, longest_run from contamination_overlap "
                             "where corpus = ? and task = ?", (corpus, task))
    return {row[0]: {"ngrams": row[1], "found": row[2], "share": row[3], "longest_run": row[4]} for row in cursor}


def item_ids(db: sqlite_utils.Database, task: str) -> dict[str, str]:
    """items.key -> item id for one task (compare's items are keyed by content; flags name item ids)."""
    return {key: item_id for key, item_id in db.conn.execute("select key, item_id from items where task = ?",
                                                              (task,))}
