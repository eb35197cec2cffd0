"""LongHealth: expansion into Tasks 1-3, budgeted document assembly, seeding, scoring, data errors, e2e."""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from medbench_local.engine.base import Generation
from medbench_local.errors import DataError
from medbench_local.prompting.prompt_format import render_base
from medbench_local.tasks import get_task
from medbench_local.tasks.base import Item, PromptContext, TaskData
from medbench_local.tasks.longhealth import (
    DIVIDER,
    OPTION_F,
    LongHealthTask,
    assemble,
    gold_letter,
    load_benchmark,
    truncate_to_tokens,
)
from medbench_local.tasks.prompts import PromptTemplate

from .conftest import REPO, invoke, rows

DATA = REPO / "bench_data" / "longhealth"


def words(text: str) -> int:
    return len(text.split())


@pytest.fixture(scope="module")
def task() -> LongHealthTask:
    return LongHealthTask()


@pytest.fixture(scope="module")
def data(task: LongHealthTask) -> TaskData:
    return task.load(DATA)


def context(data: TaskData, n_ctx: int = 0) -> PromptContext:
    return PromptContext(documents=data.documents, count_tokens=words, n_ctx=n_ctx)


def by_id(data: TaskData) -> dict[str, Item]:
    return {item.id: item for item in data.items}


def generation(output: str, prompt_text: str = "", finish: str = "stop", truncated: int = 0) -> Generation:
    return Generation(prompt_text=prompt_text, output=output, prompt_tokens=100, truncated_tokens=truncated,
                      completion_tokens=10, finish_reason=finish, seconds=0.1)


def documents_in(user: str) -> list[str]:
    block = user.split("=== DOCUMENTS ===\n\n", 1)[1]
    block = block.split("\n\n=== END OF DOCUMENTS ===", 1)[0]
    return block.split(DIVIDER) if block else []


# ------------------------------------------------------------------------------------------------ loading


def test_every_question_becomes_five_items_per_task(data: TaskData) -> None:
    raw = json.loads((DATA / "benchmark_v5.json").read_text(encoding="utf-8"))
    questions = sum(len(p["questions"]) for p in raw.values())
    assert questions == 6 and len(data.items) == questions * 3 * 5
    ids = [item.id for item in data.items]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"patient_0[1-3]/q0[12]/task[123]/r[1-5]", i) for i in ids)
    assert Counter(item.payload["task"] for item in data.items) == {1: 30, 2: 30, 3: 30}
    # interleaved, so that --limit 3 already covers all three tasks
    assert ids[:3] == ["patient_01/q01/task1/r1", "patient_01/q01/task2/r1", "patient_01/q01/task3/r1"]
    assert data.shots == () and len(data.documents) == sum(len(p["texts"]) for p in raw.values()) == 11


def test_gold_letters_and_options(data: TaskData) -> None:
    items = by_id(data)
    expected = {"patient_01/q01": "B", "patient_01/q02": "C", "patient_02/q01": "B", "patient_02/q02": "A",
                "patient_03/q01": "E", "patient_03/q02": "D"}
    for key, gold in expected.items():
        for r in range(1, 6):
            t1, t2, t3 = (items[f"{key}/task{n}/r{r}"].payload for n in (1, 2, 3))
            assert t1["gold"] == t2["gold"] == gold and t3["gold"] == "F"
            assert list(t1["options"]) == list("ABCDE")
            assert list(t2["options"]) == list(t3["options"]) == list("ABCDEF")
            assert t2["options"]["F"] == t3["options"]["F"] == OPTION_F
            assert t1["options"][gold] == t1["correct"]


def test_documents_per_task(data: TaskData) -> None:
    raw = json.loads((DATA / "benchmark_v5.json").read_text(encoding="utf-8"))
    for item in data.items:
        p = item.payload
        patient = p["patient"]
        question = raw[patient]["questions"][p["question_number"] - 1]
        answers = [f"{patient}/{t}" for t in question["answer_location"]]
        own = {f"{patient}/{t}" for t in raw[patient]["texts"]}
        if p["task"] == 1:  # answer documents first, then the patient's other documents in file order
            assert p["answer_docs"] == answers
            assert p["other_docs"] == [d for d in sorted(own) if d not in answers]
        else:  # distractors never come from the same patient
            assert p["answer_docs"] == (answers if p["task"] == 2 else [])
            assert p["other_docs"] and not own & set(p["other_docs"])
            assert len(p["other_docs"]) == min(10, 11 - len(own))
        if p["task"] == 3:  # no answer document, nor any other document of this patient
            assert not own & set(p["answer_docs"] + p["other_docs"])
        assert set(p["doc_sha256"]) == set(p["answer_docs"] + p["other_docs"])


