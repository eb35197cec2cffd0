"""``medbench-local merge``: databases of one evaluation (shards) combine into one, conflicts are refused with the
item named and nothing written, merging is idempotent, and foreign or newer databases are refused.

Unit level with synthetic databases written through the real writer (fast, any shape), then end to end: three
real ``run --shard K/3`` of the demo pair merged equal one unsharded run item by item, and ``compare`` agrees.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medbench_local.config import LocalSource, ModelSpec, load_config
from medbench_local.engine.base import GenerateRequest, Generation, ModelInfo
from medbench_local.engine.identity import identity as engine_identity
from medbench_local.errors import StoreError, UserError
from medbench_local.gates.files import command_scope
from medbench_local.prompting import Prompt
from medbench_local.prompting.prompt_format import render_base
from medbench_local.runner import ModelRole, RunOptions, Shard, execute, load_tasks
from medbench_local.store import close_database, open_database, writer
from medbench_local.store.merge import MERGED_TABLES
from medbench_local.store.merge import merge_databases as _merge_databases
from medbench_local.store.migrations import MIGRATIONS
from medbench_local.tasks import get_task
from medbench_local.tasks.base import Item, Score

from .conftest import REPO, copy_db, invoke, rows

# ---------------------------------------------------------------------------------------------------------
# synthetic databases: two models, two tasks, a few items each; outputs are a pure function of model and item

MODELS = {"bio": ("b" * 64, "biomedical"), "gen": ("c" * 64, "general")}
TASKS = ("jama", "nejm")
ALL = [(model, task, f"{task}-{n:02d}") for model in MODELS for task in TASKS for n in range(5)]


def answer(model: str, item_id: str) -> str:
    return "ABCD"[int(hashlib.sha256(f"{model}/{item_id}".encode()).hexdigest(), 16) % 4]


def eval_key(model: str, task: str) -> str:
    return hashlib.sha256(f"{model}\0{task}".encode()).hexdigest()


def info(model: str, path: str = "") -> ModelInfo:
    sha, _ = MODELS[model]
    return ModelInfo(model_id=model, path=path or f"/models/{model}.gguf", sha256=sha, size_bytes=1,
                     prompt_mode="base", chat_template=None, chat_template_sha256=None, metadata={"arch": "x"})


def build(path: Path, results: Iterable[tuple[str, str, str]], *, run_id: str, status: str = "completed",
          tamper: Callable[[str, str, str], dict[str, Any]] | None = None, model_path: str = "",
          build_version: str = "0.3.36") -> Path:
    """A results database holding ``results`` (model, task, item id), as one run ``run_id`` would write it.
    ``tamper(model, task, item)`` may override generation/score fields for chosen items."""
    db = open_database(path)
    writer.start_run(db, run_id, {"command": ["medbench-local", "run"], "settings": {"shard": None}})
    writer.record_pair(db, "p", "bio", "gen", "a pair")
    for model, task, item_id in results:
        writer.record_model(db, info(model, model_path))
        key = eval_key(model, task + ("" if build_version == "0.3.36" else build_version))
        writer.record_evaluation(db, key, info(model, model_path), MODELS[model][1], task,
                                 {"task": {"prompt_sha256": "p" * 64}, "engine": {"n_threads": len(run_id)},
                                  "identity": {"llama_cpp_python": build_version}}, run_id)
        fields = {"output": f" {answer(model, item_id)}.", "extracted": answer(model, item_id), "gold": "A",
                  "outcome": "correct" if answer(model, item_id) == "A" else "wrong",
                  "metrics": {"accuracy": 1.0 if answer(model, item_id) == "A" else 0.0},
                  "seconds": 0.1 * len(run_id)}
        fields.update(tamper(model, task, item_id) if tamper else {})
        generation = Generation(prompt_text=f"Q {item_id}", output=fields["output"], prompt_tokens=3,
                                truncated_tokens=0, completion_tokens=2, finish_reason="stop",
                                seconds=fields["seconds"])
        score = Score(fields["outcome"], fields["extracted"], fields["gold"], "letter", "", fields["metrics"])
        writer.record_item(db, evaluation=key, run_id=run_id, task=task,
                           item=Item(item_id, {"q": item_id}, source=f"{task}.jsonl:1"),
                           generation=generation, score=score)
    writer.finish_run(db, run_id, status)
    close_database(db)
    return path


def merge_databases(out: Path, inputs: list[Path], **options: Any) -> Any:
    """The merge as one command does it: in a command scope of its own (the files gate remembers the inputs of
    one command; databases this test built before are not inputs of the merge)."""
    with command_scope():
        return _merge_databases(out, inputs, **options)


def results(path: Path) -> list[tuple]:
    """Everything that decides a reported number, per item (ids and timings excluded)."""
    return sorted(rows(path, """
        select e.key, e.model_id, e.role, e.task, i.item_id, i.content_sha256, g.prompt, g.output, g.finish_reason,
               g.prompt_tokens, g.completion_tokens, s.outcome, s.extracted, s.gold, s.method, s.metrics
        from generations g join scores s on s.generation_id = g.id join evaluations e on e.key = g.evaluation
        join items i on i.key = g.item"""))


def dump(path: Path) -> list[str]:
    with closing(sqlite3.connect(path)) as conn:
        return list(conn.iterdump())


@contextmanager
def editing(path: Path) -> Iterator[sqlite3.Connection]:
    """Edit a database by hand (commit, then close: no connection left holding its WAL open)."""
    conn = sqlite3.connect(path)
    try:
        with conn:
            yield conn
    finally:
        conn.close()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def healthy(path: Path) -> bool:
    return rows(path, "pragma integrity_check") == [("ok",)] and rows(path, "pragma foreign_key_check") == [] \
        and rows(path, "select count(*) from generations g left join scores s on s.generation_id = g.id "
                       "where s.generation_id is null") == [(0,)]


# ---------------------------------------------------------------------------------------------------------
# merging equals the whole, whatever the split


@settings(max_examples=12, deadline=None)
@given(split=st.lists(st.sets(st.integers(min_value=0, max_value=2), min_size=1), min_size=len(ALL),
                      max_size=len(ALL)),
       order=st.permutations([0, 1, 2]))
def test_any_split_merges_back_into_the_whole(split: list[set[int]], order: list[int]) -> None:
    """Each result goes to one or more of three databases (overlaps hold identical results); merged in any
    order, they hold exactly what one database with everything holds."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        whole = build(folder / "whole.db", ALL, run_id="whole")
        parts = [build(folder / f"part{k}.db", [r for r, where in zip(ALL, split) if k in where], run_id=f"run{k}")
                 for k in range(3)]
        before = [digest(p) for p in parts]
        out = folder / "out.db"
        report = merge_databases(out, [parts[k] for k in order])
        assert results(out) == results(whole)
        assert report.added == len(ALL) and report.created
        assert sorted(r[0] for r in rows(out, "select id from runs")) == ["run0", "run1", "run2"]
        assert healthy(out) and [digest(p) for p in parts] == before  # inputs are only read
        snapshot = dump(out)
        again = merge_databases(out, parts)  # idempotent
        assert again.added == 0 and dump(out) == snapshot


