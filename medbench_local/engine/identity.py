"""What decides an engine's outputs: the part of its settings that goes into every evaluation key.

Why here, beside the engines: each engine knows which of its settings change outputs and which only say where
or how fast the work runs; the runner only asks ``engine.identity()`` and never reaches into llama.cpp.

Left out (recorded with every evaluation, but not part of its key):
* runtime-only settings, proven not to change outputs: thread counts and the rule that chose them, shared-prefix
  KV reuse (tests/test_kv_reuse.py);
* placement: the RPC servers' addresses (a replaced cluster node must resume the same evaluation) and a served
  model's URL and name (a concurrency above 1 is identity: engine/server_build.py). Spreading layers over RPC
  servers can change results, like a GPU split, so their number stays in.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

RUNTIME_ONLY_SETTINGS = frozenset({"n_threads", "n_threads_batch", "threads_rule", "kv_reuse"})
PLACEMENT_ONLY = frozenset({"rpc_servers", "placement"})


def output_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The settings that decide outputs (see the module docstring)."""
    kept = {k: v for k, v in settings.items() if k not in PLACEMENT_ONLY and k not in RUNTIME_ONLY_SETTINGS}
    if settings.get("rpc_servers"):
        kept["rpc_server_count"] = len(settings["rpc_servers"])
    return kept


def identity(model_sha256: str, chat_template_sha256: str | None, settings: Mapping[str, Any],
             build: str | None = None) -> dict[str, Any]:
    """An engine identity: weights, chat template, output settings and, for in-process engines, the llama.cpp
    build (``build``; a served model's build is part of its recorded server settings)."""
    found: dict[str, Any] = {"model_sha256": model_sha256, "chat_template_sha256": chat_template_sha256}
    if build is not None:
        found["llama_cpp_python"] = build
    return {**found, "settings": output_settings(settings)}
