"""The CLUE text tasks: MedNLI, MeQSum, Problem Summary, MeDiSumQA (loaders, few-shot, prompts, scoring).

Why these tests: CLUE numbers are only comparable with the published table if the items, the few-shot
examples and the scoring are those of the reference (docs/study-reference.md#the-clue-pipeline, #tasks,
#metrics and #reference-quirks). So the loaders are checked on the bundled synthetic files and on the real
MeQSum release, the shot selection (first k, MeDiSumQA after a seed-1 shuffle) against Python's ``random``
directly, bad input against one-line DataErrors, the MedNLI rule in both modes on adversarial outputs, and ROUGE
against ``rouge_score`` itself.
"""

from __future__ import annotations

import csv
import json
import random
from dataclasses import replace
from pathlib import Path

import pytest
from rouge_score import rouge_scorer

from medbench_local.engine.base import Generation
from medbench_local.errors import DataError
from medbench_local.metrics.rouge import ROUGE_IMPL_VERSION
from medbench_local.prompting.prompt_format import render_base
from medbench_local.tasks import PromptContext, get_task
from medbench_local.tasks.clue_common import clean_output, seeded_shuffle, strip_output, user_block_stop
from medbench_local.tasks.mednli import parse_label
from medbench_local.tasks.prompts import PromptTemplate, load_override
from medbench_local.tasks.summarization import probsum_reference

from .conftest import REPO, SHARED_DATA, invoke, rows

BENCH = REPO / "bench_data"
CLUE_TASKS = ("mednli", "meqsum", "problem_summary", "medisumqa")
ANSWER_PREFIX = {"mednli": "", "meqsum": "Question: ", "problem_summary": "Diagnoses/Patient problems: ",
                 "medisumqa": "Answer: "}
MAX_TOKENS = {"mednli": 20, "meqsum": 200, "problem_summary": 100, "medisumqa": 200}
SHOTS = {"mednli": 3, "meqsum": 3, "problem_summary": 3, "medisumqa": 1}


def gen(output: str, finish: str = "stop") -> Generation:
    return Generation(prompt_text="", output=output, prompt_tokens=1, truncated_tokens=0, completion_tokens=1,
                      finish_reason=finish, seconds=0.0)


# ---------------------------------------------------------------------------------------------------------
# Loaders on the bundled synthetic files


@pytest.mark.parametrize("task_id", CLUE_TASKS)
def test_bench_data_loads_with_shots_excluded(task_id: str) -> None:
    task = get_task(task_id)
    data = task.load(BENCH / task_id)
    assert len(data.shots) == SHOTS[task_id] and len(data.items) == 5
    shot_ids = {s.id for s in data.shots}
    assert not shot_ids & {i.id for i in data.items}  # few-shot examples are never evaluated
    assert len({i.id for i in data.items}) == 5
    assert all(":" in i.source and Path(i.source.rsplit(":", 1)[0]).exists() for i in data.items)
    assert data.shots_sha256  # shots are part of the evaluation identity
    assert task.max_tokens == MAX_TOKENS[task_id] and task.template.answer_prefix == ANSWER_PREFIX[task_id]


def test_first_k_records_are_the_shots_in_file_order() -> None:
    data = get_task("mednli").load(BENCH / "mednli" / "mli_test_v1.jsonl")
    assert [s.id for s in data.shots] == ["synthetic-mednli-01", "synthetic-mednli-02", "synthetic-mednli-03"]
    assert [i.id for i in data.items][0] == "synthetic-mednli-04"
    assert data.shots[0].payload == {
        "sentence1": "The patient was started on intravenous heparin for a new pulmonary embolism.",
        "sentence2": "The patient is receiving anticoagulation.", "gold_label": "entailment"}
    meqsum = get_task("meqsum").load(BENCH / "meqsum")
    assert [s.id for s in meqsum.shots] == ["synthetic-01.txt", "synthetic-02.txt", "synthetic-03.txt"]
    assert meqsum.items[0].source.endswith("MeQSum_ACL2019_BenAbacha_Demner-Fushman.xlsx:5")  # Excel row 5
    probsum = get_task("problem_summary").load(BENCH / "problem_summary")
    assert [s.id for s in probsum.shots] == ["synthetic-001", "synthetic-002", "synthetic-003"]


