"""Measure how quickly a second Ctrl-C stops `run` in the middle of a long prompt evaluation.

Runs the real CLI in a subprocess on one synthetic case whose prompt fills most of the context (smollm2-135m,
n_ctx 8192 by default), sends SIGINT twice once the prompt evaluation is under way, and reports the time from
the second SIGINT to the process's exit, next to the time the same prompt takes to evaluate in full (what a
second Ctrl-C cost before the abort switch: Python signal handlers only run after llama.cpp's C call returns).

    .venv/bin/python tools/abort_latency.py [--n-ctx 8192] [--repeats 3]

Timing is measured here, in a tool, never asserted in tests.
"""

from __future__ import annotations

import argparse
import json
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _setup(work: Path, n_ctx: int) -> tuple[Path, Path]:
    sys.path.insert(0, str(REPO))
    from medbench_local.config import load_config
    from medbench_local.modelfiles.resolve import require

    model = require(load_config(REPO / "models.toml").model("smollm2-135m-instruct"))
    config = work / "models.toml"
    config.write_text(f'[models.tiny]\nrole = "general"\npath = "{model}"\nn_ctx = {n_ctx}\n')
    words = int(n_ctx * 0.8)  # about one token per word: a prompt that fills most of the context
    case = {"id": "long", "case": " ".join(["cough"] * words), "question": "Diagnosis?",
            "options": {"A": "Pneumonia", "B": "Asthma"}, "answer": "A"}
    data = work / "long.jsonl"
    data.write_text(json.dumps(case) + "\n")
    return config, data


def _runs(db: Path) -> int:
    try:
        with sqlite3.connect(db, timeout=1) as conn:
            return int(conn.execute("select count(*) from runs").fetchone()[0])
    except sqlite3.Error:
        return 0


def _command(config: Path, data: Path, db: Path) -> list[str]:
    return [sys.executable, "-m", "medbench_local", "run", "--config", str(config), "--model", "tiny", "--task",
            "nejm", "--data", str(data), "--db", str(db)]


def measure(config: Path, data: Path, work: Path, n: int) -> tuple[float, float]:
    """(seconds from the second SIGINT to exit, seconds of the whole item when left alone)."""
    db = work / f"abort-{n}.db"
    proc = subprocess.Popen(_command(config, data, db), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    while _runs(db) == 0 and proc.poll() is None:
        time.sleep(0.01)
    time.sleep(2.0)  # the model is loaded (~0.5 s) and the prompt evaluation under way
    proc.send_signal(signal.SIGINT)
    time.sleep(0.2)
    sent = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    proc.communicate()
    abort_seconds = time.perf_counter() - sent
    full_db = work / f"full-{n}.db"
    subprocess.run(_command(config, data, full_db), cwd=REPO, capture_output=True, check=True)
    with sqlite3.connect(full_db) as conn:
        (item_seconds,) = conn.execute("select seconds from generations").fetchone()
    conn.close()
    return abort_seconds, float(item_seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-ctx", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        config, data = _setup(work, args.n_ctx)
        results = [measure(config, data, work, n) for n in range(args.repeats)]
    aborts, items = [a for a, _ in results], [i for _, i in results]
    print(f"prompt of ~{int(args.n_ctx * 0.8)} tokens, smollm2-135m, {args.repeats} repeats")
    print(f"second Ctrl-C to exit: median {statistics.median(aborts):.2f} s (max {max(aborts):.2f} s)")
    print(f"the item left alone:   median {statistics.median(items):.2f} s")


if __name__ == "__main__":
    main()
