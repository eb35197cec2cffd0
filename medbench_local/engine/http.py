"""The network gate: the only module that talks to a server (the only one that imports httpx), and the only
reader of what a server answers.

Why one gate: a served model's server is outside our control; a broken, misconfigured or hostile one must never
turn into a traceback, a hung run, gigabytes of memory, a stored secret or a wrong score. So every request goes
through ``ServerClient`` and every answer comes back as a ``Field``, whose readers check each value the engine
uses (type, finite, range) and say in a short phrase what is wrong. What holds, by construction:

* **Size**: an answer is read as a stream and abandoned past a cap the caller derives from what it asked for
  (``completion_bytes``: max_tokens; ``echo_bytes``: the echoed tokens; ``tokenize_bytes``: the text), never
  loaded whole. A compressed answer is refused (we ask for ``identity``), so the cap is on what is held.
* **Time**: ``timeout_s`` is a deadline for the whole request, connect to last byte: every socket read and write
  waits at most until the deadline (``_DeadlineBackend``), so a server that drips one byte a second ends there.
* **Redirects** are never followed and their body is never read: a 3xx is an error.
* **JSON** is parsed strictly: no NaN/Infinity, no number that overflows a float, no integer of more than
  ``MAX_INT_DIGITS`` digits, no nesting that exhausts the stack, no unpaired surrogate in a string read.
* **Secrets**: every message is built from redacted server text (``gates.secrets``), before it is cut to length.
* **Patient text**: a ``ServerRequestError`` carries, besides its message, a ``withheld`` form made only of our
  own words and the HTTP status; ``run --no-store-inputs`` stores that, never the server's text.

Three kinds of failure are told apart, because they lead to different outcomes:

* ``ServerUnavailable`` (a UserError): the server cannot be reached even after the retries (refused
  connection, DNS failure, connection dropped). The run stops; everything committed stays, and rerunning the
  same command resumes.
* ``ServerRefused`` (a UserError): the server answers but will not serve us (401/403: the API key; 404 on a
  route we need; anything wrong during the preflight). One line, before the database is touched when it happens
  in the preflight.
* ``ServerRequestError`` (a RuntimeError): one request failed (a 4xx for this prompt, a 5xx after the retries, no
  answer within ``timeout_s``, an answer too large or malformed). The runner stores the item as an ``error`` item.

Retries: connection errors and 5xx answers are retried ``retries`` times with exponential backoff (0.5 s, 1 s,
2 s, ... capped at 8 s); the sleep function is injectable so tests do not wait. A read timeout is not retried:
the request may still be running on the server. A server still loading its model answers 503; the preflight
waits for it (``wait_loading``, at most ``loading_wait_s``, with a line on stderr saying so).
"""

from __future__ import annotations

import json
import math
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpcore
import httpx

from ..errors import UserError
from ..gates.secrets import redact, require_header_safe

BACKOFF_START_S = 0.5
BACKOFF_CAP_S = 8.0
MAX_ERROR_CHARS = 300          # of a server's error text quoted in a message
ENVELOPE_BYTES = 64 * 1024     # an answer's JSON around what scales with tokens (ids, usage, timings, ...)
BYTES_PER_TOKEN = 256          # a generated token's text in JSON, \\u escapes included, generously
ECHO_BYTES_PER_TOKEN = 1024    # an echoed token: text, log-probability, top alternatives, offset
METADATA_BYTES = 4 * 1024 * 1024  # /v1/models, /props (a chat template), /version, /openapi.json
ERROR_BODY_BYTES = 64 * 1024   # of an error answer: only its start is quoted
MAX_INT_DIGITS = 30            # no field we read needs more; Python would parse 4300-digit integers
LOADING_WAIT_S = 600.0         # the preflight waits this long at most for a server still loading its model
LOADING_POLL_S = 2.0


# ------------------------------------------------------------------------------------------------ errors


class ServerUnavailable(UserError):
    """The server could not be reached (after retries)."""

    def __init__(self, message: str) -> None:
        super().__init__(redact(message))


class ServerRefused(UserError):
    """The server answered, but refuses what the run needs (authentication, a route, the model name)."""

    def __init__(self, message: str) -> None:
        super().__init__(redact(message))