def test_medisumqa_shuffle_is_pythons_seed_1_shuffle_and_deterministic() -> None:
    path = BENCH / "medisumqa" / "MeDiSumQA.json"
    file_order = [r["note_id"] for r in json.loads(path.read_text())]
    state = random.getstate()
    try:
        expected = list(file_order)
        random.seed(1)
        random.shuffle(expected)  # what the reference did
    finally:
        random.setstate(state)
    task = get_task("medisumqa")
    first, second = task.load(path), task.load(path)
    assert [s.id for s in first.shots] + [i.id for i in first.items] == expected
    assert first == second
    assert expected != file_order  # the shuffle does something on this file
    assert seeded_shuffle(list(range(10))) == seeded_shuffle(list(range(10)))


def test_xlsx_generator_reproduces_the_committed_workbook() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_bench_xlsx", REPO / "tools" / "make_bench_xlsx.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    committed = BENCH / "meqsum" / "MeQSum_ACL2019_BenAbacha_Demner-Fushman.xlsx"
    assert module.build() == committed.read_bytes()
    source = json.loads((BENCH / "meqsum" / "bench_source.json").read_text())
    items = get_task("meqsum").load(committed)
    loaded = [(s.id, s.payload["inquiry"], s.payload["summary"]) for s in (*items.shots, *items.items)]
    assert loaded == [tuple(r) for r in source["rows"]]


# ---------------------------------------------------------------------------------------------------------
# Accepted format variants


def test_problem_summary_accepts_train_column_names_and_any_case(tmp_path: Path) -> None:
    file = tmp_path / "probsum.csv"
    with file.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file id", "Assessment", "Summary", "Subjective Sections", "Objective Sections"])
        for n in range(5):
            w.writerow([f"n{n}", f"assessment {n}", f"problem {n}; other {n};", f"subjective {n}", "obj"])
    data = get_task("problem_summary").load(file)
    assert [i.id for i in data.items] == ["n3", "n4"]
    assert data.items[0].payload == {"subjective": "subjective 3", "assessment": "assessment 3",
                                     "summary": "problem 3; other 3;"}


def test_medisumqa_accepts_2024_jsonl_fields_csv_and_no_ids(tmp_path: Path) -> None:
    jsonl = tmp_path / "qa.jsonl"
    jsonl.write_text("\n".join(json.dumps({"without_discharge_summary": f"letter {n}", "question": f"q{n}",
                                           "answer": f"a{n}"}) for n in range(4)) + "\n")
    data = get_task("medisumqa").load(jsonl)
    assert len(data.shots) == 1 and len(data.items) == 3
    ids = [s.id for s in data.shots] + [i.id for i in data.items]
    assert sorted(ids) == ["medisumqa-1", "medisumqa-2", "medisumqa-3", "medisumqa-4"]
    assert data.shots[0].payload["letter"].startswith("letter ")

    table = tmp_path / "qa.csv"
    with table.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["NOTE_ID", "Discharge_Summary", "Question", "Answer"])
        w.writerows([["n1", "l1", "q1", "a1"], ["n1", "l1", "q2", "a2"], ["n2", "l2", "q3", "a3"]])
    data = get_task("medisumqa").load(table)
    ids = sorted([s.id for s in data.shots] + [i.id for i in data.items])
    assert ids == ["n1#1", "n1#2", "n2"]  # several questions on one note get stable suffixes

    both = tmp_path / "both.json"
    both.write_text(json.dumps([{"discharge_summary": "WITH instructions", "without_discharge_summary": "without",
                                 "Question": "q", "Answer": "a", "note_id": f"x{n}"} for n in range(2)]))
    data = get_task("medisumqa").load(both)
    assert data.items[0].payload["letter"] == "without"  # the field the 2024 code read wins


def test_meqsum_jsonl_and_xlsx_give_the_same_items(tmp_path: Path) -> None:
    source = json.loads((BENCH / "meqsum" / "bench_source.json").read_text())
    jsonl = tmp_path / "meqsum.jsonl"
    jsonl.write_text("\n".join(json.dumps(dict(zip(source["columns"], row))) for row in source["rows"]))
    from_xlsx = get_task("meqsum").load(BENCH / "meqsum")
    from_jsonl = get_task("meqsum").load(jsonl)
    assert [(i.id, i.payload) for i in from_xlsx.items] == [(i.id, i.payload) for i in from_jsonl.items]
    assert from_xlsx.shots_sha256 == from_jsonl.shots_sha256


