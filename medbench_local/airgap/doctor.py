"""``doctor``: a preflight checklist for a machine that is about to run an evaluation, typically air-gapped.

Everything a run needs is checked without running inference: the config loads; every model file is present,
matches models.lock (or the sha256 pinned in models.toml), has a readable GGUF header and a usable chat template;
its context and an *estimate* of the memory it needs fit this machine; GPU offload exists when models.toml asks
for GPU layers; task data loads; optional metric assets are present. With ``offline`` the whole dry run happens
under a network guard (netguard.py) that refuses and records any network access, so a clean report proves that
the run's preparation needs no network. ``load`` additionally loads each model with llama.cpp and generates one
token (slow for big models; it proves the llama.cpp build supports the architecture).

Nothing is written to the results database.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import Config, ModelSpec, load_config
from ..errors import UserError
from ..modelfiles.lock import LockEntry, lock_path, read_lock
from ..modelfiles.memory import FAIL, OK, WARN, estimate_memory, gib, gpu_memory, mem_available, memory_verdict
from .netguard import NetworkGuard


@dataclass(frozen=True)
class Check:
    status: str   # ok | warn | fail
    subject: str  # what was checked: "config", "model smollm2-135m-instruct", "task jama", ...
    message: str


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)

    def add(self, status: str, subject: str, message: str) -> None:
        self.checks.append(Check(status, subject, message))

    def count(self, status: str) -> int:
        return sum(1 for c in self.checks if c.status == status)

    @property
    def ok(self) -> bool:
        return self.count(FAIL) == 0


# --------------------------------------------------------------------------------------------- the checks


@contextmanager
def _hub_offline() -> Iterator[None]:
    """HF_HUB_OFFLINE=1 for the duration (environment and an already imported huggingface_hub)."""
    saved = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    constants = sys.modules.get("huggingface_hub.constants")
    saved_constant = getattr(constants, "HF_HUB_OFFLINE", None)
    if constants is not None:
        constants.HF_HUB_OFFLINE = True  # type: ignore[attr-defined]
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = saved
        if constants is not None:
            constants.HF_HUB_OFFLINE = saved_constant  # type: ignore[attr-defined]


def run_doctor(config_path: Path, *, pairs: tuple[str, ...] = (), model_ids: tuple[str, ...] = (),
               tasks: list[tuple[str, Path | None]] | None = None, assets: tuple[Path, ...] = (),
               offline: bool = False, load: bool = False, config_origin: str = "") -> Report:
    """Run every check and return the report (never raises for a failed check)."""
    report = Report()
    if not offline:
        _checks(report, config_path, pairs, model_ids, tasks or [], assets, load, config_origin)
        report.add(WARN, "network", "not checked: add --offline to run these checks under a network guard")
        return report
    with _hub_offline(), NetworkGuard(allow=_served_hosts(config_path, pairs, model_ids)) as guard:
        try:
            _checks(report, config_path, pairs, model_ids, tasks or [], assets, load, config_origin)
        except OSError as exc:  # a blocked connection surfaced as an error somewhere unexpected
            report.add(FAIL, "doctor", f"stopped: {exc}")
    if guard.clean:
        allowed = f"; allowed: the served models' host(s) {', '.join(guard.allowed)}" if guard.allowed else ""
        report.add(OK, "network", "no network access was attempted during these checks (offline guard on "
                                  f"socket connect/bind/send and name lookups; HF_HUB_OFFLINE=1{allowed})")
    else:
        shown = "; ".join(guard.attempts[:3]) + (f"; … {len(guard.attempts) - 3} more" if len(guard.attempts) > 3
                                                 else "")
        report.add(FAIL, "network", f"{len(guard.attempts)} network access attempt(s) were blocked: {shown}")
    return report


def _served_hosts(config_path: Path, pairs: tuple[str, ...], model_ids: tuple[str, ...]) -> list[str]:
    """The servers of the served models to be checked: the only hosts ``--offline`` lets the checks reach."""
    try:
        config = load_config(config_path)
    except UserError:
        return []
    wanted = set(model_ids)
    for name in pairs:
        if name in config.pairs:
            wanted |= {config.pairs[name].biomedical, config.pairs[name].general}
    return [spec.served.host for spec in config.models.values()
            if spec.served is not None and (not wanted or spec.id in wanted)]


def _checks(report: Report, config_path: Path, pairs: tuple[str, ...], model_ids: tuple[str, ...],
            tasks: list[tuple[str, Path | None]], assets: tuple[Path, ...], load: bool, origin: str = "") -> None:
    build = _check_environment(report)
    try:
        config = load_config(config_path)
    except UserError as exc:
        report.add(FAIL, "config", str(exc))
        config = None
    if config is not None:
        report.add(OK, "config", f"{len(config.models)} models, {len(config.pairs)} pairs ({config.path}"
                                 + (f"; {origin}" if origin else "") + ")")
        specs = _selected(report, config, pairs, model_ids)
        lock = _check_lock(report, config)
        ram, gpus = mem_available(), gpu_memory()
        precise = mem_available(precise=True) is not None
        report.add(OK if ram else WARN, "memory",
                   f"RAM available (MemAvailable): {gib(ram) if ram else 'n/a'}; GPU memory free: "
                   + (", ".join(f"{name} {gib(free)} of {gib(total)}" for name, free, total in gpus)
                      if gpus else "n/a (no nvidia-smi)"))
        local = {spec.id: found for spec in specs
                 if (found := _check_model(report, config, spec, lock, build, ram if precise else None, gpus,
                                           load, ram)) is not None}
        for spec in specs:
            if spec.retrieval is not None:
                _check_arm_index(report, spec)
        decodes = build is not None and _check_decoding(report, list(local.values()))
        for model_id, path in local.items() if load and decodes else ():
            _check_load(report, f"model {model_id}", config.models[model_id], path)  # in this process: only
            # after the child process showed that this build does not crash here
    for task_id, path in tasks:
        _check_task(report, task_id, path)
    _check_assets(report, assets)


def _check_arm_index(report: Report, spec: ModelSpec) -> None:
    """A retrieval arm's index is a file here (its content identity is checked when a run opens it; opening it is
    the store's, which sits above this package)."""
    assert spec.retrieval is not None
    index = spec.retrieval.index
    if index.is_file():
        report.add(OK, f"arm {spec.id}", f"index {index} ({index.stat().st_size:,} bytes)")
    else:
        report.add(FAIL, f"arm {spec.id}", f"index {index} is missing: build it with 'medbench-local index build "
                                           f"CORPUS... --out {index}' (docs/retrieval.md)")


