"""The text of an item as a model would have met it on the web or in a training set: plain text, no chat
template, no instruction: the case, the question, the options and the gold answer.

Why one generic rendering over the payload instead of one per task: every task's payload is a flat JSON object
(``tasks/values.py``: Item) whose text fields are strings and whose options are a letter -> text object; the
benchmark files that circulate (MedQA's JSONL, PubMedQA's JSON, the case challenges' CSVs) hold the same fields.
So the fields are written in payload order, options as "A. text" lines, and the gold answer last as
"Answer: B. text". Fields that are bookkeeping (numbers, lists, ids) are left out. ``TEXT_VERSION`` is part of
every stored probe's identity: change the rendering, change the version.
"""

from __future__ import annotations

from typing import Any

TEXT_VERSION = "plain-1"
#: Payload keys that hold the gold answer: written last, after the options, as "Answer: ...".
ANSWER_KEYS = ("answer", "gold", "gold_label", "label")
#: Payload keys that are bookkeeping, never text a model would have read.
SKIPPED_KEYS = frozenset({"id", "patient", "correct", "answer_docs", "source"})


def _options_lines(options: dict[str, Any]) -> list[str]:
    return [f"{letter}. {text}" for letter, text in options.items() if isinstance(text, str)]


def item_text(payload: dict[str, Any]) -> str:
    """The item rendered as plain text (see the module docstring); deterministic for a payload."""
    parts: list[str] = []
    options = payload.get("options") if isinstance(payload.get("options"), dict) else None
    for key, value in payload.items():
        if key in SKIPPED_KEYS or key in ANSWER_KEYS or key == "options":
            continue
        if isinstance(value, str) and value.strip():
            parts.append(value.strip())
    if options:
        parts.append("\n".join(_options_lines(options)))
    for key in ANSWER_KEYS:
        answer = payload.get(key)
        if isinstance(answer, str) and answer.strip():
            shown = answer.strip()
            if options and isinstance(options.get(shown), str):
                shown = f"{shown}. {options[shown]}"
            parts.append(f"Answer: {shown}")
            break
    return "\n\n".join(parts)
