"""The stored-values gate: every JSON value and every text read back from a results database passes here.

Why a gate: a results database is a file that travels (shards merged from cluster nodes, a colleague's copy, a
bundle) and SQLite accepts in it what Python then chokes on. ``json_valid`` accepts JSON nested 990 levels deep,
which ``json.loads`` turns into a RecursionError; a text column may hold bytes that are not UTF-8, which
Python's sqlite3 turns into an OperationalError at the first row it fetches; a metric may be a string. Each read
command used to parse on its own, so each failed on its own, with a traceback. Now:

* **JSON** (``runs.command``, ``*.settings``, ``items.payload``, ``scores.metrics``, ...) is parsed only by
  :func:`load_json` and its shorthands, which refuse *before parsing* a value longer than :data:`MAX_CHARS`
  characters or nested deeper than :data:`MAX_DEPTH` levels (a scan without recursion), refuse ``NaN`` and
  ``Infinity`` and numbers Python cannot hold, and check the value's JSON type. A damaged value is a
  :class:`DamagedValue`: one line naming table, column and row, never a traceback.
  ``store/database.py``'s ``diagnose`` applies the same bounds in SQL before a read command starts, so damage
  is reported up front with the row's ``rowid``; this gate is what makes a value that slipped past it (a
  concurrent writer, a command that skips the diagnosis) a line too.
* **Text** is decoded by :func:`decode_text`, which the database gate installs as the ``text_factory`` of
  *every* connection it opens: bytes that are not UTF-8 are shown with U+FFFD replacement characters instead
  of failing the whole read. Read commands therefore show such a value replaced. Replaced text is never
  written back as if it were the original: ``run`` and ``rescore`` copy stored text with SQL, not through
  Python, and ``merge``, which copies rows through Python, refuses an input with text that is not UTF-8
  before it writes anything (``diagnose(..., text=True)``).

Bounds: :data:`MAX_DEPTH` is above anything medbench-local writes (data files may nest 64 levels,
``tasks/datafiles.py``; settings add a few) and far below Python's recursion limit; :data:`MAX_CHARS` is eight
times the largest CSV cell a data file may hold.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from ..errors import StoreError

MAX_DEPTH = 100
MAX_CHARS = 128 * 1024 * 1024

# A JSON string (unrolled, so that long strings cost no backtracking) or one bracket.
_STRUCTURE = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)
_KINDS: dict[str, tuple[type, ...]] = {"object": (dict,), "array": (list,), "string": (str,),
                                       "number": (int, float)}


class DamagedValue(StoreError):
    """A stored value that cannot be used: one line naming table, column and row."""

    def __init__(self, table: str, column: str, row: object, problem: str) -> None:
        self.table, self.column, self.row, self.problem = table, column, row, problem
        super().__init__(f"{table}.{column} of row {row_label(row)} {problem}")


def row_label(row: object) -> str:
    """How a row is named in a message: its rowid or integer key as is, a text key quoted (a SHA-256 key
    shortened to 12 characters), never longer than a short line."""
    if isinstance(row, int):
        return str(row)
    text = str(row)
    if len(text) == 64 and all(c in "0123456789abcdef" for c in text):
        text = text[:12] + "…"
    elif len(text) > 60:
        text = text[:59] + "…"
    return repr(text)


def decode_text(data: bytes) -> str:
    """The ``text_factory`` of every database connection: UTF-8, with U+FFFD for bytes that are not."""
    return data.decode("utf-8", "replace")


def nesting_exceeds(text: str, limit: int = MAX_DEPTH) -> bool:
    """True when the JSON text nests arrays and objects deeper than ``limit``; brackets inside strings do not
    count. Linear and without recursion; the common case (fewer brackets than the limit) costs two counts."""
    if text.count("[") + text.count("{") <= limit:
        return False
    depth = 0
    for match in _STRUCTURE.finditer(text):
        char = text[match.start()]
        if char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def load_json(value: object, table: str, column: str, row: object, *, kind: str | None = None,
              empty: Any = None) -> Any:
    """The parsed JSON of a stored value, within the bounds; ``empty`` for SQL NULL, JSON null or an empty text.

    ``kind`` (``object``, ``array``, ``string``, ``number``): the JSON type the column must hold.
    Raises :class:`DamagedValue` naming ``table``, ``column`` and ``row``.
    """
    if value is None or value == "":
        return empty
    if isinstance(value, bytes):
        raise DamagedValue(table, column, row, "holds binary data (a BLOB), not JSON text")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        parsed: Any = value  # SQLite handed back a number: that is the JSON value
    elif isinstance(value, str):
        parsed = _parse(value, table, column, row)
    else:
        raise DamagedValue(table, column, row, f"holds a {type(value).__name__}, not JSON text")
    if parsed is None:  # JSON null: nothing recorded, like SQL NULL
        return empty
    if kind is not None and not (isinstance(parsed, _KINDS[kind]) and not isinstance(parsed, bool)):
        raise DamagedValue(table, column, row, f"is not a JSON {kind}")
    return parsed


def _parse(text: str, table: str, column: str, row: object) -> Any:
    if len(text) > MAX_CHARS:
        raise DamagedValue(table, column, row, f"is {len(text):,} characters long, above the bound of "
                                               f"{MAX_CHARS:,} for a stored JSON value")
    if nesting_exceeds(text):
        raise DamagedValue(table, column, row, f"is JSON nested deeper than {MAX_DEPTH} levels")
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:  # not reached within MAX_DEPTH; kept so that no input can make it a traceback
        raise DamagedValue(table, column, row, f"is JSON nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # syntax, NaN/Infinity, an integer of thousands of digits
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc).splitlines()[0][:120]
        raise DamagedValue(table, column, row, f"is not valid JSON ({reason})") from None


def load_object(value: object, table: str, column: str, row: object) -> dict[str, Any]:
    """A stored JSON object (``{}`` for NULL or empty text)."""
    return load_json(value, table, column, row, kind="object", empty={})  # type: ignore[no-any-return]


def load_array(value: object, table: str, column: str, row: object) -> list[Any]:
    """A stored JSON array (``[]`` for NULL or empty text)."""
    return load_json(value, table, column, row, kind="array", empty=[])  # type: ignore[no-any-return]


def member(parent: dict[str, Any], key: str, kind: str, table: str, column: str, row: object) -> Any:
    """``parent[key]`` where the code needs a value of JSON type ``kind`` there (``settings.task`` an object,
    ``settings.task.data_sha256`` a string): None when absent or null, else it must be of that type."""
    value = parent.get(key)
    if value is None:
        return None
    if not isinstance(value, _KINDS[kind]) or isinstance(value, bool):
        raise DamagedValue(table, column, row, f"has '{key}' that is not a JSON {kind}")
    return value


def member_object(parent: dict[str, Any], key: str, table: str, column: str, row: object) -> dict[str, Any]:
    """``parent[key]`` where the code needs an object (``{}`` when absent or null)."""
    return member(parent, key, "object", table, column, row) or {}


def finite_number(value: object) -> float | None:
    """``value`` as a finite float, or None when it is not a number (booleans are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer of hundreds of digits
        return None
    return number if math.isfinite(number) else None


def load_metrics(value: object, row: object, table: str = "scores", column: str = "metrics") -> dict[str, float]:
    """A stored metrics object: every value a finite number (``{}`` for NULL or empty text). The values are
    returned as stored (an integer stays an integer, so that a merge writes back the same JSON)."""
    metrics = load_object(value, table, column, row)
    for name, number in metrics.items():
        if finite_number(number) is None:
            raise DamagedValue(table, column, row, f"has metric '{name[:60]}' that is not a finite number")
    return metrics
