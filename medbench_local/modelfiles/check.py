"""Pre-flight checks of one model file, run before anything is written.

Why a separate step: a wrong file (hash mismatch), a broken or cut-short GGUF, a chat model without a chat
template, a context longer than the model was trained for or than this machine's memory holds must be
reported as one clear line *before* a run record is written or a model is loaded, so that bad input never
leaves traces in the results database.

Why nothing here asks llama.cpp: modelfiles sits below the engines (engine/llama.py calls these checks), so
whether a model goes to a GPU with this build, which decides the memory it is judged against, is passed in
by the caller (engine/preflight.py, or ``doctor``, which judges memory itself).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import ModelSpec
from ..errors import ModelFileError, UserError
from ..prompting import Prompt
from ..prompting.prompt_format import TemplateRenderError, render_chat
from .gguf_header import read_gguf_metadata
from .hashing import cached_sha256
from .memory import FAIL, estimate_memory, gpu_memory, mem_available, memory_verdict


def check_model_file(spec: ModelSpec, path: Path, *, on_gpu: bool | None) -> tuple[str, dict[str, Any]]:
    """Return (sha256, GGUF metadata) of a usable file, or raise a one-line error saying what is wrong.

    The cheap checks (header, context, memory) come before hashing, which reads every byte. ``on_gpu``: whether
    the model's layers go to a GPU with this llama.cpp build (engine/preflight.py knows); ``None`` skips the
    memory check (the doctor reports it itself, as a line of its checklist). No default, so that no caller
    judges a GPU model against RAM by forgetting it.
    """
    metadata = read_gguf_metadata(path)
    check_context(spec, metadata, path)
    if on_gpu is not None:
        check_memory(spec, metadata, path, on_gpu=on_gpu)
    sha256 = cached_sha256(path)
    if spec.sha256 and spec.sha256 != sha256:
        raise ModelFileError(f"model '{spec.id}': {path} has SHA-256 {sha256[:12]}…, but models.toml pins "
                             f"{spec.sha256[:12]}…; the file changed or is corrupted")
    if spec.prompt_mode == "chat":
        template = spec.chat_template or metadata.get("tokenizer.chat_template")
        if not isinstance(template, str):
            raise UserError(f"model '{spec.id}': prompt_mode is 'chat' but {path.name} has no chat template; "
                            "set prompt_mode = \"base\" or chat_template = \"...\" in models.toml")
        try:  # a template that cannot render a two-turn prompt would fail on every item
            render_chat(template, Prompt(system="system", user="question", answer_prefix="Answer:"))
        except TemplateRenderError as exc:
            raise UserError(f"model '{spec.id}': {exc}") from None
    return sha256, metadata


def trained_context(metadata: dict[str, Any]) -> int | None:
    """The context length the model was trained with (GGUF ``<arch>.context_length``), when the file says."""
    arch = metadata.get("general.architecture")
    value = metadata.get(f"{arch}.context_length") if isinstance(arch, str) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def check_context(spec: ModelSpec, metadata: dict[str, Any], path: Path) -> None:
    """n_ctx beyond the trained context is refused unless models.toml allows it explicitly.

    Why: llama.cpp accepts any n_ctx and extrapolates the position encoding, so outputs degrade silently;
    a long-context experiment must be a visible decision (``allow_context_beyond_trained = true``), which is
    also part of the recorded settings.
    """
    trained = trained_context(metadata)
    if trained is not None and spec.n_ctx > trained and not spec.allow_context_beyond_trained:
        raise ModelFileError(
            f"model '{spec.id}': n_ctx {spec.n_ctx} exceeds the context {path.name} was trained with "
            f"({trained} tokens, GGUF {metadata.get('general.architecture')}.context_length); lower n_ctx in "
            "models.toml, or set allow_context_beyond_trained = true to run beyond it knowingly")


def check_memory(spec: ModelSpec, metadata: dict[str, Any], path: Path, *, on_gpu: bool) -> None:
    """Refuse a model whose memory estimate (weights + KV cache for n_ctx, the doctor's formula: memory.py)
    exceeds the memory this machine has for it: free VRAM + RAM when ``on_gpu``, else RAM. Only judged where the
    free memory is measured reliably (Linux MemAvailable, and nvidia-smi when the model goes to a GPU);
    elsewhere ``doctor`` shows the estimate."""
    ram = mem_available(precise=True)
    if ram is None:
        return
    gpus = gpu_memory() if on_gpu else None
    if on_gpu and gpus is None:
        return  # a GPU build without nvidia-smi (Metal, ROCm): free VRAM unknown
    estimate = estimate_memory(metadata, spec.n_ctx, path.stat().st_size)
    status, text = memory_verdict(estimate, spec.n_ctx, ram, gpus if on_gpu else None)
    if status == FAIL:
        raise ModelFileError(f"model '{spec.id}': {text}")
