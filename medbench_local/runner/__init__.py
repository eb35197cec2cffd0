"""Orchestration of a run: validate everything, then for each model: load once, run every task, store per item.

Order matters for the guarantees:
1. All task data is parsed and every model file located and its GGUF header read *before* the database is
   touched, so bad input never leaves a half-written run behind.
2. Each model is loaded once per run and used for all tasks.
3. Each item is committed on its own (generation + score in one transaction); a rerun of the same command
   computes the same evaluation key and skips what is done. A first Ctrl-C finishes the item in flight and
   stops; a second one aborts at once (the in-flight item is then lost, nothing else).
4. Each scoring mode (``generate``, ``loglik``, ``constrained``; tasks/loglik_scoring.py) is its own evaluation
   of the same items: the mode is part of the task settings, hence of the evaluation key. Items run in the
   order the task loaded them; tasks put items that share a prompt prefix next to each other, and the engine
   keeps that prefix in its KV cache when it provably does not change outputs.
"""

from __future__ import annotations

import hashlib
import math
import platform
import re
import sqlite3
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import sqlite_utils

from .. import __version__
from ..config import Config, ModelSpec, ServedSource
from ..errors import ModelFileError, UserError
from ..engine.base import Engine, GenerateRequest, LoglikelihoodRequest
from ..engine.llama import LlamaEngine, require_gpu_build
from ..engine.rpc import check_rpc_plan, require_rpc_build
from ..engine.runtime import build_info
from ..engine.preflight import check_model_file
from ..modelfiles.hashing import cached_sha256, sha256_file
from ..modelfiles.lock import lock_path, read_lock
from ..modelfiles.verdict import LOCK_MISMATCH, SIZE, verify
from ..modelfiles.resolve import require
from ..analysis.rescore import older_extraction_items
from ..item_pool import run_pooled
from ..provenance import evaluation_key, git_revision, package_versions
from ..signals import StopFlag
from ..store import queries, writer
from ..store.claims import ItemClaims, database_path
from ..tasks.base import Item, PromptContext, Score, Task, TaskData, sha256_text
from ..tasks.loglik_scoring import (CHOICE_MODES, LOGLIK_TARGETS, SCORING_MODES, choice_grammar, choice_settings,
                                   constrained_max_tokens, loglik_generation, require_decided, score_constrained,
                                   score_loglik, supports_choices)


@dataclass(frozen=True)
class ModelRole:
    spec: ModelSpec
    role: str


@dataclass(frozen=True)
class LoadedTask:
    task: Task
    data_path: Path
    data: TaskData
    data_sha256: str = ""  # of the data file(s) as read: part of the evaluation identity
    legacy_data_sha256: str = ""  # the fingerprint older versions computed (to resume their evaluations)
    items_total: int = 0          # items in the data before --limit

    @property
    def items(self) -> list[Item]:
        return self.data.items


@dataclass
class RunOptions:
    seed: int = 1234
    n_threads: int | None = None
    n_batch: int = 512
    limit: int | float | None = None   # N items, or a fraction in (0, 1) of each task's items
    limit_mode: str = "random"         # "random": seeded sample (see sample_items); "first": the file's first N
    retry_errors: bool = False
    store_inputs: bool = True
    allow_cpu: bool = False
    shard: Shard | None = None
    scoring: tuple[str, ...] = ("generate",)   # each mode is a separate evaluation of the same items
    loglik_target: str = "letter"              # continuations for loglik/constrained: " A" or the option text
    kv_reuse: bool = True                      # keep a shared prompt prefix in the KV cache (outputs unchanged)
    command: list[str] = field(default_factory=list)


@dataclass
class RunSummary:
    run_id: str
    status: str = "completed"
    generated: int = 0
    skipped: int = 0
    errors: int = 0
    held_elsewhere: int = 0   # items a concurrent run of the same model and task was generating: left to it
    done_elsewhere: int = 0   # items a concurrent run finished first (ours was dropped, theirs kept)
    stop_signal: str = ""     # the signal that stopped the run, if any (SIGINT, SIGTERM, SIGHUP)
    first_error: str = ""     # the first item error's message, as stored (for the line of a failed run)


