"""Measure the HTML report's file size and the time headless Chromium takes to open it, for N items.

Builds a synthetic results database through the store's writer (one pair, N items split over a few tasks, both
models answered every item; vignette-sized prompts wrapped in two different chat templates, outputs of a few
sentences, outcomes drawn at random with a fixed seed), writes the report with the real CLI, then opens it in
headless Chromium several times. The page's browser script writes ``performance.now()`` into
``body[data-browser-ready]`` once its table is rendered: milliseconds from navigation start (reading and parsing
the file, the inline JSON and the first render) to a usable page; the process wall time is printed beside it.

    .venv/bin/python tools/report_size.py [--items 5000] [--repeats 5] [--keep DIR]

Timing is measured here, in a tool, never asserted in tests. The README's "Report" paragraph quotes the result.
"""

from __future__ import annotations

import argparse
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TASKS = ("jama", "nejm", "medqa", "pubmedqa")
WORDS = ("patient presents with fever cough dyspnea chest pain history of hypertension diabetes examination shows "
         "tachycardia crackles bilateral infiltrates laboratory leukocytosis elevated troponin creatinine the "
         "most likely diagnosis next step in management is").split()
TEMPLATES = {"biomedical": ("<|im_start|>system\nYou are a careful clinician.<|im_end|>\n<|im_start|>user\n",
                            "<|im_end|>\n<|im_start|>assistant\n"),
             "general": ("<start_of_turn>user\n", "<end_of_turn>\n<start_of_turn>model\n")}


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def build_database(path: Path, items: int, seed: int = 0) -> Path:
    """One pair, ``items`` items over TASKS, both models on every item (store writer functions, no model)."""
    sys.path.insert(0, str(REPO))
    from medbench_local.engine.base import Generation, ModelInfo
    from medbench_local.store import close_database, open_database, writer
    from medbench_local.tasks.base import Item, Score

    rng = random.Random(seed)
    db = open_database(path)
    db.conn.execute("pragma synchronous = off")  # a throw-away database: no fsync per item
    writer.start_run(db, "run-1", {"command": ["tools/report_size.py"], "packages": {}, "settings": {}})
    writer.record_pair(db, "synthetic", "bio-model", "gen-model", "tools/report_size.py")
    per_task = [items // len(TASKS) + (1 if t < items % len(TASKS) else 0) for t in range(len(TASKS))]
    cases = {task: [(f"{task}-{i:05d}", _text(rng, rng.randint(150, 350)),
                     {k: _text(rng, rng.randint(3, 10)) for k in "ABCD"}, rng.choice("ABCD"))
                    for i in range(count)] for task, count in zip(TASKS, per_task)}
    for role, model in (("biomedical", "bio-model"), ("general", "gen-model")):
        info = ModelInfo(model, f"/models/{model}.gguf", (role[0] * 64), 4_000_000_000, "chat", None, None,
                         metadata={"quantization": "Q4_K_M", "architecture": "llama"})
        writer.record_model(db, info)
        head, tail = TEMPLATES[role]
        for task in TASKS:
            key = f"{role}-{task}"
            writer.record_evaluation(db, key, info, role, task, {
                "task": {"task": task, "data_sha256": task[0] * 64, "prompt_sha256": "p" * 64},
                "engine": {"n_ctx": 4096, "n_gpu_layers": -1, "seed": 1234},
                "data": {"name": f"{task}.jsonl"}}, "run-1")
            for item_id, case, options, answer in cases[task]:
                user = f"{case}\n\nWhat is the answer?\n" + "\n".join(f"{k}. {v}" for k, v in options.items())
                picked = answer if rng.random() < 0.55 else rng.choice("ABCD")
                outcome = "correct" if picked == answer else rng.choice(("wrong", "wrong", "wrong", "unparseable"))
                output = f"The answer is {picked}. " + _text(rng, rng.randint(20, 60))
                item = Item(item_id, {"case": case, "question": "What is the answer?", "options": options,
                                      "answer": answer}, source=f"{task}.jsonl:1")
                generation = Generation(head + user + tail, output, 400, 0, 80, "stop", 1.0)
                score = Score(outcome, picked, answer, "explicit", "", {"accuracy": float(outcome == "correct")})
                writer.record_item(db, evaluation=key, run_id="run-1", task=task, item=item,
                                   generation=generation, score=score)
    writer.finish_run(db, "run-1", "completed")
    close_database(db)
    return path


def open_in_chromium(page: Path, profile: Path) -> tuple[float, float, str]:
    """(ms the page's script reports at ready, wall seconds of the browser process, script errors)."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        raise SystemExit("no headless Chromium installed (Debian package 'chromium')")
    started = time.perf_counter()
    done = subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
                          capture_output=True, text=True, timeout=300, check=False)
    wall = time.perf_counter() - started
    ready = re.search(r'data-browser-ready="(\d+)"', done.stdout)
    errors = re.search(r'id="mb-errors"[^>]*>([^<]*)<', done.stdout)
    if ready is None:
        raise SystemExit(f"the page's script did not finish: {done.stderr[-1000:]}")
    return float(ready.group(1)), wall, errors.group(1).strip() if errors else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--keep", type=Path, help="write the database and report here (default: a temp folder)")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="report-size-"))
    work.mkdir(parents=True, exist_ok=True)
    db = work / "synthetic.db"
    if db.exists():
        db.unlink()
    started = time.perf_counter()
    build_database(db, args.items)
    built = time.perf_counter() - started
    out = work / "report.html"
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "medbench_local", "report", "--db", str(db), "-o", str(out),
                    "--resamples", "2000"], cwd=REPO, check=True, capture_output=True)
    written = time.perf_counter() - started
    size = out.stat().st_size
    runs = [open_in_chromium(out, work / "profile") for _ in range(args.repeats)]
    errors = {e for _, _, e in runs if e}
    ready = statistics.median(r for r, _, _ in runs)
    wall = statistics.median(w for _, w, _ in runs)
    print(f"items: {args.items:,} ({len(TASKS)} tasks, both models) · database built in {built:.1f} s · "
          f"report written in {written:.1f} s")
    print(f"report size: {size / 2**20:.2f} MiB ({size:,} bytes)")
    print(f"Chromium (headless, {args.repeats} opens, median): page usable after {ready:.0f} ms "
          f"(performance.now() at the end of the browser script); browser process {wall:.2f} s")
    print("script errors: " + ("; ".join(sorted(errors)) if errors else "none"))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