def _check_decoding(report: Report, models: list[Path]) -> bool:
    """Decode one token in a child process with the smallest local model: a build that crashes on this CPU (AMX
    advertised but not enabled) is "Not ready" here with the rebuild command, not a crash at the first run."""
    from ..engine.selftest import check_decoding
    from ..modelfiles.hashing import cache_dir

    if not models:
        report.add(WARN, "llama.cpp", "decoding not probed: no local model file to probe with")
        return True
    verdict = check_decoding(min(models, key=lambda path: path.stat().st_size), cache_dir())
    if verdict.ok:
        report.add(OK, "llama.cpp", verdict.detail)
    else:
        report.add(FAIL, "llama.cpp", verdict.detail + (f"; rebuild it for this CPU: {verdict.rebuild}"
                                                        if verdict.rebuild else ""))
    return verdict.ok


def _check_environment(report: Report) -> dict[str, Any] | None:
    try:
        from ..engine.runtime import build_info

        build = build_info()
    except Exception as exc:
        report.add(FAIL, "llama.cpp", f"llama-cpp-python cannot be imported ({type(exc).__name__}: {exc}); "
                                      "reinstall it (see docs/air-gapped.md)")
        return None
    from ..engine.runtime import TESTED_LLAMA_CPP, tested_version

    version = build["llama_cpp_python"]
    tested = tested_version(version)
    report.add(OK if tested else WARN, "llama.cpp",
               f"llama-cpp-python {version}" + ("" if tested else f", outside the tested range "
                                                f"{','.join(TESTED_LLAMA_CPP)} (the engine uses its internals; "
                                                "install a tested version)")
               + f", GPU offload {'available' if build['gpu_offload'] else 'not available (CPU-only build)'}")
    return build