class Reporter(Protocol):
    def begin(self, model_id: str, task_id: str, total: int, already_done: int) -> None: ...

    def advance(self, score: Score, tokens: int, seconds: float) -> None:
        """``tokens``: generated, or for loglik the prompt tokens read."""

    def end(self) -> None: ...

    def note(self, text: str) -> None: ...


EngineFactory = Callable[[ModelSpec, Path, "RunOptions"], Engine]


LIMIT_MODES = ("random", "first")


def load_tasks(task_paths: list[tuple[Task, Path]], limit: int | float | None, *, limit_mode: str = "random",
               seed: int = 1234, shard: Shard | None = None) -> list[LoadedTask]:
    """Parse every task's data (absolute, resolved paths: items record "<abs path>:<line>" as their source),
    fingerprint it, keep this ``--shard``'s items, then apply ``--limit`` within the shard
    (see ``sample_items``)."""
    loaded = []
    for task, given in task_paths:
        path = Path(given).expanduser().resolve()
        data = task.load(path)
        fingerprint = data_fingerprint(path)
        items = shard_items(data.items, shard, task.id) if shard is not None else data.items
        items = sample_items(items, limit, limit_mode, seed=seed, task_id=task.id, data_sha256=fingerprint)
        legacy = legacy_data_fingerprint(path, fingerprint) if path.is_file() else fingerprint
        loaded.append(LoadedTask(task, path, replace(data, items=items), fingerprint, legacy, len(data.items)))
    return loaded


def limit_count(limit: int | float, total: int) -> int:
    """How many items ``--limit`` asks for: N, or a fraction in (0, 1) of ``total`` rounded up (lm-eval style)."""
    if isinstance(limit, float) and not limit.is_integer():
        if not 0.0 < limit < 1.0:
            raise ValueError(f"a fractional limit must lie in (0, 1), got {limit}")
        return math.ceil(limit * total)
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    return int(limit)


def sample_items(items: list[Item], limit: int | float | None, mode: str, *, seed: int, task_id: str,
                 data_sha256: str) -> list[Item]:
    """The items a ``--limit`` run evaluates, in file order.

    Why random by default: data files are often sorted (PubMedQA's ground truth lists its 276 "yes" answers
    first, so the first N <= 276 items let "always A" score 100%). The sample is the first N items of a
    permutation that depends only on (seed, task id, data fingerprint, item id): both models of a pair, a
    resumed run and a later larger --limit see the same items, and a larger limit is a superset of a smaller
    one. The permutation orders items by SHA-256, not by a library RNG, so it never changes between versions.
    """
    if limit is None:
        return list(items)
    if mode not in LIMIT_MODES:
        raise ValueError(f"limit mode must be one of {', '.join(LIMIT_MODES)}, got {mode!r}")
    count = limit_count(limit, len(items))
    if mode == "first":
        return list(items[:count])
    rank = sorted(range(len(items)), key=lambda i: sha256_text(f"{seed}\0{task_id}\0{data_sha256}\0{items[i].id}"))
    chosen = set(rank[:count])
    return [item for i, item in enumerate(items) if i in chosen]


