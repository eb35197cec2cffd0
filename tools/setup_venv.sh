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
  .venv/bin/python -m pip install --quiet -e ".[$extras]"
  touch "$stamp"
fi
