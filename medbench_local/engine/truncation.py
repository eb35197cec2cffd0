"""Fitting a prompt into the context window by dropping tokens from the left.

Why the left: the question, the options and the answer prefix are at the end of every prompt; the start is
the system text and the oldest part of the case. The reference (TGI with ``truncate``) cut the same side, so
results stay comparable. A leading BOS token is kept, because models trained with one degrade without it.
"""

from __future__ import annotations


def left_truncate(tokens: list[int], budget: int, bos: int | None = None) -> tuple[list[int], int]:
    """(the tokens that fit in ``budget``, how many were dropped), dropping from the left, keeping BOS.

    ``bos``: the BOS token id when the model adds one (then a leading BOS survives truncation).
    """
    if budget < 1:
        raise ValueError(f"token budget must be positive, got {budget}")
    if len(tokens) <= budget:
        return list(tokens), 0
    keep_bos = 1 if bos is not None and tokens and tokens[0] == bos and budget > 1 else 0
    dropped = len(tokens) - budget
    return tokens[:keep_bos] + tokens[keep_bos + dropped:], dropped
