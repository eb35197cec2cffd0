"""Do two identical served runs give identical outputs? Against the real llama-server, at concurrency N and 1.

Why: with several requests in flight on a server with several slots, llama-server batches them together and the
rounding depends on which requests share a batch, so outputs can change from run to run; at concurrency 1 they
should not (docs/scale-out.md: concurrency 1 is the reproducible setting; tests/test_served_e2e.py asserts it).
This prints, for each concurrency, how many of the items' outputs differ between two identical runs, each with
a fresh engine, against one llama-server (``--parallel`` slots, 1 thread) serving the demo SmolLM2.

    .venv/bin/python tools/served_repeatability.py [--items 10] [--parallel 4] [--concurrency 4]

The server is the one tools/build_llama_server.sh built (or $MEDBENCH_LLAMA_SERVER, or llama-server on PATH).
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from medbench_local.config import load_config
from medbench_local.engine.base import GenerateRequest
from medbench_local.engine.openai_compat import OpenAICompatEngine
from medbench_local.engine.server_build import local_llama_server
from medbench_local.item_pool import run_pooled
from medbench_local.modelfiles.resolve import require
from medbench_local.paths import default_data
from medbench_local.runner import load_tasks
from medbench_local.tasks import get_task
from medbench_local.tasks.base import PromptContext


class _Never:
    requested = False


def requests(engine: OpenAICompatEngine, count: int) -> list[GenerateRequest]:
    """The first ``count`` items of the jama and nejm samples, 16 new tokens each."""
    found: list[GenerateRequest] = []
    for task_id in ("jama", "nejm"):
        data = default_data(task_id, cwd=ROOT)
        assert data is not None
        loaded = load_tasks([(get_task(task_id), data.path)], count, limit_mode="first")[0]
        context = PromptContext(count_tokens=engine.count_tokens, n_ctx=2048)
        found += [GenerateRequest(loaded.task.prompt(item, context), 16, loaded.task.stop) for item in loaded.items]
    return found[:count]


def one_run(url: str, binary: Path, sha256: str, workers: int, count: int) -> list[str]:
    with tempfile.TemporaryDirectory() as folder:
        toml = Path(folder) / "models.toml"
        toml.write_text(f'[models.s]\nrole = "biomedical"\nengine = "openai"\nbase_url = "{url}"\nmodel = "smol"\n'
                        f'sha256 = "{sha256}"\nn_ctx = 2048\nmax_concurrency = {workers}\n'
                        f'server_binary = "{binary}"\n', encoding="utf-8")
        engine = OpenAICompatEngine(load_config(toml).model("s"), None)
        todo = list(enumerate(requests(engine, count)))
        outputs: dict[int, str] = {}
        run_pooled(todo, workers=workers, stop=_Never(), claim=lambda item: nullcontext(True),
                   compute=lambda item: engine.generate(item[1]).output,
                   commit=lambda item, output: outputs.__setitem__(item[0], output))
        engine.close()
    return [outputs[i] for i in range(len(todo))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=10)
    parser.add_argument("--parallel", type=int, default=4, help="llama-server --parallel (slots)")
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    binary = local_llama_server()
    if binary is None:
        raise SystemExit("no llama-server: build one with tools/build_llama_server.sh")
    spec = load_config(ROOT / "models.toml").model("smollm2-135m-instruct")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([str(binary), "-m", str(require(spec)), "--alias", "smol", "--host", "127.0.0.1",
                               "--port", str(port), "-c", str(2048 * args.parallel), "--parallel",
                               str(args.parallel), "-t", "1", "-tb", "1", "--seed", "1234"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)  # polling for readiness
        for workers in (args.concurrency, 1):
            first, second = (one_run(url, binary, str(spec.sha256), workers, args.items) for _ in range(2))
            differ = sum(a != b for a, b in zip(first, second))
            print(f"concurrency {workers}, --parallel {args.parallel}: {differ}/{len(first)} outputs differ "
                  "between two identical runs")
    finally:
        server.terminate()
        server.wait(timeout=60)


if __name__ == "__main__":
    main()
