"""The results browser: SQL views in the database (item_results, paired_items), the foreign keys added by
migration, Datasette metadata that explains every column, and a real Datasette serving the canned queries."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import html
import http.client
import http.cookiejar
import json
import os
import queue
import re
import shutil
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from medbench_local.analysis.disagreements import disagreements
from medbench_local.cli import view as view_module
from medbench_local.cli.view_guard import TOKEN_ENV, Guard, cookie_name, cookie_value
from medbench_local.store import open_database
from medbench_local.store.catalog import (
    CANNED_QUERIES,
    STYLE_URL,
    datasette_metadata,
    queries_needing,
    tables,
    tilde_encode,
)
from medbench_local.store.queries import latest_evaluation, summarize_evaluation
from medbench_local.store.views import (
    VIEWS,
    item_results_sql,
    paired_items_sql,
    refresh_views,
    stored_view_metrics,
    view_metrics,
)
from medbench_local.store.writer import start_run
from medbench_local.tasks import get_task, task_ids
from medbench_local.tasks.base import OUTCOMES

from .chromium import FLAGS, browser_or_skip
from .conftest import REPO, copy_db, invoke, rows

URL = re.compile(r"(http://127\.0\.0\.1:(\d+))/\?token=([A-Za-z0-9_-]+)")


@pytest.fixture
def db(demo_db: Path, tmp_path: Path) -> Path:
    return copy_db(demo_db, tmp_path / "study.db")


def dict_rows(path: Path, sql: str, *params: object) -> list[dict]:
    with sqlite3.connect(path) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(row) for row in conn.execute(sql, params)]


#: The metric columns of the views as the tuple in store/views.py listed them before issue 21 derived them from the
#: task registry: the built-in tasks still give exactly these, in this order, so new databases' views are unchanged.
BUILT_IN_VIEW_METRICS = (
    "accuracy",
    "rouge1", "rouge2", "rougeL",
    "em_precision", "em_recall", "em_f1", "ap_precision", "ap_recall", "ap_f1", "valid_ratio",
    "task1", "task2", "task3", "task3_hallucinated", "task2_abstained",
    "bertscore_precision", "bertscore_recall", "bertscore_f1",
    "umls_precision", "umls_recall", "umls_f1",
)


def test_view_metric_columns_follow_the_task_registry() -> None:
    """One column per metric a registered task declares (issue 21: no list in store/, no migration per metric);
    for the built-in tasks the columns, and their order, are those of every database made before."""
    declared = {spec.name for task_id in task_ids() for spec in get_task(task_id).metrics}
    assert view_metrics() == BUILT_IN_VIEW_METRICS and set(view_metrics()) == declared


def test_one_metric_name_means_one_thing_across_the_tasks() -> None:
    """The glossary takes a metric's description from the first task that declares it: every task declaring the
    same name must declare the same metric (kind, optional, description), and describe it."""
    seen: dict[str, object] = {}
    for task_id in task_ids():
        for spec in get_task(task_id).metrics:
            assert spec.description, f"{task_id}: metric {spec.name} has no description"
            key = (spec.kind, spec.optional, spec.description)
            assert seen.setdefault(spec.name, key) == key, f"{task_id}: {spec.name} declared differently"


def test_optional_metric_names_are_the_ones_rescore_writes() -> None:
    from medbench_local.metrics.umls import umls_prf

    class Concepts:
        def __call__(self, text: str) -> set[str]:
            return set(text.split())

    umls = umls_prf("a b", "b c", Concepts())  # type: ignore[arg-type]
    bert = {f"bertscore_{k}" for k in ("precision", "recall", "f1")}  # analysis/rescore.py: bertscore_{key}
    assert set(umls) | bert <= set(view_metrics())


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
        for name in view_metrics():
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


def _settled(path: Path) -> None:
    """Close what the test's own connections left open and fold the WAL into the file, so that the file's bytes
    are what they will stay (a lingering connection checkpoints when it is collected, at any moment)."""
    gc.collect()
    conn = sqlite3.connect(path)
    try:
        conn.execute("pragma wal_checkpoint(truncate)")
    finally:
        conn.close()


def _downgrade_to_m002(path: Path) -> None:
    """Make a database look as version 0.1 wrote it: m001's scores table (no foreign keys), no views."""
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
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
    assert "refer to a missing evaluation or item" in result.output  # the read gate's upgraded copy says so
    assert len(result.output.strip().splitlines()) == 1
    assert _content(db) == before
    assert "m003_scores_foreign_keys" not in {name for (name,) in rows(db, "select name from _migrations")}


