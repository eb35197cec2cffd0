"""Adding a task is one module: this file is that module. It declares a toy task on the task contract
(``TaskBase``, ``MetricSpec``, the data-file helpers), registers it through the registry API, runs it end to end
through the runner with fake engines for both models of a pair, and compares the results. Nothing outside
``tasks/`` learns the task's id, nor the name of its new metric (``brevity``): the result views and their
glossary follow the registry (issue 21), shown with the module added the way a built-in task is, by its line in
the registry's module list."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from medbench_local.analysis.paired import compare_pairs
from medbench_local.config import LocalSource, ModelSpec, load_config
from medbench_local.engine.base import GenerateRequest, Generation, ModelInfo
from medbench_local.engine.identity import identity as engine_identity
from medbench_local.errors import DataError, UserError
from medbench_local.prompting import Prompt
from medbench_local.prompting.prompt_format import render_base
from medbench_local.runner import ModelRole, RunOptions, execute, load_tasks
from medbench_local.store import open_database, reading, writer
from medbench_local.store.catalog import tables
from medbench_local.store.views import stored_view_metrics
from medbench_local.tasks import (
    Item,
    MetricSpec,
    PromptContext,
    Score,
    TaskBase,
    TaskData,
    get_task,
    register,
    registry,
    task_ids,
    unregister,
)
from medbench_local.tasks.base import ACCURACY
from medbench_local.tasks.datafiles import DataLayout, check_unique_ids, find_data_file, jsonl_records, required_text

from .conftest import REPO, invoke, rows

PACKAGE = REPO / "medbench_local"

# ---------------------------------------------------------------------------------------------- the module

BREVITY = MetricSpec("brevity", "continuous", description="1 / the number of words of the answer (1 for one word)")


@dataclass(frozen=True)
class YesNoTask(TaskBase):
    """Answer a yes/no question; accuracy (binary) and how many words the answer took (continuous)."""

    id: str = "toy_yesno"
    title: str = "Toy yes/no questions"
    description: str = "A task written in one module, for the contract test."
    data_format: str = "JSONL {id, question, answer: yes|no}"
    max_tokens: int = 8
    stop: tuple[str, ...] = ("\n",)
    metrics: tuple[MetricSpec, ...] = (ACCURACY, BREVITY)
    data_layout = DataLayout("toy.jsonl", "jsonl", ({"id": "q1", "question": "Is 1 small?", "answer": "yes"},
                                                    {"id": "q2", "question": "Is 9 small?", "answer": "no"}),
                             text_fields=("id", "question", "answer"), id_field="id")

    def load(self, path: Path) -> TaskData:
        path = find_data_file(path, ("toy.jsonl",), (".jsonl",), "toy")  # a folder: its toy.jsonl
        items = []
        for line, record in jsonl_records(path):
            question = required_text(path, line, record, "question")
            answer = required_text(path, line, record, "answer")
            if answer not in ("yes", "no"):
                raise DataError(path, "must be yes or no", line=line, field="answer")
            items.append(Item(required_text(path, line, record, "id", numbers=True),
                              {"question": question, "answer": answer}, source=f"{path}:{line}"))
        check_unique_ids(items, "id")
        return TaskData(items)

    def prompt(self, item: Item, context: PromptContext) -> Prompt:
        return Prompt(system="Answer yes or no.", user=item.payload["question"], answer_prefix="Answer:")

    def score(self, item: Item, generation: Generation, plan: Any = None) -> Score:
        words = generation.output.split()
        said = words[0].strip(".,").lower() if words else None
        correct = said == item.payload["answer"]
        return Score("correct" if correct else "wrong", said, item.payload["answer"], "first-word", "",
                     {"accuracy": float(correct), "brevity": 1.0 / max(len(words), 1)})

    def settings(self) -> dict[str, Any]:
        return {"task": self.id, "max_tokens": self.max_tokens, "stop": list(self.stop), "version": 1}


# ------------------------------------------------------------------------------------------------ the test


class AnsweringEngine:
    """Always gives one answer: enough to make the two models of a pair differ on every item."""

    def __init__(self, spec: ModelSpec, answer: str) -> None:
        self.answer = answer
        self.settings: dict[str, Any] = {"n_ctx": 512, "seed": 1, "n_threads": 1}
        self.info = ModelInfo(model_id=spec.id, path=f"/{spec.id}.gguf", sha256=spec.id[0] * 64, size_bytes=1,
                              prompt_mode="base", chat_template=None, chat_template_sha256=None)

    def identity(self) -> dict[str, Any]:  # as an in-process engine's, with a fixed build
        return engine_identity(self.info.sha256, self.info.chat_template_sha256, self.settings, build="fake")

    def render(self, prompt: Prompt) -> str:
        return render_base(prompt)

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def generate(self, request: GenerateRequest) -> Generation:
        return Generation(prompt_text=self.render(request.prompt), output=self.answer, prompt_tokens=5,
                          truncated_tokens=0, completion_tokens=len(self.answer.split()), finish_reason="stop",
                          seconds=0.0)

    def close(self) -> None: ...


class Quiet:
    def begin(self, *args: object) -> None: ...
    def advance(self, *args: object) -> None: ...
    def end(self) -> None: ...
    def note(self, text: str) -> None: ...


@pytest.fixture
def toy_task() -> Iterator[YesNoTask]:
    task = YesNoTask()
    register(task)
    try:
        yield task
    finally:
        unregister(task.id)


def test_a_task_from_one_module_runs_end_to_end_and_compares(toy_task: YesNoTask, tmp_path: Path) -> None:
    data = tmp_path / "toy.jsonl"
    answers = ["yes"] * 12 + ["no"] * 3
    data.write_text("".join(json.dumps({"id": f"q{i}", "question": f"Is {i} small?", "answer": a}) + "\n"
                            for i, a in enumerate(answers)), encoding="utf-8")
    assert get_task("toy_yesno") is toy_task
    bio = ModelSpec(id="bio", role="biomedical", source=LocalSource(Path("/bio.gguf")))
    gen = ModelSpec(id="gen", role="general", source=LocalSource(Path("/gen.gguf")))
    replies = {"bio": "Yes.", "gen": "No, it is not."}

    def factory(spec: ModelSpec, path: Path, options: RunOptions) -> AnsweringEngine:
        return AnsweringEngine(spec, replies[spec.id])

    db = open_database(tmp_path / "r.db")
    writer.record_pair(db, "toy", "bio", "gen", "a pair for the toy task")
    tasks = load_tasks([(get_task("toy_yesno").configure(), data)], None)
    summary = execute(db, load_config(REPO / "models.toml"), [ModelRole(bio, "biomedical"), ModelRole(gen, "general")],
                      tasks, {"bio": Path("/bio.gguf"), "gen": Path("/gen.gguf")}, RunOptions(), Quiet(),
                      engine_factory=factory)
    assert summary.status == "completed" and summary.generated == 2 * len(answers) and summary.errors == 0

    (report,) = compare_pairs(db, resamples=200)
    rows = {row.metric: row for row in report.rows}
    assert set(rows) == {"accuracy", "brevity"}  # what the task declares, nothing else
    accuracy, brevity = rows["accuracy"], rows["brevity"]
    assert accuracy.task == "toy_yesno" and accuracy.n == len(answers)
    assert accuracy.test == "mcnemar-exact" and accuracy.discordant == (12, 3)  # declared binary
    assert accuracy.biomedical.estimate == pytest.approx(12 / 15) and accuracy.general.estimate == pytest.approx(3 / 15)
    assert brevity.test == "paired-permutation"  # declared continuous
    assert brevity.biomedical.estimate == pytest.approx(1.0) and brevity.general.estimate == pytest.approx(0.25)


def test_the_new_task_gets_the_hostile_data_table_from_its_layout(toy_task: YesNoTask, tmp_path: Path) -> None:
    """Declaring ``data_layout`` is all it takes: the table every built-in task passes runs on this one too."""
    from .test_datafiles_all_tasks import check_layout

    check_layout(get_task("toy_yesno"), tmp_path)


def test_a_registered_id_cannot_be_taken_twice(toy_task: YesNoTask) -> None:
    with pytest.raises(UserError, match="already registered"):
        register(YesNoTask())
    with pytest.raises(UserError, match="already registered"):
        register(YesNoTask(id="jama"))


def test_options_the_toy_task_does_not_take_are_refused(toy_task: YesNoTask, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no prompt template to override"):
        toy_task.configure(prompts=tmp_path / "p.toml")
    with pytest.raises(UserError, match="no documents to order"):
        toy_task.configure(document_order="per-patient")
    assert toy_task.configure(reference_quirks=True) is toy_task


# ------------------------------------------------------------- a new metric: the module and its registry line


def _add_to_the_registry(monkeypatch: pytest.MonkeyPatch) -> str:
    """This file's task as a module of tasks/ with its line in the registry's module list (tasks/registry.py
    ``_MODULES``): exactly what adding a task to the package is."""
    name = "toy_yesno_module"
    module = types.ModuleType(f"medbench_local.tasks.{name}")
    module.TASKS = [YesNoTask()]  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(registry, "_MODULES", (*registry._MODULES, name))
    registry._registry.cache_clear()
    return name


def _columns(path: Path, view: str) -> list[str]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return [row[1] for row in conn.execute(f"pragma table_info({view})")]


def test_a_new_metric_is_its_task_module_and_the_registry_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    """Issue 21: 'brevity' is declared once, in the task's module. A database created before the task existed
    has no column for it; registered, a new database's views get it, the older database gets it the next time a
    writer opens it (a reader never changes it, and describes what the file holds), the glossary explains it from
    the declaration, and no migration was added for it: store/ never names a metric."""
    older = tmp_path / "older.db"
    open_database(older).conn.close()
    assert "brevity" not in _columns(older, "item_results")
    migrations = rows(older, "select name from _migrations order by rowid")
    try:
        name = _add_to_the_registry(monkeypatch)
        assert "toy_yesno" in task_ids() and name in registry._MODULES
        new = tmp_path / "new.db"
        open_database(new).conn.close()
        assert "brevity" in _columns(new, "item_results")
        assert {"biomedical_brevity", "general_brevity"} <= set(_columns(new, "paired_items"))
        assert rows(new, "select name from _migrations order by rowid") == migrations  # no migration for it
        described = tables()
        assert described["item_results"][1]["brevity"] == f"Metric: {BREVITY.description}"
        assert BREVITY.description in described["paired_items"][1]["general_brevity"]

        before = older.read_bytes()
        with reading(older) as db:
            assert "accuracy" in (stored_view_metrics(db) or ()) and "brevity" not in (stored_view_metrics(db) or ())
        out = tmp_path / "meta.json"
        invoke("view", "--db", str(older), "--metadata-out", str(out))
        columns = json.loads(out.read_text())["databases"]["older"]["tables"]["item_results"]["columns"]
        assert "accuracy" in columns and "brevity" not in columns
        assert older.read_bytes() == before
        open_database(older).conn.close()  # a writer: the views follow the registry
        assert "brevity" in _columns(older, "item_results")
    finally:
        monkeypatch.undo()
        registry._registry.cache_clear()
    assert "toy_yesno" not in task_ids()
    assert not [p.name for p in (PACKAGE / "store").glob("*.py") if "brevity" in p.read_text(encoding="utf-8")]
