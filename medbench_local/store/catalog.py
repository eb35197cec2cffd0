"""What every table, view and column of a results database means, and the questions readers ask most, as SQL.

Why here: this is the schema's documentation, kept beside the schema so that a new column without an
explanation fails a test (tests/test_view.py checks every column of a real database against ``tables()``). It
feeds Datasette's metadata (``medbench-local view``: descriptions under each table and column, and canned
queries in the database's menu), and anyone can export it with ``view --metadata-out``.

The metric columns of the views are described by the tasks that declare the metrics (``MetricSpec.description``),
for the metric columns a database actually holds (store/views.py): nothing here names a metric.
"""

from __future__ import annotations

import html
import re
import string
import urllib.parse
from collections.abc import Collection, Sequence
from typing import Any

from ..tasks import get_task, task_ids
from ..tasks.base import OUTCOMES
from .views import VIEWS, view_metrics


def metric_descriptions(metrics: Sequence[str]) -> dict[str, str]:
    """metric -> what one value means: the first registered task's declaration of it; a metric no registered
    task declares (a view made by another medbench-local, a task since removed) says so."""
    declared: dict[str, str] = {}
    for task_id in task_ids():
        for spec in get_task(task_id).metrics:
            declared.setdefault(spec.name, spec.description or f"declared by task '{task_id}'")
    return {m: declared.get(m, "a metric the tasks of this medbench-local do not declare (its value as stored in "
                               "scores.metrics)") for m in metrics}


_OUTCOME = ("correct, wrong (an answer was read), scored (free text with metrics), unparseable (no answer could be "
            "read), truncated (the token budget ran out first) or error (generation failed)")


def _item_results_columns(metrics: dict[str, str]) -> dict[str, str]:
    """In the view's own column order (store/views.py): the glossary reads like the table."""
    columns = {
        "model_id": "Model id from models.toml",
        "task": "Task id",
        "item_id": "The item's id in the dataset",
        "outcome": _OUTCOME,
        "extracted": "The answer read from the output (a letter, label, summary or codes)",
        "gold": "The gold answer",
        "latest": "1 for the evaluation 'compare' uses: the most recently active one of this model on this task",
        "role": "biomedical or general, as the model was run",
        "pairs": "The pairs (pairs.name) this model belongs to, comma-separated",
    }
    columns.update({m: f"Metric: {text}" for m, text in metrics.items()})
    columns.update({
        "output": "The model's raw output",
        "completion_tokens": "Tokens generated",
        "finish_reason": "stop (stop string or end of text), length (token budget) or error",
        "seconds": "Wall time of the generation",
        "prompt_tokens": "Tokens of the rendered prompt (after truncation)",
        "truncated_tokens": "Tokens dropped from the start of a prompt beyond the context",
        "prompt_ms": "llama.cpp prompt processing time, ms",
        "generation_ms": "llama.cpp token generation time, ms",
        "error": "The error message when generation failed",
        "method": "How the answer was read (extraction rule)",
        "metrics": "All metric values of this item as JSON (also metrics not known to this version)",
        "created_at": "When the answer was stored (UTC)",
        "run_id": "The run (runs.id) that generated this answer",
        "generation_id": "generations.id of this answer (also scores.generation_id)",
        "evaluation": "evaluations.key: model × task × settings × data",
        "item": "items.key: SHA-256 of task, item id and item content",
        "model_sha256": "SHA-256 of the GGUF file (models.sha256)",
    })
    return columns


def _paired_items_columns(metrics: dict[str, str]) -> dict[str, str]:
    """In the view's own column order (store/views.py)."""
    columns = {"pair": "pairs.name", "task": "Task id", "item_id": "The item's id in the dataset"}

    def both(name: str, text: str) -> None:
        for side in ("biomedical", "general"):
            columns[f"{side}_{name}"] = text.format(side=side, Side=side.capitalize())

    both("model_id", "The pair's {side} model")
    both("outcome", "The {side} model's outcome: " + _OUTCOME)
    both("extracted", "The answer read from the {side} model's output")
    columns["gold"] = "The gold answer"
    columns["disagree"] = "1 when any metric column differs between the two models on this item"
    both("output", "The {side} model's raw output")
    both("completion_tokens", "Tokens the {side} model generated")
    both("seconds", "Wall time of the {side} model's generation")
    for metric, text in metrics.items():
        both(metric, "{Side} model's metric: " + text.replace("{", "{{").replace("}", "}}"))
    both("evaluation", "The {side} model's latest evaluation on this task (evaluations.key)")
    columns["item"] = "items.key (the same item for both models)"
    return columns


