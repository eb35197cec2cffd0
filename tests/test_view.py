"""The results browser: SQL views in the database (item_results, paired_items), the foreign keys added by
migration, Datasette metadata that explains every column, and a real Datasette serving the canned queries."""

from __future__ import annotations

import hashlib
import json
import queue
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from medbench_local.cli import view as view_module
from medbench_local.cli.show import disagreements
from medbench_local.store import open_database
from medbench_local.store.catalog import CANNED_QUERIES, TABLES, datasette_metadata
from medbench_local.store.queries import latest_evaluation, summarize_evaluation
from medbench_local.store.views import VIEW_METRICS, VIEWS, registry_metrics
from medbench_local.store.writer import start_run
from medbench_local.tasks.base import OUTCOMES

from .conftest import REPO, copy_db, invoke, rows


@pytest.fixture
def db(demo_db: Path, tmp_path: Path) -> Path:
    return copy_db(demo_db, tmp_path / "study.db")


def dict_rows(path: Path, sql: str, *params: object) -> list[dict]:
    with sqlite3.connect(path) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(row) for row in conn.execute(sql, params)]


def test_view_metric_columns_follow_the_task_registry() -> None:
    """A task that gains a metric must get a view column too (VIEW_METRICS and a migration recreating views)."""
    assert sorted(VIEW_METRICS) == sorted(registry_metrics())
    assert len(set(VIEW_METRICS)) == len(VIEW_METRICS)


def test_optional_metric_names_are_the_ones_rescore_writes() -> None:
    from medbench_local.metrics.umls import umls_prf

    class Concepts:
        def __call__(self, text: str) -> set[str]:
            return set(text.split())

    umls = umls_prf("a b", "b c", Concepts())  # type: ignore[arg-type]
    bert = {f"bertscore_{k}" for k in ("precision", "recall", "f1")}  # analysis/rescore.py: bertscore_{key}
    assert set(umls) | bert <= set(VIEW_METRICS)


@pytest.mark.e2e
def test_item_results_has_one_row_per_score_with_every_metric_as_a_column(db: Path) -> None:
    results = dict_rows(db, "select * from item_results")
    scores = {row["generation_id"]: row for row in dict_rows(
        db, "select s.*, g.run_id, g.seconds, g.completion_tokens, e.model_id, e.task, e.role, i.item_id "
            "from scores s join generations g on g.id = s.generation_id join evaluations e on e.key = s.evaluation "
            "join items i on i.key = s.item")}
    assert len(results) == len(scores) > 0
    with sqlite3.connect(db) as conn:
        sdb = open_database(db, create=False)
        latest = {(m, t): latest_evaluation(sdb, m, t) for m, t in conn.execute(
            "select distinct model_id, task from evaluations")}
        sdb.conn.close()
    for row in results:
        score = scores[row["generation_id"]]
        for column in ("evaluation", "item", "outcome", "extracted", "gold", "run_id", "seconds",
                       "completion_tokens", "model_id", "task", "role", "item_id"):
            assert row[column] == score[column], column
        metrics = json.loads(score["metrics"])
        for name in VIEW_METRICS:
            assert row[name] == metrics.get(name), name
        assert row["latest"] == int(latest[(row["model_id"], row["task"])] == row["evaluation"])
        assert row["pairs"] == "demo"


