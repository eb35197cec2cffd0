"""CLI habits users bring from lm-evaluation-harness and inspect (issue 20, point 4): lists spelled the way they
type them, ``--data TASK=PATH`` never read as a path, a data file of the wrong format described, usage errors
exit 2 and input errors 1, and a ``run --model`` that suggests what is still missing for its pair."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import REPO, invoke
from .synthetic import Side, build_pair_db


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return build_pair_db(tmp_path / "results.db", "demo", Side("smollm2-135m-instruct", [("correct", "A")] * 3),
                         Side("gemma3-270m", [("incorrect", "B")] * 3))


def test_tasks_is_an_alias_of_task(db: Path) -> None:
    assert invoke("compare", "--db", str(db), "--tasks", "jama").output == \
        invoke("compare", "--db", str(db), "--task", "jama").output


#: (arguments after 'run --model gemma3-270m', exit code, what the one error line must say)
USAGE = [
    (["--task", "jama", "mednli"], 2, "separate several tasks with commas: --task jama,mednli"),
    (["--task", "jama", "mednli", "medqa"], 2, "--task jama,mednli,medqa"),
    (["--task", "jama mednli"], 2, "separate them with commas: --task jama,mednli"),
    (["--tasks", "jama,", "mednli"], 2, "empty name"),
    (["--task", "jama", "--data", "mednli=x.jsonl"], 2, "task 'mednli' is not among --task (jama)"),
    (["--task", "jama", "--data", "a.csv", "--data", "b.csv"], 2, "--data given 2 times"),
    (["--task", "jama,mednli", "--data", "a.csv"], 2, "give --data as TASK=PATH"),
    (["--task", "jama", "--limit", "0"], 2, "Invalid value for '--limit'"),
    (["--task", "jama", "--threads", "0"], 2, "Invalid value for '--threads'"),
    (["--task", "jama", "--batch-size", "0"], 2, "Invalid value for '--batch-size'"),
    (["--task", "jama", "--seed", "-1"], 2, "Invalid value for '--seed'"),
]


@pytest.mark.parametrize(("args", "code", "says"), USAGE, ids=[" ".join(a) for a, _, _ in USAGE])
def test_usage_errors_exit_2_and_say_what_to_type(args: list[str], code: int, says: str, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "results.db"
    result = invoke("run", "--model", "gemma3-270m", "--config", str(REPO / "models.toml"), *args, "--db", str(db),
                    expect=code)
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and says in errors[0], result.output
    assert not db.exists()


@pytest.mark.parametrize("task", ["medqa", "mednli", "meqsum", "pubmedqa"])
def test_a_csv_where_json_lines_are_expected_is_described_as_csv(task: str, tmp_path: Path) -> None:
    data = tmp_path / "cases.csv"
    data.write_text("id,question,answer\n1,What is it?,A\n", encoding="utf-8")
    db = tmp_path / "results.db"
    result = invoke("run", "--model", "gemma3-270m", "--config", str(REPO / "models.toml"), "--task", task,
                    "--data", str(data), "--db", str(db), expect=1)
    line = next(line for line in result.output.splitlines() if line.startswith("Error:"))
    assert f"{data}:1:" in line and "looks like CSV" in line and "'id,question,answer'" in line, line
    assert not db.exists()


@pytest.mark.e2e
def test_run_model_names_the_partner_that_still_has_to_run(tmp_path: Path, in_repo: Path) -> None:
    db = tmp_path / "results.db"
    first = invoke("run", "--model", "gemma3-270m", "--task", "jama", "--limit", "1", "--db", str(db))
    assert f"medbench-local run --model smollm2-135m-instruct --task jama --db {db}" in first.output
    second = invoke("run", "--model", "smollm2-135m-instruct", "--task", "jama", "--limit", "1", "--db", str(db))
    assert "Next, the other model" not in second.output
    assert f"Compare with: medbench-local compare --db {db}" in second.output
    invoke("compare", "--db", str(db))  # and the suggestion works