def tables(metrics: Sequence[str] | None = None) -> dict[str, tuple[str, dict[str, str]]]:
    """table or view -> (description, {column: description}); ``metrics``: the views' metric columns (None:
    today's registry's, store.views.view_metrics)."""
    described = metric_descriptions(view_metrics() if metrics is None else metrics)
    return {**_TABLES,
            "item_results": ("View: one row per evaluation × item with everything joined; filter latest = 1 for "
                             "what 'compare' uses", _item_results_columns(described)),
            "paired_items": ("View: one row per pair × item both models answered (latest evaluations), side by "
                             "side", _paired_items_columns(described))}


# table -> (description, {column: description}); tables() adds the views
_TABLES: dict[str, tuple[str, dict[str, str]]] = {
    "runs": ("One row per invocation of 'run': command line, status, versions, settings", {
        "id": "Run id", "started_at": "Start time (UTC)", "finished_at": "End time (UTC); empty while running or "
        "when the process was killed", "status": "running, completed, interrupted or failed",
        "command": "The command line (JSON list)", "medbench_version": "medbench-local version",
        "python_version": "Python version", "platform": "Operating system and machine",
        "llama_cpp_version": "llama-cpp-python version", "llama_system_info": "llama.cpp's system info: "
        "compiled backends and CPU features", "gpu_offload_supported": "1 when this llama.cpp build can offload "
        "to a GPU", "git_revision": "medbench-local source revision, when run from a git checkout",
        "packages": "Versions of the packages that affect results (JSON)",
        "settings": "Config file and how it was found, seed, threads, batch size, limit, shard (K/N or null), "
        "host name, models and tasks with data paths and SHA-256 (JSON)"}),
    "models": ("One row per GGUF file, by content", {
        "sha256": "SHA-256 of the GGUF file: the model's identity", "file_name": "File name",
        "size_bytes": "File size in bytes", "path": "Where the file was last read from",
        "quantization": "Quantization type from the GGUF header (e.g. Q4_K_M)",
        "architecture": "Architecture from the GGUF header (e.g. llama)",
        "metadata": "GGUF header summary (JSON)", "chat_template": "The chat template used (GGUF's own or "
        "models.toml's override)", "chat_template_sha256": "SHA-256 of the chat template",
        "first_seen": "When this file was first used (UTC)"}),
    "pairs": ("A biomedical model and its general-purpose counterpart", {
        "name": "Pair name from models.toml", "biomedical": "Biomedical model id", "general": "General model id",
        "description": "Description from models.toml"}),
    "evaluations": ("One row per model × task × output-relevant settings × data: results never mix across rows", {
        "key": "SHA-256 of model file, chat template, llama.cpp version, engine settings, task settings, prompt, "
        "few-shot examples and data", "model_id": "Model id from models.toml", "model_sha256": "models.sha256",
        "role": "biomedical or general", "task": "Task id", "prompt_mode": "chat (the model's chat template) or "
        "base (plain text)", "prompt_sha256": "SHA-256 of the prompt template",
        "settings": "Engine, task and load settings (JSON)", "created_at": "When the evaluation was first "
        "created (UTC)", "run_id": "The run that created it"}),
    "items": ("One row per task item (shared by all models)", {
        "key": "SHA-256 of task, item id and content", "task": "Task id", "item_id": "The item's id in the "
        "dataset", "content_sha256": "SHA-256 of the item's content", "source": "Data file and line",
        "payload": "The item itself (JSON), or only its hash with 'run --no-store-inputs'"}),
    "generations": ("One row per model answer to an item: the exact prompt and output", {
        "id": "Generation id", "evaluation": "evaluations.key", "item": "items.key", "run_id": "The run that "
        "generated it", "prompt": "The exact rendered prompt (or its SHA-256 with --no-store-inputs)",
        "prompt_tokens": "Tokens of the prompt (after truncation)", "truncated_tokens": "Tokens dropped from the "
        "start of a prompt beyond the context", "prompt_tokens_evaluated": "Prompt tokens actually processed for "
        "this item; the rest came from the KV cache (a prefix shared with the previous item; null before m005)",
        "server_requests": "Served log-likelihood: HTTP requests made to the server for this item (null "
        "in-process and before m008)", "server_tokens": "Served log-likelihood: tokens sent to the server to be "
        "scored for this item (its prefix cache may skip some; null in-process and before m008)",
        "output": "Raw output", "completion_tokens": "Tokens generated",
        "finish_reason": "stop, length, loglik (likelihood scoring) or error", "seconds": "Wall time", "prompt_ms": "llama.cpp prompt "
        "processing time, ms", "generation_ms": "llama.cpp token generation time, ms", "error": "Error message "
        "when generation failed", "created_at": "When it was stored (UTC)"}),
    "scores": ("One row per generation: the verdict", {
        "generation_id": "generations.id", "evaluation": "evaluations.key", "item": "items.key",
        "outcome": _OUTCOME, "extracted": "The answer read from the output", "gold": "The gold answer",
        "method": "How the answer was read (extraction rule)", "detail": "Extraction detail or error message",
        "metrics": "Metric values (JSON); one column each in the item_results view"}),
    "metric_runs": ("Which weights and library versions computed an optional metric (BERTScore, UMLS-F1)", {
        "evaluation": "evaluations.key", "metric": "bertscore or umls", "identity": "Weights SHA-256, layer and "
        "versions (JSON)", "items": "Items scored", "created_at": "When (UTC)"}),
    "contamination_probes": ("One model's contamination probe of one task (medbench-local contamination)", {
        "key": "Probe key (SHA-256 of the identity)", "model_id": "Model id", "model_sha256": "models.sha256",
        "role": "biomedical or general", "pair": "The pair probed", "task": "Task id",
        "identity": "Probe version, text construction, k, control kind, seed and engine identity (JSON)",
        "created_at": "When (UTC)"}),
    "contamination_signals": ("Membership signals per probe, item and variant (original or control)", {
        "key": "Row key", "probe": "contamination_probes.key", "variant": "original or control",
        "item_id": "Item id", "text_sha256": "SHA-256 of the scored text", "tokens": "Tokens read",
        "truncated_tokens": "Tokens cut off beyond n_ctx", "loss": "Mean negative log-likelihood (nats/token)",
        "zlib": "loss / zlib-compressed bytes", "min_k": "Min-K% Prob", "min_k_pp": "Min-K%++",
        "seconds": "Time to score it", "created_at": "When (UTC)"}),
    "contamination_corpora": ("A corpus an overlap was measured against", {
        "key": "Corpus key (SHA-256 of the identity)",
        "identity": "Files with SHA-256, n-gram size and normalisation version (JSON)", "created_at": "When (UTC)"}),
    "contamination_overlap": ("Per item: its n-gram overlap with a corpus", {
        "key": "Row key", "corpus": "contamination_corpora.key", "task": "Task id", "item_id": "Item id",
        "text_sha256": "SHA-256 of the item's text", "ngrams": "Distinct n-grams in the item",
        "found": "How many of them the corpus holds", "share": "found / ngrams",
        "longest_run": "Longest run of consecutive item n-grams found in the corpus", "created_at": "When (UTC)"}),
    "retrievals": ("One row per item of a retrieval arm (a model with passages from an index, docs/retrieval.md)", {
        "evaluation": "evaluations.key", "item": "items.key", "index_sha256": "The index's content identity "
        "(SHA-256 of its settings and passages; 'index info')", "query": "The text searched (or its SHA-256 with "
        "--no-store-inputs)", "passages": "Retrieved passages, best first (JSON): id, BM25 score (higher is "
        "better), placed (in the prompt, within the token budget), text", "placed": "Passages placed in the prompt",
        "passage_tokens": "Tokens of the passage block in the prompt", "retrieval_ms": "Time of the search, ms"}),
    "_migrations": ("Schema migrations applied to this database, in order", {
        "name": "Migration name", "applied_at": "When it was applied (UTC)"}),
}