def _selected(report: Report, config: Config, pairs: tuple[str, ...], model_ids: tuple[str, ...]) -> list[ModelSpec]:
    from . import select_models

    chosen: list[ModelSpec] = []
    for name in pairs:
        try:
            chosen += [s for s in select_models(config, (name,)) if s not in chosen]
        except UserError as exc:
            report.add(FAIL, f"pair {name}", str(exc))
    for mid in model_ids:
        try:
            spec = config.model(mid)
        except UserError as exc:
            report.add(FAIL, f"model {mid}", str(exc))
            continue
        if spec not in chosen:
            chosen.append(spec)
    if not pairs and not model_ids:
        chosen = [spec for spec in config.models.values() if _present(spec)]
        absent = [spec.id for spec in config.models.values() if spec not in chosen]
        if absent:
            report.add(WARN, "models", f"not on this machine, not checked: {', '.join(absent)} (name one with "
                                       "--model or --pair to require it; fetch with 'medbench-local models pull')")
        if not chosen:
            report.add(FAIL, "models", "no model of models.toml is on this machine")
    return chosen


def _check_served(report: Report, subject: str, spec: ModelSpec) -> None:
    """A served model (engine = "openai"): ask its server, one line per finding. Reachable, the model name
    served, the API key accepted; then what the run would do with it (tokenizer, token ids or text, grammar,
    log-probabilities, context size). The server's host is named: it is the one a served run may reach."""
    from ..engine.openai_compat import context_size, loglik_problem, make_client, probe_server
    from ..engine.server_build import identified_build

    served = spec.served
    assert served is not None
    try:
        client = make_client(spec, retries=0)
    except UserError as exc:
        report.add(FAIL, subject, str(exc))
        return
    try:
        probe = probe_server(spec, client)
        no_loglik = loglik_problem(spec, probe, client)
    except UserError as exc:
        report.add(FAIL, subject, str(exc))
        return
    finally:
        client.close()
    report.add(OK, subject, f"served as '{served.model}' by a {probe.kind} server (build {probe.build}) at "
                            f"{served.base_url}; a run reaches host {served.host} and no other")
    try:  # a placeholder build (b0-unknown) must be stood in for, else the run is refused
        build, build_from = identified_build(spec, probe.build)
    except UserError as exc:
        report.add(FAIL, subject, str(exc))
    else:
        if build_from != "server":
            report.add(OK, subject, f"the server's build is identified by {build_from}: {build[:80]}")
    if served.max_concurrency > 1:
        report.add(WARN, subject, f"max_concurrency = {served.max_concurrency}"
                                  + (f" on {probe.slots} server slots" if probe.slots else "")
                                  + ": outputs may differ from run to run; max_concurrency = 1 reproduces "
                                    "item by item (docs/scale-out.md)")
    if probe.tokenize:
        report.add(OK, subject, "server tokenizer available: prompts are cut from the left as in-process, sent "
                                + ("as token ids" if probe.token_ids else "as text (checked to tokenize back)"))
    else:
        report.add(WARN, subject, "the server has no tokenize endpoint: prompts are sent as text without left "
                                  "truncation; one beyond the context becomes an error item")
    report.add(OK if probe.grammar else WARN, subject,
               "GBNF grammar accepted: --scoring constrained works" if probe.grammar
               else "no GBNF grammar field: --scoring constrained is refused")
    report.add(OK if no_loglik is None else WARN, subject,
               "prompt log-probabilities returned with echo: --scoring loglik works" if no_loglik is None
               else f"--scoring loglik is refused: {no_loglik}")
    try:
        n_ctx = context_size(spec, probe)
    except UserError as exc:
        report.add(FAIL, subject, str(exc))
        return
    if n_ctx is None:
        report.add(FAIL, subject, "the server does not report its context size: set n_ctx in models.toml")
    else:
        report.add(OK, subject, f"context {n_ctx} tokens ({'models.toml' if served.n_ctx else 'the server'})")


