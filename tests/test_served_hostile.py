"""The network, secrets and patient-text gates against a hostile OpenAI-compatible server (issue 18, rows 4-6).

One mode of ``tests/hostile_server.py`` per way a server breaks; each row says what the engine must make of it:
an item error with a short reason of its class (``ServerRequestError.kind``), or a one-line refusal before the run.
Nothing here waits on a clock: bounds are proven by counters (bytes read, peak RSS) and by what the server
observed (the client hung up), and the deadline rows pass only when the deadline holds (the server would
otherwise drip until its lifetime ends and the request would fail differently).
"""

from __future__ import annotations

import json
import math
import resource
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medbench_local.config import load_config
from medbench_local.engine.base import GenerateRequest, LoglikelihoodRequest
from medbench_local.engine.http import (
    ECHO_BYTES_PER_TOKEN,
    ServerClient,
    ServerRefused,
    ServerRequestError,
    completion_bytes,
    parse_json,
)
from medbench_local.engine.openai_compat import OpenAICompatEngine, api_key, probe_server
from medbench_local.errors import UserError
from medbench_local.gates import secrets
from medbench_local.prompting import Prompt
from medbench_local.store import writer

from .conftest import invoke, rows
from .hostile_server import HUGE_BYTES, MODES, HostileServer

TEMPLATE = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}<assistant>"
KEY_ENV = "MEDBENCH_HOSTILE_KEY"
KEY = "sk-hostile-Zq81vX2mT7"
MARKER = "Qzxvhostilemarker Kappa patient Ramsbottom"


@pytest.fixture(autouse=True)
def _forget_test_keys() -> Any:
    """The keys these tests register (hypothesis draws dozens) must not blank other tests' text."""
    with secrets.isolated():
        yield


def write_config(folder: Path, url: str, **extra: Any) -> Path:
    body = {"role": "biomedical", "engine": "openai", "base_url": url, "model": "smol", "sha256": "b" * 64,
            "n_ctx": 4096, "chat_template": TEMPLATE, "retries": 0, **extra}
    path = folder / "models.toml"
    path.write_text("[models.served]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in body.items()),
                    encoding="utf-8")
    return path


def engine_for(folder: Path, server: HostileServer, **extra: Any) -> OpenAICompatEngine:
    return OpenAICompatEngine(load_config(write_config(folder, server.url, **extra)).model("served"), None)


def one_line(text: str) -> bool:
    return "\n" not in text and "Traceback" not in text


# ------------------------------------------------------------------------------------------- generate rows

#: (mode, the error's class, words its message must hold)
GENERATE_ROWS = [
    ("huge", "answer too large", "too large"),
    ("huge-declared", "answer too large", "300000000 bytes announced"),
    ("drip-body", "timeout", "timeout_s = 1"),
    ("drip-headers", "timeout", "connect to last byte"),
    ("redirect", "redirect refused", "HTTP 307"),
    ("negative-tokens", "malformed answer", "usage.completion_tokens: -5 is outside"),
    ("huge-number", "malformed answer", "1e400 is out of range"),
    ("list-for-object", "malformed answer", "usage: expected an object, got a list"),
    ("digits-400", "malformed answer", "400-digit integer"),
    ("nan", "malformed answer", "NaN is not a JSON number"),
    ("missing-usage", "malformed answer", "usage: missing"),
    ("missing-choices", "malformed answer", "choices: missing"),
    ("text-not-string", "malformed answer", "text: expected a string, got a number"),
    ("surrogate", "malformed answer", "unpaired surrogate"),
    ("wrong-model", "wrong model", "'other-model'"),
    ("not-json", "malformed answer", "not JSON"),
]


@pytest.mark.parametrize("mode,kind,words", GENERATE_ROWS, ids=[r[0] for r in GENERATE_ROWS])
def test_a_broken_completion_is_an_item_error_with_a_short_reason(tmp_path: Path, mode: str, kind: str,
                                                                  words: str) -> None:
    with HostileServer(mode) as server:
        engine = engine_for(tmp_path, server, timeout_s=1.0)
        with pytest.raises(ServerRequestError) as caught:
            engine.generate(GenerateRequest(Prompt(system="", user="Which option?"), max_tokens=16))
        engine.close()
        if kind in ("timeout", "answer too large"):  # the client gave up, the server saw it go
            assert server.hung_up.wait(30), "the server never saw the client hang up"
    message = str(caught.value)
    assert caught.value.kind == kind and words in message, message
    assert one_line(message) and len(message) < 600, message
    assert engine.client.bytes_received <= completion_bytes(16) + 64 * 1024


