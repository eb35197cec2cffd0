"""Progress of ``run`` in logs and pipes: a line when a task starts and then at most every 30 s of the
injected clock (never measured: the test moves a fake clock), plus the summary line at the end."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from medbench_local.cli.run import ProgressReporter
from medbench_local.config import LocalSource, ModelSpec, load_config
from medbench_local.engine.base import ContinuationScore, LoglikelihoodRequest, Loglikelihoods
from medbench_local.runner import ModelRole, RunOptions, execute, load_tasks
from medbench_local.store import close_database, open_database
from medbench_local.tasks import get_task
from medbench_local.tasks.base import Score

from .conftest import REPO
from .test_runner import FakeEngine


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _reporter() -> tuple[ProgressReporter, io.StringIO, FakeClock]:
    buffer, clock = io.StringIO(), FakeClock()
    console = Console(file=buffer, force_terminal=False, width=200, highlight=False)
    return ProgressReporter(console=console, clock=clock), buffer, clock


def test_a_log_gets_a_line_at_least_every_30_seconds() -> None:
    reporter, buffer, clock = _reporter()
    reporter.begin("big-model", "pubmedqa", 100, 10)
    assert buffer.getvalue().splitlines() == ["big-model · pubmedqa: 10 of 100 items already done, resuming",
                                              "big-model · pubmedqa: 10/100 items, starting"]
    for _ in range(5):  # items finish every 12 s: a line each time 30 s have passed since the last one
        clock.now += 12.0
        reporter.advance(Score("correct"), 20, 2.0)
    lines = buffer.getvalue().splitlines()[2:]
    # items at t+12, +24, +36 (line), +48, +60 (no: 24 s after the last line)
    assert lines == ["big-model · pubmedqa: 13/100 items, ETA 17m24s, 10.0 tok/s"]
    clock.now += 12.0  # t+72: 36 s after the last line
    reporter.advance(Score("wrong"), 10, 1.0)
    assert buffer.getvalue().splitlines()[-1] == "big-model · pubmedqa: 16/100 items, ETA 16m48s, 10.0 tok/s"
    reporter.end()
    assert buffer.getvalue().splitlines()[-1] == "big-model · pubmedqa: 6 items (correct 5, wrong 1), 10.0 tok/s"


def test_a_slow_item_is_reported_as_soon_as_it_finishes() -> None:
    reporter, buffer, clock = _reporter()
    reporter.begin("m", "jama", 3, 0)
    clock.now += 600.0  # one item took ten minutes
    reporter.advance(Score("correct"), 5, 600.0)
    assert buffer.getvalue().splitlines()[-1] == "m · jama: 1/3 items, ETA 20m00s, 0.0 tok/s"


def test_nothing_to_do_prints_no_progress_lines() -> None:
    reporter, buffer, clock = _reporter()
    reporter.begin("m", "jama", 5, 5)
    clock.now += 100.0
    reporter.end()
    assert buffer.getvalue().splitlines() == ["m · jama: 5 of 5 items already done, resuming"]


def _terminal_reporter() -> tuple[ProgressReporter, io.StringIO, FakeClock]:
    buffer, clock = io.StringIO(), FakeClock()
    console = Console(file=buffer, force_terminal=True, width=120, highlight=False)
    return ProgressReporter(console=console, clock=clock), buffer, clock


def test_a_fully_resumed_task_draws_no_bar_on_a_terminal() -> None:
    reporter, buffer, clock = _terminal_reporter()
    reporter.begin("m", "jama", 1, 1)
    assert reporter.progress is None
    reporter.end()
    text = buffer.getvalue()
    assert "1 of 1 item already done, resuming" in text and "━" not in text and "0/0" not in text


def test_a_terminal_bar_has_an_eta_from_the_first_finished_item() -> None:
    reporter, _, clock = _terminal_reporter()
    reporter.begin("m", "jama", 4, 0)
    assert reporter.progress is not None
    clock.now += 30.0
    reporter.advance(Score("correct"), 10, 5.0)
    (task,) = reporter.progress.tasks
    assert task.fields["eta"] == "1m30s"  # 30 s per item, 3 items left
    reporter.end()


def test_lines_about_one_item_say_item() -> None:
    reporter, buffer, clock = _reporter()
    reporter.begin("m", "jama", 1, 0)
    assert buffer.getvalue().splitlines() == ["m · jama: 0/1 item, starting"]
    clock.now += 1.0
    reporter.advance(Score("correct"), 3, 1.0)
    assert reporter.progress_line(clock.now) == "m · jama: 1/1 item, ETA 0s, 3.0 tok/s"
    reporter.end()
    assert buffer.getvalue().splitlines()[-1] == "m · jama: 1 item (correct 1), 3.0 tok/s"


def test_log_likelihood_items_report_prompt_tokens_per_second() -> None:
    """loglik generates nothing: its rate is the prompt tokens read per second, named so (issue 19: the lines said
    "0.0 tok/s"); a generation task after it in the same run is back to generated tokens."""
    reporter, buffer, clock = _reporter()
    reporter.begin("m", "jama (loglik)", 3, 0)
    clock.now += 1.0
    reporter.advance(Score("correct", method="loglik:sum"), 400, 0.5)
    assert reporter.progress_line(clock.now) == "m · jama (loglik): 1/3 items, ETA 2s, 800.0 prompt tok/s"
    reporter.end()
    assert buffer.getvalue().splitlines()[-1] == "m · jama (loglik): 1 item (correct 1), 800.0 prompt tok/s"
    reporter.begin("m", "jama", 1, 0)
    clock.now += 1.0
    reporter.advance(Score("correct", method="explicit"), 4, 1.0)
    assert reporter.progress_line(clock.now) == "m · jama: 1/1 item, ETA 0s, 4.0 tok/s"


def test_a_loglik_run_hands_the_reporter_the_prompt_tokens_it_read(tmp_path: Path) -> None:
    """Through the real runner with a fake engine: every loglik item reports its evaluated prompt tokens and
    the seconds it took, never 0 tokens."""

    class Loglik(FakeEngine):
        def loglikelihood(self, request: LoglikelihoodRequest) -> Loglikelihoods:
            return Loglikelihoods(prompt_text="ctx", scores=tuple(ContinuationScore(c, -1.0 - i, 1, 2, i == 0)
                                                                   for i, c in enumerate(request.continuations)),
                                  prompt_tokens=120, truncated_tokens=0, prompt_tokens_evaluated=90,
                                  continuation_tokens_evaluated=4, seconds=0.5)

    class Recording:
        def __init__(self) -> None:
            self.advanced: list[tuple[str, int, float]] = []

        def begin(self, *args: object) -> None: ...
        def end(self) -> None: ...
        def note(self, text: str) -> None: ...

        def advance(self, score: Score, tokens: int, seconds: float) -> None:
            self.advanced.append((score.method, tokens, seconds))

    spec = ModelSpec(id="fake", role="general", source=LocalSource(Path("/fake.gguf")))
    tasks = load_tasks([(get_task("jama"), REPO / "bench_data" / "jama")], 3)
    reporter = Recording()
    handle = open_database(tmp_path / "r.db")
    try:
        execute(handle, load_config(REPO / "models.toml"), [ModelRole(spec, "general")], tasks,
                {"fake": Path("/fake.gguf")}, RunOptions(scoring=("loglik",)), reporter,
                engine_factory=lambda s, p, o: Loglik(s))
    finally:
        close_database(handle)
    assert reporter.advanced == [("loglik:sum", 90, 0.5)] * 3
