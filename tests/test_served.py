"""Served engine (engine = "openai") without a real server: configuration, HTTP retries, server detection,
prompt truncation, the item pool and the network guard's allow list. The real-server tests are in
tests/test_served_e2e.py."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from medbench_local.config import load_config
from medbench_local.engine.base import GenerateRequest, LoglikelihoodRequest
from medbench_local.engine.http import (
    ServerClient,
    ServerRefused,
    ServerRequestError,
    ServerUnavailable,
    backoff_delays,
)
from medbench_local.engine.openai_compat import OpenAICompatEngine, probe_server, require_capabilities
from medbench_local.errors import ConfigError, UserError
from medbench_local.item_pool import run_pooled
from medbench_local.prompting import Prompt

SHA = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
GOOD = {"role": "biomedical", "engine": "openai", "base_url": "http://127.0.0.1:8080", "model": "smol",
        "sha256": SHA, "n_ctx": 256, "chat_template": "{% for m in messages %}<{{ m.role }}>{{ m.content }}"
                                                      "{% endfor %}<assistant>"}


def toml_value(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, bool) else str(value).lower()


def write_model(tmp_path: Path, body: dict[str, Any]) -> Path:
    lines = ["# a comment line", "[models.served]"] + [f"{k} = {toml_value(v)}" for k, v in body.items()]
    path = tmp_path / "models.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def without(key: str) -> dict[str, Any]:
    return {k: v for k, v in GOOD.items() if k != key}


# ------------------------------------------------------------------------------------------- configuration

BAD_CONFIGS = [
    # (body, key named in the message, words in the message)
    (without("sha256"), "sha256", "identity of the weights"),
    (without("base_url"), "models.served", "base_url"),
    (without("model"), "models.served", "'model'"),
    ({**GOOD, "base_url": "ftp://host:21"}, "base_url", "http://"),
    ({**GOOD, "base_url": "http://"}, "base_url", "no host"),
    ({**GOOD, "base_url": "127.0.0.1:8080"}, "base_url", "http"),
    ({**GOOD, "base_url": "http://user:secret@host:8080"}, "base_url", "api_key_env"),
    ({**GOOD, "base_url": "http://host:8080/?x=1"}, "base_url", "root URL"),
    ({**GOOD, "base_url": "http://host:99999"}, "base_url", "not a valid URL"),
    ({**GOOD, "base_url": "http://host:0"}, "base_url", "port 0"),
    ({**GOOD, "base_url": "http://ho st:80"}, "base_url", "spaces"),
    ({**GOOD, "base_url": ""}, "base_url", "non-empty"),
    ({**GOOD, "max_concurrency": 0}, "max_concurrency", ">= 1"),
    ({**GOOD, "max_concurrency": 257}, "max_concurrency", "<= 256"),
    ({**GOOD, "max_concurrency": 2.0}, "max_concurrency", "float"),
    ({**GOOD, "max_concurrency": True}, "max_concurrency", "boolean"),
    ({**GOOD, "retries": -1}, "retries", ">= 0"),
    ({**GOOD, "retries": 21}, "retries", "<= 20"),
    ({**GOOD, "timeout_s": 0}, "timeout_s", "> 0"),
    ({**GOOD, "timeout_s": -5.0}, "timeout_s", "> 0"),
    ({**GOOD, "timeout_s": "60"}, "timeout_s", "seconds"),
    ({**GOOD, "connect_timeout_s": 1e9}, "connect_timeout_s", "86400"),
    ({**GOOD, "api_key_env": "sk-live-123"}, "api_key_env", "NAME of an environment variable"),
    ({**GOOD, "engine": "vllm"}, "engine", "llama, openai"),
    ({**GOOD, "n_gpu_layers": 10}, "n_gpu_layers", "server's command line"),
    ({**GOOD, "rpc_servers": ["a:1"]}, "rpc_servers", "server's command line"),
    ({**GOOD, "flash_attn": True}, "flash_attn", "server's command line"),
    ({**without("sha256"), "repo": "org/model", "revision": "main"}, "revision", "40-character commit"),
    ({**GOOD, "repo": "org/model", "revision": "a" * 40}, "sha256", "once"),
    ({**without("sha256"), "repo": "no-slash", "revision": "a" * 40}, "repo", "owner/name"),
    ({**GOOD, "sha256": "abc"}, "sha256", "64 hexadecimal"),
    ({**GOOD, "n_ctx": 10}, "n_ctx", ">= 128"),
    ({**{k: v for k, v in GOOD.items() if k not in ("engine",)}}, "base_url", "only for served models"),
]


@pytest.mark.parametrize("body,key,words", BAD_CONFIGS, ids=[f"{i}-{c[1]}" for i, c in enumerate(BAD_CONFIGS)])
def test_bad_served_configuration_is_one_line_naming_file_line_and_key(tmp_path: Path, body: dict[str, Any],
                                                                        key: str, words: str) -> None:
    path = write_model(tmp_path, body)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert "\n" not in message and words in message, message
    assert key in message and message.startswith(f"{path}:"), message
    lines = path.read_text().splitlines()
    line = caught.value.line
    assert line is not None
    named = lines[line - 1]
    # the line is the key's own line when the key is present, else the table header
    assert named.startswith(f"{key} =") or named == "[models.served]", (line, named)


def test_good_served_configurations_parse_with_their_identity(tmp_path: Path) -> None:
    spec = load_config(write_model(tmp_path, {**GOOD, "base_url": "https://gpu01.example:8443/v1/",
                                               "max_concurrency": 8, "api_key_env": "MEDBENCH_KEY"})).model("served")
    assert spec.engine == "openai" and spec.served is not None
    assert spec.served.base_url == "https://gpu01.example:8443" and spec.served.host == "gpu01.example:8443"
    assert spec.served.max_concurrency == 8 and spec.served.api_key_env == "MEDBENCH_KEY"
    assert spec.source.describe() == "served 'smol' at https://gpu01.example:8443"
    safetensors = load_config(write_model(tmp_path, {**without("sha256"), "repo": "org/model",
                                                     "revision": "a" * 40})).model("served")
    assert safetensors.served is not None and safetensors.served.weights_revision == "a" * 40
    assert safetensors.sha256 is None and safetensors.source.describe().startswith("served")


# ------------------------------------------------------------------------------------------- HTTP retries


def client_for(handler: Callable[[httpx.Request], httpx.Response], retries: int = 3
               ) -> tuple[ServerClient, list[float]]:
    slept: list[float] = []
    client = ServerClient("http://server:8080", retries=retries, sleep=slept.append,
                          transport=httpx.MockTransport(handler))
    return client, slept


def test_5xx_is_retried_with_exponential_backoff_then_succeeds() -> None:
    answers = iter([503, 502, 200])

    def handler(request: httpx.Request) -> httpx.Response:
        status = next(answers)
        return httpx.Response(status, json={"ok": status == 200})

    client, slept = client_for(handler)
    answer = client.get("/v1/models")
    assert answer is not None and answer.value == {"ok": True}
    assert slept == [0.5, 1.0]


@pytest.mark.parametrize("retries", [0, 1, 3, 6])
def test_connection_errors_are_retried_a_bounded_number_of_times(retries: int) -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        raise httpx.ConnectError("connection refused")

    client, slept = client_for(handler, retries)
    with pytest.raises(ServerUnavailable) as caught:
        client.post("/v1/completions", {}, max_bytes=1000)
    assert len(calls) == retries + 1 and slept == backoff_delays(retries)
    assert "rerun the same command to resume" in str(caught.value)
    assert all(d <= 8.0 for d in backoff_delays(20))


def test_a_persistent_5xx_is_an_item_error_and_4xx_is_not_retried() -> None:
    client, slept = client_for(lambda r: httpx.Response(500, json={"error": {"message": "boom"}}), retries=2)
    with pytest.raises(ServerRequestError, match="HTTP 500.*boom"):
        client.post("/v1/completions", {}, max_bytes=1000)
    assert slept == [0.5, 1.0]
    client, slept = client_for(lambda r: httpx.Response(400, json={"detail": "prompt too long"}))
    with pytest.raises(ServerRequestError, match="prompt too long"):
        client.post("/v1/completions", {}, max_bytes=1000)
    assert slept == []


def test_auth_failure_is_refused_at_once_and_a_read_timeout_is_not_retried() -> None:
    client, slept = client_for(lambda r: httpx.Response(401, json={"detail": "Invalid API key"}))
    with pytest.raises(ServerRefused, match="401"):
        client.get("/v1/models")
    assert slept == []

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out")

    client, slept = client_for(slow)
    with pytest.raises(ServerRequestError, match="timeout_s"):
        client.post("/v1/completions", {}, max_bytes=1000)
    assert slept == []
    client, _ = client_for(lambda r: httpx.Response(404))
    assert client.get("/props", optional=True) is None


# ------------------------------------------------------------------------------------------- fake servers


class FakeServer:
    """An OpenAI-compatible server of a chosen kind with a character-level tokenizer (BOS = 1)."""

    def __init__(self, kind: str, model: str = "smol", n_ctx: int | None = None, add_bos: bool = True,
                 echo: bool = True) -> None:
        self.kind, self.model, self.n_ctx, self.add_bos, self.echo = kind, model, n_ctx, add_bos, echo
        self.completions: list[dict[str, Any]] = []
        self.shift_echo = 0  # > 0: a broken server whose echoed list is shifted by this many entries
        self.drop_generated = False  # llama-cpp-python at times: the generated token counted but not listed

    def echoed(self, tokens: list[int]) -> dict[str, Any]:
        """An ``echo`` + ``logprobs`` answer as the OpenAI completions API gives it (first prompt entry null),
        with one generated token; llama-cpp-python leaves out every token whose id is the BOS id."""
        kept = [(i, t) for i, t in enumerate(tokens) if not (self.kind == "llama-cpp-python" and t == 1)]
        values: list[float | None] = [None if i == 0 else fake_logprob(tokens[i - 1], t) for i, t in kept]
        tops: list[Any] = [None if i == 0 else {"x": FAKE_TOP, self.detokens([t]):
                                                fake_logprob(tokens[i - 1], t)} for i, t in kept]
        texts = [self.detokens([t]) for _, t in kept]
        values, tops, texts = values + [-0.5], tops + [{"?": -0.5}], texts + ["?"]  # the generated token
        if self.shift_echo:
            values, tops, texts = values[self.shift_echo:], tops[self.shift_echo:], texts[:-self.shift_echo]
        if self.drop_generated:
            values, tops, texts = values[:-1], tops[:-1], texts[:-1]
        return {"model": self.model, "choices": [{"text": "", "finish_reason": "length", "logprobs": {
                    "tokens": texts, "token_logprobs": values, "top_logprobs": tops,
                    "text_offset": list(range(len(texts)))}}],
                "usage": {"prompt_tokens": len(tokens), "completion_tokens": 1}}

    def tokens(self, text: str, add: bool = True) -> list[int]:
        tokens = []
        rest = text
        while rest:
            if rest.startswith("<s>"):
                tokens.append(1)
                rest = rest[3:]
            else:
                tokens.append(ord(rest[0]) + 10)
                rest = rest[1:]
        return ([1] if self.add_bos and add else []) + tokens

    def detokens(self, tokens: list[int]) -> str:
        return "".join("<s>" if t == 1 else chr(t - 10) for t in tokens)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        body = json.loads(request.content) if request.content else {}
        if path == "/v1/models":
            entry: dict[str, Any] = {"id": self.model, "object": "model"}
            if self.kind == "vllm" and self.n_ctx:
                entry["max_model_len"] = self.n_ctx
            return httpx.Response(200, json={"object": "list", "data": [entry]})
        if path == "/props" and self.kind == "llama-server":
            return httpx.Response(200, json={"build_info": "b9999-abc", "model_path": "/m/x.gguf",
                                             "default_generation_settings": {"n_ctx": self.n_ctx}})
        if path == "/version" and self.kind == "vllm":
            return httpx.Response(200, json={"version": "0.9.1"})
        if path == "/tokenize" and self.kind == "llama-server":
            return httpx.Response(200, json={"tokens": self.tokens(body["content"])})
        if path == "/tokenize" and self.kind == "vllm":
            return httpx.Response(200, json={"tokens": self.tokens(body["prompt"])})
        if path == "/extras/tokenize" and self.kind == "llama-cpp-python":
            return httpx.Response(200, json={"tokens": self.tokens(body["input"])})
        if path == "/extras/detokenize" and self.kind == "llama-cpp-python":
            return httpx.Response(200, json={"text": self.detokens(body["tokens"])})
        if path == "/openapi.json" and self.kind == "llama-cpp-python":
            return httpx.Response(200, json={"info": {"version": "0.3.36"}})
        if path == "/v1/completions":
            self.completions.append(body)
            prompt = body["prompt"]
            n = len(prompt) if isinstance(prompt, list) else len(self.tokens(prompt))
            if body.get("echo") and self.echo:
                return httpx.Response(200, json=self.echoed(prompt if isinstance(prompt, list)
                                                            else self.tokens(prompt)))
            return httpx.Response(200, json={"model": self.model,
                                             "choices": [{"text": " A", "finish_reason": "stop"}],
                                             "usage": {"prompt_tokens": n, "completion_tokens": 1}})
        return httpx.Response(404, json={"detail": "Not Found"})


def fake_logprob(previous: int, token: int) -> float:
    """The fake model's log-probability of ``token`` after ``previous`` (any fixed, checkable function)."""
    return -((previous * 31 + token * 17) % 97) / 10