@pytest.mark.e2e
def test_paired_items_puts_both_models_side_by_side(db: Path) -> None:
    sdb = open_database(db, create=False)
    try:
        for task in ("jama", "nejm"):
            paired = dict_rows(db, "select * from paired_items where pair = 'demo' and task = ?", task)
            keys = {role: latest_evaluation(sdb, model, task)
                    for role, model in (("biomedical", "smollm2-135m-instruct"), ("general", "gemma3-270m"))}
            both = rows(db, "select count(*) from scores b join scores g on g.item = b.item "
                            "where b.evaluation = ? and g.evaluation = ?", keys["biomedical"], keys["general"])[0][0]
            assert len(paired) == both > 0
            for row in paired:
                for role in ("biomedical", "general"):
                    side = dict_rows(db, "select * from scores where evaluation = ? and item = ?", keys[role],
                                     row["item"])[0]
                    assert row[f"{role}_outcome"] == side["outcome"]
                    assert row[f"{role}_accuracy"] == json.loads(side["metrics"])["accuracy"]
                assert row["disagree"] == int(row["biomedical_accuracy"] != row["general_accuracy"])
            shown = disagreements(sdb, "demo", task)
            assert sorted(r["item"] for r in paired if r["disagree"]) == sorted(b["item"] for _, b, _ in shown)
    finally:
        sdb.conn.close()


def _downgrade_to_m002(path: Path) -> None:
    """Make a database look as version 0.1 wrote it: m001's scores table (no foreign keys), no views."""
    with sqlite3.connect(path) as conn:
        conn.execute("drop view if exists item_results")
        conn.execute("drop view if exists paired_items")
        conn.execute("create table old_scores (generation_id integer primary key references generations(id), "
                     "evaluation text, item text, outcome text, extracted text, gold text, method text, "
                     "detail text, metrics text)")
        conn.execute("insert into old_scores select generation_id, evaluation, item, outcome, extracted, gold, "
                     "method, detail, metrics from scores")
        conn.execute("drop table scores")
        conn.execute("alter table old_scores rename to scores")
        conn.execute("create unique index idx_scores_evaluation_item on scores (evaluation, item)")
        conn.execute("drop index if exists idx_generations_run_id")
        conn.execute("delete from _migrations where name in ('m003_scores_foreign_keys', 'm004_result_views')")


def _content(path: Path) -> dict[str, list[tuple]]:
    with sqlite3.connect(path) as conn:
        return {t: conn.execute(f"select * from {t} order by 1").fetchall()
                for t in ("runs", "models", "pairs", "evaluations", "items", "generations", "scores")}


@pytest.mark.e2e
def test_an_older_database_gains_foreign_keys_and_views_without_losing_a_row(db: Path) -> None:
    _downgrade_to_m002(db)
    before = _content(db)
    assert rows(db, "select count(*) from pragma_foreign_key_list('scores')") == [(1,)]
    open_database(db).conn.close()
    assert _content(db) == before
    references = {(r[2], r[3]) for r in rows(db, "select * from pragma_foreign_key_list('scores')")}
    assert references == {("generations", "generation_id"), ("evaluations", "evaluation"), ("items", "item")}
    assert rows(db, "pragma integrity_check") == [("ok",)] and rows(db, "pragma foreign_key_check") == []
    assert {r[0] for r in rows(db, "select name from sqlite_master where type = 'view'")} == set(VIEWS)
    assert rows(db, "select count(*) from item_results")[0][0] == len(before["scores"])


@pytest.mark.e2e
def test_an_upgrade_that_finds_a_dangling_score_changes_nothing(db: Path) -> None:
    _downgrade_to_m002(db)
    with sqlite3.connect(db) as conn:
        conn.execute("update scores set evaluation = 'gone' where generation_id = (select min(generation_id) "
                     "from scores)")
    before = _content(db)
    result = invoke("compare", "--db", str(db), expect=1)
    assert "FOREIGN KEY" in result.output and len(result.output.strip().splitlines()) == 1
    assert _content(db) == before
    assert "m003_scores_foreign_keys" not in {name for (name,) in rows(db, "select name from _migrations")}


