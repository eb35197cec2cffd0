"""Several items in flight at once, for engines that serve concurrent requests (engine = "openai").

Why a pool of threads and not asyncio: the engine protocol is synchronous and the work is waiting on a server;
a few threads blocked in HTTP cost nothing on the client. Why the database stays in the main thread: SQLite
connections are not shared across threads here, and one transaction per item (the resume guarantee) is easiest
to prove when only one thread writes. So worker threads only *compute* (render, tokenize, ask the server);
the main thread claims items before submitting them and *commits* each result as it arrives, in whatever order
requests finish. A resumed run does not care about order: it skips what is stored.

Stopping keeps the sequential semantics: the first stop signal stops submitting, lets the items in flight
finish and commits them; a second one raises KeyboardInterrupt in the main thread (the engine's abort hook has
already closed its connections), and whatever was still in flight is dropped uncommitted. An error that means
the server is gone (a UserError such as ServerUnavailable) stops submitting too; the items in flight are
drained and committed, then the error is raised.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import AbstractContextManager, ExitStack
from typing import Any, Protocol, TypeVar

from .errors import UserError

Item = TypeVar("Item")
POLL_SECONDS = 0.5  # the main thread wakes this often to notice a stop request while it waits


class StopState(Protocol):
    requested: bool


def run_pooled(items: Iterable[Item], *, workers: int, stop: StopState,
               claim: Callable[[Item], AbstractContextManager[bool]],
               compute: Callable[[Item], Any], commit: Callable[[Item, Any], None]) -> None:
    """Compute up to ``workers`` items at once, commit each in this thread as it finishes.

    ``claim(item)``: a context manager yielding whether this run should do the item now (held for the item's
    whole life, released after its commit); ``compute(item)`` runs in a worker thread and returns what
    ``commit(item, result)`` stores."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="medbench-item")
    in_flight: dict[Future[Any], tuple[Item, ExitStack]] = {}
    pending = iter(items)
    failure: BaseException | None = None
    exhausted = False
    try:
        while True:
            while failure is None and not exhausted and not stop.requested and len(in_flight) < workers:
                item = next(pending, _END)
                if item is _END:
                    exhausted = True
                    break
                stack = ExitStack()
                if not stack.enter_context(claim(item)):  # type: ignore[arg-type]
                    stack.close()
                    continue
                in_flight[pool.submit(compute, item)] = (item, stack)  # type: ignore[arg-type]
            if not in_flight:
                break
            done, _ = wait(list(in_flight), timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)
            for future in done:
                item, stack = in_flight.pop(future)
                with stack:
                    try:
                        result = future.result()
                    except UserError as exc:  # the server went away or refuses: stop after the drain
                        failure = failure or exc
                        continue
                    except Exception as exc:
                        failure = failure or exc
                        continue
                    commit(item, result)
        if failure is not None:
            raise failure
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        for _, stack in in_flight.values():
            stack.close()
        raise
    pool.shutdown(wait=True)


_END: Any = object()