_OUTCOME_COUNTS = ",\n       ".join(f"sum(outcome = '{name}') as {name}" for name in OUTCOMES)

# name -> (title, description, SQL). Named parameters (:pair, :task) may be left empty for "all".
CANNED_QUERIES: dict[str, tuple[str, str, str]] = {
    "scores_per_evaluation": (
        "Scores per evaluation",
        "Mean of every metric per evaluation (model × task × settings), over all its items; errors count as 0. "
        "'compare' adds confidence intervals and paired tests (and the --reference-quirks weighting).",
        """select model_id, role, task, latest, evaluation, j.key as metric, count(*) as n, avg(j.value) as mean
from item_results, json_each(item_results.metrics) as j
group by evaluation, j.key
order by task, model_id, latest desc, evaluation, metric"""),
    "pair_disagreements": (
        "Items a pair disagrees on",
        "Both models' answers side by side where any metric differs (latest evaluations). Leave pair and task "
        "empty for all.",
        """select pair, task, item_id, biomedical_model_id, biomedical_outcome, biomedical_extracted,
       general_model_id, general_outcome, general_extracted, gold, biomedical_output, general_output
from paired_items
where disagree = 1 and (:pair = '' or pair = :pair) and (:task = '' or task = :task)
order by pair, task, item_id"""),
    "outcomes_per_model_task": (
        "Outcomes per model and task",
        "How each model's answers ended, per task (the latest evaluation of each model on each task).",
        f"""select model_id, task, count(*) as n,
       {_OUTCOME_COUNTS}
from item_results
where latest = 1
group by model_id, task
order by task, model_id"""),
    "slowest_items": (
        "Slowest items",
        "The 100 generations that took longest, with their token counts and llama.cpp timings.",
        """select model_id, task, item_id, seconds, prompt_tokens, truncated_tokens, completion_tokens,
       prompt_ms, generation_ms, outcome, run_id
from item_results
where seconds is not null
order by seconds desc
limit 100"""),
    "unanswered_items": (
        "Truncated, unparseable and failed items",
        "Items whose answer could not be used (latest evaluations): truncated by the token budget, unparseable, "
        "or a generation error. These count against the model.",
        """select model_id, task, item_id, outcome, finish_reason, completion_tokens, truncated_tokens, extracted,
       gold, error, output
from item_results
where latest = 1 and outcome in ('truncated', 'unparseable', 'error')
order by task, model_id, outcome, item_id"""),
}