@dataclass(frozen=True)
class Shard:
    """``run --shard K/N``: this process evaluates shard ``index`` (1-based) of ``count``."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


_SHARD = re.compile(r"^\s*([0-9]{1,9})\s*/\s*([0-9]{1,9})\s*$")


def parse_shard(text: str) -> Shard:
    """``K/N`` with 1 <= K <= N, else one line saying what is expected (and how to feed a 0-based Slurm array).

    Why 1-based only: Slurm arrays start wherever ``--array`` says (often 0), and a silent off-by-one would
    skip one shard and evaluate another twice; accepting exactly one convention makes the mistake loud.
    """
    match = _SHARD.match(text)
    if match is None or not 1 <= int(match.group(1)) <= int(match.group(2)):
        raise UserError(f"--shard: expected K/N with 1 <= K <= N (e.g. 2/8), got {text!r}; for a Slurm array "
                        "numbered from 0 use --shard $((SLURM_ARRAY_TASK_ID+1))/N, N the full array size")
    return Shard(int(match.group(1)), int(match.group(2)))


def shard_of(task_id: str, item_id: str, count: int) -> int:
    """The shard (1..count) of an item: the first 8 bytes of SHA-256("<task>\\0<item id>") as a big-endian
    number, mod count, + 1.

    Why a hash of the task and item id only: an item's shard never depends on the other items, so shards stay
    the same when a data file grows or is reordered, every machine computes the same split without talking to
    the others, and the N shards together are exactly the data (each item in one shard).
    """
    digest = hashlib.sha256(f"{task_id}\0{item_id}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count + 1


def shard_items(items: list[Item], shard: Shard, task_id: str) -> list[Item]:
    """The items of ``shard``, in file order."""
    return [item for item in items if shard_of(task_id, item.id, shard.count) == shard.index]


def check_scoring(tasks: list[LoadedTask], modes: tuple[str, ...], target: str = "letter") -> None:
    """Refuse, before anything is written, a scoring mode a task cannot do (free-text tasks have no options)."""
    for mode in modes:
        if mode not in SCORING_MODES:
            raise UserError(f"unknown scoring mode '{mode}' (choose from {', '.join(SCORING_MODES)})")
    if target not in LOGLIK_TARGETS:
        raise UserError(f"unknown loglik target '{target}' (choose from {', '.join(LOGLIK_TARGETS)})")
    choice_modes = [m for m in modes if m in CHOICE_MODES]
    for loaded in tasks:
        if choice_modes and not supports_choices(loaded.task):
            raise UserError(f"task '{loaded.task.id}' is not multiple choice: --scoring {choice_modes[0]} needs "
                            "options to score (use --scoring generate for it)")


def data_fingerprint(path: Path) -> str:
    """The data's identity: a single file's own SHA-256; for a folder, SHA-256 over every file in it (relative
    names + contents).

    Why in the evaluation identity: results on the bundled sample and on the real file, or on a file edited
    in place, must never be averaged together. Why a file's bare content hash: renaming or moving a file does
    not change its data, so it must not start a new evaluation, and anyone can check it with ``sha256sum``.
    ``--limit`` does not change it, so a partial run resumes.
    """
    if path.is_file():
        return sha256_file(path)
    return _folder_fingerprint(path)


def legacy_data_fingerprint(path: Path, file_sha256: str | None = None) -> str:
    """The fingerprint of medbench-local before the file's own SHA-256 was used: for a single file SHA-256 over
    (file name, file SHA-256); folders unchanged. Only to find evaluations an older version stored.
    ``file_sha256``: the file's SHA-256 when already known (large files are read once)."""
    if path.is_file():
        digest = hashlib.sha256()
        digest.update(path.name.encode() + b"\0")
        digest.update((file_sha256 or sha256_file(path)).encode() + b"\0")
        return digest.hexdigest()
    return _folder_fingerprint(path)


def _folder_fingerprint(path: Path) -> str:
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode() + b"\0")
        digest.update(sha256_file(file).encode() + b"\0")
    return digest.hexdigest()


def locate_models(models: list[ModelRole], allow_cpu: bool = False, config: Config | None = None
                  ) -> dict[str, Path]:
    """Resolve and check every model file (against models.toml's sha256 and models.lock, and the GPU build
    when a model asks for the GPU) now, so a missing, changed or broken file fails before any work."""
    locked = read_lock(lock_path(config)) if config is not None else {}
    paths = {}
    for entry in models:
        if entry.spec.served is not None:  # the weights are the server's; a local GGUF only lends its template
            paths[entry.spec.id] = served_template_path(entry.spec)  # type: ignore[assignment]
            continue
        path = require(entry.spec)
        sha256, _ = check_model_file(entry.spec, path)  # header, context, memory, models.toml pin
        verdict = verify(entry.spec, locked.get(entry.spec.id), config.path.parent if config else Path("."),
                         digest=lambda _: sha256, stale_fails=False)  # a stale lock entry is not a reference
        if verdict.problem in (SIZE, LOCK_MISMATCH) and verdict.lock is not None:
            raise ModelFileError(f"model '{entry.spec.id}': {path} has SHA-256 {sha256[:12]}…, but models.lock "
                                 f"records {verdict.lock['sha256'][:12]}…; the file changed since it was locked "
                                 "(run 'medbench-local models verify', or 'models pull --update' to accept it)")
        require_gpu_build(entry.spec, allow_cpu)
        require_rpc_build(entry.spec.id, entry.spec.rpc_servers)
        paths[entry.spec.id] = path
    check_rpc_plan((entry.spec.id, entry.spec.rpc_servers) for entry in models)
    return paths


