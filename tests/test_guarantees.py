"""The guarantees in the README, each proven on real runs of the demo pair in separate processes:
SIGKILL at random moments loses nothing else, Ctrl-C stops cleanly, readers work while a run writes,
nothing touches the network, inputs can be kept out of the database, a full disk is reported cleanly."""

from __future__ import annotations

import json
import os
import random
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
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


def test_sigkill_at_random_moments_loses_nothing(demo_db: Path, tmp_path: Path) -> None:
    db = tmp_path / "killed.db"
    chance = random.Random(20261125)
    kills = 0
    for _ in range(20):
        proc = start(*DEMO_ARGS, "--db", str(db))
        time.sleep(chance.uniform(0.2, 2.5))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.communicate(timeout=120)
    final = subprocess.run(cli(*DEMO_ARGS, "--db", str(db)), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stderr
    assert kills >= 15  # the runs really were interrupted, most of them mid-way

    assert rows(db, "pragma integrity_check") == [("ok",)]
    assert rows(db, "select count(*), count(distinct evaluation || item) from generations") == [(20, 20)]
    assert rows(db, "select count(*) from scores") == [(20,)]
    assert rows(db, "select count(*) from generations g left join scores s on s.generation_id = g.id "
                    "where s.generation_id is null") == [(0,)]
    killed = snapshot(db)
    reference = snapshot(demo_db, [(r[0], r[1]) for r in killed])
    assert killed == reference  # identical to the uninterrupted run, item by item
    statuses = [s for (s,) in rows(db, "select status from runs")]
    assert statuses.count("completed") >= 1 and "running" in statuses  # killed runs are visible as such


def test_ctrl_c_stops_after_the_item_in_flight_and_resumes(tmp_path: Path) -> None:
    db = tmp_path / "interrupted.db"
    proc = start("run", "--model", "smollm2-135m-instruct", "--task", "jama", "--db", str(db))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait until at least one item is committed
        time.sleep(0.2)
        if db.exists() and _count(db, "select count(*) from scores") >= 1:
            break
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert "Stopped after the item in flight" in err and "Rerun the same command to resume" in err
    assert "Traceback" not in err
    assert rows(db, "select status from runs") == [("interrupted",)]
    done = _count(db, "select count(*) from scores")
    assert 1 <= done < 10
    result = invoke("run", "--model", "smollm2-135m-instruct", "--task", "jama", "--db", str(db),
                    "--config", str(REPO / "models.toml"))
    assert f"{10 - done} generated, {done} already done" in result.output


def _count(db: Path, sql: str) -> int:
    try:
        with sqlite3.connect(db, timeout=1) as conn:
            return int(conn.execute(sql).fetchone()[0])
    except sqlite3.Error:
        return 0


def test_readers_work_while_a_run_writes(tmp_path: Path, in_repo: Path) -> None:
    db = tmp_path / "busy.db"
    proc = start("run", "--pair", "demo", "--task", "jama", "--db", str(db))
    reads = 0
    try:
        while proc.poll() is None:
            if _count(db, "select count(*) from scores") >= 1:
                compared = invoke("compare", "--db", str(db), "--json")
                json.loads(compared.output)
                exported = invoke("export", "--db", str(db), "--format", "jsonl")
                assert all(json.loads(line) for line in exported.output.splitlines())
                reads += 1
            time.sleep(0.3)
    finally:
        out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert reads >= 3  # several reads happened while the writer was active
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
