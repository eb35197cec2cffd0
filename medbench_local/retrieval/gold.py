"""A gold file for ``index eval``: which passage (or document) answers which item, when the items themselves do
not carry a ``gold_passage`` field (the shipped samples do not: their bytes are part of every result's identity).

CSV with the columns ``item_id`` and ``gold_passage``; one line naming file, line and field for anything else.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from ..errors import DataError
from ..gates.files import read_input

MAX_GOLD_BYTES = 16 * 1024 * 1024


def read_gold(path: Path) -> dict[str, str]:
    data = read_input(path, lambda reason: DataError(path, reason), max_bytes=MAX_GOLD_BYTES)
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        raise DataError(path, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        fields = reader.fieldnames or []
        for needed in ("item_id", "gold_passage"):
            if needed not in fields:
                raise DataError(path, f"missing column (the header has: {', '.join(fields) or 'nothing'})", 1,
                                needed)
        gold: dict[str, str] = {}
        for number, row in enumerate(reader, start=2):
            item, passage = row.get("item_id") or "", row.get("gold_passage") or ""
            if not item.strip() or not passage.strip():
                raise DataError(path, "empty", number, "item_id" if not item.strip() else "gold_passage")
            if item in gold:
                raise DataError(path, f"item '{item[:60]}' is listed twice", number, "item_id")
            gold[item] = passage.strip()
    except csv.Error as exc:
        raise DataError(path, f"not readable as CSV ({exc})") from None
    return gold
