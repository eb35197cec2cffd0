"""Progress of ``run`` in logs and pipes: a line when a task starts and then at most every 30 s of the
injected clock (never measured: the test moves a fake clock), plus the summary line at the end."""

from __future__ import annotations

import io

from rich.console import Console

from medbench_local.cli.run import ProgressReporter
from medbench_local.tasks.base import Score


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
