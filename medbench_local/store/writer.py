"""Writing results: one transaction per item, so a crash loses at most the item in flight.

Why raw SQL here: sqlite-utils' write helpers commit on their own, which would split an item's generation
and score across two transactions. Each ``record_item`` is BEGIN IMMEDIATE ... COMMIT around exactly the
rows of one item; anything that goes wrong rolls the item back whole.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

import sqlite_utils

from ..engine.base import Generation, ModelInfo
from ..gates.secrets import redact
from ..tasks.base import Item, Score, sha256_text


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@contextmanager
def transaction(db: sqlite_utils.Database) -> Iterator[None]:
    conn = db.conn
    if conn.in_transaction:
        conn.commit()
    conn.execute("begin immediate")
    try:
        yield
    except BaseException:
        conn.execute("rollback")
        raise
    else:
        conn.execute("commit")


def start_run(db: sqlite_utils.Database, run_id: str, record: dict[str, Any]) -> None:
    row = {"id": run_id, "started_at": now(), "status": "running", **record}
    for key in ("packages", "settings", "command"):
        if not isinstance(row.get(key), str):
            row[key] = json.dumps(row.get(key), sort_keys=True)
    columns = ", ".join(row)
    with transaction(db):
        db.conn.execute(f"insert into runs ({columns}) values ({', '.join('?' for _ in row)})", list(row.values()))


def finish_run(db: sqlite_utils.Database, run_id: str, status: str) -> None:
    with transaction(db):
        db.conn.execute("update runs set status = ?, finished_at = ? where id = ?", (status, now(), run_id))


def record_model(db: sqlite_utils.Database, info: ModelInfo) -> bool:
    """Record a model file (by SHA-256); True when the row is new (so that an unstarted run can take it back)."""
    meta = info.metadata
    with transaction(db):
        new = db.conn.execute("select 1 from models where sha256 = ?", (info.sha256,)).fetchone() is None
        db.conn.execute(
            "insert into models (sha256, file_name, size_bytes, path, quantization, architecture, metadata, "
            "chat_template, chat_template_sha256, first_seen) values (?,?,?,?,?,?,?,?,?,?) "
            "on conflict(sha256) do update set path = excluded.path",
            (info.sha256, info.path.rsplit("/", 1)[-1], info.size_bytes, info.path, meta.get("quantization"),
             meta.get("architecture"), json.dumps(meta, sort_keys=True), info.chat_template,
             info.chat_template_sha256, now()))
    return new


def record_pair(db: sqlite_utils.Database, name: str, biomedical: str, general: str, description: str
                ) -> dict[str, Any] | None:
    """Record (or redefine) a pair; returns the row it replaced (None when the name is new), so that an unstarted
    run can put it back."""
    with transaction(db):
        before = db.conn.execute("select name, biomedical, general, description from pairs where name = ?",
                                 (name,)).fetchone()
        db.conn.execute("insert into pairs (name, biomedical, general, description) values (?,?,?,?) "
                        "on conflict(name) do update set biomedical = excluded.biomedical, "
                        "general = excluded.general, description = excluded.description",
                        (name, biomedical, general, description))
    return dict(zip(("name", "biomedical", "general", "description"), before)) if before else None


class _KeepRun(Exception):
    """Rolls back :func:`forget_unstarted_run` when the run turns out to be referenced after all."""


def forget_unstarted_run(db: sqlite_utils.Database, run_id: str, pairs: dict[str, dict[str, Any] | None],
                         models: list[str]) -> bool:
    """Take back every trace of a run that stored no item (its model or server failed after the quick checks):
    its run row, its evaluations without generations, the model rows and pair definitions it added or changed.
    One transaction: the database ends as it was before the run (or, when the run is referenced after all,
    unchanged by this call). Returns whether the run was taken back."""
    try:
        _forget(db, run_id, pairs, models)
    except _KeepRun:
        return False
    return True


def _forget(db: sqlite_utils.Database, run_id: str, pairs: dict[str, dict[str, Any] | None],
            models: list[str]) -> None:
    with transaction(db):
        if db.conn.execute("select 1 from generations where run_id = ? limit 1", (run_id,)).fetchone():
            raise _KeepRun()  # it did store something: not ours to take back
        db.conn.execute("delete from evaluations where run_id = ? and key not in "
                        "(select evaluation from generations)", (run_id,))
        if db.conn.execute("select 1 from evaluations where run_id = ? limit 1", (run_id,)).fetchone():
            raise _KeepRun()  # a concurrent run stored items under an evaluation this run created
        db.conn.execute("delete from runs where id = ?", (run_id,))
        for sha256 in models:
            db.conn.execute("delete from models where sha256 = ? and sha256 not in "
                            "(select model_sha256 from evaluations)", (sha256,))
        for name, before in pairs.items():
            if before is None:
                db.conn.execute("delete from pairs where name = ?", (name,))
            else:
                db.conn.execute("update pairs set biomedical = ?, general = ?, description = ? where name = ?",
                                (before["biomedical"], before["general"], before["description"], name))


def holds_runs(db: sqlite_utils.Database) -> bool:
    """Whether any run was ever recorded (a database with none was created and left by a run that never started)."""
    return db.conn.execute("select 1 from runs limit 1").fetchone() is not None


def record_evaluation(db: sqlite_utils.Database, key: str, info: ModelInfo, role: str, task: str,
                      settings: dict[str, Any], run_id: str) -> None:
    with transaction(db):
        db.conn.execute(
            "insert or ignore into evaluations (key, model_id, model_sha256, role, task, prompt_mode, "
            "prompt_sha256, settings, created_at, run_id) values (?,?,?,?,?,?,?,?,?,?)",
            (key, info.model_id, info.sha256, role, task, info.prompt_mode, settings.get("task", {}).get(
                "prompt_sha256"), json.dumps(settings, sort_keys=True), now(), run_id))


def item_key(task: str, item: Item) -> str:
    return sha256_text(f"{task}\x00{item.id}\x00{item.content_sha256}")


def done_items(db: sqlite_utils.Database, evaluation: str) -> set[str]:
    return {row[0] for row in db.conn.execute("select item from generations where evaluation = ?", (evaluation,))}


def forget_errors(db: sqlite_utils.Database, evaluation: str) -> int:
    """Delete items that ended in ``error`` so that they are generated again (``run --retry-errors``)."""
    with transaction(db):
        ids = [row[0] for row in db.conn.execute(
            "select generation_id from scores where evaluation = ? and outcome = 'error'", (evaluation,))]
        for gid in ids:
            db.conn.execute("delete from scores where generation_id = ?", (gid,))
            db.conn.execute("delete from generations where id = ?", (gid,))
    return len(ids)


def redacted(text: str) -> str:
    """What is stored instead of an input text when inputs are kept out of the database."""
    return f"[not stored] sha256:{sha256_text(text)}"


def is_done(db: sqlite_utils.Database, evaluation: str, item: str) -> bool:
    """Whether the item already has a stored result (e.g. written meanwhile by a concurrent run)."""
    return db.conn.execute("select 1 from generations where evaluation = ? and item = ?",
                           (evaluation, item)).fetchone() is not None


def _input_texts(value: object) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for inner in value.values():
            yield from _input_texts(inner)
    elif isinstance(value, (list, tuple)):
        for inner in value:
            yield from _input_texts(inner)


def scrub_inputs(text: str | None, payload: dict[str, Any]) -> str | None:
    """``text`` with every input text of the item (case, question, each option, ...) replaced by a marker.

    Why: with ``--no-store-inputs`` nothing derived from the case may reach the database, but scorers explain
    themselves in words that can quote inputs (a fuzzy match names the option text it matched). Matching is
    case-insensitive on whole words, longest text first; texts shorter than 3 characters (option letters,
    "no") are left alone, as they identify nobody and would garble every explanation.
    """
    if not text:
        return text
    for value in sorted({v.strip() for v in _input_texts(payload) if len(v.strip()) >= 3}, key=len, reverse=True):
        text = re.sub(rf"(?<!\w){re.escape(value)}(?!\w)", "[input text]", text, flags=re.IGNORECASE)
    return text


WITHHELD = "message withheld: --no-store-inputs"


def error_message(exc: BaseException, store_inputs: bool = True) -> str:
    """The text stored for an item that failed with ``exc``.

    With inputs stored: the message itself (secrets are removed when it is written). With ``--no-store-inputs``:
    only the failure's class and, for a server, its HTTP status (``exc.withheld``, built from our own words), or
    the exception's type. Why not scrub the message as ``scrub_inputs`` does for explanations: a server or
    llama.cpp can quote any part of the prompt (a 422 quoting 200 characters, cut mid-word), which no
    whole-word match of the item's texts would find; so such text is never stored, by construction.
    """
    if store_inputs:
        return str(exc)
    withheld = getattr(exc, "withheld", None)
    return withheld if isinstance(withheld, str) and withheld else f"{type(exc).__name__} ({WITHHELD})"


def record_item(db: sqlite_utils.Database, *, evaluation: str, run_id: str, task: str, item: Item,
                generation: Generation | None, score: Score, error: str | None = None,
                prompt_text: str = "", store_inputs: bool = True, retrieval: dict[str, Any] | None = None) -> bool:
    """Store item, generation and score atomically. ``generation`` is None when generation failed.

    Returns False, writing nothing, when the item already has a result in this evaluation (a concurrent run
    of the same model and task finished it first): the stored result is kept, never a constraint error.

    With ``store_inputs=False`` (``run --no-store-inputs``) the item text and the rendered prompt are replaced
    by their SHA-256 and any input text quoted in the scorer's explanation or an error message is blanked:
    outputs, scores and gold answers stay, so every number can still be recomputed, but no case text
    (possibly patient data) is written. (An error's own text is kept out by the caller: ``error_message``.)

    ``retrieval`` (an arm's item: index_sha256, query, passages, placed, passage_tokens, retrieval_ms) is stored
    in the same transaction (``retrievals``); its query is case text, kept out like the prompt.

    ``error`` and the score's ``detail`` can quote a server's answer: secrets are removed from both before they
    are written (``gates.secrets``), so neither the database nor an export made from it holds an API key.
    """
    key = item_key(task, item)
    g = generation
    prompt = g.prompt_text if g else prompt_text
    payload = item.payload if store_inputs else {"not_stored": True, "content_sha256": item.content_sha256}
    detail = score.detail
    if not store_inputs:
        prompt = redacted(prompt)
        detail = scrub_inputs(detail, item.payload) or ""
        error = scrub_inputs(error, item.payload)
    detail = redact(detail) if detail else detail
    error = redact(error) if error else error
    with transaction(db):
        if is_done(db, evaluation, key):
            return False
        db.conn.execute("insert or ignore into items (key, task, item_id, content_sha256, source, payload) "
                        "values (?,?,?,?,?,?)", (key, task, item.id, item.content_sha256, item.source,
                                                 json.dumps(payload, ensure_ascii=False, sort_keys=True)))
        cursor = db.conn.execute(
            "insert into generations (evaluation, item, run_id, prompt, prompt_tokens, truncated_tokens, output, "
            "completion_tokens, finish_reason, seconds, prompt_ms, generation_ms, error, created_at, "
            "prompt_tokens_evaluated, server_requests, server_tokens) values (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (evaluation, key, run_id, prompt, g.prompt_tokens if g else None,
             g.truncated_tokens if g else None, g.output if g else None, g.completion_tokens if g else None,
             g.finish_reason if g else "error", g.seconds if g else None, g.prompt_ms if g else None,
             g.generation_ms if g else None, error, now(), g.prompt_tokens_evaluated if g else None,
             g.server_requests if g else None, g.server_tokens if g else None))
        db.conn.execute(
            "insert into scores (generation_id, evaluation, item, outcome, extracted, gold, method, detail, metrics) "
            "values (?,?,?,?,?,?,?,?,?)",
            (cursor.lastrowid, evaluation, key, score.outcome, score.extracted, score.gold, score.method,
             detail, json.dumps(score.metrics, sort_keys=True)))
        if retrieval is not None:
            query = retrieval["query"] if store_inputs else redacted(retrieval["query"])
            db.conn.execute(
                "insert or replace into retrievals (evaluation, item, index_sha256, query, passages, placed, "
                "passage_tokens, retrieval_ms) values (?,?,?,?,?,?,?,?)",
                (evaluation, key, retrieval["index_sha256"], query, json.dumps(retrieval["passages"]),
                 retrieval["placed"], retrieval["passage_tokens"], retrieval["retrieval_ms"]))
    return True


def copy_rescored(db: sqlite_utils.Database, *, source: dict[str, Any], key: str, settings: dict[str, Any],
                  run_id: str, scores: list[tuple[int, Score]]) -> None:
    """Store a re-scored evaluation in one transaction: the evaluation row ``key`` (model, role and task as in
    ``source``, the evaluations row it derives from), a copy of each listed generation (every column but its
    id and evaluation, so prompt, output, tokens, timings and the run that generated it are kept), its new
    score and, for a retrieval arm, its retrieval row. The source evaluation and its scores are not touched."""
    columns = [row[1] for row in db.conn.execute("pragma table_info(generations)")
               if row[1] not in ("id", "evaluation")]
    names = ", ".join(columns)
    with transaction(db):
        db.conn.execute(
            "insert or ignore into evaluations (key, model_id, model_sha256, role, task, prompt_mode, "
            "prompt_sha256, settings, created_at, run_id) values (?,?,?,?,?,?,?,?,?,?)",
            (key, source["model_id"], source["model_sha256"], source["role"], source["task"],
             source["prompt_mode"], settings.get("task", {}).get("prompt_sha256"),
             json.dumps(settings, sort_keys=True), now(), run_id))
        for generation_id, score in scores:
            cursor = db.conn.execute(f"insert into generations (evaluation, {names}) select ?, {names} "
                                     "from generations where id = ?", (key, generation_id))
            item = db.conn.execute("select item from generations where id = ?", (cursor.lastrowid,)).fetchone()[0]
            db.conn.execute(
                "insert into scores (generation_id, evaluation, item, outcome, extracted, gold, method, detail, "
                "metrics) values (?,?,?,?,?,?,?,?,?)",
                (cursor.lastrowid, key, item, score.outcome, score.extracted, score.gold, score.method,
                 redact(score.detail) if score.detail else score.detail, json.dumps(score.metrics, sort_keys=True)))
            # a retrieval arm's passages travel with the generation they were placed into
            db.conn.execute("insert or ignore into retrievals (evaluation, item, index_sha256, query, passages, "
                            "placed, passage_tokens, retrieval_ms) select ?, item, index_sha256, query, passages, "
                            "placed, passage_tokens, retrieval_ms from retrievals where evaluation = ? and item = ?",
                            (key, source["key"], item))


def add_metric_values(db: sqlite_utils.Database, evaluation: str, metric: str, identity: dict[str, Any],
                      metrics: dict[int, dict[str, Any]]) -> None:
    """Store a metric computed after generation (``rescore``): each generation's new metrics dict, and which
    model and versions computed it (``metric_runs``), in one transaction."""
    with transaction(db):
        for generation_id, merged in metrics.items():
            db.conn.execute("update scores set metrics = ? where generation_id = ?",
                            (json.dumps(merged, sort_keys=True), generation_id))
        db.conn.execute("insert or replace into metric_runs (evaluation, metric, identity, items, created_at) "
                        "values (?,?,?,?,?)", (evaluation, metric, json.dumps(identity, sort_keys=True),
                                               len(metrics), now()))
