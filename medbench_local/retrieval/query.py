"""From an item to an FTS5 query: which text of the item is the query, and how user text becomes a query that is
never an FTS5 syntax error.

Why sanitise: the query is a case vignette or a question written by anyone. FTS5's query language gives meaning
to quotes, ``AND``/``OR``/``NOT``/``NEAR``, ``*``, ``^``, ``:``, parentheses and ``-``; a vignette with
"7.3 mmol/L" or "Don't" would otherwise be a syntax error or, worse, a different query. So the text is cut into
words (letters and digits, as FTS5's unicode61 tokenizer cuts them), each word is quoted as an FTS5 string, and
the words are OR-joined: BM25 then ranks passages by how many rare query words they hold.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

#: ``query = ...`` of an arm: what of the item is searched.
QUERY_MODES: tuple[str, ...] = ("question", "case+question")
MAX_QUERY_TERMS = 256
_WORD = re.compile(r"[^\W_]+", re.UNICODE)

# Payload fields that hold an item's question and its case, by task family (case challenges, MedQA-style MCQ,
# PubMedQA, MedNLI's hypothesis/premise, free-text tasks). The first present string is taken.
QUESTION_FIELDS: tuple[str, ...] = ("question", "hypothesis", "sentence2", "query", "prompt")
CASE_FIELDS: tuple[str, ...] = ("case", "context", "premise", "sentence1", "text", "document", "note")


def query_terms(text: str) -> list[str]:
    """The distinct words of ``text``, lower-cased, in order of first appearance, at most MAX_QUERY_TERMS."""
    seen: dict[str, None] = {}
    for word in _WORD.findall(text):
        seen.setdefault(word.lower(), None)
        if len(seen) >= MAX_QUERY_TERMS:
            break
    return list(seen)


def fts_query(text: str) -> str:
    """An FTS5 MATCH expression for free text: its words quoted and OR-joined ("" when it has no word). No input
    text can make it a syntax error: a quoted FTS5 string may hold anything but an unpaired double quote, and
    the words hold none."""
    return " OR ".join(f'"{term}"' for term in query_terms(text))


def _first_text(payload: Mapping[str, Any], fields: tuple[str, ...]) -> str:
    for field in fields:
        value = payload.get(field)
        if isinstance(value, str) and value.strip():
            return value
    return ""


def query_text(payload: Mapping[str, Any], mode: str, fallback: str) -> str:
    """What an item is searched with. ``question``: its question field; ``case+question``: its case and its
    question. ``fallback`` (the task's rendered user prompt) is used when the payload has neither field, so every
    task can be retrieved for."""
    if mode not in QUERY_MODES:
        raise ValueError(f"unknown query mode {mode!r}")
    question = _first_text(payload, QUESTION_FIELDS)
    case = _first_text(payload, CASE_FIELDS) if mode == "case+question" else ""
    text = " ".join(part for part in (case, question) if part)
    return text or fallback
