"""Orchestration with a fake engine (unit level): failures become 'error' items and the run goes on; a scoring
mode is one strategy module (runner/modes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from medbench_local.config import LocalSource, ModelSpec, load_config
from medbench_local.engine.base import GenerateRequest, Generation, ModelInfo
from medbench_local.engine.identity import identity as engine_identity
from medbench_local.errors import UserError
from medbench_local.prompting import Prompt
from medbench_local.prompting.prompt_format import render_base
from medbench_local.runner import ModelRole, RunOptions, check_scoring, execute, load_tasks
from medbench_local.runner.context import Evaluation, ItemOutcome, NativeCall, ScoringMode
from medbench_local.runner.modes import MODES, SCORING
from medbench_local.store import open_database
from medbench_local.store.queries import latest_evaluation, summarize_evaluation
from medbench_local.tasks import Item, Score, get_task

from .conftest import REPO, rows


class FakeEngine:
    """Answers 'B' except for items whose case mentions 'anaphylaxis', where generation fails."""

    def __init__(self, spec: ModelSpec) -> None:
        self.settings: dict[str, Any] = {"n_ctx": 2048, "seed": 1, "n_threads": 1}
        self.info = ModelInfo(model_id=spec.id, path="/fake.gguf", sha256="f" * 64, size_bytes=1,
                              prompt_mode="base", chat_template=None, chat_template_sha256=None)
        self.closed = False

    def identity(self) -> dict[str, Any]:  # as an in-process engine's, with a fixed build
        return engine_identity(self.info.sha256, self.info.chat_template_sha256, self.settings, build="fake")

    def render(self, prompt: Prompt) -> str:
        return render_base(prompt)

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def generate(self, request: GenerateRequest) -> Generation:
        text = self.render(request.prompt)
        if "epinephrine" in text.lower():
            raise RuntimeError("llama_decode returned -1 (context overflow)")
        return Generation(prompt_text=text, output=" B.", prompt_tokens=10, truncated_tokens=0,
                          completion_tokens=2, finish_reason="stop", seconds=0.01)

    def close(self) -> None:
        self.closed = True


class SilentReporter:
    def begin(self, *args: object) -> None: ...
    def advance(self, *args: object) -> None: ...
    def end(self) -> None: ...
    def note(self, text: str) -> None: ...


def test_generation_failure_is_an_error_item_and_the_run_goes_on(tmp_path: Path) -> None:
    config = load_config(REPO / "models.toml")
    spec = ModelSpec(id="fake", role="general", source=LocalSource(Path("/fake.gguf")))
    engines: list[FakeEngine] = []

    def factory(spec: ModelSpec, path: Path, options: RunOptions) -> FakeEngine:
        engines.append(FakeEngine(spec))
        return engines[-1]

    tasks = load_tasks([(get_task("jama"), REPO / "bench_data" / "jama")], None)
    db = open_database(tmp_path / "r.db")
    summary = execute(db, config, [ModelRole(spec, "general")], tasks, {"fake": Path("/fake.gguf")},
                      RunOptions(), SilentReporter(), engine_factory=factory)
    assert summary.status == "completed" and summary.errors >= 1 and summary.generated + summary.errors == 10
    assert engines and all(e.closed for e in engines)

    errors = rows(tmp_path / "r.db", "select g.error, g.finish_reason, g.output, s.metrics from generations g "
                                     "join scores s on s.generation_id = g.id where s.outcome = 'error'")
    assert len(errors) == summary.errors
    for message, finish, output, metrics in errors:
        assert "context overflow" in message and finish == "error" and output is None
        assert metrics == '{"accuracy": 0.0}'
    result = summarize_evaluation(db, latest_evaluation(db, "fake", "jama") or "")
    assert result.outcomes["error"] == summary.errors
    gold_b = sum(1 for item in tasks[0].items if item.payload["answer"] == "B")
    assert result.accuracy == gold_b / 10  # errors count as not correct; every 'B' item was answered right


# ------------------------------------------------------------------------------------- scoring modes (issue 21)

class FirstOption(ScoringMode):
    """A scoring mode written in one module for this test: it asks the engine nothing and always picks the first
    option, so what is stored shows the mode's own choices (its settings, its answer, its progress count)."""

    name = "first-option"
    needs_choices = True

    def task_settings(self, target: str) -> dict[str, Any]:
        return {"scoring_mode": self.name}

    def ask(self, evaluation: Evaluation, item: Item, outcome: ItemOutcome, native: NativeCall) -> None:
        choices = evaluation.task.choices(item, evaluation.context)
        outcome.choices, outcome.prompt = choices, choices.context
        with native():
            outcome.generation = Generation(prompt_text=evaluation.engine.render(choices.context),
                                            output=next(iter(choices.options)), prompt_tokens=3, truncated_tokens=0,
                                            completion_tokens=0, finish_reason="stop", seconds=0.0)

    def score(self, evaluation: Evaluation, item: Item, outcome: ItemOutcome) -> tuple[Score, Generation]:
        assert outcome.choices is not None and outcome.generation is not None
        key = outcome.generation.output
        return (Score("correct" if key == outcome.choices.gold else "wrong", key, outcome.choices.gold, "first",
                      metrics=outcome.choices.metrics_for(key)), outcome.generation)


