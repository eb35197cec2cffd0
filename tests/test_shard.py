"""``run --shard K/N``: a deterministic, stable split of every task's items, recorded in the run, not in the
evaluation identity (so the shards' databases merge into one evaluation)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medbench_local.errors import UserError
from medbench_local.runner import Shard, load_tasks, parse_shard, shard_items, shard_of
from medbench_local.tasks import get_task
from medbench_local.tasks.base import Item

from .conftest import REPO, invoke, rows

# ---------------------------------------------------------------------------------------------------------
# the K/N syntax: exactly one convention (1-based), everything else one line


@pytest.mark.parametrize("text, expected", [
    ("1/1", (1, 1)), ("1/3", (1, 3)), ("3/3", (3, 3)), ("2/8", (2, 8)), (" 2 / 8 ", (2, 8)), ("08/10", (8, 10)),
    ("1000/1000", (1000, 1000)),
])
def test_valid_shards_parse(text: str, expected: tuple[int, int]) -> None:
    shard = parse_shard(text)
    assert (shard.index, shard.count) == expected and str(shard) == f"{expected[0]}/{expected[1]}"


@pytest.mark.parametrize("text", [
    "0/3",        # 0-based Slurm array id passed as is
    "4/3", "1/0", "0/0", "-1/3", "1/-3", "3", "/3", "1/", "a/b", "1/3/4", "1.5/3", "1/3.0", "", " ",
    "٢/3",        # a non-ASCII digit
    "1\\3", "1:3", "1 of 3", "99999999999/99999999999",
])
def test_invalid_shards_are_one_line(text: str) -> None:
    with pytest.raises(UserError) as caught:
        parse_shard(text)
    message = str(caught.value)
    assert "\n" not in message and "1 <= K <= N" in message and "SLURM_ARRAY_TASK_ID+1" in message


def test_cli_refuses_a_bad_shard_before_the_database_exists(tmp_path: Path, in_repo: Path) -> None:
    db = tmp_path / "r.db"
    result = invoke("run", "--pair", "demo", "--task", "jama", "--shard", "0/3", "--db", str(db), expect=1)
    assert result.output.count("\n") == 1 and "--shard" in result.output and "Traceback" not in result.output
    assert not db.exists()


# ---------------------------------------------------------------------------------------------------------
# the split: a partition, stable when the data grows, independent of the order and of the other items

ids = st.lists(st.text(min_size=1, max_size=12), min_size=0, max_size=40, unique=True)


@settings(max_examples=200, deadline=None)
@given(ids=ids, count=st.integers(min_value=1, max_value=12), task=st.sampled_from(["jama", "nejm", "medqa"]))
def test_shards_partition_the_items_in_file_order(ids: list[str], count: int, task: str) -> None:
    items = [Item(i, {"n": n}) for n, i in enumerate(ids)]
    parts = [shard_items(items, Shard(k, count), task) for k in range(1, count + 1)]
    assert sorted((item.id for part in parts for item in part), key=ids.index) == ids  # each item exactly once
    for part in parts:
        assert [item.id for item in part] == [i for i in ids if i in {item.id for item in part}]  # file order
    assert all(1 <= shard_of(task, i, count) <= count for i in ids)


@settings(max_examples=200, deadline=None)
@given(old=ids, new=ids, count=st.integers(min_value=1, max_value=12), seed=st.randoms(use_true_random=False))
def test_an_items_shard_never_depends_on_the_other_items(old: list[str], new: list[str], count: int,
                                                         seed: object) -> None:
    grown = old + [i for i in new if i not in old]
    seed.shuffle(grown)  # type: ignore[attr-defined]  # the file grew and was reordered
    before = {i: k for k in range(1, count + 1)
              for i in (item.id for item in shard_items([Item(i, {}) for i in old], Shard(k, count), "jama"))}
    after = {i: k for k in range(1, count + 1)
             for i in (item.id for item in shard_items([Item(i, {}) for i in grown], Shard(k, count), "jama"))}
    assert all(after[i] == before[i] for i in old)


def test_shards_are_reasonably_balanced() -> None:
    """Not a statistics test of SHA-256: a guard against a broken hash (e.g. every item in shard 1)."""
    counts = [0] * 4
    for n in range(4000):
        counts[shard_of("medqa", f"q{n:05d}", 4) - 1] += 1
    assert all(800 < c < 1200 for c in counts), counts


def test_the_shard_is_taken_first_then_the_limit_within_it() -> None:
    task, path = get_task("jama"), REPO / "bench_data" / "jama"
    full = load_tasks([(task, path)], None)[0].items
    for k in (1, 2, 3):
        in_shard = [item.id for item in full if shard_of("jama", item.id, 3) == k]
        sharded = [item.id for item in load_tasks([(task, path)], None, shard=Shard(k, 3))[0].items]
        assert sharded == in_shard
        limited = [item.id for item in load_tasks([(task, path)], 2, shard=Shard(k, 3))[0].items]
        assert set(limited) <= set(in_shard) and len(limited) == min(2, len(in_shard))
    assert parse_shard("1/1") and [i.id for i in load_tasks([(task, path)], None, shard=Shard(1, 1))[0].items] == \
        [i.id for i in full]


# ---------------------------------------------------------------------------------------------------------
# recorded in the run and in what the user sees; not in the evaluation key (real inference, small)


@pytest.mark.e2e
def test_a_shard_run_records_its_shard_and_says_so(tmp_path: Path, in_repo: Path) -> None:
    db = tmp_path / "s.db"
    result = invoke("run", "--model", "smollm2-135m-instruct", "--task", "jama", "--shard", "2/3", "--limit", "1",
                    "--db", str(db))
    assert "shard 2/3" in result.output  # the progress summary line and the run line both name it
    assert "(shard 2/3)" in result.output and "medbench-local merge" in result.output
    (settings_json,) = rows(db, "select settings from runs")[0]
    assert json.loads(settings_json)["shard"] == "2/3"
    (item,) = [r[0] for r in rows(db, "select i.item_id from items i")]
    assert shard_of("jama", item, 3) == 2

    whole = tmp_path / "w.db"  # the same model and task without --shard: the same evaluation key
    invoke("run", "--model", "smollm2-135m-instruct", "--task", "jama", "--limit", "1", "--db", str(whole))
    assert rows(db, "select key from evaluations") == rows(whole, "select key from evaluations")
    assert json.loads(rows(whole, "select settings from runs")[0][0])["shard"] is None


# ---------------------------------------------------------------------------------------------------------
# the Slurm scripts of docs/scale-out.md: their shard arithmetic and checks, with medbench-local stubbed out

SLURM = REPO / "tools" / "slurm"


def _stub_venv(folder: Path) -> Path:
    """A stand-in virtualenv whose medbench-local prints the arguments it was given."""
    venv = folder / "venv"
    (venv / "bin").mkdir(parents=True, exist_ok=True)
    (venv / "bin" / "activate").write_text(f'export PATH="{venv}/bin:$PATH"\n')
    stub = venv / "bin" / "medbench-local"
    stub.write_text('#!/bin/sh\necho "ARGS: $*"\n')
    stub.chmod(0o755)
    return venv


def _script(name: str, folder: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    return subprocess.run(["bash", str(SLURM / name)], capture_output=True, text=True, cwd=folder, timeout=60,
                          env={**clean, "VENV": str(_stub_venv(folder)), "OUT_DIR": str(folder / "shards"), **env})


@pytest.mark.parametrize("base, ids", [("1", range(1, 4)), ("0", range(0, 3))])
def test_the_shard_script_maps_array_indices_to_shards(tmp_path: Path, base: str, ids: range) -> None:
    shards = []
    for task_id in ids:
        done = _script("medbench-shards.sbatch", tmp_path / str(task_id), SHARDS="3", ARRAY_BASE=base,
                       SLURM_ARRAY_TASK_ID=str(task_id), PAIR="demo", TASKS="nejm jama",
                       DATA="jama=/d/jama.csv")
        assert done.returncode == 0, done.stderr
        (line,) = [line for line in done.stdout.splitlines() if line.startswith("ARGS: ")]
        assert "run --pair demo --shard" in line and "--task nejm --task jama --data jama=/d/jama.csv" in line
        shard = line.split("--shard ")[1].split()[0]
        assert line.split("--db ")[1].split()[0].endswith(f"shard-{shard.replace('/', '-of-')}.db")
        shards.append(parse_shard(shard))
    assert [(s.index, s.count) for s in shards] == [(1, 3), (2, 3), (3, 3)]


@pytest.mark.parametrize("env, message", [
    ({"SHARDS": "3", "SLURM_ARRAY_TASK_ID": "0"}, "gives shard 0 of 3: use --array=1-3"),
    ({"SHARDS": "3", "SLURM_ARRAY_TASK_ID": "3", "ARRAY_BASE": "0"}, "gives shard 4 of 3: use --array=0-2"),
    ({"SLURM_ARRAY_TASK_ID": "1"}, "set SHARDS"),
    ({"SHARDS": "3"}, "submit as an array job"),
])
def test_the_shard_script_refuses_indices_outside_the_split(tmp_path: Path, env: dict[str, str],
                                                            message: str) -> None:
    done = _script("medbench-shards.sbatch", tmp_path, **env)
    assert done.returncode != 0 and message in done.stderr and "ARGS" not in done.stdout


def test_the_merge_script_merges_a_complete_split_only(tmp_path: Path) -> None:
    shards = tmp_path / "shards"
    shards.mkdir()
    for k in (1, 3):
        (shards / f"shard-{k}-of-3.db").touch()
    done = _script("medbench-merge.sbatch", tmp_path, MERGED=str(tmp_path / "study.db"))
    assert done.returncode == 1 and "shard 2 of 3 is missing" in done.stderr and "--array=2" in done.stderr
    (shards / "shard-2-of-3.db").touch()
    done = _script("medbench-merge.sbatch", tmp_path, MERGED=str(tmp_path / "study.db"))
    assert done.returncode == 0, done.stderr
    merge_line = done.stdout.splitlines()[0]
    assert merge_line == f"ARGS: merge {tmp_path / 'study.db'} " + " ".join(
        str(shards / f"shard-{k}-of-3.db") for k in (1, 2, 3))
    assert (tmp_path / "study.md").read_text().startswith(f"ARGS: compare --db {tmp_path / 'study.db'}")
    (shards / "shard-1-of-4.db").touch()
    done = _script("medbench-merge.sbatch", tmp_path)
    assert done.returncode == 1 and "different splits" in done.stderr