# ---------------------------------------------------------------------------------------------------------
# Malformed input: one DataError naming file, line and field


def _jsonl(*records: object) -> str:
    return "\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n"


NLI = {"sentence1": "s1", "sentence2": "s2", "gold_label": "neutral"}


def _nli(n: int, **change: object) -> dict:
    return {**NLI, "pairID": f"p{n}", **change}


def _csv(header: list[str], *data: list[str]) -> str:
    import io

    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(header)
    w.writerows(data)
    return out.getvalue()


PS_HEADER = ["File ID", "Subjectives", "Objectives", "Assessment", "Summary"]
PS_ROW = ["id", "subj", "obj", "assess", "a; b"]


def _ps_rows(n: int = 5) -> list[list[str]]:
    return [[f"id{i}", *PS_ROW[1:]] for i in range(n)]


def _qa(n: int, **change: object) -> dict:
    record = {"note_id": f"n{n}", "discharge_summary": "letter", "Question": "q", "Answer": "a", **change}
    return {k: v for k, v in record.items() if v is not None}


MALFORMED = [
    # task, file name, content, expected line, expected field, message fragment
    ("mednli", "mli_test_v1.jsonl", _jsonl(_nli(1), "{not json", _nli(3), _nli(4)), 2, None, "malformed JSON"),
    ("mednli", "mli_test_v1.jsonl", _jsonl(_nli(1), _nli(2), _nli(3, sentence2=None), _nli(4)), 3, "sentence2",
     "missing"),
    ("mednli", "mli_test_v1.jsonl", _jsonl(*[_nli(n) for n in range(3)], _nli(3, gold_label="-")), 4,
     "gold_label", "not one of"),
    ("mednli", "mli_test_v1.jsonl", _jsonl(*[_nli(n) for n in range(4)], _nli(1)), 5, "pairID", "duplicate id"),
    ("mednli", "mli_test_v1.jsonl", _jsonl(*[_nli(n) for n in range(3)]), None, None, "need more than 3"),
    ("mednli", "mli_test_v1.jsonl", _jsonl(_nli(0), "[1, 2]"), 2, None, "expected a JSON object"),
    ("mednli", "mli_test_v1.jsonl", _jsonl(_nli(0), _nli(1, sentence1="  ")), 2, "sentence1", "empty"),
    ("mednli", "mli_test_v1.jsonl", _jsonl(_nli(0), _nli(1, sentence1=["x"])), 2, "sentence1", "expected text"),
    ("mednli", "mli_test_v1.jsonl", "  \n", None, None, "empty"),
    ("meqsum", "MeQSum.jsonl", _jsonl({"File": "a", "CHQ": "q", "Summary": "s"}, {"File": "b", "CHQ": "q"}), 2,
     "Summary", "missing (the record has: 'File', 'CHQ')"),
    ("meqsum", "MeQSum.xlsx", "this is not a workbook", None, None, "not a readable .xlsx"),
    ("problem_summary", "BioNLP2023-1A-Test.csv", _csv(["File ID", "Subjectives", "Summary"], *_ps_rows()), 1,
     "Assessment", "expected columns"),
    ("problem_summary", "BioNLP2023-1A-Test.csv",
     _csv(PS_HEADER, *_ps_rows(3), ["id9", "s", "o", "a", ""], *_ps_rows(1)), 5, "Summary", "empty"),
    ("problem_summary", "BioNLP2023-1A-Test.csv", _csv(PS_HEADER, *_ps_rows(2), ["id7", "short row"]), 4, None,
     "expected 5 columns"),
    ("problem_summary", "BioNLP2023-1A-Test.csv", _csv(PS_HEADER, *_ps_rows(3), *_ps_rows(2)), 5, "File ID",
     "duplicate id 'id0'"),
    ("problem_summary", "BioNLP2023-1A-Test.csv", _csv(PS_HEADER, *_ps_rows(2), ["id8", "", "o", " ", "x"]), 4,
     "Assessment", "both the subjective sections and the assessment are empty"),
    ("problem_summary", "BioNLP2023-1A-Test.csv", 'File ID,Subjectives,Objectives,Assessment,Summary\n"a,b', 2,
     None, "expected 5 columns (as in the header), found 1"),  # unterminated quote swallows the rest
    ("medisumqa", "MeDiSumQA.json", json.dumps([_qa(1), _qa(2, Question=None), _qa(3)], indent=1), 8, "Question",
     "also accepted: 'question'"),
    ("medisumqa", "MeDiSumQA.json", json.dumps({"data": [_qa(1)]}, indent=1), 1, None, "got one JSON object"),
    ("medisumqa", "MeDiSumQA.json", json.dumps([_qa(1), "text"]), 1, None, "expected a JSON object, got a string"),
    ("medisumqa", "MeDiSumQA.json", '[{"Question": "q",\n "Answer": }]', 2, None, "malformed JSON"),
    ("medisumqa", "MeDiSumQA.json", json.dumps([_qa(1)]), None, None, "need more than 1"),
    ("medisumqa", "MeDiSumQA.json", "[]", None, None, "array is empty"),
    ("medisumqa", "MeDiSumQA.jsonl", _jsonl(_qa(1), _qa(2, discharge_summary=None)), 2,
     "without_discharge_summary", "also accepted: 'discharge_summary'"),
    ("medisumqa", "MeDiSumQA.csv", _csv(["note_id", "letter", "Question", "Answer"], ["1", "l", "q", "a"]), 1,
     "without_discharge_summary", "missing column"),
]


