"""Which server computed a served evaluation: its build as identity, never a placeholder, and the concurrency.

Why: a served model's outputs are computed by the server, so its build is part of the evaluation identity
(engine/identity.py). llama.cpp built from a source archive without git reports ``b0-unknown`` (build number 0,
commit "unknown"), and a server that says nothing about itself is recorded as ``unknown``: two different builds
would then share one identity and resume each other's evaluations. Such a placeholder is replaced by something
that differs between builds: the SHA-256 of the server's binary when models.toml names it (``server_binary``,
for a server on this machine), else a build name the user states (``server_build``). Neither: the run is refused
with one line naming the model and both fields.

Concurrency: with several requests in flight against a server with several slots, llama-server batches them
together, and its outputs then differ from run to run (measured: 5/20 outputs of two identical runs at
``--parallel 4``, concurrency 4; 20/20 equal at concurrency 1). So ``max_concurrency`` above 1, with the slot
count the server reports (``/props`` ``total_slots``), is part of the identity; at concurrency 1 nothing is
added, and evaluations stored before this rule keep their keys and resume.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..config import ModelSpec
from ..errors import UserError

#: llama.cpp's build string when it was built without git: "b<number>-<commit>" with number 0 or commit unknown
_PLACEHOLDER = re.compile(r"^(?:b0(?:-.*)?|b\d+-unknown|unknown|)$", re.IGNORECASE)


def is_placeholder(build: str) -> bool:
    """Does ``build`` fail to tell builds apart (``b0-unknown``, ``b0-…``, ``b123-unknown``, ``unknown``, empty)?"""
    return bool(_PLACEHOLDER.match(build.strip()))


def binary_build(path: Path) -> str:
    """The identity of a server binary: its SHA-256 (``sha256:<hex>``)."""
    from ..modelfiles.hashing import sha256_file

    return f"sha256:{sha256_file(path)}"


def identified_build(spec: ModelSpec, reported: str) -> tuple[str, str]:
    """(the build that goes into the identity, where it came from) for a server that reported ``reported``.

    A real build is kept as reported (so existing evaluations keep their keys); a placeholder is replaced by the
    binary's SHA-256 or the user's ``server_build``; neither given: UserError, one line."""
    served = spec.served
    assert served is not None
    if not is_placeholder(reported):
        return reported, "server"
    if served.server_binary is not None:
        binary = served.server_binary
        if not binary.is_file():
            raise UserError(f"model '{spec.id}': server_binary = \"{binary}\" in models.toml is not a file; give "
                            "the path of the llama-server binary the server runs, or set server_build instead")
        try:
            return binary_build(binary), f"SHA-256 of {binary}"
        except OSError as exc:
            raise UserError(f"model '{spec.id}': server_binary = \"{binary}\" cannot be read "
                            f"({exc.strerror or exc}); set server_build instead") from None
    if served.server_build is not None:
        return served.server_build, "models.toml server_build"
    raise UserError(f"model '{spec.id}': the server reports the placeholder build {reported[:40]!r}, which does "
                    "not tell builds apart; set server_binary = \"<path of the server binary>\" (when the server "
                    "runs on this machine) or server_build = \"<commit or version>\" in models.toml")


def concurrency_identity(max_concurrency: int, slots: int | None) -> dict[str, Any]:
    """What the concurrency adds to the output settings: nothing at 1 (the reproducible setting), else the
    concurrency and the server's slot count (None when it does not say)."""
    if max_concurrency <= 1:
        return {}
    return {"concurrency": {"max_concurrency": max_concurrency, "server_slots": slots}}


def concurrency_of(identity_settings: dict[str, Any]) -> tuple[int, int | None]:
    """(max_concurrency, server slots) as an evaluation's identity settings record them ((1, None): none)."""
    found = identity_settings.get("concurrency")
    if not isinstance(found, dict):
        return 1, None
    level, slots = found.get("max_concurrency"), found.get("server_slots")
    return (level if isinstance(level, int) else 1), (slots if isinstance(slots, int) else None)


def local_llama_server() -> Path | None:
    """A llama-server binary on this machine: ``$MEDBENCH_LLAMA_SERVER``, else the newest one that
    tools/build_llama_server.sh left in the cache (``<cache>/llama-server/<version>/bin/llama-server``), else
    one on PATH; None when there is none. Used by the served end-to-end tests and tools/bench*.py."""
    import os
    import shutil

    from ..modelfiles.hashing import cache_dir

    named = os.environ.get("MEDBENCH_LLAMA_SERVER")
    if named:
        return Path(named) if Path(named).is_file() else None
    built = sorted((cache_dir() / "llama-server").glob("*/bin/llama-server"), key=lambda p: p.stat().st_mtime)
    if built:
        return built[-1]
    found = shutil.which("llama-server")
    return Path(found) if found else None
