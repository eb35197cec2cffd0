"""Where the read commands take their pairs from (analysis/pair_sources.py), names they do not know, and --task
comma lists. End to end with the real demo models, run one at a time into one database."""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medbench_local.analysis.pair_sources import CONFIG, DATABASE, PairSource, combine
from medbench_local.cli.common import split_commas
from medbench_local.config import Config, PairSpec
from medbench_local.runner.plan import pairs_to_record

from .conftest import REPO, copy_db, invoke, rows

BIO, GEN = "smollm2-135m-instruct", "gemma3-270m"


# ------------------------------------------------------------------------------------------ pure rules

def test_the_database_wins_over_models_toml_and_says_so() -> None:
    db = [PairSource("demo", "a", "b", origin=DATABASE)]
    config = [PairSource("demo", "a", "c", origin=CONFIG), PairSource("other", "x", "y", origin=CONFIG),
              PairSource("same-members", "a", "b", origin=CONFIG)]
    combined, conflicts = combine(db, config)
    assert [(p.name, p.members, p.origin) for p in combined] == [("demo", ("a", "b"), DATABASE),
                                                                 ("other", ("x", "y"), CONFIG)]
    assert list(conflicts) == ["demo"] and "a vs b" in conflicts["demo"] and "--models a c" in conflicts["demo"]


def test_identical_definitions_are_no_conflict() -> None:
    combined, conflicts = combine([PairSource("demo", "a", "b")], [PairSource("demo", "a", "b", origin=CONFIG)])
    assert len(combined) == 1 and not conflicts


names = st.text(alphabet="abcdefghij_-0123456789", min_size=1, max_size=6)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(names, min_size=1, max_size=4), min_size=1, max_size=4), st.sampled_from(["", " "]))
def test_comma_lists_equal_repeated_options(groups: list[list[str]], space: str) -> None:
    given_values = tuple(f",{space}".join(group) for group in groups)
    expected = tuple(dict.fromkeys(name for group in groups for name in group))
    assert split_commas(None, None, given_values) == expected


@pytest.mark.parametrize("value", ["a,,b", ",a", "a,", " , "])
def test_an_empty_name_in_a_comma_list_is_refused(value: str) -> None:
    with pytest.raises(click.BadParameter, match="empty name"):
        split_commas(None, None, (value,))


def test_run_model_records_the_config_pairs_that_contain_it_but_never_redefines_one() -> None:
    config = Config(Path("m.toml"), {}, {"p1": PairSpec("p1", "a", "b"), "p2": PairSpec("p2", "c", "a"),
                                        "p3": PairSpec("p3", "c", "d"), "p4": PairSpec("p4", "a", "e")})
    chosen = pairs_to_record(config, (), ("a",), [{"name": "p4", "biomedical": "a", "general": "zzz"}])
    assert [p.name for p in chosen] == ["p1", "p2"]


# ------------------------------------------------------------------------------------------ end to end