@pytest.mark.parametrize("task_id,name,content,line,field,fragment", MALFORMED)
def test_malformed_input_is_one_data_error(tmp_path: Path, task_id: str, name: str, content: str,
                                           line: int | None, field: str | None, fragment: str) -> None:
    file = tmp_path / name
    file.write_text(content, encoding="utf-8")
    with pytest.raises(DataError) as caught:
        get_task(task_id).load(file)
    error = caught.value
    assert error.path == str(file) and error.line == line and error.field == field
    assert fragment in str(error) and "\n" not in str(error)


@pytest.mark.parametrize("task_id", CLUE_TASKS)
def test_missing_unreadable_and_ambiguous_paths(tmp_path: Path, task_id: str) -> None:
    task = get_task(task_id)
    with pytest.raises(DataError, match="no such file"):
        task.load(tmp_path / "absent.jsonl")
    with pytest.raises(DataError, match="folder holds no"):
        task.load(tmp_path)
    suffix = {"mednli": ".jsonl", "meqsum": ".jsonl", "problem_summary": ".csv", "medisumqa": ".json"}[task_id]
    (tmp_path / f"a{suffix}").write_text("x")
    (tmp_path / f"b{suffix}").write_text("x")
    with pytest.raises(DataError, match="several candidate files"):
        task.load(tmp_path)
    binary = tmp_path / f"c{suffix}"
    binary.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(DataError):
        task.load(binary)


# ---------------------------------------------------------------------------------------------------------
# Prompts


@pytest.mark.parametrize("task_id", CLUE_TASKS)
def test_prompt_has_shots_in_order_and_answer_prefix(task_id: str) -> None:
    task = get_task(task_id)
    data = task.load(BENCH / task_id)
    item = data.items[0]
    prompt = task.prompt(item, PromptContext(shots=data.shots))
    assert prompt.system == task.template.system and prompt.answer_prefix == ANSWER_PREFIX[task_id]
    assert len(prompt.shots) == SHOTS[task_id]
    text = render_base(prompt)
    positions = [text.index(user) for user, _ in prompt.shots] + [text.index(prompt.user)]
    assert positions == sorted(positions)
    for user, answer in prompt.shots:  # the engine puts the prefix before every few-shot answer
        assert f"{user}\n\n{ANSWER_PREFIX[task_id]}{answer}\n\n" in text
    assert text.endswith(prompt.user + "\n\n" + ANSWER_PREFIX[task_id])
    assert prompt.user not in [u for u, _ in prompt.shots]


