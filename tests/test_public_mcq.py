"""Public MCQ tasks (MedQA, PubMedQA, MMLU medical, MedMCQA): loaders on our synthetic samples and on the real
released files, malformed input, prompts, scoring, and one real end-to-end run."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from medbench_local.engine.base import Generation
from medbench_local.errors import DataError
from medbench_local.metrics.extraction import extraction_setting
from medbench_local.tasks import PromptContext, get_task
from medbench_local.tasks.base import OUTCOMES, Item
from medbench_local.tasks.public_mcq import (
    MMLU_MEDICAL_SUBJECTS,
    load_medmcqa,
    load_medqa,
    load_mmlu_medical,
    load_pubmedqa,
)

from .conftest import REPO, SHARED_DATA, invoke, rows

BENCH = REPO / "bench_data"
TASK_IDS = ("medqa", "pubmedqa", "mmlu_medical", "medmcqa")


def _gen(output: str, finish: str = "stop") -> Generation:
    return Generation(prompt_text="", output=output, prompt_tokens=10, truncated_tokens=0, completion_tokens=3,
                      finish_reason=finish, seconds=0.01)


# ---------------------------------------------------------------------------------------------------------
# Bundled synthetic samples


def test_registry_has_the_four_tasks() -> None:
    for task_id in TASK_IDS:
        task = get_task(task_id)
        assert task.id == task_id and task.metric_names == ("accuracy",)
        assert task.max_tokens == 64 and task.stop == ("\n\n",)
        assert task.template.answer_prefix == "The answer is"  # type: ignore[attr-defined]


def test_medqa_sample() -> None:
    items = get_task("medqa").load(BENCH / "medqa").items
    assert [i.id for i in items] == [f"test-{n}" for n in range(1, 6)]
    assert [i.payload["answer"] for i in items] == ["A", "B", "C", "D", "A"]
    assert all(list(i.payload["options"]) == ["A", "B", "C", "D"] for i in items)
    assert items[2].payload["options"]["C"] == "Right coronary artery"
    assert items[0].source.endswith("phrases_no_exclude_test.jsonl:1")
    # the file itself loads the same as its folder
    assert load_medqa(BENCH / "medqa" / "phrases_no_exclude_test.jsonl") == items


def test_pubmedqa_sample_evaluates_the_ground_truth_ids_in_their_order() -> None:
    items = get_task("pubmedqa").load(BENCH / "pubmedqa").items
    assert [i.id for i in items] == ["99000002", "99000005", "99000003", "99000006"]  # 4 of the 6 items
    assert [i.payload["answer"] for i in items] == ["B", "A", "C", "C"]
    assert all(i.payload["options"] == {"A": "yes", "B": "no", "C": "maybe"} for i in items)
    assert items[0].payload["context"].count("\n") == 2  # three CONTEXTS, joined by newlines
    assert load_pubmedqa(BENCH / "pubmedqa" / "ori_pqal.json") == items
    source = items[0].source.rsplit(":", 1)
    assert source[0].endswith("ori_pqal.json")
    assert (BENCH / "pubmedqa" / "ori_pqal.json").read_text().splitlines()[int(source[1]) - 1].strip() \
        == '"99000002": {'


def test_pubmedqa_other_file_names_are_evaluated_whole(tmp_path: Path) -> None:
    shutil.copy(BENCH / "pubmedqa" / "ori_pqal.json", tmp_path / "test_set.json")
    shutil.copy(BENCH / "pubmedqa" / "test_ground_truth.json", tmp_path)
    items = load_pubmedqa(tmp_path / "test_set.json")
    assert len(items) == 6 and items[0].id == "99000001" and items[0].payload["answer"] == "A"


def test_mmlu_sample_one_item_per_subject_in_subject_order() -> None:
    task = get_task("mmlu_medical")
    items = task.load(BENCH / "mmlu_medical").items
    assert [i.id for i in items] == [f"{s}-1" for s in MMLU_MEDICAL_SUBJECTS]
    assert [i.payload["answer"] for i in items] == ["B", "B", "C", "D", "A", "A"]
    assert items[3].payload["options"]["C"] == "Calcium, mainly"  # quoted CSV cell
    assert "\n" in items[5].payload["question"]  # a question spanning two physical lines
    assert task.load(BENCH / "mmlu_medical" / "test").items == items
    single = task.load(BENCH / "mmlu_medical" / "test" / "anatomy_test.csv").items
    assert single == items[:1]


def test_medmcqa_sample_strips_choice_labels_and_reads_answer_0_based() -> None:
    items = get_task("medmcqa").load(BENCH / "medmcqa").items
    assert [i.id for i in items] == [f"validation-{n}" for n in range(1, 6)]
    assert [i.payload["answer"] for i in items] == ["C", "A", "B", "D", "A"]
    assert items[0].payload["options"] == {"A": "Vitamin A", "B": "Vitamin B12", "C": "Vitamin C", "D": "Vitamin D"}


def test_medmcqa_original_release_layout_cop_is_1_based(tmp_path: Path) -> None:
    record = {"question": "Q?", "exp": "", "cop": 1, "opa": "w", "opb": "x", "opc": "y", "opd": "z",
              "subject_name": "Demo", "topic_name": None, "id": "demo-uuid-1", "choice_type": "single"}
    path = tmp_path / "dev.json"
    path.write_text(json.dumps(record) + "\n" + json.dumps({**record, "id": "demo-uuid-2", "cop": 4}) + "\n")
    items = load_medmcqa(tmp_path)
    assert [(i.id, i.payload["answer"]) for i in items] == [("demo-uuid-1", "A"), ("demo-uuid-2", "D")]
    assert items[0].payload["options"] == {"A": "w", "B": "x", "C": "y", "D": "z"}


# ---------------------------------------------------------------------------------------------------------
# The real released files (skipped where /work/shared/data is absent)


def _shared(relative: str) -> Path:
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"{path} not present")
    return path


def _check_items(items: list[Item], n_options: int) -> None:
    assert len({i.id for i in items}) == len(items)
    for item in items:
        assert len(item.payload["options"]) == n_options
        assert item.payload["answer"] in item.payload["options"]
        assert item.payload["question"].strip()


def test_real_medqa() -> None:
    items = load_medqa(_shared("medqa_usmle/phrases_no_exclude_test.jsonl"))
    assert len(items) == 1273
    _check_items(items, 4)
    counts = {letter: sum(i.payload["answer"] == letter for i in items) for letter in "ABCD"}
    assert counts == {"A": 353, "B": 309, "C": 346, "D": 265}  # as in the dataset README
    assert load_medqa(_shared("medqa_usmle")) == items


def test_real_pubmedqa_is_the_500_item_test_split() -> None:
    folder = _shared("pubmedqa")
    items = load_pubmedqa(folder)
    assert len(items) == 500
    _check_items(items, 3)
    truth = json.loads((folder / "test_ground_truth.json").read_text())
    assert [i.id for i in items] == list(truth)
    labels = {"A": "yes", "B": "no", "C": "maybe"}
    assert all(labels[i.payload["answer"]] == truth[i.id] for i in items)
    assert sum(i.payload["answer"] == "A" for i in items) == 276  # yes 276 / no 169 / maybe 55
    assert sum(i.payload["answer"] == "C" for i in items) == 55
    assert load_pubmedqa(folder / "ori_pqal.json") == items


def test_real_mmlu_medical() -> None:
    folder = _shared("mmlu_medical")
    items = load_mmlu_medical(folder)
    assert len(items) == 1089
    _check_items(items, 4)
    sizes = {"anatomy": 135, "clinical_knowledge": 265, "college_biology": 144, "college_medicine": 173,
             "medical_genetics": 100, "professional_medicine": 272}
    assert {s: sum(i.id.startswith(s + "-") for i in items) for s in sizes} == sizes
    genetics = [i for i in items if i.id == "medical_genetics-1"][0]
    assert genetics.payload["answer"] == "B" and genetics.payload["options"]["B"] == "centromeres."
    val = load_mmlu_medical(folder / "val")
    assert len(val) == 123 and val[0].id == "anatomy-val-1"


def test_real_medmcqa() -> None:
    items = load_medmcqa(_shared("medmcqa/validation.jsonl"))
    assert len(items) == 4183
    _check_items(items, 4)
    counts = [sum(i.payload["answer"] == letter for i in items) for letter in "ABCD"]
    assert counts == [1348, 1085, 925, 825]  # README: answer 0/1/2/3 = 1348/1085/925/825
    first = items[0].payload
    assert first["answer"] == "A" and first["options"]["A"].startswith("Impulse through myelinated")


# ---------------------------------------------------------------------------------------------------------
# Malformed input: one DataError naming the file, the line and the field


def _medqa_line(**overrides: object) -> str:
    record: dict[str, object] = {"question": "Q?", "answer": "two", "options": {"A": "one", "B": "two"},
                                 "meta_info": "step1", "answer_idx": "B", "metamap_phrases": []}
    record.update(overrides)
    return json.dumps({k: v for k, v in record.items() if v is not None})


def _medmcqa_line(**overrides: object) -> str:
    record: dict[str, object] = {"question": "Q?", "choices": ["A. one", "B. two", "C. three", "D. four"],
                                 "answer": 1}
    record.update(overrides)
    return json.dumps({k: v for k, v in record.items() if v is not None})


def _medmcqa_original(**overrides: object) -> str:
    record: dict[str, object] = {"id": "x1", "question": "Q?", "opa": "a", "opb": "b", "opc": "c", "opd": "d",
                                 "cop": 2}
    record.update(overrides)
    return json.dumps({k: v for k, v in record.items() if v is not None})


def _pqal(**overrides: object) -> dict[str, object]:
    record: dict[str, object] = {"QUESTION": "Q?", "CONTEXTS": ["c1", "c2"], "LABELS": ["A", "B"],
                                 "final_decision": "yes"}
    record.update(overrides)
    return {k: v for k, v in record.items() if v is not None}


def _pubmedqa_files(ori: object, truth: object | None = None, name: str = "ori_pqal.json") -> dict[str, str]:
    files = {name: ori if isinstance(ori, str) else json.dumps(ori, indent=4)}
    if truth is not None:
        files["test_ground_truth.json"] = truth if isinstance(truth, str) else json.dumps(truth, indent=4)
    return files


Loader = Callable[[Path], list[Item]]

# (loader, files to write, file the error must name, line, field, message fragment)
MALFORMED: list[tuple[str, Loader, dict[str, str], str, int | None, str | None, str]] = [
    # MedQA
    ("medqa-empty", load_medqa, {"q_test.jsonl": ""}, "q_test.jsonl", None, None, "file is empty"),
    ("medqa-json", load_medqa, {"q_test.jsonl": _medqa_line() + "\n{oops\n"}, "q_test.jsonl", 2, None,
     "malformed JSON"),
    ("medqa-list", load_medqa, {"q_test.jsonl": "[1]\n"}, "q_test.jsonl", 1, None, "expected a JSON object"),
    ("medqa-question", load_medqa, {"q_test.jsonl": _medqa_line(question=" ")}, "q_test.jsonl", 1, "question",
     "empty (only whitespace)"),
    ("medqa-no-options", load_medqa, {"q_test.jsonl": _medqa_line(options=None)}, "q_test.jsonl", 1, "options",
     "missing"),
    ("medqa-options-list", load_medqa, {"q_test.jsonl": _medqa_line(options=["a", "b"])}, "q_test.jsonl", 1,
     "options", "expected an object"),
    ("medqa-one-option", load_medqa, {"q_test.jsonl": _medqa_line(options={"A": "x"}, answer_idx="A", answer="x")},
     "q_test.jsonl", 1, "options", "expected 2-10 options"),
    ("medqa-gap", load_medqa, {"q_test.jsonl": _medqa_line(options={"A": "x", "C": "two"}, answer_idx="C")},
     "q_test.jsonl", 1, "options", "without gaps"),
    ("medqa-empty-option", load_medqa, {"q_test.jsonl": _medqa_line(options={"A": "", "B": "two"})},
     "q_test.jsonl", 1, "options", "option A is empty"),
    ("medqa-no-answer", load_medqa, {"q_test.jsonl": _medqa_line(answer_idx=None)}, "q_test.jsonl", 1,
     "answer_idx", "missing"),
    ("medqa-answer-range", load_medqa, {"q_test.jsonl": _medqa_line(answer_idx="E")}, "q_test.jsonl", 1,
     "answer_idx", "not one of the options"),
    ("medqa-answer-int", load_medqa, {"q_test.jsonl": _medqa_line(answer_idx=1)}, "q_test.jsonl", 1,
     "answer_idx", "expected text"),
    ("medqa-answer-text", load_medqa, {"q_test.jsonl": _medqa_line(answer="one")}, "q_test.jsonl", 1,
     "answer", "differs from option B"),
    ("medqa-folder", load_medqa, {"a.jsonl": _medqa_line(), "b.jsonl": _medqa_line()}, ".", None, None,
     "several candidate files (a.jsonl, b.jsonl); expected phrases_no_exclude_test.jsonl"),
    ("medqa-not-utf8", load_medqa, {"q_test.jsonl": "\udcff"}, "q_test.jsonl", 1, None, "not UTF-8"),
    # PubMedQA
    ("pubmedqa-empty", load_pubmedqa, {"ori_pqal.json": ""}, "ori_pqal.json", None, None, "file is empty"),
    ("pubmedqa-json", load_pubmedqa, _pubmedqa_files('{\n  "1": {\n}}}'), "ori_pqal.json", 3, None,
     "malformed JSON"),
    ("pubmedqa-list", load_pubmedqa, _pubmedqa_files([1, 2]), "ori_pqal.json", 1, None, "expected a JSON object"),
    ("pubmedqa-empty-object", load_pubmedqa, _pubmedqa_files({}), "ori_pqal.json", 1, None, "empty object"),
    ("pubmedqa-no-truth", load_pubmedqa, _pubmedqa_files({"1": _pqal()}), "ori_pqal.json", None, None,
     "test_ground_truth.json is not beside"),
    ("pubmedqa-question", load_pubmedqa, _pubmedqa_files({"1": _pqal(), "2": _pqal(QUESTION=None)}, {"2": "yes"}),
     "ori_pqal.json", 14, "QUESTION", "PMID 2: missing"),
    ("pubmedqa-contexts", load_pubmedqa, _pubmedqa_files({"1": _pqal(CONTEXTS=[])}, {"1": "yes"}),
     "ori_pqal.json", 2, "CONTEXTS", "non-empty list"),
    ("pubmedqa-contexts-text", load_pubmedqa, _pubmedqa_files({"1": _pqal(CONTEXTS=["a", 3])}, {"1": "yes"}),
     "ori_pqal.json", 2, "CONTEXTS", "non-empty list"),
    ("pubmedqa-decision", load_pubmedqa, _pubmedqa_files({"1": _pqal(final_decision="probably")}, {"1": "yes"}),
     "ori_pqal.json", 2, "final_decision", "not yes, no or maybe"),
    ("pubmedqa-item-not-object", load_pubmedqa, _pubmedqa_files({"1": "yes"}, {"1": "yes"}), "ori_pqal.json", 2,
     "1", "expected an object"),
    ("pubmedqa-truth-label", load_pubmedqa, _pubmedqa_files({"1": _pqal()}, {"1": "yes", "2": "perhaps"}),
     "test_ground_truth.json", 3, "2", "not yes, no or maybe"),
    ("pubmedqa-truth-unknown", load_pubmedqa, _pubmedqa_files({"1": _pqal()}, {"1": "yes", "7": "no"}),
     "test_ground_truth.json", 3, "7", "not in ori_pqal.json"),
    ("pubmedqa-truth-differs", load_pubmedqa, _pubmedqa_files({"1": _pqal()}, {"1": "no"}), "ori_pqal.json", 2,
     "final_decision", "differs from the test_ground_truth.json label"),
    ("pubmedqa-truth-list", load_pubmedqa, _pubmedqa_files({"1": _pqal()}, "[]"), "test_ground_truth.json", 1,
     None, "expected a JSON object"),
    ("pubmedqa-duplicate", load_pubmedqa, _pubmedqa_files('{\n"1": {},\n"1": {}\n}', {"1": "yes"}),
     "ori_pqal.json", 3, "1", "duplicate key"),
    ("pubmedqa-no-file-in-folder", load_pubmedqa, {"other.json": "{}"}, ".", None, None,
     "folder holds no PubMedQA file: expected ori_pqal.json"),
    # MMLU
    ("mmlu-empty", load_mmlu_medical, {"anatomy_test.csv": ""}, "anatomy_test.csv", None, None, "file is empty"),
    ("mmlu-blank", load_mmlu_medical, {"anatomy_test.csv": "\n\n"}, "anatomy_test.csv", None, None,
     "file is empty"),
    ("mmlu-columns", load_mmlu_medical, {"anatomy_test.csv": "Q?,a,b,c,d,A\nQ2?,a,b,c,B\n"}, "anatomy_test.csv",
     2, None, "expected 6 columns"),
    ("mmlu-header", load_mmlu_medical, {"anatomy_test.csv": "question,A,B,C,D,answer\nQ?,a,b,c,d,A\n"},
     "anatomy_test.csv", 1, None, "no header row"),
    ("mmlu-answer", load_mmlu_medical, {"anatomy_test.csv": "Q?,a,b,c,d,A\n\"Q\nspans\",a,b,c,d,E\n"},
     "anatomy_test.csv", 2, "answer", "not one of A, B, C, D"),
    ("mmlu-empty-option", load_mmlu_medical, {"anatomy_test.csv": "Q?,a,,c,d,A\n"}, "anatomy_test.csv", 1, "B",
     "option B is empty"),
    ("mmlu-question", load_mmlu_medical, {"anatomy_test.csv": " ,a,b,c,d,A\n"}, "anatomy_test.csv", 1,
     "question", "empty (only whitespace)"),
    ("mmlu-quote", load_mmlu_medical, {"anatomy_test.csv": 'Q?,a,b,c,d,A\n"Q"x,a,b,c,d,A\n'},
     "anatomy_test.csv", 2, None, "malformed CSV"),
    ("mmlu-unterminated", load_mmlu_medical, {"anatomy_test.csv": 'Q?,a,b,c,d,A\n"Q,a,b,c,d,A\n'},
     "anatomy_test.csv", 2, None, "malformed CSV"),
    ("mmlu-not-csv", load_mmlu_medical, {"anatomy_test.txt": "Q?,a,b,c,d,A\n"}, "anatomy_test.txt", None, None,
     "expected an MMLU .csv"),
    ("mmlu-folder-none", load_mmlu_medical, {"virology_test.csv": "Q?,a,b,c,d,A\n"}, ".", None, None,
     "none of the medical MMLU files"),
    ("mmlu-folder-missing", load_mmlu_medical, {"anatomy_test.csv": "Q?,a,b,c,d,A\n"}, ".", None, None,
     "missing clinical_knowledge_test.csv"),
    ("mmlu-folder-mixed", load_mmlu_medical, {"anatomy_test.csv": "Q?,a,b,c,d,A\n",
                                              "anatomy_val.csv": "Q?,a,b,c,d,A\n"}, ".", None, None,
     "mixes MMLU splits"),
    # MedMCQA, simplified export
    ("medmcqa-empty", load_medmcqa, {"validation.jsonl": "\n"}, "validation.jsonl", None, None, "file is empty"),
    ("medmcqa-json", load_medmcqa, {"validation.jsonl": _medmcqa_line() + "\n\n{bad\n"}, "validation.jsonl", 3,
     None, "malformed JSON"),
    ("medmcqa-question", load_medmcqa, {"validation.jsonl": _medmcqa_line(question=None)}, "validation.jsonl", 1,
     "question", "missing"),
    ("medmcqa-choices", load_medmcqa, {"validation.jsonl": _medmcqa_line(choices="A. x")}, "validation.jsonl", 1,
     "choices", "expected a list"),
    ("medmcqa-one-choice", load_medmcqa, {"validation.jsonl": _medmcqa_line(choices=["A. x"], answer=0)},
     "validation.jsonl", 1, "choices", "expected 2-10 choices"),
    ("medmcqa-empty-choice", load_medmcqa, {"validation.jsonl": _medmcqa_line(choices=["A. x", "B. "])},
     "validation.jsonl", 1, "choices", "option B is empty"),
    ("medmcqa-answer-range", load_medmcqa, {"validation.jsonl": _medmcqa_line(answer=4)}, "validation.jsonl", 1,
     "answer", "not a 0-based index"),
    ("medmcqa-answer-letter", load_medmcqa, {"validation.jsonl": _medmcqa_line(answer="B")}, "validation.jsonl",
     1, "answer", "not a 0-based index"),
    ("medmcqa-answer-hidden", load_medmcqa, {"validation.jsonl": _medmcqa_line(answer=-1)}, "validation.jsonl", 1,
     "answer", "no public answers"),
    ("medmcqa-mixed", load_medmcqa, {"validation.jsonl": _medmcqa_line() + "\n" + _medmcqa_original()},
     "validation.jsonl", 2, "cop", "mixes"),
    # MedMCQA, original release
    ("medmcqa-orig-id", load_medmcqa, {"dev.json": _medmcqa_original(id=None)}, "dev.json", 1, "id", "missing"),
    ("medmcqa-orig-option", load_medmcqa, {"dev.json": _medmcqa_original(opc="")}, "dev.json", 1, "opc",
     "empty"),
    ("medmcqa-orig-cop-0", load_medmcqa, {"dev.json": _medmcqa_original(cop=0)}, "dev.json", 1, "cop",
     "1-based"),
    ("medmcqa-orig-cop-5", load_medmcqa, {"dev.json": _medmcqa_original(cop=5)}, "dev.json", 1, "cop",
     "not an option number 1-4"),
    ("medmcqa-orig-no-cop", load_medmcqa, {"dev.json": _medmcqa_original(cop=None)}, "dev.json", 1, "cop",
     "no public answers"),
    ("medmcqa-orig-duplicate", load_medmcqa, {"dev.json": _medmcqa_original() + "\n" + _medmcqa_original()},
     "dev.json", 2, "id", "duplicate id 'x1'"),
    ("medmcqa-folder", load_medmcqa, {"notes.txt": "x"}, ".", None, None, "validation.jsonl or dev.json"),
]


@pytest.mark.parametrize("loader, files, culprit, line, field, message",
                         [case[1:] for case in MALFORMED], ids=[case[0] for case in MALFORMED])
def test_malformed_input_is_one_data_error(tmp_path: Path, loader: Loader, files: dict[str, str], culprit: str,
                                           line: int | None, field: str | None, message: str) -> None:
    for name, content in files.items():
        (tmp_path / name).write_bytes(content.encode("utf-8", "surrogateescape"))
    target = tmp_path if culprit == "." else tmp_path / next(iter(files))
    with pytest.raises(DataError) as caught:
        loader(target)
    error = caught.value
    assert Path(error.path) == (tmp_path if culprit == "." else tmp_path / culprit)
    assert error.line == line and error.field == field
    assert message in str(error)
    assert str(error).startswith(str(error.path)) and "\n" not in str(error)


def test_missing_path_is_a_data_error(tmp_path: Path) -> None:
    for loader in (load_medqa, load_pubmedqa, load_mmlu_medical, load_medmcqa):
        with pytest.raises(DataError, match="no such file"):
            loader(tmp_path / "nope")


# ---------------------------------------------------------------------------------------------------------
# Prompts and scoring


def _first(task_id: str) -> Item:
    return get_task(task_id).load(BENCH / task_id).items[0]


def test_prompts_letter_the_options_and_ask_for_the_answer_prefix() -> None:
    item = _first("medqa")
    prompt = get_task("medqa").prompt(item, PromptContext())
    assert item.payload["question"] in prompt.user
    assert "A. Compression ultrasonography of the leg\nB. Plain radiograph of the tibia" in prompt.user
    assert "(A, B, C or D)" in prompt.user and prompt.answer_prefix == "The answer is"
    assert prompt.system

    item = _first("pubmedqa")
    prompt = get_task("pubmedqa").prompt(item, PromptContext())
    assert item.payload["context"] in prompt.user and item.payload["question"] in prompt.user
    assert "A. yes\nB. no\nC. maybe" in prompt.user and "(A, B or C)" in prompt.user
    assert prompt.user.index("Abstract") < prompt.user.index("Research question")


def test_prompt_override_keeps_working(tmp_path: Path) -> None:
    from dataclasses import replace

    from medbench_local.tasks.prompts import load_override

    override = tmp_path / "p.toml"
    override.write_text('user = "Q: {question}\\n{options}\\nPick one of {letters}."\nanswer_prefix = "Answer:"\n')
    task = get_task("mmlu_medical")
    custom = replace(task, template=load_override(override, task.template))  # type: ignore[type-var]
    prompt = custom.prompt(_first("mmlu_medical"), PromptContext())
    assert prompt.user.startswith("Q: Which bone") and prompt.user.endswith("Pick one of A, B, C or D.")
    assert custom.settings()["prompt_sha256"] != task.settings()["prompt_sha256"]
    assert custom.score(_first("mmlu_medical"), _gen(" B")).outcome == "correct"


@pytest.mark.parametrize("task_id", ["medqa", "mmlu_medical", "medmcqa"])
def test_scoring_outcomes(task_id: str) -> None:
    task, item = get_task(task_id), _first(task_id)
    gold = item.payload["answer"]
    wrong = next(letter for letter in item.payload["options"] if letter != gold)
    right = task.score(item, _gen(f" {gold}. {item.payload['options'][gold]}"))
    assert (right.outcome, right.extracted, right.gold, right.metrics) == ("correct", gold, gold, {"accuracy": 1.0})
    assert task.score(item, _gen(f" ({wrong})")).outcome == "wrong"
    assert task.score(item, _gen(" unclear, let me think")).outcome == "unparseable"
    cut = task.score(item, _gen(" unclear, let me think", finish="length"))
    assert cut.outcome == "truncated" and cut.metrics == {"accuracy": 0.0}
    fuzzy = task.score(item, _gen(f": {item.payload['options'][gold]}"))
    assert fuzzy.outcome == "correct" and fuzzy.method == "fuzzy"


PUBMEDQA_OUTPUTS = [
    (" B.", "B", "explicit"),
    (" (C) maybe", "C", "explicit"),
    (": B, because the data show no effect.", "B", "explicit"),
    (" no.", "B", "label_word"),
    (" **No**, the groups did not differ.", "B", "label_word"),
    (" yes", "A", "label_word"),
    (" maybe; the study is small", "C", "label_word"),
    (" Maybe.", "C", "label_word"),
    (" yes or no", None, "none"),
    (" not clear from the abstract", None, "none"),
    (" nothing can be concluded", None, "none"),
    (" found in the eyes", None, "none"),  # no fuzzy stage: "yes" inside "eyes" is no answer
]


@pytest.mark.parametrize("output, letter, method", PUBMEDQA_OUTPUTS)
def test_pubmedqa_reads_letters_and_label_words(output: str, letter: str | None, method: str) -> None:
    task, item = get_task("pubmedqa"), _first("pubmedqa")  # gold: B (no)
    score = task.score(item, _gen(output))
    assert (score.extracted, score.method) == (letter, method)
    assert score.outcome == ("unparseable" if letter is None else "correct" if letter == "B" else "wrong")
    assert score.outcome in OUTCOMES


def test_pubmedqa_label_word_after_custom_empty_prefix() -> None:
    from dataclasses import replace

    task = get_task("pubmedqa")
    bare = replace(task, template=replace(task.template, answer_prefix=""))  # type: ignore[type-var,arg-type]
    score = bare.score(_first("pubmedqa"), _gen("The answer is no."))
    assert (score.outcome, score.extracted, score.method) == ("correct", "B", "label_word")
    assert task.settings()["extraction"] == extraction_setting("explicit>lone_letter>label_word")
    cut = task.score(_first("pubmedqa"), _gen(" unclear", finish="length"))
    assert (cut.outcome, cut.extracted, cut.metrics) == ("truncated", None, {"accuracy": 0.0})


def test_fake_engine_run_stores_every_item(tmp_path: Path) -> None:
    """The runner path with a fake engine: every sample item of the four tasks is stored and scored."""
    from medbench_local.config import LocalSource, ModelSpec, load_config
    from medbench_local.runner import ModelRole, RunOptions, execute, load_tasks
    from medbench_local.store import open_database

    from .test_runner import FakeEngine, SilentReporter

    config = load_config(REPO / "models.toml")
    spec = ModelSpec(id="fake", role="general", source=LocalSource(Path("/fake.gguf")))
    tasks = load_tasks([(get_task(t), BENCH / t) for t in TASK_IDS], None)
    db = open_database(tmp_path / "r.db")
    summary = execute(db, config, [ModelRole(spec, "general")], tasks, {"fake": Path("/fake.gguf")},
                      RunOptions(), SilentReporter(), engine_factory=lambda s, p, o: FakeEngine(s))
    total = sum(len(t.items) for t in tasks)
    assert total == 5 + 4 + 6 + 5
    # FakeEngine fails on prompts mentioning epinephrine (none here) and otherwise answers "B"
    assert summary.generated == total and summary.errors == 0
    outcomes = rows(tmp_path / "r.db", "select e.task, s.outcome, s.gold from scores s "
                                       "join evaluations e on e.key = s.evaluation")
    assert len(outcomes) == total
    assert sorted({task for task, _, _ in outcomes}) == sorted(TASK_IDS)
    assert all(outcome == ("correct" if gold == "B" else "wrong") for _, outcome, gold in outcomes)


# ---------------------------------------------------------------------------------------------------------
# End to end: real inference with the small demo model


@pytest.mark.e2e
def test_e2e_four_tasks_on_bundled_samples(in_repo: Path, tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    args = ["run", "--model", "smollm2-135m-instruct"]
    for task_id in TASK_IDS:
        args += ["--task", task_id]
    invoke(*args, "--limit", "2", "--db", str(db))
    scored = rows(db, "select e.task, s.outcome, s.gold, s.metrics from generations g "
                      "join scores s on s.generation_id = g.id join evaluations e on e.key = g.evaluation")
    assert len(scored) == 8
    assert sorted(task for task, *_ in scored) == sorted(TASK_IDS * 2)
    for _, outcome, gold, metrics in scored:
        assert outcome in OUTCOMES and outcome != "error" and gold
        assert json.loads(metrics)["accuracy"] in (0.0, 1.0)

    if not (SHARED_DATA / "medqa_usmle" / "phrases_no_exclude_test.jsonl").exists():
        return
    real = tmp_path / "real.db"
    invoke("run", "--model", "smollm2-135m-instruct", "--task", "medqa", "--data",
           f"medqa={SHARED_DATA / 'medqa_usmle' / 'phrases_no_exclude_test.jsonl'}", "--limit", "2", "--limit-mode", "first",
           "--db", str(real))
    scored = rows(real, "select s.outcome, s.gold from generations g join scores s on s.generation_id = g.id")
    assert sorted(gold for _, gold in scored) == ["B", "D"]  # the first two MedQA test answers
    assert all(outcome in OUTCOMES and outcome != "error" for outcome, _ in scored)
