"""Prompt-processing time at several ubatch sizes, in one interleaved run: what a smaller KV-reuse grid costs.

For each demo model, on one thread:

* one 1,024-token prompt (a LongHealth sample prompt) processed from an empty cache by raw llama-cpp-python
  contexts with n_ubatch 16 and 32 (llama.cpp splits each n_batch chunk itself) and by the engine at a
  16- and a 32-token grid (``kv.CPU_UBATCH``; the engine passes whole batches per llama_decode, kv.decode_calls);
* the sample prompts of mednli (3-shot) and jama (a 0-shot case challenge), prompt processing only (generation
  does not depend on the grid), by the engine at both grids: every prompt from an empty cache ("fresh": the
  cost per token) and in run order with the shared prefix reused ("reuse": what a run pays).

Each round runs every measurement at both sizes back to back (which goes first alternates, the measurements
rotate). Timed as this process's CPU time (one llama.cpp thread: the work done; waiting for another process's
load does not count, though sharing the cores still slows it). Printed: the minimum (interference only adds
time) and median per size, and the ratios docs/kv-reuse.md quotes. Only ratios mean anything.

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

from medbench_local.config import load_config
from medbench_local.engine import kv
from medbench_local.engine.llama import LlamaEngine
from medbench_local.modelfiles.resolve import require
from medbench_local.tasks import PromptContext, get_task

RAW_UBATCHES = (16, 32)  # 8 and 512 as well in commit add3e55 (docs/kv-reuse.md quotes both)
ENGINE_GRIDS = (16, 32)
TASKS = {"mednli": 5, "jama": 5}  # task: sample items used
DEFAULT_GRID = kv.CPU_UBATCH


def probe(model_id: str, rounds: int) -> None:
    import llama_cpp

    spec = load_config(ROOT / "models.toml").model(model_id)
    path = require(spec)
    engines = {}
    for grid in ENGINE_GRIDS:
        kv.CPU_UBATCH = grid  # read when the engine is built (kv.ubatch_for)
        for reuse in (False, True):
            engines[grid, reuse] = LlamaEngine(spec, path, n_threads=1, kv_reuse=reuse)
    kv.CPU_UBATCH = DEFAULT_GRID
    engine = engines[32, False]
    task = get_task("longhealth")
    data = task.load(ROOT / "bench_data" / "longhealth")
    ctx = PromptContext(documents=data.documents, count_tokens=engine.count_tokens, n_ctx=spec.n_ctx)
    tokens = engine.tokenize(engine.render(task.prompt(data.items[1], ctx)))[:1024]
    task_prompts = {}
    for task_id, n_items in TASKS.items():
        task = get_task(task_id)
        data = task.load(ROOT / "bench_data" / task_id)
        ctx = PromptContext(shots=data.shots, count_tokens=engine.count_tokens, n_ctx=spec.n_ctx)
        task_prompts[task_id] = [engine.tokenize(engine.render(task.prompt(item, ctx))) for item in data.items[:n_items]]
    raws = {u: llama_cpp.Llama(model_path=str(path), n_ctx=spec.n_ctx, n_batch=512, n_ubatch=u, n_threads=1,
                               n_threads_batch=1, swa_full=True, verbose=False) for u in RAW_UBATCHES}

    def raw(llm: llama_cpp.Llama) -> Callable[[], None]:
        def run() -> None:
            llm.reset()
            llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(llm.ctx), True)
            llm.eval(tokens)
        return run

    def ours(engine: LlamaEngine, prompts: list[list[int]]) -> Callable[[], None]:
        def run() -> None:
            engine._forget_cache()  # each round starts from an empty cache; with reuse on, items then share
            for prompt in prompts:
                engine._prefill(prompt, to_the_end=True)
        return run

    units: dict[str, dict[int, Callable[[], None]]] = {
        f"raw llama-cpp-python, {len(tokens)} tokens": {u: raw(llm) for u, llm in raws.items()},
        f"engine, {len(tokens)} tokens": {g: ours(engines[g, False], [tokens]) for g in ENGINE_GRIDS}}
    for task_id, prompts in task_prompts.items():
        label = f"{task_id} ({len(prompts)} prompts, {sum(map(len, prompts))} tokens)"
        units[f"engine, {label}, fresh"] = {g: ours(engines[g, False], prompts) for g in ENGINE_GRIDS}
        units[f"engine, {label}, reuse"] = {g: ours(engines[g, True], prompts) for g in ENGINE_GRIDS}
    seconds: dict[tuple[str, int], list[float]] = {(unit, g): [] for unit, runs in units.items() for g in runs}
    names = list(units)
    for r in range(rounds):
        for k in range(len(names)):
            unit = names[(k + r) % len(names)]
            for g in (ENGINE_GRIDS if r % 2 == 0 else ENGINE_GRIDS[::-1]):  # the two grids back to back
                started = time.process_time()
                units[unit][g]()
                seconds[unit, g].append(time.process_time() - started)
    print(f"{model_id}, CPU seconds, min / median of {rounds} rounds; grid 16/32: min/min, median of paired ratios")
    for unit in names:
        small, big = seconds[unit, 16], seconds[unit, 32]
        paired = statistics.median(a / b for a, b in zip(small, big))
        print(f"  {unit}: 16: {min(small):.2f} / {statistics.median(small):.2f}, 32: {min(big):.2f} / "
              f"{statistics.median(big):.2f}; 16/32 {min(small) / min(big):.2f}x, paired {paired:.2f}x")
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