def test_prompt_contents_per_task() -> None:
    nli = get_task("mednli")
    data = nli.load(BENCH / "mednli")
    prompt = nli.prompt(data.items[0], PromptContext(shots=data.shots))
    assert prompt.shots[0] == ("PREMISE: The patient was started on intravenous heparin for a new pulmonary "
                               "embolism.\nHYPOTHESIS: The patient is receiving anticoagulation.", "entailment")
    assert nli.template.fields() == {"sentence1", "sentence2"}

    meq = get_task("meqsum")
    data = meq.load(BENCH / "meqsum")
    prompt = meq.prompt(data.items[0], PromptContext(shots=data.shots))
    assert data.items[0].payload["inquiry"] in prompt.user
    assert prompt.shots[0][1] == "Does metformin cause diarrhea and stomach cramps, and do they go away?"
    assert meq.template.fields() == {"inquiry"}

    ps = get_task("problem_summary")
    data = ps.load(BENCH / "problem_summary")
    prompt = ps.prompt(data.items[0], PromptContext(shots=data.shots))
    item = data.items[0].payload
    assert f"{item['subjective']}\n\n{item['assessment']}" in prompt.user
    assert "Objectives" not in prompt.user and "Tmax 37.4" not in prompt.user  # objective sections unused
    assert prompt.shots[1][1] == "Gallstone pancreatitis,  Hypokalemia"  # ';' -> ', ', trailing ';' dropped
    quirky = replace(ps, reference_quirks=True).prompt(data.items[0], PromptContext(shots=data.shots))
    assert quirky.shots[1][1] == "Gallstone pancreatitis,  Hypokalemia, "  # the reference's no-op strip
    assert ps.template.fields() == {"subjective", "assessment"}

    qa = get_task("medisumqa")
    data = qa.load(BENCH / "medisumqa")
    prompt = qa.prompt(data.items[0], PromptContext(shots=data.shots))
    assert data.items[0].payload["letter"] in prompt.user and data.items[0].payload["question"] in prompt.user
    assert prompt.shots == ((qa.template.user.format(letter=data.shots[0].payload["letter"],
                                                     question=data.shots[0].payload["question"]),
                             data.shots[0].payload["answer"]),)
    assert qa.template.fields() == {"letter", "question"}


def test_prompt_override_and_stop_follow_the_template(tmp_path: Path) -> None:
    task = get_task("meqsum")
    override = tmp_path / "p.toml"
    override.write_text('user = "Patient wrote:\\n{inquiry}"\nanswer_prefix = "Q: "\n')
    custom = replace(task, template=load_override(override, task.template))
    data = custom.load(BENCH / "meqsum")
    prompt = custom.prompt(data.items[0], PromptContext(shots=data.shots))
    assert prompt.user.startswith("Patient wrote:\n") and prompt.answer_prefix == "Q: "
    assert custom.stop == ("\nPatient wrote:",) and task.stop == ("\n=== PATIENT MESSAGE ===",)
    assert custom.settings()["prompt_sha256"] != task.settings()["prompt_sha256"]
    assert user_block_stop(PromptTemplate(system="", user="{x} tail")) == ()


@pytest.mark.parametrize("task_id", CLUE_TASKS)
def test_settings_record_everything_that_changes_numbers(task_id: str) -> None:
    task = get_task(task_id)
    settings = task.settings()
    assert settings["max_tokens"] == MAX_TOKENS[task_id] and settings["shots"] == SHOTS[task_id]
    assert settings["prompt_sha256"] == task.template.sha256 and settings["reference_quirks"] is False
    assert settings["stop"] == list(task.stop) and settings["stop"]
    quirky = replace(task, reference_quirks=True)  # what `run --reference-quirks` does
    assert quirky.settings()["reference_quirks"] is True and quirky.stop == ()
    assert quirky.settings() != settings
    if task_id != "mednli":
        assert settings["rouge"] == ROUGE_IMPL_VERSION and task.metric_names == ("rouge1", "rouge2", "rougeL")
    else:
        assert task.metric_names == ("accuracy",)
    if task_id == "medisumqa":
        assert "seed=1" in settings["shot_selection"]


# ---------------------------------------------------------------------------------------------------------
# Scoring: MedNLI


def _nli_item(gold: str = "entailment"):
    data = get_task("mednli").load(BENCH / "mednli")
    item = next(i for i in data.items if i.payload["gold_label"] == gold)
    return item