FAKE_TOP = -2.0  # the fake model's best other token: a token scoring at least this much was the argmax


def served_spec(tmp_path: Path, **extra: Any) -> Any:
    body = {**GOOD, **extra}
    body = {k: v for k, v in body.items() if v is not None}
    return load_config(write_model(tmp_path, body)).model("served")


def engine_on(tmp_path: Path, server: FakeServer, **extra: Any) -> OpenAICompatEngine:
    spec = served_spec(tmp_path, **extra)
    client = ServerClient(spec.served.base_url, retries=0, transport=httpx.MockTransport(server))
    return OpenAICompatEngine(spec, None, client=client)


@pytest.mark.parametrize("kind,token_ids,grammar,tokenize,loglik", [
    ("llama-server", True, True, True, False), ("vllm", True, False, True, True),
    ("llama-cpp-python", False, True, True, True), ("openai", False, False, False, False)])
def test_server_kind_and_capabilities_are_detected(tmp_path: Path, kind: str, token_ids: bool, grammar: bool,
                                                   tokenize: bool, loglik: bool) -> None:
    # a generic OpenAI server says nothing of its build: the user names it (test_served_identity.py)
    engine = engine_on(tmp_path, FakeServer(kind, n_ctx=256), server_build="v1" if kind == "openai" else None)
    probe = engine.probe
    assert (probe.kind, probe.token_ids, probe.grammar, probe.tokenize, probe.loglik) == \
        (kind, token_ids, grammar, tokenize, loglik)
    assert engine.settings["server_kind"] == kind and engine.settings["prompt_sent_as"] == \
        ("token ids" if token_ids else "text")
    if loglik:
        require_capabilities(engine.spec, probe, ("generate", "loglik"), engine.client)
    else:
        with pytest.raises(UserError, match="loglik") as refused:
            require_capabilities(engine.spec, probe, ("generate", "loglik"))
        assert "\n" not in str(refused.value)
        if kind == "llama-server":
            assert "rejects echo" in str(refused.value)
    if not grammar:
        with pytest.raises(UserError, match="constrained"):
            require_capabilities(engine.spec, probe, ("constrained",))
    else:
        require_capabilities(engine.spec, probe, ("generate", "constrained"))


