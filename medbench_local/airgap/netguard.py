"""A guard that proves (and enforces) that Python code opens no network connection while it is active.

How: a ``sys.addaudithook`` hook (PEP 578) sees every socket connect, bind, send and name lookup made through
Python's ``socket`` module, ``urllib`` and ``http.client``, whatever library makes it (httpx, requests,
huggingface-hub). While a guard is active such an event is recorded and refused with ``NetworkAccessBlocked``
(an OSError, so libraries treat it like an unreachable network). Unix-domain sockets are local and allowed.

Limits, stated plainly: audit hooks only see Python-level calls. Native code that opens sockets itself (a C or
Rust library) is invisible to them; llama.cpp does not open sockets. For a proof that covers native code too,
run inside a network namespace without interfaces (``unshare -rn medbench-local ...``) or on the air-gapped
machine itself.

A served run (``engine = "openai"``) must reach its server and nothing else: ``NetworkGuard(allow=["host:port"])``
lets through name lookups of exactly those hosts and connections to exactly their addresses and ports (resolved
when the guard is entered, before it blocks anything); everything else is refused as before.

Audit hooks cannot be removed, so one hook is installed per process, on first use, and does nothing (one list
check) while no guard is active.
"""

from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Iterable
from types import TracebackType

_BLOCKED_EVENTS = frozenset({
    "socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg", "socket.getaddrinfo",
    "socket.gethostbyname", "socket.gethostbyaddr", "socket.getnameinfo", "urllib.Request",
    "http.client.connect", "ftplib.connect", "smtplib.connect", "imaplib.open", "poplib.connect",
    "nntplib.connect", "telnetlib.Telnet.open",
})
_SOCKET_EVENTS = frozenset({"socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg"})

_active: list[NetworkGuard] = []
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
    if all(guard.permits(event, args) for guard in _active):
        return
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


def _split_host(endpoint: str) -> tuple[str, int]:
    host, _, port = endpoint.rpartition(":")
    return host.strip("[]"), int(port)


class NetworkGuard:
    """``with NetworkGuard() as guard: ...`` refuses network access; ``guard.attempts`` lists what was tried.
    ``allow``: "host:port" endpoints that may be reached (a served model's server), nothing else."""

    def __init__(self, allow: Iterable[str] = ()) -> None:
        self.attempts: list[str] = []
        self.allowed = tuple(dict.fromkeys(allow))
        self._names: set[tuple[str, int]] = set()
        self._addresses: set[tuple[str, int]] = set()

    def permits(self, event: str, args: tuple[object, ...]) -> bool:
        """Whether this event reaches only an allowed endpoint (a lookup of its name, a connection to it)."""
        if not self.allowed:
            return False
        if event == "socket.getaddrinfo" and len(args) >= 2:
            host, port = args[0], args[1]
            host = host.decode() if isinstance(host, bytes) else host
            try:
                port = int(port) if port is not None else None  # type: ignore[arg-type]
            except (TypeError, ValueError):
                return False
            return (host, port) in self._names or (host, port) in self._addresses
        if event == "socket.connect" and len(args) >= 2 and isinstance(args[1], tuple) and len(args[1]) >= 2:
            return (str(args[1][0]), int(args[1][1])) in self._addresses
        return False

    def __enter__(self) -> NetworkGuard:
        for endpoint in self.allowed:  # resolved now, while nothing is blocked yet
            host, port = _split_host(endpoint)
            self._names.add((host, port))
            try:
                infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except OSError:
                infos = []
            self._addresses.update((str(info[4][0]), int(info[4][1])) for info in infos)
        _install()
        _active.append(self)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        _active.remove(self)

    @property
    def clean(self) -> bool:
        return not self.attempts
