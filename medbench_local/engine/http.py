"""A small JSON-over-HTTP client for served models: bounded retries, errors that say what to do.

Why its own module: the served engine (openai_compat.py) should read as "what we ask the server", not as
transport plumbing. Three kinds of failure are told apart, because they lead to different outcomes:

* ``ServerUnavailable`` (a UserError): the server cannot be reached even after the retries (refused
  connection, DNS failure, connection dropped). The run stops; everything committed stays, and rerunning the
  same command resumes. Recording every remaining item as an error instead would need ``--retry-errors``.
* ``ServerRefused`` (a UserError): the server answers but will not serve us (401/403: the API key; 404 on a
  route we need). One line, before the database is touched when it happens in the preflight.
* ``ServerRequestError`` (a RuntimeError): one request failed (a 4xx for this prompt, a 5xx after the retries,
  no answer within ``timeout_s``). The runner stores the item as an ``error`` item and goes on.

Retries: connection errors and 5xx answers are retried ``retries`` times with exponential backoff (0.5 s, 1 s,
2 s, ... capped at 8 s); the sleep function is injectable so tests do not wait. A read timeout is not retried:
the request may still be running on the server, and a second copy would only double its load.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx

from ..errors import UserError

BACKOFF_START_S = 0.5
BACKOFF_CAP_S = 8.0
MAX_ERROR_CHARS = 300  # of a server's error text quoted in a message


class ServerUnavailable(UserError):
    """The server could not be reached (after retries)."""


class ServerRefused(UserError):
    """The server answered, but refuses what the run needs (authentication, a route, the model name)."""


class ServerRequestError(RuntimeError):
    """One request failed; the item it belonged to becomes an ``error`` item."""


def backoff_delays(retries: int) -> list[float]:
    """The waits before each retry: 0.5, 1, 2, 4, 8, 8, ... seconds."""
    return [min(BACKOFF_START_S * 2 ** attempt, BACKOFF_CAP_S) for attempt in range(retries)]


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS] + "…"


def error_text(response: httpx.Response) -> str:
    """The server's own error message (OpenAI style ``{"error": {"message": ...}}``, FastAPI ``detail``) or the
    start of the body."""
    try:
        body = response.json()
    except ValueError:
        return _short(response.text)
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return _short(str(error["message"]))
        for key in ("detail", "message", "error"):
            if body.get(key):
                return _short(str(body[key]))
    return _short(json.dumps(body))


class ServerClient:
    """JSON requests to one server, safe to share between threads (one httpx connection pool)."""

    def __init__(self, base_url: str, *, api_key: str | None = None, timeout_s: float = 600.0,
                 connect_timeout_s: float = 10.0, retries: int = 3, max_connections: int = 1,
                 sleep: Callable[[float], None] = time.sleep, transport: httpx.BaseTransport | None = None,
                 key_hint: str = "") -> None:
        self.base_url = base_url
        self.retries = retries
        self.sleep = sleep
        self.key_hint = key_hint  # how to fix a 401, e.g. "set MEDBENCH_API_KEY"
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            base_url=base_url, headers=headers, transport=transport, trust_env=False,  # no proxies from env
            timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
            limits=httpx.Limits(max_connections=max(max_connections, 1) + 2, max_keepalive_connections=None))
        self.timeout_s = timeout_s
        self.closed = False

    def get(self, path: str, *, optional: bool = False) -> Any:
        """GET ``path`` as JSON; ``optional``: None when the route does not exist (404/405/501)."""
        return self._request("GET", path, None, optional)

    def post(self, path: str, body: dict[str, Any], *, optional: bool = False) -> Any:
        return self._request("POST", path, body, optional)

    def _request(self, method: str, path: str, body: dict[str, Any] | None, optional: bool) -> Any:
        delays = backoff_delays(self.retries)
        attempt = 0
        while True:
            if self.closed:
                raise ServerRequestError(f"{method} {path}: the connection to {self.base_url} was closed "
                                         "(run aborted)")
            try:
                response = self._client.request(method, path, json=body)
            except httpx.TimeoutException as exc:
                if isinstance(exc, httpx.ConnectTimeout) and attempt < len(delays):
                    self.sleep(delays[attempt])
                    attempt += 1
                    continue
                if isinstance(exc, httpx.ConnectTimeout):
                    raise ServerUnavailable(f"server {self.base_url} did not accept a connection within the "
                                            f"connect timeout ({attempt + 1} attempts); is it running? Everything "
                                            "committed is kept: rerun the same command to resume") from None
                raise ServerRequestError(f"{method} {path}: no answer within timeout_s = {self.timeout_s:g} s "
                                         "(raise timeout_s in models.toml for long generations)") from None
            except (httpx.TransportError, RuntimeError) as exc:  # RuntimeError: client closed by an abort
                if self.closed:
                    raise ServerRequestError(f"{method} {path}: aborted") from None
                if attempt < len(delays):
                    self.sleep(delays[attempt])
                    attempt += 1
                    continue
                raise ServerUnavailable(f"server {self.base_url} unreachable ({type(exc).__name__}: "
                                        f"{_short(str(exc)) or 'no detail'}; {attempt + 1} attempts); is it "
                                        "running and is base_url right? Everything committed is kept: rerun the "
                                        "same command to resume") from None
            status = response.status_code
            if status >= 500 and status != 501 and attempt < len(delays):
                self.sleep(delays[attempt])
                attempt += 1
                continue
            if status in (401, 403):
                raise ServerRefused(f"server {self.base_url} refused the request ({status}: {error_text(response)})"
                                    f"; {self.key_hint or 'check the API key'}")
            if optional and status in (404, 405, 501):
                return None
            if status >= 400:
                raise ServerRequestError(f"{method} {path}: HTTP {status} from {self.base_url}: "
                                         f"{error_text(response)}")
            try:
                return response.json()
            except ValueError:
                raise ServerRequestError(f"{method} {path}: the answer is not JSON: "
                                         f"{_short(response.text)!r}") from None

    def close(self) -> None:
        """Close the connections; requests in flight in other threads fail at once (used to abort a run)."""
        self.closed = True
        self._client.close()