def test_distractor_sampling_is_seeded_per_item() -> None:
    few = LongHealthTask(distractors=3)
    first = [item.payload["other_docs"] for item in few.load(DATA).items if item.payload["task"] == 3]
    again = [item.payload["other_docs"] for item in LongHealthTask(distractors=3).load(DATA).items
             if item.payload["task"] == 3]
    other_seed = [item.payload["other_docs"] for item in LongHealthTask(distractors=3, seed=2).load(DATA).items
                  if item.payload["task"] == 3]
    assert first == again and first != other_seed
    assert len({tuple(sorted(docs)) for docs in first}) > 5  # items draw different distractor sets


def test_gold_letter_rules() -> None:
    options = {"A": "Pneumonia", "B": "Bronchitis", "C": "Pneumonia and sepsis", "D": "Asthma", "E": "COPD"}
    assert gold_letter(options, "Pneumonia") == "A"
    assert gold_letter(options, "Pneumonia", reference=True) == "C"  # the reference: last option containing it
    assert gold_letter(options, "bronchitis") == "B"
    assert gold_letter(options, "and sepsis") == "C"
    assert gold_letter(options, "Influenza") is None


# ------------------------------------------------------------------------------------------------ data errors


def write(tmp_path: Path, data: Any, name: str = "benchmark_v5.json") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


def sample() -> dict[str, Any]:
    return json.loads((DATA / "benchmark_v5.json").read_text(encoding="utf-8"))


