"""The door in front of ``medbench-local view``'s Datasette: only this user's browser, on the address it serves.

Why: results hold prompts and outputs, possibly patient text. Binding to 127.0.0.1 is not enough:

* **DNS rebinding**: any web page the user visits while ``view`` runs can point its own host name at
  127.0.0.1 and read the pages as "same origin". Such a request carries the attacker's host name in its
  ``Host`` header, so only requests whose Host names the loopback address (``127.0.0.1``, ``localhost`` or
  ``[::1]``, with the port served or the local port of an SSH forward) are answered; anything else gets 421
  and no data.
* **Other accounts on a shared machine** reach 127.0.0.1 too. So, as Jupyter does, ``view`` prints a URL with a
  random token (``secrets.token_urlsafe(32)``); the first request with the right token sets an HttpOnly,
  SameSite=Strict cookie and sends the browser on to the same address without the token; every other request
  without that cookie gets 403 and a short page that says to open the printed address. Tokens and cookies are
  compared with :func:`hmac.compare_digest`.

Why the token answer is a page that moves on by itself (``<meta http-equiv="refresh">``) and not a 302: a
SameSite=Strict cookie is not sent on a redirect whose navigation another site started (a file:// page, a link
in a mail). ``view --open`` opens the browser on a local redirect file, as Jupyter does, so that the token is
never on the browser's command line; behind a 302 that first page would then be refused. The page's own
refresh is a same-site navigation, so the cookie goes with it (tests/test_view.py follows the redirect file in a
real Chromium where one is installed).

This module is plain ASGI (no Datasette import): ``view_server.py`` installs it as Datasette's
``asgi_wrapper`` in the Datasette child process only; the token reaches that process in an environment
variable, never on its command line (other accounts can read /proc/*/cmdline, not /proc/*/environ).
"""

from __future__ import annotations

import hashlib
import hmac
import html
import re
import urllib.parse
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

TOKEN_ENV = "MEDBENCH_VIEW_TOKEN"
"""The environment variable that carries the token from ``medbench-local view`` to its Datasette process."""

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

_REFUSED = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>medbench-local view: open the printed address</title></head>
<body style="font-family: sans-serif; max-width: 40em; margin: 3em auto">
<h1>Open the address that <code>medbench-local view</code> printed</h1>
<p>This results browser answers only the browser that opened the address printed when it started
(<code>http://127.0.0.1:PORT/?token=...</code>). Copy that address from the terminal where
<code>medbench-local view</code> runs; it works once per browser, which then remembers it until it is closed.</p>
</body></html>
"""

_MISDIRECTED = ("This medbench-local view answers only requests for its own address (127.0.0.1:{port} or "
                "localhost:{port}, or an SSH forward to it).\n")

_WELCOME = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="0; url={url}">
<title>medbench-local view</title></head>
<body style="font-family: sans-serif"><p><a href="{url}">Continue to the results</a></p></body></html>
"""


def cookie_name(port: int) -> str:
    """One cookie per port: cookies are shared by every port of 127.0.0.1, two views must not mix."""
    return f"medbench_view_{port}"


def cookie_value(token: str) -> str:
    """The cookie proves the token was seen, without being the token (it never shows up in a Cookie header)."""
    return hmac.new(token.encode("utf-8"), b"medbench-local view cookie", hashlib.sha256).hexdigest()


LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "[::1]"})
_PORT = re.compile(r"[0-9]{1,5}")


def host_allowed(host: str) -> bool:
    """Whether a Host header names this machine's loopback address: 127.0.0.1, localhost or [::1], with any port
    or none. A rebinding page's requests name the page's own host, so the name is what matters; the port is left
    free because an SSH forward (``ssh -L 9000:127.0.0.1:8001``) makes the browser say the local port."""
    if not host.isascii():
        return False
    name, colon, port = host.rpartition(":") if not host.endswith("]") else (host, "", "")
    if not colon:
        name = host
    elif not _PORT.fullmatch(port):
        return False
    return name.lower() in LOOPBACK_NAMES


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode("utf-8"))


