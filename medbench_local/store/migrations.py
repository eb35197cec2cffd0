"""Named, recorded schema migrations (the simonw/llm pattern).

Why named migrations: a results database is a research artefact that outlives the tool version that wrote
it. Each migration runs once, is recorded in ``_migrations``, and an old database upgrades in place instead of
breaking. A database that records a migration we do not know was written by a newer medbench-local: we refuse
to touch it rather than guess. So migrations are for tables only: what is derived (the result views, store/views.py)
follows the task registry without one.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone

import sqlite_utils

from ..errors import StoreError

Migration = Callable[[sqlite_utils.Database], None]
MIGRATIONS: list[tuple[str, Migration]] = []


def migration(fn: Migration) -> Migration:
    MIGRATIONS.append((fn.__name__, fn))
    return fn


@migration
def m001_initial(db: sqlite_utils.Database) -> None:
    db.table("runs").create({
        "id": str, "started_at": str, "finished_at": str, "status": str, "command": str,
        "medbench_version": str, "python_version": str, "platform": str,
        "llama_cpp_version": str, "llama_system_info": str, "gpu_offload_supported": int,
        "git_revision": str, "packages": str, "settings": str,
    }, pk="id")
    db.table("models").create({
        "sha256": str, "file_name": str, "size_bytes": int, "path": str, "quantization": str,
        "architecture": str, "metadata": str, "chat_template": str, "chat_template_sha256": str, "first_seen": str,
    }, pk="sha256")
    db.table("pairs").create({"name": str, "biomedical": str, "general": str, "description": str}, pk="name")
    db.table("evaluations").create({
        "key": str, "model_id": str, "model_sha256": str, "role": str, "task": str, "prompt_mode": str,
        "prompt_sha256": str, "settings": str, "created_at": str, "run_id": str,
    }, pk="key", foreign_keys=[("model_sha256", "models", "sha256"), ("run_id", "runs", "id")])
    db.table("items").create({
        "key": str, "task": str, "item_id": str, "content_sha256": str, "source": str, "payload": str,
    }, pk="key")
    db.table("generations").create({
        "id": int, "evaluation": str, "item": str, "run_id": str, "prompt": str, "prompt_tokens": int,
        "truncated_tokens": int, "output": str, "completion_tokens": int, "finish_reason": str,
        "seconds": float, "prompt_ms": float, "generation_ms": float, "error": str,
        "created_at": str,
    }, pk="id", foreign_keys=[("evaluation", "evaluations", "key"), ("item", "items", "key"),
                              ("run_id", "runs", "id")])
    db.table("scores").create({
        "generation_id": int, "evaluation": str, "item": str, "outcome": str, "extracted": str, "gold": str,
        "method": str, "detail": str, "metrics": str,
    }, pk="generation_id", foreign_keys=[("generation_id", "generations", "id")])
    db.table("generations").create_index(["evaluation", "item"], unique=True)
    db.table("scores").create_index(["evaluation", "item"], unique=True)
    db.table("evaluations").create_index(["model_id", "task"])
    db.table("items").create_index(["task", "item_id"])


@migration
def m002_metric_runs(db: sqlite_utils.Database) -> None:
    """Optional metrics (BERTScore, UMLS-F1) added after generation by ``rescore``: which model and versions
    computed them, per evaluation, so a number is always traceable to the weights that produced it."""
    db.table("metric_runs").create({"evaluation": str, "metric": str, "identity": str, "items": int, "created_at": str},
                             pk=("evaluation", "metric"), foreign_keys=[("evaluation", "evaluations", "key")])


@migration
def m003_scores_foreign_keys(db: sqlite_utils.Database) -> None:
    """``scores.evaluation`` and ``scores.item`` reference ``evaluations`` and ``items`` (m001 declared only
    ``scores.generation_id``), and ``generations.run_id`` gets an index (``runs`` counts per run).

    SQLite cannot add a foreign key to an existing table, so the table is rebuilt the documented way, inside
    this migration's transaction: create the new table, copy every row, drop the old one, rename, recreate the
    index, then check that every row's references resolve (``pragma foreign_key_check``)."""
    conn = db.conn
    if not conn.in_transaction:
        conn.execute("begin")  # all or nothing (a CREATE TABLE outside a transaction would commit on its own)
    conn.execute("""create table "scores_rebuilt" (
        "generation_id" integer primary key references "generations"("id"),
        "evaluation" text references "evaluations"("key"),
        "item" text references "items"("key"),
        "outcome" text, "extracted" text, "gold" text, "method" text, "detail" text, "metrics" text)""")
    columns = "generation_id, evaluation, item, outcome, extracted, gold, method, detail, metrics"
    conn.execute(f"insert into scores_rebuilt ({columns}) select {columns} from scores")
    conn.execute("drop table scores")
    conn.execute("alter table scores_rebuilt rename to scores")
    conn.execute('create unique index "idx_scores_evaluation_item" on "scores" ("evaluation", "item")')
    conn.execute('create index "idx_generations_run_id" on "generations" ("run_id")')
    broken = conn.execute('pragma foreign_key_check("scores")').fetchall()
    if broken:
        raise StoreError(f"{len(broken)} scores refer to a missing evaluation or item (first: row "
                         f"{broken[0][1]} -> {broken[0][2]}); the database was left unchanged")