# How the pages read (issue 20): Datasette 0.x prints a table's column glossary unfolded above its rows (about
# 1,900 px for item_results); it is folded into the description instead (a <details>), so Datasette's own list
# is hidden. It is still in "columns", which Datasette shows in each column's menu. The long JSON cells of
# runs stay on one line (the row page shows them whole). A data: URL: nothing is fetched from the network.
_STYLE = """
dl.column-descriptions { display: none; }
details.mb-glossary { margin: 0.3em 0 1em; }
details.mb-glossary > summary { cursor: pointer; color: #444; }
details.mb-glossary dl { display: grid; grid-template-columns: max-content minmax(0, 1fr); gap: 0.15em 1em;
                         max-width: 75em; margin: 0.5em 0; }
details.mb-glossary dt { font-family: monospace; font-weight: bold; }
details.mb-glossary dd { margin: 0; }
ul.mb-queries { list-style: disc; padding-left: 1.5em; }
ul.mb-queries li { margin-bottom: 0.25em; }
body.table-runs td { max-width: 22em; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
body.table-item_results td, body.table-paired_items td { white-space: nowrap; }
body.query td.col-model_id, body.query td.col-task, body.query td.col-item_id, body.query td.col-pair,
body.query td.col-outcome, body.query td[class*="_model_id"], body.query td[class*="_outcome"] {
  white-space: nowrap; }
body.table-item_results td.col-output, body.table-item_results td.col-error, body.table-item_results td.col-metrics,
body.table-paired_items td.col-biomedical_output, body.table-paired_items td.col-general_output,
body.query td.col-output, body.query td.col-error, body.query td.col-biomedical_output,
body.query td.col-general_output { white-space: pre-wrap; min-width: 28em; }
body.table-item_results td.col-extracted, body.table-item_results td.col-gold, body.table-paired_items td.col-gold,
body.table-paired_items td[class*="_extracted"], body.query td.col-gold, body.query td[class*="extracted"] {
  white-space: normal; max-width: 24em; }
"""
STYLE_URL = "data:text/css," + urllib.parse.quote(" ".join(_STYLE.split()))

