"""Prompt-processing time at several ubatch sizes, in one interleaved run: what a smaller KV-reuse grid costs.

For each demo model, one 1,024-token prompt (a LongHealth sample prompt) is processed from an empty cache by
raw llama-cpp-python contexts with n_ubatch 8, 16, 32 and 512 (llama.cpp splits each n_batch chunk itself) and
by the engine at a 16- and a 32-token grid (``kv.CPU_UBATCH``; the engine decodes one ubatch per llama_decode).
Rounds rotate the order; medians and the ratios docs/kv-reuse.md quotes are printed. Only ratios mean anything.

    .venv/bin/python tools/ubatch_probe.py [ROUNDS] [MODEL ...]
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from medbench_local.config import load_config  # noqa: E402
from medbench_local.engine import kv  # noqa: E402
from medbench_local.engine.llama import LlamaEngine  # noqa: E402
from medbench_local.modelfiles.resolve import require  # noqa: E402
from medbench_local.tasks import PromptContext, get_task  # noqa: E402

RAW_UBATCHES = (8, 16, 32, 512)
ENGINE_GRIDS = (16, 32)


def probe(model_id: str, rounds: int) -> None:
    import llama_cpp

    spec = load_config(ROOT / "models.toml").model(model_id)
    path = require(spec)
    engines = {}
    for grid in ENGINE_GRIDS:
        kv.CPU_UBATCH = grid  # read when the engine is built (kv.ubatch_for)
        engines[grid] = LlamaEngine(spec, path, n_threads=1, kv_reuse=False)
    task = get_task("longhealth")
    data = task.load(ROOT / "bench_data" / "longhealth")
    engine = engines[32]
    ctx = PromptContext(documents=data.documents, count_tokens=engine.count_tokens, n_ctx=spec.n_ctx)
    tokens = engine.tokenize(engine.render(task.prompt(data.items[1], ctx)))[:1024]
    raws = {u: llama_cpp.Llama(model_path=str(path), n_ctx=spec.n_ctx, n_batch=512, n_ubatch=u, n_threads=1,
                               n_threads_batch=1, swa_full=True, verbose=False) for u in RAW_UBATCHES}

    def raw(llm: llama_cpp.Llama) -> Callable[[], None]:
        def run() -> None:
            llm.reset()
            llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(llm.ctx), True)
            llm.eval(tokens)
        return run

    def ours(engine: LlamaEngine) -> Callable[[], None]:
        def run() -> None:
            engine._forget_cache()
            engine._prefill(tokens, to_the_end=True)
        return run

    timed = {**{f"raw {u}": raw(llm) for u, llm in raws.items()},
             **{f"engine {g}": ours(e) for g, e in engines.items()}}
    names = list(timed)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for k in range(len(names)):
            name = names[(k + r) % len(names)]
            started = time.perf_counter()
            timed[name]()
            seconds[name].append(time.perf_counter() - started)
    med = {name: statistics.median(v) for name, v in seconds.items()}
    print(f"{model_id}, {len(tokens)} tokens, median of {rounds}: "
          + ", ".join(f"{name} {s:.3f} s" for name, s in med.items()))
    print(f"{model_id}: raw 16/32 {med['raw 16'] / med['raw 32']:.2f}x, raw 8/32 {med['raw 8'] / med['raw 32']:.2f}x, "
          f"raw 32/512 {med['raw 32'] / med['raw 512']:.2f}x, engine 16/32 {med['engine 16'] / med['engine 32']:.2f}x")
    for e in engines.values():
        e.close()
    for llm in raws.values():
        llm.close()


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    for model_id in sys.argv[2:] or ("smollm2-135m-instruct", "gemma3-270m"):
        probe(model_id, rounds)


if __name__ == "__main__":
    main()