def test_a_model_name_the_server_does_not_serve_is_refused_with_the_names_it_serves(tmp_path: Path) -> None:
    spec = served_spec(tmp_path, model="llama-70b")
    client = ServerClient(spec.served.base_url, retries=0, transport=httpx.MockTransport(FakeServer("vllm")))
    with pytest.raises(ServerRefused, match="'llama-70b'.*'smol'"):
        probe_server(spec, client)


def test_a_declared_context_larger_than_the_servers_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="only 130"):
        engine_on(tmp_path, FakeServer("llama-server", n_ctx=130), n_ctx=256)


@pytest.mark.parametrize("kind", ["llama-server", "vllm", "llama-cpp-python"])
@pytest.mark.parametrize("length", [5, 40, 200])
def test_prompts_are_cut_from_the_left_keeping_bos_as_in_process(tmp_path: Path, kind: str, length: int) -> None:
    server = FakeServer(kind, n_ctx=128)
    engine = engine_on(tmp_path, server, n_ctx=128, chat_template=None, prompt_mode="base")
    question = "".join(chr(ord("a") + i % 26) for i in range(length))
    generation = engine.generate(GenerateRequest(Prompt(system="", user=question), max_tokens=64))
    sent = server.completions[-1]
    budget = 128 - 64
    tokens = server.tokens(generation.prompt_text)
    expected = tokens if len(tokens) <= budget else [1] + tokens[len(tokens) - budget + 1:]
    prompt_tokens = sent["prompt"] if kind != "llama-cpp-python" else server.tokens(sent["prompt"])
    assert prompt_tokens == expected
    assert generation.prompt_tokens == len(expected)
    assert generation.truncated_tokens == len(tokens) - len(expected)
    assert sent["temperature"] == 0.0 and sent["seed"] == 1234 and sent["model"] == "smol"
    if kind != "vllm":
        assert sent["top_k"] == 1 and sent["repeat_penalty"] == 1.0


