"""Shared-prefix KV reuse (engine/kv.py): the rule as pure functions, then the real thing on the demo pair.

The unit part simulates a KV cache that records, for every token, the kernel class it was computed with, and
checks the property the byte-equality rests on: after any sequence of prompts, every cached token has exactly
the class a fresh cache would have given it. The end-to-end part runs every task on both demo models with
``--kv-reuse on`` and ``off`` and compares prompts, outputs and scores byte for byte, and shows that the naive
reuse (the whole common prefix) does change numbers, so the comparison is able to fail.
"""

from __future__ import annotations

import json
from collections.abc import Hashable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medbench_local.engine import kv
from medbench_local.engine.runtime import choose_threads
from medbench_local.tasks import PromptContext, get_task

from .conftest import REPO, invoke, rows

# ------------------------------------------------------------------------------------------ the rule, unit level


def llama_cpp_ubatches(call: kv.Span, n_ubatch: int) -> list[kv.Span]:
    """What llama.cpp computes one llama_decode call in (``split_simple``, the split of a single-sequence batch
    with one unified KV cache): ``n_ubatch`` rows at a time from the call's first token."""
    start, end = call
    return [(u, min(u + n_ubatch, end)) for u in range(start, end, n_ubatch)]


def simulate(cache: kv.CacheState, tokens: list[int], batching: kv.Batching, generated: int = 0) -> kv.Plan:
    """Apply a plan as the engine does: keep the reused prefix, then 'decode' the pieces in the engine's calls
    (recording the ubatch llama.cpp actually computes each token in), then append generated tokens one by one."""
    plan = kv.plan(cache.tokens, cache.classes, tokens, batching)
    cache.keep(plan.reuse)
    for call in kv.decode_calls(plan.pieces, batching):
        for start, end in llama_cpp_ubatches(call, batching.n_ubatch):
            cache.tokens.extend(tokens[start:end])
            cache.classes.extend(kv.row_class((start, end), t) for t in range(start, end))
    for n in range(generated):
        position = len(cache.tokens)
        cache.tokens.append(10_000 + n)
        cache.classes.append(kv.generated_class(position))
    return plan


def fresh(tokens: list[int], batching: kv.Batching) -> list[Hashable]:
    return kv.span_classes(kv.fresh_spans(len(tokens), batching))


batchings = st.builds(kv.Batching, n_batch=st.sampled_from([4, 7, 16, 32, 512]),
                      n_ubatch=st.sampled_from([3, 4, 8, 16, 512]))
# prompts that share prefixes: a cut of a common stem, then a short tail of a small alphabet, then output tokens
prompt_lists = st.lists(st.tuples(st.integers(0, 60), st.lists(st.integers(0, 3), min_size=1, max_size=40),
                                  st.integers(0, 5)), min_size=1, max_size=8)


@settings(max_examples=300, deadline=None)
@given(batching=batchings, prompts=prompt_lists)
def test_every_cached_token_was_computed_in_the_ubatch_a_fresh_cache_would_use(
        batching: kv.Batching, prompts: list[tuple[int, list[int], int]]) -> None:
    stem = [7] * 60
    cache = kv.CacheState()
    for cut, tail, generated in prompts:
        tokens = stem[:cut] + tail
        before = list(cache.tokens)
        plan = simulate(cache, tokens, batching, generated)
        assert cache.tokens[:len(tokens)] == tokens
        assert cache.classes[:len(tokens)] == fresh(tokens, batching)
        assert 0 <= plan.reuse < len(tokens)  # the last prompt token is always decoded (its logits are needed)
        assert plan.reuse <= kv.common_prefix(before, tokens)
        assert [t for start, end in plan.pieces for t in range(start, end)] == list(range(plan.reuse, len(tokens)))
        assert all(piece in kv.fresh_spans(len(tokens), batching) for piece in plan.pieces)


