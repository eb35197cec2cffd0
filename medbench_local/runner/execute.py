"""A run: record it, then for each model: load it once, run every task in every scoring mode, close it."""

from __future__ import annotations

import platform
import sqlite3
import uuid
from pathlib import Path
from typing import Any, Protocol

import sqlite_utils

from ..config import Config, ModelSpec
from ..engine.base import Engine
from ..engine.llama import LlamaEngine
from ..engine.runtime import build_info
from ..provenance import run_record as provenance_record
from ..signals import StopFlag
from ..store import writer
from ..store.claims import ItemClaims, database_path
from .arm import arm_identity, open_arm_index
from .context import EngineFactory, Reporter, RunContext, RunOptions, RunSummary
from .evaluation import run_evaluation
from .inputs import LoadedTask, ModelRole
from .modes import MODES


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


def engine_identity(engine: Engine) -> dict[str, Any]:
    """What decides the outputs of ``engine`` (its ``identity()``: engine/identity.py says what is left out)."""
    return engine.identity()


def run_record(config: Config, options: RunOptions, models: list[ModelRole], tasks: list[LoadedTask]
               ) -> dict[str, Any]:
    """The ``runs`` row of a run (provenance.run_record): the llama.cpp build and the settings that decided it."""
    return provenance_record(options.command, {
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
    }, build=build_info())


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
    claims = ItemClaims(database_path(db.conn))
    new_models: list[str] = []
    status = "failed"
    try:
        with StopFlag() as stop:
            run = RunContext(db, options, reporter, summary, stop, claims, new_models)
            for index, entry in enumerate(models):
                if stop.requested:
                    break
                engine = first if index == 0 and first is not None else \
                    factory(entry.spec, paths[entry.spec.id], options)
                abort = getattr(engine, "abort", None)
                unregister = stop.on_abort(abort) if callable(abort) else (lambda: None)
                try:
                    _run_model(run, entry, engine, tasks)
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


def default_engine(spec: ModelSpec, path: Path | None, options: RunOptions) -> Engine:
    """The engine a model's ``engine`` key asks for: in-process llama.cpp, or an OpenAI-compatible server."""
    if spec.served is not None:
        from ..engine.openai_compat import OpenAICompatEngine

        return OpenAICompatEngine(spec, path, seed=options.seed)
    assert path is not None
    return LlamaEngine(spec, path, seed=options.seed, n_threads=options.n_threads, n_batch=options.n_batch,
                       allow_cpu=options.allow_cpu, kv_reuse=options.kv_reuse)


def _run_model(run: RunContext, entry: ModelRole, engine: Engine, tasks: list[LoadedTask]) -> None:
    """One loaded model on every task, in every scoring mode of the run (each mode its own evaluation)."""
    if writer.record_model(run.db, engine.info):
        run.new_models.append(engine.info.sha256)
    identity = engine_identity(engine)
    index = None
    if entry.spec.retrieval is not None:  # an arm: its retrieval is part of its identity (runner/arm.py)
        index = open_arm_index(entry.spec)
        identity = {**identity, "retrieval": arm_identity(entry.spec.retrieval, index)}
    try:
        for loaded in tasks:
            for mode in run.options.scoring:
                if run.stop.requested:
                    return
                run_evaluation(run, entry, engine, identity, loaded, MODES[mode], index)
    finally:
        if index is not None:
            index.close()
