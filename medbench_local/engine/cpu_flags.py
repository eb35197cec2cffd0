"""The llama.cpp build flags for a CPU whose native build crashes: the one table, used by ``doctor``, ``run`` and
``tools/cpu_build_flags.sh``.

Why: llama.cpp builds with ``-march=native`` by default. Some virtual machines (seen on Firecracker VMs with
Sapphire Rapids hosts) advertise AMX in /proc/cpuinfo without enabling its register state, so a native build dies
with SIGILL or SIGSEGV at the first matrix multiplication. The cure is a build without ``-march=native`` that
enables exactly the x86 features the CPU lists, AMX excluded. This module imports nothing from the package, so
the set-up script can run it as a plain file before medbench-local is installed::

    python3 medbench_local/engine/cpu_flags.py      # prints the CMAKE_ARGS for this CPU
"""

from __future__ import annotations

import platform
import sys
from pathlib import Path

#: /proc/cpuinfo flag -> the llama.cpp CMake option it allows (AMX deliberately absent).
FEATURES: tuple[tuple[str, str], ...] = (
    ("sse4_2", "GGML_SSE42"), ("f16c", "GGML_F16C"), ("fma", "GGML_FMA"), ("bmi2", "GGML_BMI2"),
    ("avx", "GGML_AVX"), ("avx2", "GGML_AVX2"), ("avx_vnni", "GGML_AVX_VNNI"),
    ("avx512vbmi", "GGML_AVX512_VBMI"), ("avx512_vnni", "GGML_AVX512_VNNI"), ("avx512_bf16", "GGML_AVX512_BF16"),
)
AVX512_BASE = ("avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw")


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The flags of the first CPU in /proc/cpuinfo (empty where there is none: macOS, Windows, ARM's list)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace")
        except OSError:
            return set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def portable_cmake_args(flags: set[str], machine: str | None = None) -> str:
    """``CMAKE_ARGS`` for a build that uses what the CPU lists but never ``-march=native`` (nor AMX)."""
    args = ["-DGGML_NATIVE=OFF"]
    if (machine or platform.machine()).lower() in ("x86_64", "amd64"):
        args += [f"-D{option}=ON" for flag, option in FEATURES if flag in flags]
        if all(flag in flags for flag in AVX512_BASE):
            args.append("-DGGML_AVX512=ON")
    return " ".join(args)


def rebuild_command(flags: set[str] | None = None) -> str:
    """The exact command that rebuilds llama-cpp-python for this CPU (for ``doctor`` and the README)."""
    args = portable_cmake_args(cpu_flags() if flags is None else flags)
    return f'CMAKE_ARGS="{args}" pip install --force-reinstall --no-cache-dir llama-cpp-python'


if __name__ == "__main__":  # tools/cpu_build_flags.sh, after its AMX probe trapped
    sys.stdout.write(portable_cmake_args(cpu_flags()) + "\n")