def require_decoding(models: list[ModelRole], paths: dict[str, Path]) -> None:
    """This llama.cpp build must decode on this CPU before a run creates anything: one token with the smallest
    local model, in a child process (engine/selftest.py; remembered per build and machine once it worked). A build
    that crashes here would otherwise kill the run with exit 139 and leave a 'running' run behind."""
    from ..engine.selftest import check_decoding
    from ..modelfiles.hashing import cache_dir

    local = [paths[entry.spec.id] for entry in models
             if entry.spec.served is None and paths.get(entry.spec.id) is not None]
    if not local:
        return
    verdict = check_decoding(min(local, key=lambda path: path.stat().st_size), cache_dir())
    if not verdict.ok:
        raise UserError(verdict.detail + (f"; rebuild llama-cpp-python for this CPU: {verdict.rebuild}"
                                          if verdict.rebuild else "; see 'medbench-local doctor'"))


def served_template_path(spec: ModelSpec) -> Path | None:
    """A served model's local GGUF (path, package or cached hub file), read for its chat template only."""
    if isinstance(spec.source, ServedSource):
        return None
    return require(spec)


def check_served(models: list[ModelRole], modes: tuple[str, ...]) -> list[str]:
    """Reach every served model's server before the database is touched: reachable, the model name served,
    the API key accepted, the scoring modes possible. Returns the hosts ("host:port") a run may reach."""
    from ..engine.openai_compat import make_client, probe_server, require_capabilities

    hosts: list[str] = []
    for entry in models:
        if entry.spec.served is None:
            continue
        client = make_client(entry.spec, retries=0)
        try:
            require_capabilities(entry.spec, probe_server(entry.spec, client), modes, client)
        finally:
            client.close()
        hosts.append(entry.spec.served.host)
    return list(dict.fromkeys(hosts))


def check_model_history(db: sqlite_utils.Database, models: list[ModelRole], paths: dict[str, Path],
                        accept_changed: bool = False) -> None:
    """Refuse to carry on under a model id whose file changed since results were stored for it.

    Results of different files never mix (the file's SHA-256 is part of every evaluation key), but a silently
    replaced file under the same name usually means a mistake (a re-download, another quantization); the user
    must say so with ``--accept-changed-model``. Old results are kept either way.
    """
    if accept_changed:
        return
    for entry in models:
        known = queries.model_file_hashes(db, entry.spec.id)
        if entry.spec.served is not None:
            from ..engine.openai_compat import weights_identity

            current, _ = weights_identity(entry.spec.served, entry.spec.sha256)
        else:
            current = cached_sha256(paths[entry.spec.id])
        if known and current not in known:
            raise ModelFileError(
                f"model '{entry.spec.id}': its file changed since results were stored in this database "
                f"(SHA-256 {sorted(known)[0][:12]}… then, {current[:12]}… now: "
                f"{paths[entry.spec.id] or entry.spec.source.describe()}); results "
                "of different files are never mixed; pass --accept-changed-model to start new evaluations "
                "(the old results are kept)")


def engine_identity(engine: Engine) -> dict[str, Any]:
    """What decides the outputs of ``engine`` (its ``identity()``: engine/identity.py says what is left out)."""
    return engine.identity()


