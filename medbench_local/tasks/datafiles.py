"""The one data-file layer every task reads through: finding the file in a folder; JSON, JSON Lines, JSON
arrays, keyed JSON objects, CSV (with or without a header row) and XLSX records, each with the line it starts on;
required text fields, multiple-choice options and duplicate ids checked the same way for every task.

Why shared: every loader must turn an unreadable, non-UTF-8 or empty file into the same kind of DataError
(file, line, what was expected), so the hostile-input guarantees hold for every task alike. The same goes for
the bounds: only regular files are opened (a FIFO would block forever, a device never end), JSON nested
deeper than ``MAX_JSON_DEPTH`` is refused instead of ending in a RecursionError, and CSV cells may be as long
as a real discharge letter (``MAX_CSV_FIELD``, above the csv module's default of 131,072 characters).
"""

from __future__ import annotations

import csv
import io
import json
import re
import string
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..gates.files import read_input, regular_input
from .values import Item

LETTERS = string.ascii_uppercase[:10]  # option letters A-J
MIN_OPTIONS = 2
MAX_JSON_DEPTH = 64                 # real data files nest 2-5 levels
MAX_CSV_FIELD = 16 * 1024 * 1024    # one CSV cell (a long discharge letter is ~0.5 MB)


def require_regular_file(path: Path) -> None:
    """DataError unless ``path`` is a regular file (after symlinks), checked without opening it (files gate)."""
    regular_input(path, lambda reason: DataError(path, reason))


def read_text(path: Path) -> str:
    """The file's text; DataError naming the line of the first invalid byte, or an empty file."""
    raw = read_input(path, lambda reason: DataError(path, reason))
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
        if line is None and text[:exc.pos].strip() == "" and (problem := not_json(path, text, "JSON")) is not None:
            raise problem from None  # not JSON at all (a CSV, say): say what it looks like
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