def _present(spec: ModelSpec) -> bool:
    """Whether the model is meant to be on this machine now, without hashing: a local ``path`` always is (a
    missing file is a failure), a Hugging Face file when it is in the cache, a package when it is installed; a
    retrieval arm once its index is built (named explicitly, a missing index is a failure)."""
    import importlib.util

    from ..config import LocalSource, PackageSource
    from ..modelfiles.resolve import resolve

    if spec.retrieval is not None and not spec.retrieval.index.is_file():  # an arm whose index is not built here
        return False
    if isinstance(spec.source, LocalSource) or spec.served is not None:  # served: the check asks the server
        return True
    if isinstance(spec.source, PackageSource):  # installed is enough: chunks are assembled by the check itself
        try:
            return importlib.util.find_spec(spec.source.package) is not None
        except (ImportError, ValueError):
            return False
    return resolve(spec).path is not None


def _check_lock(report: Report, config: Config) -> dict[str, LockEntry]:
    path = lock_path(config)
    try:
        lock = read_lock(path)
    except UserError as exc:
        report.add(FAIL, "models.lock", str(exc))
        return {}
    if not path.exists():
        report.add(WARN, "models.lock", f"{path} not found: files are checked against sha256 pins in models.toml "
                                        "only (create it with 'medbench-local models pull')")
    else:
        report.add(OK, "models.lock", f"{len(lock)} locked model{'s' if len(lock) != 1 else ''} ({path})")
    return lock


def _check_model(report: Report, config: Config, spec: ModelSpec, lock: dict[str, LockEntry],
                 build: dict[str, Any] | None, ram: int | None, gpus: list[tuple[str, int, int]] | None,
                 load: bool, ram_estimate: int | None = None) -> Path | None:
    """``ram`` is MemAvailable (precise) or None; ``ram_estimate`` the best figure there is, for display.
    Returns the model's file when it is a local GGUF with a readable header (a candidate for the decode probe)."""
    from ..modelfiles.check import check_model_file
    from ..modelfiles.gguf_header import FILE_TYPES, read_gguf_metadata
    from ..modelfiles.resolve import require
    from ..modelfiles.verdict import LOCK_MISMATCH, MISSING, PIN_MISMATCH, SIZE, STALE_LOCK, UNVERIFIABLE, verify

    subject = f"model {spec.id}"
    if spec.served is not None:
        _check_served(report, subject, spec)
        return None
    try:
        path = require(spec)
    except UserError as exc:
        report.add(FAIL, subject, f"file missing: {exc}")
        return None
    size = path.stat().st_size
    report.add(OK, subject, f"file present: {path} ({gib(size)})")
    try:
        metadata = read_gguf_metadata(path)
    except UserError as exc:
        report.add(FAIL, subject, f"GGUF unreadable: {exc}")
        return None
    arch = metadata.get("general.architecture")
    quant = FILE_TYPES.get(metadata.get("general.file_type"), "?")  # type: ignore[arg-type]
    context = metadata.get(f"{arch}.context_length")
    report.add(OK, subject, f"GGUF header readable: {arch}, {quant}, trained context {context or '?'}")

    verdict = verify(spec, lock.get(spec.id), config.path.parent)  # the same verdict as run and models verify
    sha = verdict.sha256 or ""
    if verdict.problem == STALE_LOCK:
        report.add(FAIL, subject, f"{verdict.detail}; run 'medbench-local models pull {spec.id}'")
    elif verdict.problem in (SIZE, LOCK_MISMATCH):
        found = f"{sha[:16]}…" if sha else f"{verdict.size:,} bytes"
        locked = f"{verdict.expected[:16]}…" if sha else f"{verdict.lock['size']:,} bytes"  # type: ignore[index]
        report.add(FAIL, subject, f"{'SHA-256' if sha else 'size'} mismatch: the file has {found}, models.lock has "
                                  f"{locked}: corrupted or replaced (check with 'medbench-local "
                                  "models verify', then pull or import it again)")
        return None
    elif verdict.problem == PIN_MISMATCH:
        report.add(FAIL, subject, f"SHA-256 mismatch: the file has {sha[:16]}…, models.toml pins "
                                  f"{spec.sha256[:16]}…: corrupted or replaced")
        return None
    elif verdict.problem == MISSING:  # vanished since it was found above
        report.add(FAIL, subject, f"file missing: {verdict.detail}")
        return None
    elif verdict.problem == UNVERIFIABLE:
        report.add(WARN, subject, f"SHA-256 {sha[:16]}… not verified: neither models.lock nor models.toml has "
                                  "a hash for it (run 'medbench-local models pull')")
    else:
        report.add(OK, subject, f"SHA-256 {sha[:16]}… matches {verdict.reference}")

    try:
        check_model_file(spec, path, on_gpu=None)  # the memory estimate is a line of its own below
        if spec.prompt_mode == "chat":
            report.add(OK, subject, "chat template renders")
    except UserError as exc:
        report.add(FAIL, subject, str(exc))

    if isinstance(context, int) and spec.n_ctx > context and spec.allow_context_beyond_trained:
        report.add(WARN, subject, f"n_ctx {spec.n_ctx} exceeds the trained context {context} (allowed by "
                                  "allow_context_beyond_trained); quality degrades beyond it")
    _check_memory(report, subject, spec, metadata, size, build, ram, gpus, ram_estimate)
    _check_gpu(report, subject, spec, build)
    _check_rpc(report, subject, spec, build)
    return path


