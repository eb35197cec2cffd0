"""SQL views over the results tables, for readers with plain SQL, Datasette (``medbench-local view``) or pandas.

Why views: the tables are normalised for safe writing (a score points at a generation, which points at an
evaluation and an item), so one question ("how did each model do on each item?") is a four-table join with JSON
inside. Two views answer it directly, and they live in the database itself, so every tool that opens the file
sees them:

* ``item_results``: one row per evaluation × item (an evaluation is model × task × settings × data), with the run,
  the pairs the model belongs to, its role, outcome, extracted and gold answer, one column per metric, tokens and
  seconds; ``latest`` = 1 marks the evaluation that ``compare`` uses (the most recently active one of each
  model on each task).
* ``paired_items``: one row per pair × item that both models of the pair answered (their latest evaluations),
  both sides next to each other, and ``disagree`` = 1 when any metric differs.

Columns are in reading order, because Datasette and pandas show them as they are: who (model, task, item),
how it ended (outcome, extracted and gold answer), the metrics, the output and its timings, and the keys and
64-character hashes last. (A database created before this order keeps its own until a migration recreates the
views for another reason: a migration only for the order would make every read command read every existing
database through an upgraded copy, store/readonly.py.) Key columns keep the name of the table column they come from: ``run_id``,
``evaluation``, ``generation_id``, ``item`` (the item key), ``item_id`` (the dataset's own id), ``model_id``,
``task``, ``pair``.

The metric columns come from the task registry (``view_metrics``): one per metric a registered task declares
(``Task.metrics``, optional ones included), so a task with a new metric is one module and its registry line, with
no change here and no migration (a migration would make the database unreadable for every older
medbench-local). Views hold no data, so they follow the registry cheaply, under the database gate's rule that
reading never writes:

* **A writer** (``database.open_database``: run, merge OUT, rescore) calls ``refresh_views`` after the
  migrations: the views are recreated, in one transaction, only when their stored definition differs from what
  today's registry makes (an older database, a task added or removed). An unchanged registry writes nothing.
* **A reader** never changes them: ``view`` serves the file as it is and describes the metric columns it finds
  there (``stored_view_metrics``), whichever medbench-local made them, older or newer; the other read commands
  read the tables, never the views. The ``metrics`` JSON column always holds every metric, known or not.

Two medbench-local versions writing one database in turn each leave the views of their own registry; nothing
else differs. A migration that rebuilds a table the views read must call ``drop_views(db)`` first and
``create_views(db)`` after.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import sqlite_utils

VIEWS: tuple[str, ...] = ("item_results", "paired_items")
_SAFE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")

# The most recently active evaluation of each model on each task: the one `compare` reads
# (store.queries.latest_evaluation: latest generation first, then the evaluation's creation time).
_LATEST = """
    activity as (
        select e.key, e.model_id, e.task, e.created_at,
               (select max(g.created_at) from generations g where g.evaluation = e.key) as last_generated
        from evaluations e),
    ranked as (
        select key, model_id, task,
               row_number() over (partition by model_id, task
                                  order by last_generated desc, created_at desc) as recency
        from activity)"""


def view_metrics() -> tuple[str, ...]:
    """One view column per metric the registered tasks declare: the metrics a run computes, then the optional
    ones ``rescore`` adds, each in registry order, and a family's precision, recall and F1 next to each other in
    that reading order (a task may list F1 first, its headline in ``compare``)."""
    from ..tasks import get_task, task_ids

    declared = [spec for task_id in task_ids() for spec in get_task(task_id).metrics]
    names = dict.fromkeys([s.name for s in declared if not s.optional] + [s.name for s in declared if s.optional])
    return _families_in_reading_order(list(names))


_FAMILY = re.compile(r"^(.+)_(precision|recall|f1)$")
_PARTS = ("precision", "recall", "f1")


def _families_in_reading_order(names: list[str]) -> tuple[str, ...]:
    """``names`` with each ``<family>_precision/_recall/_f1`` group in that order, at its first member's place."""
    ordered: list[str] = []
    for name in names:
        match = _FAMILY.match(name)
        if match is None:
            ordered.append(name)
        elif name not in ordered:
            members = [n for n in names if (m := _FAMILY.match(n)) is not None and m.group(1) == match.group(1)]
            ordered += sorted(members, key=lambda n: _PARTS.index(_FAMILY.match(n).group(2)))  # type: ignore[union-attr]
    return tuple(ordered)


def _metric(column: str, name: str, alias: str) -> str:
    if not _SAFE_NAME.match(name):
        raise ValueError(f"metric name {name!r} cannot be a view column")
    return f"json_extract({column}, '$.\"{name}\"') as \"{alias}\""


