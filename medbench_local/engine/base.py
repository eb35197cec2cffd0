"""The request vocabulary shared by tasks and engines.

Borrowed from lm-evaluation-harness: a task asks for ``generate_until`` (text up to a stop string or a token
budget) or for ``loglikelihood`` (how probable each of a few continuations is after one context: multiple-choice
scoring without reading free text). A task describes *what* to ask in a model-neutral ``Prompt`` (system text, few-shot turns, the
question, and an answer prefix); the engine owns *how* that becomes tokens, because only it knows the model's
chat template. The rendered text is returned so that the exact prompt can be stored.
``Prompt`` itself lives in ``prompting`` (below engine/, because modelfiles and config need it too) and is
re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from ..prompting import Prompt  # re-exported: engines and their callers speak of requests with it


@dataclass(frozen=True)
class GenerateRequest:
    """generate_until: greedy text from ``prompt`` until a stop string, end of turn, or ``max_tokens``.
    ``grammar`` (GBNF) restricts what may be generated (``run --scoring constrained``)."""

    prompt: Prompt
    max_tokens: int
    stop: tuple[str, ...] = ()
    grammar: str | None = None


@dataclass(frozen=True)
class LoglikelihoodRequest:
    """loglikelihood: the log-probability of each continuation right after the rendered ``prompt`` (the
    context, answer prefix included). Continuations are text, e.g. " A" or " ENTAILMENT"."""

    prompt: Prompt
    continuations: tuple[str, ...]


@dataclass(frozen=True)
class ContinuationScore:
    """One continuation's log-likelihood, with what the usual normalisations need."""

    text: str
    logprob: float      # sum over its tokens, natural log
    tokens: int         # how many tokens it has after the context (at least 1)
    bytes: int          # UTF-8 length of the text (lm-eval's acc_norm divides by this)
    greedy: bool        # every token is the argmax after the tokens before it

    @property
    def mean_logprob(self) -> float:
        return self.logprob / self.tokens

    @property
    def logprob_per_byte(self) -> float:
        return self.logprob / max(self.bytes, 1)


@dataclass(frozen=True)
class Loglikelihoods:
    """What ``loglikelihood`` returns: one score per continuation, in request order, plus the accounting."""

    prompt_text: str
    scores: tuple[ContinuationScore, ...]
    prompt_tokens: int             # context tokens (after truncation)
    truncated_tokens: int
    prompt_tokens_evaluated: int | None  # context tokens decoded (the rest came from the KV cache); None:
    #                                     a server's own cache decides, and it does not say
    continuation_tokens_evaluated: int
    seconds: float
    prompt_ms: float | None = None
    server_requests: int | None = None  # HTTP requests a served engine made for this item (None: in-process)
    server_tokens: int | None = None    # tokens it sent to be scored (a server's prefix cache may skip some)


@dataclass(frozen=True)
class Generation:
    """What came back, with the accounting needed to defend the number later."""

    prompt_text: str          # the full rendered prompt, before any truncation
    output: str               # raw generated text (stop string excluded)
    prompt_tokens: int        # tokens actually evaluated (after truncation)
    truncated_tokens: int     # tokens dropped from the left to fit n_ctx - max_tokens
    completion_tokens: int
    finish_reason: str        # "stop" (end of turn / stop string) or "length" (max_tokens reached)
    seconds: float            # wall time of the whole call
    prompt_ms: float | None = None      # llama.cpp's own timing of prompt processing
    generation_ms: float | None = None  # llama.cpp's own timing of token generation
    prompt_tokens_evaluated: int | None = None  # prompt tokens decoded; the others were reused from the KV cache
    server_requests: int | None = None  # served log-likelihood: requests made and tokens sent for this item
    server_tokens: int | None = None


@dataclass(frozen=True)
class ModelInfo:
    """Identity and settings of a loaded model, recorded with every evaluation."""

    model_id: str
    path: str
    sha256: str
    size_bytes: int
    prompt_mode: str
    chat_template: str | None
    chat_template_sha256: str | None
    metadata: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)


class Engine(Protocol):
    info: ModelInfo
    settings: dict[str, Any]

    def render(self, prompt: Prompt) -> str: ...

    def identity(self) -> dict[str, Any]:
        """What decides this engine's outputs, for the evaluation key (engine/identity.py)."""
        ...

    def count_tokens(self, text: str) -> int: ...

    def generate(self, request: GenerateRequest) -> Generation: ...

    def loglikelihood(self, request: LoglikelihoodRequest) -> Loglikelihoods: ...

    def close(self) -> None: ...
