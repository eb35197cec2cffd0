"""llama.cpp RPC: one model's layers spread over several machines that run llama.cpp's ``rpc-server``.

Why a module of its own: RPC needs a llama.cpp built with ``-DGGML_RPC=on``, which pip does not do by default,
and without it the servers would simply be ignored (the model would load on this machine alone, slowly or not
at all). So the build is checked before anything runs (``require_rpc_build``), and the servers reach llama.cpp
in whichever way the installed binding offers (``rpc_llama_kwargs``):

* bindings whose ``Llama()`` takes ``rpc_servers="h1:p1,h2:p2"`` get exactly that;
* newer ones (llama.cpp moved RPC into its backend registry) get each server registered as a device through
  ggml's registry, as llama.cpp's own ``--rpc`` option does; ``Llama()`` then uses every registered device.

Registered devices belong to the whole process, which is why one run refuses models with different
``rpc_servers`` (``check_rpc_plan``). Not exercised against real ``rpc-server``s by the test suite: building
llama.cpp a second time with RPC does not fit the CI budget (see docs/scale-out.md).
"""

from __future__ import annotations

import ctypes
import inspect
from collections.abc import Iterable, Sequence
from typing import Any

from ..config import rpc_server_problem  # noqa: F401 - checked where models.toml is read; kept importable here
from ..errors import UserError

REBUILD = ('CMAKE_ARGS="-DGGML_RPC=on" .venv/bin/pip install --force-reinstall --no-cache-dir --no-deps '
           "llama-cpp-python")
_registered: set[str] = set()  # servers this process has added to ggml's registry (never added twice)


def rpc_supported() -> bool:
    """Whether this llama.cpp build has the RPC backend (``-DGGML_RPC=on``)."""
    import llama_cpp

    probe = getattr(llama_cpp, "llama_supports_rpc", None)
    return bool(probe()) if callable(probe) else False


def require_rpc_build(model_id: str, servers: Sequence[str]) -> None:
    """Refuse, before anything runs, a model configured for RPC on a build without the RPC backend."""
    if servers and not rpc_supported():
        raise UserError(f"model '{model_id}' sets rpc_servers ({', '.join(servers)}), but this llama-cpp-python "
                        f"build has no RPC backend; rebuild it with: {REBUILD} (docs/scale-out.md)")


def check_rpc_plan(models: Iterable[tuple[str, Sequence[str]]]) -> None:
    """One run, one set of RPC servers: llama.cpp registers RPC devices for the whole process, so a model
    loaded after one with ``rpc_servers`` would silently use them too."""
    plans = [(model_id, tuple(servers)) for model_id, servers in models]
    if not any(servers for _, servers in plans):
        return
    first_id, first = plans[0]
    for other_id, other in plans[1:]:
        if other != first:
            raise UserError(f"models '{first_id}' and '{other_id}' have different rpc_servers "
                            f"({', '.join(first) or 'none'} vs {', '.join(other) or 'none'}); llama.cpp registers "
                            "RPC servers for the whole process, so run them one at a time (--model ID) into the "
                            "same --db")


def rpc_llama_kwargs(model_id: str, servers: Sequence[str], llama_class: Any = None) -> dict[str, Any]:
    """What to add to ``Llama(...)`` for ``servers``: ``rpc_servers=...`` where the binding takes it, else
    nothing after registering the servers with ggml (see the module docstring)."""
    if not servers:
        return {}
    require_rpc_build(model_id, servers)
    if llama_class is None:
        import llama_cpp

        llama_class = llama_cpp.Llama
    if "rpc_servers" in inspect.signature(llama_class.__init__).parameters:
        return {"rpc_servers": ",".join(servers)}
    register_rpc_servers(model_id, servers)
    return {}


def register_rpc_servers(model_id: str, servers: Sequence[str], ggml: Any = None) -> None:
    """Add each server to ggml's backend registry once, the way llama.cpp's ``--rpc`` does."""
    if ggml is None:
        from llama_cpp._ggml import libggml as ggml
    ggml.ggml_backend_reg_by_name.restype = ctypes.c_void_p
    ggml.ggml_backend_reg_by_name.argtypes = [ctypes.c_char_p]
    registry = ggml.ggml_backend_reg_by_name(b"RPC")
    if not registry:
        raise UserError(f"model '{model_id}': this llama.cpp build has no RPC backend; rebuild it with: {REBUILD}")
    ggml.ggml_backend_reg_get_proc_address.restype = ctypes.c_void_p
    ggml.ggml_backend_reg_get_proc_address.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    add_server = ggml.ggml_backend_reg_get_proc_address(registry, b"ggml_backend_rpc_add_server")
    add_device = ggml.ggml_backend_reg_get_proc_address(registry, b"ggml_backend_rpc_add_device")
    if not add_server and not add_device:
        raise UserError(f"model '{model_id}': this llama.cpp's RPC backend offers no way to add servers "
                        "(neither ggml_backend_rpc_add_server nor ggml_backend_rpc_add_device); use a matching "
                        "llama-cpp-python release")
    connect = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_char_p)(add_server or add_device)
    for server in servers:
        if server in _registered:
            continue
        handle = connect(server.encode("ascii"))
        if not handle:
            raise UserError(f"model '{model_id}': llama.cpp could not add the RPC server {server} (is "
                            "rpc-server running there and reachable?)")
        if add_server:  # newer llama.cpp: a registry of the server's devices
            ggml.ggml_backend_register.argtypes = [ctypes.c_void_p]
            ggml.ggml_backend_register(handle)
        else:           # older llama.cpp: one device
            ggml.ggml_backend_device_register.argtypes = [ctypes.c_void_p]
            ggml.ggml_backend_device_register(handle)
        _registered.add(server)