# output, strict (outcome, extracted), quirk outcome -- gold is ENTAILMENT
NLI_CASES = [
    ("ENTAILMENT", ("correct", "ENTAILMENT"), "correct"),
    ("entailment", ("correct", "ENTAILMENT"), "correct"),
    (" Entailment.\n", ("correct", "ENTAILMENT"), "correct"),
    ("ENTAILMENT or NEUTRAL", ("unparseable", None), "correct"),          # reference accepts a hedge
    ("Entailment. Final answer: entailment", ("correct", "ENTAILMENT"), "wrong"),  # counted twice
    ("not a contradiction", ("unparseable", None), "wrong"),
    ("It is neutral, not entailment.", ("wrong", "NEUTRAL"), "correct"),  # negated gold counted by reference
    ("There is no contradiction, so: entailment", ("correct", "ENTAILMENT"), "correct"),
    ("CONTRADICTION", ("wrong", "CONTRADICTION"), "wrong"),
    ("NONENTAILMENT", ("unparseable", None), "correct"),                 # substring, not a word
    ("The hypothesis follows.", ("unparseable", None), "unparseable"),
    ("", ("unparseable", None), "unparseable"),
    ("You are an AI assistant. ENTAILMENT", ("unparseable", None), "unparseable"),  # cleaned to end of line
    ("[INST] neutral\nentailment", ("correct", "ENTAILMENT"), "correct"),
]


@pytest.mark.parametrize("output,strict,quirk", NLI_CASES)
def test_mednli_strict_and_reference_rule(output: str, strict: tuple, quirk: str) -> None:
    task = get_task("mednli")
    item = _nli_item("entailment")
    score = task.score(item, gen(output))
    assert (score.outcome, score.extracted) == strict
    assert score.gold == "ENTAILMENT" and score.metrics == {"accuracy": 1.0 if strict[0] == "correct" else 0.0}
    ref = replace(task, reference_quirks=True).score(item, gen(output))
    assert ref.outcome == quirk and ref.metrics == {"accuracy": 1.0 if quirk == "correct" else 0.0}


def test_mednli_truncated_and_details() -> None:
    task = get_task("mednli")
    item = _nli_item("neutral")
    assert task.score(item, gen("The relation between", "length")).outcome == "truncated"
    assert task.score(item, gen("neutral because the", "length")).outcome == "correct"
    assert "several labels" in task.score(item, gen("neutral or contradiction")).detail
    assert parse_label("It is NOT ENTAILMENT") == (None, "only negated label(s): ENTAILMENT")


# ---------------------------------------------------------------------------------------------------------
# Scoring: summaries


def test_cleanup_is_the_reference_regex_line_local() -> None:
    raw = "Is X safe? You are an AI assistant who\nnext line [INST] more\n<|user|> hi\nend"
    assert clean_output(raw) == "Is X safe? \nnext line \n\nend"
    assert strip_output("  Answer text \n") == "Answer text"


@pytest.mark.parametrize("task_id", ["meqsum", "problem_summary", "medisumqa"])
def test_rouge_matches_rouge_score(task_id: str) -> None:
    task = get_task(task_id)
    item = task.load(BENCH / task_id).items[0]
    reference = task.reference(item)
    output = "  Some Words; that partly overlap with the " + reference.split(" ")[0] + " reference  \n"
    score = task.score(item, gen(output))
    prediction = output.strip() if task_id == "medisumqa" else output
    expected = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False).score(
        reference.lower() if task_id == "problem_summary" else reference,
        prediction.lower() if task_id == "problem_summary" else prediction)
    assert set(score.metrics) == {"rouge1", "rouge2", "rougeL"}
    for key, value in expected.items():
        assert score.metrics[key] == pytest.approx(value.fmeasure)
    assert score.outcome == "scored" and score.extracted == prediction and score.gold == reference
    perfect = task.score(item, gen(reference))
    assert perfect.metrics == {"rouge1": 1.0, "rouge2": perfect.metrics["rouge2"], "rougeL": 1.0}


def test_summary_outcomes_truncated_empty_and_cleaned() -> None:
    task = get_task("meqsum")
    item = task.load(BENCH / "meqsum").items[0]
    truncated = task.score(item, gen("What causes ringing in one ear and", "length"))
    assert truncated.outcome == "truncated" and truncated.metrics["rouge1"] > 0.5
    empty = task.score(item, gen("You are an AI model"))
    assert empty.outcome == "unparseable" and empty.metrics == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    assert "removed" in empty.detail
    cleaned = task.score(item, gen("What causes ringing in one ear? [INST] Summarize this"))
    assert cleaned.extracted == "What causes ringing in one ear? " and cleaned.metrics["rougeL"] == 1.0
    assert "removed" in cleaned.detail


