"""Which reused KV prefixes keep a model's logits bit-identical? A probe for engine/kv.py's rule.

For one prompt of N tokens (a task item rendered for the model), compare the logits of its last token computed
from an empty cache with those computed after keeping the first P tokens of a previous full decode and decoding
only [P, N), for every P in a range. With ``--ubatch`` (default: the engine's grid) the fresh and the suffix
decodes are split into ubatches of that size; ``--aligned`` decodes the suffix on the engine's grid (which is
what the engine does), otherwise as one piece from P (what a naive prefix cache does).

    .venv/bin/python tools/kv_probe.py --model gemma3-270m --task mednli --item 1 --start 180
    .venv/bin/python tools/kv_probe.py --model gemma3-270m --aligned     # the engine's rule: all '='

Each P prints '=' (bit-identical) or the largest absolute logit difference. Run it on a new backend (a GPU
build, another CPU) before trusting ``--kv-reuse on`` there; docs/kv-reuse.md has the CPU results.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from medbench_local.config import load_config
from medbench_local.engine import kv
from medbench_local.engine.llama import LlamaEngine
from medbench_local.modelfiles.resolve import require
from medbench_local.tasks import PromptContext, get_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--task", default="mednli")
    parser.add_argument("--item", type=int, default=1, help="index of the item in the task's run order")
    parser.add_argument("--start", type=int, default=None, help="first P (default: N - 48)")
    parser.add_argument("--aligned", action="store_true", help="decode the suffix on the engine's ubatch grid")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import llama_cpp
    import numpy as np

    spec = load_config(ROOT / "models.toml").model(args.model)
    engine = LlamaEngine(spec, require(spec), n_threads=args.threads, kv_reuse=False)
    task = get_task(args.task)
    data = task.load(ROOT / "bench_data" / args.task)
    ctx = PromptContext(shots=data.shots, documents=data.documents, count_tokens=engine.count_tokens,
                        n_ctx=spec.n_ctx)
    tokens = engine.tokenize(engine.render(task.prompt(data.items[args.item], ctx)))
    n = len(tokens)
    batching = engine._batching
    memory = llama_cpp.llama_get_memory(engine._llm.ctx)

    def decode(spans: list[tuple[int, int]], logits_last: bool) -> None:
        for k, (start, end) in enumerate(spans):
            last = logits_last and k == len(spans) - 1
            engine._decode([(tokens[p], p, 0, last and p == end - 1) for p in range(start, end)])

    def last_logits() -> np.ndarray:
        row = llama_cpp.llama_get_logits_ith(engine._llm.ctx, -1)
        return np.ctypeslib.as_array(row, shape=(engine._n_vocab,)).copy()

    spans = kv.fresh_spans(n, batching)
    llama_cpp.llama_memory_clear(memory, True)
    decode(spans, True)
    reference = last_logits()
    cells = []
    for p in range(max(1, args.start if args.start is not None else n - 48), n):
        llama_cpp.llama_memory_clear(memory, True)
        decode(spans, False)
        llama_cpp.llama_memory_seq_rm(memory, -1, p, -1)
        if args.aligned:
            suffix = [(max(s, p), e) for s, e in spans if e > p]
        else:
            suffix = [(s, min(s + batching.n_ubatch, n)) for s in range(p, n, batching.n_ubatch)]
        decode(suffix, True)
        diff = float(np.abs(last_logits() - reference).max())
        cells.append(f"{p}:{'=' if diff == 0 else f'{diff:.3g}'}")
    engine.close()
    print(f"{args.model} · {args.task} item {args.item}: N = {n} tokens, ubatch {batching.n_ubatch}, "
          f"suffix {'on the grid' if args.aligned else 'from P'}")
    print(" ".join(cells))


if __name__ == "__main__":
    main()
