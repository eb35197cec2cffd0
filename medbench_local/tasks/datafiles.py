"""Reading dataset files the same way for every task: UTF-8 (BOM tolerated), one clear error line otherwise.

Why shared: every loader must turn an unreadable, non-UTF-8 or empty file into the same kind of DataError
(file, line, what was expected), so the hostile-input guarantees hold for every task alike.
"""

from __future__ import annotations

from pathlib import Path

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
