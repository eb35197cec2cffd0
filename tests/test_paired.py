"""Paired analysis on hand-built databases: what is paired (same data, same task settings, newest matching pair),
what is refused, alignment by item, unpaired items reported, test selection, and the statistics that decide."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medbench_local.analysis.paired import compare_pairs
from medbench_local.analysis.pairing import pair_task
from medbench_local.engine.base import Generation, ModelInfo
from medbench_local.store import open_database, writer
from medbench_local.store.queries import EvaluationRecord
from medbench_local.tasks.base import Item, Score

from .conftest import invoke

ItemRow = tuple[str, dict[str, float]]


def _info(model_id: str, sha: str) -> ModelInfo:
    return ModelInfo(model_id=model_id, path=f"/m/{model_id}.gguf", sha256=sha * 64, size_bytes=1,
                     prompt_mode="base", chat_template=None, chat_template_sha256=None)


@dataclass
class Ev:
    """One evaluation to store: its items and, optionally, data (name, fingerprint) and task settings."""

    model: str
    task: str
    items: list[ItemRow]
    data: tuple[str, str] | None = None
    task_settings: dict[str, Any] | None = None
    key: str = ""
    golds: list[str] | None = None
    outcomes: list[str] | None = None


def _store(db_path: Path, evaluations: list[Ev]) -> None:
    """Store evaluations in the given order (later = newer)."""
    db = open_database(db_path)
    writer.start_run(db, "run1", {"command": [], "packages": {}, "settings": {}})
    writer.record_pair(db, "p", "bio", "gen", "")
    for n, ev in enumerate(evaluations):
        info = _info(ev.model, "a" if ev.model == "bio" else "b")
        writer.record_model(db, info)
        key = ev.key or f"{ev.model}-{ev.task}-{n}"
        settings: dict[str, Any] = {}
        if ev.data is not None or ev.task_settings is not None:
            settings["task"] = {**(ev.task_settings or {"task": ev.task}),
                                **({"data_sha256": ev.data[1]} if ev.data else {})}
        if ev.data is not None:
            settings["data"] = {"path": f"/data/{ev.data[0]}", "name": ev.data[0]}
        writer.record_evaluation(db, key, info, "biomedical" if ev.model == "bio" else "general", ev.task,
                                 settings, "run1")
        for i, (item_id, metrics) in enumerate(ev.items):
            outcome = ("correct" if metrics.get("accuracy") == 1.0 else "wrong") if "accuracy" in metrics \
                else "scored"
            if ev.outcomes:
                outcome = ev.outcomes[i]
            gold = ev.golds[i] if ev.golds else None
            generation = Generation("prompt", "out", 1, 0, 1, "stop", 0.1)
            writer.record_item(db, evaluation=key, run_id="run1", task=ev.task,
                               item=Item(item_id, {"q": item_id}), generation=generation,
                               score=Score(outcome, gold=gold, metrics=metrics))
    db.conn.close()


def _fill(db_path: Path, results: dict[str, dict[str, list[ItemRow]]]) -> None:
    """results: model -> task -> [(item id, metrics)]"""
    _store(db_path, [Ev(model, task, items) for model, tasks in results.items() for task, items in tasks.items()])


def acc(*values: int, prefix: str = "i") -> list[ItemRow]:
    return [(f"{prefix}{n}", {"accuracy": float(v)}) for n, v in enumerate(values)]


def _report(db_path: Path, **kwargs: Any):  # type: ignore[no-untyped-def]
    db = open_database(db_path, create=False)
    try:
        (report,) = compare_pairs(db, resamples=300, **kwargs)
    finally:
        db.conn.close()
    return report


def test_alignment_missing_items_and_tests(tmp_path: Path) -> None:
    _fill(tmp_path / "r.db", {
        "bio": {"mcq": acc(1, 1, 1, 0, 0, 1), "summ": [("s1", {"rougeL": 0.5}), ("s2", {"rougeL": 0.7})]},
        "gen": {"mcq": acc(1, 0, 0, 0, 1), "summ": [("s1", {"rougeL": 0.2}), ("s2", {"rougeL": 0.4})]},
    })
    report = _report(tmp_path / "r.db")
    rows = {(r.task, r.metric): r for r in report.rows}
    mcq = rows[("mcq", "accuracy")]
    assert mcq.n == 5 and mcq.missing == {"biomedical": 0, "general": 1}  # i5 only has a biomedical result
    assert mcq.test == "mcnemar-exact" and mcq.discordant == (2, 1)
    assert mcq.biomedical.estimate == pytest.approx(3 / 5) and mcq.general.estimate == pytest.approx(2 / 5)
    assert mcq.delta.estimate == pytest.approx(1 / 5)
    summ = rows[("summ", "rougeL")]
    assert summ.test == "paired-permutation" and summ.discordant is None
    assert summ.delta.estimate == pytest.approx(0.3) and summ.p_value == pytest.approx(0.5)  # 2 of 4 sign flips
    assert all(r.p_adjusted >= r.p_value for r in report.rows)
    assert summ.outcomes["biomedical"]["scored"] == 2


def test_task_run_by_one_model_only_is_reported(tmp_path: Path) -> None:
    _fill(tmp_path / "r.db", {"bio": {"mcq": [("i0", {"accuracy": 1.0})]}, "gen": {}})
    report = _report(tmp_path / "r.db")
    assert report.rows == [] and report.unpaired_tasks == {"mcq": "general"}


# ------------------------------------------------------------------------------ significance follows the test


def test_zero_vs_four_discordant_of_fifty_is_not_coloured_significant(tmp_path: Path) -> None:
    # issue 9: 50 paired items, 0 vs 4 discordant; the bootstrap CI [-16, -2] was coloured, the exact p is 0.125
    bio = [1] * 30 + [0] * 20
    gen = [1] * 30 + [1] * 4 + [0] * 16
    _fill(tmp_path / "r.db", {"bio": {"mcq": acc(*bio)}, "gen": {"mcq": acc(*gen)}})
    (row,) = _report(tmp_path / "r.db").rows
    assert row.discordant == (0, 4) and row.p_value == 0.125
    assert row.delta.low < 0 < row.delta.high
    assert row.ahead is None and row.to_json()["significant"] is False


def test_ahead_follows_the_holm_adjusted_test_not_the_interval(tmp_path: Path) -> None:
    # 9 vs 1 discordant of 20 on each of three tasks: raw p = 0.0215 each, Holm-adjusted 3 x 0.0215 = 0.064.
    bio, gen = [1] * 9 + [0] + [1] * 5 + [0] * 5, [0] * 9 + [1] + [1] * 5 + [0] * 5
    tasks = {t: acc(*bio) for t in ("t1", "t2", "t3")}
    _fill(tmp_path / "r.db", {"bio": tasks, "gen": {t: acc(*gen) for t in tasks}})
    rows = _report(tmp_path / "r.db").rows
    assert len(rows) == 3
    for row in rows:
        assert row.p_value == pytest.approx(22 / 1024) and row.p_adjusted == pytest.approx(66 / 1024)
        assert row.delta.low > 0  # the unadjusted interval agrees with the unadjusted test ...
        assert row.ahead is None  # ... but the family-wise test decides the colour
    _fill(tmp_path / "one.db", {"bio": {"t1": acc(*bio)}, "gen": {"t1": acc(*gen)}})
    (single,) = _report(tmp_path / "one.db").rows
    assert single.p_adjusted < 0.05 and single.ahead == "biomedical"


# ------------------------------------------------------------------------------ the pairing rule


def test_an_evaluation_on_edited_data_is_not_paired_with_the_original(tmp_path: Path) -> None:
    # issue 9: the biomedical model re-ran on an edited file; the newest evaluations shared 4 of 51 item ids
    original = acc(*([1] * 30 + [0] * 21))
    edited = acc(*([1] * 51), prefix="e")[:47] + original[:4]
    _store(tmp_path / "r.db", [
        Ev("bio", "jama", original, ("cases.csv", "1" * 64)), Ev("gen", "jama", acc(*([0] * 51)), ("cases.csv", "1" * 64)),
        Ev("bio", "jama", edited, ("cases_edited.csv", "2" * 64)),
    ])
    report = _report(tmp_path / "r.db")
    (row,) = report.rows
    assert row.n == 51 and row.data is not None and row.data.name == "cases.csv" and row.missing == {
        "biomedical": 0, "general": 0}
    (note,) = report.notes
    assert "cases_edited.csv 22222222" in note.text and "only the biomedical model" in note.text
    assert not note.refused


def test_two_data_files_of_one_task_are_two_row_groups(tmp_path: Path) -> None:
    _store(tmp_path / "r.db", [
        Ev("bio", "jama", acc(1, 1, 0), ("a.csv", "a" * 64)), Ev("gen", "jama", acc(0, 1, 0), ("a.csv", "a" * 64)),
        Ev("bio", "jama", acc(1, 0, prefix="x"), ("b.csv", "b" * 64)),
        Ev("gen", "jama", acc(1, 1, prefix="x"), ("b.csv", "b" * 64)),
    ])
    report = _report(tmp_path / "r.db")
    groups = {r.data.name: r for r in report.rows if r.data}
    assert set(groups) == {"a.csv", "b.csv"} and report.notes == []
    assert groups["a.csv"].n == 3 and groups["b.csv"].n == 2
    assert [r.data.name for r in report.rows if r.data] == ["b.csv", "a.csv"]  # newest data first
    assert groups["b.csv"].group_label == "jama · b.csv bbbbbbbb"


def test_only_different_data_is_refused_unless_asked(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    _store(db, [Ev("bio", "jama", acc(1, 1, 1, 0), ("mine.csv", "c" * 64)),
                Ev("gen", "jama", acc(0, 1, 0, 0), ("theirs.csv", "d" * 64))])
    report = _report(db)
    assert report.rows == []
    (note,) = report.notes
    assert note.refused and "different data" in note.text and "--allow-different-data" in note.text
    assert "mine.csv cccccccc" in note.text and "theirs.csv dddddddd" in note.text
    (row,) = _report(db, allow_different_data=True).rows
    assert row.different_data and row.n == 4 and row.general_data is not None
    assert row.general_data.name == "theirs.csv"
    assert row.to_json()["different_data"] == {"general": {"name": "theirs.csv", "sha256": "d" * 64}}

    result = invoke("compare", "--db", str(db), expect=1)
    assert "different data" in result.output and "--allow-different-data" in result.output
    assert "Traceback" not in result.output
    shown = " ".join(invoke("compare", "--db", str(db), "--allow-different-data").output.split())
    assert "different" in shown and "theirs.csv" in shown
    markdown = invoke("compare", "--db", str(db), "--allow-different-data", "--markdown").output
    assert "| jama | accuracy | 4 |" in markdown
    assert "| mine.csv cccccccc ≠ theirs.csv dddddddd (**different data**) |" in markdown
    assert invoke("compare", "--db", str(db), "--json", expect=1).exit_code == 1


def test_same_data_but_different_task_settings_is_a_note_naming_the_keys(tmp_path: Path) -> None:
    plain = {"task": "mednli", "prompt_sha256": "p", "reference_quirks": False}
    _store(tmp_path / "r.db", [
        Ev("bio", "mednli", acc(1, 0), ("mli.jsonl", "e" * 64), {**plain, "reference_quirks": True}),
        Ev("gen", "mednli", acc(1, 1), ("mli.jsonl", "e" * 64), plain)])
    report = _report(tmp_path / "r.db")
    assert report.rows == []
    (note,) = report.notes
    assert note.refused and "reference_quirks" in note.text and "prompt_sha256" not in note.text


def test_newest_matching_pair_wins_and_the_others_are_superseded(tmp_path: Path) -> None:
    old = {"task": "jama", "extraction": "v1"}
    new = {"task": "jama", "extraction": "v2"}
    data = ("cases.csv", "f" * 64)
    _store(tmp_path / "r.db", [
        Ev("bio", "jama", acc(1, 1, 0), data, old, key="bio-v1"), Ev("gen", "jama", acc(0, 0, 0), data, old, key="gen-v1"),
        Ev("bio", "jama", acc(1, 0, 0), data, new, key="bio-v2"), Ev("gen", "jama", acc(1, 1, 1), data, new, key="gen-v2"),
    ])
    report = _report(tmp_path / "r.db")
    (row,) = report.rows
    assert row.evaluations == {"biomedical": "bio-v2", "general": "gen-v2"}
    assert row.superseded == (("bio-v1", "gen-v1"),) and report.notes == []
    payload = row.to_json()
    assert payload["superseded"] == [{"biomedical": "bio-v1", "general": "gen-v1"}]
    assert payload["data"] == {"name": "cases.csv", "sha256": "f" * 64}
    for key in ("pair", "task", "metric", "n", "biomedical", "general", "delta", "test", "p_value", "p_adjusted",
                "discordant", "missing", "outcomes"):  # the documented keys stay
        assert key in payload


def test_scoring_modes_are_separate_row_groups_never_paired_across(tmp_path: Path) -> None:
    """run --scoring both stores a generated and a log-likelihood evaluation of the same items: each mode is a
    row group of its own (not 'newest wins'), and a model is never compared with the other in another mode."""
    generate = {"task": "jama", "extraction": "v2"}
    loglik = {**generate, "scoring_mode": "loglik", "loglik_target": "letter"}
    data = ("cases.csv", "f" * 64)
    _store(tmp_path / "r.db", [
        Ev("bio", "jama", acc(1, 0, 0), data, generate, key="bio-gen"),
        Ev("gen", "jama", acc(0, 0, 1), data, generate, key="gen-gen"),
        Ev("bio", "jama", acc(1, 1, 1), data, loglik, key="bio-ll"),
        Ev("gen", "jama", acc(1, 1, 0), data, loglik, key="gen-ll"),
        Ev("bio", "nejm", acc(1, 1), data, loglik, key="bio-ll-only"),  # general ran nejm only by generation
        Ev("gen", "nejm", acc(0, 1), data, generate, key="gen-gen-only"),
    ])
    report = _report(tmp_path / "r.db")
    jama = [r for r in report.rows if r.task == "jama"]
    assert [(r.data.mode, r.evaluations["biomedical"], r.evaluations["general"]) for r in jama] == [
        ("generate", "bio-gen", "gen-gen"), ("loglik", "bio-ll", "gen-ll")]
    assert all(r.superseded == () for r in jama)
    assert jama[1].data.short.endswith("· loglik") and jama[1].to_json()["scoring_mode"] == "loglik"
    assert not [r for r in report.rows if r.task == "nejm"]  # across modes: never paired


def test_legacy_evaluations_without_data_settings_still_pair(tmp_path: Path) -> None:
    _fill(tmp_path / "r.db", {"bio": {"mcq": acc(1, 0)}, "gen": {"mcq": acc(0, 0)}})
    (row,) = _report(tmp_path / "r.db").rows
    assert row.data is not None and row.data.sha256 is None and row.n == 2


# ------------------------------------------------------------------------------ warnings and truncation


def test_degenerate_gold_labels_are_flagged(tmp_path: Path) -> None:
    golds = ["A"] * 19 + ["B"]
    db = tmp_path / "r.db"
    _store(db, [Ev("bio", "pubmedqa", acc(*([1] * 20)), golds=golds), Ev("gen", "pubmedqa", acc(*([1] * 19 + [0])),
                                                                       golds=golds)])
    (row,) = _report(db).rows
    assert row.gold_labels == {"A": 19, "B": 1} and row.degenerate_gold == ("A", 0.95)
    assert row.to_json()["gold_labels"]["degenerate"] is True
    output = invoke("compare", "--db", str(db)).output
    assert "95% of the 20 compared items have the gold answer 'A'" in " ".join(output.split())
    balanced = tmp_path / "b.db"
    _store(balanced, [Ev("bio", "pubmedqa", acc(1, 0, 1), golds=["A", "B", "C"]),
                      Ev("gen", "pubmedqa", acc(1, 1, 1), golds=["A", "B", "C"])])
    (row,) = _report(balanced).rows
    assert row.degenerate_gold is None and row.to_json()["gold_labels"]["degenerate"] is False


def test_truncation_rate_is_reported_per_side(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    rouge = [(f"s{n}", {"rougeL": 0.1 * n}) for n in range(4)]
    _store(db, [Ev("bio", "meqsum", rouge, outcomes=["truncated", "scored", "scored", "scored"]),
                Ev("gen", "meqsum", rouge, outcomes=["truncated", "truncated", "scored", "unparseable"])])
    (row,) = _report(db).rows
    assert row.truncated_rate == {"biomedical": 0.25, "general": 0.5}
    payload = row.to_json()
    assert payload["biomedical"]["truncated_rate"] == 0.25 and payload["general"]["truncated_rate"] == 0.5
    table = invoke("compare", "--db", str(db)).output
    assert "25%/50%" in table and "keeps the ROUGE/F1" in " ".join(table.split())
    markdown = invoke("compare", "--db", str(db), "--markdown").output
    assert "25% / 50%" in markdown and "keeps the ROUGE/F1 of the text written before the cut" in markdown


# ------------------------------------------------------------------------------ the rule as a property


def _record(model: str, n: int, data: int, variant: int, time: int) -> EvaluationRecord:
    return EvaluationRecord(key=f"{model}{n}", model_id=model, task="t",
                            settings={"task": {"data_sha256": f"d{data}", "prompt": f"v{variant}"}},
                            recency=(f"{time:04d}", ""), data_path=f"/x/file{data}.csv")


records = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 1), st.integers(0, 50)), max_size=6)


@settings(max_examples=300, deadline=None)
@given(records, records, st.booleans())
def test_pairing_rule_properties(bio_spec: list[tuple[int, int, int]], gen_spec: list[tuple[int, int, int]],
                                 allow: bool) -> None:
    bio = [_record("b", n, *spec) for n, spec in enumerate(bio_spec)]
    gen = [_record("g", n, *spec) for n, spec in enumerate(gen_spec)]
    groups, notes = pair_task("t", bio, gen, allow_different_data=allow)
    by_key = {r.key: r for r in bio + gen}
    chosen = [k for g in groups for k in (g.biomedical, g.general)]
    assert len(chosen) == len(set(chosen))  # no evaluation shown twice
    same_data = [g for g in groups if not g.different_data]
    assert len({g.data.sha256 for g in same_data}) == len(same_data)  # one row group per data
    for group in same_data:
        b, g = by_key[group.biomedical], by_key[group.general]
        assert b.data_sha256 == g.data_sha256 == group.data.sha256 and b.task_settings == g.task_settings
        matching = [(x, y) for x in bio for y in gen if x.data_sha256 == b.data_sha256
                    and x.task_settings == y.task_settings]
        newest = max(max(x.recency, y.recency) for x, y in matching)
        assert max(b.recency, g.recency) == newest  # the newest matching pair
        assert len(group.superseded) == len(matching) - 1
    for data in {r.data_sha256 for r in bio} & {r.data_sha256 for r in gen}:
        has_match = any(x.task_settings == y.task_settings for x in bio for y in gen
                        if x.data_sha256 == y.data_sha256 == data)
        shown = any(g.data.sha256 == data for g in same_data)
        assert shown == has_match
        if not has_match:
            assert any(n.refused and f"file{data[1]}.csv" in n.text and "prompt" in n.text for n in notes)
    cross = [g for g in groups if g.different_data]
    assert len(cross) <= 1 and (allow or not cross)
    only_bio = {r.data_sha256 for r in bio} - {r.data_sha256 for r in gen}
    only_gen = {r.data_sha256 for r in gen} - {r.data_sha256 for r in bio}
    refused_cross = [n for n in notes if "different data" in n.text]
    assert len(refused_cross) + len(cross) == (1 if only_bio and only_gen else 0)
    assert all(n.refused for n in refused_cross)


def test_compare_json_rows_carry_data_and_superseded(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    _store(db, [Ev("bio", "jama", acc(1, 1), ("c.csv", "9" * 64)), Ev("gen", "jama", acc(0, 1), ("c.csv", "9" * 64))])
    (row,) = json.loads(invoke("compare", "--db", str(db), "--json", "--resamples", "200").output)
    assert row["data"] == {"name": "c.csv", "sha256": "9" * 64} and row["superseded"] == []
    assert row["different_data"] is None and row["biomedical"]["truncated_rate"] == 0.0


def test_show_report_and_export_use_the_same_pairing(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    old, new = {"task": "jama", "extraction": "v1"}, {"task": "jama", "extraction": "v2"}
    _store(db, [
        Ev("bio", "jama", acc(1, 1, 0), ("a.csv", "a" * 64), old, key="bio-a-v1"),
        Ev("gen", "jama", acc(0, 1, 0), ("a.csv", "a" * 64), old, key="gen-a-v1"),
        Ev("bio", "jama", acc(1, 0, 0), ("a.csv", "a" * 64), new, key="bio-a-v2"),
        Ev("gen", "jama", acc(0, 0, 1), ("a.csv", "a" * 64), new, key="gen-a-v2"),
        Ev("bio", "jama", acc(1, 1, prefix="x"), ("b.csv", "b" * 64), new, key="bio-b"),
        Ev("gen", "jama", acc(0, 1, prefix="x"), ("b.csv", "b" * 64), new, key="gen-b"),
        Ev("bio", "jama", acc(1, prefix="y"), ("c.csv", "c" * 64), new, key="bio-c"),  # no general counterpart
    ])
    newest = " ".join(invoke("show", "--db", str(db), "--pair", "p", "--task", "jama").output.split())
    assert "on b.csv bbbbbbbb: 1 item where the models disagree" in newest and "item x0" in newest
    assert "also paired on: a.csv aaaaaaaa" in newest
    chosen = " ".join(invoke("show", "--db", str(db), "--pair", "p", "--task", "jama", "--data", "a.csv").output.split())
    assert "on a.csv aaaaaaaa: 2 items" in chosen  # v2 pair: i0 (1 vs 0) and i2 (0 vs 1), not the v1 pair
    missing = invoke("show", "--db", str(db), "--pair", "p", "--task", "jama", "--data", "nope.csv", expect=1)
    assert "no paired results on data 'nope.csv'" in missing.output

    exported = {r["evaluation"]: r for r in map(json.loads, invoke(
        "export", "--db", str(db), "--aggregate", "--format", "jsonl").output.splitlines())}
    assert exported["bio-a-v2"]["pairing"] == "compared" and exported["bio-a-v2"]["paired_with"] == "gen-a-v2"
    assert exported["gen-a-v1"]["pairing"] == "superseded" and exported["gen-a-v1"]["paired_with"] == "bio-a-v1"
    assert exported["bio-c"]["pairing"] == "not compared" and exported["bio-c"]["data_name"] == "c.csv"
    assert exported["gen-b"]["data_sha256"] == "b" * 64 and exported["gen-b"]["pair"] == "p"

    report = _report(db)
    compared = {(r.data.name, r.evaluations["biomedical"], r.evaluations["general"]) for r in report.rows if r.data}
    assert compared == {("a.csv", "bio-a-v2", "gen-a-v2"), ("b.csv", "bio-b", "gen-b")}
    html_path = tmp_path / "report.html"
    invoke("report", "--db", str(db), "-o", str(html_path), "--resamples", "200")
    html = html_path.read_text(encoding="utf-8")
    assert "a.csv aaaaaaaa" in html and "b.csv bbbbbbbb" in html and "superseded" in html
    assert "only the biomedical model has results on this data" in html
    assert "keeps the ROUGE/F1 of the text written before the cut" in html


# ------------------------------------------------------------------------------ the verdict in words


@pytest.mark.parametrize("p,text", [(0.0, "<0.001"), (1e-12, "<0.001"), (0.000999, "<0.001"), (0.001, "0.001"),
                                    (0.0123, "0.012"), (0.04999, "0.050"), (0.5, "0.500"), (1.0, "1.000")])
def test_p_is_written_with_three_decimals_or_as_below_0001(p: float, text: str) -> None:
    from medbench_local.analysis.stats import format_p

    assert format_p(p) == text


# (biomedical right, general right) per item: the biomedical model far ahead, the general one far ahead, a tie
VERDICT_CASES = {"biomedical ahead": ([1] * 30 + [0] * 2, [0] * 30 + [1] * 2),
                 "general ahead": ([0] * 30 + [1] * 2, [1] * 30 + [0] * 2),
                 "no significant difference": ([1, 0] * 10, [0, 1] * 10)}


@pytest.mark.parametrize("words", list(VERDICT_CASES))
def test_the_verdict_is_in_words_in_the_table_markdown_and_json(tmp_path: Path, words: str) -> None:
    bio, gen = VERDICT_CASES[words]
    db = tmp_path / "r.db"
    _store(db, [Ev("bio", "jama", acc(*bio)), Ev("gen", "jama", acc(*gen))])
    (row,) = _report(db).rows
    assert row.verdict == words and (row.ahead is None) == (words == "no significant difference")
    (payload,) = json.loads(invoke("compare", "--db", str(db), "--json", "--resamples", "200").output)
    assert payload["verdict"] == words
    table = " ".join(invoke("compare", "--db", str(db), "--resamples", "200").output.split())
    markdown = invoke("compare", "--db", str(db), "--resamples", "200", "--markdown").output
    from medbench_local.analysis.stats import format_p

    holm = format_p(payload["p_adjusted"])
    assert words in table and f"(Holm p {holm})" in table  # two lines of one cell
    assert f"{words} (Holm p {holm})" in markdown
    assert "0.0000" not in table + markdown
    summary = {"biomedical ahead": "biomedical ahead on the one row (jama accuracy)",
               "general ahead": "general ahead on the one row (jama accuracy)",
               "no significant difference": "no significant difference on the one row"}[words]
    assert summary in table and summary in markdown
    exported = [json.loads(line) for line in invoke("export", "--db", str(db), "--aggregate", "--format", "jsonl",
                                                    "--resamples", "200").output.splitlines()]
    (delta,) = [r for r in exported if r["row"] == "delta"]
    assert delta["delta_accuracy_verdict"] == words and delta["delta_accuracy_p_adjusted"] == payload["p_adjusted"]


def test_the_methods_footer_is_printed_once_per_output(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    _store(db, [Ev("bio", "jama", acc(1, 0, 1)), Ev("gen", "jama", acc(0, 0, 1)),
                Ev("bio", "mednli", acc(1, 1)), Ev("gen", "mednli", acc(0, 1))])
    for args in ([], ["--markdown"]):
        output = " ".join(invoke("compare", "--db", str(db), "--resamples", "200", *args).output.split())
        assert output.count("Verdict: Holm-adjusted p < 0.05") == 1, args