@pytest.mark.e2e
def test_metadata_explains_every_table_and_column_of_a_real_database(db: Path) -> None:
    objects = rows(db, "select name, type from sqlite_master where type in ('table', 'view') "
                       "and name not like 'sqlite_%'")
    assert {name for name, _ in objects} == set(tables())
    for name, _ in objects:
        columns = [r[1] for r in rows(db, f"select * from pragma_table_info('{name}')")]
        undocumented = [c for c in columns if not tables()[name][1].get(c)]
        assert not undocumented, f"{name}: {undocumented}"
        assert set(tables()[name][1]) == set(columns), f"{name}: described columns that do not exist"
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


def test_the_glossary_and_the_views_list_columns_in_the_same_reading_order(empty_db: Path) -> None:
    """Human columns first and the 64-character hashes last (Datasette shows a view's own column order)."""
    for view, first, last in (("item_results", ["model_id", "task", "item_id", "outcome", "extracted", "gold"],
                               ["evaluation", "item", "model_sha256"]),
                              ("paired_items", ["pair", "task", "item_id", "biomedical_model_id"],
                               ["biomedical_evaluation", "general_evaluation", "item"])):
        columns = [r[1] for r in rows(empty_db, f"select * from pragma_table_info('{view}')")]
        assert columns[:len(first)] == first and columns[-len(last):] == last, view
        assert list(tables()[view][1]) == columns, view  # the folded glossary reads in the table's order


def test_the_metadata_guides_a_reader(empty_db: Path) -> None:
    metadata = datasette_metadata("my study", "t")
    front = metadata["description_html"]
    for name, (title, _, _) in CANNED_QUERIES.items():  # "start with a question": every query linked
        assert f'<a href="/my+study/{name}">{html.escape(title)}</a>' in front
    database = metadata["databases"]["my study"]
    assert database["tables"]["_migrations"]["hidden"] is True
    assert database["tables"]["runs"]["sort_desc"] == "started_at"
    for name, (description, columns) in tables().items():
        folded = database["tables"][name]["description_html"]
        assert folded.count("<details") == 1 and all(f"<dt>{html.escape(c)}</dt>" in folded for c in columns)
    assert metadata["extra_css_urls"] == [STYLE_URL] and STYLE_URL.startswith("data:text/css,")
    assert "dl.column-descriptions%20%7B%20display%3A%20none" in STYLE_URL  # Datasette's unfolded copy hidden


def test_queries_that_need_a_missing_view_are_left_out() -> None:
    present = set(tables()) - set(VIEWS)
    metadata = datasette_metadata("study", "t", present)
    assert metadata["databases"]["study"]["queries"] == {}  # every canned query reads a view today
    assert "item_results" not in metadata["description_html"] and "Start with" not in metadata["description_html"]
    assert all(queries_needing(sql) for _, _, sql in CANNED_QUERIES.values())


def test_datasette_names_are_tilde_encoded_as_datasette_does() -> None:
    datasette_utils = pytest.importorskip("datasette.utils")
    for name in ("study", "my study", "a.b", "x~y", "ünï/cødé", "-_09AZaz", "%2F", "a+b"):
        assert tilde_encode(name) == datasette_utils.tilde_encode(name)


@pytest.mark.parametrize("target", ["db", "db-wal", "db-shm", "db-journal", "db-claims", "hardlink", "symlink"])
def test_metadata_out_never_replaces_the_database_or_its_files(empty_db: Path, tmp_path: Path, target: str) -> None:
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    mode = stat.S_IMODE(empty_db.stat().st_mode)
    if target == "hardlink":
        out = tmp_path / "meta.json"
        os.link(empty_db, out)
    elif target == "symlink":
        out = tmp_path / "meta.json"
        out.symlink_to(empty_db)
    else:
        out = empty_db.with_name(empty_db.name + target[2:])
    result = invoke("view", "--db", str(empty_db), "--metadata-out", str(out), expect=1)
    assert len(result.output.strip().splitlines()) == 1 and result.output.startswith("Error: ")
    assert "Traceback" not in result.output
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file() and p.name in before} == before
    assert stat.S_IMODE(empty_db.stat().st_mode) == mode
    assert rows(empty_db, "pragma integrity_check") == [("ok",)]


