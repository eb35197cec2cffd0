"""The data an evaluation ran on: its fingerprint (a file's own SHA-256, so a rename resumes), old databases
that stored the previous fingerprint, absolute data paths, and the unbiased, reproducible ``--limit`` sample."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import click
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medbench_local import runner
from medbench_local.config import LocalSource, ModelSpec, load_config
from medbench_local.engine.base import GenerateRequest, Generation
from medbench_local.runner import ModelRole, RunOptions, data_fingerprint, execute, load_tasks, sample_items
from medbench_local.store import open_database
from medbench_local.tasks import get_task
from medbench_local.tasks.base import Item

from .conftest import REPO, SHARED_DATA, rows
from .test_runner import FakeEngine

JAMA = REPO / "bench_data" / "jama" / "cases.csv"


class AnswersB(FakeEngine):
    """A fake model that never fails (the base fake fails on one JAMA case)."""

    def generate(self, request: GenerateRequest) -> Generation:
        text = self.render(request.prompt)
        return Generation(prompt_text=text, output=" B.", prompt_tokens=10, truncated_tokens=0,
                          completion_tokens=2, finish_reason="stop", seconds=0.01)


class Notes:
    def __init__(self) -> None:
        self.notes: list[str] = []

    def begin(self, *args: object) -> None: ...
    def advance(self, *args: object) -> None: ...
    def end(self) -> None: ...

    def note(self, text: str) -> None:
        self.notes.append(text)


def _spec(model_id: str) -> ModelSpec:
    return ModelSpec(id=model_id, role="general", source=LocalSource(Path("/fake.gguf")))


def _run(db_path: Path, data: Path, *, limit: int | float | None = None, mode: str = "random", seed: int = 1234,
         models: tuple[str, ...] = ("fake",), reporter: Any = None) -> runner.RunSummary:
    tasks = load_tasks([(get_task("jama"), data)], limit, limit_mode=mode, seed=seed)
    db = open_database(db_path)
    try:
        return execute(db, load_config(REPO / "models.toml"), [ModelRole(_spec(m), "general") for m in models], tasks,
                       {m: Path("/fake.gguf") for m in models}, RunOptions(seed=seed, limit=limit, limit_mode=mode),
                       reporter or Notes(), engine_factory=lambda spec, path, options: _engine(spec))
    finally:
        db.conn.close()


def _engine(spec: ModelSpec) -> AnswersB:
    engine = AnswersB(spec)
    engine.info = replace(engine.info, sha256=hashlib.sha256(spec.id.encode()).hexdigest())  # one file per model
    return engine


# ------------------------------------------------------------------------------------------ fingerprint


def test_a_single_file_is_identified_by_its_own_sha256(tmp_path: Path) -> None:
    copy = tmp_path / "anything.csv"
    shutil.copy(JAMA, copy)
    assert data_fingerprint(copy) == hashlib.sha256(JAMA.read_bytes()).hexdigest() == data_fingerprint(JAMA)
    # a folder keeps relative names: moving the folder keeps its identity, renaming a file inside changes it
    folder = tmp_path / "a" / "jama"
    shutil.copytree(JAMA.parent, folder)
    moved = tmp_path / "b" / "elsewhere"
    shutil.copytree(folder, moved)
    assert data_fingerprint(folder) == data_fingerprint(moved)
    (moved / "cases.csv").rename(moved / "renamed.csv")
    assert data_fingerprint(moved) != data_fingerprint(folder)


def test_renaming_the_data_file_resumes_the_same_evaluation(tmp_path: Path) -> None:
    data = tmp_path / "cases.csv"
    shutil.copy(JAMA, data)
    first = _run(tmp_path / "r.db", data)
    assert first.generated == 10
    renamed = tmp_path / "moved" / "my_cases.csv"
    renamed.parent.mkdir()
    data.rename(renamed)
    again = _run(tmp_path / "r.db", renamed)
    assert (again.generated, again.skipped) == (0, 10)
    assert rows(tmp_path / "r.db", "select count(*) from evaluations") == [(1,)]


def _legacy_fingerprint(path: Path) -> str:
    """What medbench-local computed before: SHA-256 over (file name, file SHA-256) for a single file."""
    digest = hashlib.sha256()
    digest.update(path.name.encode() + b"\0")
    digest.update(hashlib.sha256(path.read_bytes()).hexdigest().encode() + b"\0")
    return digest.hexdigest()


def test_a_database_written_with_the_old_fingerprint_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "cases.csv"
    shutil.copy(JAMA, data)
    with monkeypatch.context() as patch:  # an older medbench-local wrote this database
        patch.setattr(runner.inputs, "data_fingerprint", _legacy_fingerprint)  # where load_tasks finds it
        assert _run(tmp_path / "r.db", data, limit=4).generated == 4
    (stored,), = rows(tmp_path / "r.db", "select settings from evaluations")
    assert json.loads(stored)["task"]["data_sha256"] == _legacy_fingerprint(data) == runner.legacy_data_fingerprint(data)
    reporter = Notes()
    again = _run(tmp_path / "r.db", data, reporter=reporter)
    assert (again.generated, again.skipped) == (6, 4)  # the rest of the items, in the old evaluation
    assert rows(tmp_path / "r.db", "select count(*) from evaluations") == [(1,)]
    assert any("older medbench-local" in note for note in reporter.notes)
    # a database without an old evaluation is not affected
    fresh = Notes()
    assert _run(tmp_path / "fresh.db", data, reporter=fresh).generated == 10 and fresh.notes == []


def test_data_paths_are_recorded_absolute_and_resolved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    relative = Path("bench_data") / "jama" / ".." / "jama" / "cases.csv"
    (loaded,) = load_tasks([(get_task("jama"), relative)], None)
    assert loaded.data_path == JAMA.resolve() and loaded.data_path.is_absolute()
    _run(tmp_path / "r.db", relative)
    (settings_text,), = rows(tmp_path / "r.db", "select settings from runs")
    assert json.loads(settings_text)["tasks"][0]["data"] == str(JAMA.resolve())
    sources = [s for (s,) in rows(tmp_path / "r.db", "select source from items")]
    assert len(sources) == 10 and all(s.startswith(f"{JAMA.resolve()}:") for s in sources)
    (evaluation,), = rows(tmp_path / "r.db", "select settings from evaluations")
    assert json.loads(evaluation)["data"] == {"path": str(JAMA.resolve()), "name": "cases.csv"}


# ------------------------------------------------------------------------------------------ --limit


def _items(labels: list[str]) -> list[Item]:
    return [Item(f"q{n:04d}", {"answer": label}) for n, label in enumerate(labels)]


def test_random_limit_on_a_label_sorted_file_is_not_degenerate() -> None:
    items = _items(["A"] * 276 + ["B"] * 224)  # PubMedQA's test ground truth: 276 "yes" first
    first = sample_items(items, 100, "first", seed=1234, task_id="pubmedqa", data_sha256="x")
    assert Counter(i.payload["answer"] for i in first) == {"A": 100}
    sample = sample_items(items, 100, "random", seed=1234, task_id="pubmedqa", data_sha256="x")
    share = Counter(i.payload["answer"] for i in sample)["A"] / 100
    assert len(sample) == 100 and 0.4 < share < 0.7


@pytest.mark.skipif(not (SHARED_DATA / "pubmedqa" / "ori_pqal.json").exists(), reason="../shared/data is absent")
def test_random_limit_on_the_real_pubmedqa_file() -> None:
    task = get_task("pubmedqa")
    first, = load_tasks([(task, SHARED_DATA / "pubmedqa")], 50, limit_mode="first")
    assert {i.payload["answer"] for i in first.items} == {"A"}  # "always A" would score 100%
    sampled, = load_tasks([(task, SHARED_DATA / "pubmedqa")], 50)
    counts = Counter(i.payload["answer"] for i in sampled.items)
    assert len(sampled.items) == 50 and max(counts.values()) / 50 < 0.9


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 60), st.integers(1, 60), st.integers(0, 10**6), st.sampled_from(["random", "first"]))
def test_a_larger_limit_is_a_superset_and_the_sample_is_stable(small: int, large: int, seed: int, mode: str) -> None:
    items = _items([str(n % 3) for n in range(50)])
    small, large = min(small, large), max(small, large)
    a = sample_items(items, small, mode, seed=seed, task_id="t", data_sha256="d")
    b = sample_items(items, large, mode, seed=seed, task_id="t", data_sha256="d")
    assert len(a) == min(small, 50) and len(b) == min(large, 50)
    assert {i.id for i in a} <= {i.id for i in b}
    assert a == sample_items(items, small, mode, seed=seed, task_id="t", data_sha256="d")  # same on resume
    assert [i.id for i in b] == sorted(i.id for i in b)  # file order is kept


def test_the_sample_depends_on_seed_task_and_data_only() -> None:
    items = _items(["x"] * 200)

    def ids(**kw: Any) -> list[str]:
        return [i.id for i in sample_items(items, 20, "random", **{"seed": 1, "task_id": "t", "data_sha256": "d", **kw})]

    assert ids() == ids() and ids() != ids(seed=2) and ids() != ids(task_id="u") and ids() != ids(data_sha256="e")
    assert ids() != [i.id for i in items[:20]]


@pytest.mark.parametrize(("limit", "total", "expected"), [(0.1, 25, 3), (0.5, 10, 5), (0.01, 10, 1), (3, 10, 3),
                                                          (30, 10, 10)])
def test_a_fractional_limit_rounds_up(limit: float, total: int, expected: int) -> None:
    assert len(sample_items(_items(["a"] * total), limit, "random", seed=0, task_id="t", data_sha256="d")) == expected


@pytest.mark.parametrize("text", ["0", "-2", "1.5", "abc", "0.0", "1.0e3x"])
def test_bad_limits_are_refused(text: str) -> None:
    from medbench_local.cli.run import ItemLimit

    with pytest.raises(click.BadParameter):
        ItemLimit().convert(text, None, None)
    assert ItemLimit().convert("7", None, None) == 7 and ItemLimit().convert("0.25", None, None) == 0.25


def test_both_models_and_a_resumed_run_see_the_same_sample(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    first = _run(db, JAMA, limit=4, models=("bio", "gen"))
    assert first.generated == 8
    per_model = rows(db, "select e.model_id, group_concat(i.item_id) from generations g join items i "
                         "on i.key = g.item join evaluations e on e.key = g.evaluation group by e.model_id")
    (_, bio_items), (_, gen_items) = per_model
    assert sorted(bio_items.split(",")) == sorted(gen_items.split(","))
    assert sorted(bio_items.split(",")) != [f"jama-demo-{n:02d}" for n in range(1, 5)]  # not simply the first 4
    assert _run(db, JAMA, limit=4, models=("bio", "gen")).generated == 0  # resume: same sample, nothing to do
    grown = _run(db, JAMA, limit=7, models=("bio", "gen"))
    assert (grown.generated, grown.skipped) == (6, 8)  # a larger limit adds to the sample
    assert rows(db, "select count(*) from evaluations") == [(2,)]
    recorded = [json.loads(s) for (s,) in rows(db, "select settings from runs order by started_at")]
    assert [(r["limit"], r["limit_mode"], r["limit_seed"]) for r in recorded] == [(4, "random", 1234)] * 2 + [
        (7, "random", 1234)]
    assert recorded[0]["tasks"][0]["items_in_data"] == 10 and recorded[0]["tasks"][0]["items"] == 4