@settings(max_examples=200, deadline=None)
@given(batching=batchings, prompts=prompt_lists)
def test_the_reuse_is_the_longest_that_keeps_every_ubatch(batching: kv.Batching,
                                                           prompts: list[tuple[int, list[int], int]]) -> None:
    """Reusing one more token than the plan would start a ubatch off the grid or keep a token computed in
    another ubatch than the fresh one: the plan is maximal, not merely safe."""
    stem = [7] * 60
    cache = kv.CacheState()
    for cut, tail, generated in prompts:
        tokens = stem[:cut] + tail
        plan = kv.plan(cache.tokens, cache.classes, tokens, batching)
        longest = min(kv.common_prefix(cache.tokens, tokens), len(tokens) - 1)
        spans = kv.fresh_spans(len(tokens), batching)
        for more in range(plan.reuse + 1, longest + 1):
            on_grid = any(start == more for start, _ in spans)
            assert not on_grid or cache.classes[:more] != fresh(tokens, batching)[:more], \
                f"a reuse of {more} would also have been safe"
        simulate(cache, tokens, batching, generated)


@settings(max_examples=300, deadline=None)
@given(batching=batchings, prompts=prompt_lists, leave_last=st.booleans())
def test_the_engine_decodes_whole_chunks_per_call_without_moving_a_ubatch(
        batching: kv.Batching, prompts: list[tuple[int, list[int], int]], leave_last: bool) -> None:
    """Why this matters: one llama_decode per ubatch cost up to 1.2x the prompt time at a 16-token grid
    (docs/kv-reuse.md). The calls must cover the pieces in order, each fit the batch, be cut by llama.cpp into
    exactly the planned pieces, and be as few as that allows: no two neighbours could be one call."""
    stem = [7] * 60
    cache = kv.CacheState()
    for cut, tail, generated in prompts:
        tokens = stem[:cut] + tail
        plan = simulate(cache, tokens, batching, generated)
        pieces = list(plan.pieces[:-1] if leave_last else plan.pieces)  # generate leaves the last to llama.cpp
        calls = kv.decode_calls(pieces, batching)
        assert [u for call in calls for u in llama_cpp_ubatches(call, batching.n_ubatch)] == pieces
        assert all(0 < end - start <= batching.n_batch for start, end in calls)
        for (start, _), (_, end) in zip(calls, calls[1:]):
            joined = (start, end)
            assert (end - start > batching.n_batch
                    or llama_cpp_ubatches(joined, batching.n_ubatch) != [p for p in pieces if start <= p[0] < end])


@pytest.mark.parametrize("n_batch, n_ubatch, reuse, n_tokens, expected", [
    (512, 16, 0, 221, [(0, 221)]),                  # a fresh prompt: one call
    (512, 16, 176, 221, [(176, 221)]),              # mednli after the shared 176 tokens
    (512, 32, 0, 1300, [(0, 512), (512, 1024), (1024, 1300)]),
    (512, 32, 480, 1300, [(480, 992), (992, 1300)]),  # after a reuse: calls cross chunks, the ubatches do not
    (100, 32, 0, 150, [(0, 100), (100, 150)]),      # n_batch not a multiple of n_ubatch: chunks stay apart
])
def test_decode_calls_are_whole_batches_of_the_planned_ubatches(n_batch: int, n_ubatch: int, reuse: int, n_tokens: int,
                                        expected: list[kv.Span]) -> None:
    batching = kv.Batching(n_batch=n_batch, n_ubatch=n_ubatch)
    pieces = [s for s in kv.fresh_spans(n_tokens, batching) if s[0] >= reuse]
    assert kv.decode_calls(pieces, batching) == expected