def test_merging_into_an_existing_database_adds_only_what_is_new(tmp_path: Path) -> None:
    first = build(tmp_path / "a.db", ALL[:12], run_id="a")
    second = build(tmp_path / "b.db", ALL[8:], run_id="b")  # overlaps a.db in four identical items
    out = copy_db(first, tmp_path / "out.db")
    report = merge_databases(out, [second])
    assert not report.created and report.inputs[0].added == len(ALL) - 12 and report.inputs[0].identical == 4
    assert results(out) == results(build(tmp_path / "whole.db", ALL, run_id="w"))
    snapshot = dump(out)
    assert merge_databases(out, [first, second]).added == 0 and dump(out) == snapshot


def test_generation_ids_are_remapped_and_scores_follow(tmp_path: Path) -> None:
    a = build(tmp_path / "a.db", ALL[:5], run_id="a")
    b = build(tmp_path / "b.db", ALL[5:10], run_id="b")  # the same generation ids 1..5 as a.db
    out = tmp_path / "out.db"
    merge_databases(out, [a, b])
    ids = rows(out, "select id from generations order by id")
    assert len(ids) == 10 == len({i for (i,) in ids})
    assert rows(out, "select count(*) from scores s join generations g on g.id = s.generation_id "
                     "where s.item = g.item and s.evaluation = g.evaluation") == [(10,)]