def run_record(config: Config, options: RunOptions, models: list[ModelRole], tasks: list[LoadedTask]
               ) -> dict[str, Any]:
    info = build_info()
    return {
        "command": options.command,
        "medbench_version": __version__,
        "python_version": sys.version.split()[0],
        "platform": platform.platform(),
        "llama_cpp_version": info["llama_cpp_python"],
        "llama_system_info": info["system_info"],
        "gpu_offload_supported": int(info["gpu_offload"]),
        "git_revision": git_revision(),
        "packages": package_versions(),
        "settings": {
            "config": str(config.path), "config_origin": config.origin,
            "seed": options.seed, "n_threads": options.n_threads,
            "n_batch": options.n_batch, "limit": options.limit, "limit_mode": options.limit_mode,
            "limit_seed": options.seed if options.limit is not None else None,
            "store_inputs": options.store_inputs,
            "shard": str(options.shard) if options.shard else None, "host": platform.node(),
            "scoring": list(options.scoring), "loglik_target": options.loglik_target, "kv_reuse": options.kv_reuse,
            "models": [{"id": m.spec.id, "role": m.role, "source": m.spec.source.describe()} for m in models],
            "tasks": [{"task": t.task.id, "data": str(t.data_path), "data_sha256": t.data_sha256,
                       "items": len(t.items), "items_in_data": t.items_total} for t in tasks],
        },
    }


def execute(db: sqlite_utils.Database, config: Config, models: list[ModelRole], tasks: list[LoadedTask],
            paths: dict[str, Path], options: RunOptions, reporter: Reporter,
            engine_factory: EngineFactory | None = None, pairs: tuple[PairRecord, ...] = ()) -> RunSummary:
    """Run every model on every task; returns counts. Caller has validated inputs (load_tasks, locate_models).
    ``engine_factory`` defaults to the llama.cpp engine; tests of the orchestration pass a fake. ``pairs``: the
    pair definitions this run records.

    A run that cannot start leaves nothing behind: the first model is loaded *before* the run, its pairs and its
    model rows are recorded, and a run that stores no item because a model or its server fails after the quick
    checks is taken back entirely (``writer.forget_unstarted_run``), so the database is as it was."""
    factory = engine_factory or default_engine
    summary = RunSummary(run_id=uuid.uuid4().hex)
    first = factory(models[0].spec, paths[models[0].spec.id], options) if models else None
    try:
        replaced = {pair.name: writer.record_pair(db, pair.name, pair.biomedical, pair.general, pair.description)
                    for pair in pairs}
        writer.start_run(db, summary.run_id, run_record(config, options, models, tasks))
    except BaseException:
        if first is not None:
            first.close()
        raise
    new_models: list[str] = []
    claims = ItemClaims(database_path(db.conn))
    status = "failed"
    try:
        with StopFlag() as stop:
            for index, entry in enumerate(models):
                if stop.requested:
                    break
                engine = first if index == 0 and first is not None else \
                    factory(entry.spec, paths[entry.spec.id], options)
                abort = getattr(engine, "abort", None)
                unregister = stop.on_abort(abort) if callable(abort) else (lambda: None)
                try:
                    _run_model(db, entry, engine, tasks, options, reporter, summary, stop, claims, new_models)
                finally:
                    unregister()
                    engine.close()
        status = "interrupted" if stop.requested else ("failed" if summary.errors and not summary.generated
                                                      else "completed")  # every item it tried failed
        summary.stop_signal = stop.signal_name
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        claims.close()
        summary.status = status
        try:
            if status != "failed" or not writer.forget_unstarted_run(db, summary.run_id, replaced, new_models):
                writer.finish_run(db, summary.run_id, status)
        except sqlite3.Error:
            pass  # the database cannot be written (disk full?): the run row stays 'running', like a crash
    return summary


class PairRecord(Protocol):
    """What ``execute`` records of a pair (config.PairSpec has these fields)."""

    @property
    def name(self) -> str: ...
    @property
    def biomedical(self) -> str: ...
    @property
    def general(self) -> str: ...
    @property
    def description(self) -> str: ...


