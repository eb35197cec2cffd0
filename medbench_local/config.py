"""models.toml -> typed, validated specs for models and pairs.

Why strict: a typo in a key (``n_gpu_layer``) would otherwise silently run with defaults and produce numbers
that cannot be defended. Every error names the file, the line of the offending table or key, the key, and
what was expected.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

from .errors import ConfigError
from .gates.files import read_input
from .paths import find_config

Role = Literal["biomedical", "general"]
PromptMode = Literal["chat", "base"]

ROLES: tuple[str, ...] = ("biomedical", "general")
PROMPT_MODES: tuple[str, ...] = ("chat", "base")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
ID_RULE = "1-64 characters: ASCII letters, digits, '.', '_' and '-', starting with a letter or digit"


@dataclass(frozen=True)
class LocalSource:
    """A GGUF file on disk (relative paths are relative to models.toml)."""

    path: Path

    def describe(self) -> str:
        return f"path {self.path}"


@dataclass(frozen=True)
class HubSource:
    """A GGUF file in a Hugging Face repository, pinned to a revision."""

    repo: str
    file: str
    revision: str

    def describe(self) -> str:
        return f"hf {self.repo}/{self.file}@{self.revision}"


@dataclass(frozen=True)
class PackageSource:
    """A GGUF file shipped inside an installed Python package (the demo models)."""

    package: str
    file: str

    def describe(self) -> str:
        return f"package {self.package}:{self.file}"


@dataclass(frozen=True)
class ServedSource:
    """A model served by an OpenAI-compatible server (``engine = "openai"``) with no local GGUF to read."""

    base_url: str
    model: str

    def describe(self) -> str:
        return f"served '{self.model}' at {self.base_url}"


Source = LocalSource | HubSource | PackageSource | ServedSource
ENGINES: tuple[str, ...] = ("llama", "openai")


@dataclass(frozen=True)
class ServedSpec:
    """How to reach a served model (``engine = "openai"``) and which weights it serves.

    Why the weights are declared by the user: the server's files are out of our reach, yet results are keyed on
    weights; ``sha256`` (of the GGUF the server loads) or ``repo`` + ``revision`` (safetensors, vLLM) stands in
    for the hash we compute of local files. ``base_url``, ``max_concurrency`` and the timeouts say where and
    how the work runs, not what is computed: they are recorded, not part of the evaluation identity.
    """

    base_url: str                      # server root, e.g. http://gpu01:8080 (a trailing /v1 is removed)
    model: str                         # the served model name (llama-server --alias, vLLM --served-model-name)
    api_key_env: str | None = None     # environment variable holding the API key; the key is never stored
    max_concurrency: int = 1           # items in flight at once
    timeout_s: float = 600.0           # one request, connect to last byte
    connect_timeout_s: float = 10.0
    retries: int = 3                   # extra attempts on connection errors and 5xx, with exponential backoff
    weights_repo: str | None = None    # safetensors identity (with weights_revision), when there is no GGUF sha256
    weights_revision: str | None = None
    n_ctx: int | None = None           # declared context size (else what the server reports)
    # the server's identity when it reports only a placeholder build (``b0-unknown``: llama.cpp built without git):
    # the SHA-256 of its local binary, else a build name the user states (engine/server_build.py)
    server_binary: Path | None = None
    server_build: str | None = None

    @property
    def host(self) -> str:
        """``host:port`` of the server: the one network destination a served run may reach."""
        from urllib.parse import urlsplit

        parts = urlsplit(self.base_url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return f"{parts.hostname}:{port}"


ARM_QUERIES: tuple[str, ...] = ("question", "case+question")
ARM_PLACEMENTS: tuple[str, ...] = ("before", "after")
ARM_ORDERS: tuple[str, ...] = ("score", "reversed")


@dataclass(frozen=True)
class RetrievalSpec:
    """What an arm adds to its model: passages from a retrieval index placed into every prompt.

    ``query``: what of the item is searched (its question, or its case and question); ``placement``: the passages
    before the task's text or after it; ``order``: best first ("score"), or best last ("reversed", nearest to what
    follows, against "lost in the middle"); ``passage_budget``: at most this many tokens of passages (the model's
    own tokenizer), and never more than the context leaves after the prompt and the answer."""

    index: Path
    k: int = 3
    query: str = "case+question"
    placement: str = "before"
    order: str = "score"
    passage_budget: int = 512

    def settings(self) -> dict[str, object]:
        """The settings that decide an arm's prompts besides the index's content (its identity adds that)."""
        return {"k": self.k, "query": self.query, "placement": self.placement, "order": self.order,
                "passage_budget": self.passage_budget}


@dataclass(frozen=True)
class ModelSpec:
    """One model as configured. ``n_gpu_layers=None`` means: all layers when the build can offload."""

    id: str
    role: Role
    source: Source
    prompt_mode: PromptMode = "chat"
    sha256: str | None = None
    n_ctx: int = 4096
    n_gpu_layers: int | None = None
    main_gpu: int = 0
    tensor_split: tuple[float, ...] | None = None
    allow_context_beyond_trained: bool = False
    flash_attn: bool = False
    cache_type_k: str | None = None
    cache_type_v: str | None = None
    chat_template: str | None = None
    stop: tuple[str, ...] = ()
    description: str = ""
    extra: dict[str, str] = field(default_factory=dict)
    rpc_servers: tuple[str, ...] = ()  # llama.cpp rpc-server endpoints the layers are spread over
    engine: str = "llama"              # "llama": in-process llama.cpp; "openai": an OpenAI-compatible server
    served: ServedSpec | None = None   # with engine = "openai"; ``source`` is then the template GGUF, if any
    retrieval: RetrievalSpec | None = None  # an arm ([arms.NAME]): this model with passages from an index
    base: str | None = None            # an arm's model id (the [models.ID] it runs)

    @property
    def is_arm(self) -> bool:
        return self.retrieval is not None


@dataclass(frozen=True)
class PairSpec:
    """A biomedical model and its general-purpose counterpart."""

    name: str
    biomedical: str
    general: str
    description: str = ""


@dataclass(frozen=True)
class Config:
    path: Path
    models: dict[str, ModelSpec]       # models and arms (an arm is a ModelSpec with ``retrieval``)
    pairs: dict[str, PairSpec]
    origin: str = ""  # how the file was found (paths.find_config): shown by 'models list', recorded in runs

    def model(self, model_id: str) -> ModelSpec:
        if model_id not in self.models:
            known = ", ".join(sorted(self.models)) or "none"
            raise ConfigError(self.path, None, f"unknown model '{model_id}' (known: {known})")
        return self.models[model_id]

    def pair(self, name: str) -> PairSpec:
        if name not in self.pairs:
            known = ", ".join(sorted(self.pairs)) or "none"
            raise ConfigError(self.path, None, f"unknown pair '{name}' (known: {known})")
        return self.pairs[name]


KV_CACHE_TYPES: tuple[str, ...] = ("f32", "f16", "bf16", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0", "iq4_nl")
# keys of a served model (engine = "openai"), refused for in-process ones
SERVED_KEYS: tuple[str, ...] = ("base_url", "model", "api_key_env", "max_concurrency", "timeout_s",
                                "connect_timeout_s", "retries", "server_binary", "server_build")
_MODEL_KEYS = {
    "role", "path", "repo", "file", "revision", "package", "sha256", "n_ctx", "n_gpu_layers", "main_gpu",
    "tensor_split", "flash_attn", "cache_type_k", "cache_type_v", "rpc_servers", "allow_context_beyond_trained",
    "chat_template", "prompt_mode", "stop", "description", "licence", "upstream", "note", "engine",
} | set(SERVED_KEYS)
# in-process llama.cpp settings that a served model takes from its server's command line instead
_SERVER_SIDE_KEYS = ("n_gpu_layers", "main_gpu", "tensor_split", "flash_attn", "cache_type_k", "cache_type_v",
                     "rpc_servers", "allow_context_beyond_trained")
_INFO_KEYS = ("licence", "upstream", "note")
_PAIR_KEYS = {"biomedical", "general", "description"}
_TOP_KEYS = {"models", "pairs", "arms"}
_ARM_KEYS = {"model", "index", "k", "query", "placement", "order", "passage_budget", "role", "description"}
ARM_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
MAX_ARM_K = 50


def id_problem(value: object) -> str | None:
    """Why ``value`` cannot be a model id or pair name, or None when it can.

    Why so strict: ids end up in file names (the report's plots, bundle folders) and in terminal output. One
    conservative charset, checked with ``fullmatch`` (``$`` would accept a trailing newline), rules out path
    separators, ``..``, leading dots (hidden files), control characters and names too long for a file system.
    """
    if not isinstance(value, str):
        return f"{value!r} (expected a string)"
    if ID_PATTERN.fullmatch(value):
        return None
    shown = repr(value) if len(value) <= 80 else repr(value[:80]) + f"... ({len(value)} characters)"
    return f"{shown} (ids are {ID_RULE})"


class _Locator:
    """Finds the line of a ``[table.name]`` header or of a key inside it, for error messages."""

    def __init__(self, text: str):
        self.lines = text.splitlines()

    def table(self, section: str, name: str) -> int | None:
        pattern = re.compile(rf"^\s*\[\s*{re.escape(section)}\s*\.\s*\"?{re.escape(name)}\"?\s*\]")
        for number, line in enumerate(self.lines, start=1):
            if pattern.match(line):
                return number
        return None

    def top(self, key: str) -> int | None:
        pattern = re.compile(rf"^\s*(\[+\s*\"?{re.escape(key)}\"?\s*[.\]]|\"?{re.escape(key)}\"?\s*=)")
        return next((n for n, line in enumerate(self.lines, start=1) if pattern.match(line)), None)

    def key(self, section: str, name: str, key: str) -> int | None:
        start = self.table(section, name)
        if start is None:
            return None
        pattern = re.compile(rf"^\s*\"?{re.escape(key)}\"?\s*=")
        for number in range(start, len(self.lines)):
            line = self.lines[number]
            if line.lstrip().startswith("["):
                break
            if pattern.match(line):
                return number + 1
        return start


def load_config(path: Path | str) -> Config:
    """Read and validate models.toml. Raises ConfigError with file, line and key on any problem."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(path, None, "file not found (pass --config or run from the repository root)")
    text = _read_config_text(path)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, None, f"TOML syntax error: {exc}") from None
    except (ValueError, RecursionError) as exc:  # e.g. an integer with thousands of digits, arrays nested deeply
        raise ConfigError(path, None, f"TOML not readable: {_bounded_reason(exc)}") from None
    return parse_config(raw, path, text)


