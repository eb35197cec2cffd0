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
import importlib.metadata
import platform
import signal
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import sqlite_utils

from . import __version__
from .config import Config, ModelSpec
from .errors import ModelFileError, UserError
from .engine.base import Engine, GenerateRequest, LoglikelihoodRequest
from .engine.llama import RUNTIME_ONLY_SETTINGS, LlamaEngine, require_gpu_build
from .engine.runtime import build_info
from .modelfiles.check import check_model_file
from .modelfiles.hashing import cached_sha256, sha256_file
from .modelfiles.lock import lock_path, read_lock, stale_reason
from .modelfiles.resolve import require
from .store import writer
from .tasks.base import Item, PromptContext, Score, Task, TaskData, canonical_json, sha256_text
from .tasks.loglik_scoring import (CHOICE_MODES, LOGLIK_TARGETS, SCORING_MODES, choice_grammar, choice_settings,
                                   constrained_max_tokens, loglik_generation, score_constrained, score_loglik,
                                   supports_choices)

RECORDED_PACKAGES = ("llama-cpp-python", "sqlite-utils", "rapidfuzz", "click", "rich", "huggingface-hub", "jinja2",
                     "rouge-score", "simple-icd-10-cm", "openpyxl", "numpy", "torch", "transformers", "scispacy")


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

    @property
    def items(self) -> list[Item]:
        return self.data.items


@dataclass
class RunOptions:
    seed: int = 1234
    n_threads: int | None = None
    n_batch: int = 512
    limit: int | None = None
    retry_errors: bool = False
    store_inputs: bool = True
    allow_cpu: bool = False
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


class Reporter(Protocol):
    def begin(self, model_id: str, task_id: str, total: int, already_done: int) -> None: ...

    def advance(self, score: Score, completion_tokens: int, generation_seconds: float) -> None: ...

    def end(self) -> None: ...

    def note(self, text: str) -> None: ...


EngineFactory = Callable[[ModelSpec, Path, "RunOptions"], Engine]


