"""Adding the optional heavy metrics (BERTScore, UMLS-F1) to stored generations, without generating again.

Why a separate step: the metric models (SciBERT, Bio_ClinicalBERT, scispaCy + UMLS) are large, optional and
often configured later than the run; scoring the stored outputs afterwards means a hospital never regenerates
hours of model outputs to add a metric. The settings that decide the numbers (weights SHA-256, layer, library
versions) are recorded per evaluation in ``metric_runs``. Predictions and references are the exact strings the
task scored (``scores.extracted`` and ``scores.gold``); errors score 0, like every other metric.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import sqlite_utils

from ..errors import UserError
from ..store.writer import now, transaction

# metric -> {task: how the reference prepared the texts}
APPLIES: dict[str, dict[str, str]] = {
    "bertscore": {"meqsum": "as is", "problem_summary": "lower-cased", "medisumqa": "as is"},
    "umls": {"problem_summary": "original case", "medisumqa": "original case"},
}


@dataclass(frozen=True)
class Rescored:
    evaluation: str
    model_id: str
    task: str
    items: int


def _scorer(metric: str, task: str):  # type: ignore[no-untyped-def]
    """(score function over lists, identity) for a metric and task; raises MetricUnavailable when absent."""
    if metric == "bertscore":
        from ..metrics.bertscore import TASK_MODELS, scorer_for

        scorer = scorer_for(TASK_MODELS[task])

        def bert(preds: list[str], refs: list[str]) -> list[dict[str, float]]:
            return [{f"bertscore_{k}": v for k, v in r.items()} for r in scorer.score(preds, refs)]

        return bert, {"model": TASK_MODELS[task].hub_id, **scorer.identity}
    from ..metrics.umls import load_umls, umls_prf

    concepts = load_umls()
    return (lambda preds, refs: [umls_prf(p, r, concepts) for p, r in zip(preds, refs)]), concepts.identity


def rescore(db: sqlite_utils.Database, metric: str, task_filter: tuple[str, ...] = ()) -> list[Rescored]:
    if metric not in APPLIES:
        raise UserError(f"unknown metric '{metric}' (known: {', '.join(APPLIES)})")
    done = []
    evaluations = list(db.query("select key, model_id, task from evaluations order by model_id, task"))
    for evaluation in evaluations:
        task = evaluation["task"]
        if task not in APPLIES[metric] or (task_filter and task not in task_filter):
            continue
        rows = list(db.query("select generation_id, outcome, extracted, gold, metrics from scores "
                             "where evaluation = ? order by generation_id", [evaluation["key"]]))
        scorable = [r for r in rows if r["outcome"] != "error" and r["gold"] is not None]
        if not scorable:
            continue
        score, identity = _scorer(metric, task)
        lower = APPLIES[metric][task] == "lower-cased"
        preds = [(r["extracted"] or "").lower() if lower else (r["extracted"] or "") for r in scorable]
        refs = [r["gold"].lower() if lower else r["gold"] for r in scorable]
        values = dict(zip((r["generation_id"] for r in scorable), score(preds, refs)))
        names = next(iter(values.values())).keys()
        with transaction(db):
            for row in rows:
                merged = {**json.loads(row["metrics"] or "{}"),
                          **values.get(row["generation_id"], {name: 0.0 for name in names})}
                db.conn.execute("update scores set metrics = ? where generation_id = ?",
                                (json.dumps(merged, sort_keys=True), row["generation_id"]))
            db.conn.execute("insert or replace into metric_runs (evaluation, metric, identity, items, created_at) "
                            "values (?,?,?,?,?)", (evaluation["key"], metric, json.dumps(identity, sort_keys=True),
                                                   len(rows), now()))
        done.append(Rescored(evaluation["key"], evaluation["model_id"], task, len(rows)))
    return done
