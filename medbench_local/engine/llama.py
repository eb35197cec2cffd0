"""The llama.cpp adapter: load a GGUF once, render prompts, generate greedily or score continuations, and
account for every token.

Thin by design (the inspect_ai lesson): the adapter turns a GenerateRequest or a LoglikelihoodRequest into
llama.cpp calls and returns a Generation or Loglikelihoods; it knows nothing about tasks or scoring.
Determinism choices, each recorded in the evaluation settings: temperature 0 (greedy), a fixed seed, and outputs
that never depend on which item ran before: either the KV cache is emptied per item (``kv_reuse`` off) or only
the part of the previous prompt that provably yields the same bits is kept (``kv.py`` has the rule and why), so
a resumed run equals an uninterrupted one either way.

Prompt processing is ours (``_prefill``: the ubatches a fresh cache would use, logits only where needed);
generation is llama-cpp-python's ``create_completion`` (its stop-string and UTF-8 handling), which decodes the
prompt's last ubatch itself. Log-likelihoods evaluate the context once and every option's continuation from that
KV state, all options in one batched decode (each in its own sequence, sharing the context's cells), as
``llama-perplexity --multiple-choice`` does.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stderr
from pathlib import Path
from typing import Any

from ..config import ModelSpec
from ..errors import ModelFileError, UserError
from ..gates.files import private_temporary_file
from ..modelfiles.gguf_header import summarize
from ..prompting.prompt_format import render_for_model
from . import kv
from .abort import AbortSwitch
from .base import (
    ContinuationScore,
    GenerateRequest,
    Generation,
    LoglikelihoodRequest,
    Loglikelihoods,
    ModelInfo,
    Prompt,
)
from .identity import identity as engine_identity
from .preflight import check_model_file
from .rpc import rpc_llama_kwargs
from .runtime import ThreadChoice, build_info, choose_threads, default_gpu_layers
from .truncation import left_truncate

DEFAULT_SEED = 1234
# Sequence 0 holds the prompt; options of a multiple-choice item are scored in sequences 1.. in one decode.
MAX_SEQUENCES = 16
# Positions per decode when every position's logits are read (text_logits): bounds the logits held at once.
TEXT_CHUNK = 64


def engine_settings(spec: ModelSpec, *, seed: int, n_threads: int | None, n_batch: int,
                    allow_cpu: bool = False, kv_reuse: bool = True,
                    threads: ThreadChoice | None = None) -> dict[str, Any]:
    """Every knob that can change outputs, in one dict that becomes part of the evaluation identity, plus the
    runtime-only ones (``RUNTIME_ONLY_SETTINGS``: recorded, proven not to change outputs, not in the identity)."""
    n_gpu_layers = default_gpu_layers(spec.n_gpu_layers)
    if allow_cpu and not build_info()["gpu_offload"]:
        n_gpu_layers = 0  # --allow-cpu on a CPU-only build: run there, and record that it did
    threads = threads or choose_threads(n_threads)
    return {
        "n_ctx": spec.n_ctx,
        "n_batch": n_batch,
        # prompt ubatches on a fixed grid: outputs depend on ubatch shapes, and KV reuse keeps whole ubatches (kv.py)
        "n_ubatch": kv.ubatch_for(n_batch, offloaded=n_gpu_layers != 0),
        "n_gpu_layers": n_gpu_layers,
        "main_gpu": spec.main_gpu,
        "tensor_split": list(spec.tensor_split) if spec.tensor_split else None,
        "flash_attn": spec.flash_attn,
        "cache_type_k": spec.cache_type_k or "f16",
        "cache_type_v": spec.cache_type_v or "f16",
        "seed": seed,
        "temperature": 0.0,
        "sampler": "greedy",
        # outputs equal those of an emptied cache per item, whether or not a prefix is reused (kv.py)
        "kv_reset_per_item": True,
        # sliding-window layers keep every position (Gemma-3): a reused prefix must still be in the cache, and
        # cells then lie in position order as on a fresh cache (the ring buffer would reorder sums)
        "swa_full": True,
        "prompt_mode": spec.prompt_mode,
        "model_stop": list(spec.stop),
        **({"rpc_servers": list(spec.rpc_servers)} if spec.rpc_servers else {}),  # where layers run: see runner
        # runtime-only (RUNTIME_ONLY_SETTINGS)
        "n_threads": threads.n_threads,
        "n_threads_batch": threads.n_threads_batch,
        "threads_rule": threads.rule,
        "kv_reuse": kv_reuse,
    }


# Recorded with every evaluation, but not part of its identity: outputs are byte-identical across them
# (tests/test_kv_reuse.py for kv_reuse; thread counts: issue 12, 100/100 items).


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


@contextmanager
def _context_defaults(**fields: Any) -> Iterator[None]:
    """Let llama-cpp-python's ``Llama`` create its context with settings it has no argument for.

    Why: scoring the options of a multiple-choice item in one decode needs several sequences sharing the
    context's KV cells (``n_seq_max`` > 1 with one unified cache); ``Llama`` only sets these for embeddings.
    Both are layout settings: one sequence's results are the same with them (the KV-reuse test compares).
    """
    import llama_cpp.llama_cpp as low

    original = low.llama_context_default_params

    def patched() -> Any:
        params = original()
        for name, value in fields.items():
            setattr(params, name, value)
        return params

    low.llama_context_default_params = patched
    try:
        yield
    finally:
        low.llama_context_default_params = original


class LlamaEngine:
    """One loaded model. Construct once per model per run; call ``close()`` to free memory."""

    def __init__(self, spec: ModelSpec, path: Path, *, seed: int = DEFAULT_SEED, n_threads: int | None = None,
                 n_batch: int = 512, allow_cpu: bool = False, kv_reuse: bool = True,
                 batch_continuations: bool = True):
        sha256, metadata = check_model_file(spec, path)  # clear errors before llama.cpp sees the file
        require_gpu_build(spec, allow_cpu)
        template = spec.chat_template or metadata.get("tokenizer.chat_template")
        self.settings = engine_settings(spec, seed=seed, n_threads=n_threads, n_batch=n_batch, allow_cpu=allow_cpu,
                                        kv_reuse=kv_reuse)
        self.batch_continuations = batch_continuations  # False only for benchmarks: one decode per option
        import llama_cpp

        kv_types = {f"type_{k[-1]}": getattr(llama_cpp, _KV_TYPES[self.settings[k]])
                    for k in ("cache_type_k", "cache_type_v") if self.settings[k] != "f16"}
        try:
            # verbose=True only inside the capture: we keep llama.cpp's load log (layers offloaded, buffers)
            # for the record and for error messages, and nothing reaches the terminal
            with captured_stderr() as log, _context_defaults(n_seq_max=MAX_SEQUENCES, kv_unified=True):
                self._llm = llama_cpp.Llama(
                    model_path=str(path), n_ctx=spec.n_ctx, n_batch=n_batch, n_ubatch=self.settings["n_ubatch"],
                    n_gpu_layers=self.settings["n_gpu_layers"], main_gpu=spec.main_gpu,
                    tensor_split=list(spec.tensor_split) if spec.tensor_split else None,
                    flash_attn=spec.flash_attn, seed=seed, n_threads=self.settings["n_threads"],
                    n_threads_batch=self.settings["n_threads_batch"], swa_full=self.settings["swa_full"],
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
        self._n_vocab = self._llm.n_vocab()
        self._n_batch = int(llama_cpp.llama_n_batch(self._llm.ctx))
        self._batching = kv.Batching(n_batch=self._n_batch, n_ubatch=int(llama_cpp.llama_n_ubatch(self._llm.ctx)))
        self._batch = llama_cpp.llama_batch_init(self._n_batch, 0, MAX_SEQUENCES)
        self._cache = kv.CacheState()
        self.info = ModelInfo(
            model_id=spec.id, path=str(path), sha256=sha256, size_bytes=path.stat().st_size,
            prompt_mode=spec.prompt_mode, chat_template=self._template,
            chat_template_sha256=hashlib.sha256(self._template.encode()).hexdigest() if self._template else None,
            metadata=summarize(metadata), settings=self.settings,
        )

    # ---- text and tokens

    def render(self, prompt: Prompt) -> str:
        return render_for_model(self.info.model_id, self._template, prompt, bos_token=self._bos_text,
                                eos_token=self._eos_text)

    def tokenize(self, text: str) -> list[int]:
        """Tokens exactly as the model will see them: special tokens parsed, one BOS if the model wants it."""
        tokens = self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        if self._add_bos and (not tokens or tokens[0] != self._bos):
            tokens.insert(0, self._bos)
        return tokens

    def count_tokens(self, text: str) -> int:
        """Length of a plain text (no BOS, special tokens not parsed), for token budgets such as LongHealth's."""
        return len(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def _left_truncate(self, tokens: list[int], budget: int) -> tuple[list[int], int]:
        """Drop tokens from the left (as the reference's TGI did) until ``budget`` remain, keeping the BOS."""
        return left_truncate(tokens, budget, self._bos if self._add_bos else None)

    def continuation_tokens(self, context_text: str, context: list[int], continuation: str) -> list[int]:
        """The tokens ``continuation`` adds after ``context``: tokenized together with the context (as the model
        would read the whole text), then split off; separately when the join merges tokens across the seam."""
        if not continuation:
            raise ValueError("empty continuation")
        whole = self.tokenize(context_text + continuation)
        if len(whole) > len(context) and whole[:len(context)] == context:
            return whole[len(context):]
        return self._llm.tokenize(continuation.encode("utf-8"), add_bos=False, special=False)

    # ---- generate_until

    def generate(self, request: GenerateRequest) -> Generation:
        text = self.render(request.prompt)
        budget = self.settings["n_ctx"] - request.max_tokens
        if budget < 8:
            raise UserError(f"model '{self.info.model_id}': n_ctx {self.settings['n_ctx']} leaves no room for a "
                            f"prompt after max_tokens {request.max_tokens}")
        tokens, truncated = self._left_truncate(self.tokenize(text), budget)
        self._perf_reset()
        started = time.perf_counter()
        try:
            with self._abort.guard():
                plan = self._prefill(tokens, to_the_end=False)
                grammar = None
                if request.grammar is not None:
                    from llama_cpp import LlamaGrammar

                    grammar = LlamaGrammar.from_string(request.grammar, verbose=False)
                result: Any = self._llm.create_completion(
                    prompt=tokens, max_tokens=request.max_tokens, temperature=0.0, top_k=1, top_p=1.0, min_p=0.0,
                    repeat_penalty=1.0, seed=self.settings["seed"], grammar=grammar,
                    stop=[*request.stop, *self.settings["model_stop"]] or None,
                )
            self._adopt_completion(plan)
        except BaseException:
            self._forget_cache()
            raise
        seconds = time.perf_counter() - started
        prompt_ms, generation_ms = self._perf_read()
        choice = result["choices"][0]
        return Generation(
            prompt_text=text, output=choice["text"], prompt_tokens=len(tokens), truncated_tokens=truncated,
            completion_tokens=int(result["usage"]["completion_tokens"]),
            finish_reason=choice.get("finish_reason") or "stop", seconds=seconds,
            prompt_ms=prompt_ms, generation_ms=generation_ms, prompt_tokens_evaluated=plan.evaluated,
        )

    # ---- loglikelihood

    def loglikelihood(self, request: LoglikelihoodRequest) -> Loglikelihoods:
        if not request.continuations:
            raise ValueError("loglikelihood needs at least one continuation")
        text = self.render(request.prompt)
        full = self.tokenize(text)
        continuations = [self.continuation_tokens(text, full, c) for c in request.continuations]
        longest = max(len(c) for c in continuations)
        if self.settings["n_ctx"] - longest < 8:
            raise UserError(f"model '{self.info.model_id}': n_ctx {self.settings['n_ctx']} leaves no room for a "
                            f"context before a {longest}-token continuation")
        context, truncated = self._left_truncate(full, self.settings["n_ctx"] - longest)
        self._perf_reset()
        started = time.perf_counter()
        try:
            with self._abort.guard():
                plan = self._prefill(context, to_the_end=True)
                first = self._log_softmax_at(-1)  # the context's last token predicts every continuation's first
                sums = [[first(c[0])] for c in continuations]
                evaluated = self._score_rest(len(context), continuations, sums)
        except BaseException:
            self._forget_cache()
            raise
        seconds = time.perf_counter() - started
        prompt_ms, _ = self._perf_read()
        scores = tuple(
            ContinuationScore(text=c, logprob=float(sum(lp for lp, _ in parts)), tokens=len(parts),
                              bytes=len(c.encode("utf-8")), greedy=all(g for _, g in parts))
            for c, parts in zip(request.continuations, sums))
        return Loglikelihoods(prompt_text=text, scores=scores, prompt_tokens=len(context), truncated_tokens=truncated,
                              prompt_tokens_evaluated=plan.evaluated, continuation_tokens_evaluated=evaluated,
                              seconds=seconds, prompt_ms=prompt_ms)

    def _score_rest(self, n_context: int, continuations: list[list[int]],
                    sums: list[list[tuple[float, bool]]]) -> int:
        """Log-probabilities of every continuation token after the first (appended to ``sums``). The last
        token of a continuation is never decoded: only its probability is needed. Returns tokens decoded."""
        import llama_cpp

        longer = [i for i, c in enumerate(continuations) if len(c) > 1]
        if not longer:
            return 0
        memory = llama_cpp.llama_get_memory(self._llm.ctx)
        batched = self.batch_continuations and len(longer) < MAX_SEQUENCES
        # (token, position, sequence, (option, index of the token these logits predict))
        groups: list[list[tuple[int, int, int, tuple[int, int]]]] = []
        for k, i in enumerate(longer):
            sequence = k + 1 if batched else 0
            groups.append([(tok, n_context + j, sequence, (i, j + 1))
                           for j, tok in enumerate(continuations[i][:-1])])
        decoded = 0
        try:
            if batched:
                for k in range(len(longer)):
                    llama_cpp.llama_memory_seq_cp(memory, 0, k + 1, -1, -1)
                flat = [entry for group in groups for entry in group]
                for start in range(0, len(flat), self._n_batch):
                    decoded += self._decode_scored(flat[start:start + self._n_batch], continuations, sums)
            else:
                for group in groups:
                    for start in range(0, len(group), self._n_batch):
                        decoded += self._decode_scored(group[start:start + self._n_batch], continuations, sums)
                    llama_cpp.llama_memory_seq_rm(memory, 0, n_context, -1)
        finally:
            for k in range(len(longer) if batched else 0):
                llama_cpp.llama_memory_seq_rm(memory, k + 1, -1, -1)
        return decoded

    def _decode_scored(self, entries: list[tuple[int, int, int, tuple[int, int]]],
                       continuations: list[list[int]], sums: list[list[tuple[float, bool]]]) -> int:
        self._decode([(tok, pos, seq, True) for tok, pos, seq, _ in entries])
        for index, (_, _, _, (option, j)) in enumerate(entries):
            sums[option].append(self._log_softmax_at(index)(continuations[option][j]))
        return len(entries)

    def _log_softmax_at(self, index: int) -> Any:
        """A function token -> (log-probability, is argmax) over the logits of batch row ``index``."""
        import llama_cpp
        import numpy as np

        pointer = llama_cpp.llama_get_logits_ith(self._llm.ctx, index)
        row = np.ctypeslib.as_array(pointer, shape=(self._n_vocab,)).astype(np.float64)
        top = int(row.argmax())
        log_total = float(row[top] + np.log(np.exp(row - row[top]).sum()))

        def at(token: int) -> tuple[float, bool]:
            return float(row[token]) - log_total, token == top

        return at

    # ---- every token of a plain text (the contamination probe)

    def text_logits(self, text: str, consume: Callable[[Any, Any], None], *, chunk: int = TEXT_CHUNK
                    ) -> tuple[int, int]:
        """Feed ``text`` (plain, no chat template; special-token text is not parsed) from an empty cache and
        hand every position's next-token logits to ``consume(rows, targets)``, ``chunk`` positions at a time:
        rows is a (m, n_vocab) float32 copy, targets the m tokens those rows predict. Why a callback: the full
        n_tokens x n_vocab matrix (262k columns for Gemma 3) is never held, only one chunk. The first token
        (the BOS where the model has one) is context only. Texts longer than n_ctx keep their first n_ctx
        tokens. Returns (tokens read, tokens cut off)."""
        import llama_cpp
        import numpy as np

        tokens = self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
        if self._add_bos:
            tokens.insert(0, self._bos)
        limit = int(self.settings["n_ctx"])
        cut = max(0, len(tokens) - limit)
        tokens = tokens[:limit]
        if len(tokens) < 2:
            raise UserError(f"model '{self.info.model_id}': the text has fewer than 2 tokens, nothing to score")
        step = max(1, min(chunk, self._n_batch))
        self._forget_cache()
        try:
            with self._abort.guard():
                for start in range(0, len(tokens) - 1, step):
                    end = min(start + step, len(tokens) - 1)
                    self._decode([(tokens[p], p, 0, True) for p in range(start, end)])
                    rows = np.empty((end - start, self._n_vocab), dtype=np.float32)
                    for i in range(end - start):
                        pointer = llama_cpp.llama_get_logits_ith(self._llm.ctx, i)
                        rows[i] = np.ctypeslib.as_array(pointer, shape=(self._n_vocab,))
                    consume(rows, np.asarray(tokens[start + 1:end + 1], dtype=np.int64))
        finally:
            self._forget_cache()  # the next generate/loglik starts from an empty cache, as planned
        return len(tokens), cut

    # ---- the KV cache

    def _prefill(self, tokens: list[int], *, to_the_end: bool) -> kv.Plan:
        """Bring sequence 0 of the KV cache to ``tokens``: keep the longest safe prefix (kv.plan; nothing when
        kv_reuse is off), decode the rest in the fresh path's ubatches, in as few llama_decode calls as keep
        them. ``to_the_end=False`` leaves the last ubatch to create_completion (which must decode at least one
        token to sample the first output)."""
        import llama_cpp

        plan = kv.plan(self._cache.tokens, self._cache.classes, tokens, self._batching,
                       enabled=bool(self.settings["kv_reuse"]))
        memory = llama_cpp.llama_get_memory(self._llm.ctx)
        if plan.reuse == 0:
            llama_cpp.llama_memory_clear(memory, True)
        else:
            llama_cpp.llama_memory_seq_rm(memory, -1, plan.reuse, -1)
        self._cache.keep(plan.reuse)
        # whole chunks per llama_decode, which cuts them back into exactly these ubatches (kv.decode_calls)
        calls = kv.decode_calls(plan.pieces if to_the_end else plan.pieces[:-1], self._batching)
        for n, (start, end) in enumerate(calls):
            last = to_the_end and n == len(calls) - 1
            self._decode([(tokens[p], p, 0, last and p == end - 1) for p in range(start, end)])
            self._cache.tokens.extend(tokens[start:end])
            self._cache.classes.extend(plan.classes[start:end])
        held = len(self._cache.tokens)
        self._llm.input_ids[:held] = tokens[:held]
        self._llm.n_tokens = held  # llama-cpp-python's view: it continues from here
        return plan

    def _adopt_completion(self, plan: kv.Plan) -> None:
        """After create_completion: the cache holds the prompt (with its planned classes) and the generated
        tokens it decoded one by one."""
        held = [int(t) for t in self._llm.input_ids[:self._llm.n_tokens]]
        if held[:len(plan.tokens)] != list(plan.tokens):  # not what we planned: trust nothing
            self._forget_cache()
            return
        self._cache.tokens = held
        self._cache.classes = list(plan.classes) + [kv.generated_class(p) for p in range(len(plan.tokens), len(held))]

    def _forget_cache(self) -> None:
        import llama_cpp

        self._cache.clear()
        llm = getattr(self, "_llm", None)
        if llm is not None:
            llm.n_tokens = 0
            llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(llm.ctx), True)

    def _decode(self, entries: list[tuple[int, int, int, bool]]) -> None:
        """One llama_decode of (token, position, sequence, wants logits) rows."""
        import llama_cpp

        batch = self._batch
        for i, (token, position, sequence, logits) in enumerate(entries):
            batch.token[i] = token
            batch.pos[i] = position
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = sequence
            batch.logits[i] = logits
        batch.n_tokens = len(entries)
        status = llama_cpp.llama_decode(self._llm.ctx, batch)
        if status != 0:
            raise RuntimeError(f"llama_decode returned {status}"
                               + (" (no room in the KV cache)" if status == 1 else ""))

    # ---- timing and cleanup

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

    def identity(self) -> dict[str, Any]:
        """Weights, chat template, this llama.cpp build and the output-relevant settings (engine/identity.py)."""
        return engine_identity(self.info.sha256, self.info.chat_template_sha256, self.settings,
                               build=build_info()["llama_cpp_python"])

    def close(self) -> None:
        import llama_cpp

        batch, self._batch = getattr(self, "_batch", None), None
        if batch is not None:
            llama_cpp.llama_batch_free(batch)
        llm, self._llm = getattr(self, "_llm", None), None  # type: ignore[assignment]  # closed: never used again
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
    with private_temporary_file() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            with redirect_stderr(python_side):
                yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.text = sink.read().decode("utf-8", errors="replace") + python_side.getvalue()
