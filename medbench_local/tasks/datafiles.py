"""Reading dataset files the same way for every task: UTF-8 (BOM tolerated), one clear error line otherwise;
and the record checks loaders share (required text fields, multiple-choice options, finding the file in a folder).

Why shared: every loader must turn an unreadable, non-UTF-8 or empty file into the same kind of DataError
(file, line, what was expected), so the hostile-input guarantees hold for every task alike. The same goes for
the bounds: only regular files are opened (a FIFO would block forever, a device never end), JSON nested
deeper than ``MAX_JSON_DEPTH`` is refused instead of ending in a RecursionError, and CSV cells may be as long
as a real discharge letter (``MAX_CSV_FIELD``, above the csv module's default of 131,072 characters).
"""

from __future__ import annotations

import csv
import json
import stat
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import DataError

LETTERS = string.ascii_uppercase[:10]  # option letters A-J
MIN_OPTIONS = 2
MAX_JSON_DEPTH = 64                 # real data files nest 2-5 levels
MAX_CSV_FIELD = 16 * 1024 * 1024    # one CSV cell (a long discharge letter is ~0.5 MB)


def require_regular_file(path: Path) -> None:
    """DataError unless ``path`` is a regular file (after symlinks), checked without opening it."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise DataError(path, "no such file or directory") from None
    except OSError as exc:
        raise DataError(path, f"cannot read ({exc.strerror})") from None
    if stat.S_ISDIR(info.st_mode):
        raise DataError(path, "is a folder, expected a file")
    if not stat.S_ISREG(info.st_mode):
        raise DataError(path, "not a regular file (a pipe, socket or device); give a data file")


def read_text(path: Path) -> str:
    """The file's text; DataError naming the line of the first invalid byte, or an empty file."""
    require_regular_file(path)
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


def parse_json(path: Path, text: str, line: int | None = None, **options: Any) -> Any:
    """``json.loads`` with every failure as one DataError: syntax (with its line), numbers Python refuses
    (integers of thousands of digits), and nesting deeper than MAX_JSON_DEPTH (checked after parsing, without
    recursion; a nesting deep enough to exhaust the parser's recursion is caught as such)."""
    try:
        value = json.loads(text, **options)
    except json.JSONDecodeError as exc:
        where = line if line is not None else exc.lineno
        raise DataError(path, f"malformed JSON ({exc.msg} at column {exc.colno})", line=where) from None
    except RecursionError:
        raise DataError(path, f"JSON nested too deeply (more than {MAX_JSON_DEPTH} levels)", line=line) from None
    except ValueError as exc:  # e.g. "Exceeds the limit (4300 digits) for integer string conversion"
        raise DataError(path, f"malformed JSON ({str(exc).splitlines()[0][:200]})", line=line) from None
    if json_depth(value) > MAX_JSON_DEPTH:
        raise DataError(path, f"JSON nested too deeply (more than {MAX_JSON_DEPTH} levels)", line=line)
    return value


def json_depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value (a scalar is 0, ``[]`` is 1), computed iteratively."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        current, depth = stack.pop()
        if isinstance(current, dict):
            children: Any = current.values()
        elif isinstance(current, list):
            children = current
        else:
            continue
        deepest = max(deepest, depth + 1)
        if deepest > MAX_JSON_DEPTH:
            return deepest
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


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
        records.append((number, object_record(path, number, parse_json(path, line, line=number))))
    if not records:
        raise DataError(path, "file holds no records")
    return records


class _LongFieldReader:
    """A csv.reader whose cells may be up to MAX_CSV_FIELD long.

    Why a wrapper: ``csv.field_size_limit`` is process-wide state. It is raised only while this reader
    parses a row and restored right after, so other code keeps the default it expects.
    """

    def __init__(self, reader: Any):
        self._reader = reader

    @property
    def line_num(self) -> int:
        return int(self._reader.line_num)

    def __iter__(self) -> Iterator[list[str]]:
        return self

    def __next__(self) -> list[str]:
        previous = csv.field_size_limit(MAX_CSV_FIELD)
        try:
            return next(self._reader)
        finally:
            csv.field_size_limit(previous)


def csv_reader(lines: Any, **options: Any) -> _LongFieldReader:
    """``csv.reader(lines, **options)`` that accepts cells up to MAX_CSV_FIELD characters (a longer cell is a
    csv.Error, reported by the loaders as malformed CSV with its line)."""
    return _LongFieldReader(csv.reader(lines, **options))


# ---------------------------------------------------------------------------------------------------------
# records: required fields, multiple-choice options, finding the file in a folder

def required_text(path: Path, line: int | None, record: dict[str, Any], name: str, where: str = "") -> str:
    """A record's field that must be non-empty text, stripped; else one DataError naming file, line and field."""
    value = record.get(name)
    if not isinstance(value, str) or not value.strip():
        problem = "missing or empty" if value in (None, "") else f"expected text, got {value!r}"
        raise DataError(path, where + problem, line=line, field=name)
    return value.strip()


def check_options(path: Path, line: int | None, options: dict[str, Any], field: str) -> dict[str, str]:
    """Multiple-choice options: MIN_OPTIONS to 10, lettered A, B, C, ... without gaps, each non-empty text."""
    if len(options) < MIN_OPTIONS or len(options) > len(LETTERS):
        raise DataError(path, f"expected {MIN_OPTIONS}-{len(LETTERS)} options, got {len(options)}",
                        line=line, field=field)
    letters = list(options)
    if letters != list(LETTERS[: len(letters)]):
        raise DataError(path, "option letters must run A, B, C, ... without gaps, got "
                        f"{', '.join(map(str, letters))}", line=line, field=field)
    for letter, text in options.items():
        if not isinstance(text, str) or not text.strip():
            raise DataError(path, f"option {letter} is empty or not text", line=line, field=field)
    return {k: v.strip() for k, v in options.items()}


def pick_file(folder: Path, preferred: tuple[str, ...], suffixes: tuple[str, ...], what: str) -> Path:
    """In a data folder: the first ``preferred`` file that exists, else the only file with one of ``suffixes``."""
    for name in preferred:
        if (folder / name).is_file():
            return folder / name
    candidates = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
    if len(candidates) == 1:
        return candidates[0]
    found = ", ".join(p.name for p in candidates) or "none"
    raise DataError(folder, f"folder holds no {' or '.join(preferred)} and not exactly one {what} file "
                    f"(found: {found}); pass the file itself with --data")


def existing_path(path: Path) -> Path:
    """``path`` as a Path, or one DataError when nothing is there."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, "no such file or directory")
    return path