def test_a_200_mb_answer_is_read_only_up_to_its_cap(tmp_path: Path) -> None:
    """The cap is proven by counters: the bytes the client read (at most the cap and one read's worth) and the
    process's peak RSS, which a body held whole (256 MiB, twice as text and JSON) would raise by far more."""
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    with HostileServer("huge") as server:
        engine = engine_for(tmp_path, server)
        for max_tokens in (1, 16, 256):
            received = engine.client.bytes_received
            with pytest.raises(ServerRequestError, match="too large"):
                engine.generate(GenerateRequest(Prompt(system="", user="q"), max_tokens=max_tokens))
            assert engine.client.bytes_received - received <= completion_bytes(max_tokens) + 64 * 1024
        engine.close()
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024
    assert grown_mib < HUGE_BYTES / 2 ** 20 / 4, grown_mib


# ------------------------------------------------------------------------------------------- loglik rows

LOGLIK_ROWS = [
    ("echo-neg-infinity", "-Infinity is not a JSON number"),
    ("echo-1e400", "-1e400 is out of range"),
    ("echo-400-digits", "400-digit integer"),
    ("echo-overflow", "add up to -inf"),
    ("echo-list-for-object", "logprobs: expected an object, got a list"),
    ("echo-positive", "3.0 is outside"),
    ("wrong-model", "'other-model'"),
]


@pytest.mark.parametrize("mode,words", LOGLIK_ROWS, ids=[r[0] for r in LOGLIK_ROWS])
def test_a_broken_echo_is_an_item_error_never_a_score(tmp_path: Path, mode: str, words: str) -> None:
    with HostileServer(mode) as server:
        engine = engine_for(tmp_path, server)
        with pytest.raises(ServerRequestError) as caught:
            engine.loglikelihood(LoglikelihoodRequest(Prompt(system="", user="Which?"), (" A", " B")))
        engine.close()
    assert words in str(caught.value) and one_line(str(caught.value)), str(caught.value)


def test_echo_answers_are_capped_by_the_tokens_echoed(tmp_path: Path) -> None:
    with HostileServer("ok") as server:
        engine = engine_for(tmp_path, server)
        result = engine.loglikelihood(LoglikelihoodRequest(Prompt(system="", user="Which?"), (" A", " B")))
        engine.close()
    assert [math.isfinite(s.logprob) for s in result.scores] == [True, True]
    assert engine.client.bytes_received < 2 * (result.prompt_tokens + 3) * ECHO_BYTES_PER_TOKEN


# ------------------------------------------------------------------------------------------- the preflight

MODELS_ANSWERS = [  # /v1/models answers a run must refuse in one line before anything is written
    ({"data": {"id": "smol"}}, "data: expected a list"),
    ({"data": [{"id": 5}]}, "id: expected a string"),
    ({"data": [["smol"]]}, "expected an object, got a list"),
    ({"data": [{"id": "smol", "max_model_len": -4}]}, "max_model_len: -4 is outside"),
    ({"data": [{"id": "smol", "max_model_len": True}]}, "max_model_len: expected an integer"),
    ({"data": [{"id": "smol", "max_model_len": "4096"}]}, "max_model_len: expected an integer"),
    ({"nodata": []}, "data: missing"),
    ([], "expected an object"),
]


@pytest.mark.parametrize("answer,words", MODELS_ANSWERS, ids=[str(i) for i in range(len(MODELS_ANSWERS))])
def test_a_malformed_model_listing_is_one_line_before_the_run(tmp_path: Path, answer: Any, words: str) -> None:
    spec = load_config(write_config(tmp_path, "http://127.0.0.1:1")).model("served")

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=answer) if request.url.path == "/v1/models" else httpx.Response(404)

    client = ServerClient(spec.served.base_url, retries=0, transport=httpx.MockTransport(handler))
    with pytest.raises(ServerRefused) as caught:
        probe_server(spec, client)
    assert words in str(caught.value) and one_line(str(caught.value)), str(caught.value)


def test_a_server_still_loading_is_waited_for_with_one_line_then_used(tmp_path: Path) -> None:
    spec = load_config(write_config(tmp_path, "http://127.0.0.1:1")).model("served")
    with HostileServer("loading") as server:
        slept: list[float] = []
        lines: list[str] = []
        client = ServerClient(server.url, retries=0, sleep=slept.append, notice=lines.append)
        probe = probe_server(spec, client)
        client.close()
    assert probe.kind == "vllm" and len(lines) == 1 and "waiting up to" in lines[0] and "503" in lines[0]
    assert len(slept) == 2 and one_line(lines[0])