class ServerRequestError(RuntimeError):
    """One request failed; the item it belonged to becomes an ``error`` item.

    ``kind`` (our words: "server error", "timeout", "malformed answer", ...) and ``status`` (the HTTP status, when
    there was one) make up ``withheld``, the form stored under ``run --no-store-inputs``: a server's error text
    can quote the prompt, and the prompt may be a patient's."""

    def __init__(self, message: str, *, kind: str = "request failed", status: int | None = None) -> None:
        super().__init__(redact(message))
        self.kind = kind
        self.status = status

    @property
    def withheld(self) -> str:
        status = f" (HTTP {self.status})" if self.status is not None else ""
        return f"{self.kind}{status} (message withheld: --no-store-inputs)"


def malformed(reason: str) -> ServerRequestError:
    """The error for an answer that is not what the protocol promises (the reason names the field)."""
    return ServerRequestError(f"malformed answer from the server: {reason}", kind="malformed answer")


def backoff_delays(retries: int) -> list[float]:
    """The waits before each retry: 0.5, 1, 2, 4, 8, 8, ... seconds."""
    return [min(BACKOFF_START_S * 2 ** attempt, BACKOFF_CAP_S) for attempt in range(retries)]


def _short(text: str) -> str:
    """One line of at most MAX_ERROR_CHARS, secrets removed first (a key cut at the end would leave a prefix)."""
    text = " ".join(redact(text).split())
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS] + "…"


# ------------------------------------------------------------------------------------------------ size caps


def completion_bytes(max_tokens: int) -> int:
    """The largest completion answer accepted for ``max_tokens`` new tokens."""
    return ENVELOPE_BYTES + BYTES_PER_TOKEN * max(int(max_tokens), 1)


def echo_bytes(prompt_tokens: int, max_tokens: int = 1) -> int:
    """The largest answer accepted for an echo request: every prompt token comes back with its log-probability."""
    return ENVELOPE_BYTES + ECHO_BYTES_PER_TOKEN * (max(int(prompt_tokens), 1) + max(int(max_tokens), 1))


def tokenize_bytes(text: str) -> int:
    """The largest tokenize answer accepted for ``text``: at most one token per byte (byte fallback), each id a
    handful of digits."""
    return ENVELOPE_BYTES + 16 * (len(text.encode("utf-8", "surrogatepass")) + 8)


def detokenize_bytes(n_tokens: int) -> int:
    return ENVELOPE_BYTES + BYTES_PER_TOKEN * max(int(n_tokens), 1)


# ------------------------------------------------------------------------------------------------ strict JSON


