"""What retrieval costs a run, on the demo (docs/retrieval.md "Measured"): for k = 1, 3, 5, 10 passages on the
jama and nejm samples with the demo corpus (bench_data/retrieval), per demo model:

* retrieval ms per item: the FTS5/BM25 search of the arm's query (``case+question``), median over ``--repeats``;
* prompt tokens per item (the rendered prompt, the model's own tokenizer) and what the passages add to k = 0;
* passages placed (within the token budget) and recall@k of the gold passage (bench_data/retrieval/demo-gold.csv);
* prompt-processing ms per item (one generated token, from an empty KV cache), median over ``--repeats``, and its
  ratio to k = 0: what the added tokens cost the model, against which the search time is measured.

Only ratios within one run mean anything; absolute times depend on the machine.

    .venv/bin/python tools/bench_retrieval.py [--repeats 3] [--threads N] [--budget 1500]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from medbench_local.config import RetrievalSpec, load_config  # noqa: E402
from medbench_local.engine.base import GenerateRequest  # noqa: E402
from medbench_local.engine.llama import LlamaEngine  # noqa: E402
from medbench_local.engine.runtime import choose_threads  # noqa: E402
from medbench_local.modelfiles.resolve import require  # noqa: E402
from medbench_local.retrieval.gold import read_gold  # noqa: E402
from medbench_local.retrieval.index import RetrievalIndex, build_index  # noqa: E402
from medbench_local.retrieval.passages import Split  # noqa: E402
from medbench_local.retrieval.quality import gold_of, quality  # noqa: E402
from medbench_local.runner.arm import ArmRetrieval  # noqa: E402
from medbench_local.tasks import PromptContext, get_task  # noqa: E402

MODELS = ("smollm2-135m-instruct", "gemma3-270m")
TASKS = ("jama", "nejm")
KS = (0, 1, 3, 5, 10)
CORPUS = ROOT / "bench_data" / "retrieval" / "demo-guidelines.jsonl"
GOLD = ROOT / "bench_data" / "retrieval" / "demo-gold.csv"


def measure(model_id: str, index: RetrievalIndex, args: argparse.Namespace) -> list[dict[str, Any]]:
    config = load_config(ROOT / "models.toml")
    spec = config.model(model_id)
    threads = choose_threads(args.threads).n_threads
    engine = LlamaEngine(spec, require(spec), n_threads=threads, kv_reuse=False)
    gold = read_gold(GOLD)
    rows = []
    try:
        loaded = []
        for task_id in TASKS:
            task = get_task(task_id)
            data = task.load(ROOT / "bench_data" / task_id)
            context = PromptContext(shots=data.shots, documents=data.documents, count_tokens=engine.count_tokens,
                                    n_ctx=int(engine.settings["n_ctx"]))
            loaded.append((task, data, context))
        for k in KS:
            search_ms, prompt_ms, tokens, placed, rankings = [], [], [], [], []
            for task, data, context in loaded:
                arm = ArmRetrieval(RetrievalSpec(index.path, k=max(k, 1), passage_budget=args.budget), index, task)
                for item in data.items:
                    prompt = task.prompt(item, context)
                    if k:
                        times = []
                        for _ in range(args.repeats):
                            augmented = arm.augment(item, prompt, context)
                            found = arm.take(item)
                            assert found is not None
                            times.append(found["retrieval_ms"])
                        search_ms.append(statistics.median(times))
                        placed.append(found["placed"])
                        answer = gold_of(item.payload, item.id, gold)
                        if answer:
                            rankings.append(([p["id"] for p in found["passages"]], answer))
                        prompt = augmented
                    tokens.append(engine.count_tokens(engine.render(prompt)))
                    runs = []
                    for _ in range(args.repeats):
                        started = time.perf_counter()
                        engine.generate(GenerateRequest(prompt, 1, ()))
                        runs.append((time.perf_counter() - started) * 1000)
                    prompt_ms.append(statistics.median(runs))
            rows.append({"model": model_id, "k": k, "items": len(tokens),
                         "search_ms": statistics.mean(search_ms) if search_ms else 0.0,
                         "tokens": statistics.mean(tokens), "placed": statistics.mean(placed) if placed else 0.0,
                         "recall": quality(rankings, k).recall if k else None,
                         "prompt_ms": statistics.mean(prompt_ms)})
    finally:
        engine.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--budget", type=int, default=1500, help="passage_budget in tokens (n_ctx caps it)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        summary = build_index([CORPUS], Path(scratch) / "demo.idx", Split())
        build_ms = (time.perf_counter() - started) * 1000
        print(f"index: {summary.passages} passages, built in {build_ms:.0f} ms")
        with RetrievalIndex(summary.path) as index:
            rows = [row for model in MODELS for row in measure(model, index, args)]
    print("| model | k | items | search ms/item | passages placed | prompt tokens | + tokens vs k=0 | "
          "recall@k | prompt ms/item | × k=0 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    base = {row["model"]: row for row in rows if row["k"] == 0}
    for row in rows:
        zero = base[row["model"]]
        recall = f"{row['recall']:.2f}" if row["recall"] is not None else "—"
        print(f"| {row['model']} | {row['k']} | {row['items']} | {row['search_ms']:.2f} | {row['placed']:.1f} | "
              f"{row['tokens']:.0f} | {row['tokens'] - zero['tokens']:+.0f} | {recall} | {row['prompt_ms']:.0f} | "
              f"{row['prompt_ms'] / zero['prompt_ms']:.2f} |")


if __name__ == "__main__":
    main()