def test_a_bos_written_by_the_template_is_not_doubled(tmp_path: Path) -> None:
    server = FakeServer("llama-server", n_ctx=128)
    engine = engine_on(tmp_path, server, chat_template="<s>{% for m in messages %}{{ m.content }}{% endfor %}",
                       n_ctx=128)
    engine.generate(GenerateRequest(Prompt(system="", user="hi"), max_tokens=8))
    assert server.completions[-1]["prompt"][:2] == [1, ord("h") + 10]


# ------------------------------------------------------------------------------------------- loglik on a server

LOGLIK_CONTINUATIONS = [(" A", " B", " C", " D"), (" yes", " no"), ("ENTAILMENT", "NEUTRAL", "CONTRADICTION")]


@pytest.mark.parametrize("kind", ["vllm", "llama-cpp-python"])
@pytest.mark.parametrize("continuations", LOGLIK_CONTINUATIONS, ids=["letters", "words", "labels"])
@pytest.mark.parametrize("length", [5, 200])
def test_served_loglik_sums_the_echoed_log_probabilities_of_exactly_the_continuation(
        tmp_path: Path, kind: str, continuations: tuple[str, ...], length: int) -> None:
    """Each continuation is scored from the tail of the server's echo (the fake model's log-probabilities,
    recomputed here from its definition), after the context cut from the left as in-process; llama-cpp-python's
    habit of leaving BOS-id tokens out of the echo does not shift the tail."""
    server = FakeServer(kind, n_ctx=128)
    engine = engine_on(tmp_path, server, n_ctx=128, chat_template="<s>{% for m in messages %}{{ m.content }}"
                                                                  "{% endfor %}<s>")
    question = "".join(chr(ord("a") + i % 26) for i in range(length))
    result = engine.loglikelihood(LoglikelihoodRequest(Prompt(system="", user=question), continuations))
    context = server.tokens(result.prompt_text, add=False)  # the template writes its own BOS
    budget = 128 - max(len(c) for c in continuations) - 1
    kept = context if len(context) <= budget else [1] + context[len(context) - budget + 1:]
    assert (result.prompt_tokens, result.truncated_tokens) == (len(kept), len(context) - len(kept))
    sent = server.completions[-len(continuations):]
    for continuation, score, body in zip(continuations, result.scores, sent):
        whole = kept + server.tokens(continuation, add=False)
        steps = [fake_logprob(whole[i - 1], whole[i]) for i in range(len(kept), len(whole))]
        assert score.logprob == pytest.approx(sum(steps))
        assert score.greedy == all(step >= FAKE_TOP for step in steps)
        assert (score.tokens, score.bytes) == (len(continuation), len(continuation.encode()))
        prompt = body["prompt"] if kind == "vllm" else server.tokens(body["prompt"])  # what the server reads
        assert prompt == whole
        assert body["echo"] is True and body["max_tokens"] == 1 and body["temperature"] == 0.0


