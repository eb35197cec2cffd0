"""The guarantees in the README, each proven on real runs of the demo pair in separate processes:
SIGKILL at random moments loses nothing else, Ctrl-C stops cleanly, readers work while a run writes,
nothing touches the network, inputs can be kept out of the database, a full disk is reported cleanly."""

from __future__ import annotations

import json
import os
import random
import re
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import REPO, invoke, rows

pytestmark = pytest.mark.e2e

DEMO_ARGS = ["run", "--pair", "demo", "--task", "nejm", "--task", "jama", "--limit", "5"]

# Everything about an item that must be identical however often the run was interrupted.
SNAPSHOT = """
    select e.key, i.key, i.payload, g.prompt, g.output, g.prompt_tokens, g.truncated_tokens, g.completion_tokens,
           g.finish_reason, s.outcome, s.extracted, s.gold, s.method, s.detail, s.metrics
    from scores s join generations g on g.id = s.generation_id join evaluations e on e.key = s.evaluation
    join items i on i.key = s.item {where} order by e.key, i.key"""


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "medbench_local", *args]


def start(*args: str, **kwargs: object) -> subprocess.Popen[str]:
    return subprocess.Popen(cli(*args), cwd=REPO, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            **kwargs)  # type: ignore[call-overload]


def snapshot(db: Path, keys: list[tuple[str, str]] | None = None) -> list[tuple]:
    if keys is None:
        return rows(db, SNAPSHOT.format(where=""))
    wanted = set(keys)
    return [r for r in rows(db, SNAPSHOT.format(where="")) if (r[0], r[1]) in wanted]


def _count(db: Path, sql: str) -> int:
    try:
        with sqlite3.connect(db, timeout=1) as conn:
            return int(conn.execute(sql).fetchone()[0])
    except sqlite3.Error:
        return 0


