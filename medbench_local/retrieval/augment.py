"""Passages into a prompt: which of the retrieved passages fit the token budget, in which order, and where.

Why the task's prompt is wrapped rather than each task taught about passages: every task (case challenges,
MedNLI, PubMedQA, free-text ones) builds its own ``Prompt``; an arm adds one block of passages to its user text,
before it or after it, so any task can be run as an arm without a line of task code. The block's wording is
fixed and names no file, so the same index gives the same prompt on every machine.

Why "before" keeps prefix reuse for nothing but the system text and "after" for the case: the KV cache reuses the
prompt prefix shared with the previous item (README "Performance"); passages differ per item, so whatever follows
them is decoded anew. Both placements are offered because where passages stand changes how models use them
("lost in the middle", Liu et al., TACL 2024, doi:10.1162/tacl_a_00638).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from ..prompting import Prompt

HEADER = "Reference passages (retrieved automatically; they may or may not be relevant):"
MARGIN_TOKENS = 16  # chat-template tokens around the user text, not counted by the task's prompt text


@dataclass(frozen=True)
class Placed:
    """The passages that go into a prompt, in prompt order, and their token count (the block's, as counted)."""

    ids: tuple[str, ...]
    block: str
    tokens: int


def passage_line(number: int, text: str) -> str:
    return f"[{number}] {text}"


def fit_passages(texts: Sequence[tuple[str, str]], budget: int, count_tokens: Callable[[str], int],
                 order: str) -> Placed:
    """The best-ranked passages whose block stays within ``budget`` tokens, taken in rank order and stopping at the
    first that does not fit (a lower-ranked short passage never displaces a better one); ``order`` "score" puts
    the best first, "reversed" the best last. ``texts``: ``(id, text)`` best first."""
    chosen: list[tuple[str, str]] = []
    used = count_tokens(HEADER)
    for passage_id, text in texts:
        cost = count_tokens(passage_line(len(chosen) + 1, text)) + 1
        if used + cost > budget:
            break
        chosen.append((passage_id, text))
        used += cost
    if not chosen:
        return Placed((), "", 0)
    if order == "reversed":
        chosen.reverse()
    lines = [HEADER, *(passage_line(n, text) for n, (_, text) in enumerate(chosen, start=1))]
    block = "\n".join(lines)
    return Placed(tuple(pid for pid, _ in chosen), block, count_tokens(block))


def room_for_passages(prompt: Prompt, n_ctx: int, max_tokens: int, count_tokens: Callable[[str], int]) -> int:
    """Tokens left for passages in a context of ``n_ctx`` after the prompt's own text and the answer's
    ``max_tokens`` (0 when none)."""
    own = count_tokens("\n".join([prompt.system, *(t for turn in prompt.shots for t in turn), prompt.user,
                                  prompt.answer_prefix]))
    return max(0, n_ctx - own - max_tokens - MARGIN_TOKENS)


def with_passages(prompt: Prompt, block: str, placement: str) -> Prompt:
    """``prompt`` with the passage block before its user text ("before") or after it ("after"); unchanged
    without passages."""
    if not block:
        return prompt
    user = f"{block}\n\n{prompt.user}" if placement == "before" else f"{prompt.user}\n\n{block}"
    return replace(prompt, user=user)