@pytest.mark.parametrize("shared, previous_tail, suffix, expected", [
    (191, 30, 40, 160),   # the 191-token prefix: back to the 32-token grid
    (192, 30, 40, 192),
    (240, 30, 33, 224),   # mednli-like: system text and three shots shared
    (100, 30, 1, 96),
    (200, 0, 50, 192),    # the previous prompt ended at 200: its last ubatch [192, 200) was partial
    (0, 30, 50, 0),
])
def test_cpu_grid_keeps_whole_32_token_ubatches(shared: int, previous_tail: int, suffix: int, expected: int) -> None:
    batching = kv.Batching(n_batch=512, n_ubatch=kv.ubatch_for(512, offloaded=False))
    cache = kv.CacheState()
    simulate(cache, list(range(shared)) + [90_000 + i for i in range(previous_tail)], batching, generated=5)
    tokens = list(range(shared)) + [80_000 + i for i in range(suffix)]
    assert kv.plan(cache.tokens, cache.classes, tokens, batching).reuse == expected


def test_the_reuse_grid_is_part_of_the_evaluation_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ubatch changes the bits (docs/kv-reuse.md), so a changed CPU grid must start CPU evaluations anew
    under new keys instead of mixing results of two grids under one."""
    from medbench_local.config import load_config
    from medbench_local.engine.identity import identity
    from medbench_local.engine.llama import engine_settings
    from medbench_local.provenance import evaluation_key

    spec = replace(load_config(REPO / "models.toml").model("gemma3-270m"), n_gpu_layers=0)
    keys = {}
    for grid in (16, 32):
        monkeypatch.setattr(kv, "CPU_UBATCH", grid)
        settings = engine_settings(spec, seed=1234, n_threads=1, n_batch=512, allow_cpu=True)
        assert settings["n_ubatch"] == grid
        keys[grid] = evaluation_key(identity("a" * 64, None, settings, build="0.3"), get_task("mednli").settings())
    assert keys[16] != keys[32]


def test_offloaded_models_reuse_whole_512_token_ubatches() -> None:
    batching = kv.Batching(n_batch=512, n_ubatch=kv.ubatch_for(512, offloaded=True))
    cache = kv.CacheState()
    simulate(cache, list(range(1300)), batching)
    assert kv.plan(cache.tokens, cache.classes, list(range(1290)) + [-1] * 20, batching).reuse == 1024
    assert kv.plan(cache.tokens, cache.classes, list(range(300)) + [-1], batching).reuse == 0


def test_reuse_off_decodes_everything() -> None:
    batching = kv.Batching(n_batch=512, n_ubatch=32)
    cache = kv.CacheState()
    simulate(cache, list(range(100)), batching)
    plan = kv.plan(cache.tokens, cache.classes, list(range(100)) + [1, 2], batching, enabled=False)
    assert plan.reuse == 0 and plan.evaluated == 102


@pytest.mark.parametrize("requested, cpus, cores, load, expected", [
    (3, 16, 8, 30.0, 3),     # --threads wins, for both phases
    (None, 2, 2, 0.0, 2),    # idle 2-core machine: both cores
    (None, 2, 2, 1.2, 1),    # one core busy elsewhere
    (None, 2, 2, 7.0, 1),    # overloaded: one thread, never zero
    (None, 16, 8, 0.3, 8),   # hyperthreads: physical cores only
    (None, 16, 8, 12.0, 4),
])
def test_default_threads_do_not_oversubscribe(requested: int | None, cpus: int, cores: int, load: float,
                                              expected: int) -> None:
    choice = choose_threads(requested, cpus=cpus, cores=cores, load=load)
    assert choice.n_threads == choice.n_threads_batch == expected
    assert choice.rule


# ------------------------------------------------------------------------------------------ real models

MCQ_TASKS = ("nejm", "jama", "medqa", "pubmedqa", "mmlu_medical", "medmcqa", "mednli", "longhealth")
FREE_TEXT_TASKS = ("meqsum", "problem_summary", "medisumqa", "medisumcode")
LOGLIK_TASKS = ("jama", "medmcqa", "mednli", "longhealth")  # 0-shot, few-shot, long documents
N_CTX = 640  # keeps LongHealth's document budget (and this test) small


def run_all_tasks(engine: Any, items_per_task: int = 2) -> list[tuple[Any, ...]]:
    """Every task's first items in run order (LongHealth grouped by patient): a short generation, and for some
    multiple-choice tasks the log-likelihoods of the options (as text: several tokens each, so the batched
    continuation decode runs too). Generation and likelihood alternate on one engine, as in --scoring both."""
    from medbench_local.engine.base import GenerateRequest, LoglikelihoodRequest

    results = []
    for task_id in (*MCQ_TASKS, *FREE_TEXT_TASKS):
        task = get_task(task_id)
        if task_id == "longhealth":
            task = replace(task, document_order="per-patient")  # type: ignore[type-var]
        data = task.load(REPO / "bench_data" / task_id)
        ctx = PromptContext(shots=data.shots, documents=data.documents, count_tokens=engine.count_tokens,
                            n_ctx=N_CTX)
        for item in data.items[:items_per_task]:
            # a few tokens are enough: every generated token is decoded on top of the reused cache
            g = engine.generate(GenerateRequest(task.prompt(item, ctx), min(task.max_tokens, 4), task.stop))
            results.append((task_id, item.id, "generate", g.prompt_text, g.output, g.prompt_tokens,
                            g.completion_tokens, g.finish_reason, g.prompt_tokens_evaluated))
            if task_id in LOGLIK_TASKS:
                choices = task.choices(item, ctx, "text")  # type: ignore[attr-defined]
                result = engine.loglikelihood(LoglikelihoodRequest(choices.context, tuple(choices.options.values())))
                results.append((task_id, item.id, "loglik", result.prompt_text, [s.logprob for s in result.scores],
                                [s.greedy for s in result.scores], result.prompt_tokens,
                                result.prompt_tokens_evaluated))
    return results


def load_engine(model_id: str, kv_reuse: bool) -> Any:
    from medbench_local.config import load_config
    from medbench_local.engine.llama import LlamaEngine
    from medbench_local.modelfiles.resolve import require

    spec = replace(load_config(REPO / "models.toml").model(model_id), n_ctx=N_CTX)
    return LlamaEngine(spec, require(spec), n_threads=1, kv_reuse=kv_reuse)


@pytest.mark.e2e
@pytest.mark.parametrize("model_id", ["smollm2-135m-instruct", "gemma3-270m"])
def test_every_task_gives_byte_identical_results_with_and_without_prefix_reuse(model_id: str) -> None:
    outputs = {}
    for reuse in (True, False):
        engine = load_engine(model_id, reuse)
        try:
            outputs[reuse] = run_all_tasks(engine)
        finally:
            engine.close()
    on, off = outputs[True], outputs[False]
    assert len(on) == len(off) == 2 * (len(MCQ_TASKS) + len(FREE_TEXT_TASKS) + len(LOGLIK_TASKS))
    for a, b in zip(on, off):
        assert a[:-1] == b[:-1], f"{a[:3]} differs with KV reuse"
    # the comparison is not vacuous: the cache served part of the prompt for every second item of every task
    # (system text at least), and most of it for a likelihood right after a generation on the same prompt
    assert all(b[-1] == (b[-2] if b[2] == "loglik" else b[5]) for b in off)  # off: every prompt token decoded
    reused = {(a[0], a[2]) for a, b in zip(on, off) if a[-1] < b[-1]}
    assert {task for task, _ in reused} == {*MCQ_TASKS, *FREE_TEXT_TASKS}, reused
    assert all((task, "loglik") in reused for task in LOGLIK_TASKS)


@pytest.mark.e2e
def test_reusing_the_whole_common_prefix_would_change_the_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Why the grid matters: on Gemma-3 (repacked Q4_K, tiled Q6_K, tinyBLAS Q5_0 kernels) keeping every shared
    token, however the ubatches then fall, changes log-probabilities; the same items with the engine's plan
    do not change (previous test). So the equality test can fail."""
    from medbench_local.engine.base import LoglikelihoodRequest

    def naive_plan(cached: Any, classes: Any, tokens: Any, batching: kv.Batching, enabled: bool = True) -> kv.Plan:
        planned = real_plan(cached, classes, tokens, batching, enabled)
        keep = max(planned.reuse, min(kv.common_prefix(cached, tokens), len(tokens) - 1))
        pieces = tuple((max(start, keep), end) for start, end in planned.pieces if end > keep)
        return kv.Plan(planned.tokens, keep, pieces, planned.classes)

    real_plan = kv.plan
    task = get_task("mednli")
    data = task.load(REPO / "bench_data" / "mednli")
    scores = {}
    for variant in ("fresh", "naive reuse"):
        engine = load_engine("gemma3-270m", kv_reuse=variant != "fresh")
        if variant == "naive reuse":
            monkeypatch.setattr(kv, "plan", naive_plan)
        ctx = PromptContext(shots=data.shots, count_tokens=engine.count_tokens, n_ctx=N_CTX)
        try:
            scores[variant] = []
            for item in data.items[:4]:
                choices = task.choices(item, ctx)  # type: ignore[attr-defined]
                result = engine.loglikelihood(LoglikelihoodRequest(choices.context, tuple(choices.options.values())))
                scores[variant].append(([s.logprob for s in result.scores], result.prompt_tokens_evaluated))
        finally:
            engine.close()
            monkeypatch.undo()
    assert any(ev < 32 for _, ev in scores["naive reuse"][1:]), "the naive plan kept more than the grid allows"
    assert any(a[0] != b[0] for a, b in zip(scores["fresh"], scores["naive reuse"]))