def test_what_may_differ_between_copies_of_one_result_is_not_a_conflict(tmp_path: Path) -> None:
    """Timings, run ids, model paths and evaluation settings such as threads differ between machines."""
    a = build(tmp_path / "a.db", ALL, run_id="run-a", model_path="/nfs/a/bio.gguf")
    b = build(tmp_path / "b.db", ALL, run_id="run-bbbb", model_path="/scratch/b/bio.gguf")
    out = tmp_path / "out.db"
    report = merge_databases(out, [a, b])
    assert report.inputs[1].identical == len(ALL) and results(out) == results(a)
    assert rows(out, "select distinct path from models where sha256 = ?", "b" * 64) == [("/nfs/a/bio.gguf",)]


def test_metrics_only_one_copy_has_are_united(tmp_path: Path) -> None:
    """``rescore`` ran on one shard only: its extra metric values are kept, and the note says to rescore."""
    a = build(tmp_path / "a.db", ALL, run_id="a")
    b = build(tmp_path / "b.db", ALL, run_id="b",
              tamper=lambda m, t, i: {"metrics": {"accuracy": 1.0 if answer(m, i) == "A" else 0.0,
                                                  "bertscore_f1": 0.5}})
    with editing(b) as conn:
        conn.execute("insert into metric_runs values (?, 'bertscore', '{\"model\": \"x\"}', 3, 't')",
                     (eval_key("bio", "jama"),))
    out = tmp_path / "out.db"
    report = merge_databases(out, [a, b])
    assert report.inputs[1].extended == len(ALL)
    assert all("bertscore_f1" in json.loads(m) for (m,) in rows(out, "select metrics from scores"))
    assert any("bertscore" in note and "rescore" in note for note in report.notes)
    snapshot = dump(out)
    merge_databases(out, [a, b])
    assert dump(out) == snapshot


def test_shards_made_with_different_settings_are_kept_apart_and_said_so(tmp_path: Path) -> None:
    """A node with another llama.cpp build computes other evaluation keys: nothing pools silently."""
    a = build(tmp_path / "a.db", ALL[:5], run_id="a")
    b = build(tmp_path / "b.db", ALL[:5], run_id="b", build_version="0.3.37")
    report = merge_databases(tmp_path / "out.db", [a, b])
    assert report.added == 10 and rows(tmp_path / "out.db", "select count(*) from evaluations") == [(2,)]
    (note,) = [n for n in report.notes if "different keys" in n]
    assert "bio·jama" in note and "identity.llama_cpp_python" in note and "compare reads the latest" in note


@pytest.mark.parametrize("error_first", [True, False], ids=["error merged first", "result merged first"])
def test_a_result_replaces_an_error_never_the_reverse(tmp_path: Path, error_first: bool) -> None:
    """A shard rerun with --retry-errors has results where its first run stored errors: no conflict."""
    failing = {"output": None, "outcome": "error", "extracted": None, "gold": "A", "metrics": {"accuracy": 0.0}}
    broken = build(tmp_path / "broken.db", ALL, run_id="first-try",
                   tamper=lambda m, t, i: failing if i in ("jama-01", "nejm-02") else {})
    fixed = build(tmp_path / "fixed.db", ALL, run_id="retry")
    both_failed = build(tmp_path / "also-broken.db", ALL[:3], run_id="third",
                        tamper=lambda m, t, i: {**failing, "gold": "B"})
    out = tmp_path / "out.db"
    report = merge_databases(out, [broken, fixed, both_failed] if error_first else [fixed, broken, both_failed])
    assert results(out) == results(fixed)
    assert report.inputs[1].retried == (4 if error_first else 0)
    snapshot = dump(out)
    merge_databases(out, [both_failed, broken, fixed])
    assert dump(out) == snapshot
    out2 = tmp_path / "out2.db"
    merge_databases(out2, [broken, both_failed])  # two errors for one item: the first copy stays
    assert rows(out2, "select count(*) from scores where outcome = 'error'") == [(4,)]


def test_a_run_still_running_in_a_copy_is_completed_by_the_finished_one(tmp_path: Path) -> None:
    early = build(tmp_path / "early.db", ALL[:4], run_id="same-run", status="running")
    late = build(tmp_path / "late.db", ALL, run_id="same-run")
    out = tmp_path / "out.db"
    report = merge_databases(out, [early, late])
    assert report.inputs[0].unfinished_runs == ["same-run"]
    assert rows(out, "select status from runs") == [("completed",)]
    snapshot = dump(out)
    merge_databases(out, [early])  # an older snapshot never turns it back
    assert dump(out) == snapshot


