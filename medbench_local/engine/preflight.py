"""The pre-flight check of a model file as the engines run it: modelfiles' checks (header, context, memory,
models.toml pin, chat template) plus the one fact only this layer can know, whether this llama.cpp build puts
the model on a GPU, which decides the memory its estimate is judged against.

Why a wrapper here: modelfiles sits below the engines and never asks llama.cpp itself (tests/test_layering.py),
so the engine and ``run``'s pre-flight both pass it the build's answer through this one function and judge a
model the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import ModelSpec
from ..modelfiles import check
from .runtime import build_info, default_gpu_layers


def runs_on_gpu(spec: ModelSpec) -> bool:
    """Whether the model's layers go to a GPU: this build offloads and models.toml does not say n_gpu_layers = 0
    (unset means all layers where a GPU exists)."""
    return bool(build_info()["gpu_offload"]) and default_gpu_layers(spec.n_gpu_layers) != 0


def check_model_file(spec: ModelSpec, path: Path) -> tuple[str, dict[str, Any]]:
    """(sha256, GGUF metadata) of a usable file, memory judged where the model will run; or a one-line error."""
    return check.check_model_file(spec, path, on_gpu=runs_on_gpu(spec))
