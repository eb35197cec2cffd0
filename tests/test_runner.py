"""Orchestration with a fake engine (unit level): failures become 'error' items and the run goes on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medbench_local.engine.identity import identity as engine_identity
from medbench_local.config import LocalSource, ModelSpec, load_config
from medbench_local.engine.base import GenerateRequest, Generation, ModelInfo
from medbench_local.prompting import Prompt
from medbench_local.prompting.prompt_format import render_base
from medbench_local.runner import ModelRole, RunOptions, execute, load_tasks
from medbench_local.store import open_database
from medbench_local.store.queries import latest_evaluation, summarize_evaluation
from medbench_local.tasks import get_task

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
