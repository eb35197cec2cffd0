"""Hostile data files, for every registered task, from the task's declared facts alone (``task.data_layout``).

For each task: a minimal valid file of its own format (its declared sample) loads; then the same classes of
damage -- a required field missing, empty, whitespace only or of the wrong JSON type, a malformed JSON line or
CSV row, an id given twice, a folder without the file -- are each one ``DataError`` naming the file, the line
and the field, in one line. Nothing here names a task id: a new task that declares its layout gets the whole
table (tests/test_toy_task.py runs it on a task written in one module). Per-task tables with the exact
wording of each message stay with their loaders (test_clue_tasks, test_public_mcq, test_longhealth, ...).
"""

from __future__ import annotations

import copy
import csv
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from medbench_local.errors import DataError
from medbench_local.tasks import get_task, task_ids
from medbench_local.tasks.base import TaskBase
from medbench_local.tasks.datafiles import RECORD_FORMATS, DataLayout

Records = list[dict[str, Any]]

# ------------------------------------------------------------------------------------- writing a layout's file

HEADER_FORMATS = ("csv", "xlsx")      # a field is a column: "missing" means the header lacks it (line 1)
TYPED_FORMATS = ("jsonl", "json-array", "json-keyed", "xlsx")  # a cell or value can be of the wrong type


def record_line(layout: DataLayout, index: int) -> int:
    """The line (row) where record ``index`` starts in the file :func:`write` makes."""
    return index + 1 if layout.format in ("jsonl", "csv-headerless") else index + 2


def keys_for(records: Records) -> list[str]:
    return [f"k{i + 1}" for i in range(len(records))]


def render(layout: DataLayout, records: Records, keys: list[str]) -> str | None:
    """The file's text (None for a binary format, written by :func:`write`)."""
    dumped = [json.dumps(r) for r in records]
    if layout.format == "jsonl":
        return "".join(d + "\n" for d in dumped)
    if layout.format == "json-array":
        return "[\n" + ",\n".join(dumped) + "\n]\n"
    if layout.format == "json-keyed":
        return "{\n" + ",\n".join(f"{json.dumps(k)}: {d}" for k, d in zip(keys, dumped)) + "\n}\n"
    if layout.format in ("csv", "csv-headerless"):
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        if layout.format == "csv":
            writer.writerow(list(records[0]))
        writer.writerows([list(r.values()) for r in records])
        return buffer.getvalue()
    return None


def write(layout: DataLayout, folder: Path, records: Records, keys: list[str] | None = None,
          edit_line: tuple[int, Callable[[str], str]] | None = None) -> Path:
    """The records in the layout's format, in a file named like the released one (same suffix); ``edit_line``
    rewrites one physical line of a text format afterwards."""
    path = folder / ("sample" + Path(layout.file_name).suffix)
    keys = keys or keys_for(records)
    text = render(layout, records, keys)
    if text is None:
        assert layout.format == "xlsx"
        import openpyxl

        workbook = openpyxl.Workbook()
        sheet = workbook.active
        sheet.append(list(records[0]))
        for record in records:
            sheet.append(list(record.values()))
        workbook.save(path)
        return path
    if edit_line is not None:
        lines = text.split("\n")
        number, edit = edit_line
        lines[number - 1] = edit(lines[number - 1])
        text = "\n".join(lines)
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------- the damage

def _parts(field: str) -> list[str | int]:
    return [int(p) if p.isdigit() else p for p in field.split(".")]


def _parent(record: dict[str, Any], field: str) -> tuple[Any, str | int]:
    *path, last = _parts(field)
    node: Any = record
    for part in path:
        node = node[part]
    return node, last


def set_field(record: dict[str, Any], field: str, value: Any) -> None:
    node, last = _parent(record, field)
    node[last] = value


def delete_field(record: dict[str, Any], field: str) -> None:
    node, last = _parent(record, field)
    del node[last]


def label(layout: DataLayout, key: str, field: str) -> str:
    """How the task's errors name ``field`` of the record under ``key`` (list positions as ``[0]``)."""
    return layout.field_label.format(key=key, field=re.sub(r"\.(\d+)(?=\.|$)", r"[\1]", field))


@dataclass
class Damage:
    name: str
    path: Path               # the file (or folder) to load
    line: int | None         # what the DataError must name
    field: str | None
    fragments: tuple[str, ...]  # one of them must be in the message


MALFORMED_LINE: dict[str, Callable[[str], str]] = {
    "jsonl": lambda line: '{"oops": ',
    "json-array": lambda line: '{"oops" ,',
    "json-keyed": lambda line: '"oops": {oops},',
    "csv": lambda line: line + ",a surplus cell",
    "csv-headerless": lambda line: line.rsplit(",", 1)[0],
}
WRONG_TYPE: dict[str, Any] = {"jsonl": [1, 2], "json-array": {"a": 1}, "json-keyed": [1, 2], "xlsx": True}