@migration
def m004_result_views(db: sqlite_utils.Database) -> None:
    """The ``item_results`` and ``paired_items`` views (store/views.py), with a metric column per metric the
    registered tasks declare. No migration is ever added for a metric: a writer recreates the views when the
    registry changed (``views.refresh_views``), and a newer database stays readable by an older version."""
    from .views import create_views

    create_views(db)


@migration
def m005_prompt_tokens_evaluated(db: sqlite_utils.Database) -> None:
    """Prompt tokens actually decoded per item; the rest of ``prompt_tokens`` came from the KV cache (a prefix
    shared with the previous item). Null for items stored before, which always decoded the whole prompt."""
    db.table("generations").add_column("prompt_tokens_evaluated", int)



@migration
def m006_contamination(db: sqlite_utils.Database) -> None:
    """The contamination probe (``medbench-local contamination``, docs/contamination.md).

    ``contamination_probes``: one model's probe of one task under one identity (probe and text versions, k,
    control kind, seed, the engine identity with the model's SHA-256); ``contamination_signals``: per probe, item
    and variant (the original text, or its control), the four membership signals; ``contamination_overlap``: per
    item, its n-gram overlap with a corpus whose identity (files' SHA-256, n, normalisation) is in
    ``contamination_corpora``. Keys are hashes of the identity, so a rerun skips what is stored and ``merge`` keeps
    the first copy of each."""
    db.table("contamination_probes").create({
        "key": str, "model_id": str, "model_sha256": str, "role": str, "pair": str, "task": str, "identity": str,
        "created_at": str,
    }, pk="key", foreign_keys=[("model_sha256", "models", "sha256")])
    db.table("contamination_signals").create({
        "key": str, "probe": str, "variant": str, "item_id": str, "text_sha256": str, "tokens": int,
        "truncated_tokens": int, "loss": float, "zlib": float, "min_k": float, "min_k_pp": float, "seconds": float,
        "created_at": str,
    }, pk="key", foreign_keys=[("probe", "contamination_probes", "key")])
    db.table("contamination_corpora").create({"key": str, "identity": str, "created_at": str}, pk="key")
    db.table("contamination_overlap").create({
        "key": str, "corpus": str, "task": str, "item_id": str, "text_sha256": str, "ngrams": int, "found": int,
        "share": float, "longest_run": int, "created_at": str,
    }, pk="key", foreign_keys=[("corpus", "contamination_corpora", "key")])
    db.table("contamination_signals").create_index(["probe", "variant", "item_id"], unique=True)
    db.table("contamination_overlap").create_index(["corpus", "task", "item_id"], unique=True)


@migration
def m007_retrieval(db: sqlite_utils.Database) -> None:
    """What an arm (a model plus retrieval, ``[arms.NAME]``) retrieved for each item: the index's content
    identity, the query, the passages with their BM25 scores (a JSON array of ``{"id", "score", "placed", "text"}``,
    best first; ``placed``: within the token budget, so in the prompt), the passage tokens placed and the milliseconds
    the search took. One row per evaluation and item, written in the item's transaction; the rendered prompt is
    the generation's, as for every model."""
    db.table("retrievals").create({
        "evaluation": str, "item": str, "index_sha256": str, "query": str, "passages": str, "placed": int,
        "passage_tokens": int, "retrieval_ms": float,
    }, pk=("evaluation", "item"), foreign_keys=[("evaluation", "evaluations", "key"), ("item", "items", "key")])


@migration
def m008_served_counts(db: sqlite_utils.Database) -> None:
    """What a served log-likelihood item cost: the HTTP requests made for it and the tokens sent to be scored
    (issue 24: fewer requests per item, measured). Null for in-process items and for items stored before."""
    db.table("generations").add_column("server_requests", int)
    db.table("generations").add_column("server_tokens", int)


def applied(db: sqlite_utils.Database) -> list[str]:
    if "_migrations" not in db.table_names():
        return []
    return [row["name"] for row in db.query("select name from _migrations order by rowid")]


def migrate(db: sqlite_utils.Database, path: str) -> None:
    """Apply pending migrations, each in its own transaction together with its ``_migrations`` record.

    Why explicit ``BEGIN IMMEDIATE``: SQLite runs DDL outside any transaction unless one is open, so a
    migration failing halfway would otherwise leave some of its tables behind. Inside one write transaction it
    is all or nothing, and two processes opening a new database at once cannot both apply the same migration
    (the second re-checks under the lock and finds it done).
    """
    done = applied(db)
    known = [name for name, _ in MIGRATIONS]
    newer = [name for name in done if name not in known]
    if newer:
        raise StoreError(f"{path}: written by a newer medbench-local (unknown schema migration "
                         f"'{newer[0]}'); upgrade medbench-local to read it")
    for name, fn in MIGRATIONS:
        if name in done:
            continue
        conn = db.conn
        if conn.in_transaction:
            conn.commit()
        conn.execute("begin immediate")
        try:
            if name not in applied(db):
                if "_migrations" not in db.table_names():
                    db.table("_migrations").create({"name": str, "applied_at": str}, pk="name")
                fn(db)
                conn.execute("insert into _migrations (name, applied_at) values (?, ?)",
                             (name, datetime.now(timezone.utc).isoformat()))
        except BaseException:
            if conn.in_transaction:
                conn.execute("rollback")
            raise
        conn.execute("commit")
