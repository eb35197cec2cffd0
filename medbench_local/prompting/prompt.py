"""The model-neutral prompt a task builds and an engine renders.

Why here and not in engine/: the prompt is what passes from tasks to engines, and it is also what the checks
below the engines need (modelfiles renders a probe prompt to check a chat template before any model loads).
Living in ``prompting``, the lowest layer that knows about prompts, it can be used by all of them without
anything below engine/ importing engine/.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Prompt:
    """A model-neutral prompt. ``shots`` are few-shot (user, assistant) turns before ``user``.

    ``plan``: what the task's prompt builder decided for this item and its scorer needs (LongHealth's document
    assembly). Engines ignore it; the runner hands it to ``task.score``, so per-item state travels with the
    item instead of living in the task object."""

    system: str
    user: str
    shots: tuple[tuple[str, str], ...] = ()
    answer_prefix: str = ""
    plan: Any = field(default=None, compare=False, repr=False)
