"""A guard that proves (and enforces) that Python code opens no network connection while it is active.

How: a ``sys.addaudithook`` hook (PEP 578) sees every socket connect, bind, send and name lookup made through
Python's ``socket`` module, ``urllib`` and ``http.client``, whatever library makes it (httpx, requests,
huggingface-hub). While a guard is active such an event is recorded and refused with ``NetworkAccessBlocked``
(an OSError, so libraries treat it like an unreachable network). Unix-domain sockets are local and allowed.

Limits, stated plainly: audit hooks only see Python-level calls. Native code that opens sockets itself (a C or
Rust library) is invisible to them; llama.cpp does not open sockets. For a proof that covers native code too,
run inside a network namespace without interfaces (``unshare -rn medbench-local ...``) or on the air-gapped
machine itself.

Audit hooks cannot be removed, so one hook is installed per process, on first use, and does nothing (one list
check) while no guard is active.
"""

from __future__ import annotations

import socket
import sys
import threading
from types import TracebackType

_BLOCKED_EVENTS = frozenset({
    "socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg", "socket.getaddrinfo",
    "socket.gethostbyname", "socket.gethostbyaddr", "socket.getnameinfo", "urllib.Request",
    "http.client.connect", "ftplib.connect", "smtplib.connect", "imaplib.open", "poplib.connect",
    "nntplib.connect", "telnetlib.Telnet.open",
})
_SOCKET_EVENTS = frozenset({"socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg"})

_active: list["NetworkGuard"] = []
_lock = threading.Lock()
_installed = False


class NetworkAccessBlocked(ConnectionRefusedError):
    """Raised inside the code that tried to reach the network while a NetworkGuard was active."""


def _describe(event: str, args: tuple[object, ...]) -> str:
    shown = args[1:] if event in _SOCKET_EVENTS else args
    text = ", ".join(repr(a) for a in shown)
    return f"{event}({text[:200]})"


def _hook(event: str, args: tuple[object, ...]) -> None:
    if not _active or event not in _BLOCKED_EVENTS:
        return
    if event in _SOCKET_EVENTS and args:
        family = getattr(args[0], "family", None)
        if family is not None and family == getattr(socket, "AF_UNIX", object()):
            return  # a local Unix-domain socket, not the network
    attempt = _describe(event, args)
    for guard in list(_active):
        guard.attempts.append(attempt)
    raise NetworkAccessBlocked(f"network access blocked by medbench-local's offline guard: {attempt}")


def _install() -> None:
    global _installed
    with _lock:
        if not _installed:
            sys.addaudithook(_hook)
            _installed = True


class NetworkGuard:
    """``with NetworkGuard() as guard: ...`` refuses network access; ``guard.attempts`` lists what was tried."""

    def __init__(self) -> None:
        self.attempts: list[str] = []

    def __enter__(self) -> "NetworkGuard":
        _install()
        _active.append(self)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        _active.remove(self)

    @property
    def clean(self) -> bool:
        return not self.attempts
