"""Retrieval quality beside an arm's accuracy delta (``compare``): of the arm's items whose gold passage is known,
how many had it retrieved (recall@k, MRR), how many had it placed in the prompt, and how many of those the model
then answered correctly. So a reader tells "retrieval failed" (low recall) from "the model ignored the passage"
(the gold passage in the prompt, the answer still wrong).

The gold passage of an item is its payload's ``gold_passage`` field, else the ``--gold`` file's entry
(retrieval/quality.py). Items without either are left out; an evaluation without any gives no line.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlite_utils

from ..gates.stored import load_array, load_object
from ..retrieval.quality import gold_of, gold_rank, quality
from ..store.queries import arm_retrievals


@dataclass(frozen=True)
class ArmQuality:
    model_id: str
    task: str
    items: int            # items with a known gold passage
    k: int                # passages retrieved per item
    recall: float
    mrr: float
    placed: int           # items whose gold passage was placed in the prompt
    placed_correct: int   # ... and answered correctly

    def line(self) -> str:
        return (f"retrieval · {self.model_id} · {self.task}: of {self.items} items with a known gold passage, "
                f"recall@{self.k} {self.recall:.2f}, MRR {self.mrr:.2f}; the gold passage was in the prompt for "
                f"{self.placed}, of which {self.placed_correct} answered correctly")


def arm_quality(db: sqlite_utils.Database, model_id: str, task: str, gold_file: dict[str, str]) -> ArmQuality | None:
    """Retrieval quality of ``model_id``'s evaluations of ``task`` (None when it retrieved nothing or no item
    names a gold passage)."""
    rankings: list[tuple[list[str], str]] = []
    placed = placed_correct = k = 0
    for row in arm_retrievals(db, model_id, task):
        payload = load_object(row["payload"], "items", "payload", row["item_id"])
        gold = gold_of(payload, row["item_id"], gold_file)
        if gold is None:
            continue
        passages = [p for p in load_array(row["passages"], "retrievals", "passages", row["item_id"])
                    if isinstance(p, dict)]
        ids = [str(p.get("id")) for p in passages]
        k = max(k, len(ids))
        rankings.append((ids, gold))
        rank = gold_rank(ids, gold)
        if rank is not None and passages[rank - 1].get("placed"):
            placed += 1
            placed_correct += row["outcome"] == "correct"
    if not rankings or k == 0:
        return None
    found = quality(rankings, k)
    assert found.recall is not None and found.mrr is not None
    return ArmQuality(model_id, task, found.items, k, found.recall, found.mrr, placed, placed_correct)