def item_results_sql(metrics: Sequence[str]) -> str:
    metric_columns = ",\n    ".join(_metric("s.metrics", m, m) for m in metrics)
    return f"""create view item_results as
with {_LATEST}
select
    e.model_id,
    e.task,
    i.item_id,
    s.outcome,
    s.extracted,
    s.gold,
    (r.recency = 1) as latest,
    e.role,
    (select group_concat(name, ', ') from (select p.name from pairs p
        where p.biomedical = e.model_id or p.general = e.model_id order by p.name)) as pairs,
    {metric_columns},
    g.output,
    g.completion_tokens,
    g.finish_reason,
    g.seconds,
    g.prompt_tokens,
    g.truncated_tokens,
    g.prompt_ms,
    g.generation_ms,
    g.error,
    s.method,
    s.metrics,
    g.created_at,
    g.run_id,
    s.generation_id,
    s.evaluation,
    s.item,
    e.model_sha256
from scores s
join generations g on g.id = s.generation_id
join evaluations e on e.key = s.evaluation
join items i on i.key = s.item
join ranked r on r.key = s.evaluation"""


def paired_items_sql(metrics: Sequence[str]) -> str:
    sides = []
    for m in metrics:
        sides.append(_metric("sb.metrics", m, f"biomedical_{m}"))
        sides.append(_metric("sg.metrics", m, f"general_{m}"))
    metric_columns = ",\n    ".join(sides)
    known = ", ".join(f"'{m}'" for m in metrics)  # not bookkeeping numbers such as LongHealth's budget_tokens
    return f"""create view paired_items as
with {_LATEST}
select
    p.name as pair,
    rb.task,
    i.item_id,
    p.biomedical as biomedical_model_id,
    p.general as general_model_id,
    sb.outcome as biomedical_outcome,
    sg.outcome as general_outcome,
    sb.extracted as biomedical_extracted,
    sg.extracted as general_extracted,
    coalesce(sb.gold, sg.gold) as gold,
    exists (select 1 from json_each(sb.metrics) j
            where j.key in ({known}) and json_extract(sg.metrics, '$."' || j.key || '"') != j.value) as disagree,
    gb.output as biomedical_output,
    gg.output as general_output,
    gb.completion_tokens as biomedical_completion_tokens,
    gg.completion_tokens as general_completion_tokens,
    gb.seconds as biomedical_seconds,
    gg.seconds as general_seconds,
    {metric_columns},
    sb.evaluation as biomedical_evaluation,
    sg.evaluation as general_evaluation,
    sb.item
from pairs p
join ranked rb on rb.model_id = p.biomedical and rb.recency = 1
join ranked rg on rg.model_id = p.general and rg.task = rb.task and rg.recency = 1
join scores sb on sb.evaluation = rb.key
join scores sg on sg.evaluation = rg.key and sg.item = sb.item
join generations gb on gb.id = sb.generation_id
join generations gg on gg.id = sg.generation_id
join items i on i.key = sb.item"""


def drop_views(db: sqlite_utils.Database) -> None:
    for name in VIEWS:
        db.conn.execute(f"drop view if exists {name}")


def create_views(db: sqlite_utils.Database, metrics: Sequence[str] | None = None) -> None:
    """(Re)create both views with one column per metric (drop first: a view cannot be altered); ``metrics``:
    today's registry's (``view_metrics``) unless given."""
    metrics = view_metrics() if metrics is None else metrics
    drop_views(db)
    db.conn.execute(item_results_sql(metrics))
    db.conn.execute(paired_items_sql(metrics))


def _stored_form(sql: str) -> str:
    """``sql`` as SQLite keeps it in sqlite_master (it rewrites the leading "create view" as "CREATE VIEW")."""
    return re.sub(r"^\s*create\s+view\s+", "CREATE VIEW ", sql, flags=re.IGNORECASE)


def _current(db: sqlite_utils.Database, wanted: dict[str, str]) -> bool:
    stored = dict(db.conn.execute("select name, sql from sqlite_master where type = 'view'").fetchall())
    return all(stored.get(name) == _stored_form(sql) for name, sql in wanted.items())


def refresh_views(db: sqlite_utils.Database) -> bool:
    """For a writer, after the migrations: recreate the views when their stored definitions are not the ones
    today's registry makes (then True), in one write transaction; otherwise write nothing."""
    metrics = view_metrics()
    wanted = {"item_results": item_results_sql(metrics), "paired_items": paired_items_sql(metrics)}
    if _current(db, wanted):
        return False
    conn = db.conn
    if conn.in_transaction:
        conn.commit()
    conn.execute("begin immediate")
    try:
        if not _current(db, wanted):  # another writer may have refreshed them meanwhile
            create_views(db, metrics)
    except BaseException:
        conn.execute("rollback")
        raise
    conn.execute("commit")
    return True


_METRIC_COLUMN = re.compile(r"json_extract\(s\.metrics, '\$\.\"([A-Za-z][A-Za-z0-9_]*)\"'\) as \"\1\"")


def stored_view_metrics(db: sqlite_utils.Database) -> tuple[str, ...] | None:
    """The metric columns of the ``item_results`` view as the database holds it, in its order (None without the
    view): what a reader describes, whichever medbench-local created the view. A metric column is one the view
    reads from ``scores.metrics`` under the metric's own name (``_metric``)."""
    row = db.conn.execute("select sql from sqlite_master where type = 'view' and name = 'item_results'").fetchone()
    if row is None or not isinstance(row[0], str):
        return None
    return tuple(_METRIC_COLUMN.findall(row[0]))
