"""reproduce: published numbers ship with the package and line up with ours; the reference's aggregation
quirk is reproduced only on request."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medbench_local.analysis.published import lookup, published_values
from medbench_local.engine.base import Generation, ModelInfo
from medbench_local.store import open_database, writer
from medbench_local.store.queries import summarize_evaluation
from medbench_local.tasks.base import Item, Score

from .conftest import SHARED_DATA, invoke, rows


def test_published_numbers_are_shipped_and_mapped() -> None:
    llama = lookup("llama3-8b-instruct")
    assert llama[("mednli", "accuracy")].value == 74.08 and llama[("nejm", "accuracy")].value == 64.3
    assert lookup("openbiollm-8b")[("longhealth", "task3")].value == 1.55  # the hallucination probe
    assert lookup("openbiollm-70b")[("jama", "accuracy")].value == 66.4
    assert lookup("mine", {"mine": "BioMistral-7B"})[("meqsum", "rougeL")].value == 25.89
    assert len({v.study_name for v in published_values()}) == 26 + 4


def test_shipped_copy_matches_the_reference_files() -> None:
    reference = SHARED_DATA.parent / "reference"
    if not reference.exists():
        pytest.skip("../shared is absent")
    import medbench_local

    shipped = Path(medbench_local.__file__).parent / "data"
    for name in ("clue_june2024.csv", "case_challenges_abstract.csv"):
        assert (shipped / name).read_text() == (reference / name).read_text()


@pytest.mark.e2e
def test_reproduce_table_on_the_demo_with_aliases(demo_db: Path) -> None:
    args = ["reproduce", "--db", str(demo_db), "--resamples", "300", "--as",
            "smollm2-135m-instruct=Llama3-OpenBioLLM-8B", "--as", "gemma3-270m=Meta-Llama-3-8B-Instruct"]
    data = json.loads(invoke(*args, "--json").output)
    values = {(v["model"], v["task"]): v for v in data["values"]}
    assert set(values) == {("smollm2-135m-instruct", "nejm"), ("gemma3-270m", "nejm")}  # no JAMA for 8B
    bio = values[("smollm2-135m-instruct", "nejm")]
    (correct,), = rows(demo_db, "select sum(s.outcome = 'correct') from scores s join evaluations e "
                                "on e.key = s.evaluation where e.model_id = 'smollm2-135m-instruct' "
                                "and e.task = 'nejm'")
    assert bio["published"] == 30.0 and bio["ours"] == pytest.approx(10 * correct)
    assert bio["difference"] == pytest.approx(bio["ours"] - 30.0)
    (finding,) = data["findings"]
    assert finding["pair"] == "demo" and finding["task"] == "nejm"
    assert finding["published_delta"] == pytest.approx(30.0 - 64.3)
    # the verdict rule itself is checked on data built for each verdict:
    # test_the_verdict_is_the_one_that_follows_from_the_data
    assert "Ours vs published" in invoke(*args).output
    assert "No results of the study's models" in invoke("reproduce", "--db", str(demo_db)).output


VERDICT_DATA = {  # (biomedical outcomes, general outcomes) on 30 NEJM items; published: biomedical 34.3 behind
    "reproduced": (["wrong"] * 30, ["correct"] * 30),
    "not reproduced": (["correct"] * 30, ["wrong"] * 30),
    "same direction, not significant": (["correct"] * 29 + ["wrong"], ["correct"] * 30),
}


@pytest.mark.parametrize("verdict", list(VERDICT_DATA))
def test_the_verdict_is_the_one_that_follows_from_the_data(verdict: str, tmp_path: Path) -> None:
    from .synthetic import Side, build_pair_db

    bio, gen = VERDICT_DATA[verdict]
    db = build_pair_db(tmp_path / "r.db", "p", Side("bio", [(o, "x") for o in bio]),
                       Side("gen", [(o, "x") for o in gen]), task="nejm")
    data = json.loads(invoke("reproduce", "--db", str(db), "--resamples", "1000", "--json", "--as",
                             "bio=Llama3-OpenBioLLM-8B", "--as", "gen=Meta-Llama-3-8B-Instruct").output)
    (finding,) = data["findings"]
    assert finding["published_delta"] == pytest.approx(30.0 - 64.3)
    assert finding["our_delta"] == pytest.approx(100 * (bio.count("correct") - gen.count("correct")) / 30)
    assert finding["verdict"] == verdict


def test_reference_quirk_double_counts_the_first_item_only_when_asked(tmp_path: Path) -> None:
    db = open_database(tmp_path / "r.db")
    writer.start_run(db, "run", {"command": [], "packages": {}, "settings": {}})
    info = ModelInfo("m", "/m.gguf", "c" * 64, 1, "base", None, None)
    writer.record_model(db, info)
    for key, quirks in (("plain", False), ("quirky", True)):
        writer.record_evaluation(db, key, info, "general", "mednli", {"task": {"reference_quirks": quirks}}, "run")
        for n, value in enumerate((1.0, 0.0, 0.0, 0.0)):
            writer.record_item(db, evaluation=key, run_id="run", task="mednli", item=Item(f"i{n}", {"n": n}),
                               generation=Generation("p", "o", 1, 0, 1, "stop", 0.1),
                               score=Score("correct" if value else "wrong", metrics={"accuracy": value}))
    assert summarize_evaluation(db, "plain").metrics["accuracy"] == pytest.approx(1 / 4)
    assert summarize_evaluation(db, "quirky").metrics["accuracy"] == pytest.approx(2 / 5)


def test_clue_levels_are_computed_from_our_task_scores(tmp_path: Path) -> None:
    from medbench_local.analysis.reproduce import value_rows

    published = lookup("llama3-8b-instruct")
    db = open_database(tmp_path / "r.db")
    writer.start_run(db, "run", {"command": [], "packages": {}, "settings": {}})
    info = ModelInfo("m", "/m.gguf", "d" * 64, 1, "chat", None, None)
    writer.record_model(db, info)
    by_task: dict[str, dict[str, float]] = {}
    for (task, metric), value in published.items():
        if task not in ("clue", "nejm", "jama"):
            by_task.setdefault(task, {})[metric] = value.value / 100
    for task, metrics in by_task.items():  # one item per task carrying the published per-task values
        writer.record_evaluation(db, task, info, "general", task, {}, "run")
        writer.record_item(db, evaluation=task, run_id="run", task=task, item=Item("i", {"t": task}),
                           generation=Generation("p", "o", 1, 0, 1, "stop", 0.1), score=Score("scored", metrics=metrics))
    levels = {r["metric"]: r for r in value_rows(db, {"m": "Meta-Llama-3-8B-Instruct"}) if r["task"] == "clue"}
    assert levels["level1"]["ours"] == pytest.approx(48.37, abs=0.006)  # CLUE June 2024, Meta-Llama-3-8B-Instruct
    assert levels["level2"]["ours"] == pytest.approx(40.61, abs=0.006)
    assert abs(levels["level1"]["difference"]) < 0.006


def _study_db(path: Path, bio_right: list[int], gen_right: list[int], task: str = "nejm") -> Path:
    """A pair of two study models (OpenBioLLM-8B vs Llama-3-8B-Instruct) with per-item right/wrong results."""
    db = open_database(path)
    writer.start_run(db, "run", {"command": [], "packages": {}, "settings": {}})
    writer.record_pair(db, "openbiollm-8b", "openbiollm-8b", "llama3-8b-instruct", "")
    for model, sha, values in (("openbiollm-8b", "e", bio_right), ("llama3-8b-instruct", "f", gen_right)):
        info = ModelInfo(model, f"/{model}.gguf", sha * 64, 1, "chat", None, None)
        writer.record_model(db, info)
        writer.record_evaluation(db, model, info, "biomedical", task,
                                 {"task": {"task": task, "data_sha256": "1" * 64},
                                  "data": {"path": "/d/cases.jsonl", "name": "cases.jsonl"}}, "run")
        for n, value in enumerate(values):
            writer.record_item(db, evaluation=model, run_id="run", task=task, item=Item(f"i{n}", {"n": n}),
                               generation=Generation("p", "o", 1, 0, 1, "stop", 0.1),
                               score=Score("correct" if value else "wrong", gold="A", metrics={"accuracy": float(value)}))
    db.conn.close()
    return path


def test_a_finding_is_reproduced_only_when_the_adjusted_test_is_significant(tmp_path: Path) -> None:
    from medbench_local.analysis.reproduce import findings

    # published: OpenBioLLM-8B 30.0 vs Llama-3-8B 64.3 on NEJM (biomedical behind). Ours: 0 vs 4 discordant of
    # 50, same direction; the bootstrap CI excluded 0 and this was "reproduced", but the exact p is 0.125.
    weak = _study_db(tmp_path / "weak.db", [1] * 30 + [0] * 20, [1] * 34 + [0] * 16)
    db = open_database(weak, create=False)
    (finding,) = findings(db, {}, resamples=200)
    assert finding["our_delta"] == pytest.approx(-8.0) and finding["p_adjusted"] == 0.125
    assert finding["verdict"] == "same direction, not significant"
    assert finding["data"] == {"name": "cases.jsonl", "sha256": "1" * 64}
    strong = _study_db(tmp_path / "strong.db", [1] * 30 + [0] * 20, [1] * 42 + [0] * 8)  # 0 vs 12
    db = open_database(strong, create=False)
    (finding,) = findings(db, {}, resamples=200)
    assert finding["p_adjusted"] < 0.05 and finding["verdict"] == "reproduced"
    opposite = _study_db(tmp_path / "opposite.db", [1] * 42 + [0] * 8, [1] * 30 + [0] * 20)
    (finding,) = findings(open_database(opposite, create=False), {}, resamples=200)
    assert finding["verdict"] == "not reproduced"


@pytest.mark.parametrize(("alias", "message"), [
    ("openbiollm-8b=OpenBioLLM-9000", "unknown study name 'OpenBioLLM-9000'; valid names: "),
    ("my-bio=Llama3-OpenBioLLM-8B", "no results of a model 'my-bio'"),
    ("missing-equals", "expects MODEL_ID=STUDY_NAME"),
])
def test_as_refuses_unknown_study_names_and_model_ids(tmp_path: Path, alias: str, message: str) -> None:
    db = _study_db(tmp_path / "r.db", [1, 0], [0, 0])
    result = invoke("reproduce", "--db", str(db), "--as", alias, expect=1)
    assert message in result.output and "Traceback" not in result.output
    if "valid names" in message:
        assert "Llama3-OpenBioLLM-8B" in result.output and "Meta-Llama-3-8B-Instruct" in result.output
    if "my-bio" in alias:
        assert "models with results: llama3-8b-instruct, openbiollm-8b" in result.output


def test_a_task_without_published_values_says_so(tmp_path: Path) -> None:
    # Llama3-OpenBioLLM-8B has no published JAMA accuracy (the abstract quotes JAMA for the 70B models only)
    db = _study_db(tmp_path / "r.db", [1, 0, 1], [0, 0, 1], task="jama")
    output = " ".join(invoke("reproduce", "--db", str(db)).output.split())
    assert "No results of the study's models" not in output
    assert "openbiollm-8b · jama: no published values for this task" in output
    data = json.loads(invoke("reproduce", "--db", str(db), "--json").output)
    assert data["values"] == [] and {e["model"] for e in data["unpublished"]} == {"openbiollm-8b",
                                                                                   "llama3-8b-instruct"}