def default_engine(spec: ModelSpec, path: Path | None, options: RunOptions) -> Engine:
    """The engine a model's ``engine`` key asks for: in-process llama.cpp, or an OpenAI-compatible server."""
    if spec.served is not None:
        from ..engine.openai_compat import OpenAICompatEngine

        return OpenAICompatEngine(spec, path, seed=options.seed)
    assert path is not None
    return _llama_engine(spec, path, options)


def _llama_engine(spec: ModelSpec, path: Path, options: RunOptions) -> Engine:
    return LlamaEngine(spec, path, seed=options.seed, n_threads=options.n_threads, n_batch=options.n_batch,
                       allow_cpu=options.allow_cpu, kv_reuse=options.kv_reuse)


def _run_model(db: sqlite_utils.Database, entry: ModelRole, engine: Engine, tasks: list[LoadedTask],
               options: RunOptions, reporter: Reporter, summary: RunSummary, stop: StopFlag,
               claims: ItemClaims | None = None, new_models: list[str] | None = None) -> None:
    claims = claims or ItemClaims(None)
    if writer.record_model(db, engine.info) and new_models is not None:
        new_models.append(engine.info.sha256)
    identity = engine_identity(engine)
    for loaded in tasks:
        for mode in options.scoring:
            if stop.requested:
                return
            _run_evaluation(db, entry, engine, identity, loaded, mode, options, reporter, summary, stop, claims)


def _run_evaluation(db: sqlite_utils.Database, entry: ModelRole, engine: Engine, identity: dict[str, Any],
                    loaded: LoadedTask, mode: str, options: RunOptions, reporter: Reporter, summary: RunSummary,
                    stop: StopFlag, claims: ItemClaims) -> None:
    """One evaluation: one model, one task, one scoring mode; resumes what is stored under its key."""
    task_settings = {**loaded.task.settings(), "shots_sha256": loaded.data.shots_sha256,
                     "documents_sha256": loaded.data.documents_sha256,
                     "data_sha256": loaded.data_sha256, **choice_settings(mode, options.loglik_target)}
    key = evaluation_key(identity, task_settings)
    key, task_settings = _legacy_evaluation(db, key, identity, task_settings, loaded, entry, reporter)
    if mode == "generate" and not queries.evaluation_exists(db, key) and (older := max(
            older_extraction_items(db, entry.spec.id, loaded.task.id, identity, variant)
            for variant in _data_variants(task_settings, loaded))):
        reporter.note(f"{older} items of {entry.spec.id}·{loaded.task.id} were scored with an older extraction; "
                      f"`medbench-local rescore --extraction --db {queries.database_path(db)}` re-scores them "
                      "without regenerating")
    writer.record_evaluation(db, key, engine.info, entry.role, loaded.task.id,
                             {"engine": engine.settings, "task": task_settings, "identity": identity,
                              "load": getattr(engine, "load", {}),
                              "data": {"path": str(loaded.data_path), "name": loaded.data_path.name}},
                             summary.run_id)
    if options.retry_errors:
        writer.forget_errors(db, key)
    done = writer.done_items(db, key)
    todo = [item for item in loaded.items if writer.item_key(loaded.task.id, item) not in done]
    skipped = len(loaded.items) - len(todo)
    summary.skipped += skipped
    context = PromptContext(shots=loaded.data.shots, documents=loaded.data.documents,
                            count_tokens=engine.count_tokens,
                            n_ctx=int(engine.settings["n_ctx"]))
    label = loaded.task.id if mode == "generate" else f"{loaded.task.id} ({mode})"
    reporter.begin(entry.spec.id, label, len(loaded.items), skipped)
    try:
        workers = int(getattr(engine, "max_concurrency", 1) or 1)
        if workers > 1:  # a served engine: items in flight at once, committed here (item_pool.py)
            _run_pooled(db, engine, loaded, todo, context, key, summary, reporter, options, stop, claims, mode,
                        workers)
            return
        for item in todo:
            if stop.requested:
                return
            with _claim(db, claims, key, loaded.task.id, item, summary) as ours:
                if not ours:
                    continue
                _run_item(db, engine, loaded.task, item, context, key, summary, reporter, options.store_inputs,
                          stop, mode, options.loglik_target)
    finally:
        reporter.end()