def test_a_served_echo_that_does_not_line_up_is_an_item_error_not_a_score(tmp_path: Path) -> None:
    server = FakeServer("vllm", n_ctx=128)
    engine = engine_on(tmp_path, server, n_ctx=128)
    server.shift_echo = 1
    with pytest.raises(ServerRequestError, match="do not line up"):
        engine.loglikelihood(LoglikelihoodRequest(Prompt(system="", user="Which?"), (" A", " B")))


@pytest.mark.parametrize("kind", ["vllm", "llama-cpp-python"])
@pytest.mark.parametrize("continuations", [(" A", " B"), (" yes", " no", " maybe"), ("A", "?")])
def test_a_generated_token_left_out_of_the_echo_lists_gives_the_same_scores(tmp_path: Path, kind: str,
                                                                           continuations: tuple[str, ...]) -> None:
    """llama-cpp-python's server sometimes counts its generated token (usage.completion_tokens = 1) without
    listing it (measured with SmolLM2, which has no BOS, after a base-model prompt ending in "Answer:"): the prompt
    then ends at the last entry, and the scores are those of a server that lists it. (The fake llama-cpp-python
    leaves a BOS out of its lists; a list that does not start at the prompt's first token is not read this way:
    see test_a_served_echo_that_does_not_line_up_is_an_item_error_not_a_score.)"""
    request = LoglikelihoodRequest(Prompt(system="", user="Which?"), continuations)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    listed = engine_on(tmp_path / "a", FakeServer(kind, n_ctx=128, add_bos=False), n_ctx=128).loglikelihood(request)
    dropping = FakeServer(kind, n_ctx=128, add_bos=False)
    dropping.drop_generated = True
    dropped = engine_on(tmp_path / "b", dropping, n_ctx=128).loglikelihood(request)
    assert [(s.logprob, s.tokens, s.greedy) for s in dropped.scores] == \
        [(s.logprob, s.tokens, s.greedy) for s in listed.scores]


