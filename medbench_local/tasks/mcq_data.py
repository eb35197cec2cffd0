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

import csv
import io
from pathlib import Path
from typing import Any

from ..errors import DataError
from .base import Item
from .datafiles import LETTERS, MIN_OPTIONS, csv_reader, jsonl_records, read_text, required_text


def load_mcq(path: Path) -> list[Item]:
    """Load items from a .jsonl/.csv file, or from every such file in a directory (sorted by name)."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, "no such file or directory")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".jsonl", ".csv")) if path.is_dir() else [path]
    if not files:
        raise DataError(path, "directory holds no .jsonl or .csv files")
    items: list[Item] = []
    seen: dict[str, str] = {}
    for file in files:
        loaded = _load_file(file)
        for item in loaded:
            if item.id in seen:
                raise DataError(file, f"duplicate id '{item.id}' (first seen at {seen[item.id]})",
                                line=int(item.source.rsplit(":", 1)[1]), field="id")
            seen[item.id] = item.source
        items.extend(loaded)
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
                raise DataError(path, f"at most {len(LETTERS)} options supported", line=number, field="options")
            options = {LETTERS[i]: text for i, text in enumerate(options)}
        items.append(_make_item(path, number, record, options))
    return items


def _load_csv(path: Path) -> list[Item]:
    reader = csv_reader(io.StringIO(read_text(path), newline=""))
    try:
        header = [h.strip() for h in next(reader)]
    except csv.Error as exc:
        raise DataError(path, f"malformed CSV ({exc})", line=1) from None
    missing = [name for name in ("id", "case", "question", "answer") if name not in header]
    if missing:
        raise DataError(path, f"CSV header lacks column '{missing[0]}' (expected id,case,question,A,B,...,answer)",
                        line=1, field=missing[0])
    letters = [c for c in LETTERS if c in header]
    if letters != list(LETTERS[: len(letters)]) or len(letters) < MIN_OPTIONS:
        raise DataError(path, "CSV header needs option columns A, B, ... in sequence (at least A and B)", line=1)
    items = []
    try:
        for row in reader:
            number = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise DataError(path, f"expected {len(header)} columns, found {len(row)}", line=number)
            record: dict[str, Any] = dict(zip(header, row))
            options = {letter: record[letter] for letter in letters if record[letter].strip()}
            items.append(_make_item(path, number, record, options))
    except csv.Error as exc:
        raise DataError(path, f"malformed CSV ({exc})", line=reader.line_num) from None
    return items


def _make_item(path: Path, line: int, record: dict[str, Any], options: Any) -> Item:
    def text_field(name: str) -> str:
        value = record.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and name == "id":
            return required_text(path, line, {name: str(value)}, name)  # a numeric id is its text
        return required_text(path, line, record, name)

    item_id, case, question = text_field("id"), text_field("case"), text_field("question")
    if not isinstance(options, dict) or not options:
        raise DataError(path, "expected an object of lettered options (or a list)", line=line, field="options")
    letters = list(options)
    if letters != list(LETTERS[: len(letters)]):
        raise DataError(path, f"option letters must run A, B, C, ... without gaps, got {', '.join(map(str, letters))}",
                        line=line, field="options")
    if len(letters) < MIN_OPTIONS:
        raise DataError(path, f"need at least {MIN_OPTIONS} options, got {len(letters)}", line=line, field="options")
    for letter, text in options.items():
        if not isinstance(text, str) or not text.strip():
            raise DataError(path, f"option {letter} is empty or not text", line=line, field="options")
    answer = text_field("answer").upper().strip("() .")
    if answer not in options:
        raise DataError(path, f"answer '{record.get('answer')}' is not one of the options "
                        f"{letters[0]}-{letters[-1]}", line=line, field="answer")
    payload = {"case": case, "question": question,
               "options": {k: v.strip() for k, v in options.items()}, "answer": answer}
    return Item(id=item_id, payload=payload, source=f"{path}:{line}")
