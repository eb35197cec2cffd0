"""Log-likelihood scoring on a served model, read from the completions endpoint's prompt log-probabilities.

The (legacy) OpenAI completions API answers ``echo: true`` with ``logprobs: k`` by listing the prompt's own
tokens, each with the log-probability the model gave it after the tokens before it, followed by what it then
generated. vLLM and llama-cpp-python's server implement it; llama-server rejects ``echo`` (llama.cpp issue
#27174; PR #15189 is unmerged), so ``--scoring loglik`` on it is refused before a run starts.

We send context + continuation with ``max_tokens: 1`` and read the continuation's tokens from the *end* of the
echoed list, after dropping the generated entries (``usage.completion_tokens``). Reading from the end matters:
servers differ in what they echo at the start (llama-cpp-python leaves out every token whose id is the BOS id,
which for SmolLM2 is also ``<|im_start|>``, so its list is shorter than the prompt), but every one echoes the
tokens it read last. The tail must spell the continuation; when it does not, the item is an ``error`` rather
than a score computed from the wrong tokens.

Pure functions: the engine (``openai_compat.py``) does the requests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .http import Field, ServerRequestError, malformed

#: Asked of every echo request: the greedy top-1 alternative is enough to say whether a token was the argmax.
ECHO_LOGPROBS = 1
#: New tokens asked of an echo request: one (ignored); the answer must not claim more.
ECHO_MAX_TOKENS = 1


@dataclass(frozen=True)
class EchoedTail:
    """The continuation as the server scored it."""

    logprob: float   # sum over its tokens, natural log
    greedy: bool     # every token was the server's top-1 after the tokens before it
    text: str        # the echoed tokens' text, joined


def echo_body(model: str, prompt: Any, sampling: dict[str, Any], seed: int) -> dict[str, Any]:
    """The request that makes a completions endpoint score ``prompt`` (text or token ids) token by token."""
    return {"model": model, "prompt": prompt, "max_tokens": ECHO_MAX_TOKENS, "echo": True, "logprobs": ECHO_LOGPROBS,
            "stream": False, "seed": seed, **sampling}


def echoed_entries(answer: Field) -> tuple[list[Field], list[str], list[Field | None], int]:
    """(token log-probabilities, token texts, top alternatives, entries generated) of an echo answer, each list
    checked for its type (log-probabilities are read by ``read_tail``, where they are used)."""
    choice = answer["choices"][0]
    logprobs = choice.get("logprobs")
    if logprobs is None:
        raise ServerRequestError("the server answered an echo request without prompt log-probabilities",
                                 kind="malformed answer")
    values = logprobs["token_logprobs"].items()
    tokens = [token.string() for token in logprobs["tokens"].items()]
    top_field = logprobs.get("top_logprobs")
    tops: list[Field | None] = [None if top.value is None else top for top in top_field.items()] \
        if top_field is not None else [None] * len(values)
    for value in values:
        if value.value is not None:
            value.number()
    usage = answer.get("usage")
    if usage is None:
        raise ServerRequestError("the server's echo answer does not say how many tokens it generated "
                                 "(usage.completion_tokens)", kind="malformed answer")
    generated = usage["completion_tokens"].integer(0, ECHO_MAX_TOKENS)
    if not len(values) == len(tokens) == len(tops):
        raise malformed("the echo answer's lists have different lengths")
    return values, tokens, tops, generated


def read_tail(answer: Field, n_tokens: int, continuation: str) -> EchoedTail:
    """Score the last ``n_tokens`` prompt tokens of an echo answer, which must spell ``continuation``. Every
    token's log-probability must be a finite number <= 0, and so must their sum (a few huge finite values add
    up to -inf): anything else is an item error, never a score."""
    if n_tokens < 1:
        raise ValueError("a continuation has at least one token")
    values, tokens, tops, generated = echoed_entries(answer)
    ends = prompt_ends(answer, len(values), generated)
    for end in ends:
        start = end - n_tokens
        if start < 1:  # the first echoed token has no log-probability: nothing came before it
            raise ServerRequestError(f"the server echoed {end} prompt tokens, too few for a {n_tokens}-token "
                                     "continuation after a context: its echo does not include the prompt",
                                     kind="malformed answer")
        if "".join(tokens[start:end]) == continuation:
            break
    else:
        end = ends[0]
        start = end - n_tokens
    text = "".join(tokens[start:end])
    if text != continuation:
        raise ServerRequestError(f"the server's echoed prompt ends in {text[-60:]!r}, not in the continuation "
                                 f"{continuation[-60:]!r}: its prompt log-probabilities do not line up with the "
                                 "tokens sent", kind="echo mismatch")
    total, greedy = 0.0, True
    for value, top in zip(values[start:end], tops[start:end]):
        if value.value is None:
            raise malformed(f"{value.path}: a continuation token without a log-probability")
        number = value.number(high=0.0)
        total += number
        best = _best(top)
        greedy = greedy and best is not None and number >= best
    if not math.isfinite(total):
        raise malformed(f"the continuation's log-probabilities add up to {total!r}")
    return EchoedTail(logprob=total, greedy=greedy, text=text)


def prompt_ends(answer: Field, entries: int, generated: int) -> list[int]:
    """Where the echoed prompt may end in the answer's token lists, in the order to try: the entries less the
    generated ones, then the entries themselves.

    Why the second: llama-cpp-python's server (0.3.x) counts its generated token in ``completion_tokens`` but
    sometimes leaves it out of the lists (measured after a base-model prompt: "...Answer: A" echoed, "." generated,
    17 prompt tokens and 17 entries), and then "entries less generated" ends the prompt one token early. The
    tokens read must spell the continuation whatever the end (``read_tail``), the first reading that does is
    taken, and the second is tried only when the lists start at the prompt's first token (its log-probability is
    null, as the API defines it): a list shifted by one, whose texts would line up with the continuation while
    its log-probabilities belong to the neighbouring tokens, is still an error, never a score."""
    first = answer["choices"][0]["logprobs"]["token_logprobs"].items()[:1]
    starts_at_the_prompt = bool(first) and first[0].value is None
    return [entries - generated, entries] if generated and starts_at_the_prompt else [entries - generated]


def _best(top: Field | None) -> float | None:
    """The highest log-probability among a position's listed alternatives (the token itself is among them)."""
    if top is None:
        return None
    numbers = [Field(value, f"{top.path}[{key!r}]").number() for key, value in top.object().items()]
    return max(numbers) if numbers else None


def echo_works(answer: Field | None) -> bool:
    """Does an answer to ``echo_body`` carry log-probabilities for prompt tokens (not only the generated one)?"""
    if answer is None:
        return False
    try:
        values, _, _, generated = echoed_entries(answer)
    except ServerRequestError:
        return False
    prompt_values = values[:len(values) - generated]
    return len(prompt_values) >= 2 and all(value.value is not None for value in prompt_values[1:])
