"""Case-challenge loaders: the bundled samples load, and every malformed input names file, line and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medbench_local.errors import DataError
from medbench_local.tasks.mcq_data import load_mcq

from .conftest import REPO


def _jsonl(**overrides: object) -> str:
    record: dict[str, object] = {"id": "c1", "case": "A case.", "question": "Q?",
                                 "options": {"A": "one", "B": "two", "C": "three", "D": "four"}, "answer": "B"}
    record.update(overrides)
    return json.dumps({k: v for k, v in record.items() if v is not None})


def test_bundled_samples_load() -> None:
    nejm = load_mcq(REPO / "bench_data" / "nejm")
    jama = load_mcq(REPO / "bench_data" / "jama")
    assert len(nejm) == 10 and len(jama) == 10
    assert all(len(item.payload["options"]) == 5 for item in nejm)
    assert all(len(item.payload["options"]) == 4 for item in jama)
    assert len({item.id for item in nejm + jama}) == 20
    assert jama[0].source.endswith("cases.csv:2")


def test_item_identity_is_stable_and_content_sensitive(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text(_jsonl() + "\n")
    b.write_text(_jsonl(case="A different case.") + "\n")
    first, again, changed = load_mcq(a)[0], load_mcq(a)[0], load_mcq(b)[0]
    assert first.content_sha256 == again.content_sha256 != changed.content_sha256


def test_list_options_and_lowercase_answers(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text(_jsonl(options=["one", "two", "three"], answer="c") + "\n")
    item = load_mcq(path)[0]
    assert item.payload["options"] == {"A": "one", "B": "two", "C": "three"} and item.payload["answer"] == "C"


def test_csv_rows_with_fewer_options_share_a_file(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text('id,case,question,A,B,C,D,E,answer\n1,"Case, with comma",Q?,a,b,c,d,e,E\n2,Case,Q?,a,b,c,d,,D\n')
    items = load_mcq(path)
    assert [len(i.payload["options"]) for i in items] == [5, 4] and items[0].id == "1"


BAD_JSONL = [
    ("", None, None, "file is empty"),
    ("{not json}\n", 1, None, "malformed JSON"),
    ("[1, 2]\n", 1, None, "expected a JSON object"),
    (_jsonl(case=None) + "\n", 1, "case", "missing (the record has: 'id', 'question', 'options', 'answer')"),
    (_jsonl(question="") + "\n", 1, "question", "empty"),
    (_jsonl(options={"A": "only"}) + "\n", 1, "options", "expected 2-10 options, got 1"),
    (_jsonl(options={"A": "x", "C": "y"}) + "\n", 1, "options", "without gaps"),
    (_jsonl(options={"A": "x", "B": ""}) + "\n", 1, "options", "option B is empty"),
    (_jsonl(options="A, B") + "\n", 1, "options", "lettered options"),
    (_jsonl(answer="E") + "\n", 1, "answer", "not one of the options A-D"),
    (_jsonl(answer=None) + "\n", 1, "answer", "missing"),
    (_jsonl() + "\n\n" + _jsonl() + "\n", 3, "id", "duplicate id 'c1'"),
    (_jsonl(id=["x"]) + "\n", 1, "id", "expected text"),
]


@pytest.mark.parametrize(("content", "line", "field", "fragment"), BAD_JSONL)
def test_bad_jsonl(tmp_path: Path, content: str, line: int | None, field: str | None, fragment: str) -> None:
    path = tmp_path / "cases.jsonl"
    path.write_text(content)
    with pytest.raises(DataError) as info:
        load_mcq(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}:" if line else f"{path}:"), message
    if field:
        assert f"field '{field}'" in message
    assert fragment in message and "\n" not in message


BAD_CSV = [
    ("id,case,question,A,B\n1,c,q,a,b\n", 1, "missing column 'answer'"),
    ("id,case,question,A,C,answer\n1,c,q,a,b,A\n", 1, "option columns A, B"),
    ("id,case,question,A,B,answer\n1,c,q,a,b\n", 2, "expected 6 columns (as in the header), found 5"),
    ("id,case,question,A,B,answer\n1,c,q,a,b,F\n", 2, "not one of the options A-B"),
    ("id,case,question,A,B,answer\n1,,q,a,b,A\n", 2, "field 'case'"),
]


@pytest.mark.parametrize(("content", "line", "fragment"), BAD_CSV)
def test_bad_csv(tmp_path: Path, content: str, line: int, fragment: str) -> None:
    path = tmp_path / "cases.csv"
    path.write_text(content)
    with pytest.raises(DataError) as info:
        load_mcq(path)
    assert str(info.value).startswith(f"{path}:{line}:") and fragment in str(info.value)


def test_not_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "cases.jsonl"
    path.write_bytes(_jsonl().encode() + b"\n" + b'{"id": "\xff"}\n')
    with pytest.raises(DataError, match=r":2: not UTF-8"):
        load_mcq(path)


def test_missing_path_and_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        load_mcq(tmp_path / "absent")
    with pytest.raises(DataError, match="no .jsonl or .csv"):
        load_mcq(tmp_path)
    other = tmp_path / "cases.txt"
    other.write_text("x")
    with pytest.raises(DataError, match="unsupported file type"):
        load_mcq(other)
