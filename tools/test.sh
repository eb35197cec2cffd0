#!/usr/bin/env bash
# README command 2: set up, then run the whole test suite (real inference on the demo pair included).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup_venv.sh test
exec .venv/bin/python -m pytest "$@"