def _no_constant(name: str) -> Any:
    raise malformed(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise malformed(f"the number {text[:24]}{'…' if len(text) > 24 else ''} is out of range")
    return value


def _bounded_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise malformed(f"a {digits}-digit integer")
    return int(text)


def parse_json(raw: bytes) -> Any:
    """``raw`` as JSON, strictly (see the module docstring); a ServerRequestError saying why not."""
    try:
        return json.loads(raw, parse_constant=_no_constant, parse_float=_finite_float, parse_int=_bounded_int)
    except ServerRequestError:
        raise
    except RecursionError:
        raise malformed("the answer is nested too deeply") from None
    except ValueError:  # not JSON, or not UTF-8
        raise ServerRequestError(f"the answer is not JSON: {_short(raw[:400].decode('utf-8', 'replace'))!r}",
                                 kind="malformed answer") from None


def _kind(value: Any) -> str:
    """What a JSON value is, in words (never the value itself, which may be huge or private)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


class Field:
    """A value in a server's answer and where it is (``choices[0].text``), with strict readers.

    Every reader raises ``malformed`` with the path and what was expected, so an answer that is not what the
    protocol promises is an item error with a short reason, never a traceback or a stored oddity."""

    __slots__ = ("value", "path")

    def __init__(self, value: Any, path: str = "answer") -> None:
        self.value = value
        self.path = path

    def _wrong(self, expected: str) -> ServerRequestError:
        return malformed(f"{self.path}: expected {expected}, got {_kind(self.value)}")

    def object(self) -> dict[str, Any]:
        if not isinstance(self.value, dict):
            raise self._wrong("an object")
        return self.value

    def array(self) -> list[Any]:
        if not isinstance(self.value, list):
            raise self._wrong("a list")
        return self.value

    def __getitem__(self, key: str | int) -> Field:
        if isinstance(key, int):
            values = self.array()
            if not 0 <= key < len(values):
                raise malformed(f"{self.path}: expected at least {key + 1} entries, got {len(values)}")
            return Field(values[key], f"{self.path}[{key}]")
        mapping = self.object()
        if key not in mapping:
            raise malformed(f"{self.path}.{key}: missing")
        return Field(mapping[key], f"{self.path}.{key}")

    def get(self, key: str) -> Field | None:
        """The field ``key`` of an object, or None when it is absent or null."""
        mapping = self.object()
        return Field(mapping[key], f"{self.path}.{key}") if mapping.get(key) is not None else None

    def items(self) -> list[Field]:
        return [Field(value, f"{self.path}[{i}]") for i, value in enumerate(self.array())]

    def string(self, max_chars: int | None = None) -> str:
        if not isinstance(self.value, str):
            raise self._wrong("a string")
        try:
            self.value.encode("utf-8")
        except UnicodeEncodeError:
            raise malformed(f"{self.path}: the string holds an unpaired surrogate (not valid text)") from None
        if max_chars is not None and len(self.value) > max_chars:
            raise malformed(f"{self.path}: a string of {len(self.value)} characters (at most {max_chars})")
        return self.value

    def integer(self, low: int, high: int) -> int:
        value = self.value
        if not isinstance(value, int) or isinstance(value, bool):
            raise self._wrong(f"an integer in [{low}, {high}]")
        if not low <= value <= high:
            raise malformed(f"{self.path}: {value} is outside [{low}, {high}]")
        return value

    def number(self, low: float = -math.inf, high: float = math.inf) -> float:
        value = self.value
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise self._wrong("a number")
        number = float(value)  # integers are bounded by the parser, so this cannot overflow
        if not math.isfinite(number) or not low <= number <= high:
            raise malformed(f"{self.path}: {number!r} is outside [{low:g}, {high:g}]")
        return number


def error_text(raw: bytes) -> str:
    """The server's own error message (OpenAI style ``{"error": {"message": ...}}``, FastAPI ``detail``) or the
    start of the body: redacted, one line, short."""
    try:
        body = parse_json(raw)
    except ServerRequestError:
        return _short(raw.decode("utf-8", "replace"))
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return _short(str(error["message"]))
        for key in ("detail", "message", "error"):
            if body.get(key):
                return _short(str(body[key]) if isinstance(body[key], str) else json.dumps(body[key]))
    return _short(json.dumps(body))


# ------------------------------------------------------------------------------------------------ the deadline

_DEADLINE = threading.local()  # .at: time.monotonic() by which the request of this thread must be done


def _bounded(timeout: float | None, error: type[Exception]) -> float | None:
    """``timeout`` for one socket operation, shortened to what is left of this thread's request deadline."""
    at = getattr(_DEADLINE, "at", None)
    if at is None:
        return timeout
    left = at - time.monotonic()
    if left <= 0:
        raise error("the request's deadline (timeout_s) has passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every read and write ends by the deadline of the request using it."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _bounded(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _bounded(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname,
                                                     _bounded(timeout, httpcore.ConnectTimeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's own socket backend, with connections that keep the request deadline."""

    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Any = None) -> httpcore.NetworkStream:
        return _DeadlineStream(self._inner.connect_tcp(host, port, _bounded(timeout, httpcore.ConnectTimeout),
                                                       local_address, socket_options))

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Any = None) -> httpcore.NetworkStream:
        return _DeadlineStream(self._inner.connect_unix_socket(path, _bounded(timeout, httpcore.ConnectTimeout),
                                                               socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


# httpcore's exceptions as httpx's (most specific first), so the client code speaks httpx only
_HTTPX_ERRORS: tuple[tuple[type[Exception], type[httpx.TransportError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout), (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout), (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.ConnectError, httpx.ConnectError), (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError), (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError), (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.TimeoutException, httpx.TimeoutException), (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.ProtocolError, httpx.ProtocolError))


@contextmanager
def _as_httpx_errors(request: httpx.Request) -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        for core, mapped in _HTTPX_ERRORS:
            if isinstance(exc, core):
                raise mapped(str(exc), request=request) from exc
        raise


class _Body(httpx.SyncByteStream):
    def __init__(self, stream: Any, request: httpx.Request) -> None:
        self._stream, self._request = stream, request

    def __iter__(self) -> Iterator[bytes]:
        with _as_httpx_errors(self._request):
            yield from self._stream

    def close(self) -> None:
        if hasattr(self._stream, "close"):
            self._stream.close()


class _DeadlineTransport(httpx.BaseTransport):
    """httpx's default transport, rebuilt on httpcore's public API with ``_DeadlineBackend``."""

    def __init__(self, limits: httpx.Limits) -> None:
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False), max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections, keepalive_expiry=limits.keepalive_expiry,
            network_backend=_DeadlineBackend())

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        core = httpcore.Request(
            method=request.method,
            url=httpcore.URL(scheme=request.url.raw_scheme, host=request.url.raw_host, port=request.url.port,
                             target=request.url.raw_path),
            headers=request.headers.raw, content=request.stream, extensions=request.extensions)
        with _as_httpx_errors(request):
            answer = self._pool.handle_request(core)
        return httpx.Response(status_code=answer.status, headers=answer.headers, stream=_Body(answer.stream, request),
                              extensions=answer.extensions)

    def close(self) -> None:
        self._pool.close()


# ------------------------------------------------------------------------------------------------ the client


def _stderr_line(text: str) -> None:
    print(redact(text), file=sys.stderr, flush=True)


class ServerClient:
    """JSON requests to one server, safe to share between threads (one connection pool)."""

    def __init__(self, base_url: str, *, api_key: str | None = None, timeout_s: float = 600.0,
                 connect_timeout_s: float = 10.0, retries: int = 3, max_connections: int = 1,
                 sleep: Callable[[float], None] = time.sleep, transport: httpx.BaseTransport | None = None,
                 key_hint: str = "", key_source: str = "the API key setting",
                 loading_wait_s: float = LOADING_WAIT_S, notice: Callable[[str], None] = _stderr_line) -> None:
        self.base_url = base_url
        self.retries = retries
        self.sleep = sleep
        self.key_hint = key_hint  # how to fix a 401, e.g. "set MEDBENCH_API_KEY"
        self.loading_wait_s = loading_wait_s
        self.notice = notice
        self.timeout_s = timeout_s
        self.closed = False
        self.bytes_received = 0  # body bytes read from the server, all requests together (the size cap's proof)
        self._count = threading.Lock()
        headers = {"Accept-Encoding": "identity"}  # a compressed answer would escape the size cap
        if api_key:
            headers["Authorization"] = f"Bearer {require_header_safe(api_key, key_source)}"
        limits = httpx.Limits(max_connections=max(max_connections, 1) + 2, max_keepalive_connections=None)
        self._client = httpx.Client(
            base_url=base_url, headers=headers, transport=transport or _DeadlineTransport(limits),
            trust_env=False, follow_redirects=False,  # no proxies from the environment, no redirects
            timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s), limits=limits)

    def get(self, path: str, *, optional: bool = False, max_bytes: int = METADATA_BYTES,
            wait_loading: bool = False) -> Field | None:
        """GET ``path`` as JSON; ``optional``: None when the route does not exist (404/405/501);
        ``wait_loading``: a 503 (a server loading its model) is waited for, up to ``loading_wait_s``."""
        return self._request("GET", path, None, optional=optional, max_bytes=max_bytes, wait_loading=wait_loading)

    def post(self, path: str, body: dict[str, Any], *, max_bytes: int, optional: bool = False) -> Field | None:
        """POST ``body`` as JSON to ``path``; an answer larger than ``max_bytes`` is an error, read no further."""
        return self._request("POST", path, body, optional=optional, max_bytes=max_bytes)

    def _request(self, method: str, path: str, body: dict[str, Any] | None, *, optional: bool, max_bytes: int,
                 wait_loading: bool = False) -> Field | None:
        delays = backoff_delays(self.retries)
        attempt = 0
        waited = 0.0
        polls = 0
        while True:
            if self.closed:
                raise ServerRequestError(f"{method} {path}: the connection to {self.base_url} was closed "
                                         "(run aborted)", kind="aborted")
            try:
                status, location, raw = self._exchange(method, path, body, max_bytes)
            except ServerRequestError:
                raise
            except httpx.TimeoutException as exc:
                if isinstance(exc, httpx.ConnectTimeout) and attempt < len(delays):
                    self.sleep(delays[attempt])
                    attempt += 1
                    continue
                if isinstance(exc, httpx.ConnectTimeout):
                    raise ServerUnavailable(f"server {self.base_url} did not accept a connection within the "
                                            f"connect timeout ({attempt + 1} attempts); is it running? Everything "
                                            "committed is kept: rerun the same command to resume") from None
                raise ServerRequestError(f"{method} {path}: no complete answer within timeout_s = "
                                         f"{self.timeout_s:g} s (the whole request, connect to last byte; raise "
                                         "timeout_s in models.toml for long generations)", kind="timeout") from None
            except (httpx.TransportError, RuntimeError) as exc:  # RuntimeError: client closed by an abort
                if self.closed:
                    raise ServerRequestError(f"{method} {path}: aborted", kind="aborted") from None
                if attempt < len(delays):
                    self.sleep(delays[attempt])
                    attempt += 1
                    continue
                raise ServerUnavailable(f"server {self.base_url} unreachable ({type(exc).__name__}: "
                                        f"{_short(str(exc)) or 'no detail'}; {attempt + 1} attempts); is it "
                                        "running and is base_url right? Everything committed is kept: rerun the "
                                        "same command to resume") from None
            if 300 <= status < 400:
                where = f" to {_short(location)[:120]}" if location else ""
                raise ServerRequestError(f"{method} {path}: the server answered with a redirect (HTTP {status}"
                                         f"{where}); redirects are never followed: set base_url to the server's "
                                         "own address", kind="redirect refused", status=status)
            if status == 503 and wait_loading and waited < self.loading_wait_s:
                if waited == 0:
                    self.notice(f"server {self.base_url} is not ready (HTTP 503: {error_text(raw)}); waiting up to "
                                f"{self.loading_wait_s:g} s for it to load the model")
                delay = min(BACKOFF_START_S * 2 ** polls, LOADING_POLL_S, self.loading_wait_s - waited)
                polls += 1
                self.sleep(delay)
                waited += delay
                continue
            if status >= 500 and status != 501 and attempt < len(delays):
                self.sleep(delays[attempt])
                attempt += 1
                continue
            if status in (401, 403):
                raise ServerRefused(f"server {self.base_url} refused the request ({status}: {error_text(raw)})"
                                    f"; {self.key_hint or 'check the API key'}")
            if optional and status in (404, 405, 501):
                return None
            if status == 503 and waited:
                raise ServerRefused(f"server {self.base_url} still answers 503 after {waited:g} s "
                                    f"({error_text(raw)}); start the run once the server is ready")
            if status >= 400 or status < 200:
                raise ServerRequestError(f"{method} {path}: HTTP {status} from {self.base_url}: {error_text(raw)}",
                                         kind="server error", status=status)
            return Field(parse_json(raw))

    def _exchange(self, method: str, path: str, body: dict[str, Any] | None,
                  max_bytes: int) -> tuple[int, str, bytes]:
        """(status, Location header, body) of one request, within the deadline and the size cap. A redirect's
        body is not read; an error's only its first ERROR_BODY_BYTES (it is only quoted)."""
        _DEADLINE.at = time.monotonic() + self.timeout_s
        try:
            with self._client.stream(method, path, json=body) as response:
                status = response.status_code
                if 300 <= status < 400:
                    return status, response.headers.get("location", ""), b""
                success = 200 <= status < 300
                encoding = response.headers.get("content-encoding", "identity").strip().lower()
                if encoding not in ("", "identity"):
                    if success:
                        raise ServerRequestError(f"{method} {path}: the answer is compressed ({_short(encoding)}) "
                                                 "although we asked for none; refused (its size could not be "
                                                 "bounded)", kind="malformed answer", status=status)
                    return status, "", b""
                limit = max_bytes if success else min(max_bytes, ERROR_BODY_BYTES)
                declared = response.headers.get("content-length", "")
                if success and declared.isdigit() and len(declared) < 20 and int(declared) > limit:
                    raise self._too_large(method, path, f"{int(declared)} bytes announced", limit)
                return status, "", self._read(response, method, path, limit, success)
        finally:
            _DEADLINE.at = None

    def _read(self, response: httpx.Response, method: str, path: str, limit: int, success: bool) -> bytes:
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_bytes():  # identity encoding (checked): the bytes as they arrive
            with self._count:
                self.bytes_received += len(chunk)
            size += len(chunk)
            if size > limit:
                if success:
                    raise self._too_large(method, path, f"more than {limit} bytes", limit)
                chunks.append(chunk[:len(chunk) - (size - limit)])
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def _too_large(self, method: str, path: str, what: str, limit: int) -> ServerRequestError:
        return ServerRequestError(f"{method} {path}: the answer is too large ({what}; at most {limit} bytes are "
                                  "read for what was asked)", kind="answer too large")

    def close(self) -> None:
        """Close the connections; requests in flight in other threads fail at once (used to abort a run)."""
        self.closed = True
        self._client.close()