@contextmanager
def _claim(db: sqlite_utils.Database, claims: ItemClaims, key: str, task_id: str, item: Item,
           summary: RunSummary) -> Iterator[bool]:
    """Whether this run does ``item`` now: it is not being generated by a concurrent run, nor stored by one
    meanwhile. The claim is held until the context ends (after the item's commit)."""
    item_key = writer.item_key(task_id, item)
    with claims.hold(key, item_key) as ours:
        if not ours:  # a concurrent run of the same model and task is generating it right now
            summary.held_elsewhere += 1
            yield False
        elif writer.is_done(db, key, item_key):
            summary.done_elsewhere += 1  # the concurrent run finished it meanwhile
            yield False
        else:
            yield True


def _run_pooled(db: sqlite_utils.Database, engine: Engine, loaded: LoadedTask, todo: list[Item],
                context: PromptContext, key: str, summary: RunSummary, reporter: Reporter, options: RunOptions,
                stop: StopFlag, claims: ItemClaims, mode: str, workers: int) -> None:
    """Up to ``workers`` items in flight; each committed in this thread, one transaction per item."""
    task, target = loaded.task, options.loglik_target

    def compute(item: Item) -> ItemOutcome:
        return _compute_item(engine, task, item, context, None, mode, target)

    def commit(item: Item, outcome: ItemOutcome) -> None:
        if stop.aborted:
            raise KeyboardInterrupt  # never store an item cut short by the abort
        _commit_item(db, engine, task, item, outcome, key, summary, reporter, options.store_inputs, mode, target)

    run_pooled(todo, workers=workers, stop=stop, compute=compute, commit=commit,
               claim=lambda item: _claim(db, claims, key, task.id, item, summary))


def _data_variants(task_settings: dict[str, Any], loaded: LoadedTask) -> list[dict[str, Any]]:
    """The task settings under the current data fingerprint and, for databases of older versions, the legacy one."""
    legacy = loaded.legacy_data_sha256
    if not legacy or legacy == loaded.data_sha256:
        return [task_settings]
    return [task_settings, {**task_settings, "data_sha256": legacy}]


def _legacy_evaluation(db: sqlite_utils.Database, key: str, identity: dict[str, Any],
                       task_settings: dict[str, Any], loaded: LoadedTask, entry: ModelRole, reporter: Reporter
                       ) -> tuple[str, dict[str, Any]]:
    """(key, task settings) to continue in: an evaluation stored by an older version under the legacy data
    fingerprint when there is one and none under the current key, else the current ones."""
    legacy = loaded.legacy_data_sha256
    if not legacy or legacy == loaded.data_sha256 or queries.evaluation_exists(db, key):
        return key, task_settings
    legacy_settings = {**task_settings, "data_sha256": legacy}
    legacy_key = evaluation_key(identity, legacy_settings)
    if not queries.evaluation_exists(db, legacy_key):
        return key, task_settings
    reporter.note(f"{entry.spec.id} · {loaded.task.id}: continuing evaluation {legacy_key[:12]}, stored by an "
                  "older medbench-local under its data fingerprint (file name + content; now the file's own "
                  "SHA-256)")
    return legacy_key, legacy_settings


@dataclass
class ItemOutcome:
    """What computing one item produced, before anything is stored (see _compute_item)."""

    prompt: Any
    choices: Any = None
    result: Any = None        # Loglikelihoods (loglik)
    generation: Any = None    # Generation (generate, constrained)
    error: Exception | None = None


