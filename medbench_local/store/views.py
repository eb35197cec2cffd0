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

The metric columns are built from ``VIEW_METRICS``. Views hold no data, so changing them is cheap: when a task
gains or loses a metric (tests/test_view.py compares ``VIEW_METRICS`` with the task registry), update the tuple
and add a migration that calls ``create_views(db)`` again; it drops and recreates both views. A migration that
rebuilds a table the views read must call ``drop_views(db)`` first and ``create_views(db)`` after.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import sqlite_utils

# Every per-item metric a task or an optional metric back-end writes into scores.metrics, in display order.
VIEW_METRICS: tuple[str, ...] = (
    "accuracy",
    "rouge1", "rouge2", "rougeL",
    "em_precision", "em_recall", "em_f1", "ap_precision", "ap_recall", "ap_f1", "valid_ratio",
    "task1", "task2", "task3", "task3_hallucinated", "task2_abstained",
    "bertscore_precision", "bertscore_recall", "bertscore_f1",
    "umls_precision", "umls_recall", "umls_f1",
)
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


def registry_metrics() -> tuple[str, ...]:
    """The metrics the code can produce today: every task's ``metric_names`` plus the optional scores."""
    from ..tasks import get_task, task_ids
    from ..tasks.base import BERTSCORE_METRICS, UMLS_METRICS  # what analysis.paired calls OPTIONAL_SCORES

    names: list[str] = []
    for task_id in task_ids():
        names += [m for m in get_task(task_id).metric_names if m not in names]
    return tuple(names + [m.name for m in BERTSCORE_METRICS + UMLS_METRICS if m.name not in names])


def _metric(column: str, name: str, alias: str) -> str:
    if not _SAFE_NAME.match(name):
        raise ValueError(f"metric name {name!r} cannot be a view column")
    return f"json_extract({column}, '$.\"{name}\"') as \"{alias}\""


def item_results_sql(metrics: Sequence[str] = VIEW_METRICS) -> str:
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


def paired_items_sql(metrics: Sequence[str] = VIEW_METRICS) -> str:
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


def create_views(db: sqlite_utils.Database, metrics: Sequence[str] = VIEW_METRICS) -> None:
    """(Re)create both views with one column per metric (drop first: a view cannot be altered)."""
    drop_views(db)
    db.conn.execute(item_results_sql(metrics))
    db.conn.execute(paired_items_sql(metrics))