def test_problem_summary_reference_text() -> None:
    assert probsum_reference("A; B;") == "A,  B"
    assert probsum_reference("A; B;", quirks=True) == "A,  B, "
    assert probsum_reference("A;B") == "A, B"
    task = get_task("problem_summary")
    item = next(i for i in task.load(BENCH / "problem_summary").items if i.payload["summary"].endswith(";"))
    score = task.score(item, gen("ATRIAL FIBRILLATION with rapid ventricular response, orthostatic hypotension"))
    assert score.gold == "Atrial fibrillation with rapid ventricular response,  Orthostatic hypotension"
    assert score.metrics["rouge1"] == 1.0  # lower-cased both sides; punctuation ignored by ROUGE
    quirk = replace(task, reference_quirks=True).score(item, gen("atrial fibrillation"))
    assert quirk.gold.endswith(", ") and quirk.metrics == task.score(item, gen("atrial fibrillation")).metrics


# ---------------------------------------------------------------------------------------------------------
# The real MeQSum release (shared data; skipped where absent)

MEQSUM_SHARED = SHARED_DATA / "meqsum"


@pytest.mark.skipif(not (MEQSUM_SHARED / "MeQSum_ACL2019_BenAbacha_Demner-Fushman.xlsx").exists(),
                    reason="real MeQSum release not available")
def test_real_meqsum_release_loads_1000_records_997_evaluated() -> None:
    task = get_task("meqsum")
    data = task.load(MEQSUM_SHARED)  # the folder: the .xlsx is chosen over the .jsonl conversion
    assert len(data.shots) == 3 and len(data.items) == 997
    assert data.shots[0].id == "1-131188152.xml.txt"
    assert data.shots[0].payload["summary"] == "Who manufactures cetirizine?"
    assert data.items[0].source.endswith(".xlsx:5")
    if (MEQSUM_SHARED / "meqsum.jsonl").exists():
        converted = task.load(MEQSUM_SHARED / "meqsum.jsonl")
        assert [(i.id, i.payload) for i in converted.items] == [(i.id, i.payload) for i in data.items]
        assert converted.shots_sha256 == data.shots_sha256


# ---------------------------------------------------------------------------------------------------------
# End to end: the real CLI with the demo chat model on all four tasks


@pytest.mark.e2e
def test_cli_runs_all_clue_text_tasks(in_repo: Path, tmp_path: Path) -> None:
    db = tmp_path / "clue.db"
    invoke("run", "--model", "smollm2-135m-instruct", "--task", "mednli", "--task", "meqsum", "--task",
           "problem_summary", "--task", "medisumqa", "--limit", "2", "--db", str(db))
    records = rows(db, """select e.task, e.settings, g.prompt, g.output, s.outcome, s.metrics, s.extracted
                          from generations g join evaluations e on e.key = g.evaluation
                          join scores s on s.generation_id = g.id""")
    assert sorted(r[0] for r in records) == sorted(CLUE_TASKS * 2)
    first_shot = {task_id: get_task(task_id).load(BENCH / task_id).shots[0] for task_id in CLUE_TASKS}
    for task_id, settings, prompt, output, outcome, metrics, extracted in records:
        task = get_task(task_id)
        shot = first_shot[task_id]
        shot_text = {"mednli": "sentence1", "meqsum": "inquiry", "problem_summary": "assessment",
                     "medisumqa": "question"}[task_id]
        assert shot.payload[shot_text] in prompt  # the few-shot example is in the stored prompt
        assert "<|im_start|>assistant" in prompt and prompt.endswith(ANSWER_PREFIX[task_id])
        assert json.loads(settings)["task"]["shots"] == SHOTS[task_id]
        metrics = json.loads(metrics)
        if task_id == "mednli":
            assert set(metrics) == {"accuracy"} and outcome in ("correct", "wrong", "unparseable", "truncated")
        else:
            assert set(metrics) == {"rouge1", "rouge2", "rougeL"}
            assert all(0.0 <= v <= 1.0 for v in metrics.values())
            assert outcome in ("scored", "truncated", "unparseable")
            assert extracted == task.postprocess(output)  # type: ignore[attr-defined]