def test_a_server_that_never_finishes_loading_is_refused_in_one_line(tmp_path: Path) -> None:
    spec = load_config(write_config(tmp_path, "http://127.0.0.1:1")).model("served")
    slept: list[float] = []
    client = ServerClient(spec.served.base_url, retries=0, sleep=slept.append, notice=lambda line: None,
                          loading_wait_s=30.0, transport=httpx.MockTransport(
                              lambda r: httpx.Response(503, json={"error": {"message": "Loading model"}})))
    with pytest.raises(ServerRefused, match="still answers 503 after 30 s") as caught:
        probe_server(spec, client)
    assert sum(slept) == pytest.approx(30.0) and one_line(str(caught.value))


def test_a_redirect_at_the_preflight_is_one_line_and_no_database(tmp_path: Path) -> None:
    with HostileServer("redirect-models") as server:
        config = write_config(tmp_path, server.url)
        db = tmp_path / "r.db"
        result = invoke("run", "--config", str(config), "--model", "served", "--task", "jama", "--data",
                        str(cases(tmp_path)), "--db", str(db), expect=1)
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "redirect" in errors[0] and "Traceback" not in result.output, result.output
    assert not db.exists()


# ------------------------------------------------------------------------------------------- the CLI


def cases(folder: Path, count: int = 3) -> Path:
    path = folder / "cases.jsonl"
    path.write_text("".join(json.dumps({"id": f"c{i}", "case": f"{MARKER} {i} has a cough.", "question": "Next?",
                                        "options": {"A": "Rest at home", "B": "Surgery now"}, "answer": "A"}) + "\n"
                            for i in range(count)), encoding="utf-8")
    return path


def run_cli(tmp_path: Path, server: HostileServer, *extra: str, expect: int | None = 0,
            **config: Any) -> tuple[Any, Path]:
    db = tmp_path / "hostile.db"
    result = invoke("run", "--config", str(write_config(tmp_path, server.url, **config)), "--model", "served",
                    "--task", "jama", "--data", str(cases(tmp_path)), "--db", str(db), *extra, expect=expect)
    return result, db


def stored_bytes(db: Path) -> bytes:
    wal = db.with_name(db.name + "-wal")
    return db.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


def test_a_run_on_a_server_that_loads_first_waits_says_so_and_completes(tmp_path: Path) -> None:
    with HostileServer("loading") as server:
        result, db = run_cli(tmp_path, server)
    assert "is not ready (HTTP 503" in result.output and "waiting up to" in result.output
    assert "3 generated" in result.output
    assert rows(db, "select status from runs") == [("completed",)]


def test_tied_options_fail_every_item_and_the_run_ends_failed_non_zero(tmp_path: Path) -> None:
    """All options tie (today's all -inf case picked A, correct): every item is an error, none is scored, the
    run is recorded as failed, and the command says so in one line with exit status 1."""
    with HostileServer("echo-tied") as server:
        result, db = run_cli(tmp_path, server, "--scoring", "loglik", expect=1)
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "every item failed" in errors[0] and "tie" in errors[0], result.output
    assert rows(db, "select outcome, count(*) from scores group by outcome") == [("error", 3)]
    assert rows(db, "select status from runs") == [("failed",)]


def test_a_redirected_completion_is_never_scored(tmp_path: Path) -> None:
    with HostileServer("redirect") as server:
        result, db = run_cli(tmp_path, server, expect=1)
    assert rows(db, "select distinct outcome from scores") == [("error",)]
    assert rows(db, "select count(*) from generations where output is not null") == [(0,)]
    assert all("307" in error for (error,) in rows(db, "select error from generations"))


