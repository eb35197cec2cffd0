"""Validation of the membership signals on the planted set (tests/data/contamination/): per model and signal,
AUROC and TPR at 5% FPR of members (texts every web crawl holds) against freshly written non-members.

    python tools/validate_contamination.py                          # the demo pair's two models
    python tools/validate_contamination.py --model smollm2-135m-instruct --k 0.2

Prints a Markdown table (the one in docs/contamination.md) and the mean loss of each set.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from medbench_local.config import load_config
from medbench_local.contamination.roc import auroc, tpr_at_fpr
from medbench_local.contamination.signals import (
    DEFAULT_K,
    SIGNALS,
    TokenStats,
    item_signals,
    member_score,
    position_stats,
)
from medbench_local.engine.llama import LlamaEngine
from medbench_local.paths import find_config
from medbench_local.runner.checks import locate_models
from medbench_local.runner.inputs import ModelRole
from medbench_local.tasks.datafiles import jsonl_records

PLANTED = REPO / "tests" / "data" / "contamination"


def planted() -> tuple[list[str], list[str]]:
    read = lambda name: [record["text"] for _, record in jsonl_records(PLANTED / name)]  # noqa: E731
    return read("members.jsonl"), read("nonmembers.jsonl")


def scores(engine: LlamaEngine, texts: list[str], k: float) -> list[dict[str, float]]:
    found = []
    for text in texts:
        parts: list[TokenStats] = []
        engine.text_logits(text, lambda rows, targets: parts.append(position_stats(rows, targets)))
        found.append(item_signals(TokenStats.concat(parts), text, k))
    return found


def measure(model_id: str, k: float) -> list[tuple[str, str, float, float, float, float]]:
    config = load_config(find_config(None).path)
    role = ModelRole(config.model(model_id), "general")
    path = locate_models([role], config=config)[model_id]
    engine = LlamaEngine(role.spec, path)
    try:
        members, nonmembers = planted()
        m, n = scores(engine, members, k), scores(engine, nonmembers, k)
    finally:
        engine.close()
    rows = []
    for name in SIGNALS:
        pos = [member_score(name, s[name]) for s in m]
        neg = [member_score(name, s[name]) for s in n]
        rows.append((model_id, name, auroc(pos, neg), tpr_at_fpr(pos, neg, 0.05),
                     float(np.mean([s[name] for s in m])), float(np.mean([s[name] for s in n]))))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", help="model id from models.toml (repeatable)")
    parser.add_argument("--k", type=float, default=DEFAULT_K)
    args = parser.parse_args()
    models = args.model or ["smollm2-135m-instruct", "gemma3-270m"]
    members, nonmembers = planted()
    print(f"planted set: {len(members)} members, {len(nonmembers)} non-members, k = {args.k}\n")
    print("| model | signal | AUROC | TPR at 5% FPR | mean (members) | mean (non-members) |")
    print("|---|---|---|---|---|---|")
    for model_id in models:
        for model, name, area, tpr, mean_m, mean_n in measure(model_id, args.k):
            print(f"| {model} | {SIGNALS[name].title} | {area:.3f} | {tpr:.2f} | {mean_m:.4g} | {mean_n:.4g} |")


if __name__ == "__main__":
    main()
