"""Loading multiple-choice case challenges from the documented JSONL or CSV format.

Why strict: the journals' cases cannot be redistributed, so every user types or converts their own, and a
silently skipped or mis-parsed row changes an accuracy that may end up in a paper. Every problem is reported
as one line naming the file, the line (JSONL) or row (CSV, counting the header as line 1), and the field.

JSONL, one object per line::

    {"id": "case-01", "case": "...", "question": "...", "options": {"A": "...", "B": "..."}, "answer": "B"}

(``options`` may also be a list, lettered A, B, C, ... in order.)

CSV with a header row: ``id,case,question,A,B,C,D[,E...],answer`` (empty trailing option cells are allowed, so
4- and 5-option items can share a file).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import DataError
from .base import Item
from .datafiles import (
    LETTERS,
    MIN_OPTIONS,
    check_options,
    check_unique_ids,
    csv_records,
    existing_path,
    jsonl_records,
    required_text,
)

CSV_COLUMNS: dict[str, tuple[str, ...]] = {"id": ("id",), "case": ("case",), "question": ("question",),
                                           "answer": ("answer",)}


def load_mcq(path: Path) -> list[Item]:
    """Load items from a .jsonl/.csv file, or from every such file in a directory (sorted by name); an id is
    unique across all of them."""
    path = existing_path(path)
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".jsonl", ".csv")) if path.is_dir() else [path]
    if not files:
        raise DataError(path, "directory holds no .jsonl or .csv files")
    items = [item for file in files for item in _load_file(file)]
    check_unique_ids(items, "id")
    return items


def _load_file(path: Path) -> list[Item]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _load_jsonl(path)
    if suffix == ".csv":
        return _load_csv(path)
    raise DataError(path, f"unsupported file type '{suffix}' (expected .jsonl or .csv)")


def _load_jsonl(path: Path) -> list[Item]:
    items = []
    for number, record in jsonl_records(path):
        options = record.get("options")
        if isinstance(options, list):
            if len(options) > len(LETTERS):
                raise DataError(path, f"expected {MIN_OPTIONS}-{len(LETTERS)} options, got {len(options)}",
                                line=number, field="options")
            options = {LETTERS[i]: text for i, text in enumerate(options)}
        items.append(_make_item(path, number, record, options))
    return items


def _load_csv(path: Path) -> list[Item]:
    columns, rows = csv_records(path, CSV_COLUMNS)
    header = list(rows[0][1])
    letters = [c for c in LETTERS if c in header]
    if letters != list(LETTERS[: len(letters)]) or len(letters) < MIN_OPTIONS:
        raise DataError(path, "CSV header needs option columns A, B, ... in sequence (at least A and B)", line=1)
    items = []
    for number, row in rows:
        record = {name: row[column] for name, column in columns.items() if column}  # "ID" read as "id"
        options = {letter: row[letter] for letter in letters if row[letter].strip()}
        items.append(_make_item(path, number, record, options))
    return items


def _make_item(path: Path, line: int, record: dict[str, Any], options: Any) -> Item:
    item_id = required_text(path, line, record, "id", numbers=True)  # a numeric id is its text
    case, question = required_text(path, line, record, "case"), required_text(path, line, record, "question")
    if not isinstance(options, dict):
        raise DataError(path, "expected an object of lettered options (or a list)", line=line, field="options")
    options = check_options(path, line, options, "options")
    answer = required_text(path, line, record, "answer").upper().strip("() .")
    if answer not in options:
        letters = list(options)
        raise DataError(path, f"answer '{record.get('answer')}' is not one of the options "
                        f"{letters[0]}-{letters[-1]}", line=line, field="answer")
    payload = {"case": case, "question": question, "options": options, "answer": answer}
    return Item(id=item_id, payload=payload, source=f"{path}:{line}")
