"""Read-side queries: everything ``compare`` shows is recomputed from per-item rows, never cached.

Why: "the database alone is enough to recompute every reported number". Aggregates are computed here from the
``scores`` table on every call, so a reader with plain SQL gets the same numbers we print.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlite_utils

from ..gates.stored import load_metrics, load_object, member, member_object
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
    """The most recent evaluation of ``model_id`` on ``task``, whatever its data and settings; with ``mode``, of
    that scoring mode only (generate / loglik / constrained; evaluations without one were generated). For audits,
    tests and ``show --model``: comparisons pair evaluations with ``analysis.pairing`` (same data and settings)."""
    row = db.conn.execute(
        "select e.key from evaluations e where e.model_id = ? and e.task = ? and (? is null or "
        "coalesce(json_extract(e.settings, '$.task.scoring_mode'), 'generate') = ?) "
        "order by (select max(g.created_at) from generations g where g.evaluation = e.key) desc, "
        "e.created_at desc limit 1", (model_id, task, mode, mode)).fetchone()
    return row[0] if row else None


def model_tasks(db: sqlite_utils.Database) -> list[tuple[str, str]]:
    """Every (model id, task) with at least one evaluation."""
    return [(m, t) for m, t in db.conn.execute(
        "select distinct model_id, task from evaluations order by model_id, task")]


def has_evaluation(db: sqlite_utils.Database, model_id: str, task: str) -> bool:
    return db.conn.execute("select 1 from evaluations where model_id = ? and task = ? limit 1",
                           (model_id, task)).fetchone() is not None


def tasks_for(db: sqlite_utils.Database, model_ids: list[str]) -> list[str]:
    marks = ",".join("?" for _ in model_ids)
    return [r[0] for r in db.conn.execute(
        f"select distinct task from evaluations where model_id in ({marks}) order by task", model_ids)]


def summarize_evaluation(db: sqlite_utils.Database, key: str) -> EvaluationSummary:
    """Per-metric means over the items that carry the metric (errors carry zeros, so they count against).

    With ``--reference-quirks`` recorded in the evaluation's task settings, the first evaluated item is
    counted twice, as the CLUE reference's ``update_results`` did (docs/study-reference.md#reference-quirks), for
    the tasks that declare it (``Task.study.quirk_counts_first_twice``: every CLUE task but LongHealth).
    """
    head = db.conn.execute("select model_id, task, settings, model_sha256 from evaluations where key = ?",
                           (key,)).fetchone()
    settings = load_object(head[2], "evaluations", "settings", key)
    task_settings = member_object(settings, "task", "evaluations", "settings", key)
    double_first = bool(task_settings.get("reference_quirks")) and _counts_first_twice(head[1])
    outcomes = {name: 0 for name in OUTCOMES}
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    n = 0
    for generation_id, outcome, metrics in db.conn.execute("select generation_id, outcome, metrics from scores "
                                                           "where evaluation = ? order by generation_id", (key,)):
        weight = 2 if (double_first and n == 0) else 1
        n += 1
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        for name, value in load_metrics(metrics, generation_id).items():
            sums[name] = sums.get(name, 0.0) + weight * float(value)
            counts[name] = counts.get(name, 0) + weight
    means = {name: total / counts[name] for name, total in sums.items()}
    return EvaluationSummary(key=key, model_id=head[0], task=head[1], n=n, outcomes=outcomes, metrics=means,
                             settings=settings, model_sha256=head[3])


def _counts_first_twice(task_id: str) -> bool:
    """What the task declares about the reference's double-counted first item (unknown tasks: no)."""
    from ..tasks import get_task, task_ids

    return task_id in task_ids() and get_task(task_id).study.quirk_counts_first_twice


INPUT_COLUMNS = ("prompt",)


