"""The checks a run passes before a database is touched: every model file located and checked (models.toml's
pin, models.lock, the GPU and RPC builds), this llama.cpp build decoding here, every served model's server
answering, the scoring modes possible for the tasks; and, once the database is open, no model id whose file
changed since results were stored under it."""

from __future__ import annotations

from pathlib import Path

import sqlite_utils

from ..config import Config, ModelSpec, ServedSource
from ..engine.llama import require_gpu_build
from ..engine.preflight import check_model_file
from ..engine.rpc import check_rpc_plan, require_rpc_build
from ..errors import ModelFileError, UserError
from ..modelfiles.hashing import cached_sha256
from ..modelfiles.lock import lock_path, read_lock
from ..modelfiles.resolve import require
from ..modelfiles.verdict import LOCK_MISMATCH, SIZE, verify
from ..store import queries
from ..tasks.loglik_scoring import LOGLIK_TARGETS, supports_choices
from .arm import open_arm_index
from .inputs import LoadedTask, ModelRole
from .modes import MODES


def check_scoring(tasks: list[LoadedTask], modes: tuple[str, ...], target: str = "letter") -> None:
    """Refuse, before anything is written, a scoring mode a task cannot do (free-text tasks have no options)."""
    for mode in modes:
        if mode not in MODES:
            raise UserError(f"unknown scoring mode '{mode}' (choose from {', '.join(MODES)})")
    if target not in LOGLIK_TARGETS:
        raise UserError(f"unknown loglik target '{target}' (choose from {', '.join(LOGLIK_TARGETS)})")
    choice_modes = [m for m in modes if MODES[m].needs_choices]
    for loaded in tasks:
        if choice_modes and not supports_choices(loaded.task):
            raise UserError(f"task '{loaded.task.id}' is not multiple choice: --scoring {choice_modes[0]} needs "
                            "options to score (use --scoring generate for it)")


def locate_models(models: list[ModelRole], allow_cpu: bool = False, config: Config | None = None
                  ) -> dict[str, Path]:
    """Resolve and check every model file (against models.toml's sha256 and models.lock, and the GPU build
    when a model asks for the GPU) now, so a missing, changed or broken file fails before any work."""
    locked = read_lock(lock_path(config)) if config is not None else {}
    paths: dict[str, Path] = {}
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


def check_arms(models: list[ModelRole]) -> None:
    """Every arm's retrieval index opens and its passages hash to the identity it records: one line naming the
    arm otherwise, before a database is touched."""
    for entry in models:
        if entry.spec.retrieval is not None:
            open_arm_index(entry.spec).close()