def test_out_ends_owner_only(tmp_path: Path) -> None:
    a = build(tmp_path / "a.db", ALL[:3], run_id="a")
    out = tmp_path / "new" / "out.db"
    with pytest.raises(UserError, match="folder .*new does not exist"):  # the files gate: no folder made
        merge_databases(out, [a])
    out.parent.mkdir()
    merge_databases(out, [a])
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    existing = copy_db(a, tmp_path / "existing.db")
    os.chmod(existing, 0o644)
    merge_databases(existing, [build(tmp_path / "b.db", ALL[3:6], run_id="b")])
    assert stat.S_IMODE(existing.stat().st_mode) == 0o600
    assert sorted(os.listdir(tmp_path / "new")) == ["out.db"]  # no temporary files left beside it


def test_columns_a_later_migration_adds_are_carried(tmp_path: Path) -> None:
    """The merge copies columns by name from the table metadata: a new column needs no change in merge.py."""
    a = build(tmp_path / "a.db", ALL[:4], run_id="a")
    out = build(tmp_path / "out.db", ALL[4:6], run_id="o")
    for path in (a, out):
        with editing(path) as conn:
            conn.execute("alter table generations add column energy_joules real")
            conn.execute("alter table runs add column host text")
            conn.execute("update generations set energy_joules = 1.5")
            conn.execute("update runs set host = 'node7'")
    merge_databases(out, [a])
    assert rows(out, "select count(*) from generations where energy_joules = 1.5") == [(6,)]
    assert rows(out, "select host from runs where id = 'a'") == [("node7",)]


def test_every_table_of_the_schema_has_a_merge_rule(tmp_path: Path) -> None:
    db = open_database(tmp_path / "r.db")
    tables = set(db.table_names()) - {"_migrations"}
    close_database(db)
    assert tables <= set(MERGED_TABLES), f"add a merge rule to store/merge.py for {tables - set(MERGED_TABLES)}"


def test_a_table_without_a_merge_rule_is_refused_rather_than_dropped(tmp_path: Path) -> None:
    a = build(tmp_path / "a.db", ALL[:2], run_id="a")
    out = build(tmp_path / "out.db", ALL[2:4], run_id="o")
    with editing(out) as conn:
        conn.execute("create table annotations (item text, note text)")
    before = digest(out)
    with pytest.raises(StoreError, match="annotations.*no merge rule"):
        merge_databases(out, [a])
    assert digest(out) == before


def test_an_input_from_an_older_version_is_read_through_an_upgraded_copy(tmp_path: Path) -> None:
    # written by a version that knew only the first migration: today's writer fills it, then everything the
    # later migrations add is taken away again (their views, table and column) along with their records
    old = build(tmp_path / "old.db", ALL[:6], run_id="old")
    with editing(old) as conn:
        conn.executescript("drop view item_results; drop view paired_items; drop table metric_runs; "
                           "drop table contamination_overlap; drop table contamination_corpora; "
                           "drop table contamination_signals; drop table contamination_probes; "
                           "drop table retrievals; "
                           "alter table generations drop column prompt_tokens_evaluated; "
                           "alter table generations drop column server_requests; "
                           "alter table generations drop column server_tokens; "
                           "drop index idx_generations_run_id; delete from _migrations where name != 'm001_initial'")
    assert rows(old, "select name from _migrations") == [("m001_initial",)]
    before = digest(old)
    out = tmp_path / "out.db"
    report = merge_databases(out, [old, build(tmp_path / "new.db", ALL[6:], run_id="new")])
    assert report.inputs[0].upgraded and not report.inputs[1].upgraded
    assert len(results(out)) == len(ALL) and digest(old) == before
    assert [n for (n,) in rows(out, "select name from _migrations order by rowid")] == [n for n, _ in MIGRATIONS]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # the private copy is gone


# ---------------------------------------------------------------------------------------------------------
# conflicts: refused with the item named, nothing written (new OUT not created, existing OUT byte-identical)


@dataclass
class Conflict:
    name: str
    tamper: Callable[[Path], None]  # edits the second database
    expect: str                     # in the message


def _sql(statement: str, *params: object) -> Callable[[Path], None]:
    def run(path: Path) -> None:
        with editing(path) as conn:
            assert conn.execute(statement, params).rowcount >= 1
    return run


TARGET = "(select g.id from generations g join items i on i.key = g.item where i.item_id = 'nejm-03' and " \
         "g.evaluation = '" + eval_key("gen", "nejm") + "')"
