"""An abort switch that llama.cpp polls while it computes, so a second Ctrl-C is obeyed within moments.

Why: evaluating a long prompt is one C call (``llama_decode``) that can take minutes on a CPU, and Python runs
signal handlers only between bytecodes, i.e. after that call returns. llama.cpp accepts an abort callback that
its CPU backend calls after every node of the compute graph (hundreds of times per token); returning true
stops the decode, which then reports "aborted".

Why the callback is C, not Python: a Python callback costs about a microsecond per call (the GIL, a frame),
several percent of the generation time of a small model. The switch is a two-byte buffer ``[flag, 0]`` and
the callback is the C library's ``strlen``: it returns 0 while the flag byte is 0 and 1 once it is set, which
the caller reads as the boolean "abort" (a ``bool`` return lives in the low byte of the return register on
every platform llama.cpp supports). Nothing runs in Python during the computation; the flag is set by
whatever notices the second signal first: the signal handler in the main thread, or, while the main thread
is inside llama.cpp, the stop watcher thread (runner.StopFlag).

llama-cpp-python turns an aborted decode into a RuntimeError; ``guard`` turns that into KeyboardInterrupt
(the item is abandoned by the user, not failed by the model, so it must never be stored as an "error").
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def _c_flag_reader() -> Any:
    """``strlen`` from the C library, typed as llama.cpp's ``ggml_abort_callback``; None if unavailable."""
    import llama_cpp

    try:
        if sys.platform == "win32":  # pragma: no cover - not exercised here
            libc = ctypes.cdll.msvcrt
        else:
            libc = ctypes.CDLL(None)
            if not hasattr(libc, "strlen"):  # pragma: no cover - static or unusual builds
                libc = ctypes.CDLL(ctypes.util.find_library("c"))
        return ctypes.cast(libc.strlen, llama_cpp.ggml_abort_callback)
    except (OSError, AttributeError, TypeError):  # pragma: no cover
        return None


class AbortSwitch:
    """One per loaded model: ``install(ctx)`` once, ``trip()`` from any thread, ``guard()`` around calls."""

    def __init__(self) -> None:
        self._flag = ctypes.create_string_buffer(2)  # [flag, NUL]: strlen is 0 (go on) or 1 (abort)
        self._callback: Any = None  # keep the function pointer object alive while the context uses it

    def install(self, ctx: Any) -> bool:
        """Register the C poll on a llama.cpp context; False where the bindings do not offer it."""
        try:
            import llama_cpp

            callback = _c_flag_reader()
            if callback is None:
                return False
            llama_cpp.llama_set_abort_callback(ctx, callback, ctypes.cast(self._flag, ctypes.c_void_p))
        except (AttributeError, TypeError, ctypes.ArgumentError):  # pragma: no cover - older bindings
            return False
        self._callback = callback
        return True

    @property
    def tripped(self) -> bool:
        return self._flag.raw[0] != 0

    def trip(self) -> None:
        """Ask llama.cpp to stop at its next poll. Safe from a signal handler or another thread."""
        self._flag[0] = b"\x01"

    def reset(self) -> None:
        self._flag[0] = b"\x00"

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