def item_rows(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    """Every scored item of every evaluation, joined into flat rows (for export and audits); ``score_row`` is the
    scores row (to name it when a stored value is damaged), not an exported column."""
    return list(db.query("""
        select s.generation_id as score_row, e.model_id, e.model_sha256, e.role as evaluation_role, e.task,
               e.key as evaluation, i.item_id,
               i.content_sha256 as item_content_sha256, s.outcome, s.extracted, s.gold, s.metrics, g.prompt,
               g.output, g.prompt_tokens, g.truncated_tokens, g.completion_tokens, g.finish_reason, g.seconds,
               g.error, g.created_at
        from scores s join generations g on g.id = s.generation_id join evaluations e on e.key = s.evaluation
        join items i on i.key = s.item order by e.model_id, e.task, i.item_id"""))


def evaluation_keys(db: sqlite_utils.Database) -> list[str]:
    return [row[0] for row in db.conn.execute("select key from evaluations order by model_id, task, created_at")]


def evaluation_rows(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    """Every evaluation with its stored settings (JSON text), oldest first per model and task."""
    return list(db.query("select key, model_id, model_sha256, role, task, prompt_mode, prompt_sha256, settings, "
                         "created_at, run_id from evaluations order by model_id, task, created_at, key"))


@dataclass(frozen=True)
class EvaluationRecord:
    """One stored evaluation as the pairing rule sees it (analysis/pairing.py)."""

    key: str
    model_id: str
    task: str
    settings: dict[str, Any]
    recency: tuple[str, str]     # (last generation's time, creation time): larger is newer
    data_path: str | None        # the data file or folder it ran on, when recorded

    @property
    def task_settings(self) -> dict[str, Any]:
        return dict(self.settings.get("task") or {})

    @property
    def data_sha256(self) -> str | None:
        return self.task_settings.get("data_sha256")


def evaluation_records(db: sqlite_utils.Database, model_id: str, task: str) -> list[EvaluationRecord]:
    """Every evaluation of ``model_id`` on ``task``, newest first, with the data path it ran on.

    The path comes from the evaluation's settings (``settings.data.path``, recorded since the data fingerprint
    became the file's own SHA-256); for older evaluations from the run that created it, else from the newest
    run that names a data path with the same task and fingerprint.
    """
    found = db.conn.execute(
        "select e.key, e.model_id, e.task, e.settings, e.created_at, e.run_id, "
        "(select max(g.created_at) from generations g where g.evaluation = e.key) "
        "from evaluations e where e.model_id = ? and e.task = ?", (model_id, task)).fetchall()
    paths = _run_data_paths(db) if found else {}
    records = []
    for key, model, task_id, settings_text, created_at, run_id, last in found:
        settings = load_object(settings_text, "evaluations", "settings", key)
        sha = member(member_object(settings, "task", "evaluations", "settings", key), "data_sha256", "string",
                     "evaluations", "settings", key)
        path = member(member_object(settings, "data", "evaluations", "settings", key), "path", "string",
                      "evaluations", "settings", key) \
            or paths.get((run_id, task_id, sha)) \
            or paths.get((None, task_id, sha))
        records.append(EvaluationRecord(key, model, task_id, settings, (last or "", created_at or ""), path))
    return sorted(records, key=lambda r: (r.recency, r.key), reverse=True)


def _run_data_paths(db: sqlite_utils.Database) -> dict[tuple[str | None, str, str | None], str]:
    """(run id, task, data SHA-256) -> data path as the runs recorded them; (None, task, sha) -> the newest."""
    paths: dict[tuple[str | None, str, str | None], str] = {}
    for run_id, settings_text in db.conn.execute("select id, settings from runs order by started_at desc"):
        tasks = load_object(settings_text, "runs", "settings", run_id).get("tasks") or []
        for entry in tasks if isinstance(tasks, list) else []:
            if isinstance(entry, dict) and entry.get("data"):
                task, sha = str(entry.get("task")), entry.get("data_sha256")
                paths.setdefault((run_id, task, sha), str(entry["data"]))
                paths.setdefault((None, task, sha), str(entry["data"]))
    return paths


def evaluation_exists(db: sqlite_utils.Database, key: str) -> bool:
    return db.conn.execute("select 1 from evaluations where key = ?", (key,)).fetchone() is not None


def evaluations_of(db: sqlite_utils.Database, model_id: str, task: str) -> list[tuple[str, str, int]]:
    """(key, settings JSON, number of stored items) of every evaluation of a model on a task."""
    return [tuple(row) for row in db.conn.execute(
        "select e.key, e.settings, (select count(*) from generations g where g.evaluation = e.key) "
        "from evaluations e where e.model_id = ? and e.task = ? order by e.created_at", (model_id, task))]


def generations_to_copy(db: sqlite_utils.Database, evaluation: str, into: str) -> list[dict[str, Any]]:
    """The generations of ``evaluation`` (with item and stored score) whose item ``into`` does not hold yet:
    what re-scoring into the evaluation ``into`` still has to copy."""
    return list(db.query("""
        select g.id as generation_id, g.item, g.prompt, g.output, g.prompt_tokens, g.truncated_tokens,
               g.completion_tokens, g.finish_reason, g.seconds, g.prompt_ms, g.generation_ms, g.error,
               i.item_id, i.payload, i.source, s.outcome, s.extracted, s.gold, s.method, s.detail, s.metrics
        from generations g join items i on i.key = g.item join scores s on s.generation_id = g.id
        where g.evaluation = ? and g.item not in (select item from generations where evaluation = ?)
        order by g.id""", [evaluation, into]))


def database_path(db: sqlite_utils.Database) -> str:
    """The file behind an open database (for messages that tell the user what to type next)."""
    row = db.conn.execute("pragma database_list").fetchone()
    return str(row[2]) if row else ""


def evaluation_heads(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    """Every evaluation's key, model and task, by model and task (what ``rescore`` walks)."""
    return list(db.query("select key, model_id, task from evaluations order by model_id, task"))


def stored_scores(db: sqlite_utils.Database, evaluation: str) -> list[dict[str, Any]]:
    """The scores of one evaluation in generation order (what a metric added later is computed from)."""
    return list(db.query("select generation_id, outcome, extracted, gold, metrics from scores "
                         "where evaluation = ? order by generation_id", [evaluation]))


def model_file_hashes(db: sqlite_utils.Database, model_id: str) -> set[str]:
    """The model-file SHA-256s results were stored under for ``model_id``."""
    return {sha for (sha,) in db.conn.execute("select distinct model_sha256 from evaluations where model_id = ?",
                                              (model_id,))}


def view_names(db: sqlite_utils.Database) -> set[str]:
    """The SQL views the database holds (older databases may lack m004's)."""
    return {row[0] for row in db.conn.execute("select name from sqlite_master where type = 'view'")}


def reads_file(db: sqlite_utils.Database, path: Path | str) -> bool:
    """Whether ``db`` reads the file ``path`` itself, not the temporary upgraded copy the read gate makes of an
    older database (store/readonly.py; that copy is unlinked, so it is never the same file as ``path``)."""
    row = db.conn.execute("select file from pragma_database_list where name = 'main'").fetchone()
    if not row or not row[0]:
        return False
    try:
        return os.path.samefile(row[0], path)
    except OSError:
        return False


def evaluation_head(db: sqlite_utils.Database, key: str) -> tuple[str, str, str | None]:
    """(model id, model SHA-256, settings JSON) of one evaluation."""
    row = db.conn.execute("select model_id, model_sha256, settings from evaluations where key = ?", (key,)).fetchone()
    if row is None:
        raise KeyError(key)
    return row[0], row[1], row[2]


def evaluation_scores(db: sqlite_utils.Database, key: str) -> list[tuple[int, str, str, str | None, str | None]]:
    """(generation id, item key, outcome, metrics JSON, gold) of one evaluation's scores, in generation order."""
    return list(db.conn.execute("select generation_id, item, outcome, metrics, gold from scores "
                                "where evaluation = ? order by generation_id", (key,)))


def answers_by_item(db: sqlite_utils.Database, evaluation: str) -> dict[str, dict[str, Any]]:
    """One evaluation's answers keyed by item key: the item, prompt, output and score, and for an arm the passages
    it retrieved (JSON, or None) with the search time (what ``show`` prints)."""
    return {row["item"]: row for row in db.query(
        "select s.item, s.generation_id, i.item_id, i.payload, g.prompt, g.output, s.outcome, s.extracted, s.gold, "
        "s.metrics, r.passages as retrieved, r.retrieval_ms from scores s join generations g on g.id = s.generation_id "
        "join items i on i.key = s.item left join retrievals r on r.evaluation = s.evaluation and r.item = s.item "
        "where s.evaluation = ? order by g.id", [evaluation])}


def report_metadata(db: sqlite_utils.Database) -> tuple[list[dict[str, Any]], list[dict[str, Any]],
                                                         list[dict[str, Any]]]:
    """Runs, models (with the ids they ran under) and evaluations, for the report's provenance sections."""
    runs = list(db.query("select id, started_at, finished_at, status, medbench_version, llama_cpp_version, "
                         "gpu_offload_supported, git_revision, command, settings, packages from runs "
                         "order by started_at"))
    models = list(db.query("select m.sha256, m.file_name, m.size_bytes, m.quantization, m.architecture, "
                           "m.chat_template_sha256, group_concat(distinct e.model_id) as model_ids from models m "
                           "left join evaluations e on e.model_sha256 = m.sha256 group by m.sha256"))
    evaluations = list(db.query("select key, model_id, model_sha256, task, settings, created_at from evaluations "
                                "order by model_id, task, created_at"))
    return runs, models, evaluations


def arm_retrievals(db: sqlite_utils.Database, model_id: str, task: str) -> list[dict[str, Any]]:
    """Per item of a retrieval arm's evaluations of ``task``: the evaluation, item id, payload (JSON), the passages
    retrieved (JSON) and the score's outcome and metrics (what retrieval quality beside the delta is made of)."""
    return list(db.query(
        "select e.key as evaluation, i.item_id, i.payload, r.passages, s.outcome, s.metrics from retrievals r "
        "join evaluations e on e.key = r.evaluation join items i on i.key = r.item "
        "join scores s on s.evaluation = r.evaluation and s.item = r.item "
        "where e.model_id = ? and e.task = ? order by e.created_at, i.item_id", [model_id, task]))
