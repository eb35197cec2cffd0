"""MeDiSumCode: loading (JSON array and JSON Lines), one-shot selection, prompt, scoring, quirks, and one
real run through the CLI."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from medbench_local.engine.base import Generation
from medbench_local.errors import DataError
from medbench_local.metrics.icd import ICD_TABLE_VERSION
from medbench_local.prompting.prompt_format import render_base
from medbench_local.tasks import get_task
from medbench_local.tasks.base import Item, PromptContext
from medbench_local.tasks.icd_coding import IcdCodingTask, load_medisumcode
from medbench_local.tasks.prompts import load_override

from .conftest import REPO, invoke, rows

SAMPLE = REPO / "bench_data" / "medisumcode"

RECORDS = [
    {"hadm_id": "h1", "text": "Shot letter: diabetes.", "icd_codes": [{"code": "E119", "description": "x"}]},
    {"hadm_id": "h2", "text": "Letter two.", "icd_codes": [{"code": "I214"}, {"code": "I10"}]},
    {"hadm_id": "h3", "text": "Letter three.", "icd_codes": ["J18.9", "J441"]},
]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def gen(output: str, finish: str = "stop") -> Generation:
    return Generation(prompt_text="", output=output, prompt_tokens=1, truncated_tokens=0, completion_tokens=1,
                      finish_reason=finish, seconds=0.01)


TASK = IcdCodingTask()
ITEM = Item(id="x", payload={"text": "...", "codes": ["I214", "I2510", "E119", "I10"]})


# --- loading -------------------------------------------------------------------------------------------


def test_registered_and_sample_loads_with_first_record_as_shot() -> None:
    task = get_task("medisumcode")
    data = task.load(SAMPLE)
    assert [s.id for s in data.shots] == ["demo-01"]
    assert [i.id for i in data.items] == ["demo-02", "demo-03", "demo-04", "demo-05"]
    assert data.items[1].payload["codes"] == ["I214", "I2510", "E119", "I10"]
    assert data.items[0].source.endswith("medisumcode.jsonl:2")
    assert task.max_tokens == 200 and task.template.answer_prefix == "ICD-10 Codes: "


def test_json_array_and_json_lines_give_the_same_items(tmp_path: Path) -> None:
    jsonl = load_medisumcode(write_jsonl(tmp_path / "a.jsonl", RECORDS))
    array_file = tmp_path / "b.json"
    array_file.write_text(json.dumps(RECORDS, indent=2), encoding="utf-8")
    array = load_medisumcode(array_file)
    assert [(i.id, i.payload) for i in array.items] == [(i.id, i.payload) for i in jsonl.items]
    assert array.shots[0].payload == jsonl.shots[0].payload == {"text": "Shot letter: diabetes.", "codes": ["E119"]}
    assert [i.payload["codes"] for i in array.items] == [["I214", "I10"], ["J18.9", "J441"]]
    # lines: where each record starts (JSONL: its line; array: the line of its opening brace)
    assert [i.source.rsplit(":", 1)[1] for i in jsonl.items] == ["2", "3"]
    starts = [n for n, line in enumerate(array_file.read_text().splitlines(), 1) if line == "  {"]
    assert [int(i.source.rsplit(":", 1)[1]) for i in array.items] == starts[1:]


def test_code_field_variants(tmp_path: Path) -> None:
    records = [
        {"id": 1, "text": "a", "codes": "E119, I10"},
        {"id": 2, "text": "b", "icd10": ["E11.9", "I10"]},
        {"id": 3, "text": "c", "target": "E119,I10,"},
        {"id": 4, "text": "d", "icd_codes": ["E119", "I10"], "codes": "E11.9, I10"},  # agree -> fine
        {"id": 5, "text": "e", "icd_codes": []},                                     # empty is allowed
    ]
    data = load_medisumcode(write_jsonl(tmp_path / "v.jsonl", records))
    assert [i.id for i in data.items] == ["2", "3", "4", "5"]
    assert [i.payload["codes"] for i in data.items] == [["E11.9", "I10"], ["E119", "I10"], ["E119", "I10"], []]


@pytest.mark.parametrize(("content", "message"), [
    ('{"hadm_id": "a", "text": "x", "icd_codes": ["E119"]}\n{"hadm_id": "b", "text": "y", "icd_codes": [',
     "v.jsonl:2: malformed JSON"),
    ('{"hadm_id": "a", "text": "x", "icd_codes": ["E119"]}\n{"hadm_id": "b", "icd_codes": ["E119"]}\n',
     "v.jsonl:2: field 'text': missing"),
    ('{"hadm_id": "a", "text": "x", "icd_codes": ["E119"]}\n{"text": "y", "icd_codes": ["E119"]}\n',
     "v.jsonl:2: field 'id': missing (also accepted: 'hadm_id'; the record has: 'text', 'icd_codes')"),
    ('{"hadm_id": "a", "text": "x", "icd_codes": ["E119"]}\n{"hadm_id": "b", "text": "y"}\n',
     "v.jsonl:2: field 'icd_codes': missing (also accepted: 'codes', 'icd10', 'target')"),
    ('{"hadm_id": "a", "text": "x", "icd_codes": ["E119"]}\n{"hadm_id": "b", "text": "y", "codes": "Diabetes"}\n',
     "v.jsonl:2: field 'codes': 'Diabetes' is not an ICD-10-CM code"),
    ('{"hadm_id": "a", "text": "x", "icd_codes": ["E119"]}\n{"hadm_id": "b", "text": "y", "codes": "4019"}\n',
     "'4019' is not an ICD-10-CM code"),
    ('{"hadm_id": "a", "text": "x", "icd_codes": [{"description": "no code"}]}\n',
     "v.jsonl:1: field 'icd_codes': expected each code as text"),
    ('{"hadm_id": "a", "text": "x", "icd_codes": 5}\n',
     "v.jsonl:1: field 'icd_codes': expected a comma-separated string or a list of codes, got a number"),
    ('{"hadm_id": "a", "text": "x", "icd_codes": ["E119"], "codes": "I10"}\n',
     "v.jsonl:1: field 'codes': disagrees with 'icd_codes'"),
    ('{"hadm_id": "a", "text": "x", "icd_codes": ["E119"]}\n{"hadm_id": "a", "text": "y", "icd_codes": []}\n',
     "v.jsonl:2: field 'id': duplicate id 'a'"),
    ('{"hadm_id": "a", "text": "x", "icd_codes": ["E119"]}\n',
     "found 1 record(s); need more than 1"),
    ('["not an object", {"hadm_id": "a"}]', "v.jsonl:1: expected a JSON object, got a string"),
    ('[{"hadm_id": "a", "text": "x", "icd_codes": []},\n]', "v.jsonl:2: malformed JSON"),
    ("", "file is empty"),
])
def test_malformed_input_is_one_clear_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "v.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_medisumcode(path)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_folder_needs_one_data_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        load_medisumcode(tmp_path / "missing")
    with pytest.raises(DataError, match="no MeDiSumCode file"):
        load_medisumcode(tmp_path)
    write_jsonl(tmp_path / "a.jsonl", RECORDS)
    write_jsonl(tmp_path / "b.jsonl", RECORDS)
    with pytest.raises(DataError, match="several candidate files"):
        load_medisumcode(tmp_path)
    write_jsonl(tmp_path / "medisumcode.jsonl", RECORDS[1:] + RECORDS[:1])
    assert load_medisumcode(tmp_path).shots[0].id == "h2"  # the conventional name wins


# --- prompt ---------------------------------------------------------------------------------------------


def test_prompt_has_the_shot_with_codes_and_ends_with_the_answer_prefix() -> None:
    data = TASK.load(SAMPLE)
    prompt = TASK.prompt(data.items[0], PromptContext(shots=data.shots))
    assert prompt.shots == ((TASK.template.user.format(text=data.shots[0].payload["text"]), "E1165, I10, E785"),)
    letter = data.items[0].payload["text"]
    assert prompt.user.startswith("=== DISCHARGE LETTER ===\n" + letter)
    assert "=== END OF DISCHARGE LETTER ===" in prompt.user
    text = render_base(prompt)
    assert "ICD-10 Codes: E1165, I10, E785" in text and text.endswith("ICD-10 Codes: ")
    assert text.count("=== DISCHARGE LETTER ===") == 2 and "Community-acquired pneumonia" in text
    assert TASK.stop == ("\n=== DISCHARGE LETTER ===",)


def test_prompt_override_and_settings(tmp_path: Path) -> None:
    override = tmp_path / "p.toml"
    override.write_text('user = "Letter:\\n{text}\\nCodes only."\n', encoding="utf-8")
    task = replace(TASK, template=load_override(override, TASK.template))
    assert task.prompt(ITEM, PromptContext()).user == "Letter:\n...\nCodes only."
    assert task.settings()["prompt_sha256"] != TASK.settings()["prompt_sha256"]
    settings = TASK.settings()
    assert settings["icd_table"] == ICD_TABLE_VERSION and settings["max_tokens"] == 200
    assert settings["reference_quirks"] is False
    assert replace(TASK, reference_quirks=True).settings()["reference_quirks"] is True


# --- scoring (gold: I214, I2510, E119, I10) ------------------------------------------------------------


def test_perfect_answer() -> None:
    score = TASK.score(ITEM, gen("I21.4, I25.10, E11.9, I10"))
    assert score.outcome == "scored" and score.extracted == "I214, I2510, E119, I10"
    assert score.gold == "I214, I2510, E119, I10"
    assert score.metrics == {"em_precision": 1.0, "em_recall": 1.0, "em_f1": 1.0, "ap_precision": 1.0,
                             "ap_recall": 1.0, "ap_f1": 1.0, "valid_ratio": 1.0}


def test_partial_answer_with_duplicates_and_an_invalid_code() -> None:
    output = "I21.4, I21.4, I25.10, E11.65, I10.9"
    # distinct predictions I214 I2510 E1165 I109: 2 of 4 exact; categories I21 I25 E11 I10 all right;
    # I109 is not in the table -> 3 of 4 valid
    score = TASK.score(ITEM, gen(output))
    assert score.outcome == "scored" and "5 code(s) read (4 distinct), 4 reference code(s)" in score.detail
    assert score.metrics == pytest.approx({"em_precision": 0.5, "em_recall": 0.5, "em_f1": 0.5,
                                           "ap_precision": 1.0, "ap_recall": 1.0, "ap_f1": 1.0,
                                           "valid_ratio": 0.75})
    # reference quirk: the list of 5 counts, the repeated I214 twice: P = 3/5, R = 2/4, valid = 4/5
    quirky = replace(TASK, reference_quirks=True).score(ITEM, gen(output))
    assert quirky.metrics == pytest.approx({"em_precision": 0.6, "em_recall": 0.5, "em_f1": 0.6 / 1.1,
                                            "ap_precision": 1.0, "ap_recall": 1.0, "ap_f1": 1.0,
                                            "valid_ratio": 0.8})


def test_reference_cleanup_cuts_self_prompting_to_the_end_of_the_line() -> None:
    score = TASK.score(ITEM, gen("E11.9\nYou are an AI assistant. I10, I21.4\nthen I25.10"))
    # "You are an AI ... I21.4" is removed; the next line stays: E119, I2510 -> P 1, R 2/4
    assert score.extracted == "E119, I2510"
    assert score.metrics["em_precision"] == 1.0 and score.metrics["em_recall"] == 0.5
    assert score.metrics["em_f1"] == pytest.approx(2 / 3)
    score = TASK.score(ITEM, gen("E11.9 [INST] I10"))
    assert score.extracted == "E119"
    assert score.metrics["ap_f1"] == pytest.approx(2 * 0.25 / 1.25)  # categories: P 1/1, R 1/4


def test_no_code_is_unparseable_and_scores_zero() -> None:
    for output in ("", "The patient has diabetes.", "e11.9, i10", "U07.1"):
        score = TASK.score(ITEM, gen(output))
        assert score.outcome == "unparseable" and score.extracted is None
        assert set(score.metrics.values()) == {0.0} and score.detail.startswith("no ICD-10 code")


def test_truncated_output_is_flagged_but_still_scored() -> None:
    score = TASK.score(ITEM, gen("I10, I10, I10, I10, I", finish="length"))
    assert score.outcome == "truncated" and "budget ran out" in score.detail
    assert score.metrics["em_precision"] == 1.0 and score.metrics["em_recall"] == 0.25
    assert TASK.score(ITEM, gen("", finish="length")).outcome == "truncated"


def test_empty_reference_scores_zero_recall() -> None:
    item = Item(id="e", payload={"text": "...", "codes": []})
    score = TASK.score(item, gen("I10"))
    assert score.outcome == "scored" and "reference lists no code" in score.detail
    assert score.metrics["em_recall"] == 0.0 and score.metrics["em_f1"] == 0.0
    assert score.metrics["valid_ratio"] == 1.0


# --- end to end -----------------------------------------------------------------------------------------


@pytest.mark.e2e
def test_real_run_on_the_sample(tmp_path: Path, in_repo: Path) -> None:
    db = tmp_path / "icd.db"
    invoke("run", "--model", "smollm2-135m-instruct", "--task", "medisumcode", "--limit", "2", "--limit-mode", "first",
           "--db", str(db))
    records = rows(db, """select i.item_id, g.prompt, g.finish_reason, g.completion_tokens, s.outcome, s.gold,
                                 s.metrics, e.settings
                          from generations g join items i on i.key = g.item join scores s on s.generation_id = g.id
                          join evaluations e on e.key = g.evaluation order by i.item_id""")
    assert [r[0] for r in records] == ["demo-02", "demo-03"]  # demo-01 is the shot, never evaluated
    for _, prompt, finish, tokens, outcome, gold, metrics, settings in records:
        assert "<|im_start|>assistant\nICD-10 Codes: E1165, I10, E785" in prompt  # the shot, chat-rendered
        assert prompt.endswith("<|im_start|>assistant\nICD-10 Codes: ")
        assert finish in ("stop", "length") and 0 <= tokens <= 200
        assert outcome in ("scored", "unparseable", "truncated")
        values = json.loads(metrics)
        assert set(values) == set(TASK.metric_names) and all(0.0 <= v <= 1.0 for v in values.values())
        assert json.loads(settings)["task"]["icd_table"] == ICD_TABLE_VERSION
    assert records[1][5] == "I214, I2510, E119, I10"
