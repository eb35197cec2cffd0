"""What this llama.cpp build is and can do, recorded with every run.

Why: the llama.cpp build changes outputs (kernels, quantization code), and installs of llama-cpp-python
silently fall back to CPU when the CUDA/Metal build fails. We record the version, the system-info line
(which lists the compiled backends) and whether GPU offload is supported, and decide the default
``n_gpu_layers`` from it. Also the thread counts: how many this machine can give llama.cpp right now.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

#: The llama-cpp-python versions the engine is tested with. It reaches into private attributes (the context and
#: model handles, for the abort callback and the KV cache), which a new minor version may rename: pyproject.toml
#: pins this range, and ``doctor`` says when the installed version is outside it.
TESTED_LLAMA_CPP = (">=0.3.36", "<0.4")


def tested_version(version: str) -> bool:
    """Whether ``version`` of llama-cpp-python lies in :data:`TESTED_LLAMA_CPP`."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version

    try:
        return Version(version) in SpecifierSet(",".join(TESTED_LLAMA_CPP))
    except InvalidVersion:
        return False


@lru_cache(maxsize=1)
def build_info() -> dict[str, Any]:
    import llama_cpp

    try:
        system_info = llama_cpp.llama_print_system_info().decode("utf-8", errors="replace").strip()
    except Exception:  # pragma: no cover - very old builds
        system_info = ""
    return {
        "llama_cpp_python": getattr(llama_cpp, "__version__", "unknown"),
        "system_info": system_info,
        "gpu_offload": bool(llama_cpp.llama_supports_gpu_offload()),
    }


def default_gpu_layers(requested: int | None) -> int:
    """``None`` in models.toml means: everything on the GPU if this build has one, else CPU."""
    if requested is not None:
        return requested
    return -1 if build_info()["gpu_offload"] else 0


@dataclass(frozen=True)
class ThreadChoice:
    """llama.cpp thread counts and why: ``n_threads`` generates, ``n_threads_batch`` processes prompts."""

    n_threads: int
    n_threads_batch: int
    rule: str


def usable_cpus() -> int:
    """Logical CPUs this process may run on (respects taskset/cgroup affinity, unlike os.cpu_count())."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - macOS/Windows
        return max(1, os.cpu_count() or 1)


def physical_cores() -> int:
    """Distinct physical cores among the usable CPUs (hyperthread siblings share one core's arithmetic units,
    which llama.cpp's kernels already saturate); the logical count where the topology is not readable."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover
        return usable_cpus()
    cores = set()
    for cpu in cpus:
        base = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add((base.joinpath("physical_package_id").read_text().strip(),
                       base.joinpath("core_id").read_text().strip()))
        except OSError:
            return len(cpus)
    return max(1, len(cores))


def choose_threads(requested: int | None, *, cpus: int | None = None, cores: int | None = None,
                   load: float | None = None) -> ThreadChoice:
    """Threads for both llama.cpp phases. ``--threads N`` sets both to N. The default never oversubscribes:
    physical cores, but no more than the logical CPUs left idle by the 1-minute load average (at least 1).

    Why: llama.cpp's worker threads spin while they wait for each other, so one thread that the scheduler
    preempts stalls all the others; on a busy 2-core machine the old default (every core for prompt processing)
    ran 3.2x slower than one thread (issue 12). Outputs do not depend on the thread count (tested), so the
    choice is recorded with each evaluation but is not part of its identity.
    """
    if requested is not None:
        return ThreadChoice(requested, requested, f"--threads {requested}")
    cpus = usable_cpus() if cpus is None else cpus
    cores = physical_cores() if cores is None else cores
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):  # pragma: no cover - Windows
            load = 0.0
    idle = cpus - int(load + 0.5)
    chosen = max(1, min(cores, idle))
    rule = f"min({cores} physical cores, {cpus} usable CPUs - {load:.1f} load) = {chosen}"
    return ThreadChoice(chosen, chosen, rule)