class Guard:
    """ASGI middleware: the Host check, then the token or the cookie; only then the wrapped app."""

    def __init__(self, app: App, *, token: str, port: int) -> None:
        if len(token) < 32:
            raise ValueError("the view token is too short")
        self.app = app
        self.token = token
        self.port = port
        self.cookie = cookie_name(port)
        self.cookie_value = cookie_value(token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":  # Datasette has no websockets; nothing else is served
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            return
        headers = _headers(scope)
        hosts = headers.get("host", [])
        if len(hosts) != 1 or not host_allowed(hosts[0]):
            await _respond(send, 421, _MISDIRECTED.format(port=self.port), "text/plain")
            return
        tokens = _query_values(scope, "token")
        if tokens:
            target = _without_token(scope)
            # Uvicorn logs the request line from this same scope when the answer starts: keep the token out
            # of logs (its access log goes to stdout, which may be a file other accounts can read).
            scope["query_string"] = _redacted(scope.get("query_string", b""))
            if len(tokens) == 1 and _same(tokens[0], self.token):
                await self._welcome(target, send)
            else:
                await _respond(send, 403, _REFUSED, "text/html")
            return
        if any(_same(value, self.cookie_value) for value in _cookies(headers, self.cookie)):
            await self.app(scope, receive, send)
            return
        await _respond(send, 403, _REFUSED, "text/html")

    async def _welcome(self, target: str | None, send: Send) -> None:
        """Set the cookie and move on to the same address without the token (see the module docstring)."""
        if target is None:
            await _respond(send, 403, _REFUSED, "text/html")
            return
        cookie = f"{self.cookie}={self.cookie_value}; Path=/; HttpOnly; SameSite=Strict"
        body = _WELCOME.format(url=html.escape(target, quote=True))
        await _respond(send, 200, body, "text/html", [(b"set-cookie", cookie.encode("ascii")),
                                                     (b"referrer-policy", b"no-referrer")])


def _headers(scope: Scope) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for name, value in scope.get("headers", []):
        found.setdefault(name.decode("latin-1").lower(), []).append(value.decode("latin-1"))
    return found


def _query_pairs(scope: Scope) -> list[tuple[str, str]]:
    return urllib.parse.parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True,
                                  errors="surrogateescape")


def _query_values(scope: Scope, name: str) -> list[str]:
    return [value for key, value in _query_pairs(scope) if key == name]


def _cookies(headers: dict[str, list[str]], name: str) -> list[str]:
    """Every value the Cookie headers give ``name`` (a plain split: cookie values here are hex)."""
    values = []
    for header in headers.get("cookie", []):
        for part in header.split(";"):
            key, _, value = part.strip().partition("=")
            if key == name:
                values.append(value.strip().strip('"'))
    return values


def _is_token(piece: str) -> bool:
    return urllib.parse.unquote_plus(piece.partition("=")[0]) == "token"


def _redacted(query: bytes) -> bytes:
    pieces = query.decode("latin-1").split("&")
    return "&".join("token=(hidden)" if _is_token(piece) else piece for piece in pieces).encode("latin-1")


def _without_token(scope: Scope) -> str | None:
    """The same path and query without ``token=``, as a path on this server; None for a path that is not plain
    printable ASCII (never put into a header or a page). Leading slashes are folded into one, so the target can
    never be read as another host (``//example.org``)."""
    raw = scope.get("raw_path") or scope["path"].encode("utf-8")
    if any(byte < 0x21 or byte > 0x7E for byte in raw):
        return None
    path = "/" + raw.decode("ascii").lstrip("/\\")
    kept = [piece for piece in scope.get("query_string", b"").decode("latin-1").split("&")
            if piece and not _is_token(piece)]
    query = "&".join(kept)
    if any(ord(char) < 0x21 or ord(char) > 0x7E for char in query):
        return None
    return path + ("?" + query if query else "")


async def _respond(send: Send, status: int, body: str, content_type: str,
                   extra: list[tuple[bytes, bytes]] | None = None) -> None:
    data = body.encode("utf-8")
    headers = [(b"content-type", f"{content_type}; charset=utf-8".encode("ascii")),
               (b"content-length", str(len(data)).encode("ascii")),
               (b"cache-control", b"no-store"), (b"x-content-type-options", b"nosniff"),
               *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})
