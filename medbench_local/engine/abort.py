"""An abort switch that llama.cpp polls while it computes, so a second Ctrl-C is obeyed within moments.

Why: evaluating a long prompt is one C call (``llama_decode``) that can take minutes on a CPU, and Python
runs signal handlers only between bytecodes. llama.cpp accepts an abort callback that its CPU backend calls
between the nodes of the compute graph; returning true makes the decode stop and report "aborted". The
callback here only reads a flag that the signal handler sets (``trip``), so it is cheap and never raises.
llama-cpp-python turns the aborted decode into a RuntimeError, which ``guard`` turns into KeyboardInterrupt
(never a stored "error" item: the item was abandoned by the user, not failed by the model).
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class AbortSwitch:
    """One per loaded model. ``install(ctx)`` once, ``trip()`` from a signal handler, ``guard()`` around calls."""

    def __init__(self) -> None:
        self.tripped = False
        self._callback: Any = None  # keep the ctypes callback alive as long as the context uses it

    def install(self, ctx: Any) -> bool:
        """Register the callback on a llama.cpp context; False where the bindings do not offer it."""
        try:
            import llama_cpp

            self._callback = llama_cpp.ggml_abort_callback(self._poll)
            llama_cpp.llama_set_abort_callback(ctx, self._callback, None)
        except (AttributeError, TypeError, ctypes.ArgumentError):  # pragma: no cover - older bindings
            self._callback = None
            return False
        return True

    def _poll(self, _data: Any) -> bool:
        return self.tripped

    def trip(self) -> None:
        self.tripped = True

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Turn whatever a tripped computation raises (or its normal return) into KeyboardInterrupt."""
        try:
            yield
        except Exception:
            if self.tripped:
                raise KeyboardInterrupt from None
            raise
        if self.tripped:
            raise KeyboardInterrupt
