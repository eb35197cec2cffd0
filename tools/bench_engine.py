"""Benchmark: what our engine adds on top of raw llama-cpp-python, as ratios within one run.

Compares, on the same prompts of the demo model (SmolLM2, bench_data/jama):
  * raw:     llama_cpp.Llama.create_completion on the rendered prompt, greedy, reusing the KV cache prefix;
  * ours:    LlamaEngine.generate (our rendering, tokenization, left-truncation check, KV reset per item,
             llama.cpp timing read-out).
The ratio ours/raw is what determinism (KV reset) and bookkeeping cost. Absolute times are printed for context
only: these machines are shared and noisy, so only the ratio within one run means anything.

    .venv/bin/python tools/bench_engine.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import llama_cpp

from medbench_local.config import load_config
from medbench_local.engine.base import GenerateRequest
from medbench_local.engine.llama import LlamaEngine
from medbench_local.modelfiles.resolve import require
from medbench_local.tasks import PromptContext, get_task

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    spec = load_config(ROOT / "models.toml").model("smollm2-135m-instruct")
    path = require(spec)
    task = get_task("jama")
    items = task.load(ROOT / "bench_data" / "jama").items
    engine = LlamaEngine(spec, path)
    prompts = [task.prompt(item, PromptContext()) for item in items]
    raw = llama_cpp.Llama(model_path=str(path), n_ctx=spec.n_ctx, verbose=False)
    texts = [engine.render(p) for p in prompts]

    def run_ours() -> float:
        start = time.perf_counter()
        for prompt in prompts:
            engine.generate(GenerateRequest(prompt, task.max_tokens, task.stop))
        return time.perf_counter() - start

    def run_raw() -> float:
        start = time.perf_counter()
        for text in texts:
            raw.create_completion(text, max_tokens=task.max_tokens, temperature=0.0, stop=list(task.stop))
        return time.perf_counter() - start

    ours, base = [], []
    for _ in range(args.repeats):  # interleaved, so drift of the machine hits both alike
        base.append(run_raw())
        ours.append(run_ours())
    print(f"{len(prompts)} prompts × {args.repeats} repeats; median seconds: raw {statistics.median(base):.2f}, "
          f"ours {statistics.median(ours):.2f}")
    print(f"ours / raw: {statistics.median(ours) / statistics.median(base):.2f}x "
          "(KV reset per item + bookkeeping; near 1 means the determinism is cheap)")


if __name__ == "__main__":
    main()