CONFLICTS = [
    Conflict("output", _sql(f"update generations set output = ' D. (changed)' where id = {TARGET}"),
             "nejm item 'nejm-03' of model 'gen'.*different output"),
    Conflict("outcome", _sql(f"update scores set outcome = 'unparseable' where generation_id = {TARGET}"),
             "'nejm-03'.*different outcome"),
    Conflict("extracted", _sql(f"update scores set extracted = 'Z' where generation_id = {TARGET}"),
             "'nejm-03'.*different extracted"),
    Conflict("gold", _sql(f"update scores set gold = 'Z' where generation_id = {TARGET}"),
             "'nejm-03'.*different gold"),
    Conflict("method", _sql(f"update scores set method = 'fuzzy' where generation_id = {TARGET}"),
             "'nejm-03'.*different method"),
    Conflict("metric value", _sql(f"update scores set metrics = '{{\"accuracy\": 0.5}}' where generation_id = "
                                  f"{TARGET}"), "'nejm-03'.*different metric accuracy"),
    Conflict("pair members", _sql("update pairs set general = 'other'"), "pair 'p'"),
    Conflict("evaluation model id", _sql("update evaluations set model_id = 'renamed' where key = ?",
                                         eval_key("bio", "jama")), "evaluation .*model_id 'renamed'"),
    Conflict("metric_runs identity", _sql("update metric_runs set identity = '{\"model\": \"other\"}'"),
             "bertscore of evaluation .*different weights"),
]


@pytest.mark.parametrize("case", CONFLICTS, ids=[c.name for c in CONFLICTS])
@pytest.mark.parametrize("out_exists", [False, True], ids=["new OUT", "existing OUT"])
def test_a_conflict_is_refused_with_the_item_named_and_nothing_written(case: Conflict, out_exists: bool,
                                                                       tmp_path: Path) -> None:
    first = build(tmp_path / "a.db", ALL, run_id="a")
    second = build(tmp_path / "b.db", ALL, run_id="b")
    for path in (first, second):
        with editing(path) as conn:
            conn.execute("insert into metric_runs values (?, 'bertscore', '{\"model\": \"x\"}', 10, 't')",
                         (eval_key("bio", "jama"),))
    case.tamper(second)
    extra = build(tmp_path / "c.db", ALL[:3], run_id="c")
    out = tmp_path / "out.db"
    if out_exists:
        build(out, ALL[:2], run_id="o")
        before = digest(out)
    result = invoke("merge", str(out), str(extra), str(first), str(second), expect=1)
    assert result.output.count("\n") == 1 and "Traceback" not in result.output, result.output
    message = result.output
    assert "nothing was written" in message and str(second) in message
    assert re.search(case.expect, message), message
    if out_exists:
        assert digest(out) == before
    else:
        assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


# ---------------------------------------------------------------------------------------------------------
# bad arguments and foreign or newer databases: one line, exit 1, nothing created or changed


def _newer(path: Path) -> Path:
    build(path, ALL[:2], run_id="n")
    with editing(path) as conn:
        conn.execute("insert into _migrations values ('m999_from_the_future', 'x')")
    return path


def _foreign(path: Path) -> Path:
    with editing(path) as conn:
        conn.execute("create table photos (id integer, name text)")
        conn.execute("insert into photos values (1, 'x')")
    return path


def _text(path: Path) -> Path:
    path.write_text("id,case\n1,not a database\n")
    return path