def _compute_item(engine: Engine, task: Task, item: Item, context: PromptContext, stop: StopFlag | None,
                  mode: str, target: str) -> ItemOutcome:
    """Ask the engine for one item (no database access: may run in a worker thread, with ``stop`` None)."""
    prompt = task.prompt(item, context) if mode == "generate" else None
    choices: Any = None
    try:
        if mode != "generate":
            choices = task.choices(item, context, target)
            prompt = choices.context
        assert prompt is not None
        if stop is not None:
            stop.native_depth += 1  # a second signal now trips the engine's abort switch instead of raising
        try:
            if mode == "loglik":
                result = engine.loglikelihood(LoglikelihoodRequest(prompt, tuple(choices.options.values())))
                require_decided(choices, result)  # a tie or a non-finite total is an error item, never option A
                return ItemOutcome(prompt, choices, result=result)
            if mode == "constrained":
                return ItemOutcome(prompt, choices, generation=engine.generate(GenerateRequest(
                    prompt, constrained_max_tokens(choices, engine.count_tokens), grammar=choice_grammar(choices))))
            return ItemOutcome(prompt, generation=engine.generate(GenerateRequest(prompt, task.max_tokens,
                                                                                  task.stop)))
        finally:
            if stop is not None:
                stop.native_depth -= 1
    except (RuntimeError, ValueError, OSError) as exc:  # llama.cpp or server failures: recorded, counted
        if stop is not None and stop.aborted:
            raise KeyboardInterrupt from None  # the failure is our own abort, not the model's: store nothing
        return ItemOutcome(prompt, choices, error=exc)


def _run_item(db: sqlite_utils.Database, engine: Engine, task: Task, item: Item, context: PromptContext,
              key: str, summary: RunSummary, reporter: Reporter, store_inputs: bool = True,
              stop: StopFlag | None = None, mode: str = "generate", target: str = "letter") -> None:
    outcome = _compute_item(engine, task, item, context, stop, mode, target)
    if stop is not None and stop.aborted:
        raise KeyboardInterrupt  # aborted while llama.cpp finished anyway: never store a cut item
    _commit_item(db, engine, task, item, outcome, key, summary, reporter, store_inputs, mode, target)


def _commit_item(db: sqlite_utils.Database, engine: Engine, task: Task, item: Item, outcome: ItemOutcome,
                 key: str, summary: RunSummary, reporter: Reporter, store_inputs: bool, mode: str,
                 target: str) -> None:
    """Score and store one computed item in one transaction (always in the main thread)."""
    prompt, choices, result, generation = outcome.prompt, outcome.choices, outcome.result, outcome.generation
    if outcome.error is not None:
        exc = outcome.error
        # an error scores zero on every metric of the task, so it can never flatter a model; tasks whose
        # metrics apply to subsets of items (LongHealth's task1/2/3) say which ones with error_metrics()
        metrics = task.error_metrics(item)
        message = writer.error_message(exc, store_inputs)  # a server's text only where inputs may be stored
        score = Score("error", detail=f"{type(exc).__name__}: {message}", metrics=metrics)
        summary.first_error = summary.first_error or message
        if not writer.record_item(db, evaluation=key, run_id=summary.run_id, task=task.id, item=item,
                                  generation=None, score=score, error=message,
                                  prompt_text=engine.render(prompt) if prompt is not None else "",
                                  store_inputs=store_inputs):
            summary.done_elsewhere += 1
            return
        summary.errors += 1
        reporter.advance(score, 0, 0.0)
        return
    if mode == "loglik":
        score = score_loglik(choices, result, target)
        generation = loglik_generation(choices, result, score)
    elif mode == "constrained":
        score = score_constrained(choices, generation)
    else:
        score = task.score(item, generation, prompt.plan)
    if not writer.record_item(db, evaluation=key, run_id=summary.run_id, task=task.id, item=item,
                              generation=generation, score=score, store_inputs=store_inputs):
        summary.done_elsewhere += 1  # a concurrent run stored it first; its result is kept
        return
    summary.generated += 1
    gen_seconds = generation.generation_ms / 1000 if generation.generation_ms else generation.seconds
    # loglik generates nothing: its rate is the prompt tokens it read (those not reused from the KV cache)
    read = (generation.prompt_tokens if generation.prompt_tokens_evaluated is None
            else generation.prompt_tokens_evaluated)
    reporter.advance(score, read if mode == "loglik" else generation.completion_tokens, gen_seconds)