def test_a_server_that_echoes_the_key_gets_it_nowhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server quotes the Authorization header and the bare key in every error: neither the terminal, the
    database (WAL included) nor a CSV export made from it holds the key; the stored errors say [redacted]."""
    monkeypatch.setenv(KEY_ENV, KEY)
    with HostileServer("echo-auth") as server:
        result, db = run_cli(tmp_path, server, expect=1, api_key_env=KEY_ENV)
    assert KEY not in result.output and "every item failed" in result.output
    errors = rows(db, "select error from generations")
    assert len(errors) == 3 and all(secrets.MARK in error for (error,) in errors), errors
    export = tmp_path / "items.csv"
    invoke("export", "--db", str(db), "-o", str(export))
    for where, content in (("database", stored_bytes(db)), ("csv", export.read_bytes())):
        assert KEY.encode() not in content and json.dumps(KEY).encode() not in content, where
        assert b"Bearer sk-" not in content, where


@pytest.mark.parametrize("bad_key", [KEY + "\n", " " + KEY, KEY[:6] + " " + KEY[6:], KEY + "\t", KEY + "\x07",
                                     KEY + "é", "\u202e" + KEY])
def test_a_key_that_cannot_travel_as_it_is_is_refused_without_showing_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bad_key: str) -> None:
    monkeypatch.setenv(KEY_ENV, bad_key)
    with HostileServer("ok") as server:
        result, db = run_cli(tmp_path, server, expect=1, api_key_env=KEY_ENV)
        assert not server.completions()
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "refused" in errors[0] and KEY_ENV in errors[0], result.output
    assert KEY not in result.output and KEY[:6] not in result.output and not db.exists()


@pytest.mark.parametrize("store_inputs", [True, False])
def test_a_server_error_quoting_the_prompt_is_stored_only_as_class_and_status_without_inputs(
        tmp_path: Path, store_inputs: bool) -> None:
    """A 422 quoting the end of the prompt, cut mid-word (no whole-word scrub could find it): with
    --no-store-inputs the database holds only "server error (HTTP 422)"; with inputs stored the quote is kept
    (which shows that the server does quote the case text)."""
    flag = "--store-inputs" if store_inputs else "--no-store-inputs"
    with HostileServer("quote-prompt") as server:
        result, db = run_cli(tmp_path, server, flag, expect=1)
    errors = {error for (error,) in rows(db, "select error from generations")}
    marker_fragment = MARKER[5:25].encode()
    if store_inputs:
        assert any("prompt rejected near" in e for e in errors) and marker_fragment in stored_bytes(db)
        return
    assert errors == {"server error (HTTP 422) (message withheld: --no-store-inputs)"}, errors
    assert marker_fragment not in stored_bytes(db) and marker_fragment.decode() not in result.output
    details = {d for (d,) in rows(db, "select detail from scores")}
    assert details == {"ServerRequestError: server error (HTTP 422) (message withheld: --no-store-inputs)"}


# ------------------------------------------------------------------------------------------- unit: the gates

ERRORS_WITHOUT_INPUTS = [
    (ServerRequestError("HTTP 422: near 'Mrs Ramsbottom, 82'", kind="server error", status=422),
     "server error (HTTP 422) (message withheld: --no-store-inputs)"),
    (ServerRequestError("the echoed prompt ends in 'Ramsbottom'", kind="echo mismatch"),
     "echo mismatch (message withheld: --no-store-inputs)"),
    (RuntimeError("llama.cpp: cannot tokenize 'Ramsbottom'"), "RuntimeError (message withheld: --no-store-inputs)"),
    (ValueError("options A, B tie: 'Ramsbottom'"), "ValueError (message withheld: --no-store-inputs)"),
]


@pytest.mark.parametrize("exc,stored", ERRORS_WITHOUT_INPUTS, ids=[type(e).__name__ for e, _ in ERRORS_WITHOUT_INPUTS])
def test_without_inputs_an_error_is_stored_as_its_class_only(exc: BaseException, stored: str) -> None:
    assert writer.error_message(exc, store_inputs=False) == stored
    assert "Ramsbottom" in writer.error_message(exc, store_inputs=True)


REDACTED = [
    ("Authorization: Bearer abc.def-123", "abc.def-123"),
    ('{"authorization": "Basic dXNlcjpwYXNz", "host": "x"}', "dXNlcjpwYXNz"),
    ("{'Authorization': 'Bearer tok_live_99'}", "tok_live_99"),
    ("header bearer=eyJhbGciOi.x.y was refused", "eyJhbGciOi.x.y"),
    ("Invalid header value b'Bearer sk-xyz\\n'", "sk-xyz"),
    ("authorization=Token%20abc123 in the query", "Token%20abc123"),
]


@pytest.mark.parametrize("text,secret", REDACTED, ids=[str(i) for i in range(len(REDACTED))])
def test_authorization_and_bearer_text_is_removed_even_unregistered(text: str, secret: str) -> None:
    cleaned = secrets.redact(text)
    assert secret not in cleaned and secrets.MARK in cleaned
    assert secrets.redact(cleaned) == cleaned  # idempotent


KEY_CHARS = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_."),
                    min_size=8, max_size=40)


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(key=KEY_CHARS, before=st.text(max_size=40), after=st.text(max_size=40),
       spelling=st.sampled_from(["plain", "json", "url", "bearer", "newline"]))
def test_a_registered_key_is_removed_in_any_spelling_from_any_text(key: str, before: str, after: str,
                                                                   spelling: str) -> None:
    from urllib.parse import quote

    secrets.register(key + "\n" if spelling == "newline" else key)
    shown = {"plain": key, "json": json.dumps(key)[1:-1], "url": quote(key, safe=""), "bearer": f"Bearer {key}",
             "newline": key}[spelling]
    cleaned = secrets.redact(before + shown + after)
    assert key not in cleaned and shown not in cleaned


def test_the_engine_registers_and_checks_the_key_it_reads(tmp_path: Path) -> None:
    spec = load_config(write_config(tmp_path, "http://127.0.0.1:1", api_key_env=KEY_ENV)).model("served")
    value = "sk-registered-" + "q" * 12
    assert api_key(spec.served, {KEY_ENV: value}) == value
    assert secrets.MARK in secrets.redact_registered(f"echo {value}!")
    with pytest.raises(UserError) as caught:
        api_key(spec.served, {KEY_ENV: value + "\n"})
    assert value not in str(caught.value) and "trailing newline" in str(caught.value)


NUMBERS = [("1e400", "out of range"), ("-1e400", "out of range"), ("NaN", "NaN"), ("Infinity", "Infinity"),
           ("-Infinity", "-Infinity"), ("9" * 31, "31-digit"), ("-" + "9" * 400, "400-digit"),
           ("[" * 200_000 + "]" * 200_000, "nested too deeply"), ('"\\ud800"', None)]


@pytest.mark.parametrize("raw,words", NUMBERS, ids=[str(i) for i in range(len(NUMBERS))])
def test_strict_json_refuses_what_python_would_accept(raw: str, words: str | None) -> None:
    if words is None:  # an unpaired surrogate parses, and is refused where a string is read (Field.string)
        assert parse_json(raw.encode()) == "\ud800"
        return
    with pytest.raises(ServerRequestError, match=words):
        parse_json(raw.encode())


HOSTILE_VALUES = st.sampled_from([None, True, -1, -5, 0, 2 ** 40, 1.5, "x", "", [], [1, 2], {}, {"a": 1},
                                  "\ud800", "y" * 5000, [[[]]], {"text": " A"}])
ANSWER_PATHS = [("model",), ("choices",), ("choices", 0), ("choices", 0, "text"), ("choices", 0, "finish_reason"),
                ("usage",), ("usage", "completion_tokens"), ("usage", "prompt_tokens"), ("timings",),
                ("timings", "prompt_ms"), ("timings", "predicted_ms"), ("timings", "prompt_n")]


def _replaced(answer: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    copy = json.loads(json.dumps(answer))
    cursor = copy
    for step in path[:-1]:
        cursor = cursor[step]
    cursor[path[-1]] = value
    return copy


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(ANSWER_PATHS), value=HOSTILE_VALUES)
def test_any_field_of_a_completion_replaced_by_anything_is_a_result_or_an_item_error(
        tmp_path: Path, path: tuple[Any, ...], value: Any) -> None:
    """The class, not one case: every field the engine reads, replaced by any JSON value, gives either a
    Generation with sane values or a ServerRequestError (never a traceback of another type, never a
    negative count or a non-text output)."""
    from .test_served import FakeServer

    server = FakeServer("llama-server", n_ctx=256)
    original = server.__call__

    def handler(request: httpx.Request) -> httpx.Response:
        answer = original(request)
        if request.url.path != "/v1/completions":
            return answer
        body = json.loads(answer.content)
        body["timings"] = {"prompt_ms": 1.0, "predicted_ms": 2.0, "prompt_n": 3}
        content = json.dumps(_replaced(body, path, value)).encode()  # (json.dumps keeps the lone surrogate)
        return httpx.Response(200, content=content)

    spec = load_config(write_config(tmp_path, "http://127.0.0.1:1", n_ctx=256)).model("served")
    engine = OpenAICompatEngine(spec, None, client=ServerClient(spec.served.base_url, retries=0,
                                                                 transport=httpx.MockTransport(handler)))
    try:
        generation = engine.generate(GenerateRequest(Prompt(system="", user="q"), max_tokens=8))
    except ServerRequestError as exc:
        assert one_line(str(exc)) and exc.kind in ("malformed answer", "wrong model"), str(exc)
        return
    assert isinstance(generation.output, str) and 0 <= generation.completion_tokens <= 8
    assert generation.prompt_tokens >= 0 and generation.finish_reason in ("stop", "length")
    for value_ms in (generation.prompt_ms, generation.generation_ms):
        assert value_ms is None or (math.isfinite(value_ms) and value_ms >= 0)


def test_every_mode_of_the_hostile_server_is_exercised_here() -> None:
    source = Path(__file__).read_text(encoding="utf-8")
    unused = [mode for mode in MODES if mode != "ok" and f'"{mode}"' not in source]
    assert not unused, unused