BAD_INPUTS: list[tuple[str, Callable[[Path], list[str]], str]] = [
    ("no inputs", lambda d: [str(d / "out.db")], "at least one database"),
    ("missing input", lambda d: [str(d / "out.db"), str(d / "missing.db")], "missing.db: no such"),
    ("input is text", lambda d: [str(d / "out.db"), str(_text(d / "cases.csv"))], "not a SQLite"),
    ("input is someone else's SQLite", lambda d: [str(d / "out.db"), str(_foreign(d / "photos.db"))],
     "not a medbench-local results database"),
    ("input from a newer version", lambda d: [str(d / "out.db"), str(_newer(d / "newer.db"))],
     "newer medbench-local.*m999_from_the_future"),
    ("input listed twice", lambda d: [str(d / "out.db"), str(build(d / "a.db", ALL[:2], run_id="a")),
                                      str(d / "a.db")], "listed twice"),
    ("input listed twice via a link", lambda d: [str(d / "out.db"), str(build(d / "a.db", ALL[:2], run_id="a")),
                                                 str(_link(d / "a.db", d / "link.db"))], "listed twice"),
    ("OUT as input", lambda d: [str(build(d / "out.db", ALL[:2], run_id="o")), str(d / "out.db")],
     "refusing to overwrite an input"),
    ("OUT as input via another path", lambda d: [str(build(d / "out.db", ALL[:2], run_id="o")),
                                                 str(d / "." / "out.db")], "refusing to overwrite an input"),
    ("OUT as input via a hard link", lambda d: [str(_hard_link(build(d / "a.db", ALL[:2], run_id="a"),
                                                               d / "out.db")), str(d / "a.db")],
     "refusing to overwrite an input"),
    # SQLite's files beside an input: today's merge "succeeded" into in.db-wal and the result vanished
    *[(f"OUT is an input's {suffix}", lambda d, suffix=suffix: [str(d / f"a.db{suffix}"),
                                                                str(build(d / "a.db", ALL[:2], run_id="a"))],
       "refusing to overwrite an input") for suffix in ("-wal", "-shm", "-journal", "-claims")],
    ("input is OUT's -wal", lambda d: [str(build(d / "out.db", ALL[:2], run_id="o")),
                                       str(copy_db(build(d / "a.db", ALL[2:4], run_id="a"), d / "out.db-wal"))],
     "is a file SQLite keeps beside"),
    ("OUT is someone else's SQLite", lambda d: [str(_foreign(d / "out.db")), str(build(d / "a.db", ALL[:2],
                                                                                      run_id="a"))],
     "not a medbench-local results database"),
    ("OUT is text", lambda d: [str(_text(d / "out.db")), str(build(d / "a.db", ALL[:2], run_id="a"))],
     "not a SQLite"),
    ("OUT from a newer version", lambda d: [str(_newer(d / "out.db")), str(build(d / "a.db", ALL[:2],
                                                                                   run_id="a"))],
     "newer medbench-local"),
]


def _link(target: Path, link: Path) -> Path:
    link.symlink_to(target)
    return link


def _hard_link(target: Path, link: Path) -> Path:
    os.link(target, link)
    return link


@pytest.mark.parametrize("arguments", [lambda d: [str(d / "out.db"), str(d)],
                                       lambda d: [str(d), str(build(d / "a.db", ALL[:2], run_id="a"))]],
                         ids=["input is a folder", "OUT is a folder"])
def test_a_folder_is_a_usage_error(arguments: Callable[[Path], list[str]], tmp_path: Path) -> None:
    """Checked by Click's path types (cli/declare.py) before the command runs: usage error, exit 2."""
    args = arguments(tmp_path)
    before = _files(tmp_path)
    result = invoke("merge", *args, expect=2)
    assert "is a directory" in result.output and "Traceback" not in result.output
    assert _files(tmp_path) == before