@pytest.mark.parametrize("kind", ["vllm", "llama-cpp-python"])
def test_a_server_that_ignores_echo_is_refused_before_a_loglik_run_and_fails_items_clearly(
        tmp_path: Path, kind: str) -> None:
    server = FakeServer(kind, n_ctx=128, echo=False)
    engine = engine_on(tmp_path, server, n_ctx=128)
    with pytest.raises(UserError, match="answered an echo request without them") as refused:
        require_capabilities(engine.spec, engine.probe, ("loglik",), engine.client)
    assert "\n" not in str(refused.value)
    with pytest.raises(ServerRequestError, match="without prompt log-probabilities"):
        engine.loglikelihood(LoglikelihoodRequest(Prompt(system="", user="Which?"), (" A", " B")))


# ------------------------------------------------------------------------------------------- the item pool


class Stop:
    def __init__(self) -> None:
        self.requested = False


@contextmanager
def always(item: int) -> Any:
    yield True


def test_pool_overlaps_items_and_commits_each_once_in_the_calling_thread() -> None:
    workers = 4
    barrier = threading.Barrier(workers, timeout=30)  # passes only if `workers` items are in flight together
    committed: list[tuple[int, str]] = []

    def compute(item: int) -> int:
        if item < workers:
            barrier.wait()
        return item * 10

    run_pooled(range(20), workers=workers, stop=Stop(), claim=always, compute=compute,
               commit=lambda item, result: committed.append((result, threading.current_thread().name)))
    assert sorted(r for r, _ in committed) == [i * 10 for i in range(20)]
    assert {name for _, name in committed} == {threading.main_thread().name}