def wait_until(proc: subprocess.Popen[str], condition: Callable[[], bool], timeout: float = 600) -> bool:
    """Poll ``condition`` until it holds (True) or the process has exited (False). The interval only paces
    the polling; nothing is decided by elapsed time (the timeout is a safety net against a hung test)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if proc.poll() is not None:
            return condition()
        time.sleep(0.01)
    raise AssertionError("the run made no observable progress")


def writer_holds_the_lock(db: Path) -> bool:
    """True while another connection is inside a write transaction (BEGIN IMMEDIATE cannot get the lock)."""
    try:
        conn = sqlite3.connect(db, timeout=0, isolation_level=None)
    except sqlite3.Error:
        return False
    try:
        conn.execute("begin immediate")
        conn.execute("rollback")
        return False
    except sqlite3.OperationalError as exc:
        return "locked" in str(exc) or "busy" in str(exc)
    finally:
        conn.close()


KILL_MOMENTS = ("after the run row exists", "mid-item", "mid-commit")


def test_sigkill_at_moments_chosen_from_progress_loses_nothing(demo_db: Path, tmp_path: Path) -> None:
    """Each run is killed at a moment observed in the database, never after a guessed sleep: as soon as its
    run row exists (model loading), after it committed one or two items (the next item is in flight), or
    while it holds the write lock (inside an item's transaction or its commit, or an earlier write such as
    the schema migrations or the pair record; caught by polling, so when the transactions are too short to catch before two more commits,
    the kill is mid-item instead)."""
    db = tmp_path / "killed.db"
    chance = random.Random(20261125)
    killed_mid_run = 0
    for round_number in range(12):
        done_before = _count(db, "select count(*) from scores")
        if done_before >= 20:
            break
        runs_before = _count(db, "select count(*) from runs")
        moment = KILL_MOMENTS[round_number % len(KILL_MOMENTS)]
        proc = start(*DEMO_ARGS, "--db", str(db))
        if moment == "after the run row exists":
            reached = wait_until(proc, lambda: _count(db, "select count(*) from runs") > runs_before)
        elif moment == "mid-item":
            commits = chance.randint(1, 2)
            reached = wait_until(proc, lambda: _count(db, "select count(*) from scores") >= done_before + commits)
        else:
            reached = wait_until(proc, lambda: writer_holds_the_lock(db) or
                                 _count(db, "select count(*) from scores") >= done_before + 2)
        killed = reached and proc.poll() is None
        if killed:
            proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=300)
        statuses = [s for (s,) in rows(db, "select status from runs order by started_at")][runs_before:]
        assert len(statuses) <= 1, statuses  # this round's run row, if it got that far
        if not killed:
            assert statuses == ["completed"]
        elif not statuses:  # killed in a write before its run row (schema migrations, recording the pair)
            assert moment == "mid-commit"
        elif statuses == ["running"]:
            killed_mid_run += 1  # the killed run stays visible as 'running'
        else:  # the kill landed after the run had finished its last item and closed its row
            assert statuses == ["completed"] and _count(db, "select count(*) from scores") == 20
    final = subprocess.run(cli(*DEMO_ARGS, "--db", str(db)), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stderr

    assert rows(db, "pragma integrity_check") == [("ok",)]
    assert rows(db, "select count(*), count(distinct evaluation || item) from generations") == [(20, 20)]
    assert rows(db, "select count(*) from scores") == [(20,)]
    assert rows(db, "select count(*) from generations g left join scores s on s.generation_id = g.id "
                    "where s.generation_id is null") == [(0,)]
    killed_rows = snapshot(db)
    reference = snapshot(demo_db, [(r[0], r[1]) for r in killed_rows])
    assert killed_rows == reference  # identical to the uninterrupted run, item by item
    assert killed_mid_run >= 1
    assert rows(db, "select status from runs order by started_at desc limit 1") == [("completed",)]


@pytest.mark.parametrize("stop_signal", ["SIGINT", "SIGTERM", "SIGHUP"])
def test_a_stop_signal_finishes_the_item_in_flight_and_resumes(tmp_path: Path, stop_signal: str) -> None:
    db = tmp_path / "interrupted.db"
    proc = start("run", "--model", "smollm2-135m-instruct", "--task", "jama", "--db", str(db))
    assert wait_until(proc, lambda: _count(db, "select count(*) from scores") >= 1)  # one item committed
    proc.send_signal(getattr(signal, stop_signal))
    committed_when_signalled = _count(db, "select count(*) from scores")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert "Stopped after the item in flight" in err and "Rerun the same command to resume" in err
    assert "Traceback" not in err and (f"({stop_signal})" in err) == (stop_signal != "SIGINT")
    assert rows(db, "select status from runs") == [("interrupted",)]
    done = _count(db, "select count(*) from scores")
    assert 1 <= done <= committed_when_signalled + 1  # at most the item that was in flight was finished
    assert rows(db, "select count(*) from scores where outcome = 'error'") == [(0,)]
    result = invoke("run", "--model", "smollm2-135m-instruct", "--task", "jama", "--db", str(db),
                    "--config", str(REPO / "models.toml"))
    assert f"{10 - done} generated, {done} already done" in result.output


class _Quiet:
    def begin(self, *args: object) -> None: ...
    def advance(self, *args: object) -> None: ...
    def end(self) -> None: ...
    def note(self, text: str) -> None: ...


def _long_case(tmp_path: Path) -> Path:
    case = {"id": "long", "case": "The patient reports cough and fever. " * 220, "question": "Diagnosis?",
            "options": {"A": "Pneumonia", "B": "Asthma"}, "answer": "A"}
    data = tmp_path / "long.jsonl"
    data.write_text(json.dumps(case) + "\n")
    return data


def test_a_second_ctrl_c_stops_a_long_prompt_evaluation_inside_llama_cpp(tmp_path: Path) -> None:
    """Both Ctrl-Cs are real SIGINTs, sent while llama.cpp evaluates a long prompt (from inside its abort
    poll, i.e. provably during the C call; the test wraps the poll to count and to send them). The first only
    asks to stop after the item; the second must stop the evaluation at llama.cpp's next poll (not after the
    prompt), store nothing for the item, and leave the run marked interrupted."""
    import ctypes
    from dataclasses import replace as replace_spec

    import llama_cpp

    from medbench_local.config import load_config
    from medbench_local.engine.llama import LlamaEngine
    from medbench_local.modelfiles.resolve import require
    from medbench_local.runner import ModelRole, RunOptions, execute, load_tasks
    from medbench_local.store import open_database
    from medbench_local.tasks import get_task

    config = load_config(REPO / "models.toml")
    spec = replace_spec(config.model("smollm2-135m-instruct"), n_ctx=2048)
    polls = {"total": 0, "after_abort": 0}
    keep: list[object] = []

    def factory(spec, path, options):  # type: ignore[no-untyped-def]
        engine = LlamaEngine(spec, path, n_threads=2, n_batch=32)  # many small decodes: a long evaluation
        switch = engine._abort

        def counting_poll(data: object) -> bool:
            polls["total"] += 1
            if polls["total"] in (20, 60):
                os.kill(os.getpid(), signal.SIGINT)  # first, then second Ctrl-C, during the evaluation
            if switch.tripped:
                polls["after_abort"] += 1
            return switch.tripped

        callback = llama_cpp.ggml_abort_callback(counting_poll)
        keep.append(callback)
        llama_cpp.llama_set_abort_callback(engine._llm._ctx.ctx, callback, ctypes.c_void_p())
        return engine

    db = open_database(tmp_path / "r.db")
    tasks = load_tasks([(get_task("nejm"), _long_case(tmp_path))], None)
    with pytest.raises(KeyboardInterrupt):
        execute(db, config, [ModelRole(spec, "general")], tasks, {spec.id: require(spec)}, RunOptions(n_batch=32),
                _Quiet(), engine_factory=factory)
    db.conn.close()
    assert polls["after_abort"] == 1  # llama.cpp stopped at its first poll after the second Ctrl-C
    assert polls["total"] < 100  # ... long before the prompt was evaluated (thousands of polls)
    assert rows(tmp_path / "r.db", "select status from runs") == [("interrupted",)]
    assert rows(tmp_path / "r.db", "select count(*) from generations") == [(0,)]


def test_the_abort_switch_is_read_by_llama_cpp_itself(tmp_path: Path) -> None:
    """The real switch (a C-level poll, no Python during the computation): tripped, the very first decode
    of a prompt stops inside its first batch; untripped, the same prompt is evaluated in full."""
    from dataclasses import replace as replace_spec

    import llama_cpp

    from medbench_local.config import load_config
    from medbench_local.engine.base import GenerateRequest
    from medbench_local.engine.llama import LlamaEngine
    from medbench_local.modelfiles.resolve import require
    from medbench_local.prompting import Prompt

    spec = replace_spec(load_config(REPO / "models.toml").model("smollm2-135m-instruct"), n_ctx=2048)
    engine = LlamaEngine(spec, require(spec), n_threads=2, n_batch=64)
    try:
        request = GenerateRequest(Prompt(system="", user="cough and fever " * 50, answer_prefix=""), max_tokens=2)
        engine.abort()
        with pytest.raises(KeyboardInterrupt):
            engine.generate(request)
        aborted_after = llama_cpp.llama_perf_context(engine._llm._ctx.ctx).n_p_eval
        engine._abort.reset()
        generation = engine.generate(request)
        evaluated_in_full = llama_cpp.llama_perf_context(engine._llm._ctx.ctx).n_p_eval
        assert generation.prompt_tokens > 128
        assert aborted_after < 64 <= evaluated_in_full  # stopped inside the first batch of 64 prompt tokens
    finally:
        engine.close()


def test_two_runs_of_the_same_model_and_task_share_the_items(tmp_path: Path) -> None:
    """The first run is frozen (SIGSTOP) once it committed an item, so it holds the next one; the second
    run must leave that item to it and do the rest; then the first resumes and finishes its item. Every item
    is generated exactly once, and neither run fails with a constraint error."""
    db = tmp_path / "shared.db"
    args = ("run", "--model", "smollm2-135m-instruct", "--task", "jama", "--db", str(db))
    first = start(*args)
    assert wait_until(first, lambda: _count(db, "select count(*) from scores") >= 1)
    while True:  # freeze it outside a write transaction, so that the second run is never blocked
        first.send_signal(signal.SIGSTOP)
        if not writer_holds_the_lock(db):
            break
        first.send_signal(signal.SIGCONT)
        time.sleep(0.01)
    try:
        second = subprocess.run(cli(*args), cwd=REPO, capture_output=True, text=True, timeout=600)
    finally:
        first.send_signal(signal.SIGCONT)
    out, err = first.communicate(timeout=600)
    assert second.returncode == 0, second.stderr
    assert first.returncode == 0, err
    assert "constraint" not in (second.stderr + err).lower() and "locked" not in (second.stderr + err)
    generated = [int(re.search(r"(\d+) generated", text).group(1)) for text in (out, second.stdout)]  # type: ignore[union-attr]
    assert sum(generated) == 10  # every item generated exactly once, by one of the two runs
    assert rows(db, "select count(*), count(distinct item) from generations") == [(10, 10)]
    assert rows(db, "pragma integrity_check") == [("ok",)]


def test_readers_work_while_a_run_writes(tmp_path: Path, in_repo: Path) -> None:
    """Three rounds, each at an observed point of a pair run (1, 2 and 3 committed items of 20): while the
    run is mid-way and a write transaction is held open (so the run cannot even finish meanwhile),
    compare and export read the database without "database is locked"."""
    db = tmp_path / "busy.db"
    proc = start("run", "--pair", "demo", "--task", "jama", "--db", str(db))
    reads = 0
    try:
        for committed in (1, 2, 3):
            assert wait_until(proc, lambda: _count(db, "select count(*) from scores") >= committed)
            holder = sqlite3.connect(db, timeout=60, isolation_level=None)
            holder.execute("begin immediate")  # a writer mid-transaction, as the run is during every item
            try:
                assert _count(db, "select count(*) from runs where status = 'running'") == 1
                # mid-run the general model has not started: compare says so (exit 1, one line) or, once
                # both have results, prints JSON; either way it reads, never "database is locked"
                compared = invoke("compare", "--db", str(db), "--json", "--resamples", "200", expect=None)
                assert "locked" not in compared.output and "Traceback" not in compared.output
                if compared.exit_code == 0:
                    json.loads(compared.output)
                else:
                    assert compared.exit_code == 1 and "only one model has results" in compared.output, \
                        compared.output
                exported = invoke("export", "--db", str(db), "--format", "jsonl")
                assert len(exported.output.splitlines()) >= committed
                reads += 1
            finally:
                holder.execute("rollback")
                holder.close()
    finally:
        out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert reads == 3
    assert "locked" not in err


NETWORK_GUARD = """
import sys
def guard(event, args):
    if event in ("socket.connect", "socket.bind", "socket.getaddrinfo", "socket.sendto", "urllib.Request"):
        sys.stderr.write(f"NETWORK ATTEMPT: {event} {args!r}\\n")
        raise RuntimeError("network access attempted during an offline run")
