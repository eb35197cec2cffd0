"""The request vocabulary shared by tasks and engines.

Borrowed from lm-evaluation-harness: a task asks for ``generate_until`` (text up to a stop string or a token
budget). A task describes *what* to ask in a model-neutral ``Prompt`` (system text, few-shot turns, the
question, and an answer prefix); the engine owns *how* that becomes tokens, because only it knows the model's
chat template. The rendered text is returned so that the exact prompt can be stored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Prompt:
    """A model-neutral prompt. ``shots`` are few-shot (user, assistant) turns before ``user``."""

    system: str
    user: str
    shots: tuple[tuple[str, str], ...] = ()
    answer_prefix: str = ""


@dataclass(frozen=True)
class GenerateRequest:
    """generate_until: greedy text from ``prompt`` until a stop string, end of turn, or ``max_tokens``."""

    prompt: Prompt
    max_tokens: int
    stop: tuple[str, ...] = ()


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

    def count_tokens(self, text: str) -> int: ...

    def generate(self, request: GenerateRequest) -> Generation: ...

    def close(self) -> None: ...
