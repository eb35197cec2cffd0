"""The served engine: a model behind an OpenAI-compatible completions endpoint (llama-server, vLLM,
llama-cpp-python's server), implementing the same Engine protocol as the in-process llama.cpp adapter.

Why the *completions* endpoint and our own rendering: a served model must see exactly what the in-process
model sees. So the prompt is rendered here with the same code (prompt_format, the GGUF's chat template or the
models.toml override), tokenized by the server's own tokenizer (``/tokenize``, llama-cpp-python's
``/extras/tokenize``), cut from the left with the same rule (truncation.left_truncate), and sent as token ids
where the server accepts them (llama-server, vLLM) or as text where it does not (llama-cpp-python: the text is
checked to tokenize back to exactly those tokens). Decoding is greedy (temperature 0, top_k 1 and no
repetition penalty where the server has these knobs), with the task's stop strings. The chat endpoint is never
used: it would apply the server's idea of the template.

What is recorded (``settings``): the server's kind and build, the weights the user declared (we cannot hash
the server's files), the template hash, n_ctx, the sampling fields sent, whether token ids or text were sent.
Where the server runs, under which name and what it said about itself (``/props``, ``/v1/models``) are
recorded under ``placement``: they do not decide outputs and are not part of the identity. A placeholder build
(``b0-unknown``) and a concurrency above 1 are handled by ``server_build.py``.

Capabilities are detected once, up front (``probe_server``): a scoring mode the server cannot do is refused
with one line before the database is touched (``require_capabilities``). Log-likelihood scoring reads the
completions endpoint's echoed prompt log-probabilities (``served_loglik.py``): vLLM and llama-cpp-python's
server give them, llama-server does not; a live echo request confirms it before a loglik run.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import ModelSpec, ServedSpec
from ..errors import UserError
from ..gates.secrets import require_header_safe
from ..prompting.prompt_format import render_for_model
from .base import (
    ContinuationScore,
    GenerateRequest,
    Generation,
    LoglikelihoodRequest,
    Loglikelihoods,
    ModelInfo,
    Prompt,
)
from .http import (
    Field,
    ServerClient,
    ServerRefused,
    ServerRequestError,
    completion_bytes,
    detokenize_bytes,
    echo_bytes,
    malformed,
    tokenize_bytes,
)
from .identity import identity as engine_identity
from .served_loglik import ECHO_MAX_TOKENS, echo_body, echo_works, read_tail
from .server_build import concurrency_identity, identified_build
from .truncation import left_truncate

DEFAULT_SEED = 1234
KINDS = ("llama-server", "vllm", "llama-cpp-python", "openai")
MAX_TOKEN_ID = 2 ** 31 - 1
MAX_CONTEXT = 2 ** 31 - 1
MAX_NAME_CHARS = 1000  # a model name, build or special token's text as a server reports it
# kinds whose completions endpoint echoes the prompt with log-probabilities (llama-server rejects echo:
# llama.cpp issue #27174); the tokenize route is needed too, to know how many tokens a continuation has
_ECHO_LOGPROBS = ("vllm", "llama-cpp-python")
# tokenize/detokenize routes and their request/response shapes, per server kind
_TOKENIZE: dict[str, tuple[str, Callable[[str, str], dict[str, Any]], str]] = {
    "llama-server": ("/tokenize", lambda text, model: {"content": text, "add_special": True,
                                                       "parse_special": True}, "tokens"),
    "vllm": ("/tokenize", lambda text, model: {"model": model, "prompt": text, "add_special_tokens": True},
             "tokens"),
    "llama-cpp-python": ("/extras/tokenize", lambda text, model: {"input": text, "model": model}, "tokens"),
}
_DETOKENIZE: dict[str, tuple[str, Callable[[list[int], str], dict[str, Any]], str]] = {
    "llama-server": ("/detokenize", lambda tokens, model: {"tokens": tokens}, "content"),
    "vllm": ("/detokenize", lambda tokens, model: {"model": model, "tokens": tokens}, "prompt"),
    "llama-cpp-python": ("/extras/detokenize", lambda tokens, model: {"tokens": tokens, "model": model}, "text"),
}
# greedy decoding as each kind spells it (beyond temperature 0 and top_p 1, which every kind takes)
_GREEDY: dict[str, dict[str, Any]] = {
    "llama-server": {"top_k": 1, "min_p": 0.0, "repeat_penalty": 1.0, "cache_prompt": True},
    "llama-cpp-python": {"top_k": 1, "min_p": 0.0, "repeat_penalty": 1.0},
    "vllm": {"top_k": 1, "repetition_penalty": 1.0},
    "openai": {},
}


@dataclass(frozen=True)
class ServerProbe:
    """What a server says about itself and what it can do, found out once before a run."""

    kind: str                       # one of KINDS
    build: str                      # the server's build/version as it reports it ("unknown" when it does not)
    models: list[str]               # names /v1/models lists
    n_ctx: int | None               # the context size it reports, if any
    chat_template: str | None       # /props chat_template (llama-server)
    bos_token: str                  # BOS/EOS text for templates, when reported
    eos_token: str
    token_ids: bool                 # accepts a list of token ids as the prompt
    tokenize: bool                  # has a tokenize endpoint (left truncation as in-process)
    grammar: bool                   # accepts a GBNF ``grammar`` (constrained scoring)
    loglik: bool                    # prompt log-probabilities usable for loglik scoring
    slots: int | None = None        # /props total_slots (llama-server --parallel), when reported
    reported: dict[str, Any] = field(default_factory=dict)  # /props and /v1/models, trimmed, for the record


def api_key(served: ServedSpec, environ: dict[str, str] | None = None) -> str | None:
    """The API key from the environment variable models.toml names (never stored, never logged): registered with
    the secrets gate at once, so that no message can show it, and refused when it could not travel in a header
    as it is (a trailing newline, a control or non-ASCII character)."""
    if served.api_key_env is None:
        return None
    value = (os.environ if environ is None else environ).get(served.api_key_env)
    if not value:
        raise UserError(f"api_key_env = \"{served.api_key_env}\" names an environment variable that is not set "
                        f"(export {served.api_key_env}=... before the run)")
    return require_header_safe(value, f"${served.api_key_env}")


def make_client(spec: ModelSpec, **overrides: Any) -> ServerClient:
    served = _served(spec)
    hint = (f"check the key in ${served.api_key_env}" if served.api_key_env
            else "the server wants an API key: export it as a variable and name that variable with api_key_env "
                 "in models.toml")
    options: dict[str, Any] = dict(api_key=api_key(served), timeout_s=served.timeout_s,
                                   connect_timeout_s=served.connect_timeout_s, retries=served.retries,
                                   max_connections=served.max_concurrency, key_hint=hint,
                                   key_source=f"${served.api_key_env}")
    options.update(overrides)
    return ServerClient(served.base_url, **options)


def _served(spec: ModelSpec) -> ServedSpec:
    if spec.served is None:
        raise ValueError(f"model '{spec.id}' is not a served model")
    return spec.served


def _trim(value: Any, depth: int = 0) -> Any:
    """A JSON value with long strings and lists shortened, for the record (a /props answer can hold a 10 KB
    template and per-slot state)."""
    if isinstance(value, str):
        return value if len(value) <= 200 else value[:200] + "…"
    if isinstance(value, list):
        return [_trim(v, depth + 1) for v in value[:8]] if depth < 4 else "…"
    if isinstance(value, dict):
        return {str(k): _trim(v, depth + 1) for k, v in list(value.items())[:40]} if depth < 4 else "…"
    return value


def probe_server(spec: ModelSpec, client: ServerClient) -> ServerProbe:
    """Reach the server, check the model name, and find out its kind and capabilities.

    Raises ServerUnavailable (not reachable), ServerRefused (API key, model not served, or anything wrong with
    what it answers: one line each, never a traceback). A server still loading its model (503) is waited for."""
    try:
        return _probe(spec, client)
    except ServerRequestError as exc:
        raise _refused(spec, exc) from None


def _refused(spec: ModelSpec, exc: ServerRequestError) -> ServerRefused:
    """A failure during the checks before a run, as the one line that stops it."""
    return ServerRefused(f"model '{spec.id}': the server at {_served(spec).base_url} failed the check before the "
                         f"run: {exc}")


def _discovery(client: ServerClient, path: str, body: dict[str, Any] | None = None) -> Field | None:
    """An optional route that tells the server's kind: its answer when it is a JSON object, else None (a route
    some other server answers with a page of its own). Redirects, timeouts and errors still raise."""
    try:
        answer = client.get(path, optional=True) if body is None else \
            client.post(path, body, optional=True, max_bytes=tokenize_bytes(""))
    except ServerRequestError as exc:
        if exc.kind != "malformed answer":
            raise
        return None
    return answer if answer is not None and isinstance(answer.value, dict) else None


def _optional_text(field: Field | None, key: str, max_chars: int | None = MAX_NAME_CHARS) -> str | None:
    """The text ``key`` of an answer object, None when absent or null; any other type is malformed."""
    found = field.get(key) if field is not None else None
    return found.string(max_chars) if found is not None else None


def _probe(spec: ModelSpec, client: ServerClient) -> ServerProbe:
    served = _served(spec)
    listing = client.get("/v1/models", optional=True, wait_loading=True)
    if listing is None:
        raise ServerRefused(f"server {served.base_url} has no /v1/models route: not an OpenAI-compatible server "
                            "(base_url should be the server's root, e.g. http://host:8080)")
    entries = listing["data"].items()
    names = [entry["id"].string(MAX_NAME_CHARS) for entry in entries]
    if served.model not in names:
        raise ServerRefused(f"server {served.base_url} does not serve a model named '{served.model}' (it serves: "
                            f"{', '.join(repr(n[:80]) for n in names[:10]) or 'nothing'}); set model = ... in "
                            "models.toml to the served name (llama-server --alias, vLLM --served-model-name)")
    entry = entries[names.index(served.model)]
    props = _discovery(client, "/props")
    version = None if props is not None else _discovery(client, "/version")
    kind, build = "openai", "unknown"
    settings: Field | None = None
    if props is not None and ("default_generation_settings" in props.object() or "build_info" in props.object()):
        kind, build = "llama-server", _optional_text(props, "build_info") or "unknown"
        settings = props.get("default_generation_settings")
        if settings is not None:
            settings.object()
    elif version is not None and "version" in version.object():
        kind, build = "vllm", version["version"].string(MAX_NAME_CHARS)
    elif _discovery(client, "/extras/tokenize", {"input": "", "model": served.model}) is not None:
        kind = "llama-cpp-python"
        api = _discovery(client, "/openapi.json")
        info = api.get("info") if api is not None else None
        build = (_optional_text(info, "version") if info is not None and isinstance(info.value, dict) else None) \
            or "unknown"
    n_ctx = None
    for source, key in ((settings, "n_ctx"), (props, "n_ctx"), (entry, "max_model_len")):
        found = source.get(key) if source is not None else None
        if found is not None:
            n_ctx = found.integer(1, MAX_CONTEXT)
            break
    raw_props = props.object() if props is not None else None
    found_slots = props.get("total_slots") if props is not None else None
    return ServerProbe(
        kind=kind, build=build, models=names, n_ctx=n_ctx,
        chat_template=_optional_text(props, "chat_template", None) or None,
        bos_token=_optional_text(props, "bos_token") or "", eos_token=_optional_text(props, "eos_token") or "",
        token_ids=kind in ("llama-server", "vllm"), tokenize=kind in _TOKENIZE,
        grammar=kind in ("llama-server", "llama-cpp-python"),
        loglik=kind in _ECHO_LOGPROBS,
        slots=found_slots.integer(1, 1 << 20) if found_slots is not None else None,
        reported={"models": _trim([e.value for e in entries]),
                  **({"props": _trim({k: v for k, v in raw_props.items() if k != "chat_template"})}
                     if raw_props else {}),
                  **({"version": _trim(version.value)} if version is not None else {})},
    )


def loglik_problem(spec: ModelSpec, probe: ServerProbe, client: ServerClient | None = None) -> str | None:
    """Why loglik scoring cannot run on this server, or None. With a ``client``, one echo request is tried: a
    server that takes ``echo`` but returns no prompt log-probabilities (an older version, a proxy in between) is
    refused up front rather than failing every item. A request that fails outright is a ServerRefused."""
    served = _served(spec)
    if probe.kind == "llama-server":
        return (f"llama-server ({served.base_url}) rejects echo, so it returns none (llama.cpp issue #27174); "
                "serve the model with vLLM or llama-cpp-python's server for loglik")
    if not probe.loglik:
        return f"a {probe.kind} server ({served.base_url}) is not known to return them with echo"
    if client is not None:
        try:
            answer = client.post("/v1/completions", echo_body(served.model, "The answer is", {"temperature": 0.0},
                                                              0), optional=True, max_bytes=echo_bytes(64))
        except ServerRequestError as exc:
            if exc.kind != "malformed answer":
                raise _refused(spec, exc) from None
            answer = None
        if not echo_works(answer):
            return f"the {probe.kind} server at {served.base_url} answered an echo request without them"
    return None


def require_capabilities(spec: ModelSpec, probe: ServerProbe, modes: tuple[str, ...],
                         client: ServerClient | None = None) -> None:
    """Refuse, before anything is written, a scoring mode this server cannot do (one line); with a ``client``,
    loglik is tried once (``loglik_problem``)."""
    served = _served(spec)
    identified_build(spec, probe.build)  # a placeholder build with nothing to stand in for it: refused now
    if "loglik" in modes:
        problem = loglik_problem(spec, probe, client)
        if problem:
            raise UserError(f"model '{spec.id}': --scoring loglik needs the prompt's log-probabilities, and {problem}"
                            "; use --scoring generate or constrained, or run the model in-process "
                            "(docs/scale-out.md)")
    if "constrained" in modes and not probe.grammar:
        raise UserError(f"model '{spec.id}': --scoring constrained needs a GBNF grammar field, which a "
                        f"{probe.kind} server ({served.base_url}) does not take; use llama-server or "
                        "llama-cpp-python's server, or --scoring generate")
    n_ctx = context_size(spec, probe)
    if served.n_ctx is None and n_ctx is None:
        raise UserError(f"model '{spec.id}': the {probe.kind} server at {served.base_url} does not report its "
                        "context size; set n_ctx in models.toml to the server's (e.g. --n_ctx 4096)")


def context_size(spec: ModelSpec, probe: ServerProbe) -> int | None:
    """The context the prompts must fit in: the declared n_ctx (at most the server's), else the server's."""
    served = _served(spec)
    if served.n_ctx is not None and probe.n_ctx is not None and served.n_ctx > probe.n_ctx:
        raise UserError(f"model '{spec.id}': n_ctx = {served.n_ctx} in models.toml, but the server at "
                        f"{served.base_url} has only {probe.n_ctx}; lower n_ctx or restart the server with more")
    return served.n_ctx if served.n_ctx is not None else probe.n_ctx


def weights_identity(served: ServedSpec, declared_sha256: str | None) -> tuple[str, dict[str, str]]:
    """(the model's sha256 column, what was declared): the GGUF's SHA-256, or for safetensors the SHA-256 of
    the text "<repo>@<revision>" (a stable key for the pinned weights; the declaration itself is recorded)."""
    if declared_sha256:
        return declared_sha256, {"sha256": declared_sha256}
    pin = f"{served.weights_repo}@{served.weights_revision}"
    return hashlib.sha256(pin.encode()).hexdigest(), {"repo": str(served.weights_repo),
                                                       "revision": str(served.weights_revision)}


def local_template(path: Path | None) -> tuple[str | None, str, str, dict[str, Any]]:
    """(chat template, BOS text, EOS text, header summary) of a local copy of the served GGUF, read for its
    template only (llama.cpp's vocab-only load: no weights, no hashing)."""
    if path is None:
        return None, "", "", {}
    from ..modelfiles.gguf_header import read_gguf_metadata, summarize

    metadata = read_gguf_metadata(path)
    bos_text = eos_text = ""
    try:
        import llama_cpp

        from .llama import captured_stderr

        with captured_stderr():
            vocab_model = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
        try:
            for token, name in ((vocab_model.token_bos(), "bos"), (vocab_model.token_eos(), "eos")):
                text = vocab_model._model.token_get_text(token) if token != -1 else ""
                bos_text, eos_text = (text, eos_text) if name == "bos" else (bos_text, text)
        finally:
            vocab_model.close()
    except Exception:
        pass
    return metadata.get("tokenizer.chat_template"), bos_text, eos_text, summarize(metadata)


class OpenAICompatEngine:
    """One served model. Thread-safe: ``generate`` may run in several threads at once (one HTTP pool)."""

    def __init__(self, spec: ModelSpec, template_path: Path | None = None, *, seed: int = DEFAULT_SEED,
                 client: ServerClient | None = None, probe: ServerProbe | None = None) -> None:
        served = _served(spec)
        self.spec = spec
        self.client = client or make_client(spec)
        self.probe = probe or probe_server(spec, self.client)
        self.max_concurrency = served.max_concurrency
        file_template, bos_text, eos_text, header = local_template(template_path)
        if spec.chat_template:
            template, template_from = spec.chat_template, "models.toml"
        elif self.probe.chat_template:
            template, template_from = self.probe.chat_template, "server /props"
        elif file_template:
            template, template_from = file_template, f"GGUF {template_path}"
        else:
            template, template_from = None, "none"
        if spec.prompt_mode == "chat" and template is None:
            raise UserError(f"model '{spec.id}': prompt_mode = \"chat\" needs a chat template, and none was found "
                            "(models.toml chat_template, the server's /props, or a local copy of the GGUF as path "
                            "or package + file); set one, or prompt_mode = \"base\"")
        self._template = template if spec.prompt_mode == "chat" else None
        self._bos_text = self.probe.bos_token or bos_text
        self._eos_text = self.probe.eos_token or eos_text
        n_ctx = context_size(spec, self.probe)
        if n_ctx is None:
            raise UserError(f"model '{spec.id}': the server does not report its context size; set n_ctx in "
                            "models.toml")
        self._bos: int | None = None
        self._bos_probe = threading.Lock()
        self._counting = threading.local()  # the request counter of the item this thread is scoring
        self._aborted = False
        sha256, weights = weights_identity(served, spec.sha256)
        build, build_from = identified_build(spec, self.probe.build)
        self.settings: dict[str, Any] = {
            "engine": "openai",
            "server_kind": self.probe.kind,
            "server_build": build,
            "weights": weights,
            "n_ctx": n_ctx,
            "seed": seed,
            "temperature": 0.0,
            "sampler": "greedy",
            "request_sampling": {"temperature": 0.0, "top_p": 1.0, **_GREEDY[self.probe.kind]},
            "prompt_sent_as": "token ids" if self.probe.token_ids else "text",
            "truncation": "left, server tokenizer" if self.probe.tokenize else "none (server cannot tokenize)",
            "prompt_mode": spec.prompt_mode,
            "model_stop": list(spec.stop),
            # above 1, requests batched together on a server with several slots change outputs (server_build.py)
            **concurrency_identity(served.max_concurrency, self.probe.slots),
            # where and how the work runs: recorded, not part of the identity (runner.PLACEMENT_ONLY)
            "placement": {
                "base_url": served.base_url, "served_model": served.model,
                "max_concurrency": served.max_concurrency, "timeout_s": served.timeout_s,
                "connect_timeout_s": served.connect_timeout_s, "retries": served.retries,
                "template_from": template_from, "server_reported": self.probe.reported,
                "server_build_reported": self.probe.build, "server_build_from": build_from,
            },
        }
        self.info = ModelInfo(
            model_id=spec.id, path=str(template_path) if template_path else f"served:{served.model}",
            sha256=sha256, size_bytes=template_path.stat().st_size if template_path else 0,
            prompt_mode=spec.prompt_mode, chat_template=self._template,
            chat_template_sha256=hashlib.sha256(self._template.encode()).hexdigest() if self._template else None,
            metadata={**header, "served": {"kind": self.probe.kind, "weights": weights}}, settings=self.settings)

    # ---- text and tokens

    def render(self, prompt: Prompt) -> str:
        return render_for_model(self.info.model_id, self._template, prompt, bos_token=self._bos_text,
                                eos_token=self._eos_text)

    def tokenize(self, text: str) -> list[int]:
        """The server's tokens for ``text``: special tokens parsed, one BOS where the model adds one (a BOS
        already in the text is not doubled, as in-process)."""
        return self._single_bos(self._server_tokens(text))

    def _server_tokens(self, text: str) -> list[int]:
        route, body, key = _TOKENIZE[self.probe.kind]
        answer = self._answer(self._post(route, body(text, self._served_name), max_bytes=tokenize_bytes(text)))
        return [token.integer(0, MAX_TOKEN_ID) for token in answer[key].items()]

    @staticmethod
    def _answer(answer: Field | None) -> Field:
        """A required route's answer (``post`` without ``optional`` never returns None)."""
        if answer is None:
            raise malformed("no answer")
        return answer

    def _single_bos(self, tokens: list[int]) -> list[int]:
        bos = self._bos_token()
        if bos is not None and len(tokens) >= 2 and tokens[0] == tokens[1] == bos:
            return tokens[1:]
        return tokens

    def _bos_token(self) -> int | None:
        """The BOS id when the server adds one: what it makes of an empty text."""
        with self._bos_probe:
            if self._bos is None:
                route, body, key = _TOKENIZE[self.probe.kind]
                answer = self._answer(self._post(route, body("", self._served_name),
                                                       max_bytes=tokenize_bytes("")))
                tokens = [token.integer(0, MAX_TOKEN_ID) for token in answer[key].items()]
                self._bos = tokens[0] if tokens else -1
        return self._bos if self._bos != -1 else None

    def detokenize(self, tokens: list[int]) -> str:
        route, body, key = _DETOKENIZE[self.probe.kind]
        answer = self._answer(self._post(route, body(tokens, self._served_name),
                                               max_bytes=detokenize_bytes(len(tokens))))
        return answer[key].string()

    @property
    def _served_name(self) -> str:
        return _served(self.spec).model

    def count_tokens(self, text: str) -> int:
        """Length of a plain text (for token budgets such as LongHealth's): the server's tokens, less its BOS."""
        if not self.probe.tokenize:
            return max(1, len(text) // 4)  # no tokenizer to ask: the usual 4-characters-per-token estimate
        tokens = self.tokenize(text)
        bos = self._bos_token()
        return len(tokens) - (1 if bos is not None and tokens and tokens[0] == bos else 0)

    def _prompt_payload(self, text: str, budget: int) -> tuple[Any, int, int]:
        """(what to send as ``prompt``, prompt tokens, tokens dropped from the left)."""
        if not self.probe.tokenize:
            return text, 0, 0
        raw = self._server_tokens(text)
        tokens = self._single_bos(raw)
        bos = self._bos_token()
        kept, truncated = left_truncate(tokens, budget, bos)
        if self.probe.token_ids:
            return kept, len(kept), truncated
        if truncated == 0 and tokens == raw:  # the server reads the text as exactly these tokens
            return text, len(kept), 0
        # text-only server and a changed token list: send text that the server tokenizes to exactly ``kept``
        body = kept[1:] if bos is not None and kept and kept[0] == bos else kept
        sent = self.detokenize(body)
        if self.tokenize(sent) != kept:
            raise ServerRequestError(f"the prompt had to be cut to {len(kept)} tokens, and this {self.probe.kind} "
                                     "server accepts only text, which does not tokenize back to the same tokens; "
                                     "raise n_ctx on the server and in models.toml, or use llama-server or vLLM")
        return sent, len(kept), truncated

    # ---- generate_until

    def generate(self, request: GenerateRequest) -> Generation:
        if self._aborted:
            raise ServerRequestError("run aborted")
        text = self.render(request.prompt)
        budget = int(self.settings["n_ctx"]) - request.max_tokens
        if budget < 8:
            raise UserError(f"model '{self.info.model_id}': n_ctx {self.settings['n_ctx']} leaves no room for a "
                            f"prompt after max_tokens {request.max_tokens}")
        started = time.perf_counter()
        prompt, prompt_tokens, truncated = self._prompt_payload(text, budget)
        body: dict[str, Any] = {
            "model": self._served_name, "prompt": prompt, "max_tokens": request.max_tokens, "stream": False,
            "seed": self.settings["seed"], **self.settings["request_sampling"],
        }
        stop = [*request.stop, *self.settings["model_stop"]]
        if stop:
            body["stop"] = stop
        if request.grammar is not None:
            if not self.probe.grammar:
                raise ServerRequestError(f"a {self.probe.kind} server takes no grammar")
            body["grammar"] = request.grammar
        answer = self._answer(self._post("/v1/completions", body,
                                               max_bytes=completion_bytes(request.max_tokens)))
        seconds = time.perf_counter() - started
        self._check_model(answer)
        choice = answer["choices"][0]
        output = choice["text"].string()
        finish = _optional_text(choice, "finish_reason") or "stop"
        usage = answer["usage"]
        n_ctx = int(self.settings["n_ctx"])
        if not prompt_tokens:
            prompt_tokens = usage["prompt_tokens"].integer(0, n_ctx)
        timings = answer.get("timings")  # llama-server's own split of the time
        if timings is not None:
            timings.object()
        return Generation(
            prompt_text=text, output=output, prompt_tokens=prompt_tokens, truncated_tokens=truncated,
            completion_tokens=usage["completion_tokens"].integer(0, request.max_tokens),
            finish_reason="length" if finish == "length" else "stop", seconds=seconds,
            prompt_ms=_milliseconds(timings, "prompt_ms"), generation_ms=_milliseconds(timings, "predicted_ms"),
            prompt_tokens_evaluated=_count(timings, "prompt_n", n_ctx),
        )

    def _check_model(self, answer: Field) -> None:
        """The answer names the configured model. llama-cpp-python's server and vLLM echo the name asked for,
        llama-server (older: echoes it; newer: its --alias, else the model path as given to -m) the name its
        /v1/models lists, which the preflight required to be the configured one: so any other name is a server
        answering for another model (a proxy routing elsewhere, a swapped model)."""
        named = answer["model"].string(MAX_NAME_CHARS)
        if named != self._served_name:
            raise ServerRequestError(f"the server answered as model {named[:80]!r}, not as the configured "
                                     f"'{self._served_name}': is another model behind base_url?", kind="wrong model")

    # ---- loglikelihood (served_loglik.py)

    def _post(self, route: str, body: dict[str, Any], **options: Any) -> Field | None:
        """Every request of this engine, counted for the item the calling thread is scoring (``_count_items``)."""
        counter = getattr(self._counting, "counter", None)
        if counter is not None:
            counter[0] += 1
        return self.client.post(route, body, **options)

    def loglikelihood(self, request: LoglikelihoodRequest) -> Loglikelihoods:
        """Each continuation's log-probability after the rendered context, from the server's echoed prompt
        log-probabilities: one request per continuation (context + continuation, one token generated and
        ignored), sent one after the other, each beginning with the same context, so that a server's prefix
        cache (vLLM's prefix caching, llama-cpp-python's reuse of the previous prompt) evaluates the context
        once. The context is cut from the left exactly as in-process, leaving room for the longest
        continuation and the generated token.

        Requests per item (counted, stored as ``server_requests`` with the tokens sent): the context is
        tokenized once, then each continuation costs one echo request (``_joint_scores``): the joint text is
        sent and the server's own count of its tokens says how many belong to the continuation. Only when that
        cannot be read that way (a context that may need cutting, a doubled BOS, a continuation that merges
        with the context) does a continuation take the exact token route (``_token_scores``: the joint text
        tokenized, then the ids or a checked text sent), as before."""
        if self._aborted:
            raise ServerRequestError("run aborted")
        if not request.continuations:
            raise ValueError("loglikelihood needs at least one continuation")
        if not self.probe.loglik:  # every kind that echoes log-probabilities can also tokenize
            raise UserError(f"model '{self.info.model_id}': a {self.probe.kind} server gives no prompt "
                            "log-probabilities; --scoring loglik is not possible on it")
        counter = [0, 0]  # requests, tokens sent
        self._counting.counter = counter
        try:
            text = self.render(request.prompt)
            started = time.perf_counter()
            raw = self._server_tokens(text)
            context = self._single_bos(raw)
            self._bos_token()
            scored = self._joint_scores(text, raw, context, request.continuations, counter)
            if scored is None:
                scored = self._token_scores(text, context, request.continuations, counter)
            scores, kept, truncated = scored
            return Loglikelihoods(prompt_text=text, scores=tuple(scores), prompt_tokens=len(kept),
                                  truncated_tokens=truncated, prompt_tokens_evaluated=None,
                                  continuation_tokens_evaluated=sum(score.tokens for score in scores),
                                  seconds=time.perf_counter() - started, server_requests=counter[0],
                                  server_tokens=counter[1])
        finally:
            self._counting.counter = None

    def _echo(self, prompt: Any, tokens: int, counter: list[int]) -> Field:
        """One echo request for a prompt of ``tokens`` tokens (text or ids), its answer checked for the model."""
        counter[1] += tokens
        answer = self._answer(self._post("/v1/completions", echo_body(
            self._served_name, prompt, self.settings["request_sampling"], int(self.settings["seed"])),
            max_bytes=echo_bytes(tokens, ECHO_MAX_TOKENS)))
        self._check_model(answer)
        return answer

    def _joint_scores(self, text: str, raw: list[int], context: list[int], continuations: tuple[str, ...],
                      counter: list[int]) -> tuple[list[ContinuationScore], list[int], int] | None:
        """Scores with one request per continuation: the joint text is sent, and the server reads it as its own
        tokens of it (what ``/tokenize`` answers, the same assumption the token route makes when it sends the
        joint text). When the server's count of prompt tokens less the context's leaves tokens whose echoed
        text spells exactly the continuation, those are the in-process rule's continuation tokens (the joint
        tokens after the context's); a continuation read otherwise takes the token route. None: the whole item
        must take it (the context may need cutting, or the template's BOS would be doubled)."""
        n_ctx = int(self.settings["n_ctx"])
        # a continuation has at most one token per UTF-8 byte plus one (a lone leading space piece): below this
        # bound no continuation can make the context need cutting, so the context is sent whole
        longest = max(len(c.encode("utf-8")) + 1 for c in continuations)
        if raw != context or len(context) + longest + ECHO_MAX_TOKENS > n_ctx - 8:
            return None
        scores: list[ContinuationScore] = []
        for continuation in continuations:
            if not continuation:
                raise ValueError("empty continuation")
            answer = self._echo(text + continuation, 0, counter)
            usage = answer["usage"]
            found = usage.get("prompt_tokens")
            sent = found.integer(0, n_ctx) if found is not None else 0
            counter[1] += sent
            n_tokens = sent - len(raw)
            try:
                tail = read_tail(answer, n_tokens, continuation) if n_tokens >= 1 else None
            except ServerRequestError as exc:
                if exc.kind != "echo mismatch":
                    raise
                tail = None
            if tail is None:  # merged across the seam, or not countable: the exact token route for this one
                score, _, _ = self._token_scores(text, context, (continuation,), counter)
                scores.append(score[0])
                continue
            scores.append(ContinuationScore(text=continuation, logprob=tail.logprob, tokens=n_tokens,
                                            bytes=len(continuation.encode("utf-8")), greedy=tail.greedy))
        if len(context) > n_ctx - max(score.tokens for score in scores) - 1:
            return None  # cannot happen below the bound above; the token route would have cut the context
        return scores, context, 0

    def _token_scores(self, text: str, context: list[int], continuations: tuple[str, ...],
                      counter: list[int]) -> tuple[list[ContinuationScore], list[int], int]:
        """Scores by the exact token route: each joint text tokenized by the server, the context cut from the
        left as in-process, and the ids (or a text checked to read as them) sent."""
        split = [self._continuation_tokens(text, context, c) for c in continuations]
        lengths = [len(tokens) for tokens, _, _ in split]
        budget = int(self.settings["n_ctx"]) - max(lengths) - 1
        if budget < 8:
            raise UserError(f"model '{self.info.model_id}': n_ctx {self.settings['n_ctx']} leaves no room for a "
                            "context before the longest continuation")
        kept, truncated = left_truncate(context, budget, self._bos_token())
        scores = []
        for continuation, (tokens, spelled, joint) in zip(continuations, split):
            wanted = kept + tokens
            answer = self._echo(self._scoring_prompt(text + continuation, joint, wanted), len(wanted), counter)
            tail = read_tail(answer, len(tokens), spelled)
            scores.append(ContinuationScore(text=continuation, logprob=tail.logprob, tokens=len(tokens),
                                            bytes=len(continuation.encode("utf-8")), greedy=tail.greedy))
        return scores, kept, truncated

    def _continuation_tokens(self, context_text: str, context: list[int],
                             continuation: str) -> tuple[list[int], str, list[int]]:
        """(the tokens ``continuation`` adds after ``context``, the text they spell, the server's raw tokens of
        context + continuation) by the in-process rule: the joint text's tokens after the context's, or the
        continuation's own when the join merges tokens across the seam (their text may then differ from the
        continuation, e.g. in a leading space)."""
        if not continuation:
            raise ValueError("empty continuation")
        joint = self._server_tokens(context_text + continuation)
        whole = self._single_bos(joint)
        if len(whole) > len(context) and whole[:len(context)] == context:
            return whole[len(context):], continuation, joint
        own = self._server_tokens(continuation)
        bos = self._bos_token()
        own = own[1:] if bos is not None and own[:1] == [bos] else own
        return own, self.detokenize(own), joint

    def _scoring_prompt(self, joint_text: str, joint_tokens: list[int], wanted: list[int]) -> Any:
        """What to send so that the server reads exactly ``wanted`` (the kept context + the continuation's
        tokens): the ids where it takes ids, else the joint text when the server reads it as exactly those
        (``joint_tokens``, its own tokens of that text), else a detokenized text checked to tokenize to them."""
        if self.probe.token_ids:
            return wanted
        if joint_tokens == wanted:
            return joint_text
        bos = self._bos_token()  # the server adds it to a text: send the text of the rest
        sent = self.detokenize(wanted[1:] if bos is not None and wanted[:1] == [bos] else wanted)
        if self._server_tokens(sent) != wanted:
            raise ServerRequestError(f"this {self.probe.kind} server takes only text, and no text reads as the "
                                     "context followed by the continuation's own tokens (the continuation merges "
                                     "with the context, or the context had to be cut); use vLLM, or raise n_ctx")
        return sent

    def abort(self) -> None:
        """Second Ctrl-C: close the connections, so requests in flight fail now instead of at their timeout."""
        self._aborted = True
        self.client.close()

    def identity(self) -> dict[str, Any]:
        """Declared weights, chat template and output settings; the server's build is in those settings (the
        server, not our llama.cpp, computes the outputs; a placeholder build is replaced, server_build.py), and a
        concurrency above 1 with the server's slot count. URL and served name are placement."""
        return engine_identity(self.info.sha256, self.info.chat_template_sha256, self.settings)

    def close(self) -> None:
        self.client.close()


def _milliseconds(timings: Field | None, key: str) -> float | None:
    """A duration in a server's ``timings`` (absent: None; anything but a finite number >= 0: malformed)."""
    found = timings.get(key) if timings is not None else None
    return found.number(0.0, 1e12) if found is not None else None


def _count(timings: Field | None, key: str, high: int) -> int | None:
    found = timings.get(key) if timings is not None else None
    return found.integer(0, high) if found is not None else None