sys.addaudithook(guard)
from medbench_local.cli import main
sys.argv = ["medbench-local", *sys.argv[1:]]
main()
"""


def test_full_offline_run_opens_no_network_connection(tmp_path: Path) -> None:
    db = tmp_path / "offline.db"
    args = ["run", "--pair", "demo", "--task", "jama", "--limit", "2", "--db", str(db)]
    guarded = subprocess.run([sys.executable, "-c", NETWORK_GUARD, *args], cwd=REPO, capture_output=True,
                             text=True, timeout=300)
    assert guarded.returncode == 0, guarded.stderr
    assert "NETWORK ATTEMPT" not in guarded.stderr
    assert rows(db, "select count(*) from scores") == [(4,)]
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-rn", "true"], capture_output=True).returncode == 0:
        isolated = subprocess.run([unshare, "-rn", *cli(*args[:-1], str(tmp_path / "netns.db"))], cwd=REPO,
                                  capture_output=True, text=True, timeout=300)
        assert isolated.returncode == 0, isolated.stderr  # no network interface at all, and it still runs


def test_inputs_can_be_kept_out_of_the_database(tmp_path: Path, in_repo: Path) -> None:
    db = tmp_path / "private.db"
    invoke("run", "--model", "smollm2-135m-instruct", "--task", "jama", "--limit", "2", "--db", str(db),
           "--no-store-inputs")
    content = db.read_bytes() + (db.with_name(db.name + "-wal").read_bytes()
                                 if db.with_name(db.name + "-wal").exists() else b"")
    assert b"potassium" not in content and b"lisinopril" not in content  # words of the first two cases
    records = rows(db, "select g.prompt, g.output, s.outcome, s.gold, i.payload from generations g "
                       "join scores s on s.generation_id = g.id join items i on i.key = g.item")
    assert len(records) == 2
    for prompt, output, outcome, gold, payload in records:
        assert prompt.startswith("[not stored] sha256:") and json.loads(payload)["not_stored"] is True
        assert output is not None and outcome and gold
    assert (os.stat(db).st_mode & 0o777) == 0o600
    exported = invoke("export", "--db", str(db), "--omit-inputs", "--format", "jsonl").output
    assert all("prompt" not in json.loads(line) for line in exported.splitlines())


def test_full_disk_is_one_clear_line_and_leaves_a_consistent_database(tmp_path: Path) -> None:
    db = tmp_path / "full.db"
    invoke("run", "--model", "smollm2-135m-instruct", "--task", "jama", "--limit", "1", "--db", str(db),
           "--config", str(REPO / "models.toml"))
    limit = db.stat().st_size + 24 * 1024  # room for a few more items at most

    def small_disk() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.run(cli("run", "--model", "smollm2-135m-instruct", "--task", "jama", "--db", str(db)),
                          cwd=REPO, capture_output=True, text=True, timeout=300, preexec_fn=small_disk)
    assert proc.returncode == 1, proc.stderr
    error_lines = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert len(error_lines) == 1 and "cannot write results" in error_lines[0] and "Traceback" not in proc.stderr
    assert rows(db, "pragma integrity_check") == [("ok",)]
    (generations, scores), = rows(db, "select (select count(*) from generations), (select count(*) from scores)")
    assert 1 <= generations == scores < 10


def test_read_only_database_is_refused_up_front(tmp_path: Path, in_repo: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "ro.db"
    invoke("run", "--model", "smollm2-135m-instruct", "--task", "jama", "--limit", "1", "--db", str(db))
    before = db.read_bytes()
    db.chmod(0o400)
    if os.access(db, os.W_OK):  # root ignores file modes (as in CI): make the permission check see read-only
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if mode == os.W_OK and Path(p) == db
                            else real_access(p, mode, **kw))
    result = invoke("run", "--model", "smollm2-135m-instruct", "--task", "jama", "--db", str(db), expect=1)
    assert "read-only" in result.output and "Traceback" not in result.output
    assert db.read_bytes() == before