@pytest.mark.e2e
@pytest.mark.parametrize("grid", [16, 32])
def test_llama_cpp_cuts_a_joined_call_into_the_planned_ubatches(grid: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine hands llama.cpp whole batches (kv.decode_calls) on the claim that llama.cpp cuts each into
    the planned ubatches itself. Checked where shapes change bits (Gemma-3): the last-token logits of mednli
    prompts, fresh and after a reuse, are those of one llama_decode per ubatch, in one call per prompt."""
    import llama_cpp
    import numpy as np

    task = get_task("mednli")
    data = task.load(REPO / "bench_data" / "mednli")
    real_decode = llama_cpp.llama_decode
    seen = {}
    for variant in ("one call per ubatch", "joined"):
        monkeypatch.setattr(kv, "CPU_UBATCH", grid)
        if variant == "one call per ubatch":
            monkeypatch.setattr(kv, "decode_calls", lambda pieces, batching: list(pieces))
        calls: list[int] = []
        monkeypatch.setattr(llama_cpp, "llama_decode",
                            lambda ctx, batch: calls.append(batch.n_tokens) or real_decode(ctx, batch))
        engine = load_engine("gemma3-270m", kv_reuse=True)
        try:
            assert engine.settings["n_ubatch"] == grid
            ctx = PromptContext(shots=data.shots, count_tokens=engine.count_tokens, n_ctx=N_CTX)
            logits = []
            for item in data.items[:3]:
                plan = engine._prefill(engine.tokenize(engine.render(task.prompt(item, ctx))), to_the_end=True)
                row = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(engine._llm.ctx, -1),
                                            shape=(engine._n_vocab,))
                logits.append((plan.reuse, plan.evaluated, row.tobytes()))
        finally:
            engine.close()
            monkeypatch.undo()
        seen[variant] = (logits, calls)
    (per_ubatch, per_ubatch_calls), (joined, joined_calls) = seen["one call per ubatch"], seen["joined"]
    assert all(reuse > 0 for reuse, _, _ in joined[1:])  # the later prompts did reuse the shots
    assert joined == per_ubatch
    assert len(joined_calls) == len(joined) < len(per_ubatch_calls)


@pytest.mark.e2e
def test_run_records_reuse_without_changing_results_or_keys(tmp_path: Path, in_repo: Path) -> None:
    """The CLI path: --kv-reuse on/off store the same rows under the same evaluation keys; the prompt tokens
    actually evaluated are recorded, and kv_reuse is in the settings but not in the identity."""
    for reuse in ("on", "off"):
        invoke("run", "--model", "gemma3-270m", "--task", "mednli", "--task", "mmlu_medical", "--limit", "3",
               "--scoring", "both", "--kv-reuse", reuse, "--threads", "1", "--db", str(tmp_path / f"{reuse}.db"))
    query = ("select e.key, i.item_id, g.prompt, g.output, g.prompt_tokens, s.outcome, s.detail, s.metrics "
             "from scores s join generations g on g.id = s.generation_id join evaluations e on e.key = s.evaluation "
             "join items i on i.key = s.item order by e.key, i.item_id")
    on, off = rows(tmp_path / "on.db", query), rows(tmp_path / "off.db", query)
    assert len(on) == 2 * 2 * 3 and on == off
    evaluated = {r: rows(tmp_path / f"{r}.db", "select sum(prompt_tokens), sum(prompt_tokens_evaluated) "
                                             "from generations")[0] for r in ("on", "off")}
    assert evaluated["off"][0] == evaluated["off"][1] == evaluated["on"][0] > evaluated["on"][1]
    settings = json.loads(rows(tmp_path / "on.db", "select settings from evaluations limit 1")[0][0])
    assert settings["engine"]["kv_reuse"] is True and "kv_reuse" not in settings["identity"]["settings"]
    assert settings["engine"]["n_threads"] == settings["engine"]["n_threads_batch"] == 1
    assert not {"n_threads", "n_threads_batch", "threads_rule"} & set(settings["identity"]["settings"])
    assert settings["identity"]["settings"]["n_ubatch"] == kv.ubatch_for(512, offloaded=False)


# ------------------------------------------------------------------------------------------ LongHealth grouping


def documents_block(prompt_user: str) -> str:
    return prompt_user.split("=== END OF DOCUMENTS ===")[0]


def test_longhealth_per_patient_order_groups_items_whose_prompts_share_the_records() -> None:
    base = get_task("longhealth")
    grouped = replace(base, document_order="per-patient")  # type: ignore[type-var]
    default_items = base.load(REPO / "bench_data" / "longhealth").items
    data = grouped.load(REPO / "bench_data" / "longhealth")
    assert sorted(i.id for i in data.items) == sorted(i.id for i in default_items)  # the same items, reordered
    keys = [(i.payload["patient"], i.payload["repeat"], i.payload["task"]) for i in data.items]
    assert keys == sorted(keys)  # within a group by answer placement (tests/test_longhealth_prefix.py)
    ctx = PromptContext(documents=data.documents, count_tokens=lambda text: len(text.split()), n_ctx=100_000)
    blocks: dict[tuple[Any, ...], set[str]] = {}
    for item in data.items:
        if item.payload["task"] in (1, 3):  # own records / distractors only: no per-question answer documents
            group = (item.payload["patient"], item.payload["repeat"], item.payload["task"])
            blocks.setdefault(group, set()).add(documents_block(grouped.prompt(item, ctx).user))
    assert blocks and all(len(texts) == 1 for texts in blocks.values())
    # the reference order shuffles per question: the same groups see different document orders
    default_ctx = PromptContext(documents=data.documents, count_tokens=lambda text: len(text.split()), n_ctx=100_000)
    shuffled: dict[tuple[Any, ...], set[str]] = {}
    for item in default_items:
        if item.payload["task"] == 1:
            group = (item.payload["patient"], item.payload["repeat"])
            shuffled.setdefault(group, set()).add(documents_block(base.prompt(item, default_ctx).user))
    assert any(len(texts) > 1 for texts in shuffled.values())
    assert grouped.settings()["document_order"] == "per-patient" and "document_order" not in base.settings()