def json_kind(value: Any) -> str:
    """What a parsed value is, in JSON words (for messages: "expected text, got a list")."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    kinds = {dict: "an object", list: "a list", str: "a string", type(None): "null"}
    return kinds.get(type(value), type(value).__name__)


def object_record(path: Path, line: int | None, value: Any) -> dict[str, Any]:
    """``value`` if it is a JSON object, else a DataError naming the line."""
    if not isinstance(value, dict):
        raise DataError(path, f"expected a JSON object, got {json_kind(value)}", line=line)
    return value


def not_json(path: Path, text: str, expected: str = "JSON Lines (one JSON object per line)") -> DataError | None:
    """A DataError saying what the file looks like when it is plainly not JSON (a CSV given where JSON Lines is
    expected, say), instead of a parser's "Expecting value"; None when it starts like JSON."""
    number, first = next(((n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip()), (1, ""))
    if first.lstrip().startswith(("{", "[")):
        return None
    looks = "CSV (comma-separated columns)" if "," in first else "tab-separated columns" if "\t" in first \
        else "plain text"
    shown = first.strip()[:80] + ("…" if len(first.strip()) > 80 else "")
    return DataError(path, f"expected {expected}, like {{\"id\": \"1\", ...}}; this file looks like {looks}, its "
                     f"first line is {shown!r} (each task's format: 'medbench-local tasks list')", line=number)


def jsonl_records(path: Path, text: str | None = None) -> list[tuple[int, dict[str, Any]]]:
    """(line, object) for every non-blank line of a JSON Lines file."""
    text = read_text(path) if text is None else text
    if (problem := not_json(path, text)) is not None:
        raise problem
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


def json_records(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """A JSON array of objects (each with the line it starts on), or JSON Lines when the file does not start
    with ``[``. Either way one object per record."""
    text = read_text(path)
    if not text.lstrip().startswith("["):
        if len([line for line in text.splitlines() if line.strip()]) > 1:
            try:
                whole = json.loads(text)
            except (ValueError, RecursionError):  # not one JSON value: read as JSON Lines below
                whole = None
            if whole is not None:  # one pretty-printed JSON value: not JSON Lines
                raise DataError(path, f"expected a JSON array of records (or JSON Lines), got one JSON "
                                f"{'object' if isinstance(whole, dict) else type(whole).__name__}", line=1)
        return jsonl_records(path, text)
    data = parse_json(path, text)
    if not data:
        raise DataError(path, "the JSON array is empty")
    # element start lines, found by decoding the array element by element (same parser, same result)
    decoder = json.JSONDecoder()
    records = []
    index, line = text.index("[") + 1, text.count("\n", 0, text.index("[")) + 1
    for value in data:
        start = index
        while text[index] in " \t\r\n,":
            index += 1
        line += text.count("\n", start, index)
        _, end = decoder.raw_decode(text, index)
        records.append((line, object_record(path, line, value)))
        line += text.count("\n", index, end)
        index = end
    return records


def json_object_file(path: Path, what: str) -> tuple[str, dict[str, Any]]:
    """A JSON file whose top level is an object keyed by id (PubMedQA's PMIDs, LongHealth's patients): its text
    and the object. A key given twice is a DataError (``json.loads`` would silently keep the last one): at the
    top level with the line of its second occurrence, field = the key."""
    text = read_text(path)
    duplicates: list[str] = []

    def keep_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in pairs:
            if key in result:
                duplicates.append(key)
            result[key] = value
        return result

    data = parse_json(path, text, object_pairs_hook=keep_duplicates)
    if not isinstance(data, dict):
        raise DataError(path, f"expected a JSON object of {what}, got {json_kind(data)}", line=1)
    if duplicates:
        key = duplicates[0]
        if key not in data:  # inside an item: its place cannot be told apart from the same key in other items
            raise DataError(path, f"duplicate key '{key}' inside an item object", field=key)
        starts = [m.start() for m in _STRING.finditer(text) if m.group(1) == key and _COLON.match(text, m.end())]
        line = text.count("\n", 0, starts[1]) + 1 if len(starts) > 1 else None
        raise DataError(path, f"duplicate key '{key}'", line=line, field=key)
    if not data:
        raise DataError(path, f"no {what} (empty object)", line=1)
    return text, data


_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')  # a JSON string token; scanning from the start stays aligned
_COLON = re.compile(r"\s*:")


def key_lines(text: str) -> dict[str, int]:
    """Line of the first occurrence of every object key, in one pass (for error messages and item sources)."""
    lines: dict[str, int] = {}
    line, pos = 1, 0
    for match in _STRING.finditer(text):
        if _COLON.match(text, match.end()):
            line += text.count("\n", pos, match.start())
            pos = match.start()
            lines.setdefault(match.group(1), line)
    return lines


def csv_rows(path: Path, **options: Any) -> Iterator[tuple[int, list[str]]]:
    """(first physical line, cells) for every non-blank row of a CSV file (a quoted cell may span lines); a
    csv.Error is a DataError naming the line where the bad record starts."""
    reader = csv_reader(io.StringIO(read_text(path), newline=""), **options)
    start = 1
    try:
        for row in reader:
            line, start = start, reader.line_num + 1
            if any(cell.strip() for cell in row):
                yield line, row
    except csv.Error as exc:
        raise DataError(path, f"malformed CSV ({exc})", line=start) from None


def csv_records(path: Path, wanted: Mapping[str, Sequence[str]], optional: Iterable[str] = ()
                ) -> tuple[dict[str, str | None], list[tuple[int, dict[str, str]]]]:
    """Columns found for ``wanted`` (see :func:`match_columns`; checked before any row is read) and (first
    line of the row, {column: cell}) for every non-empty row of a CSV file with a header row."""
    rows_in_file = csv_rows(path)
    header_line, header = next(rows_in_file, (1, []))
    header = [h.strip() for h in header]
    columns = match_columns(path, header, wanted, optional, line=header_line)
    rows: list[tuple[int, dict[str, str]]] = []
    for line, row in rows_in_file:
        if len(row) != len(header):
            raise DataError(path, f"expected {len(header)} columns (as in the header), found {len(row)}", line=line)
        rows.append((line, dict(zip(header, row))))
    if not rows:
        raise DataError(path, "file holds a header but no records")
    return columns, rows


def xlsx_records(path: Path, wanted: Mapping[str, Sequence[str]], optional: Iterable[str] = ()
                 ) -> tuple[dict[str, str | None], list[tuple[int, dict[str, Any]]]]:
    """As :func:`csv_records` for the first sheet of an .xlsx workbook (header = row 1; cells keep their types:
    text, numbers, booleans, dates)."""
    import openpyxl  # only when a workbook is read

    require_regular_file(path)  # openpyxl would block on a FIFO
    try:
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:
        raise DataError(path, f"not a readable .xlsx workbook ({type(exc).__name__}: {exc})") from None
    try:
        sheet = workbook.worksheets[0]
        header_row = next(sheet.iter_rows(min_row=1, max_row=1, values_only=True), None)
        if header_row is None:
            raise DataError(path, "the first sheet is empty")
        header = [str(h).strip() if h is not None else "" for h in header_row]
        width = max((i + 1 for i, h in enumerate(header) if h), default=0)
        header = header[:width]
        columns = match_columns(path, header, wanted, optional)
        rows = []
        for number, values in enumerate(sheet.iter_rows(min_row=2, max_col=width, values_only=True), start=2):
            if all(v is None or (isinstance(v, str) and not v.strip()) for v in values):
                continue
            rows.append((number, {h: v for h, v in zip(header, values) if h}))
    finally:
        workbook.close()
    if not rows:
        raise DataError(path, "the first sheet has a header but no records")
    return columns, rows


def match_columns(path: Path, header: Sequence[str], wanted: Mapping[str, Sequence[str]],
                  optional: Iterable[str] = (), line: int = 1) -> dict[str, str | None]:
    """Map each logical field to the header column that holds it (names compared case-insensitively,
    alternatives in order of preference). A missing required column -> DataError listing what is expected."""
    lowered = {h.lower(): h for h in header if h}
    optional = set(optional)
    found: dict[str, str | None] = {}
    for name, alternatives in wanted.items():
        column = next((lowered[a.lower()] for a in alternatives if a.lower() in lowered), None)
        if column is None and name not in optional:
            expected = "; ".join(" or ".join(f"'{a}'" for a in alts) + (" (optional)" if n in optional else "")
                                 for n, alts in wanted.items())
            raise DataError(path, f"missing column {' or '.join(repr(a) for a in alternatives)} "
                            f"(expected columns: {expected}; found: {', '.join(repr(h) for h in header)})",
                            line=line, field=alternatives[0])
        found[name] = column
    return found


# ---------------------------------------------------------------------------------------------------------
# finding the file, required fields, multiple-choice options, duplicate ids


def existing_path(path: Path) -> Path:
    """``path`` as a Path, or one DataError when nothing is there."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, "no such file or directory")
    return path


def find_data_file(path: Path, preferred: Sequence[str], suffixes: Sequence[str], what: str) -> Path:
    """``path`` itself if it is a file; in a folder, the first of the ``preferred`` (released) names that exists,
    else the only file whose name ends with one of ``suffixes``; anything else is one DataError on the folder."""
    path = existing_path(path)
    if not path.is_dir():
        return path
    for name in preferred:
        if (path / name).is_file():
            return path / name
    candidates = sorted(p for p in path.iterdir() if p.is_file() and p.name.lower().endswith(tuple(suffixes)))
    if len(candidates) == 1:
        return candidates[0]
    expected = " or ".join(preferred) + (f" (or exactly one {'/'.join(suffixes)} file)" if suffixes else "")
    if not candidates:
        raise DataError(path, f"folder holds no {what} file: expected {expected}; pass the file itself with --data")
    raise DataError(path, f"folder holds several candidate files ({', '.join(p.name for p in candidates)}); "
                    f"expected {expected}; pass the file itself with --data")


def required_value(path: Path, line: int | None, record: Mapping[str, Any], names: str | Sequence[str], *,
                   prefix: str = "", where: str = "") -> tuple[str, Any]:
    """(name, value) of the first of ``names`` that ``record`` holds (not null); else one DataError naming the
    first name (``prefix`` + name: LongHealth names fields by their path) and the fields the record does have."""
    names = (names,) if isinstance(names, str) else tuple(names)
    for name in names:
        if record.get(name) is not None:
            return name, record[name]
    also = [f"also accepted: {', '.join(repr(n) for n in names[1:])}"] if len(names) > 1 else []
    present = [repr(k) for k in record if record[k] is not None]
    has = [f"the record has: {', '.join(present[:12])}{', ...' if len(present) > 12 else ''}"] if present else []
    detail = f" ({'; '.join(also + has)})" if also or has else ""
    raise DataError(path, f"{where}missing{detail}", line=line, field=prefix + names[0])


def text_value(path: Path, line: int | None, field: str, value: Any, *, numbers: bool = False,
               strip: bool = True, where: str = "") -> str:
    """``value`` as non-empty text (stripped unless ``strip=False``: CLUE and LongHealth prompts use the text as
    released). ``numbers``: a JSON/spreadsheet number is accepted as its text (an id, an option "12")."""
    if numbers and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if value is None:
        raise DataError(path, f"{where}missing", line=line, field=field)
    if not isinstance(value, str):
        raise DataError(path, f"{where}expected text, got {json_kind(value)}", line=line, field=field)
    if not value.strip():
        raise DataError(path, f"{where}empty (only whitespace)" if value else f"{where}empty", line=line,
                        field=field)
    return value.strip() if strip else value


def required_text(path: Path, line: int | None, record: Mapping[str, Any], names: str | Sequence[str], *,
                  numbers: bool = False, strip: bool = True, prefix: str = "", where: str = "") -> str:
    """The text of the first of ``names`` in ``record``, which must be non-empty text; else one DataError naming
    file, line and field (see :func:`required_value`, :func:`text_value`)."""
    name, value = required_value(path, line, record, names, prefix=prefix, where=where)
    return text_value(path, line, prefix + name, value, numbers=numbers, strip=strip, where=where)


def optional_text(path: Path, line: int | None, record: Mapping[str, Any], names: str | Sequence[str], *,
                  numbers: bool = False, where: str = "") -> str | None:
    """The stripped text of the first of ``names`` in ``record``; None when absent, null or blank. A value of
    another type is still a DataError (an id given as a list is a broken file, not a missing id)."""
    names = (names,) if isinstance(names, str) else tuple(names)
    name = next((n for n in names if record.get(n) is not None), None)
    if name is None or (isinstance(record[name], str) and not record[name].strip()):
        return None
    return text_value(path, line, name, record[name], numbers=numbers, where=where)


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


def check_unique_ids(items: Iterable[Item], field: str) -> None:
    """Every item id once; a repeat is a DataError naming its own file and line (from ``Item.source``,
    ``file:line``) and where the id was first seen (possibly in another file of the same folder)."""
    seen: dict[str, str] = {}
    for item in items:
        if item.id in seen:
            file, _, line = item.source.rpartition(":")
            raise DataError(file, f"duplicate id '{item.id}' (first seen at {seen[item.id]})",
                            line=int(line) if line.isdigit() else None, field=field)
        seen[item.id] = item.source


# ---------------------------------------------------------------------------------------------------------
# a task's data layout, declared


#: How a layout's records are stored (what ``DataLayout.format`` may say):
#: jsonl - one JSON object per line; json-array - a JSON array of objects; json-keyed - one JSON object
#: mapping each item's id to its record (ids are the keys); csv - comma-separated with a header row;
#: csv-headerless - comma-separated, columns by position (the order of a sample record's fields);
#: xlsx - the first sheet of a workbook, header in row 1.
RECORD_FORMATS: tuple[str, ...] = ("jsonl", "json-array", "json-keyed", "csv", "csv-headerless", "xlsx")


@dataclass(frozen=True)
class DataLayout:
    """What a task's data file looks like, as facts: the released name a folder is searched for, how records
    are stored, a minimal valid sample, which fields must be non-empty text and which one holds item ids.

    Why declared: the hostile-input guarantees (every damaged file is one DataError naming file, line and
    field) are tested for every registered task from these facts alone (tests/test_datafiles_all_tasks.py),
    so a new task gets the whole table by declaring its layout. ``text_fields`` are paths into a record
    (``questions.0.question``); ``field_label`` is how the task's errors name such a field (LongHealth:
    ``patients.{key}.{field}``, with list positions as ``[0]``).
    """

    file_name: str
    format: str
    sample: tuple[Mapping[str, Any], ...]
    text_fields: tuple[str, ...]
    id_field: str | None = None
    field_label: str = "{field}"

    def __post_init__(self) -> None:
        if self.format not in RECORD_FORMATS:
            raise ValueError(f"format must be one of {', '.join(RECORD_FORMATS)}, got {self.format!r}")
        if not self.sample:
            raise ValueError("a layout needs a sample of at least one record")
