"""Can this llama.cpp build decode on this CPU? Asked in a child process, so that a crash is an answer.

Why: a natively built llama.cpp can die with SIGILL or SIGSEGV at the first matrix multiplication on a machine
whose CPU advertises instructions it does not enable (AMX on some cloud VMs; engine/cpu_flags.py). Inside our
own process that is exit 139 with a ``running`` run left behind, while ``doctor`` said "Ready". So ``doctor``
and ``run`` (before it creates anything) load the smallest local model in a child process and decode one token;
a crash there is "Not ready" with the exact rebuild command for this CPU.

The verdict depends on the build and the CPU, not on the model, so a success is remembered in the cache folder
(keyed by llama-cpp-python's version, its shared libraries' size and mtime, the machine and the CPU's flags): the
probe runs once per build and machine. A failure is never remembered: the next call probes again.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..gates.files import OutputError, atomic_write, private_dir, read_input
from .cpu_flags import cpu_flags, rebuild_command

PROBE_TIMEOUT_S = 900  # a 70B model on a slow disk loads for minutes; this only bounds a hung child
_CACHE_NAME = "decode-probe.json"


@dataclass(frozen=True)
class DecodeVerdict:
    ok: bool
    detail: str        # what happened, one line
    rebuild: str = ""  # the command that fixes a crashing build (empty when ok)
    cached: bool = False


def probe_command(model: Path) -> list[str]:
    """The child: this module run as a script on ``model`` (a seam the tests replace with a crashing child)."""
    return [sys.executable, "-m", "medbench_local.engine.selftest", str(model)]


def build_key() -> str:
    """What the verdict depends on: the llama.cpp build (version and its libraries' files) and the CPU."""
    import llama_cpp

    folder = Path(llama_cpp.__file__).parent
    libraries = sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns)
                       for p in folder.rglob("*") if p.suffix in (".so", ".dylib", ".dll") and p.is_file())
    text = json.dumps([getattr(llama_cpp, "__version__", "?"), libraries, platform.machine(),
                       sorted(cpu_flags())])
    return hashlib.sha256(text.encode()).hexdigest()


def check_decoding(model: Path, cache_folder: Path, *, command: Callable[[Path], list[str]] | None = None,
                   timeout_s: float = PROBE_TIMEOUT_S) -> DecodeVerdict:
    """Decode one token with ``model`` in a child process (or recall an earlier success for this build)."""
    key = build_key()
    cache = cache_folder / _CACHE_NAME
    known = _read(cache)
    if known.get(key, {}).get("ok") is True:
        return DecodeVerdict(True, f"this llama.cpp build decoded on this CPU before ({known[key].get('model')})",
                             cached=True)
    verdict = _probe(model, (command or probe_command)(model), timeout_s)
    if verdict.ok:
        known[key] = {"ok": True, "model": model.name}
        try:
            private_dir(cache_folder, parents=True)
            atomic_write(cache, json.dumps(known, indent=1, sort_keys=True), updating=True)
        except (OSError, OutputError):
            pass  # a read-only cache folder only costs a probe next time
    return verdict


def _probe(model: Path, command: list[str], timeout_s: float) -> DecodeVerdict:
    try:
        done = subprocess.run(command, capture_output=True, timeout=timeout_s, check=False,
                              env={**os.environ, "PYTHONFAULTHANDLER": ""})
    except subprocess.TimeoutExpired:
        return DecodeVerdict(False, f"decoding one token with {model.name} did not finish within {timeout_s:.0f} s")
    if done.returncode == 0:
        return DecodeVerdict(True, f"decoded one token with {model.name} in a separate process")
    if done.returncode < 0:
        name = _signal_name(-done.returncode)
        return DecodeVerdict(False, f"llama.cpp crashed ({name}) decoding one token with {model.name}: this build "
                                    "does not run on this CPU", rebuild_command())
    last = (done.stderr or b"").decode("utf-8", "replace").strip().splitlines()
    reason = last[-1][:300] if last else f"exit code {done.returncode}"
    return DecodeVerdict(False, f"decoding one token with {model.name} failed ({reason})")


def _signal_name(number: int) -> str:
    try:
        name = signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
    meaning = {"SIGILL": "illegal instruction", "SIGSEGV": "segmentation fault", "SIGBUS": "bus error",
               "SIGFPE": "arithmetic error", "SIGABRT": "aborted"}.get(name)
    return f"{name}, {meaning}" if meaning else name


def _read(cache: Path) -> dict:  # type: ignore[type-arg]
    try:
        value = json.loads(read_input(cache, OSError, max_bytes=1024 * 1024).decode("utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


def _child(model: str) -> int:
    """Load ``model`` on the CPU with a tiny context and decode one token; any crash kills only this process."""
    import llama_cpp

    llama = llama_cpp.Llama(model_path=model, n_ctx=64, n_batch=8, n_gpu_layers=0, n_threads=2, verbose=False)
    tokens = llama.tokenize(b"Hello", add_bos=True)[:4]
    llama.eval(tokens)
    llama.close()
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1]))
