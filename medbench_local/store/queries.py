"""Read-side queries: everything ``compare`` shows is recomputed from per-item rows, never cached.

Why: "the database alone is enough to recompute every reported number". Aggregates are computed here from the
``scores`` table on every call, so a reader with plain SQL gets the same numbers we print.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import sqlite_utils

from ..tasks.base import OUTCOMES


@dataclass(frozen=True)
class EvaluationSummary:
    key: str
    model_id: str
    task: str
    n: int
    outcomes: dict[str, int] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)  # mean per metric over all items (errors included)
    settings: dict[str, Any] = field(default_factory=dict)
    model_sha256: str = ""

    @property
    def accuracy(self) -> float | None:
        return self.metrics.get("accuracy")


def pairs(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    return list(db.query("select name, biomedical, general, description from pairs order by name"))


def latest_evaluation(db: sqlite_utils.Database, model_id: str, task: str, mode: str | None = None) -> str | None:
    """The most recent evaluation of ``model_id`` on ``task`` (settings can change between runs); with ``mode``,
    of that scoring mode only (generate / loglik / constrained; evaluations without one were generated)."""
    row = db.conn.execute(
        "select e.key from evaluations e where e.model_id = ? and e.task = ? and (? is null or "
        "coalesce(json_extract(e.settings, '$.task.scoring_mode'), 'generate') = ?) "
        "order by (select max(g.created_at) from generations g where g.evaluation = e.key) desc, "
        "e.created_at desc limit 1", (model_id, task, mode, mode)).fetchone()
    return row[0] if row else None


def tasks_for(db: sqlite_utils.Database, model_ids: list[str]) -> list[str]:
    marks = ",".join("?" for _ in model_ids)
    return [r[0] for r in db.conn.execute(
        f"select distinct task from evaluations where model_id in ({marks}) order by task", model_ids)]


def summarize_evaluation(db: sqlite_utils.Database, key: str) -> EvaluationSummary:
    """Per-metric means over the items that carry the metric (errors carry zeros, so they count against).

    With ``--reference-quirks`` recorded in the evaluation's task settings, the first evaluated item is
    counted twice, as the CLUE reference's ``update_results`` did for every task but LongHealth (paper.md §9).
    """
    head = db.conn.execute("select model_id, task, settings, model_sha256 from evaluations where key = ?",
                           (key,)).fetchone()
    settings = json.loads(head[2] or "{}")
    double_first = bool(settings.get("task", {}).get("reference_quirks")) and head[1] != "longhealth"
    outcomes = {name: 0 for name in OUTCOMES}
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    n = 0
    for outcome, metrics in db.conn.execute("select outcome, metrics from scores where evaluation = ? "
                                            "order by generation_id", (key,)):
        weight = 2 if (double_first and n == 0) else 1
        n += 1
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        for name, value in json.loads(metrics or "{}").items():
            sums[name] = sums.get(name, 0.0) + weight * float(value)
            counts[name] = counts.get(name, 0) + weight
    means = {name: total / counts[name] for name, total in sums.items()}
    return EvaluationSummary(key=key, model_id=head[0], task=head[1], n=n, outcomes=outcomes, metrics=means,
                             settings=settings, model_sha256=head[3])


INPUT_COLUMNS = ("prompt",)


def item_rows(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    """Every scored item of every evaluation, joined into flat rows (for export and audits)."""
    return list(db.query("""
        select e.model_id, e.model_sha256, e.task, e.key as evaluation, i.item_id,
               i.content_sha256 as item_content_sha256, s.outcome, s.extracted, s.gold, s.metrics, g.prompt,
               g.output, g.prompt_tokens, g.truncated_tokens, g.completion_tokens, g.finish_reason, g.seconds,
               g.error, g.created_at
        from scores s join generations g on g.id = s.generation_id join evaluations e on e.key = s.evaluation
        join items i on i.key = s.item order by e.model_id, e.task, i.item_id"""))


def evaluation_keys(db: sqlite_utils.Database) -> list[str]:
    return [row[0] for row in db.conn.execute("select key from evaluations order by model_id, task, created_at")]