def test_views_of_a_newer_version_are_read_as_they_are_and_a_writer_makes_them_its_own(empty_db: Path,
                                                                                      tmp_path: Path) -> None:
    """Issue 21: no migration marks a metric, so a database whose views a newer medbench-local made (its tasks
    declare a metric this one does not know) is an ordinary database here. Readers describe the column they find
    and write nothing; a writer of this version recreates the views from its own registry, and an unchanged
    registry recreates nothing."""
    future = (*view_metrics(), "future_metric")
    with contextlib.closing(sqlite3.connect(empty_db)) as conn, conn:
        conn.execute("drop view item_results")
        conn.execute("drop view paired_items")
        conn.execute(item_results_sql(future))
        conn.execute(paired_items_sql(future))
    _settled(empty_db)
    before = empty_db.read_bytes()
    out = tmp_path / "meta.json"
    invoke("view", "--db", str(empty_db), "--metadata-out", str(out))
    tables_out = json.loads(out.read_text())["databases"]["study"]["tables"]
    assert "do not declare" in tables_out["item_results"]["columns"]["future_metric"]
    assert "do not declare" in tables_out["paired_items"]["columns"]["general_future_metric"]
    assert json.loads(invoke("runs", "--db", str(empty_db), "--json").output) == []
    assert empty_db.read_bytes() == before
    db = open_database(empty_db)
    try:
        assert stored_view_metrics(db) == view_metrics() and not refresh_views(db)
    finally:
        db.conn.close()


def test_an_older_database_that_has_the_views_keeps_its_queries(empty_db: Path, tmp_path: Path) -> None:
    """A database from before m005 already has the result views: the canned queries work on it as it is."""
    with contextlib.closing(sqlite3.connect(empty_db)) as conn, conn:
        conn.execute("alter table generations drop column prompt_tokens_evaluated")
        conn.execute("delete from _migrations where name = 'm005_prompt_tokens_evaluated'")
        conn.execute("alter table generations drop column server_requests")
        conn.execute("alter table generations drop column server_tokens")
        conn.execute("delete from _migrations where name = 'm008_served_counts'")
    out = tmp_path / "meta.json"
    result = invoke("view", "--db", str(empty_db), "--metadata-out", str(out))
    assert "without" not in result.output
    assert set(json.loads(out.read_text())["databases"]["study"]["queries"]) == set(CANNED_QUERIES)


def test_metadata_out_is_written_owner_only(empty_db: Path, tmp_path: Path) -> None:
    out = tmp_path / "meta.json"
    old = os.umask(0)
    try:
        invoke("view", "--db", str(empty_db), "--metadata-out", str(out))
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