def _check_memory(report: Report, subject: str, spec: ModelSpec, metadata: dict[str, Any], size: int,
                  build: dict[str, Any] | None, ram: int | None, gpus: list[tuple[str, int, int]] | None,
                  ram_estimate: int | None = None) -> None:
    """The same verdict as run's pre-flight (memory_verdict): a model that does not fit makes the machine
    "not ready". Where free RAM is only roughly known (no MemAvailable), a misfit is a warning."""
    estimate = estimate_memory(metadata, spec.n_ctx, size)
    on_gpu = bool(build and build["gpu_offload"]) and spec.n_gpu_layers != 0
    status, text = memory_verdict(estimate, spec.n_ctx, ram, gpus if on_gpu else None)
    if ram is None and ram_estimate is not None and not (on_gpu and gpus):
        fits = estimate.total <= ram_estimate
        status, text = (OK if fits else WARN), (f"{text.removesuffix('; free RAM unknown')}; free physical memory "
                                                f"≈ {gib(ram_estimate)} (caches not counted)"
                                                + ("" if fits else ": may not fit"))
    report.add(status, subject, text)


def _check_gpu(report: Report, subject: str, spec: ModelSpec, build: dict[str, Any] | None) -> None:
    if build is None or spec.n_gpu_layers in (None, 0):
        return  # None = all layers when available, else CPU: nothing can be wrong
    if build["gpu_offload"]:
        report.add(OK, subject, f"n_gpu_layers {spec.n_gpu_layers}: this llama.cpp build can offload to a GPU")
    else:
        report.add(FAIL, subject, f"models.toml asks for n_gpu_layers {spec.n_gpu_layers}, but this "
                                  "llama-cpp-python build has no GPU offload (it would run on the CPU); reinstall "
                                  "it with CUDA or Metal (docs/air-gapped.md) or set n_gpu_layers = 0")


