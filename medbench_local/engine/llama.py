"""The llama.cpp adapter: load a GGUF once, render prompts, generate greedily, account for every token.

Thin by design (the inspect_ai lesson): the adapter turns a GenerateRequest into llama-cpp-python calls and
returns a Generation; it knows nothing about tasks or scoring. Determinism choices, each recorded in the
evaluation settings: temperature 0 (greedy), a fixed seed, and a KV-cache reset before every item so that an
item's output never depends on which item ran before it (a resumed run must equal an uninterrupted one).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr
from pathlib import Path
from typing import Any

from ..config import ModelSpec
from ..errors import ModelFileError, UserError
from ..modelfiles.check import check_model_file
from ..modelfiles.gguf_header import summarize
from .abort import AbortSwitch
from .base import GenerateRequest, Generation, ModelInfo, Prompt
from .prompt_format import TemplateRenderError, render_base, render_chat
from .rpc import rpc_llama_kwargs
from .runtime import build_info, default_gpu_layers
from .truncation import left_truncate

DEFAULT_SEED = 1234


def engine_settings(spec: ModelSpec, *, seed: int, n_threads: int | None, n_batch: int,
                    allow_cpu: bool = False) -> dict[str, Any]:
    """Every knob that can change outputs, in one dict that becomes part of the evaluation identity."""
    n_gpu_layers = default_gpu_layers(spec.n_gpu_layers)
    if allow_cpu and not build_info()["gpu_offload"]:
        n_gpu_layers = 0  # --allow-cpu on a CPU-only build: run there, and record that it did
    return {
        "n_ctx": spec.n_ctx,
        "n_batch": n_batch,
        "n_gpu_layers": n_gpu_layers,
        "main_gpu": spec.main_gpu,
        "tensor_split": list(spec.tensor_split) if spec.tensor_split else None,
        "flash_attn": spec.flash_attn,
        "cache_type_k": spec.cache_type_k or "f16",
        "cache_type_v": spec.cache_type_v or "f16",
        "seed": seed,
        "temperature": 0.0,
        "sampler": "greedy",
        "n_threads": n_threads or os.cpu_count() or 1,
        "kv_reset_per_item": True,
        "prompt_mode": spec.prompt_mode,
        "model_stop": list(spec.stop),
        **({"rpc_servers": list(spec.rpc_servers)} if spec.rpc_servers else {}),  # where layers run: see runner
    }


def require_gpu_build(spec: ModelSpec, allow_cpu: bool) -> None:
    """Refuse to silently run a model configured for the GPU on a CPU-only llama.cpp build.

    Why: llama-cpp-python installs fall back to CPU without a word when the CUDA/Metal build fails; a 70B
    evaluation would then take days, and its timings would be reported as GPU numbers.
    """
    if allow_cpu or build_info()["gpu_offload"]:
        return
    asked = spec.n_gpu_layers not in (None, 0) or spec.tensor_split or spec.main_gpu
    if asked:
        raise UserError(
            f"model '{spec.id}' is configured for the GPU (n_gpu_layers = {spec.n_gpu_layers}), but this "
            "llama-cpp-python build cannot offload (CPU only). Reinstall it with CMAKE_ARGS=\"-DGGML_CUDA=on\" "
            "(or -DGGML_METAL=on), see the README, or pass --allow-cpu to run on the CPU anyway")


_KV_TYPES = {"f32": "GGML_TYPE_F32", "f16": "GGML_TYPE_F16", "bf16": "GGML_TYPE_BF16", "q8_0": "GGML_TYPE_Q8_0",
             "q5_1": "GGML_TYPE_Q5_1", "q5_0": "GGML_TYPE_Q5_0", "q4_1": "GGML_TYPE_Q4_1", "q4_0": "GGML_TYPE_Q4_0",
             "iq4_nl": "GGML_TYPE_IQ4_NL"}
_OFFLOADED = re.compile(r"offloaded (\d+)/(\d+) layers to GPU")
_BUFFER = re.compile(r"(\S+) model buffer size =\s*([\d.]+) MiB")


def load_report(log: str) -> dict[str, Any]:
    """What llama.cpp says it actually did at load time: layers offloaded and where the weights live."""
    offloaded = _OFFLOADED.search(log)
    buffers: dict[str, float] = {}
    for name, size in _BUFFER.findall(log):
        buffers[name] = buffers.get(name, 0.0) + float(size)
    return {"offloaded_layers": f"{offloaded.group(1)}/{offloaded.group(2)}" if offloaded else "0 (no GPU offload)",
            "weights_mib_by_buffer": buffers}


class LlamaEngine:
    """One loaded model. Construct once per model per run; call ``close()`` to free memory."""

    def __init__(self, spec: ModelSpec, path: Path, *, seed: int = DEFAULT_SEED, n_threads: int | None = None,
                 n_batch: int = 512, allow_cpu: bool = False):
        sha256, metadata = check_model_file(spec, path)  # clear errors before llama.cpp sees the file
        require_gpu_build(spec, allow_cpu)
        template = spec.chat_template or metadata.get("tokenizer.chat_template")
        self.settings = engine_settings(spec, seed=seed, n_threads=n_threads, n_batch=n_batch, allow_cpu=allow_cpu)
        import llama_cpp

        kv_types = {f"type_{k[-1]}": getattr(llama_cpp, _KV_TYPES[self.settings[k]])
                    for k in ("cache_type_k", "cache_type_v") if self.settings[k] != "f16"}
        try:
            # verbose=True only inside the capture: we keep llama.cpp's load log (layers offloaded, buffers)
            # for the record and for error messages, and nothing reaches the terminal
            with captured_stderr() as log:
                self._llm = llama_cpp.Llama(
                    model_path=str(path), n_ctx=spec.n_ctx, n_batch=n_batch,
                    n_gpu_layers=self.settings["n_gpu_layers"], main_gpu=spec.main_gpu,
                    tensor_split=list(spec.tensor_split) if spec.tensor_split else None,
                    flash_attn=spec.flash_attn, seed=seed, n_threads=self.settings["n_threads"],
                    verbose=True, logits_all=False, **kv_types, **rpc_llama_kwargs(spec.id, spec.rpc_servers),
                )
        except (ValueError, RuntimeError, OSError) as exc:
            detail = log.last_line()
            raise ModelFileError(f"model '{spec.id}': llama.cpp could not load {path} ({exc}"
                                 + (f"; llama.cpp says: {detail}" if detail else "") + ")") from None
        self._llm.verbose = False  # no per-call timing printouts
        from llama_cpp import _logger

        _logger.set_verbose(False)
        self.load = load_report(log.text)
        self._abort = AbortSwitch()  # a second Ctrl-C stops even a long prompt evaluation (engine/abort.py)
        self._abort.install(self._llm._ctx.ctx)
        vocab = self._llm._model
        self._bos = self._llm.token_bos()
        self._add_bos = bool(vocab.add_bos_token()) and self._bos != -1
        self._bos_text = vocab.token_get_text(self._bos) if self._bos != -1 else ""
        eos = self._llm.token_eos()
        self._eos_text = vocab.token_get_text(eos) if eos != -1 else ""
        self._template = template if spec.prompt_mode == "chat" else None
        self.info = ModelInfo(
            model_id=spec.id, path=str(path), sha256=sha256, size_bytes=path.stat().st_size,
            prompt_mode=spec.prompt_mode, chat_template=self._template,
            chat_template_sha256=hashlib.sha256(self._template.encode()).hexdigest() if self._template else None,
            metadata=summarize(metadata), settings=self.settings,
        )

    def render(self, prompt: Prompt) -> str:
        if self._template is None:
            return render_base(prompt)
        try:
            return render_chat(self._template, prompt, bos_token=self._bos_text, eos_token=self._eos_text)
        except TemplateRenderError as exc:
            raise UserError(f"model '{self.info.model_id}': {exc}") from None

    def tokenize(self, text: str) -> list[int]:
        """Tokens exactly as the model will see them: special tokens parsed, one BOS if the model wants it."""
        tokens = self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        if self._add_bos and (not tokens or tokens[0] != self._bos):
            tokens.insert(0, self._bos)
        return tokens

    def count_tokens(self, text: str) -> int:
        """Length of a plain text (no BOS, special tokens not parsed), for token budgets such as LongHealth's."""
        return len(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def generate(self, request: GenerateRequest) -> Generation:
        text = self.render(request.prompt)
        tokens = self.tokenize(text)
        budget = self.settings["n_ctx"] - request.max_tokens
        if budget < 8:
            raise UserError(f"model '{self.info.model_id}': n_ctx {self.settings['n_ctx']} leaves no room for a "
                            f"prompt after max_tokens {request.max_tokens}")
        tokens, truncated = left_truncate(tokens, budget, self._bos if self._add_bos else None)
        self._llm.reset()
        self._perf_reset()
        started = time.perf_counter()
        with self._abort.guard():
            result: Any = self._llm.create_completion(
                prompt=tokens, max_tokens=request.max_tokens, temperature=0.0, top_k=1, top_p=1.0, min_p=0.0,
                repeat_penalty=1.0, seed=self.settings["seed"],
                stop=[*request.stop, *self.settings["model_stop"]] or None,
            )
        seconds = time.perf_counter() - started
        prompt_ms, generation_ms = self._perf_read()
        choice = result["choices"][0]
        return Generation(
            prompt_text=text, output=choice["text"], prompt_tokens=len(tokens), truncated_tokens=truncated,
            completion_tokens=int(result["usage"]["completion_tokens"]),
            finish_reason=choice.get("finish_reason") or "stop", seconds=seconds,
            prompt_ms=prompt_ms, generation_ms=generation_ms,
        )

    def _perf_reset(self) -> None:
        import llama_cpp

        try:
            llama_cpp.llama_perf_context_reset(self._llm._ctx.ctx)
        except (AttributeError, TypeError):  # pragma: no cover - older bindings
            pass

    def _perf_read(self) -> tuple[float | None, float | None]:
        """llama.cpp's own split of the time into prompt processing and generation."""
        import llama_cpp

        try:
            data = llama_cpp.llama_perf_context(self._llm._ctx.ctx)
        except (AttributeError, TypeError):  # pragma: no cover - older bindings
            return None, None
        return float(data.t_p_eval_ms), float(data.t_eval_ms)

    def abort(self) -> None:
        """Stop the computation in flight as soon as llama.cpp next polls (called from a signal handler)."""
        self._abort.trip()

    def close(self) -> None:
        llm, self._llm = getattr(self, "_llm", None), None
        if llm is not None:
            llm.close()


class _Captured:
    def __init__(self) -> None:
        self.text = ""

    def last_line(self) -> str:
        lines = [line.strip() for line in self.text.splitlines() if line.strip()]
        return lines[-1] if lines else ""


@contextmanager
def captured_stderr() -> Iterator[_Captured]:
    """Capture what C code writes to file descriptor 2 (llama.cpp logs bypass Python's sys.stderr)."""
    captured = _Captured()
    try:
        saved = os.dup(2)
    except OSError:  # no usable fd 2 (unusual embedding): just run
        yield captured
        return
    python_side = io.StringIO()  # llama-cpp-python's log callback prints to sys.stderr, which may be a wrapper
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            with redirect_stderr(python_side):
                yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.text = sink.read().decode("utf-8", errors="replace") + python_side.getvalue()
