"""A hostile OpenAI-compatible server for the tests: vLLM's routes on 127.0.0.1, broken in one chosen way.

Why a real socket server and not httpx's MockTransport: the size cap, the deadline and redirects are properties
of the bytes on the wire (a body that never ends, one that drips, headers that never finish), which only a real
connection through the engine's own transport exercises. The server is a thread in the test process, bound to
127.0.0.1 on an ephemeral port, with a bounded lifetime: every loop that sends or waits stops at ``stop_at``,
and ``close`` (or leaving the ``with`` block) shuts it down.

It behaves as vLLM does (``/v1/models`` with ``max_model_len``, ``/version``, ``/tokenize``, ``/detokenize``,
``/v1/completions`` with ``echo``), with a character-level tokenizer (BOS = 1, a character c is ord(c) + 10), so
that the engine detects it as vLLM: token ids, left truncation, and ``--scoring loglik``. ``MODES`` lists the
ways it breaks; each mode changes only the route it names, everything else answers correctly.
"""

from __future__ import annotations

import json
import socketserver
import threading
import time
from typing import Any

MODEL = "smol"
DRIP_S = 0.05               # between two dripped bytes (far below any timeout_s the tests use)
HUGE_BYTES = 256 * 1024 * 1024
CHUNK = b"A" * (1024 * 1024)
LOADING_ANSWERS = 2          # "loading": /v1/models answers 503 this many times, then 200

#: mode -> what breaks. Completions modes change /v1/completions only; "loading" and "redirect-models" the
#: preflight's first route.
MODES = {
    "ok": "nothing",
    "huge": "a completion body that does not end (256 MiB, no Content-Length)",
    "huge-declared": "a Content-Length of 300 MB announced, then the body",
    "drip-body": "headers at once, then the body one byte at a time",
    "drip-headers": "the status line, then the headers one byte at a time",
    "redirect": "307 to another path, with a body that would score correct",
    "redirect-models": "307 on /v1/models (the preflight)",
    "negative-tokens": "usage.completion_tokens = -5",
    "huge-number": "usage.completion_tokens = 1e400",
    "list-for-object": "usage is a list",
    "digits-400": "usage.completion_tokens has 400 digits",
    "nan": "usage.completion_tokens = NaN",
    "missing-usage": "no usage object",
    "missing-choices": "no choices",
    "text-not-string": "choices[0].text is a number",
    "surrogate": "choices[0].text holds an unpaired surrogate",
    "wrong-model": "the answer names another model",
    "not-json": "200 with an HTML page",
    "echo-tied": "every echoed log-probability is -1.0 (all options tie)",
    "echo-neg-infinity": "echoed log-probabilities -Infinity",
    "echo-1e400": "echoed log-probabilities -1e400",
    "echo-400-digits": "echoed log-probabilities with 400 digits",
    "echo-overflow": "each echoed log-probability -1.5e308: finite, but their sum is -inf",
    "echo-list-for-object": "choices[0].logprobs is a list",
    "echo-positive": "echoed log-probabilities +3.0",
    "loading": "503 'Loading model' on /v1/models, LOADING_ANSWERS times",
    "echo-auth": "400 whose message quotes the Authorization header and the bare key",
    "quote-prompt": "422 whose message quotes the end of the prompt, cut mid-word",
}


def tokens(text: str, add_bos: bool = True) -> list[int]:
    return ([1] if add_bos else []) + [ord(c) + 10 for c in text]


def detokens(ids: list[int]) -> str:
    return "".join("" if t == 1 else chr(t - 10) for t in ids)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: HostileServer


