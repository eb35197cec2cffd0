"""What retrieval costs a run, on the demo (docs/retrieval.md "Measured"): for k = 1, 3, 5, 10 passages on the
jama and nejm samples with the demo corpus (bench_data/retrieval), per demo model:

* retrieval ms per item: the FTS5/BM25 search of the arm's query (``case+question``), median of 5 searches per
  item, then the median over items;
* prompt tokens per item (the rendered prompt, the model's own tokenizer) and what the passages add to k = 0;
* passages placed (within the token budget) and recall@k of the gold passage (bench_data/retrieval/demo-gold.csv);
* prompt-processing ms per item (one generated token, from an empty KV cache; the median over items of each item's
  median over ``--repeats`` rounds) and the median over items of time(k) / time(0) for the same item: what the
  added tokens cost the model, against which the search time is measured. The k values of an item are timed one
  after the other, in an order rotated per item and round, so that the drift of a shared machine hits all alike.

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

from medbench_local.config import RetrievalSpec, load_config
from medbench_local.engine.base import GenerateRequest
from medbench_local.engine.llama import LlamaEngine
from medbench_local.engine.runtime import choose_threads
from medbench_local.modelfiles.resolve import require
from medbench_local.retrieval.gold import read_gold
from medbench_local.retrieval.index import RetrievalIndex, build_index
from medbench_local.retrieval.passages import Split
from medbench_local.retrieval.quality import gold_of, quality
from medbench_local.runner.arm import ArmRetrieval
from medbench_local.tasks import PromptContext, get_task

MODELS = ("smollm2-135m-instruct", "gemma3-270m")
TASKS = ("jama", "nejm")
KS = (0, 1, 3, 5, 10)
CORPUS = ROOT / "bench_data" / "retrieval" / "demo-guidelines.jsonl"
GOLD = ROOT / "bench_data" / "retrieval" / "demo-gold.csv"


def measure(model_id: str, index: RetrievalIndex, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Per k: search time, tokens, placed passages, recall; the prompt-processing time of every (item, k) is taken
    in rounds that visit the k values of an item one after the other, in an order rotated per item and round,
    so that the drift of a shared machine hits every k alike; the cost of k is the median over items of
    time(k) / time(0) for the same item."""
    config = load_config(ROOT / "models.toml")
    spec = config.model(model_id)
    engine = LlamaEngine(spec, require(spec), n_threads=choose_threads(args.threads).n_threads, kv_reuse=False)
    gold = read_gold(GOLD)
    try:
        prompts: list[dict[int, Any]] = []   # per item: k -> prompt
        stats: dict[int, dict[str, list[float]]] = {k: {"search": [], "tokens": [], "placed": []} for k in KS}
        rankings: dict[int, list[tuple[list[str], str]]] = {k: [] for k in KS}
        for task_id in TASKS:
            task = get_task(task_id)
            data = task.load(ROOT / "bench_data" / task_id)
            context = PromptContext(shots=data.shots, documents=data.documents, count_tokens=engine.count_tokens,
                                    n_ctx=int(engine.settings["n_ctx"]))
            for item in data.items:
                plain = task.prompt(item, context)
                by_k: dict[int, Any] = {0: plain}
                for k in KS[1:]:
                    arm = ArmRetrieval(RetrievalSpec(index.path, k=k, passage_budget=args.budget), index, task)
                    times = []
                    for _ in range(5):
                        by_k[k] = arm.augment(item, plain, context)
                        found = arm.take(item)
                        assert found is not None
                        times.append(found["retrieval_ms"])
                    stats[k]["search"].append(statistics.median(times))
                    stats[k]["placed"].append(found["placed"])
                    answer = gold_of(item.payload, item.id, gold)
                    if answer:
                        rankings[k].append(([p["id"] for p in found["passages"]], answer))
                for k, prompt in by_k.items():
                    stats[k]["tokens"].append(engine.count_tokens(engine.render(prompt)))
                prompts.append(by_k)
        timings: list[dict[int, list[float]]] = [{k: [] for k in KS} for _ in prompts]
        for round_ in range(args.repeats):
            for number, by_k in enumerate(prompts):
                shift = (number + round_) % len(KS)
                for k in KS[shift:] + KS[:shift]:
                    started = time.perf_counter()
                    engine.generate(GenerateRequest(by_k[k], 1, ()))
                    timings[number][k].append((time.perf_counter() - started) * 1000)
        per_item = [{k: statistics.median(times) for k, times in item.items()} for item in timings]
        rows = []
        for k in KS:
            rows.append({"model": model_id, "k": k, "items": len(prompts),
                         "search_ms": statistics.median(stats[k]["search"]) if k else 0.0,
                         "tokens": statistics.mean(stats[k]["tokens"]),
                         "placed": statistics.mean(stats[k]["placed"]) if k else 0.0,
                         "recall": quality(rankings[k], k).recall if k else None,
                         "prompt_ms": statistics.median(item[k] for item in per_item),
                         "ratio": statistics.median(item[k] / item[0] for item in per_item)})
        return rows
    finally:
        engine.close()


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
            rows = []
            for model in MODELS:
                rows += measure(model, index, args)
                print(f"measured {model}", flush=True)
    print("| model | k | items | search ms/item | passages placed | prompt tokens | + tokens vs k=0 | "
          "recall@k | prompt ms/item | prompt time × k=0 (median per item) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    base = {row["model"]: row for row in rows if row["k"] == 0}
    for row in rows:
        zero = base[row["model"]]
        recall = f"{row['recall']:.2f}" if row["recall"] is not None else "—"
        print(f"| {row['model']} | {row['k']} | {row['items']} | {row['search_ms']:.2f} | {row['placed']:.1f} | "
              f"{row['tokens']:.0f} | {row['tokens'] - zero['tokens']:+.0f} | {recall} | {row['prompt_ms']:.0f} | "
              f"{row['ratio']:.2f} |")


if __name__ == "__main__":
    main()
