#!/usr/bin/env bash
# Create (or reuse) ./.venv and install medbench-local with the given extras.
# Needs only Python >= 3.10 and a C/C++ compiler: llama-cpp-python compiles llama.cpp from source
# (about 5 minutes on 2 cores, once; pip caches the wheel). For GPU offload, export CMAKE_ARGS first,
# e.g. CMAKE_ARGS="-DGGML_CUDA=on" (NVIDIA) or CMAKE_ARGS="-DGGML_METAL=on" (Apple), see README.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-demo}"
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "[medbench-local] creating virtual environment in .venv"
  "$python" -m venv .venv
fi
stamp=".venv/.medbench-installed-$extras"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "[medbench-local] installing medbench-local[$extras] (first time: llama.cpp compiles, ~5 min)"
  .venv/bin/python -m pip install --quiet --upgrade pip
  if [ -z "${CMAKE_ARGS:-}" ] && cpu_args="$(bash tools/cpu_build_flags.sh 2>/dev/null)" && [ -n "$cpu_args" ]; then
    # this CPU advertises AMX that traps (see tools/cpu_build_flags.sh): build llama.cpp without -march=native,
    # bypassing pip's wheel cache, which may hold a native build
    echo "[medbench-local] this CPU's AMX is not usable here; building llama.cpp with: $cpu_args"
    if ! .venv/bin/python -c "import llama_cpp" 2>/dev/null || [ ! -f .venv/.llama-cpp-portable ]; then
      CMAKE_ARGS="$cpu_args" .venv/bin/python -m pip install --quiet --no-cache-dir --force-reinstall --no-deps \
        "llama-cpp-python>=0.3.36,<0.4"
      touch .venv/.llama-cpp-portable
    fi
  fi
  .venv/bin/python -m pip install --quiet -e ".[$extras]"
  touch "$stamp"
fi