def test_pool_stop_request_drains_in_flight_items_and_submits_no_more() -> None:
    stop = Stop()
    started: list[int] = []
    release = threading.Event()

    def compute(item: int) -> int:
        started.append(item)
        if len(started) == 3:
            stop.requested = True  # as the first Ctrl-C does, while 3 items are in flight
            release.set()
        release.wait(timeout=30)
        return item

    committed: list[int] = []
    run_pooled(range(100), workers=3, stop=stop, claim=always, compute=compute,
               commit=lambda item, result: committed.append(item))
    assert sorted(committed) == sorted(started) and len(committed) == 3


def test_pool_skips_items_it_cannot_claim_and_raises_a_server_failure_after_draining() -> None:
    @contextmanager
    def odd_only(item: int) -> Any:
        yield item % 2 == 1

    seen: list[int] = []
    run_pooled(range(10), workers=2, stop=Stop(), claim=odd_only, compute=lambda i: i,
               commit=lambda item, result: seen.append(item))
    assert sorted(seen) == [1, 3, 5, 7, 9]

    committed: list[int] = []

    def compute(item: int) -> int:
        if item == 2:
            raise ServerUnavailable("server gone")
        return item

    with pytest.raises(ServerUnavailable):
        run_pooled(range(50), workers=2, stop=Stop(), claim=always, compute=compute,
                   commit=lambda item, result: committed.append(item))
    assert 2 not in committed and len(committed) < 50 and len(set(committed)) == len(committed)


# ------------------------------------------------------------------------------------------- network guard


def test_network_guard_allows_exactly_the_served_host() -> None:
    from medbench_local.airgap.netguard import NetworkAccessBlocked, NetworkGuard

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        port = listener.getsockname()[1]
        with NetworkGuard(allow=[f"127.0.0.1:{port}"]) as guard:
            with socket.create_connection(("127.0.0.1", port), timeout=5):
                pass
            with pytest.raises(NetworkAccessBlocked), socket.socket() as other:
                other.connect(("127.0.0.1", port + 1 if port < 65535 else port - 1))
            with pytest.raises(NetworkAccessBlocked):
                socket.getaddrinfo("example.org", port)
    assert len(guard.attempts) == 2
    with NetworkGuard() as strict, pytest.raises(NetworkAccessBlocked), socket.socket() as sock:
        sock.connect(("127.0.0.1", port))
    assert strict.attempts


# ------------------------------------------------------------------------------------------- identity


def test_placement_is_not_identity_but_the_server_build_and_weights_are(tmp_path: Path) -> None:
    from medbench_local.runner import engine_identity

    base = engine_identity(engine_on(tmp_path, FakeServer("llama-server", n_ctx=256)))
    moved = engine_identity(engine_on(tmp_path, FakeServer("llama-server", n_ctx=256),
                                      base_url="http://10.0.0.7:9000", retries=0, timeout_s=30))
    assert moved == base
    other = FakeServer("llama-server", n_ctx=256)
    original = other.__call__

    def newer_build(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/props":
            return httpx.Response(200, json={"build_info": "b10000-def",
                                             "default_generation_settings": {"n_ctx": 256}})
        return original(request)

    spec = served_spec(tmp_path)
    rebuilt = engine_identity(OpenAICompatEngine(spec, None, client=ServerClient(
        spec.served.base_url, retries=0, transport=httpx.MockTransport(newer_build))))
    assert rebuilt != base
    reweighted = engine_identity(engine_on(tmp_path, FakeServer("llama-server", n_ctx=256), sha256="0" * 64))
    assert reweighted != base and reweighted["model_sha256"] == "0" * 64
