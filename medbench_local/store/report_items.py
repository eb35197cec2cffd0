"""The per-item rows the HTML report reads: one evaluation's items with prompt, output and verdict.

Why a module of its own: the report's item browser needs every item of every paired evaluation, not only the
disagreements ``show`` lists, and all SQL lives in store/.
"""

from __future__ import annotations

from typing import Any

import sqlite_utils


def evaluation_item_rows(db: sqlite_utils.Database, evaluation: str) -> dict[str, dict[str, Any]]:
    """item key -> {item_id, payload, prompt, output, outcome, extracted, gold, metrics}, in generation order
    (payload and metrics are the stored JSON text; prompt is a SHA-256 when inputs were not stored)."""
    return {row["item"]: row for row in db.query(
        "select s.item, s.generation_id, i.item_id, i.payload, g.prompt, g.output, s.outcome, s.extracted, s.gold, "
        "s.metrics from scores s join generations g on g.id = s.generation_id join items i on i.key = s.item "
        "where s.evaluation = ? order by g.id", [evaluation])}
