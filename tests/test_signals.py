"""The stop signals' plumbing (unit level): which signal does what, and that the watcher thread trips the
engines' abort switches from the C-level wake-up bytes even when the main thread cannot run Python."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from medbench_local.signals import StopFlag


@pytest.mark.parametrize("name", ["SIGINT", "SIGTERM", "SIGHUP"])
def test_the_first_stop_signal_only_asks_to_stop(name: str) -> None:
    tripped: list[str] = []
    with StopFlag() as stop:
        stop.on_abort(lambda: tripped.append("abort"))
        os.kill(os.getpid(), getattr(signal, name))
        signal.pthread_sigmask(signal.SIG_BLOCK, [])  # a C call: the pending Python handler runs after it
        assert stop.requested and stop.signal_name == name and not stop.aborted and not tripped


@pytest.mark.parametrize("second", ["SIGINT", "SIGTERM", "SIGHUP"])
def test_a_second_stop_signal_outside_native_code_raises_keyboard_interrupt(second: str) -> None:
    with StopFlag() as stop:
        stop.on_abort(lambda: None)
        os.kill(os.getpid(), signal.SIGINT)
        signal.pthread_sigmask(signal.SIG_BLOCK, [])
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), getattr(signal, second))
            signal.pthread_sigmask(signal.SIG_BLOCK, [])
        assert stop.aborted


def test_inside_native_code_the_second_signal_trips_the_engine_instead_of_raising() -> None:
    tripped = threading.Event()
    with StopFlag() as stop:
        stop.on_abort(tripped.set)
        stop.native_depth = 1
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
        signal.pthread_sigmask(signal.SIG_BLOCK, [])  # no KeyboardInterrupt here
        assert tripped.wait(30) and stop.aborted


def test_the_watcher_trips_the_engine_from_the_wakeup_bytes_alone() -> None:
    """What happens while the main thread is inside llama.cpp: the Python handler cannot run, only the C-level
    handler writes the signal number to the wake-up fd. Here the bytes are written directly, no handler runs."""
    tripped = threading.Event()
    with StopFlag() as stop:
        stop.on_abort(tripped.set)
        assert stop._wakeup is not None
        os.write(stop._wakeup[1], bytes([signal.SIGINT]))
        assert not tripped.wait(0.2)  # one signal is only a request (this wait paces the check, decides nothing)
        os.write(stop._wakeup[1], bytes([signal.SIGTERM]))
        assert tripped.wait(30)
        assert stop.aborted and not stop.requested  # the handler never ran: only the watcher saw them


def test_handlers_and_wakeup_fd_are_restored() -> None:
    before = {n: signal.getsignal(n) for n in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    with StopFlag():
        assert signal.getsignal(signal.SIGTERM) != before[signal.SIGTERM]
    assert {n: signal.getsignal(n) for n in before} == before
    assert signal.set_wakeup_fd(-1) == -1  # nothing left registered
