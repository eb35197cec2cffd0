"""Re-scoring stored generations without generating again: the optional heavy metrics (BERTScore, UMLS-F1),
and answer extraction when it changed (``rescore --extraction``).

Why a separate step: the metric models (SciBERT, Bio_ClinicalBERT, scispaCy + UMLS) are large, optional and
often configured later than the run; scoring the stored outputs afterwards means a hospital never regenerates
hours of model outputs to add a metric. The settings that decide the numbers (weights SHA-256, layer, library
versions) are recorded per evaluation in ``metric_runs``. Predictions and references are the exact strings the
task scored (``scores.extracted`` and ``scores.gold``); errors score 0, like every other metric.

Extraction is different: it decides outcomes, so it is part of the score identity (the task's
``settings()["extraction"]`` carries ``EXTRACTION_VERSION``). Re-scoring therefore never edits scores in
place: it writes a *new* evaluation under exactly the key a fresh ``run`` with today's code would compute (the
stored engine identity + today's task settings + the stored data/shots/documents hashes), holding copies of
the stored generations with today's scores. The old evaluation stays as it was, readable and exportable; a
later ``run`` of the same command finds the new key complete and generates nothing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import sqlite_utils

from ..engine.base import Generation
from ..errors import UserError
from ..gates.stored import load_metrics, load_object, member_object
from ..metrics.extraction import EXTRACTION_VERSION, reads_with_this_extraction
from ..provenance import evaluation_key, run_record
from ..store import queries, writer
from ..store.queries import evaluation_rows, evaluations_of, generations_to_copy
from ..tasks import get_task, task_ids
from ..tasks.base import Item, Score, TaskBase, canonical_json

#: The optional metrics ``rescore --metric`` adds; which tasks take them, and how, the tasks declare.
RESCORE_METRICS: tuple[str, ...] = ("bertscore", "umls")


def applies(metric: str) -> dict[str, str]:
    """task id -> how the reference prepared the texts for ``metric`` (``Task.study.rescore_texts``)."""
    found = {}
    for task_id in task_ids():
        text = get_task(task_id).study.rescore_text(metric)
        if text is not None:
            found[task_id] = text
    return found


@dataclass(frozen=True)
class Rescored:
    evaluation: str
    model_id: str
    task: str
    items: int


def _scorer(metric: str, task: str):  # type: ignore[no-untyped-def]
    """(score function over lists, identity) for a metric and task; raises MetricUnavailable when absent."""
    if metric == "bertscore":
        from ..metrics.bertscore import MODELS, scorer_for

        model = MODELS[str(get_task(task).study.bertscore_model)]
        scorer = scorer_for(model)

        def bert(preds: list[str], refs: list[str]) -> list[dict[str, float]]:
            return [{f"bertscore_{k}": v for k, v in r.items()} for r in scorer.score(preds, refs)]

        return bert, {"model": model.hub_id, **scorer.identity}
    from ..metrics.umls import load_umls, umls_prf

    concepts = load_umls()
    return (lambda preds, refs: [umls_prf(p, r, concepts) for p, r in zip(preds, refs)]), concepts.identity


def rescore(db: sqlite_utils.Database, metric: str, task_filter: tuple[str, ...] = ()) -> list[Rescored]:
    if metric not in RESCORE_METRICS:
        raise UserError(f"unknown metric '{metric}' (known: {', '.join(RESCORE_METRICS)})")
    prepared = applies(metric)
    done = []
    evaluations = queries.evaluation_heads(db)
    for evaluation in evaluations:
        task = evaluation["task"]
        if task not in prepared or (task_filter and task not in task_filter):
            continue
        rows = queries.stored_scores(db, evaluation["key"])
        scorable = [r for r in rows if r["outcome"] != "error" and r["gold"] is not None]
        if not scorable:
            continue
        score, identity = _scorer(metric, task)
        lower = prepared[task] == "lower-cased"
        preds = [(r["extracted"] or "").lower() if lower else (r["extracted"] or "") for r in scorable]
        refs = [r["gold"].lower() if lower else r["gold"] for r in scorable]
        values = dict(zip((r["generation_id"] for r in scorable), score(preds, refs)))
        names = next(iter(values.values())).keys()
        writer.add_metric_values(db, evaluation["key"], metric, identity, {
            row["generation_id"]: {**load_metrics(row["metrics"], row["generation_id"]),
                                   **values.get(row["generation_id"], {name: 0.0 for name in names})}
            for row in rows})
        done.append(Rescored(evaluation["key"], evaluation["model_id"], task, len(rows)))
    return done


# ---------------------------------------------------------------------------------------------------------
# rescore --extraction

# Task settings the runner adds to task.settings() from the loaded data: kept from the stored evaluation.
DATA_SETTINGS = ("shots_sha256", "documents_sha256", "data_sha256")


@dataclass(frozen=True)
class ExtractionRescore:
    """What happened to one stored evaluation: ``rescored`` (``items`` copied with new scores into ``new_key``),
    ``current`` (already scored by today's extraction), ``done`` (re-scored before), or ``refused`` /
    ``skipped`` with the reason in ``note``."""

    status: str
    old_key: str
    model_id: str
    task: str
    new_key: str | None = None
    items: int = 0
    changed: dict[str, tuple[int, int]] | None = None  # outcome -> (count before, count after), where different
    note: str = ""


def _today_task(task_id: str, stored: dict[str, Any], prompt_file: Path | None) -> TaskBase:
    """Today's task as the stored evaluation ran it: the same reference-quirks mode, document order and prompt
    override."""
    return get_task(task_id).configure(prompts=prompt_file, reference_quirks=bool(stored.get("reference_quirks")),
                                       document_order=stored.get("document_order"))


def _settings_plan(stored: dict[str, Any], task: TaskBase) -> tuple[dict[str, Any], list[str]]:
    """Today's task settings for a stored evaluation, and the keys (besides the extraction) that differ."""
    today = {**stored, **task.settings()}
    differ = sorted(k for k in set(stored) | set(today)
                    if k != "extraction" and k not in DATA_SETTINGS
                    and canonical_json(stored.get(k)) != canonical_json(today.get(k)))
    return today, differ


def _generation(row: dict[str, Any]) -> Generation:
    return Generation(prompt_text=row["prompt"] or "", output=row["output"] or "",
                      prompt_tokens=row["prompt_tokens"] or 0, truncated_tokens=row["truncated_tokens"] or 0,
                      completion_tokens=row["completion_tokens"] or 0, finish_reason=row["finish_reason"] or "",
                      seconds=row["seconds"] or 0.0, prompt_ms=row["prompt_ms"], generation_ms=row["generation_ms"])


def _rescore_row(task: TaskBase, row: dict[str, Any]) -> Score:
    """Today's score of one stored generation. Failed generations keep their stored ``error`` score. Metrics
    a task computes from state other than the output (LongHealth's document-assembly facts, which only exist
    while the prompt is built) are carried over from the stored score: extraction cannot change them."""
    old_metrics = load_metrics(row["metrics"], row["generation_id"])
    if row["outcome"] == "error" or row["output"] is None:
        return Score(row["outcome"], row["extracted"], row["gold"], row["method"] or "", row["detail"] or "",
                     old_metrics)
    item = Item(row["item_id"], load_object(row["payload"], "items", "payload", row["item"]), row["source"] or "")
    score = task.score(item, _generation(row))
    carried = {k: v for k, v in old_metrics.items() if k not in score.metrics}
    return replace(score, metrics={**score.metrics, **carried}) if carried else score


def _run_record(command: list[str], plans: list[dict[str, Any]]) -> dict[str, Any]:
    return run_record(command, {"rescore": "extraction", "extraction_version": EXTRACTION_VERSION,
                                "evaluations": [{"from": p["old"]["key"], "to": p["new_key"], "task": p["old"]["task"],
                                                 "model_id": p["old"]["model_id"]} for p in plans]})


def rescore_extraction(db: sqlite_utils.Database, *, task_filter: tuple[str, ...] = (),
                       model_filter: tuple[str, ...] = (), prompt_file: Path | None = None,
                       command: list[str] | None = None) -> list[ExtractionRescore]:
    """Re-apply today's answer extraction to the stored outputs of every multiple-choice evaluation whose
    extraction is older, as new evaluations (see the module docstring). Nothing is generated.

    Evaluations stored with ``--no-store-inputs`` are refused (their options are not in the database), and
    ones whose task settings differ from today's in more than the extraction (another prompt, budget, ...)
    are skipped: re-scoring cannot turn them into what a fresh run would produce. The rescore is recorded
    as a row in ``runs``; each new evaluation is written in one transaction.
    """
    for task_id in task_filter:
        if task_id not in task_ids():
            raise UserError(f"unknown task '{task_id}' (known: {', '.join(task_ids())})")
    results: list[ExtractionRescore] = []
    plans: list[dict[str, Any]] = []
    planned: dict[str, set[str]] = {}  # new key -> items some plan already copies into it
    for old in evaluation_rows(db):
        if (task_filter and old["task"] not in task_filter) or (model_filter and old["model_id"] not in model_filter):
            continue
        settings = load_object(old["settings"], "evaluations", "settings", old["key"])
        stored = member_object(settings, "task", "evaluations", "settings", old["key"])
        if "extraction" not in stored or old["task"] not in task_ids():
            continue
        if not reads_with_this_extraction(_today_task(old["task"], stored, None).settings().get("extraction")):
            continue  # not read by the choice extraction (ICD codes, LongHealth's reference-regex mode)
        task = _today_task(old["task"], stored, prompt_file)
        result = ExtractionRescore("skipped", old["key"], old["model_id"], old["task"])
        today, differ = _settings_plan(stored, task)
        if canonical_json(today) == canonical_json(stored):
            results.append(replace(result, status="current",
                                   note=f"already scored with extraction v{EXTRACTION_VERSION}"))
            continue
        if differ:
            hint = " (pass the --prompts file it was run with)" if "prompt_sha256" in differ else ""
            results.append(replace(result, note="its task settings differ from today's in more than the extraction "
                                                f"({', '.join(differ)}); re-run it instead{hint}"))
            continue
        if "identity" not in settings:
            results.append(replace(result, note="no engine identity stored; re-run it instead"))
            continue
        new_key = evaluation_key(settings["identity"], today)
        rows = [r for r in generations_to_copy(db, old["key"], new_key)
                if r["item"] not in planned.get(new_key, set())]
        if not rows:
            results.append(replace(result, status="done", new_key=new_key,
                                   note=f"already re-scored as {new_key[:12]}"))
            continue
        if any(load_object(r["payload"], "items", "payload", r["item"]).get("not_stored") for r in rows):
            results.append(replace(result, status="refused", new_key=new_key,
                                   note="stored with --no-store-inputs, so the options needed to read the answers "
                                        "are not in the database; re-run it to score with extraction "
                                        f"v{EXTRACTION_VERSION}"))
            continue
        scores = [(r["generation_id"], _rescore_row(task, r)) for r in rows]
        planned.setdefault(new_key, set()).update(r["item"] for r in rows)
        plans.append({"old": old, "settings": settings, "today": today, "new_key": new_key, "rows": rows,
                      "scores": scores})
        before, after = _count(r["outcome"] for r in rows), _count(s.outcome for _, s in scores)
        changed = {k: (before.get(k, 0), after.get(k, 0)) for k in sorted(set(before) | set(after))
                   if before.get(k, 0) != after.get(k, 0)}
        results.append(replace(result, status="rescored", new_key=new_key, items=len(rows), changed=changed))
    if plans:
        _write(db, plans, command or [])
    return results


def _count(outcomes: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome] = counts.get(outcome, 0) + 1
    return counts


def _write(db: sqlite_utils.Database, plans: list[dict[str, Any]], command: list[str]) -> None:
    run_id = uuid.uuid4().hex
    writer.start_run(db, run_id, _run_record(command, plans))
    status = "failed"
    try:
        for plan in plans:
            settings = {**plan["settings"], "task": plan["today"], "rescored_from": plan["old"]["key"],
                        "extraction_version": EXTRACTION_VERSION}
            writer.copy_rescored(db, source=plan["old"], key=plan["new_key"], settings=settings, run_id=run_id,
                                 scores=plan["scores"])
        status = "completed"
    finally:
        writer.finish_run(db, run_id, status)


def older_extraction_items(db: sqlite_utils.Database, model_id: str, task: str, identity: dict[str, Any],
                           task_settings: dict[str, Any]) -> int:
    """Items of the largest stored evaluation that equals (``identity``, ``task_settings``) in everything but
    the extraction: what ``rescore --extraction`` could re-score instead of ``run`` generating it again."""
    if not reads_with_this_extraction(task_settings.get("extraction")):
        return 0
    best = 0
    for key, settings_json, items in evaluations_of(db, model_id, task):
        settings = load_object(settings_json, "evaluations", "settings", key)
        stored = member_object(settings, "task", "evaluations", "settings", key)
        if canonical_json(settings.get("identity")) != canonical_json(identity) \
                or stored.get("extraction") == task_settings["extraction"]:
            continue
        if canonical_json({k: v for k, v in stored.items() if k != "extraction"}) == \
                canonical_json({k: v for k, v in task_settings.items() if k != "extraction"}):
            best = max(best, items)
    return best
