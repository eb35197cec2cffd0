"""How much memory a model needs and whether this machine has it: the estimate and its verdict.

Why in modelfiles: the estimate is read from a model file's GGUF header, and two places judge it the same
way: ``run``'s pre-flight (modelfiles/check.py, before anything is written) and ``doctor`` (airgap/doctor.py,
one line of its checklist). Keeping the pure formula and the verdict here lets the pre-flight use them without
importing the doctor, which sits above the engines. Whether a model goes to a GPU (which memory it is judged
against) depends on the llama.cpp build, so the caller says it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any

OK, WARN, FAIL = "ok", "warn", "fail"  # a verdict's status: also the doctor's checklist marks
GiB = 1024 ** 3


# --------------------------------------------------------------------------------------------- machine facts


def mem_available(precise: bool = False) -> int | None:
    """Bytes of RAM available to new processes (Linux MemAvailable), None when unknown. Without ``precise``,
    other Unixes get the free physical pages (an underestimate: caches are not counted)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    if precise:
        return None
    try:  # other Unixes: free physical pages (an underestimate, caches not counted)
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def gpu_memory() -> list[tuple[str, int, int]] | None:
    """(name, free bytes, total bytes) per NVIDIA GPU from nvidia-smi; None when nvidia-smi is absent or fails."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run([smi, "--query-gpu=name,memory.free,memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    gpus = []
    for line in out.strip().splitlines():
        try:
            name, free, total = (part.strip() for part in line.rsplit(",", 2))
            gpus.append((name, int(float(free)) * 1024 * 1024, int(float(total)) * 1024 * 1024))
        except ValueError:
            continue
    return gpus or None


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int
    kv_cache: int | None
    n_layers: int | None
    n_embd_kv: int | None

    @property
    def total(self) -> int:
        return self.weights + (self.kv_cache or 0)


def estimate_memory(metadata: dict[str, Any], n_ctx: int, file_size: int) -> MemoryEstimate:
    """Weights ≈ file size; KV cache ≈ 2 (K and V) × n_layers × n_ctx × n_embd_kv × 2 bytes (f16 cache).

    n_embd_kv = head_count_kv × head dimension (key_length, else embedding_length / head_count): grouped-query
    attention shrinks it. An estimate: compute buffers (a few hundred MB) and sliding-window savings are ignored.
    """
    arch = metadata.get("general.architecture")

    def number(key: str) -> int | None:
        value = metadata.get(f"{arch}.{key}")
        return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    layers, embd, heads = number("block_count"), number("embedding_length"), number("attention.head_count")
    heads_kv = number("attention.head_count_kv") or heads
    head_dim = number("attention.key_length") or (embd // heads if embd and heads else None)
    head_dim_v = number("attention.value_length") or head_dim
    if not (layers and heads_kv and head_dim and head_dim_v):
        return MemoryEstimate(file_size, None, layers, None)
    n_embd_kv = heads_kv * head_dim
    kv = layers * n_ctx * heads_kv * (head_dim + head_dim_v) * 2
    return MemoryEstimate(file_size, kv, layers, n_embd_kv)


def memory_verdict(estimate: MemoryEstimate, n_ctx: int, ram: int | None,
                   gpus: list[tuple[str, int, int]] | None) -> tuple[str, str]:
    """(status, line) for an estimate against free memory: ``gpus`` (free VRAM) when the model is offloaded,
    else RAM. FAIL when it exceeds everything there is (free VRAM + RAM), WARN when it fits only split between
    GPU and RAM or RAM is unknown. Shared by ``doctor`` and by ``run``'s pre-flight, so both say the same."""
    kv = (f"KV cache {gib(estimate.kv_cache)} = 2 × {estimate.n_layers} layers × n_ctx {n_ctx} × n_embd_kv "
          f"{estimate.n_embd_kv} × 2 bytes" if estimate.kv_cache is not None else "KV cache n/a (metadata incomplete)")
    text = f"memory estimate ≈ {gib(estimate.total)} (weights {gib(estimate.weights)} + {kv}; an estimate)"
    if gpus:
        vram = sum(g[1] for g in gpus)
        if estimate.total <= vram:
            return OK, f"{text}; free VRAM {gib(vram)}"
        if ram is None or estimate.total <= vram + ram:
            return WARN, (f"{text}; free VRAM {gib(vram)}: does not fit, lower n_gpu_layers to split between GPU "
                          "and RAM")
        return FAIL, (f"{text}; free VRAM {gib(vram)} + MemAvailable {gib(ram)}: does not fit"
                      f"{_what_fits(estimate, n_ctx, vram + ram)}")
    if ram is None:
        return WARN, f"{text}; free RAM unknown"
    if estimate.total <= ram:
        return OK, f"{text}; MemAvailable {gib(ram)}"
    return FAIL, f"{text}; MemAvailable {gib(ram)}: does not fit{_what_fits(estimate, n_ctx, ram)}"


def _what_fits(estimate: MemoryEstimate, n_ctx: int, available: int) -> str:
    room = available - estimate.weights
    if room <= 0:
        return " (the weights alone need more; free memory, use a smaller quantization or a GPU)"
    if not estimate.kv_cache or n_ctx <= 0:
        return " (free memory or lower n_ctx in models.toml)"
    largest = room * n_ctx // estimate.kv_cache
    if largest < 128:
        return " (the weights leave room for fewer than 128 tokens of context; free memory)"
    return f" (n_ctx {largest} would fit: lower n_ctx in models.toml, or free memory)"


def gib(n: int) -> str:
    """A byte count for a line of text: GiB with two decimals, MiB below a tenth of a GiB."""
    return f"{n / GiB:,.2f} GiB" if n >= GiB / 10 else f"{n / 1024 ** 2:,.0f} MiB"