@pytest.fixture(scope="module")
def separate_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The 70B workflow in miniature: each demo model run on its own into one database (--task as a comma list)."""
    db = tmp_path_factory.mktemp("separate") / "study.db"
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        invoke("run", "--model", BIO, "--task", "jama,nejm", "--limit", "2", "--db", str(db))
        invoke("run", "--model", GEN, "--task", "jama", "--task", "nejm", "--limit", "2", "--db", str(db))
        yield db
    finally:
        os.chdir(cwd)


@pytest.fixture
def unrecorded_db(separate_db: Path, tmp_path: Path) -> Path:
    """The same results without any recorded pair (as a database written before 'run --model' recorded them)."""
    db = copy_db(separate_db, tmp_path / "unrecorded.db")
    with sqlite3.connect(db) as conn:
        conn.execute("delete from pairs")
    conn.close()
    return db


def _json(*args: str) -> list[dict]:
    return json.loads(invoke("compare", *args, "--json", "--resamples", "200").output)


@pytest.mark.e2e
def test_models_run_one_at_a_time_pair_up_from_models_toml(separate_db: Path, unrecorded_db: Path,
                                                           in_repo: Path) -> None:
    assert rows(separate_db, "select name, biomedical, general from pairs") == [("demo", BIO, GEN)]
    assert {r[0] for r in rows(separate_db, "select distinct task from evaluations")} == {"jama", "nejm"}
    for db in (separate_db, unrecorded_db):
        compared = _json("--db", str(db))
        assert {(r["pair"], r["task"], r["biomedical"]["model"], r["general"]["model"]) for r in compared} == \
            {("demo", task, BIO, GEN) for task in ("jama", "nejm")}
        assert all(r["n"] == 2 for r in compared)
    table = " ".join(invoke("compare", "--db", str(unrecorded_db), "--task", "jama,nejm").output.split())
    assert "demo" in table and BIO in table and GEN in table
    # without a models.toml that pairs them, nothing pairs the unrecorded results; an explicit config must exist
    lone = unrecorded_db.parent / "absent.toml"
    other = unrecorded_db.parent / "models.toml"
    other.write_text((REPO / "models.toml").read_text().split("[pairs.demo]")[0])
    result = invoke("compare", "--db", str(unrecorded_db), "--config", str(other), expect=1)
    assert "no paired results" in result.output
    missing = invoke("compare", "--db", str(unrecorded_db), "--config", str(lone), expect=1)
    assert "file not found" in missing.output and len(missing.output.strip().splitlines()) == 1


@pytest.mark.e2e
def test_any_two_models_pair_ad_hoc(unrecorded_db: Path, in_repo: Path) -> None:
    reversed_pair = _json("--db", str(unrecorded_db), "--models", GEN, BIO, "--task", "jama")
    assert {(r["pair"], r["biomedical"]["model"], r["general"]["model"]) for r in reversed_pair} == \
        {(f"{GEN} vs {BIO}", GEN, BIO)}
    forward = _json("--db", str(unrecorded_db), "--models", BIO, GEN, "--task", "jama")
    assert {r["pair"] for r in forward} == {"demo"}  # the models.toml pair with exactly these members
    straight = {r["metric"]: r for r in forward}
    flipped = {r["metric"]: r for r in reversed_pair}
    assert straight["accuracy"]["delta"]["score"] == pytest.approx(-flipped["accuracy"]["delta"]["score"])
    shown = invoke("show", "--db", str(unrecorded_db), "--models", GEN, BIO, "--task", "jama,nejm").output
    assert f"{GEN} vs {BIO} · jama" in shown and f"{GEN} vs {BIO} · nejm" in shown
    out = unrecorded_db.parent / "adhoc.html"
    invoke("report", "--db", str(unrecorded_db), "--models", GEN, BIO, "-o", str(out), "--resamples", "200")
    assert f"{GEN} vs {BIO}" in out.read_text(encoding="utf-8")
    reproduced = json.loads(invoke("reproduce", "--db", str(unrecorded_db), "--models", BIO, GEN, "--as",
                                   f"{BIO}=Llama3-OpenBioLLM-8B", "--as", f"{GEN}=Meta-Llama-3-8B-Instruct",
                                   "--resamples", "200", "--json").output)
    assert {f["pair"] for f in reproduced["findings"]} == {"demo"}


# Every read command x every kind of name it takes: one line naming what exists, exit 1.
UNKNOWN = {
    "compare pair": (["compare", "--pair", "nope"], "nope", "demo"),
    "compare task": (["compare", "--task", "nope"], "nope", "mednli"),
    "compare task without results": (["compare", "--task", "jama,mednli"], "mednli", "jama"),
    "compare models": (["compare", "--models", "nope", GEN], "nope", BIO),
    "show pair": (["show", "--pair", "nope", "--task", "jama"], "nope", "demo"),
    "show task": (["show", "--pair", "demo", "--task", "nope"], "nope", "mednli"),
    "show task without results": (["show", "--pair", "demo", "--task", "medqa"], "medqa", "jama"),
    "show models": (["show", "--models", BIO, "nope", "--task", "jama"], "nope", GEN),
    "show model": (["show", "--model", "nope", "--task", "jama"], "nope", BIO),
    "show metric": (["show", "--pair", "demo", "--task", "jama", "--metric", "nope"], "nope", "accuracy"),
    "report pair": (["report", "--pair", "nope"], "nope", "demo"),
    "report models": (["report", "--models", "nope", GEN], "nope", BIO),
    "reproduce pair": (["reproduce", "--pair", "nope"], "nope", "demo"),
    "reproduce task": (["reproduce", "--task", "nope"], "nope", "jama"),
    "reproduce models": (["reproduce", "--models", BIO, "nope"], "nope", GEN),
    "export pair": (["export", "--pair", "nope"], "nope", "demo"),
    "export task": (["export", "--task", "nope"], "nope", "jama"),
    "export model": (["export", "--model", f"{BIO},nope"], "nope", GEN),
    "export models": (["export", "--models", "nope", GEN], "nope", BIO),
    "export aggregate pair": (["export", "--aggregate", "--pair", "nope"], "nope", "demo"),
    "export aggregate task": (["export", "--aggregate", "--task", "nope"], "nope", "jama"),
    "export aggregate model": (["export", "--aggregate", "--model", "nope"], "nope", BIO),
}


@pytest.mark.e2e
@pytest.mark.parametrize("case", list(UNKNOWN), ids=list(UNKNOWN))
def test_an_unknown_name_is_one_line_naming_what_exists(case: str, separate_db: Path, in_repo: Path,
                                                        tmp_path: Path) -> None:
    args, unknown, existing = UNKNOWN[case]
    extra = ["-o", str(tmp_path / "r.html")] if args[0] == "report" else []
    result = invoke(*args, "--db", str(separate_db), *extra, expect=1)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.output
    assert f"'{unknown}'" in lines[0] and existing in lines[0]
    assert not (tmp_path / "r.html").exists()


@pytest.mark.e2e
def test_run_checks_every_task_name_before_anything_else(tmp_path: Path, in_repo: Path) -> None:
    db = tmp_path / "r.db"
    result = invoke("run", "--model", BIO, "--task", "jama,nope", "--data", "jama=/no/such/file.csv",
                    "--db", str(db), expect=1)
    assert result.output.strip().splitlines() == [
        result.output.strip()] and "unknown task 'nope'" in result.output
    assert not db.exists()
    empty = invoke("run", "--model", BIO, "--task", "jama,,nejm", "--db", str(db), expect=2)
    assert "empty name" in empty.output and not db.exists()


# ------------------------------------------------------------------------------------------ export

def _csv(*args: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(invoke("export", *args).output, newline="")))


@pytest.mark.e2e
def test_export_has_a_column_per_metric_pair_and_role_and_filters(separate_db: Path, in_repo: Path) -> None:
    items = _csv("--db", str(separate_db), "--omit-inputs")
    assert len(items) == 8  # 2 models x 2 tasks x 2 items, each compared once (pair demo)
    assert {(r["pair"], r["role"], r["model_id"]) for r in items} == {("demo", "biomedical", BIO),
                                                                      ("demo", "general", GEN)}
    assert "metrics" not in items[0] and all(r["metric_accuracy"] in ("0.0", "1.0") for r in items)
    assert not any(cell.lstrip().startswith(("{", "[")) for r in items for cell in r.values())
    stored = sorted(json.loads(m)["accuracy"] for (m,) in rows(separate_db, "select metrics from scores"))
    assert sorted(float(r["metric_accuracy"]) for r in items) == stored
    jama = _csv("--db", str(separate_db), "--task", "jama", "--model", GEN)
    assert {(r["task"], r["model_id"]) for r in jama} == {("jama", GEN)} and len(jama) == 2
    adhoc = _csv("--db", str(separate_db), "--models", GEN, BIO, "--task", "nejm")
    assert {(r["pair"], r["role"], r["model_id"]) for r in adhoc} == {
        (f"{GEN} vs {BIO}", "biomedical", GEN), (f"{GEN} vs {BIO}", "general", BIO)}


@pytest.mark.e2e
def test_export_aggregate_carries_compares_intervals(separate_db: Path, in_repo: Path) -> None:
    compared = _json("--db", str(separate_db))
    exported = [json.loads(line) for line in invoke(
        "export", "--db", str(separate_db), "--aggregate", "--format", "jsonl", "--resamples", "200").output
        .splitlines()]
    assert len({frozenset(r) for r in exported}) == 1  # every row has every column (null where absent)
    for row in compared:
        models = {r["role"]: r for r in exported if r["row"] == "model" and r["pair"] == row["pair"]
                  and r["task"] == row["task"]}
        (delta,) = [r for r in exported if r["row"] == "delta" and r["pair"] == row["pair"] and r["task"] == row["task"]]
        metric = row["metric"]
        for role in ("biomedical", "general"):
            assert models[role][f"metric_{metric}"] == row[role]["score"]
            assert (models[role][f"metric_{metric}_ci_low"], models[role][f"metric_{metric}_ci_high"]) == \
                (row[role]["ci_low"], row[role]["ci_high"])
            assert models[role]["evaluation"] == row[role]["evaluation"]
        assert (delta[f"delta_{metric}"], delta[f"delta_{metric}_ci_low"], delta[f"delta_{metric}_ci_high"]) == \
            (row["delta"]["score"], row["delta"]["ci_low"], row["delta"]["ci_high"])
        assert (delta[f"delta_{metric}_p"], delta[f"delta_{metric}_p_adjusted"]) == (row["p_value"],
                                                                                     row["p_adjusted"])
        assert delta[f"delta_{metric}_verdict"] == row["verdict"]
    evaluations = [r for r in exported if r["row"] == "evaluation"]
    assert len(evaluations) == 4 and all(r["pairing"] == "compared" and r["pair"] == "demo" for r in evaluations)
    table = _csv("--db", str(separate_db), "--aggregate", "--resamples", "200", "--task", "nejm")
    assert {r["task"] for r in table} == {"nejm"} and {r["row"] for r in table} == {"model", "delta", "evaluation"}
