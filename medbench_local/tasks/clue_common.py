"""Helpers shared by the CLUE text tasks (MedNLI, MeQSum, Problem Summary, MeDiSumQA).

What lives here and why (reading the released files is not CLUE-specific: ``tasks/datafiles.py``, shared by
every task):

* **Few-shot selection exactly as the CLUE reference** (docs/study-reference.md#the-clue-pipeline): the first
  ``k`` records of the file are the few-shot examples and are *not* evaluated; MeDiSumQA shuffles first with
  ``random.seed(1)``, which we reproduce with ``random.Random(1).shuffle(records)`` (the module-level ``random``
  functions are methods of one hidden ``random.Random`` instance, so both give the same permutation, and ours
  leaves the global random state alone). The permutation depends only on the number of records.
* **Output clean-up exactly as the reference**: :func:`clean_output` (MedNLI, MeQSum, Problem Summary) and
  :func:`strip_output` (MeDiSumQA). The raw output is stored untouched by the engine/store; only the score
  uses the cleaned text (kept in ``Score.extracted``).
* **Stop strings for plain-text (base-model) prompts**: the engine joins prompt blocks with blank lines, so a
  base model that has finished its answer tends to write the next *fake* example, starting with the first
  line of our user template. :func:`user_block_stop` turns that line into a stop string. (A blank line is not
  a safe stop: summaries and answers may legitimately contain one.)
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import DataError
from .base import Item, TaskData
from .prompts import PromptTemplate

#: The reference's "self-prompting" clean-up (TIO-IKIM/CLUE eval scripts, 2024): a fresh system prompt, a
#: Llama-2/Mistral ``[INST]`` or a Phi-3/Zephyr ``<|user|>`` marker and everything after it *on the same
#: line* is deleted. No DOTALL flag, so ``.*`` stops at the end of the line: text on later lines is kept.
CLEANUP_PATTERN = re.compile(r"(You are an AI.*)|(\[INST\].*)|((<\|user\|>).*)")
CLEANUP_VERSION = "clue-2024-regex"   # recorded in task settings
STRIP_VERSION = "clue-2024-strip"

#: MeDiSumQA: ``random.seed(1); random.shuffle(data)`` before the few-shot example is taken.
MEDISUMQA_SHUFFLE_SEED = 1


def clean_output(text: str) -> str:
    """The reference post-processing for MedNLI, MeQSum and Problem Summary: ``re.sub`` of
    :data:`CLEANUP_PATTERN` with ``""`` (line-local, nothing else is stripped or changed)."""
    return CLEANUP_PATTERN.sub("", text)


def strip_output(text: str) -> str:
    """The reference post-processing for MeDiSumQA: ``str.strip()`` and nothing else."""
    return text.strip()


def seeded_shuffle(records: list[Any], seed: int = MEDISUMQA_SHUFFLE_SEED) -> list[Any]:
    """Shuffle a copy of ``records`` exactly as ``random.seed(seed); random.shuffle(records)`` would."""
    shuffled = list(records)
    random.Random(seed).shuffle(shuffled)
    return shuffled


def split_shots(path: Path, items: Sequence[Item], k: int) -> TaskData:
    """First ``k`` items are the few-shot examples (never evaluated), the rest are evaluated."""
    if len(items) <= k:
        raise DataError(path, f"found {len(items)} record(s); need more than {k}: the first {k} are the "
                        "few-shot examples and are not evaluated")
    return TaskData(items=list(items[k:]), shots=tuple(items[:k]))


def user_block_stop(template: PromptTemplate) -> tuple[str, ...]:
    """Stop string marking the start of a next (fake) user block in a plain-text prompt.

    It is the first line of the user template's literal text before any placeholder, preceded by a newline,
    e.g. ``"\\n=== PATIENT MESSAGE ==="``. Derived from the template so that a ``--prompts`` override keeps a
    matching stop. Too short or missing (template starts with a placeholder) -> no stop string.
    """
    literal = ""
    for text, field, _, _ in string.Formatter().parse(template.user):
        literal += text
        if field is not None:
            break
    first_line = literal.strip().split("\n", 1)[0].strip() if literal.strip() else ""
    return ("\n" + first_line,) if len(first_line) >= 4 else ()