def _check_rpc(report: Report, subject: str, spec: ModelSpec, build: dict[str, Any] | None) -> None:
    """RPC needs a llama.cpp built with -DGGML_RPC=on. The servers themselves are not contacted here (that
    would be network access, which --offline proves absent): llama.cpp reaches them when the model loads."""
    if build is None or not spec.rpc_servers:
        return
    from ..engine.rpc import REBUILD, rpc_supported

    servers = ", ".join(spec.rpc_servers)
    if rpc_supported():
        report.add(OK, subject, f"rpc_servers {servers}: this llama.cpp build has the RPC backend (the servers are "
                                "contacted when the model loads: 'doctor --load' or 'run')")
    else:
        report.add(FAIL, subject, f"rpc_servers {servers}: this llama-cpp-python build has no RPC backend; rebuild "
                                  f"it with: {REBUILD}")


def _check_load(report: Report, subject: str, spec: ModelSpec, path: Path) -> None:
    from ..engine.base import GenerateRequest
    from ..engine.llama import LlamaEngine
    from ..prompting import Prompt

    try:
        engine = LlamaEngine(spec, path)
        try:
            engine.generate(GenerateRequest(Prompt(system="You are a test.", user="Say OK."), max_tokens=1))
        finally:
            engine.close()
    except (UserError, RuntimeError, ValueError, OSError) as exc:
        report.add(FAIL, subject, f"llama.cpp load failed: {exc}")
        return
    report.add(OK, subject, f"llama.cpp loads it (n_ctx {spec.n_ctx}) and generates a token")


def _check_task(report: Report, task_id: str, path: Path | None) -> None:
    from ..tasks import get_task

    subject = f"task {task_id}"
    try:
        task = get_task(task_id)
    except UserError as exc:
        report.add(FAIL, subject, str(exc))
        return
    if path is None:
        from ..paths import default_data

        found = default_data(task_id)
        if found is None:
            report.add(FAIL, subject, f"no --data given and no sample for it (./bench_data/{task_id}); pass "
                                      f"--data {task_id}=PATH")
            return
        path = found.path
    if not path.exists():
        report.add(FAIL, subject, f"data not found: {path}")
        return
    try:
        if not path.is_dir():
            from ..tasks.datafiles import require_regular_file

            require_regular_file(path)  # a FIFO would block the loader
        data = task.load(path)
    except UserError as exc:
        report.add(FAIL, subject, f"data does not load: {exc}")
        return
    except Exception as exc:
        report.add(FAIL, subject, f"data does not load: {path}: {type(exc).__name__}: {exc}")
        return
    if not data.items:
        report.add(FAIL, subject, f"{path}: no items")
        return
    shots = f" (+{len(data.shots)} few-shot examples)" if data.shots else ""
    report.add(OK, subject, f"{path}: {len(data.items)} items{shots}")


def _check_assets(report: Report, assets: tuple[Path, ...]) -> None:
    import importlib.metadata

    for asset in assets:
        if not asset.exists():
            report.add(FAIL, "asset", f"{asset}: not found")
        elif asset.is_dir():
            files = [p for p in asset.rglob("*") if p.is_file()]
            status = OK if files else FAIL
            report.add(status, "asset", f"{asset}: {len(files)} files" if files else f"{asset}: empty folder")
        elif not asset.is_file():  # a FIFO, socket or device is no model folder or file (never opened)
            report.add(FAIL, "asset", f"{asset}: not a regular file or folder")
        else:
            report.add(OK, "asset", f"{asset}: {gib(asset.stat().st_size)}")
    try:
        from ..metrics.icd import ICD_TABLE_VERSION

        report.add(OK, "metrics", f"ICD-10-CM table: {ICD_TABLE_VERSION}")
    except Exception as exc:
        report.add(WARN, "metrics", f"ICD-10-CM table unavailable ({exc}); MeDiSumCode validity cannot be scored")
    try:
        report.add(OK, "metrics", f"ROUGE: rouge-score {importlib.metadata.version('rouge-score')}")
    except importlib.metadata.PackageNotFoundError:
        report.add(WARN, "metrics", "rouge-score is not installed; summarization tasks cannot be scored")