def test_malformed_json_names_the_line(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        LongHealthTask().load(write(tmp_path, '{\n  "patient_01": {\n    "texts": {,\n'))
    assert err.value.line == 3 and "malformed JSON" in str(err.value)


@pytest.mark.parametrize("edit, field, message", [
    (lambda d: d["patient_02"]["questions"][1].update(correct="Gallstone ileus"),
     "patients.patient_02.questions[1].correct", "matches none of answer_a..answer_e"),
    (lambda d: d["patient_01"]["questions"][0].pop("answer_c"),
     "patients.patient_01.questions[0].answer_c", "missing"),
    (lambda d: d["patient_01"]["questions"][1].update(answer_location={"text_9": {}}),
     "patients.patient_01.questions[1].answer_location.text_9", "does not have"),
    (lambda d: d["patient_03"]["questions"][0].update(answer_location={}),
     "patients.patient_03.questions[0].answer_location", "must name the text"),
    (lambda d: d["patient_03"]["questions"][0].update(question=["x"]),
     "patients.patient_03.questions[0].question", "expected text, got a list"),
    (lambda d: d["patient_02"].update(texts="all in one"), "patients.patient_02.texts", "needs 'texts'"),
    (lambda d: d["patient_02"]["texts"].update(text_1="  "), "patients.patient_02.texts.text_1", "empty"),
    (lambda d: d["patient_01"].update(questions={}), "patients.patient_01.questions", "must be a list"),
    (lambda d: [d.pop("patient_02"), d.pop("patient_03")], "patients", "at least 2 are needed"),
])
def test_malformed_content_names_the_field(tmp_path: Path, edit: Any, field: str, message: str) -> None:
    content = sample()
    edit(content)
    with pytest.raises(DataError) as err:
        LongHealthTask().load(write(tmp_path, content))
    assert err.value.field == field and message in str(err.value)
    assert str(err.value).startswith(str(tmp_path / "benchmark_v5.json"))


def test_other_file_problems(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="expected a JSON object of patients"):
        load_benchmark(write(tmp_path, "[1, 2]"))
    with pytest.raises(DataError, match="file is empty"):
        load_benchmark(write(tmp_path, "  \n"))
    with pytest.raises(DataError, match="no such file"):
        load_benchmark(tmp_path / "missing.json")
    folder = tmp_path / "two"
    folder.mkdir()
    write(folder, sample(), "a.json")
    write(folder, sample(), "b.json")
    with pytest.raises(DataError, match="exactly one .json"):
        load_benchmark(folder)


def test_tolerated_variants(tmp_path: Path) -> None:
    content = sample()
    content["patient_01"]["texts"] = list(content["patient_01"]["texts"].values())  # a list of texts
    content["patient_02"]["questions"][0]["answer_location"] = ["text_1"]             # a list of text ids
    content["patient_02"]["extra"] = {"ignored": True}                                # unknown keys
    patients = load_benchmark(write(tmp_path, {"patients": content}))                # a wrapper object
    assert [p.id for p in patients] == ["patient_01", "patient_02", "patient_03"]
    assert list(patients[0].texts) == ["text_0", "text_1", "text_2", "text_3"]
    assert patients[1].questions[0].answer_texts == ("text_1",)


# ------------------------------------------------------------------------------------------------ assembly


TEMPLATE = PromptTemplate(system="system words here",
                          user="=== DOCUMENTS ===\n\n{documents}\n\n"
                               "=== END OF DOCUMENTS ===\n\n{question}\n{options}\n{letters}")


def toy(answer_docs: list[str], other_docs: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
    texts = {d: " ".join(f"{d[-1]}{i}" for i in range(10)) for d in answer_docs + other_docs}
    payload = {"question": "Which one?", "options": {c: f"opt{c}" for c in "ABCDE"},
               "answer_docs": answer_docs, "other_docs": other_docs}
    return payload, texts


def frame_tokens(payload: dict[str, Any]) -> int:
    from medbench_local.tasks.longhealth import fill_user
    return words(TEMPLATE.system) + words(fill_user(TEMPLATE, payload, ""))


def test_first_document_that_does_not_fit_is_cut_and_assembly_stops() -> None:
    payload, texts = toy(["p/a"], ["p/b", "p/c", "p/d"])
    budget = frame_tokens(payload) + 10 + (1 + 10) + 5  # a, then divider + b, then 5 tokens left
    result = assemble(payload, texts, TEMPLATE, words, budget=budget, seed=1, item_id="x")
    docs = documents_in(result.user)
    assert sorted(result.order) == ["p/a", "p/b", "p/c"] and result.dropped == ("p/d",)
    assert result.cut == "p/c" and result.cut_tokens == 6  # divider (1) + 4 words of c fit
    assert sorted(docs) == sorted([texts["p/a"], texts["p/b"], "c0 c1 c2 c3"])
    assert result.used == words(TEMPLATE.system) + words(result.user) <= budget
    assert result.answer_docs_kept == 1.0


def test_answer_documents_come_first() -> None:
    payload, texts = toy(["p/z"], ["p/a", "p/b"])  # the answer document is last in file order
    budget = frame_tokens(payload) + 7
    result = assemble(payload, texts, TEMPLATE, words, budget=budget, seed=1, item_id="x")
    assert result.order == ("p/z",) and result.cut == "p/z" and result.dropped == ("p/a", "p/b")
    assert documents_in(result.user) == ["z0 z1 z2 z3 z4 z5 z6"]
    assert result.answer_docs_kept == 0.0  # the answer document survived only in part

    roomy = assemble(payload, texts, TEMPLATE, words, budget=10_000, seed=1, item_id="x")
    assert sorted(roomy.order) == ["p/a", "p/b", "p/z"] and roomy.cut is None and not roomy.dropped


def test_no_room_for_documents_still_gives_a_prompt() -> None:
    payload, texts = toy(["p/a"], ["p/b"])
    result = assemble(payload, texts, TEMPLATE, words, budget=5, seed=1, item_id="x")
    assert result.order == () and documents_in(result.user) == [] and result.dropped == ("p/a", "p/b")
    assert result.answer_docs_kept == 0.0


def test_truncate_to_tokens_ends_on_a_word() -> None:
    text = "alpha beta gamma delta epsilon"
    assert truncate_to_tokens(text, 2, words) == "alpha beta"
    assert truncate_to_tokens(text, 2, len) == "al"  # no word boundary inside: cut where it must
    assert truncate_to_tokens(text, 0, words) == ""
    assert truncate_to_tokens(text, 99, words) == text


@pytest.mark.parametrize("budget", [250, 400, 555, 700, 1000, 2000])
def test_budget_is_respected_on_every_item(data: TaskData, budget: int) -> None:
    task = LongHealthTask(token_budget=budget)
    ctx = context(data)
    for item in data.items:
        prompt = task.prompt(item, ctx)
        assert words(prompt.system) + words(prompt.user) <= budget
        included = set(documents_in(prompt.user))
        candidates = item.payload["answer_docs"] + item.payload["other_docs"]
        texts = {s.id: s.payload["text"] for s in data.documents}
        full = [d for d in candidates if texts[d] in included]
        assert full == candidates[: len(full)]  # a priority prefix in full, then at most one cut document
        assert len(included) - len(full) <= 1


def test_budget_is_clamped_to_the_model_context(data: TaskData, task: LongHealthTask) -> None:
    assert task.effective_budget(0) == 8140
    assert task.effective_budget(32768) == 8140
    assert task.effective_budget(2048) == 2048 - 50 - 64
    item = by_id(data)["patient_01/q01/task2/r1"]
    small = LongHealthTask(token_budget=8140)
    prompt = small.prompt(item, context(data, n_ctx=310))
    assert words(prompt.system) + words(prompt.user) <= 310 - 50 - 64
    score = small.score(item, generation("The correct answer is B: x", render_base(prompt)), prompt.plan)
    assert score.metrics["budget_tokens"] == 196.0
    assert score.metrics["answer_docs_kept"] == 0.0 and score.metrics["truncated_doc_tokens"] > 0


def test_same_item_same_prompt_and_repeats_shuffle(data: TaskData) -> None:
    items = by_id(data)
    item = items["patient_01/q01/task1/r1"]
    first = LongHealthTask().prompt(item, context(data))
    assert LongHealthTask().prompt(item, context(data)) == first  # a fresh task object: same prompt
    orders = {tuple(documents_in(LongHealthTask().prompt(items[f"patient_01/q01/task1/r{r}"],
                                                            context(data)).user)) for r in range(1, 6)}
    assert len(orders) > 1  # each repeat has its own order
    assert all(sorted(o) == sorted(next(iter(orders))) for o in orders)  # of the same documents
    reseeded = LongHealthTask(seed=7)
    assert {tuple(documents_in(reseeded.prompt(items[f"patient_01/q01/task1/r{r}"], context(data)).user))
            for r in range(1, 6)} != orders


def test_prompt_structure(data: TaskData, task: LongHealthTask) -> None:
    item = by_id(data)["patient_02/q02/task2/r3"]
    prompt = task.prompt(item, context(data))
    assert prompt.answer_prefix == "" and "The correct answer is" in prompt.user
    assert "\nA: Chronic cholecystitis with cholesterol stones\n" in prompt.user
    assert f"\nF: {OPTION_F}\n" in prompt.user and "(A, B, C, D, E or F)" in prompt.user
    assert prompt.user.index("END OF DOCUMENTS") < prompt.user.index(item.payload["question"])


def test_documents_come_from_the_loaded_corpus(data: TaskData, task: LongHealthTask) -> None:
    item = by_id(data)["patient_01/q01/task1/r1"]
    with pytest.raises(RuntimeError, match="not in context.documents"):
        task.prompt(item, PromptContext(count_tokens=words))
    forged = tuple(replace(s, payload={**s.payload, "text": s.payload["text"] + " edited"}) for s in data.documents)
    with pytest.raises(RuntimeError, match="differs from the one loaded"):
        task.prompt(item, PromptContext(documents=forged, count_tokens=words))


# ------------------------------------------------------------------------------------------------ scoring


@pytest.mark.parametrize("item_id, output, outcome, letter, method", [
    ("patient_01/q01/task1/r1", "The correct answer is B: Oral amoxicillin-clavulanate.", "correct", "B",
     "reference_regex"),
    ("patient_01/q01/task1/r1", "The correct answer is D: Oral levofloxacin.", "wrong", "D", "reference_regex"),
    ("patient_01/q01/task1/r1", "The correct answer is b: oral amoxicillin.", "correct", "B", "reference_regex"),
    ("patient_01/q01/task1/r1", "Answer: B", "correct", "B", "explicit"),
    ("patient_01/q01/task1/r1", "Oral amoxicillin-clavulanate", "correct", "B", "fuzzy"),
    ("patient_01/q01/task1/r1", "The correct answer is F: none", "unparseable", None, "none"),
    ("patient_01/q01/task1/r1", "I am not sure.", "unparseable", None, "none"),
    ("patient_01/q01/task2/r1", "The correct answer is F: The question cannot be answered.", "wrong", "F",
     "reference_regex"),
    ("patient_01/q01/task3/r1", "The correct answer is F: The question cannot be answered.", "correct", "F",
     "reference_regex"),
    ("patient_01/q01/task3/r1", "The question cannot be answered with the provided documents", "correct", "F",
     "fuzzy"),
    ("patient_01/q01/task3/r1", "The correct answer is B: Oral amoxicillin-clavulanate.", "wrong", "B",
     "reference_regex"),
])
def test_scoring(data: TaskData, task: LongHealthTask, item_id: str, output: str, outcome: str,
                 letter: str | None, method: str) -> None:
    item = by_id(data)[item_id]
    score = task.score(item, generation(output))
    assert (score.outcome, score.extracted, score.method) == (outcome, letter, method)
    n = item.payload["task"]
    assert score.metrics["accuracy"] == score.metrics[f"task{n}"] == float(outcome == "correct")
    assert not {f"task{m}" for m in (1, 2, 3) if m != n} & set(score.metrics)
    if n == 2:
        assert score.metrics["task2_abstained"] == float(letter == "F")
    if n == 3:  # correct abstention, hallucinated answer, or neither (unparseable)
        assert score.metrics["task3_hallucinated"] == float(letter is not None and letter != "F")


@pytest.mark.parametrize("output, outcome, letter", [
    ("The correct answer is B: Oral amoxicillin-clavulanate.", "correct", "B"),
    ("The correct answer is b: oral amoxicillin.", "wrong", "b"),  # the reference compares letters exactly
    ("The correct answer is F: none", "wrong", "F"),
    ("Answer: B", "unparseable", None),                          # no fallback
    ("The correct answer is B.", "unparseable", None),           # the colon is required
])
def test_scoring_with_reference_quirks(data: TaskData, output: str, outcome: str, letter: str | None) -> None:
    quirky = LongHealthTask(reference_quirks=True)
    item = by_id(data)["patient_01/q01/task1/r1"]
    score = quirky.score(item, generation(output))
    assert (score.outcome, score.extracted) == (outcome, letter)
    assert score.method == ("reference_regex" if letter else "none")


def test_unreadable_answer_at_the_token_limit_is_truncated(data: TaskData, task: LongHealthTask) -> None:
    score = task.score(by_id(data)["patient_01/q01/task1/r1"], generation("The patient was given", finish="length"))
    assert score.outcome == "truncated" and score.metrics["accuracy"] == 0.0


def test_answer_prefix_override_is_read_with_the_output(data: TaskData) -> None:
    prefixed = LongHealthTask(template=replace(LongHealthTask().template, answer_prefix="The correct answer is"))
    score = prefixed.score(by_id(data)["patient_01/q01/task1/r1"], generation(" B: Oral amoxicillin-clavulanate"))
    assert score.outcome == "correct" and score.method == "reference_regex"


def test_assembly_facts_reach_the_score_only_for_the_prompt_sent(data: TaskData) -> None:
    task = LongHealthTask()
    item = by_id(data)["patient_03/q01/task2/r2"]
    prompt = task.prompt(item, context(data, n_ctx=4096))
    sent = render_base(prompt)
    score = task.score(item, generation("The correct answer is E: Apixaban.", sent), prompt.plan)
    assert score.metrics["answer_docs_kept"] == 1.0 and score.metrics["budget_tokens"] == 4096 - 50 - 64
    assert score.metrics["truncated_doc_tokens"] == 0.0 and "2/2 answer documents in full" in score.detail

    other_prompt = task.prompt(item, context(data))
    other = task.score(item, generation("The correct answer is E: Apixaban.", "some other prompt"), other_prompt.plan)
    alone = LongHealthTask().score(item, generation("The correct answer is E: Apixaban.", sent))  # no plan
    for score in (other, alone):
        assert score.outcome == "correct" and "answer_docs_kept" not in score.metrics
        assert "document assembly not recorded" in score.detail


def test_task_is_registered_with_its_settings() -> None:
    task = get_task("longhealth")
    assert isinstance(task, LongHealthTask) and task.metric_names == ("accuracy", "task1", "task2", "task3",
                                                                "task3_hallucinated", "task2_abstained")
    assert task.max_tokens == 50
    settings = task.settings()
    assert settings["token_budget"] == 8140 and settings["seed"] == 1 and settings["repeats"] == 5
    assert LongHealthTask(seed=2).settings() != settings
    assert LongHealthTask(reference_quirks=True).settings()["extraction"] == "reference_regex"
    assert task.error_metrics(Item("x", {"task": 3})) == {"accuracy": 0.0, "task3": 0.0, "task3_hallucinated": 0.0}
    assert task.error_metrics(Item("x", {"task": 1})) == {"accuracy": 0.0, "task1": 0.0}


def test_runner_stores_items_and_compare_sees_each_task(tmp_path: Path) -> None:
    from medbench_local.config import LocalSource, ModelSpec, load_config
    from medbench_local.engine.base import GenerateRequest
    from medbench_local.runner import ModelRole, RunOptions, execute, load_tasks
    from medbench_local.store import open_database
    from medbench_local.store.queries import latest_evaluation, summarize_evaluation

    from .test_runner import FakeEngine, SilentReporter

    class FailsWithoutOwnDocuments(FakeEngine):
        """Answers "B." (patient_01/q01's gold); fails when patient_01's discharge letter is absent (Task 3)."""

        def generate(self, request: GenerateRequest) -> Generation:
            if "Discharge: 17/03/2031" not in request.prompt.user:
                raise RuntimeError("llama_decode returned -1")
            return super().generate(request)

    spec = ModelSpec(id="fake", role="general", source=LocalSource(Path("/fake.gguf")))
    tasks = load_tasks([(get_task("longhealth"), DATA)], 6, limit_mode="first")  # q01 r1-r2, Tasks 1-3
    db = open_database(tmp_path / "r.db")
    summary = execute(db, load_config(REPO / "models.toml"), [ModelRole(spec, "general")], tasks,
                      {"fake": Path("/fake.gguf")}, RunOptions(), SilentReporter(),
                      engine_factory=lambda s, p, o: FailsWithoutOwnDocuments(s))
    assert summary.generated == 4 and summary.errors == 2
    stored = rows(tmp_path / "r.db", "select i.item_id, i.payload, g.prompt, s.outcome, s.metrics from items i "
                                     "join generations g on g.item = i.key join scores s on s.item = i.key")
    assert len(stored) == 6
    for item_id, payload, prompt, outcome, metrics in stored:
        task = json.loads(payload)["task"]
        assert "=== DOCUMENTS ===" in prompt and "text" not in json.loads(payload)  # ids and hashes only
        m = json.loads(metrics)
        assert set(k for k in m if re.fullmatch(r"task\d", k)) == {f"task{task}"}
        assert outcome == ("error" if task == 3 else "correct")
        if outcome != "error":
            assert m["budget_tokens"] == 2048 - 50 - 64 and m["answer_docs_kept"] == 1.0
    result = summarize_evaluation(db, latest_evaluation(db, "fake", "longhealth") or "")
    assert result.metrics["task1"] == result.metrics["task2"] == 1.0 and result.metrics["task3"] == 0.0
    assert result.metrics["accuracy"] == 4 / 6 and result.metrics["task3_hallucinated"] == 0.0


# ------------------------------------------------------------------------------------------------ e2e


@pytest.mark.e2e
def test_real_model_run_fits_the_context(in_repo: Path, tmp_path: Path) -> None:
    db = tmp_path / "lh.db"
    invoke("run", "--model", "smollm2-135m-instruct", "--task", "longhealth", "--limit", "3", "--limit-mode",
           "first", "--db", str(db))
    records = rows(db, """
        select i.item_id, g.prompt, g.prompt_tokens, g.truncated_tokens, s.outcome, s.metrics, s.detail
        from generations g join items i on i.key = g.item join scores s on s.generation_id = g.id
        order by i.item_id""")
    assert [r[0] for r in records] == ["patient_01/q01/task1/r1", "patient_01/q01/task2/r1",
                                       "patient_01/q01/task3/r1"]
    for item_id, prompt, prompt_tokens, truncated, outcome, metrics, detail in records:
        assert "=== DOCUMENTS ===" in prompt
        assert "=== END OF DOCUMENTS ===" in prompt and "<|im_start|>assistant" in prompt
        assert truncated == 0 and prompt_tokens <= 2048 - 50  # budgeted below n_ctx, nothing cut by the engine
        m = json.loads(metrics)
        assert m["budget_tokens"] == 2048 - 50 - 64 and item_id.split("/")[2] in m
        assert "documents in prompt" in detail
    (settings,), = rows(db, "select settings from evaluations")
    assert json.loads(settings)["task"]["token_budget"] == 8140
