"""What this llama.cpp build is and can do, recorded with every run.

Why: the llama.cpp build changes outputs (kernels, quantization code), and installs of llama-cpp-python
silently fall back to CPU when the CUDA/Metal build fails. We record the version, the system-info line
(which lists the compiled backends) and whether GPU offload is supported, and decide the default
``n_gpu_layers`` from it.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any


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
