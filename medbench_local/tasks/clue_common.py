"""Helpers shared by the CLUE text tasks (MedNLI, MeQSum, Problem Summary, MeDiSumQA).

What lives here and why:

* **Reading the released files** (UTF-8 text, JSON Lines, JSON arrays, CSV with a header row) with every
  problem reported as a one-line ``DataError`` naming the file, the line (JSON Lines, JSON arrays: the line
  where the record starts; CSV/XLSX: the row, the header being line 1) and the field. A folder may be given
  instead of a file: the task's released file name is looked up in it.
* **Few-shot selection exactly as the CLUE reference** (paper.md §3.2): the first ``k`` records of the file
  are the few-shot examples and are *not* evaluated; MeDiSumQA shuffles first with ``random.seed(1)``, which
  we reproduce with ``random.Random(1).shuffle(records)`` (the module-level ``random`` functions are methods
  of one hidden ``random.Random`` instance, so both give the same permutation, and ours leaves the global
  random state alone). The permutation depends only on the number of records.
* **Output clean-up exactly as the reference**: :func:`clean_output` (MedNLI, MeQSum, Problem Summary) and
  :func:`strip_output` (MeDiSumQA). The raw output is stored untouched by the engine/store; only the score
  uses the cleaned text (kept in ``Score.extracted``).
* **Stop strings for plain-text (base-model) prompts**: the engine joins prompt blocks with blank lines, so a
  base model that has finished its answer tends to write the next *fake* example, starting with the first
  line of our user template. :func:`user_block_stop` turns that line into a stop string. (A blank line is not
  a safe stop: summaries and answers may legitimately contain one.)
"""

from __future__ import annotations

import csv
import io
import json
import random
import re
import string
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..errors import DataError
from .base import Item, TaskData
from .datafiles import csv_reader, jsonl_records, object_record, parse_json, read_text
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


# ---------------------------------------------------------------------------------------------------------
# Files


def find_data_file(path: Path, preferred: Sequence[str], suffixes: Sequence[str], what: str) -> Path:
    """``path`` itself if it is a file; in a folder, the first of ``preferred`` names that exists, else the
    only file with one of ``suffixes``."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, "no such file or directory")
    if not path.is_dir():
        return path
    for name in preferred:
        if (path / name).is_file():
            return path / name
    candidates = sorted(p for p in path.iterdir() if p.is_file() and p.name.lower().endswith(tuple(suffixes)))
    if len(candidates) == 1:
        return candidates[0]
    expected = f"{' or '.join(preferred)} (or a single {'/'.join(suffixes)} file)"
    if not candidates:
        raise DataError(path, f"folder holds no {what} file: expected {expected}")
    raise DataError(path, f"folder holds several candidate files ({', '.join(p.name for p in candidates)}); "
                    f"expected {expected}: pass the file itself")


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


def csv_records(path: Path, wanted: dict[str, Sequence[str]], optional: Iterable[str] = ()
                ) -> tuple[dict[str, str | None], list[tuple[int, dict[str, str]]]]:
    """Columns found for ``wanted`` (see :func:`match_columns`; checked before any row is read) and (first
    line of the row, {column: cell}) for every non-empty row of a CSV file with a header row."""
    reader = csv_reader(io.StringIO(read_text(path), newline=""))
    rows: list[tuple[int, dict[str, str]]] = []
    try:
        header = [h.strip() for h in next(reader)]
        columns = match_columns(path, header, wanted, optional)
        previous = reader.line_num
        for row in reader:
            start, previous = previous + 1, reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise DataError(path, f"expected {len(header)} columns (as in the header), found {len(row)}",
                                line=start)
            rows.append((start, dict(zip(header, row))))
    except csv.Error as exc:
        raise DataError(path, f"malformed CSV ({exc})", line=reader.line_num) from None
    if not rows:
        raise DataError(path, "file holds a header but no records")
    return columns, rows


def match_columns(path: Path, header: Sequence[str], wanted: dict[str, Sequence[str]],
                  optional: Iterable[str] = ()) -> dict[str, str | None]:
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
                            line=1, field=alternatives[0])
        found[name] = column
    return found


def pick_text(path: Path, line: int, record: dict[str, Any], names: Sequence[str], *,
              required: bool = True, allow_empty: bool = False) -> str | None:
    """The text of the first of ``names`` present in ``record``; a missing, empty (unless ``allow_empty``)
    or non-text value -> DataError naming the field. Numbers are accepted as text (spreadsheets)."""
    name = next((n for n in names if n in record and record[n] is not None), None)
    if name is None:
        if not required:
            return None
        also = f" (also accepted: {', '.join(repr(n) for n in names[1:])})" if len(names) > 1 else ""
        raise DataError(path, f"missing{also}", line=line, field=names[0])
    value = record[name]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise DataError(path, f"expected text, got {type(value).__name__}", line=line, field=name)
    if not value.strip() and not allow_empty:
        raise DataError(path, "empty", line=line, field=name)
    return value


def check_unique_ids(path: Path, items: Sequence[Item], field: str) -> None:
    seen: dict[str, str] = {}
    for item in items:
        if item.id in seen:
            line = int(item.source.rsplit(":", 1)[1])
            raise DataError(path, f"duplicate id '{item.id}' (first seen at {seen[item.id]})", line=line,
                            field=field)
        seen[item.id] = item.source