def test_a_new_scoring_mode_is_one_module_and_a_registry_line(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The item loop has no branch on the mode: a strategy registered in runner/modes runs end to end, is its own
    evaluation (its settings are in the key) and is refused for free-text tasks like the built-in choice modes."""
    monkeypatch.setitem(MODES, FirstOption.name, FirstOption())
    config = load_config(REPO / "models.toml")
    spec = ModelSpec(id="fake", role="general", source=LocalSource(Path("/fake.gguf")))
    tasks = load_tasks([(get_task("jama"), REPO / "bench_data" / "jama")], 4)
    check_scoring(tasks, ("generate", FirstOption.name))
    with pytest.raises(UserError, match="is not multiple choice: --scoring first-option"):
        check_scoring(load_tasks([(get_task("meqsum"), REPO / "bench_data" / "meqsum")], 1), (FirstOption.name,))
    db = open_database(tmp_path / "r.db")
    summary = execute(db, config, [ModelRole(spec, "general")], tasks, {"fake": Path("/fake.gguf")},
                      RunOptions(scoring=("generate", FirstOption.name)), SilentReporter(),
                      engine_factory=lambda spec, path, options: FakeEngine(spec))
    assert summary.generated + summary.errors == 8 and summary.status == "completed"
    stored = {json.loads(settings)["task"].get("scoring_mode", "generate"): key for key, settings in
              rows(tmp_path / "r.db", "select key, settings from evaluations")}
    assert set(stored) == {"generate", FirstOption.name}
    assert rows(tmp_path / "r.db", "select distinct s.extracted, s.method from scores s where s.evaluation = ?",
                stored[FirstOption.name]) == [("A", "first")]


def test_the_scoring_registry_is_what_run_offers_and_tasks_read() -> None:
    """--scoring lists every registered mode (and 'both'); the key of a choice mode carries the setting that
    analysis reads back (tasks.loglik_scoring.scoring_mode); generate adds nothing, so old keys stay valid."""
    from medbench_local.cli.run import run_command
    from medbench_local.tasks.loglik_scoring import scoring_mode

    choices = next(p for p in run_command.params if p.name == "scoring").type.choices  # type: ignore[attr-defined]
    assert list(choices) == ["generate", "loglik", "both", "constrained"] == list(SCORING)
    assert set(MODES) == {m for modes in SCORING.values() for m in modes}
    assert MODES["generate"].task_settings("letter") == {}
    for name, mode in MODES.items():
        assert scoring_mode(mode.task_settings("text")) == name and mode.needs_choices == (name != "generate")