def damages(layout: DataLayout, folder: Path) -> list[Damage]:
    """Every class of damage that applies to the layout, each written into its own subfolder of ``folder``."""
    sample: Records = [copy.deepcopy(dict(r)) for r in layout.sample]
    last = len(sample) - 1
    keys = keys_for(sample)
    line = record_line(layout, last)
    found: list[Damage] = []

    def place(name: str) -> Path:
        sub = folder / re.sub(r"\W+", "-", name)
        sub.mkdir()
        return sub

    def damaged(name: str, change: Callable[[Records], None], *, at: int | None = None, field: str | None,
                fragments: tuple[str, ...], keyed: list[str] | None = None,
                edit: Callable[[str], str] | None = None) -> None:
        records = copy.deepcopy(sample)
        change(records)
        where = line if at is None else at
        path = write(layout, place(name), records, keyed or keys, (where, edit) if edit else None)
        found.append(Damage(name, path, where, field, fragments))

    for field in layout.text_fields:
        named = label(layout, keys[last], field)
        if layout.format in HEADER_FORMATS:  # the column is absent: the header names it
            damaged(f"{field} missing", lambda rs, f=field: [delete_field(r, f) for r in rs], at=1, field=named,
                    fragments=("missing",))
        elif layout.format != "csv-headerless":
            damaged(f"{field} missing", lambda rs, f=field: delete_field(rs[last], f), field=named,
                    fragments=("missing",))
        # an empty spreadsheet cell is no value at all: "missing" names it as well as "empty"
        damaged(f"{field} empty", lambda rs, f=field: set_field(rs[last], f, ""), field=named,
                fragments=("empty", "missing"))
        damaged(f"{field} whitespace only", lambda rs, f=field: set_field(rs[last], f, " \t "), field=named,
                fragments=("empty",))
        if layout.format in TYPED_FORMATS:
            damaged(f"{field} wrong type", lambda rs, f=field: set_field(rs[last], f, WRONG_TYPE[layout.format]),
                    field=named, fragments=("expected text", "got a"))
    if layout.format in MALFORMED_LINE:
        damaged("malformed line", lambda rs: None, field=None, edit=MALFORMED_LINE[layout.format],
                fragments=("malformed JSON", "malformed CSV", "columns"))
    if layout.id_field is not None:
        damaged("duplicate id", lambda rs: set_field(rs[last], layout.id_field, rs[0][layout.id_field]),
                field=layout.id_field, fragments=("duplicate id",))
    if layout.format == "json-keyed":  # the ids are the keys
        damaged("duplicate id", lambda rs: None, keyed=keys[:-1] + keys[:1], field=keys[0],
                fragments=("duplicate key",))
    empty = place("folder without the file")
    (empty / "notes.txt").write_text("not the data\n", encoding="utf-8")
    found.append(Damage("folder without the file", empty, None, None,
                        (layout.file_name, Path(layout.file_name).suffix)))
    return found


def check_damage(task: TaskBase, damage: Damage) -> None:
    with pytest.raises(DataError) as caught:
        task.load(damage.path)
    error, message = caught.value, str(caught.value)
    assert (Path(error.path), error.line, error.field) == (damage.path, damage.line, damage.field), message
    where = f"{damage.path}:{damage.line}: " if damage.line else f"{damage.path}: "
    assert message.startswith(where) and "\n" not in message, message
    assert any(fragment in message for fragment in damage.fragments), (damage.fragments, message)


def check_layout(task: TaskBase, folder: Path) -> None:
    """The declared sample is a valid file of the task's format, and every damage of it is one DataError."""
    layout = task.data_layout
    assert isinstance(layout, DataLayout), f"task {task.id} declares no data_layout"
    for record in layout.sample:
        for field in layout.text_fields:
            _parent(dict(record), field)[0][_parts(field)[-1]]  # every declared field is in every record
        assert layout.id_field is None or layout.id_field in record
    valid = folder / "valid"
    valid.mkdir()
    data = task.load(write(layout, valid, [copy.deepcopy(dict(r)) for r in layout.sample]))
    assert data.items and len({item.id for item in data.items}) == len(data.items)
    for damage in damages(layout, folder):
        check_damage(task, damage)


# ------------------------------------------------------------------------------------------------- the tests

BUILT_IN = task_ids()


@pytest.mark.parametrize("task_id", BUILT_IN)
def test_every_damaged_file_is_one_data_error_naming_file_line_and_field(task_id: str, tmp_path: Path) -> None:
    check_layout(get_task(task_id), tmp_path)


def test_the_table_covers_every_record_format() -> None:
    """The built-in tasks between them exercise every format the data-file layer reads."""
    assert {get_task(t).data_layout.format for t in BUILT_IN} == set(RECORD_FORMATS)


def test_the_table_has_every_class_for_a_json_layout(tmp_path: Path) -> None:
    """The table itself is checked: a JSON Lines layout with ids gets every class of damage."""
    layout = DataLayout("x.jsonl", "jsonl", ({"id": "a", "q": "x"}, {"id": "b", "q": "y"}), ("q",), "id")
    names = [d.name for d in damages(layout, tmp_path)]
    assert names == ["q missing", "q empty", "q whitespace only", "q wrong type", "malformed line",
                     "duplicate id", "folder without the file"]


def test_a_layout_declares_a_known_format() -> None:
    with pytest.raises(ValueError, match="format must be one of"):
        DataLayout("x.txt", "txt", ({"a": "b"},), ("a",))
    with pytest.raises(ValueError, match="sample"):
        DataLayout("x.jsonl", "jsonl", (), ("a",))