MAX_CONFIG_BYTES = 4 * 1024 * 1024  # a registry of hundreds of models is a few hundred KB



def read_config(path: Path | None = None) -> Config:
    """``path``, or the first models.toml found in the usual places (paths.find_config: $MEDBENCH_LOCAL_CONFIG,
    ./models.toml, the user's config folder, the shipped demo config), loaded; ``Config.origin`` says which."""
    found = find_config(path)
    return replace(load_config(found.path), origin=found.origin)

def _read_config_text(path: Path) -> str:
    """The file's text through the files gate: what is not a regular file is refused *before* it is opened for
    reading (a FIFO would block forever, a device never end), what is implausibly large before it is read."""
    raw = read_input(path, lambda reason: ConfigError(path, None, reason), max_bytes=MAX_CONFIG_BYTES)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(path, None, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _bounded_reason(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "values nested too deeply"
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


def parse_config(raw: dict[str, Any], path: Path, text: str = "") -> Config:
    loc = _Locator(text)
    unknown = set(raw) - _TOP_KEYS
    if unknown:
        first = sorted(unknown)[0]
        raise ConfigError(path, first, "unknown top-level key (expected [models.<id>], [arms.<name>] or "
                                       "[pairs.<name>])", loc.top(first))
    models_raw = raw.get("models", {})
    pairs_raw = raw.get("pairs", {})
    arms_raw = raw.get("arms", {})
    for section, value in (("models", models_raw), ("pairs", pairs_raw), ("arms", arms_raw)):
        if not isinstance(value, dict):
            raise ConfigError(path, section, "must be a table")

    models = {mid: _parse_model(mid, body, path, loc) for mid, body in models_raw.items()}
    for name, body in arms_raw.items():
        models[name] = _parse_arm(name, body, models, path, loc)
    pairs = {name: _parse_pair(name, body, models, path, loc) for name, body in pairs_raw.items()}
    return Config(path=path, models=models, pairs=pairs)


def _parse_model(mid: str, body: Any, path: Path, loc: _Locator) -> ModelSpec:
    where = f"models.{mid}"

    def fail(key: str | None, message: str) -> ConfigError:
        line = loc.key("models", mid, key) if key else loc.table("models", mid)
        return ConfigError(path, f"{where}.{key}" if key else where, message, line)

    problem = id_problem(mid)
    if problem:  # the raw id may hold control characters: never put it into the message unquoted
        raise ConfigError(path, "models", f"invalid model id {problem}", loc.table("models", mid))
    if not isinstance(body, dict):
        raise fail(None, "must be a table")
    for key in body:
        if key not in _MODEL_KEYS:
            raise fail(key, f"unknown key (allowed: {', '.join(sorted(_MODEL_KEYS))})")

    def get_str(key: str, required: bool = False) -> str | None:
        value = body.get(key)
        if value is None:
            if required:
                raise fail(None, f"missing required key '{key}'")
            return None
        if not isinstance(value, str) or not value.strip():
            raise fail(key, f"expected a non-empty string, got {value!r}")
        return value

    engine = get_str("engine") or "llama"
    if engine not in ENGINES:
        raise fail("engine", f"expected one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "llama":
        for key in body:
            if key in SERVED_KEYS:
                raise fail(key, 'only for served models (engine = "openai"); an in-process model has no server')
    else:
        for key in body:
            if key in _SERVER_SIDE_KEYS:
                raise fail(key, 'set on the server\'s command line for a served model (engine = "openai"), '
                                "not here (docs/scale-out.md)")

    role = get_str("role", required=True)
    if role not in ROLES:
        raise fail("role", f"expected one of {', '.join(ROLES)}, got {role!r}")
    mode = get_str("prompt_mode") or "chat"
    if mode not in PROMPT_MODES:
        raise fail("prompt_mode", f"expected one of {', '.join(PROMPT_MODES)}, got {mode!r}")
    sha = get_str("sha256")
    if sha is not None and not _SHA256.match(sha.lower()):
        raise fail("sha256", "expected 64 hexadecimal characters")

    served: ServedSpec | None = None
    if engine == "openai":
        served = _parse_served(body, get_str, fail, sha is not None)
        binary = get_str("server_binary")
        if binary is not None:  # a path, like ``path``: relative to models.toml
            raw_binary = Path(binary).expanduser()
            served = replace(served, server_binary=raw_binary if raw_binary.is_absolute()
                             else path.parent / raw_binary)
        if "repo" in body and "file" not in body:  # repo + revision: the safetensors identity, not a GGUF source
            body = {k: v for k, v in body.items() if k not in ("repo", "revision")}
    given = [k for k in ("path", "repo", "package") if k in body]
    if served is not None and not given:
        given = ["served"]
    if len(given) != 1:
        raise fail(None, "needs exactly one source: 'path', or 'repo' + 'file' + 'revision', or 'package' + 'file'"
                   + (f" (found {', '.join(given)})" if given else ""))
    source: Source
    if given[0] == "path":
        raw_path = Path(get_str("path") or "").expanduser()
        source = LocalSource(raw_path if raw_path.is_absolute() else (path.parent / raw_path))
    elif given[0] == "served":
        assert served is not None
        source = ServedSource(served.base_url, served.model)
    elif given[0] == "repo":
        repo = get_str("repo") or ""
        if repo.count("/") != 1:
            raise fail("repo", f"expected 'owner/name', got {repo!r}")
        source = HubSource(repo, get_str("file", required=True) or "", get_str("revision", required=True) or "")
    else:
        source = PackageSource(get_str("package") or "", get_str("file", required=True) or "")
    if given[0] == "path" and "file" in body:
        raise fail("file", "'file' goes with 'repo' or 'package', not with 'path'")

    stop = body.get("stop", [])
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
        raise fail("stop", f"expected a list of non-empty strings, got {stop!r}")
    numbers = _numeric_settings(body, fail)
    flash = body.get("flash_attn", False)
    if not isinstance(flash, bool):
        raise fail("flash_attn", f"expected true or false, got {flash!r}")
    beyond = body.get("allow_context_beyond_trained", False)
    if not isinstance(beyond, bool):
        raise fail("allow_context_beyond_trained", f"expected true or false, got {beyond!r}")
    cache_types: dict[str, Any] = {}
    for key in ("cache_type_k", "cache_type_v"):
        value = get_str(key)
        if value is not None and value.lower() not in KV_CACHE_TYPES:
            raise fail(key, f"expected one of {', '.join(KV_CACHE_TYPES)}, got {value!r}")
        cache_types[key] = value.lower() if value else None
    rpc_servers = _parse_rpc_servers(body, fail)
    return ModelSpec(
        id=mid,
        role=role,  # type: ignore[arg-type]
        source=source,
        prompt_mode=mode,  # type: ignore[arg-type]
        sha256=sha.lower() if sha else None,
        **numbers,
        flash_attn=flash,
        allow_context_beyond_trained=beyond,
        **cache_types,
        chat_template=_chat_template_setting(get_str("chat_template"), fail),
        stop=tuple(stop),
        description=get_str("description") or "",
        extra={k: str(body[k]) for k in _INFO_KEYS if k in body},
        rpc_servers=rpc_servers,
        engine=engine,
        served=served,
    )


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_COMMIT = re.compile(r"[0-9a-f]{40}")
MAX_CONCURRENCY = 256
MAX_RETRIES = 20
MAX_TIMEOUT_S = 86400.0


def base_url_problem(value: object) -> str | None:
    """Why ``value`` is not a usable server root URL, or None.

    Why strict: the URL decides the one host a served run may reach (the network guard allows exactly it), and
    credentials in it would end up in the database and in logs."""
    from urllib.parse import urlsplit

    if not isinstance(value, str) or not value.strip():
        return f"expected a URL such as 'http://127.0.0.1:8080', got {value!r}"
    if any(ord(c) < 33 or ord(c) == 127 for c in value):
        return f"expected a URL without spaces or control characters, got {value!r}"
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        return f"not a valid URL ({exc}): {value!r}"
    if parts.scheme not in ("http", "https"):
        return f"expected an http:// or https:// URL, got {value!r}"
    if not parts.hostname:
        return f"no host in {value!r}"
    if parts.username is not None or parts.password is not None:
        return "credentials in the URL would be stored with every result; put the key in an environment " \
               "variable and name it with api_key_env"
    if parts.query or parts.fragment:
        return f"expected the server's root URL without '?' or '#', got {value!r}"
    if port == 0:
        return f"port 0 is not a server port: {value!r}"
    return None


def normalize_base_url(value: str) -> str:
    """The server root: trailing slashes and a trailing ``/v1`` removed (the OpenAI routes are added to it)."""
    root = value.rstrip("/")
    return root[:-3].rstrip("/") if root.endswith("/v1") else root


def _parse_served(body: dict[str, Any], get_str: Callable[..., str | None],
                  fail: Callable[[str | None, str], ConfigError], has_sha256: bool) -> ServedSpec:
    """The served-model keys of one ``engine = "openai"`` model, validated (see ServedSpec)."""
    base_url = get_str("base_url", required=True) or ""
    problem = base_url_problem(base_url)
    if problem:
        raise fail("base_url", problem)
    model = get_str("model", required=True) or ""
    key_env = get_str("api_key_env")
    if key_env is not None and not _ENV_NAME.fullmatch(key_env):
        raise fail("api_key_env", f"expected the NAME of an environment variable (letters, digits, '_'), got "
                                  f"{key_env[:40]!r}; never put the key itself in models.toml")

    def integer(key: str, default: int, low: int, high: int) -> int:
        value = body.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise fail(key, f"expected an integer >= {low} and <= {high}, got {_describe_number(value)}")
        return value

    def seconds(key: str, default: float) -> float:
        value = body.get(key, default)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) \
                or not 0 < value <= MAX_TIMEOUT_S:
            raise fail(key, f"expected seconds > 0 and <= {MAX_TIMEOUT_S:g}, got {_describe_number(value)}")
        return float(value)

    repo = revision = None
    if "repo" in body and "file" not in body:  # safetensors weights (vLLM): repo + a pinned commit
        repo, revision = get_str("repo") or "", get_str("revision", required=True) or ""
        if repo.count("/") != 1:
            raise fail("repo", f"expected 'owner/name', got {repo!r}")
        if not _COMMIT.fullmatch(revision):
            raise fail("revision", f"expected the 40-character commit hash of the served weights (a branch or "
                                   f"tag moves), got {revision!r}")
        if has_sha256:
            raise fail("sha256", "give the weights' identity once: sha256 of a GGUF, or repo + revision of "
                                 "safetensors")
    elif not has_sha256:
        raise fail("sha256", "missing (a served model needs the identity of the weights its "
                         "server loads, because results are keyed on weights: sha256 = \"<64 hex>\" of the GGUF, "
                         "or repo = \"owner/name\" + revision = \"<commit>\" for safetensors)")
    n_ctx = body.get("n_ctx")
    if n_ctx is not None:
        n_ctx = _int_setting("n_ctx", n_ctx, fail)
    return ServedSpec(
        base_url=normalize_base_url(base_url), model=model, api_key_env=key_env,
        max_concurrency=integer("max_concurrency", 1, 1, MAX_CONCURRENCY),
        timeout_s=seconds("timeout_s", 600.0), connect_timeout_s=seconds("connect_timeout_s", 10.0),
        retries=integer("retries", 3, 0, MAX_RETRIES), weights_repo=repo, weights_revision=revision, n_ctx=n_ctx,
        server_build=_server_build(get_str("server_build"), fail))


def _server_build(value: str | None, fail: Callable[[str | None, str], ConfigError]) -> str | None:
    """A user-stated server build: printable, short, and not itself a placeholder (it stands in for one)."""
    if value is None:
        return None
    if len(value) > 200 or not value.isprintable() or value.strip().lower() in ("unknown", "b0-unknown", "b0"):
        raise fail("server_build", f"expected a build name that differs between builds (a commit, a version, a "
                                   f"date; at most 200 printable characters), got {value[:40]!r}")
    return value.strip()


_HOST_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
_RPC_HOST = re.compile(rf"^{_HOST_LABEL}(\.{_HOST_LABEL})*$")


def rpc_server_problem(value: object) -> str | None:
    """Why ``value`` is not a usable ``host:port`` for llama.cpp's RPC backend, or None when it is.

    llama.cpp splits an endpoint at its first ':', so IPv6 literals cannot be given (use a host name). Here, not
    in engine/rpc.py, because models.toml is checked when it is read and config sits below the engines."""
    if not isinstance(value, str) or not value:
        return f"expected a 'host:port' string, got {value!r}"
    host, sep, port = value.partition(":")
    if not sep:
        return f"expected 'host:port', got {value!r} (no port)"
    if ":" in port or host.startswith("["):
        return f"expected 'host:port' with a host name or IPv4 address, got {value!r} (llama.cpp's RPC " \
               "endpoints cannot be IPv6 literals; use a host name)"
    if not _RPC_HOST.match(host):
        return f"expected 'host:port', got {value!r} (host {host!r} is not a host name or IPv4 address)"
    if not port.isascii() or not port.isdigit() or not 1 <= int(port) <= 65535:
        return f"expected 'host:port' with a port from 1 to 65535, got {value!r}"
    return None


def _parse_rpc_servers(body: dict[str, Any], fail: Callable[[str | None, str], ConfigError]) -> tuple[str, ...]:
    """``rpc_servers = ["host:port", ...]``: llama.cpp rpc-server endpoints (docs/scale-out.md).

    Why checked here: a typo in an endpoint would otherwise surface as a network error deep inside llama.cpp
    after the run started; and with ``n_gpu_layers = 0`` no layer would ever go to the servers."""
    value = body.get("rpc_servers")
    if value is None:
        return ()
    if not isinstance(value, list) or not value:
        raise fail("rpc_servers", f"expected a non-empty list of 'host:port' strings, got {value!r}")
    for entry in value:
        problem = rpc_server_problem(entry)
        if problem:
            raise fail("rpc_servers", problem)
    if len(set(value)) != len(value):
        duplicate = next(v for v in value if value.count(v) > 1)
        raise fail("rpc_servers", f"{duplicate!r} is listed twice")
    if body.get("n_gpu_layers") == 0:
        raise fail("rpc_servers", "with n_gpu_layers = 0 no layer goes to the RPC servers; remove n_gpu_layers "
                                  "(all layers) or set how many to offload")
    return tuple(value)


# ------------------------------------------------------------------------------------ numeric settings
# Why here and strict: llama.cpp takes these as C integers and floats through ctypes, which wraps an out-of-range
# Python int silently (n_ctx = 4294967808 would become 512) and passes NaN or inf on to the GPU split. Every
# number is checked for type (a TOML float or boolean is not an integer), range and finiteness before anything
# else happens, so the error names the key and its line instead of surfacing as a crash or a silent change.

INT32_MAX = 2 ** 31 - 1
MAX_DEVICES = 16  # llama.cpp's LLAMA_MAX_DEVICES: the length of its tensor_split array
_INT_RANGES: dict[str, tuple[int, int, str]] = {
    # key: (minimum, maximum, what the bounds mean)
    "n_ctx": (128, INT32_MAX, "at least 128 tokens, at most llama.cpp's int32 maximum"),
    "n_gpu_layers": (-1, INT32_MAX, "-1 = all layers, 0 = CPU only, at most llama.cpp's int32 maximum"),
    "main_gpu": (0, MAX_DEVICES - 1, f"a GPU index below llama.cpp's {MAX_DEVICES} devices"),
}
_INT_DEFAULTS: dict[str, int | None] = {"n_ctx": 4096, "n_gpu_layers": None, "main_gpu": 0}


def _describe_number(value: Any) -> str:
    """A TOML-ish rendering of a rejected value that says *why* it is not an integer or a finite number."""
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean, not a number)"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan (not a number)"
        if math.isinf(value):
            return f"{'-' if value < 0 else ''}inf (infinite)"
        return f"{value!r} (a float)"
    return repr(value)


def _int_setting(key: str, value: Any, fail: Any) -> int:
    low, high, meaning = _INT_RANGES[key]
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise fail(key, f"expected an integer >= {low} and <= {high} ({meaning}), got {_describe_number(value)}")
    return value


def _tensor_split_setting(value: Any, fail: Any) -> tuple[float, ...]:
    if not isinstance(value, list) or not value:
        raise fail("tensor_split", f"expected a list of non-negative numbers (one per GPU), got {value!r}")
    if len(value) > MAX_DEVICES:
        raise fail("tensor_split", f"{len(value)} entries, but llama.cpp supports at most {MAX_DEVICES} devices")
    for index, part in enumerate(value):
        if not isinstance(part, (int, float)) or isinstance(part, bool) or not math.isfinite(part) or part < 0:
            raise fail("tensor_split", f"expected a list of finite non-negative numbers (each GPU's share of the "
                                       f"model), but entry {index + 1} is {_describe_number(part)}")
    if not any(part > 0 for part in value):
        raise fail("tensor_split", "all entries are 0: give each GPU's share, e.g. [3, 1]")
    return tuple(float(part) for part in value)


def _numeric_settings(body: dict[str, Any], fail: Any) -> dict[str, Any]:
    """n_ctx, n_gpu_layers, main_gpu and tensor_split of one model, validated (ModelSpec keyword arguments)."""
    numbers: dict[str, Any] = dict(_INT_DEFAULTS)
    for key in _INT_RANGES:
        if body.get(key) is not None:
            numbers[key] = _int_setting(key, body[key], fail)
    split = body.get("tensor_split")
    numbers["tensor_split"] = _tensor_split_setting(split, fail) if split is not None else None
    return numbers


def _chat_template_setting(template: str | None, fail: Any) -> str | None:
    """A chat_template override must compile (and stay within the size limit) when models.toml is read, so a
    typo is a config error with its line, not a failure at the first item."""
    if template is None:
        return None
    from .prompting.prompt_format import TemplateRenderError, compile_chat_template

    try:
        compile_chat_template(template)
    except TemplateRenderError as exc:
        raise fail("chat_template", str(exc)) from None
    return template


def _parse_pair(name: str, body: Any, models: dict[str, ModelSpec], path: Path, loc: _Locator) -> PairSpec:
    where = f"pairs.{name}"

    def fail(key: str | None, message: str) -> ConfigError:
        line = loc.key("pairs", name, key) if key else loc.table("pairs", name)
        return ConfigError(path, f"{where}.{key}" if key else where, message, line)

    problem = id_problem(name)
    if problem:
        raise ConfigError(path, "pairs", f"invalid pair name {problem}", loc.table("pairs", name))
    if not isinstance(body, dict):
        raise fail(None, "must be a table")
    for key in body:
        if key not in _PAIR_KEYS:
            raise fail(key, f"unknown key (allowed: {', '.join(sorted(_PAIR_KEYS))})")
    ids: dict[str, str] = {}
    # a pair with an arm compares retrieval against anything (its own model, a fine-tune): roles are its slots
    with_arm = any(isinstance(body.get(r), str) and body[r] in models and models[body[r]].is_arm for r in ROLES)
    for role in ROLES:
        value = body.get(role)
        if not isinstance(value, str):
            raise fail(None if value is None else role, f"missing required key '{role}' (a model id)"
                       if value is None else f"expected a model id, got {value!r}")
        if value not in models:
            raise fail(role, f"unknown model '{value}' (define it as [models.{value}])")
        if models[value].role != role and not with_arm:
            raise fail(role, f"model '{value}' has role '{models[value].role}', expected '{role}'")
        ids[role] = value
    if ids["biomedical"] == ids["general"]:
        raise fail("general", "a pair needs two different models")
    description = body.get("description", "")
    return PairSpec(name=name, biomedical=ids["biomedical"], general=ids["general"], description=str(description))


def _parse_arm(name: str, body: Any, models: dict[str, ModelSpec], path: Path, loc: _Locator) -> ModelSpec:
    """``[arms.NAME]``: a model of [models] plus retrieval (RetrievalSpec). The arm becomes a model entry of its
    own, named NAME (``run --model NAME``, pairs may name it), with its model's settings and role (``role``
    overrides it). ``index`` is relative to models.toml. An arm may stand on either side of a pair: the question
    it answers is "does retrieval help", against its own model or against a fine-tune."""
    where = f"arms.{name}"

    def fail(key: str | None, message: str) -> ConfigError:
        line = loc.key("arms", name, key) if key else loc.table("arms", name)
        return ConfigError(path, f"{where}.{key}" if key else where, message, line)

    if not isinstance(name, str) or not ARM_ID_PATTERN.fullmatch(name):
        shown = repr(name)[:80]
        raise ConfigError(path, "arms", f"invalid arm name {shown} (arm names are {ID_RULE}, '+' allowed too)",
                          loc.table("arms", str(name)))
    if name in models:
        raise fail(None, f"'{name}' is also a [models.{name}]: give the arm another name")
    if not isinstance(body, dict):
        raise fail(None, "must be a table")
    for key in body:
        if key not in _ARM_KEYS:
            raise fail(key, f"unknown key (allowed: {', '.join(sorted(_ARM_KEYS))})")
    model = body.get("model")
    if not isinstance(model, str):
        raise fail(None if model is None else "model", "missing required key 'model' (a [models] id)"
                   if model is None else f"expected a model id, got {model!r}")
    if model not in models or models[model].is_arm:
        raise fail("model", f"unknown model '{model}' (an arm runs a [models.ID] entry)")
    base = models[model]
    index = body.get("index")
    if not isinstance(index, str) or not index.strip() or "\x00" in index:
        raise fail(None if index is None else "index", "missing required key 'index' (the path of a file made "
                   "by 'medbench-local index build')" if index is None else f"expected a path, got {index!r}")
    index_path = Path(index).expanduser()
    if not index_path.is_absolute():
        index_path = path.parent / index_path

    def choice(key: str, allowed: tuple[str, ...], default: str) -> str:
        value = body.get(key, default)
        if value not in allowed:
            raise fail(key, f"expected one of {', '.join(repr(a) for a in allowed)}, got {value!r}")
        return str(value)

    def integer(key: str, default: int, low: int, high: int) -> int:
        value = body.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise fail(key, f"expected an integer >= {low} and <= {high}, got {_describe_number(value)}")
        return value

    budget = integer("passage_budget", 512, 16, INT32_MAX)
    if budget >= base.n_ctx:
        raise fail("passage_budget", f"{budget} tokens of passages leave nothing of model '{model}''s n_ctx "
                                     f"{base.n_ctx} for the task's prompt and answer; give less")
    role = choice("role", ROLES, base.role)
    retrieval = RetrievalSpec(index=index_path, k=integer("k", 3, 1, MAX_ARM_K),
                              query=choice("query", ARM_QUERIES, "case+question"),
                              placement=choice("placement", ARM_PLACEMENTS, "before"),
                              order=choice("order", ARM_ORDERS, "score"), passage_budget=budget)
    description = body.get("description", f"{model} with passages from {index}")
    return replace(base, id=name, role=role, retrieval=retrieval, base=model,  # type: ignore[arg-type]
                   description=str(description))
