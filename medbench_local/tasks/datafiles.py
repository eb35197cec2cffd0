"""Reading dataset files the same way for every task: UTF-8 (BOM tolerated), one clear error line otherwise.

Why shared: every loader must turn an unreadable, non-UTF-8 or empty file into the same kind of DataError
(file, line, what was expected), so the hostile-input guarantees hold for every task alike.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import DataError


def read_text(path: Path) -> str:
    """The file's text; DataError naming the line of the first invalid byte, or an empty file."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(path, f"cannot read ({exc.strerror})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(path, f"not UTF-8 text (invalid byte 0x{raw[exc.start]:02x})", line=line) from None
    if not text.strip():
        raise DataError(path, "file is empty")
    return text


def object_record(path: Path, line: int, value: Any) -> dict[str, Any]:
    """``value`` if it is a JSON object, else a DataError naming the line."""
    if not isinstance(value, dict):
        raise DataError(path, f"expected a JSON object, got {type(value).__name__}", line=line)
    return value


def jsonl_records(path: Path, text: str | None = None) -> list[tuple[int, dict[str, Any]]]:
    """(line, object) for every non-blank line of a JSON Lines file."""
    text = read_text(path) if text is None else text
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(path, f"malformed JSON ({exc.msg} at column {exc.colno})", line=number) from None
        records.append((number, object_record(path, number, value)))
    if not records:
        raise DataError(path, "file holds no records")
    return records