@pytest.mark.e2e
def test_metadata_explains_every_table_and_column_of_a_real_database(db: Path) -> None:
    objects = rows(db, "select name, type from sqlite_master where type in ('table', 'view') "
                       "and name not like 'sqlite_%'")
    assert {name for name, _ in objects} == set(TABLES)
    for name, _ in objects:
        columns = [r[1] for r in rows(db, f"select * from pragma_table_info('{name}')")]
        undocumented = [c for c in columns if not TABLES[name][1].get(c)]
        assert not undocumented, f"{name}: {undocumented}"
        assert set(TABLES[name][1]) == set(columns), f"{name}: described columns that do not exist"
    for name, (_, _, sql) in CANNED_QUERIES.items():  # every canned query runs (empty parameters = all)
        with sqlite3.connect(db) as conn:
            conn.execute(sql, {"pair": "", "task": ""}).fetchall()


@pytest.fixture
def empty_db(tmp_path: Path) -> Path:
    path = tmp_path / "study.db"
    open_database(path).conn.close()
    return path


def test_metadata_out_writes_the_json_and_needs_no_datasette(empty_db: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(view_module, "datasette_installed", lambda: False)
    db = empty_db
    out = tmp_path / "meta.json"
    invoke("view", "--db", str(db), "--metadata-out", str(out))
    assert json.loads(out.read_text()) == datasette_metadata("study", "medbench-local results: study.db")


def test_view_without_datasette_is_one_line_naming_the_extra(empty_db: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(view_module, "datasette_installed", lambda: False)
    result = invoke("view", "--db", str(empty_db), "--no-open", expect=1)
    assert result.output.strip() == ("Error: Datasette is not installed; install the optional extra: "
                                     "pip install 'medbench-local[view]'")


@pytest.mark.parametrize("environ, platform, interactive, headless", [
    ({"DISPLAY": ":0"}, "linux", True, False),
    ({"WAYLAND_DISPLAY": "wayland-0"}, "linux", True, False),
    ({}, "linux", True, True),
    ({"DISPLAY": ":0", "SSH_CONNECTION": "1 2 3 4"}, "linux", True, True),
    ({}, "darwin", True, False),
    ({}, "win32", True, False),
    ({"DISPLAY": ":0"}, "linux", False, True),
    ({}, "darwin", False, True),
])
def test_a_browser_is_opened_only_where_there_is_a_screen(environ: dict, platform: str, interactive: bool,
                                                         headless: bool) -> None:
    assert view_module.looks_headless(environ, platform, interactive) is headless


# ------------------------------------------------------------------------------------------- a real Datasette


class Server:
    def __init__(self, db: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "medbench_local", "view", "--db", str(db), "--port", "0", "--no-open"],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()
        self.url = self._wait_for_address()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _wait_for_address(self) -> str:
        while True:  # Uvicorn announces the address once it listens; the deadline only guards a hang
            line = self.lines.get(timeout=300)
            if line is None:
                raise AssertionError("Datasette exited before serving:\n" + "".join(self.output))
            self.output.append(line)
            found = re.search(r"running on (http://[\d.]+:\d+)", line)
            if found:
                return found.group(1)

    def get(self, path: str, **params: str) -> object:
        query = ("?" + urllib.parse.urlencode(params)) if params else ""
        with urllib.request.urlopen(self.url + path + query, timeout=60) as response:
            body = response.read().decode("utf-8")
        return json.loads(body) if path.endswith(".json") else body

    def stop(self) -> int:
        """Ctrl-C to medbench-local alone (not to its process group): Datasette must stop with it."""
        self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise

    def answers(self) -> bool:
        try:
            urllib.request.urlopen(self.url + "/-/versions.json", timeout=30).close()
        except OSError:
            return False
        return True


@pytest.fixture
def server(db: Path) -> Iterator[Server]:
    pytest.importorskip("datasette")
    running = Server(db)
    yield running
    assert running.stop() == 0
    assert not running.answers(), "Datasette kept running after medbench-local view stopped"


def _by(rows_: list[dict], *keys: str) -> dict[tuple, dict]:
    return {tuple(row[k] for k in keys): row for row in rows_}


@pytest.mark.e2e
def test_datasette_serves_every_canned_query_with_numbers_that_match_sql(server: Server, db: Path) -> None:
    assert server.url.startswith("http://127.0.0.1:")
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    fetched = {name: server.get(f"/study/{name}.json", _shape="array", pair="", task="") for name in CANNED_QUERIES}
    assert set(fetched) == {"scores_per_evaluation", "pair_disagreements", "outcomes_per_model_task",
                            "slowest_items", "unanswered_items"}  # a new query needs its check below

    sdb = open_database(db, create=False)
    try:
        latest = {(m, t): latest_evaluation(sdb, m, t) for (m, t) in
                  rows(db, "select distinct model_id, task from evaluations")}
        summaries = {key: summarize_evaluation(sdb, key) for key in latest.values()}
        shown = {task: disagreements(sdb, "demo", task) for task in ("jama", "nejm")}
    finally:
        sdb.conn.close()

    outcomes = _by(fetched["outcomes_per_model_task"], "model_id", "task")  # type: ignore[arg-type]
    assert set(outcomes) == set(latest)
    for (model, task), key in latest.items():
        assert {o: outcomes[(model, task)][o] for o in OUTCOMES} == summaries[key].outcomes
        assert outcomes[(model, task)]["n"] == summaries[key].n

    means = _by(fetched["scores_per_evaluation"], "evaluation", "metric")  # type: ignore[arg-type]
    for key, summary in summaries.items():
        for metric, value in summary.metrics.items():
            assert means[(key, metric)]["mean"] == pytest.approx(value)
            assert means[(key, metric)]["latest"] == 1

    disagree = fetched["pair_disagreements"]
    assert len(disagree) == sum(len(found) for found in shown.values()) > 0  # type: ignore[arg-type]
    only_jama = server.get("/study/pair_disagreements.json", _shape="array", pair="demo", task="jama")
    expected_jama = sorted(b["item_id"] for _, b, _ in shown["jama"])
    assert sorted(r["item_id"] for r in only_jama) == expected_jama  # type: ignore[union-attr]

    slowest = fetched["slowest_items"]
    seconds = [row["seconds"] for row in slowest]  # type: ignore[union-attr]
    assert seconds == sorted(seconds, reverse=True)
    assert seconds[0] == rows(db, "select max(seconds) from generations")[0][0]

    unanswered = fetched["unanswered_items"]
    expected = sum(s.outcomes["truncated"] + s.outcomes["unparseable"] + s.outcomes["error"]
                   for s in summaries.values())
    assert len(unanswered) == expected  # type: ignore[arg-type]

    served = server.get("/-/metadata.json")["databases"]["study"]  # type: ignore[index]
    ours = datasette_metadata("study", "medbench-local results: study.db")["databases"]["study"]
    assert served["tables"] == ours["tables"]
    assert {name: {k: q[k] for k in ("title", "description", "sql")} for name, q in served["queries"].items()} \
        == ours["queries"]
    page = server.get("/study/item_results")
    assert TABLES["item_results"][0].split(":")[1].strip()[:40] in page  # type: ignore[operator]
    loaded = re.findall(r'<(?:script|link)[^>]+(?:src|href)="(https?://[^"/]+)', page)  # type: ignore[arg-type]
    assert set(loaded) <= {server.url}  # nothing is loaded from the network
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before  # reading changed nothing


@pytest.mark.e2e
def test_datasette_sees_rows_a_running_run_commits(server: Server, db: Path) -> None:
    def count() -> int:
        got = server.get("/study.json", sql="select count(*) as n from runs", _shape="array")
        return got[0]["n"]  # type: ignore[index]

    before = count()
    writer = open_database(db)
    try:
        start_run(writer, "still-running", {"command": ["medbench-local", "run"], "settings": {}})
        assert count() == before + 1  # committed rows are visible at once (read-only, not --immutable)
    finally:
        writer.conn.close()
    databases = server.get("/-/databases.json")
    assert [d["is_mutable"] for d in databases if d["name"] == "study"] == [True]  # type: ignore[union-attr]