class StopFlag:
    """First SIGINT: finish the item in flight, then stop. Second SIGINT: the usual KeyboardInterrupt."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> StopFlag:
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not in the main thread (e.g. some test runners): plain KeyboardInterrupt
            self._previous = None
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def load_tasks(task_paths: list[tuple[Task, Path]], limit: int | None) -> list[LoadedTask]:
    loaded = []
    for task, path in task_paths:
        data = task.load(path)
        if limit:
            data = replace(data, items=data.items[:limit])
        loaded.append(LoadedTask(task, path, data, data_fingerprint(path)))
    return loaded


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
    """SHA-256 over the data file, or over every file under a data folder (relative names + contents).

    Why in the evaluation identity: results on the bundled sample and on the real file, or on a file edited
    in place, must never be averaged together. ``--limit`` does not change it, so a partial run resumes.
    """
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        digest.update(str(file.relative_to(path) if file != path else file.name).encode() + b"\0")
        digest.update(sha256_file(file).encode() + b"\0")
    return digest.hexdigest()


def locate_models(models: list[ModelRole], allow_cpu: bool = False, config: Config | None = None
                  ) -> dict[str, Path]:
    """Resolve and check every model file (against models.toml's sha256 and models.lock, and the GPU build
    when a model asks for the GPU) now, so a missing, changed or broken file fails before any work."""
    locked = read_lock(lock_path(config)) if config is not None else {}
    paths = {}
    for entry in models:
        path = require(entry.spec)
        sha256, _ = check_model_file(entry.spec, path)
        lock = locked.get(entry.spec.id)
        if lock and stale_reason(lock, entry.spec, config.path.parent) is None \
                and lock["sha256"] != sha256:  # type: ignore[union-attr]
            raise ModelFileError(f"model '{entry.spec.id}': {path} has SHA-256 {sha256[:12]}…, but models.lock "
                                 f"records {lock['sha256'][:12]}…; the file changed since it was locked (run "
                                 "'medbench-local models verify', or 'models pull --update' to accept it)")
        require_gpu_build(entry.spec, allow_cpu)
        paths[entry.spec.id] = path
    return paths


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
        known = {sha for (sha,) in db.conn.execute("select distinct model_sha256 from evaluations where model_id = ?",
                                                   (entry.spec.id,))}
        current = cached_sha256(paths[entry.spec.id])
        if known and current not in known:
            raise ModelFileError(
                f"model '{entry.spec.id}': its file changed since results were stored in this database "
                f"(SHA-256 {sorted(known)[0][:12]}… then, {current[:12]}… now: {paths[entry.spec.id]}); results "
                "of different files are never mixed; pass --accept-changed-model to start new evaluations "
                "(the old results are kept)")


def evaluation_key(engine_identity: dict[str, Any], task_settings: dict[str, Any]) -> str:
    return sha256_text(canonical_json({"engine": engine_identity, "task": task_settings}))


def engine_identity(engine: Engine) -> dict[str, Any]:
    """What decides the outputs: the weights, the template, the llama.cpp build and output-relevant settings."""
    # threads and KV reuse do not change results (RUNTIME_ONLY_SETTINGS): recorded, not part of the identity
    settings = {k: v for k, v in engine.settings.items() if k not in RUNTIME_ONLY_SETTINGS}
    return {"model_sha256": engine.info.sha256, "chat_template_sha256": engine.info.chat_template_sha256,
            "llama_cpp_python": build_info()["llama_cpp_python"], "settings": settings}


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
            "config": str(config.path), "seed": options.seed, "n_threads": options.n_threads,
            "n_batch": options.n_batch, "limit": options.limit, "store_inputs": options.store_inputs,
            "scoring": list(options.scoring), "loglik_target": options.loglik_target, "kv_reuse": options.kv_reuse,
            "models": [{"id": m.spec.id, "role": m.role, "source": m.spec.source.describe()} for m in models],
            "tasks": [{"task": t.task.id, "data": str(t.data_path), "data_sha256": t.data_sha256,
                       "items": len(t.items)} for t in tasks],
        },
    }


def execute(db: sqlite_utils.Database, config: Config, models: list[ModelRole], tasks: list[LoadedTask],
            paths: dict[str, Path], options: RunOptions, reporter: Reporter,
            engine_factory: EngineFactory | None = None) -> RunSummary:
    """Run every model on every task; returns counts. Caller has validated inputs (load_tasks, locate_models).
    ``engine_factory`` defaults to the llama.cpp engine; tests of the orchestration pass a fake."""
    factory = engine_factory or _llama_engine
    summary = RunSummary(run_id=uuid.uuid4().hex)
    writer.start_run(db, summary.run_id, run_record(config, options, models, tasks))
    status = "failed"
    try:
        with StopFlag() as stop:
            for entry in models:
                if stop.requested:
                    break
                engine = factory(entry.spec, paths[entry.spec.id], options)
                try:
                    _run_model(db, entry, engine, tasks, options, reporter, summary, stop)
                finally:
                    engine.close()
        status = "interrupted" if stop.requested else "completed"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        summary.status = status
        try:
            writer.finish_run(db, summary.run_id, status)
        except sqlite3.Error:
            pass  # the database cannot be written (disk full?): the run row stays 'running', like a crash
    return summary


def _llama_engine(spec: ModelSpec, path: Path, options: RunOptions) -> Engine:
    return LlamaEngine(spec, path, seed=options.seed, n_threads=options.n_threads, n_batch=options.n_batch,
                       allow_cpu=options.allow_cpu, kv_reuse=options.kv_reuse)


def _run_model(db: sqlite_utils.Database, entry: ModelRole, engine: Engine, tasks: list[LoadedTask],
               options: RunOptions, reporter: Reporter, summary: RunSummary, stop: StopFlag) -> None:
    writer.record_model(db, engine.info)
    identity = engine_identity(engine)
    for loaded in tasks:
        for mode in options.scoring:
            if stop.requested:
                return
            _run_evaluation(db, entry, engine, identity, loaded, mode, options, reporter, summary, stop)


def _run_evaluation(db: sqlite_utils.Database, entry: ModelRole, engine: Engine, identity: dict[str, Any],
                    loaded: LoadedTask, mode: str, options: RunOptions, reporter: Reporter, summary: RunSummary,
                    stop: StopFlag) -> None:
    task_settings = {**loaded.task.settings(), "shots_sha256": loaded.data.shots_sha256,
                     "documents_sha256": loaded.data.documents_sha256,
                     "data_sha256": loaded.data_sha256, **choice_settings(mode, options.loglik_target)}
    key = evaluation_key(identity, task_settings)
    writer.record_evaluation(db, key, engine.info, entry.role, loaded.task.id,
                             {"engine": engine.settings, "task": task_settings, "identity": identity,
                              "load": getattr(engine, "load", {})},
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
        for item in todo:
            if stop.requested:
                return
            _run_item(db, engine, loaded.task, item, context, key, summary, reporter, options.store_inputs,
                      mode, options.loglik_target)
    finally:
        reporter.end()


def _run_item(db: sqlite_utils.Database, engine: Engine, task: Task, item: Item, context: PromptContext,
              key: str, summary: RunSummary, reporter: Reporter, store_inputs: bool = True,
              mode: str = "generate", target: str = "letter") -> None:
    prompt = task.prompt(item, context) if mode == "generate" else None
    try:
        if mode == "generate":
            assert prompt is not None
            generation = engine.generate(GenerateRequest(prompt, task.max_tokens, task.stop))
            score = task.score(item, generation)
        else:
            choices = task.choices(item, context, target)  # type: ignore[attr-defined]
            prompt = choices.context
            if mode == "loglik":
                result = engine.loglikelihood(LoglikelihoodRequest(prompt, tuple(choices.options.values())))
                score = score_loglik(choices, result, target)
                generation = loglik_generation(choices, result, score)
            else:
                request = GenerateRequest(prompt, constrained_max_tokens(choices, engine.count_tokens),
                                          grammar=choice_grammar(choices))
                generation = engine.generate(request)
                score = score_constrained(choices, generation)
    except (RuntimeError, ValueError, OSError) as exc:  # llama.cpp failures: record, count, go on
        # an error scores zero on every metric of the task, so it can never flatter a model; tasks whose
        # metrics apply to subsets of items (LongHealth's task1/2/3) say which ones with error_metrics()
        error_metrics = getattr(task, "error_metrics", None)
        metrics = error_metrics(item) if callable(error_metrics) else {name: 0.0 for name in task.metric_names}
        score = Score("error", detail=f"{type(exc).__name__}: {exc}", metrics=metrics)
        writer.record_item(db, evaluation=key, run_id=summary.run_id, task=task.id, item=item, generation=None,
                           score=score, error=str(exc),
                           prompt_text=engine.render(prompt) if prompt is not None else "",
                           store_inputs=store_inputs)
        summary.errors += 1
        reporter.advance(score, 0, 0.0)
        return
    writer.record_item(db, evaluation=key, run_id=summary.run_id, task=task.id, item=item,
                       generation=generation, score=score, store_inputs=store_inputs)
    summary.generated += 1
    gen_seconds = generation.generation_ms / 1000 if generation.generation_ms else generation.seconds
    reporter.advance(score, generation.completion_tokens if mode != "loglik" else 0, gen_seconds)


def package_versions() -> dict[str, str]:
    versions = {"medbench-local": __version__}
    for name in RECORDED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_revision() -> str | None:
    """The source revision of this medbench-local checkout (with '-dirty' when modified), if it is one."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (rev + ("-dirty" if dirty else "")) if rev else None