# table -> Datasette table options beyond descriptions: the order and facets a reader wants first.
_TABLE_OPTIONS: dict[str, dict[str, Any]] = {
    "runs": {"sort_desc": "started_at"},
    "item_results": {"facets": ["model_id", "task", "outcome"]},
    "_migrations": {"hidden": True},
}


def tilde_encode(name: str) -> str:
    """A database, table or query name as Datasette writes it in a URL (its "tilde encoding": letters, digits,
    ``_`` and ``-`` stay, a space becomes ``+``, every other UTF-8 byte ``~XX``)."""
    safe = set(string.ascii_letters + string.digits + "_-")
    return "".join(chr(b) if chr(b) in safe else "+" if b == 0x20 else f"~{b:02X}" for b in name.encode("utf-8"))


def queries_needing(sql: str) -> set[str]:
    """The result views (store/views.py) a canned query reads; an older database may not have them."""
    return {name for name in VIEWS if re.search(rf"\b{name}\b", sql)}


def _table_html(description: str, columns: dict[str, str]) -> str:
    entries = "".join(f"<dt>{html.escape(name)}</dt><dd>{html.escape(text)}</dd>" for name, text in columns.items())
    return (f"<p>{html.escape(description)}</p><details class=\"mb-glossary\"><summary>What each of the "
            f"{len(columns)} columns means</summary><dl>{entries}</dl></details>")


def _guide_html(database: str, queries: dict[str, tuple[str, str, str]], present: Collection[str],
                described: dict[str, tuple[str, dict[str, str]]], *, front: bool) -> str:
    """Where to start: on the front page (``front``) the canned queries as links, since Datasette's index lists
    tables only; on the database page, which lists the queries itself, a pointer to them. Then the two views."""
    base = "/" + tilde_encode(database)
    parts = ["<p>Every prompt, output and score written by medbench-local.</p>"]
    if queries and front:
        items = "".join(f"<li><a href=\"{base}/{tilde_encode(name)}\">{html.escape(title)}</a>: "
                        f"{html.escape(text)}</li>" for name, (title, text, _) in queries.items())
        parts.append(f"<p>Start with a question:</p><ul class=\"mb-queries\">{items}</ul>")
    elif queries:
        parts.append("<p>Start with a question: the canned queries are listed under <em>Queries</em> below.</p>")
    views = [(name, described[name][0].removeprefix("View: ")) for name in VIEWS if name in present]
    if views:
        links = "; ".join(f"<a href=\"{base}/{tilde_encode(name)}\">{name}</a> ({html.escape(text)})"
                          for name, text in views)
        parts.append(f"<p>{'Or browse' if queries else 'Browse'}, filter and facet everything per item: "
                     f"{links}.</p>")
    return "".join(parts)


def datasette_metadata(database: str, title: str, present: Collection[str] | None = None,
                       metrics: Sequence[str] | None = None) -> dict[str, Any]:
    """Datasette 0.x metadata for one results database named ``database`` (Datasette's name: the file stem).

    ``present``: the tables and views the database has; canned queries that read a view it lacks (an older
    database opened read-only, never upgraded) are left out. None: a current database. ``metrics``: the metric
    columns of its views (store.views.stored_view_metrics); None: those of today's registry.
    """
    described = tables(metrics)
    present = set(described) if present is None else set(present)
    queries = {name: query for name, query in CANNED_QUERIES.items() if queries_needing(query[2]) <= present}
    return {
        "title": title,
        "description_html": _guide_html(database, queries, present, described, front=True),
        "extra_css_urls": [STYLE_URL],
        "databases": {database: {
            "description_html": _guide_html(database, queries, present, described, front=False),
            "tables": {name: {"description": description, "description_html": _table_html(description, columns),
                              "columns": dict(columns), **_TABLE_OPTIONS.get(name, {})}
                       for name, (description, columns) in described.items()},
            "queries": {name: {"title": title_, "description": text, "sql": sql}
                        for name, (title_, text, sql) in queries.items()},
        }},
    }