@pytest.mark.parametrize("name, arguments, expect", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_arguments_are_one_line_and_change_nothing(name: str, arguments: Callable[[Path], list[str]],
                                                       expect: str, tmp_path: Path) -> None:
    args = arguments(tmp_path)
    before = _files(tmp_path)
    result = invoke("merge", *args, expect=1)
    assert result.output.count("\n") == 1 and "Traceback" not in result.output, result.output
    assert re.search(expect, result.output), result.output
    assert _files(tmp_path) == before  # nothing created, nothing changed (inputs and OUT)


def _files(folder: Path) -> dict[str, str]:
    """Content of every file but SQLite's -shm (a shared-memory index that readers update) and empty -wal files
    (a WAL reader may create one): neither holds data."""
    return {p.name: digest(p) for p in folder.iterdir() if p.is_file() and not p.name.endswith("-shm")
            and not (p.name.endswith("-wal") and p.stat().st_size == 0)}


# ---------------------------------------------------------------------------------------------------------
# shards of a run through the real runner: a fake engine (fast), then the real demo pair (e2e)


class AnsweringEngine:
    """A deterministic stand-in for a model: the answer letter is a hash of model id and prompt."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.settings: dict[str, Any] = {"n_ctx": 2048, "seed": 1, "n_threads": 1}
        self.info = ModelInfo(model_id=spec.id, path=f"/{spec.id}.gguf", sha256=spec.id[0] * 64, size_bytes=1,
                              prompt_mode="base", chat_template=None, chat_template_sha256=None)

    def identity(self) -> dict[str, Any]:  # as an in-process engine's, with a fixed build
        return engine_identity(self.info.sha256, self.info.chat_template_sha256, self.settings, build="fake")

    def render(self, prompt: Prompt) -> str:
        return render_base(prompt)

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def generate(self, request: GenerateRequest) -> Generation:
        text = self.render(request.prompt)
        letter = "ABCD"[int(hashlib.sha256(f"{self.spec.id}{text}".encode()).hexdigest(), 16) % 4]
        return Generation(prompt_text=text, output=f" {letter}.", prompt_tokens=10, truncated_tokens=0,
                          completion_tokens=2, finish_reason="stop", seconds=0.01)

    def close(self) -> None: ...


class _Quiet:
    def begin(self, *args: object) -> None: ...
    def advance(self, *args: object) -> None: ...
    def end(self) -> None: ...
    def note(self, text: str) -> None: ...


def _fake_run(db_path: Path, shard: Shard | None) -> None:
    config = load_config(REPO / "models.toml")
    models = [ModelRole(ModelSpec(id=mid, role=role, source=LocalSource(Path("/x"))), role)  # type: ignore[arg-type]
              for mid, role in (("bio-fake", "biomedical"), ("gen-fake", "general"))]
    tasks = load_tasks([(get_task(t), REPO / "bench_data" / t) for t in TASKS], None, shard=shard)
    db = open_database(db_path)
    writer.record_pair(db, "fake", "bio-fake", "gen-fake", "")
    execute(db, config, models, tasks, {m.spec.id: Path("/x") for m in models}, RunOptions(shard=shard), _Quiet(),
            engine_factory=lambda spec, path, options: AnsweringEngine(spec))
    close_database(db)


def _compare_json(db: Path) -> list[dict[str, Any]]:
    return json.loads(invoke("compare", "--db", str(db), "--json", "--resamples", "2000").output)


def test_shards_of_a_run_merge_into_the_unsharded_run(tmp_path: Path) -> None:
    whole = tmp_path / "whole.db"
    _fake_run(whole, None)
    shards = []
    for k in (1, 2, 3):
        shards.append(tmp_path / f"shard{k}.db")
        _fake_run(shards[-1], Shard(k, 3))
    counts = [rows(s, "select count(*) from generations")[0][0] for s in shards]
    assert all(counts) and sum(counts) == rows(whole, "select count(*) from generations")[0][0]
    assert {json.loads(s)["shard"] for (s,) in rows(shards[1], "select settings from runs")} == {"2/3"}
    merged = tmp_path / "merged.db"
    invoke("merge", str(merged), *map(str, reversed(shards)))
    assert results(merged) == results(whole)
    assert _compare_json(merged) == _compare_json(whole)


@pytest.mark.e2e
def test_three_real_shards_merged_equal_one_real_run(demo_db: Path, tmp_path: Path, in_repo: Path) -> None:
    """The demo pair on nejm and jama: shards 1-3 in their own databases, merged, equal the session's
    unsharded run item by item (prompts, outputs, scores), and compare prints the same rows."""
    shards = []
    for k in (1, 2, 3):
        shards.append(tmp_path / f"shard{k}.db")
        result = invoke("run", "--pair", "demo", "--task", "nejm", "--task", "jama", "--shard", f"{k}/3",
                        "--db", str(shards[-1]))
        assert f"shard {k}/3" in result.output
    merged = tmp_path / "merged.db"
    result = invoke("merge", str(merged), *map(str, shards))
    assert "items added" in result.output
    assert results(merged) == results(demo_db)
    assert _compare_json(merged) == _compare_json(demo_db)

    tampered = copy_db(shards[1], tmp_path / "tampered.db")  # one output changed in a copy of shard 2
    (item_id, generation_id) = rows(tampered, "select i.item_id, g.id from generations g join items i "
                                              "on i.key = g.item order by g.id limit 1")[0]
    with editing(tampered) as conn:
        conn.execute("update generations set output = output || ' (edited)' where id = ?", (generation_id,))
    before = digest(merged)
    result = invoke("merge", str(merged), str(tampered), expect=1)
    assert f"'{item_id}'" in result.output and "different output" in result.output
    assert digest(merged) == before

    snapshot = dump(merged)
    invoke("merge", str(merged), *map(str, shards))  # merging twice changes nothing
    assert dump(merged) == snapshot