def test_a_port_in_use_is_one_line_before_anything_starts(empty_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(view_module, "datasette_installed", lambda: True)
    monkeypatch.setattr(view_module, "_serve", lambda *a: pytest.fail("started although the port is in use"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = invoke("view", "--db", str(empty_db), "--port", str(port), "--no-open", expect=1)
    assert result.output == (f"Error: 127.0.0.1:{port} is in use; choose another port with --port "
                             "(--port 0: any free port)\n")


def test_datasette_gets_the_token_in_its_environment_only(empty_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The launch itself, without starting Datasette: what its command line, environment and files hold."""
    seen: dict[str, object] = {}

    def fake_serve(command: list[str], env: dict[str, str], port: int, opener: Path | None) -> int:
        metadata = Path(command[command.index("--metadata") + 1])
        seen.update(command=command, env=env, port=port, opener=opener, metadata_mode=metadata.stat().st_mode,
                    folder_mode=metadata.parent.stat().st_mode, metadata=json.loads(metadata.read_text()))
        return 0

    monkeypatch.setattr(view_module, "datasette_installed", lambda: True)
    monkeypatch.setattr(view_module, "_serve", fake_serve)
    result = invoke("view", "--db", str(empty_db), "--port", "0", "--no-open")
    found = URL.search(result.output)
    assert found, result.output
    port, token = int(found.group(2)), found.group(3)
    command = seen["command"]
    assert len(token) >= 40 and seen["env"][TOKEN_ENV] == token  # type: ignore[index]
    assert not any(token in arg for arg in command)  # type: ignore[union-attr]
    assert command[:4] == [sys.executable, "-m", "medbench_local.cli.view_server", str(port)]  # type: ignore[index]
    assert seen["port"] == port > 0 and "--open" not in command and "--immutable" not in command  # type: ignore[operator]
    assert stat.S_IMODE(seen["metadata_mode"]) == 0o600 and stat.S_IMODE(seen["folder_mode"]) == 0o700  # type: ignore[arg-type]
    assert seen["metadata"] == datasette_metadata("study", "medbench-local results: study.db")
    assert seen["opener"] is None
    assert result.output.count(token) == 1


def test_the_browser_is_opened_on_a_private_redirect_file(tmp_path: Path) -> None:
    url = "http://127.0.0.1:8001/?token=" + "x" * 43
    page = view_module._redirect_file(tmp_path, url)
    assert stat.S_IMODE(page.stat().st_mode) == 0o600
    assert f'content="0; url={url}"' in page.read_text() and page.as_uri().startswith("file://")


# ------------------------------------------------------------------------------------------- the guard (ASGI)

PORT = 8123
TOKEN = "t" * 20 + "-_" + "0123456789abcdefghij"


class Reply:
    def __init__(self, messages: list[dict], reached_app: bool) -> None:
        start = messages[0]
        self.status: int = start["status"]
        self.headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in start.get("headers", [])]
        self.body = b"".join(m.get("body", b"") for m in messages[1:]).decode("utf-8")
        self.reached_app = reached_app

    def header(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name]


def ask(path: str = "/", query: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None,
        raw_path: bytes | None = None, kind: str = "http") -> Reply:
    """One request through the guard around a stand-in app that answers 200 'app'."""
    reached = []

    async def app(scope: dict, receive: object, send: object) -> None:
        reached.append(scope)
        await send({"type": "http.response.start", "status": 200, "headers": []})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b"app"})  # type: ignore[operator]

    messages: list[dict] = []

    async def send(message: dict) -> None:
        messages.append(message)

    async def receive() -> dict:
        return {"type": "http.request", "body": b""}

    headers = [(b"host", f"127.0.0.1:{PORT}".encode())] if headers is None else headers
    scope = {"type": kind, "path": path, "raw_path": raw_path if raw_path is not None else path.encode(),
             "query_string": query, "headers": headers}
    asyncio.run(Guard(app, token=TOKEN, port=PORT)(scope, receive, send))
    if kind != "http":
        return Reply([{"status": 0}, *messages], bool(reached))
    return Reply(messages, bool(reached))


def cookie_header() -> tuple[bytes, bytes]:
    return b"cookie", f"other=1; {cookie_name(PORT)}={cookie_value(TOKEN)}".encode()


# The loopback names with any port (an SSH forward's local port) or none; nothing a rebinding page can send.
GOOD_HOSTS = [f"127.0.0.1:{PORT}", f"localhost:{PORT}", f"LocalHost:{PORT}", "127.0.0.1", "localhost",
              "localhost:9000", f"[::1]:{PORT}", "[::1]"]
BAD_HOSTS = ["evil.example", f"evil.example:{PORT}", f"127.0.0.1:{PORT}.evil.example", "127.0.0.1.evil.example",
             f"localhost.evil.example:{PORT}", f"127.0.0.2:{PORT}", f"0.0.0.0:{PORT}", "", f"127.0.0.1:{PORT} ",
             f"user@127.0.0.1:{PORT}", "localhost.", "127.0.0.1:", "127.0.0.1:123456", "::1", f"[::1]x:{PORT}",
             "127.1", "2130706433", "LOCALHOST:80:80"]
LOOPBACK = re.compile(r"(127\.0\.0\.1|localhost|\[::1\])(:[0-9]{1,5})?", re.IGNORECASE)


@pytest.mark.parametrize("host", GOOD_HOSTS)
def test_the_guard_lets_its_own_address_through_with_the_cookie(host: str) -> None:
    reply = ask(headers=[(b"host", host.encode()), cookie_header()])
    assert reply.status == 200 and reply.reached_app and reply.body == "app"


@pytest.mark.parametrize("host", BAD_HOSTS)
def test_the_guard_answers_no_other_host_even_with_the_cookie_or_token(host: str) -> None:
    for extra, query in (([cookie_header()], b""), ([], f"token={TOKEN}".encode())):
        reply = ask(query=query, headers=[(b"host", host.encode()), *extra])
        assert reply.status == 421 and not reply.reached_app and not reply.header("set-cookie")


@given(st.text(max_size=60))
def test_the_guard_refuses_every_host_but_its_own(host: str) -> None:
    reply = ask(headers=[(b"host", host.encode("utf-8", "surrogatepass")), cookie_header()])
    assert reply.reached_app == bool(LOOPBACK.fullmatch(host) and host.isascii())


def test_the_guard_refuses_a_request_without_or_with_two_host_headers() -> None:
    assert ask(headers=[cookie_header()]).status == 421
    two = [(b"host", f"127.0.0.1:{PORT}".encode()), (b"host", b"evil.example"), cookie_header()]
    assert ask(headers=two).status == 421


@pytest.mark.parametrize("cookie", [None, b"", f"{cookie_name(PORT)}=".encode(), f"{cookie_name(PORT)}=x".encode(),
                                    f"{cookie_name(PORT + 1)}={cookie_value(TOKEN)}".encode(),
                                    f"{cookie_name(PORT)}={TOKEN}".encode(),
                                    f"{cookie_name(PORT)}={cookie_value(TOKEN + 'x')}".encode()])
def test_no_cookie_or_a_wrong_one_is_403_with_a_page_saying_what_to_do(cookie: bytes | None) -> None:
    headers = [(b"host", f"127.0.0.1:{PORT}".encode())] + ([(b"cookie", cookie)] if cookie is not None else [])
    reply = ask("/study/item_results", headers=headers)
    assert reply.status == 403 and not reply.reached_app
    assert "printed" in reply.body and "?token=" in reply.body and TOKEN not in reply.body


@given(st.text(min_size=0, max_size=80))
def test_any_wrong_token_is_403(token: str) -> None:
    if token == TOKEN:
        return
    reply = ask(query=urllib.parse.urlencode({"token": token}).encode())
    assert reply.status == 403 and not reply.reached_app and not reply.header("set-cookie")


def test_the_token_twice_is_403() -> None:
    assert ask(query=f"token={TOKEN}&token={TOKEN}".encode()).status == 403


@pytest.mark.parametrize("path, query, target", [
    ("/", f"token={TOKEN}", "/"),
    ("/study/item_results", f"task=jama&token={TOKEN}&_facet=outcome", "/study/item_results?task=jama&_facet=outcome"),
    ("//evil.example/x", f"token={TOKEN}", "/evil.example/x"),
    ("/\\evil.example", f"token={TOKEN}", "/evil.example"),
    ("/study", f"to%6Ben={TOKEN}", "/study"),
])
def test_the_token_sets_a_strict_httponly_cookie_and_moves_on_without_it(path: str, query: str, target: str) -> None:
    reply = ask(path, query.encode())
    assert reply.status == 200 and not reply.reached_app
    cookie, = reply.header("set-cookie")
    assert cookie == f"{cookie_name(PORT)}={cookie_value(TOKEN)}; Path=/; HttpOnly; SameSite=Strict"
    assert f'<meta http-equiv="refresh" content="0; url={html.escape(target)}">' in reply.body
    assert TOKEN not in reply.body and reply.header("cache-control") == ["no-store"]
    # the answer to the next request, with the cookie, is the app's
    assert ask(target.split("?")[0], headers=[(b"host", f"localhost:{PORT}".encode()), cookie_header()]).reached_app


@given(st.binary(max_size=40))
def test_the_page_after_the_token_never_leads_to_another_host(raw: bytes) -> None:
    reply = ask("/", f"token={TOKEN}".encode(), raw_path=b"/" + raw)
    if reply.status == 200:
        target = re.search(r'url=([^"]*)"', reply.body).group(1)  # type: ignore[union-attr]
        assert target.startswith("/") and not target.startswith(("//", "/\\"))
        assert all(0x21 <= ord(c) <= 0x7E for c in html.unescape(target))
    else:
        assert reply.status == 403


def test_the_token_is_kept_out_of_the_access_log() -> None:
    seen: list[dict] = []

    async def send(message: dict) -> None:
        seen.append(message)

    scope = {"type": "http", "path": "/", "raw_path": b"/", "query_string": f"a=1&token={TOKEN}".encode(),
             "headers": [(b"host", f"127.0.0.1:{PORT}".encode())]}

    async def app(*args: object) -> None:
        raise AssertionError("the token request never reaches Datasette")

    asyncio.run(Guard(app, token=TOKEN, port=PORT)(scope, None, send))  # type: ignore[arg-type]
    assert scope["query_string"] == b"a=1&token=(hidden)"  # Uvicorn logs the request line from this scope


def test_the_guard_passes_lifespan_and_closes_websockets() -> None:
    assert ask(kind="lifespan").reached_app
    reply = ask(kind="websocket", headers=[(b"host", f"127.0.0.1:{PORT}".encode()), cookie_header()])
    assert not reply.reached_app


def test_a_short_token_is_refused() -> None:
    with pytest.raises(ValueError):
        Guard(lambda *a: None, token="short", port=PORT)  # type: ignore[arg-type, return-value]


# ------------------------------------------------------------------------------------------- a real Datasette


class Server:
    """``medbench-local view`` in a child process (optionally behind ``prefix``, e.g. a read-only mount), logged
    in the way a browser is: the printed URL once, then its cookie."""

    def __init__(self, db: Path, prefix: Sequence[str] = (), browser: Path | None = None) -> None:
        env = {**os.environ, "BROWSER": str(browser)} if browser else None
        self.process = subprocess.Popen(
            [*prefix, sys.executable, "-m", "medbench_local", "view", "--db", str(db), "--port", "0",
             "--open" if browser else "--no-open"],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()
        self.url, self.port, self.token = self._wait_until_served()
        self.cookies = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.cookies))
        with self.opener.open(f"{self.url}/?token={self.token}", timeout=60) as response:  # as a browser would
            assert response.status == 200

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _next_line(self) -> str | None:
        line = self.lines.get(timeout=300)  # the deadline only guards a hang
        if line is not None:
            self.output.append(line)
        return line

    def _wait_until_served(self) -> tuple[str, int, str]:
        address = None
        while True:  # our URL first, then Uvicorn announces that it listens
            line = self._next_line()
            if line is None:
                raise AssertionError("view exited before serving:\n" + "".join(self.output))
            found = URL.search(line)
            if found and address is None:
                address = (found.group(1), int(found.group(2)), found.group(3))
            if "Uvicorn running on" in line:
                assert address is not None, "".join(self.output)
                return address

    def get(self, path: str, **params: str) -> object:
        query = ("?" + urllib.parse.urlencode(params)) if params else ""
        with self.opener.open(self.url + path + query, timeout=60) as response:
            body = response.read().decode("utf-8")
        return json.loads(body) if path.endswith(".json") else body

    def raw(self, path: str, headers: dict[str, str]) -> tuple[int, str]:
        """A request with exactly these headers (no cookie unless given)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
            for name, value in headers.items():
                conn.putheader(name, value)
            conn.endheaders()
            response = conn.getresponse()
            return response.status, response.read().decode("utf-8", "replace")
        finally:
            conn.close()

    def cookie(self) -> str:
        found = [c for c in self.cookies if c.name == cookie_name(self.port)]
        assert len(found) == 1
        return f"{found[0].name}={found[0].value}"

    def datasette_pids(self) -> list[int]:
        """The processes whose parent is ``view``: Datasette."""
        children = []
        for stat_file in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat_file.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self.process.pid:
                children.append(int(stat_file.parent.name))
        return children

    def stop(self) -> int:
        """Ctrl-C to medbench-local alone (not to its process group): Datasette must stop with it. Once."""
        if self.process.returncode is not None:
            return self.process.returncode
        self.process.send_signal(signal.SIGINT)
        try:
            code = self.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise
        while self._next_line() is not None:  # everything it printed, Uvicorn's access log included
            pass
        return code

    def answers(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=30).close()
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
    assert tables()["item_results"][0].split(":")[1].strip()[:40] in page  # type: ignore[operator]
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


@pytest.mark.e2e
def test_view_answers_only_its_own_host_and_the_printed_url(server: Server) -> None:
    own = f"127.0.0.1:{server.port}"
    assert server.raw("/study.json", {"Host": own, "Cookie": server.cookie()})[0] == 200
    assert server.raw("/study.json", {"Host": f"localhost:{server.port}", "Cookie": server.cookie()})[0] == 200
    assert server.raw("/study.json", {"Host": "localhost:9000", "Cookie": server.cookie()})[0] == 200  # ssh -L
    for host in ("rebound.example", f"rebound.example:{server.port}", f"127.0.0.1.rebound.example:{server.port}"):
        status, body = server.raw("/study.json", {"Host": host, "Cookie": server.cookie()})
        assert status == 421 and "runs" not in body, host  # DNS rebinding reads nothing
    status, body = server.raw("/study/generations.json", {"Host": own})
    assert status == 403 and "printed" in body and "prompt" not in body
    assert server.raw("/", {"Host": own, "Cookie": server.cookie() + "0"})[0] == 403
    assert server.raw("/?token=" + server.token[:-1] + "x", {"Host": own})[0] == 403
    status, body = server.raw("/study?token=" + server.token, {"Host": own})  # a second browser logs in too
    assert status == 200 and 'url=/study"' in body
    assert server.get("/study/runs.json", _shape="array")  # the cookie keeps working
    for pid in server.datasette_pids():  # other accounts can read command lines, not environments
        assert server.token.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
        assert b"view_server" in Path(f"/proc/{pid}/cmdline").read_bytes()
        assert stat.S_IMODE(os.stat(f"/proc/{pid}/environ").st_mode) & 0o077 == 0
    assert server.datasette_pids()
    assert server.stop() == 0
    printed = "".join(server.output)
    assert printed.count(server.token) == 1, printed  # in the URL we print, never in Uvicorn's access log
    assert "token=(hidden)" in printed


@pytest.mark.e2e
def test_the_pages_guide_a_reader(server: Server, db: Path) -> None:
    writer = open_database(db)
    try:
        start_run(writer, "a-later-run", {"command": ["medbench-local", "run"], "settings": {}})
    finally:
        writer.conn.close()
    front = server.get("/")
    for name, (title, _, _) in CANNED_QUERIES.items():  # the front page lists the queries it promises
        assert f'href="/study/{name}">{html.escape(title)}</a>' in front  # type: ignore[operator]
    tables = {t["name"]: t for t in server.get("/study.json")["tables"]}  # type: ignore[index]
    assert tables["_migrations"]["hidden"] is True and not tables["runs"]["hidden"]
    assert ">_migrations<" not in front  # type: ignore[operator]
    runs = server.get("/study/runs.json", _shape="array")
    started = [row["started_at"] for row in runs]  # type: ignore[union-attr]
    assert len(started) >= 2 and started == sorted(started, reverse=True) and runs[0]["id"] == "a-later-run"  # type: ignore[index]
    page = server.get("/study/item_results")
    assert '<details class="mb-glossary">' in page  # type: ignore[operator]
    assert page.index("mb-glossary") < page.index('<table class="rows-and-columns">')  # type: ignore[union-attr]
    header = re.findall(r'<th [^>]*data-column="([^"]+)"', page)  # type: ignore[arg-type]
    assert header[:6] == ["model_id", "task", "item_id", "outcome", "extracted", "gold"]
    assert header[-3:] == ["evaluation", "item", "model_sha256"]


def _read_only_prefix(folder: Path) -> list[str]:
    """Run view with ``folder`` on a read-only mount (a private mount namespace: real read-only media, also for
    root); else, where we are not root, a folder without write permission."""
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-rm", "true"], capture_output=True).returncode == 0:
        script = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" "$1" && shift && exec "$@"'
        return [unshare, "-rm", "sh", "-c", script, "sh", str(folder)]
    if os.geteuid() == 0:
        pytest.skip("no user namespaces to mount a folder read-only, and root writes anywhere")
    folder.chmod(0o555)
    return []


@pytest.mark.e2e
@pytest.mark.parametrize("journal", ["wal", "delete"])
def test_a_database_on_read_only_media_is_served_and_left_exactly_as_it_was(demo_db: Path, tmp_path: Path,
                                                                           journal: str) -> None:
    pytest.importorskip("datasette")
    folder = tmp_path / "media"
    folder.mkdir()
    db = copy_db(demo_db, folder / "study.db")
    conn = sqlite3.connect(db)  # what 'run' leaves is WAL; a copy made with other tools may not be
    assert conn.execute(f"pragma journal_mode={journal}").fetchone() == (journal,)
    conn.close()  # the last connection gone: no -wal or -shm left beside it, as on a copied medium
    assert sorted(p.name for p in folder.iterdir()) == ["study.db"]
    db.chmod(0o444)
    scores = rows(demo_db, "select count(*) from scores")[0][0]  # not from the copy: that would add its -shm
    files = {p.name: (p.read_bytes(), p.stat().st_mode) for p in folder.iterdir()}
    running = Server(db, _read_only_prefix(folder))
    try:
        assert [d["is_mutable"] for d in running.get("/-/databases.json")] == [False]  # type: ignore[union-attr]
        outcomes = running.get("/study/outcomes_per_model_task.json", _shape="array")
        assert sum(row["n"] for row in outcomes) == scores  # type: ignore[union-attr]
    finally:
        assert running.stop() == 0
        folder.chmod(0o755)
    assert {p.name: (p.read_bytes(), p.stat().st_mode) for p in folder.iterdir()} == files
    assert "immutable" in "".join(running.output)


@pytest.mark.e2e
def test_an_older_database_is_served_as_it_is_and_never_migrated(db: Path) -> None:
    pytest.importorskip("datasette")
    _downgrade_to_m002(db)
    migrations = rows(db, "select name from _migrations order by rowid")
    _settled(db)
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    running = Server(db)
    try:
        said = [line for line in running.output if "older database" in line]
        assert len(said) == 1 and "never upgraded" in said[0]
        assert running.get("/-/metadata.json")["databases"]["study"]["queries"] == {}  # type: ignore[index]
        assert running.get("/study/scores.json", _shape="array")  # the tables are there to browse
        front = running.get("/")
        assert "Start with a question" not in front  # type: ignore[operator]
    finally:
        assert running.stop() == 0
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    assert rows(db, "select name from _migrations order by rowid") == migrations
    assert rows(db, "select count(*) from sqlite_master where type = 'view'") == [(0,)]


@pytest.mark.e2e
def test_a_browser_opened_on_the_redirect_file_gets_in(server: Server, tmp_path: Path) -> None:
    """What 'view --open' does, in a real Chromium: the file:// page -> the token -> the cookie -> the front page.
    (A 302 after the token would lose the SameSite=Strict cookie here: the navigation began on another site.)"""
    browser = browser_or_skip()
    page = view_module._redirect_file(tmp_path, f"{server.url}/?token={server.token}")
    for attempt in range(3):  # an empty dump is headless Chromium's own hiccup (seen ~1 in 10 on busy cores while
        profile = tmp_path / f"profile-{attempt}"  # it follows the refreshes), not an answer: a fresh browser again
        done = subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=10000",
                               "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=180, check=False)
        if done.stdout.strip():
            break
    assert "Start with a question" in done.stdout, done.stdout[-2000:] + done.stderr[-2000:]
    assert "printed" not in done.stdout


@pytest.mark.e2e
def test_open_hands_the_browser_a_private_page_not_the_token(db: Path, tmp_path: Path) -> None:
    """``--open`` runs $BROWSER (webbrowser's rule) with a file:// page that leads to the tokenized URL: the token
    is never on the browser's command line, which other accounts can read."""
    pytest.importorskip("datasette")
    fifo = tmp_path / "browser.fifo"
    os.mkfifo(fifo)
    browser = tmp_path / "browser"
    browser.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > "{fifo}"\n')
    browser.chmod(0o755)
    opened: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: opened.put(fifo.read_text()), daemon=True).start()
    running = Server(db, browser=browser)
    try:
        argument = opened.get(timeout=300).strip()  # the deadline only guards a hang
        assert running.token not in argument and argument.startswith("file://")
        page = Path(urllib.parse.unquote(urllib.parse.urlparse(argument).path))
        assert stat.S_IMODE(page.stat().st_mode) == 0o600 and stat.S_IMODE(page.parent.stat().st_mode) == 0o700
        assert f'url={running.url}/?token={running.token}"' in page.read_text()
    finally:
        assert running.stop() == 0
    assert not page.exists()  # the private folder goes with the server