class HostileServer:
    """``with HostileServer("drip-body") as server: ... server.url ...``"""

    def __init__(self, mode: str, *, model: str = MODEL, n_ctx: int = 4096, lifetime_s: float = 60.0) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}")
        self.mode, self.model, self.n_ctx, self.lifetime_s = mode, model, n_ctx, lifetime_s
        self.stop_at = 0.0
        self.requests: list[tuple[str, str, dict[str, str], Any]] = []
        self.bytes_sent = 0
        self.hung_up = threading.Event()   # the client closed the connection before the answer was complete
        self._lock = threading.Lock()
        self._models_answers = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> HostileServer:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self.stop_at = time.monotonic() + self.lifetime_s
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True, name=f"hostile-{self.mode}")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.stop_at = 0.0  # every sending or dripping loop ends at its next step
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def alive(self) -> bool:
        return time.monotonic() < self.stop_at

    def completions(self) -> list[dict[str, Any]]:
        return [body for method, path, _, body in self.requests if path == "/v1/completions"]

    def count(self, sent: int) -> None:
        with self._lock:
            self.bytes_sent += sent

    def models_answer(self) -> int:
        with self._lock:
            self._models_answers += 1
            return self._models_answers


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    # ------------------------------------------------------------------ plumbing

    def handle(self) -> None:
        owner = self.server.owner
        self.connection.settimeout(max(owner.stop_at - time.monotonic(), 0.1))
        try:
            request_line = self.rfile.readline(8192).decode("latin-1").strip()
            if not request_line:
                return
            method, path, _ = request_line.split(" ", 2)
            headers: dict[str, str] = {}
            while True:
                line = self.rfile.readline(8192).decode("latin-1")
                if line in ("\r\n", "\n", ""):
                    break
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            owner.requests.append((method, path, headers, body))
            self.route(owner, method, path, headers, body)
        except (TimeoutError, BrokenPipeError, ConnectionResetError, OSError):
            owner.hung_up.set()

    def send(self, status: int, payload: Any = None, *, raw: bytes | None = None, reason: str = "X",
             extra: dict[str, str] | None = None) -> None:
        data = raw if raw is not None else json.dumps(payload).encode()
        head = [f"HTTP/1.1 {status} {reason}", "Content-Type: application/json", f"Content-Length: {len(data)}",
                "Connection: close", *(f"{k}: {v}" for k, v in (extra or {}).items())]
        self.write((("\r\n".join(head)) + "\r\n\r\n").encode() + data)

    def write(self, data: bytes) -> None:
        self.wfile.write(data)
        self.wfile.flush()
        self.server.owner.count(len(data))

    def drip(self, data: bytes) -> None:
        """One byte at a time, until the data ends, the client hangs up or the server's lifetime is over."""
        owner = self.server.owner
        for i in range(len(data)):
            if not owner.alive:
                return
            self.write(data[i:i + 1])
            time.sleep(DRIP_S)  # the point of this mode: a server that is slow on purpose

    # ------------------------------------------------------------------ routes

    def route(self, owner: HostileServer, method: str, path: str, headers: dict[str, str], body: Any) -> None:
        mode = owner.mode
        if path == "/v1/models":
            if mode == "redirect-models":
                return self.send(307, {"data": []}, extra={"Location": "http://127.0.0.1:9/v1/models"})
            if mode == "loading" and owner.models_answer() <= LOADING_ANSWERS:
                return self.send(503, {"error": {"code": 503, "message": "Loading model",
                                                 "type": "unavailable_error"}})
            return self.send(200, {"object": "list", "data": [{"id": owner.model, "object": "model",
                                                               "max_model_len": owner.n_ctx}]})
        if path == "/version":
            return self.send(200, {"version": "0.0-hostile"})
        if path == "/tokenize":
            return self.send(200, {"tokens": tokens(body["prompt"]), "count": len(body["prompt"]) + 1,
                                   "max_model_len": owner.n_ctx})
        if path == "/detokenize":
            return self.send(200, {"prompt": detokens(body["tokens"])})
        if path == "/v1/completions":
            return self.completion(owner, headers, body)
        return self.send(404, {"detail": "Not Found"})

    def completion(self, owner: HostileServer, headers: dict[str, str], body: dict[str, Any]) -> None:
        mode = owner.mode
        prompt = body["prompt"]
        ids = prompt if isinstance(prompt, list) else tokens(prompt)
        text = detokens(ids)
        if mode == "echo-auth":
            auth = headers.get("authorization", "")
            key = auth.removeprefix("Bearer ")
            return self.send(400, {"error": {"message": f"bad request; headers seen: Authorization: {auth} "
                                                        f"(api key {key}, JSON {json.dumps(key)})"}})
        if mode == "quote-prompt":
            cut = text[-150:-3]
            return self.send(422, {"detail": f"prompt rejected near: ...{cut}"})
        if body.get("echo"):
            return self.echo(owner, ids)
        answer = {"id": "cmpl-1", "object": "text_completion", "model": owner.model,
                  "choices": [{"index": 0, "text": " A", "finish_reason": "stop", "logprobs": None}],
                  "usage": {"prompt_tokens": len(ids), "completion_tokens": 1, "total_tokens": len(ids) + 1}}
        raw = {
            "negative-tokens": lambda: json.dumps(answer).replace('"completion_tokens": 1', '"completion_tokens": -5'),
            "huge-number": lambda: json.dumps(answer).replace('"completion_tokens": 1', '"completion_tokens": 1e400'),
            "digits-400": lambda: json.dumps(answer).replace('"completion_tokens": 1',
                                                             '"completion_tokens": ' + "9" * 400),
            "nan": lambda: json.dumps(answer).replace('"completion_tokens": 1', '"completion_tokens": NaN'),
            "list-for-object": lambda: json.dumps({**answer, "usage": [1, 2]}),
            "missing-usage": lambda: json.dumps({k: v for k, v in answer.items() if k != "usage"}),
            "missing-choices": lambda: json.dumps({k: v for k, v in answer.items() if k != "choices"}),
            "text-not-string": lambda: json.dumps(answer).replace('"text": " A"', '"text": 12'),
            "surrogate": lambda: json.dumps(answer).replace('"text": " A"', '"text": " A\\ud800"'),
            "wrong-model": lambda: json.dumps({**answer, "model": "other-model"}),
            "not-json": lambda: "<html><body>Welcome to the proxy</body></html>",
        }
        if mode in raw:
            return self.send(200, raw=raw[mode]().encode())
        if mode == "redirect":
            return self.send(307, answer, extra={"Location": "/v1/elsewhere"})
        if mode in ("huge", "huge-declared"):
            length = "" if mode == "huge" else "Content-Length: 300000000\r\n"
            self.write(f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{length}Connection: close\r\n\r\n"
                       '{"model": "smol", "choices": [{"text": "'.encode())
            sent = 0
            while sent < HUGE_BYTES and owner.alive:
                self.write(CHUNK)
                sent += len(CHUNK)
            return None
        if mode == "drip-body":
            data = json.dumps(answer).encode()
            self.write(f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(data) + 2000}"
                       "\r\nConnection: close\r\n\r\n".encode())
            return self.drip(data + b" " * 2000)
        if mode == "drip-headers":
            self.write(b"HTTP/1.1 200 OK\r\n")
            return self.drip(b"X-Slow: " + b"z" * 100000 + b"\r\n\r\n")
        return self.send(200, answer)

    def echo(self, owner: HostileServer, ids: list[int]) -> None:
        """An echo answer: every prompt token with its log-probability (first null), then one generated."""
        values: list[Any] = [None] + [-((ids[i - 1] * 31 + ids[i] * 17) % 97) / 10 - 0.01 for i in range(1, len(ids))]
        mode = owner.mode
        if mode == "echo-tied":
            values = [None] + [-1.0] * (len(ids) - 1)
        if mode == "echo-overflow":
            values = [None] + [-1.5e308] * (len(ids) - 1)
        if mode == "echo-positive":
            values = [None] + [3.0] * (len(ids) - 1)
        special = {"echo-neg-infinity": "-Infinity", "echo-1e400": "-1e400", "echo-400-digits": "-" + "7" * 400}
        if mode in special:  # the last prompt token (the continuation's) carries the broken number
            values[-1] = "__BROKEN__"
        texts = [detokens([t]) for t in ids] + ["?"]
        tops = [None] + [{texts[i]: values[i] if values[i] != "__BROKEN__" else -1.0} for i in range(1, len(ids))] \
            + [{"?": -0.5}]
        logprobs: Any = {"tokens": texts, "token_logprobs": values + [-0.5], "top_logprobs": tops,
                         "text_offset": list(range(len(texts)))}
        if mode == "echo-list-for-object":
            logprobs = []
        named = "other-model" if mode == "wrong-model" else owner.model
        answer = {"model": named, "choices": [{"index": 0, "text": "?", "finish_reason": "length",
                                                     "logprobs": logprobs}],
                  "usage": {"prompt_tokens": len(ids), "completion_tokens": 1, "total_tokens": len(ids) + 1}}
        data = json.dumps(answer).replace('"__BROKEN__"', special.get(mode, "null"))
        self.send(200, raw=data.encode())
