#!/usr/bin/env bash
# One prepared GPU check (issue 12 §5), under 10 minutes on a machine with an NVIDIA GPU and nvcc:
#   1. build llama-cpp-python with CUDA into a separate virtualenv (.venv-gpu; the CPU .venv is not touched),
#   2. doctor for the demo pair,
#   3. the demo pair on jama and mednli with every layer offloaded, generate + loglik, KV reuse on and off,
#   4. the same on the CPU build (.venv), and whether the outputs are equal (they need not be: other kernels),
#   5. tools/kv_probe.py --aligned on the GPU (the reuse rule must give '=' on the grid),
#   6. tools/bench.py on the GPU,
# and writes what it saw to $OUT/gpu.md (or docs/gpu.md when OUT is unset), to be copied into docs/gpu.md.
#
#   tools/gpu_check.sh            # everything
#   SKIP_BUILD=1 tools/gpu_check.sh   # reuse an existing .venv-gpu
#   CPU_ONLY=1 tools/gpu_check.sh     # dry run of steps 2-4 on the CPU build (what can be tried without a GPU)
#   LIMIT=10 tools/gpu_check.sh       # items per task in step 3 (default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
REPORT="${OUT:-docs}/gpu.md"
WORK="$(mktemp -d)"
CPU_PY="${CPU_PY:-.venv/bin/python}"
GPU_PY=.venv-gpu/bin/python
log() { echo "[gpu_check] $*" >&2; }

if [[ "${CPU_ONLY:-}" == 1 ]]; then
    GPU_PY=$CPU_PY
elif [[ "${SKIP_BUILD:-}" != 1 ]]; then
    log "building llama-cpp-python with CUDA into .venv-gpu (several minutes)"
    python3 -m venv .venv-gpu
    .venv-gpu/bin/pip install --quiet --upgrade pip
    CMAKE_ARGS="-DGGML_CUDA=on" .venv-gpu/bin/pip install --quiet --no-cache-dir "llama-cpp-python==$($CPU_PY -c 'import llama_cpp; print(llama_cpp.__version__)')"
    .venv-gpu/bin/pip install --quiet -e ".[demo,test]"
fi

{
    echo "# GPU check ($(date -u +%Y-%m-%dT%H:%MZ))"
    echo
    echo '```'
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "nvidia-smi: not available"
    $GPU_PY -c 'import llama_cpp; print("llama-cpp-python", llama_cpp.__version__, "gpu offload:", llama_cpp.llama_supports_gpu_offload())'
    echo '```'
} > "$REPORT"

log "doctor"
$GPU_PY -m medbench_local doctor --pair demo --task jama --offline >> "$WORK/doctor.txt" 2>&1 || true
{ echo; echo "## doctor"; echo; echo '```'; tail -n 25 "$WORK/doctor.txt"; echo '```'; } >> "$REPORT"

run_pair() {  # python db kv_reuse
    "$1" -m medbench_local run --pair demo --task jama --task mednli --scoring both --kv-reuse "$3" --db "$2" \
        --limit "${LIMIT:-5}" >> "$WORK/runs.txt" 2>&1
}
log "demo pair on the GPU build, KV reuse on and off"
run_pair "$GPU_PY" "$WORK/gpu-on.db" on
run_pair "$GPU_PY" "$WORK/gpu-off.db" off
log "demo pair on the CPU build"
run_pair "$CPU_PY" "$WORK/cpu.db" on

compare() {  # a.db b.db -> "same" or the number of differing rows
    $CPU_PY - "$1" "$2" <<'PY'
import sqlite3, sys
q = ("select e.model_id, e.task, coalesce(json_extract(e.settings, '$.task.scoring_mode'), 'generate'), i.item_id, "
     "g.output, s.extracted, s.detail from scores s join generations g on g.id = s.generation_id "
     "join evaluations e on e.key = s.evaluation join items i on i.key = s.item order by 1, 2, 3, 4")
a, b = (sqlite3.connect(p).execute(q).fetchall() for p in sys.argv[1:3])
diff = sum(x != y for x, y in zip(a, b)) + abs(len(a) - len(b))
print("same" if diff == 0 else f"{diff} of {max(len(a), len(b))} rows differ")
PY
}
{
    echo; echo "## outputs"; echo
    echo "- what llama.cpp offloaded: $($CPU_PY -c "import json,sqlite3; print(sorted({json.loads(s)['load']['offloaded_layers'] for (s,) in sqlite3.connect('$WORK/gpu-on.db').execute('select settings from evaluations')}))")"
    echo "- GPU, KV reuse on vs off (must be same): $(compare "$WORK/gpu-on.db" "$WORK/gpu-off.db")"
    echo "- GPU vs CPU (other kernels, may differ): $(compare "$WORK/gpu-on.db" "$WORK/cpu.db")"
    echo "- tokens/s (generate, GPU): $($CPU_PY -c "import sqlite3; c=sqlite3.connect('$WORK/gpu-on.db'); p,g,s=c.execute(\"select sum(prompt_tokens), sum(completion_tokens), sum(seconds) from generations where finish_reason != 'loglik'\").fetchone(); print(f'{(p+g)/s:.0f} end to end ({p} prompt + {g} generated tokens in {s:.1f} s)')")"
} >> "$REPORT"

if [[ "${CPU_ONLY:-}" != 1 ]]; then
    log "kv probe on the grid, and the bench"
    { echo; echo "## kv_probe --aligned (every grid point must be '=')"; echo; echo '```'
      $GPU_PY tools/kv_probe.py --model gemma3-270m --aligned 2>/dev/null | tail -n 2; echo '```'; } >> "$REPORT"
    { echo; echo "## tools/bench.py"; echo
      $GPU_PY tools/bench.py --repeats 3 --items 5 2>/dev/null; } >> "$REPORT"
fi
log "written $REPORT"
