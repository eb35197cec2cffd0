"""Retrieval quality where the gold passage is known: recall@k and mean reciprocal rank (pure functions).

Why next to the accuracy delta: an arm that does not beat the plain model either retrieved the wrong passages
or was given the right one and ignored it; recall@k tells the two apart. A retrieved passage counts as the gold
one when its id or its document's id is the gold id (a document split into ``doc#1``, ``doc#2`` ... is found
by any of its pieces when the gold names the document).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

GOLD_FIELD = "gold_passage"  # the item payload field naming the passage (or document) that answers it


def is_gold(passage_id: str, gold: str) -> bool:
    """Whether a retrieved passage id matches the gold id (the passage itself, or a piece of the gold document)."""
    return passage_id == gold or passage_id.split("#", 1)[0] == gold


def gold_rank(retrieved: Sequence[str], gold: str) -> int | None:
    """1-based rank of the first retrieved passage that matches ``gold``; None when none does."""
    for rank, passage_id in enumerate(retrieved, start=1):
        if is_gold(passage_id, gold):
            return rank
    return None


@dataclass(frozen=True)
class Quality:
    """recall@k and MRR over the items that name a gold passage (``items``); None when there are none."""

    items: int
    k: int
    recall: float | None
    mrr: float | None


def quality(rankings: Sequence[tuple[Sequence[str], str]], k: int) -> Quality:
    """recall@k (share of items whose gold is among the first ``k`` retrieved) and MRR (mean of 1/rank of the
    gold within the first ``k``, 0 when absent) over ``(retrieved ids, gold id)`` pairs."""
    if k < 1:
        raise ValueError("k must be at least 1")
    if not rankings:
        return Quality(0, k, None, None)
    ranks = [gold_rank(list(retrieved)[:k], gold) for retrieved, gold in rankings]
    recall = sum(rank is not None for rank in ranks) / len(ranks)
    mrr = sum(1 / rank for rank in ranks if rank is not None) / len(ranks)
    return Quality(len(ranks), k, recall, mrr)


def gold_of(payload: dict[str, object], item_id: str, gold_file: dict[str, str]) -> str | None:
    """An item's gold passage: its payload's ``gold_passage`` field, else the ``--gold`` file's entry."""
    value = payload.get(GOLD_FIELD)
    if isinstance(value, str) and value:
        return value
    return gold_file.get(item_id)
