"""Stopping a run on request: SIGINT (Ctrl-C), SIGTERM (kill, systemd, a batch scheduler) or SIGHUP (the
terminal went away) finish the item in flight; a second one aborts at once, even inside llama.cpp.

The orchestration that uses it is in runner.py; the engine side (the switch llama.cpp polls) is in
engine/abort.py.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from typing import Any

STOP_SIGNALS: tuple[str, ...] = ("SIGINT", "SIGTERM", "SIGHUP")


class StopFlag:
    """The first SIGINT, SIGTERM or SIGHUP: finish the item in flight, then stop (the run is marked
    ``interrupted``). A second one: abort now, even inside a long prompt evaluation.

    Why more than a signal handler: while llama.cpp evaluates a prompt, the main thread is inside one C call
    and Python runs signal handlers only after it returns (minutes for a long prompt on a CPU). So the
    C-level signal handler's wake-up byte (``signal.set_wakeup_fd``) is read by a small watcher thread, which
    runs while the main thread is in C; on the second stop signal it trips the abort switches that engines
    register (``on_abort``, engine/abort.py), and llama.cpp stops at its next poll; the engine then raises
    KeyboardInterrupt. Outside native code (``native_depth == 0``) the handler raises KeyboardInterrupt itself.
    """

    def __init__(self) -> None:
        self.requested = False
        self.aborted = False
        self.signal_name = ""
        self.native_depth = 0
        self._abort_hooks: list[Callable[[], None]] = []
        self._previous: dict[int, Any] = {}
        self._stop_numbers = {int(getattr(signal, name)) for name in STOP_SIGNALS if hasattr(signal, name)}
        self._wakeup: tuple[int, int] | None = None
        self._previous_wakeup = -1
        self._watcher: threading.Thread | None = None

    def __enter__(self) -> StopFlag:
        for number in sorted(self._stop_numbers):
            try:
                self._previous[number] = signal.signal(number, self._handle)
            except ValueError:  # not in the main thread (e.g. some test runners): plain KeyboardInterrupt
                return self
        self._start_watcher()
        return self

    def on_abort(self, hook: Callable[[], None]) -> Callable[[], None]:
        """Register a hook tripped by the second signal; returns a function that unregisters it."""
        self._abort_hooks.append(hook)
        return lambda: self._abort_hooks.remove(hook) if hook in self._abort_hooks else None

    def _abort(self) -> None:
        self.aborted = True
        for hook in list(self._abort_hooks):
            hook()

    def _handle(self, signum: int, frame: Any) -> None:
        if not self.requested:
            self.requested = True
            self.signal_name = signal.Signals(signum).name
            return
        already = self.aborted  # the watcher may have seen this signal first and tripped the engine
        self._abort()
        if self.native_depth == 0 and not already:
            raise KeyboardInterrupt

    def _start_watcher(self) -> None:
        try:
            read_end, write_end = os.pipe()
        except OSError:  # pragma: no cover - no file descriptors left: the handler alone still works
            return
        os.set_blocking(write_end, False)
        try:
            self._previous_wakeup = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
        except (ValueError, OSError):  # pragma: no cover
            os.close(read_end)
            os.close(write_end)
            return
        self._wakeup = (read_end, write_end)
        self._watcher = threading.Thread(target=self._watch, args=(read_end,), name="medbench-stop-watcher",
                                         daemon=True)
        self._watcher.start()

    def _watch(self, read_end: int) -> None:
        """Count stop signals as the C-level handler reports them; trip the engines on the second."""
        seen = 0
        while True:
            try:
                data = os.read(read_end, 64)
            except OSError:
                return
            if not data:
                return  # write end closed: the run is over
            seen += sum(1 for number in data if number in self._stop_numbers)
            if seen >= 2 and not self.aborted:
                self._abort()

    def __exit__(self, *exc: object) -> None:
        if self._wakeup is not None:
            read_end, write_end = self._wakeup
            signal.set_wakeup_fd(self._previous_wakeup)
            os.close(write_end)
            if self._watcher is not None:
                self._watcher.join(timeout=10)
            os.close(read_end)
            self._wakeup = None
        for number, previous in self._previous.items():
            signal.signal(number, previous)
        self._previous = {}
