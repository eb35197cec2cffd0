"""The contamination probe with real models (the demo pair): the signals separate the planted members (texts every
web crawl holds) from freshly written non-members, and the command runs, stores and resumes on a bundled task.

Bounds are loose on purpose (docs/contamination.md has the measured numbers: AUROC of the loss 0.97 with SmolLM2,
1.00 with Gemma 3 270M, on 18 + 18 passages); they guard the ranking, not the digits."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from medbench_local.config import load_config
from medbench_local.contamination.roc import auroc
from medbench_local.contamination.signals import TokenStats, item_signals, member_score, position_stats
from medbench_local.engine.llama import LlamaEngine
from medbench_local.runner.checks import locate_models
from medbench_local.runner.inputs import ModelRole
from medbench_local.tasks.datafiles import jsonl_records

from .conftest import REPO, invoke

pytestmark = pytest.mark.e2e
PLANTED = REPO / "tests" / "data" / "contamination"


def _texts(name: str) -> list[str]:
    return [record["text"] for _, record in jsonl_records(PLANTED / name)]


@pytest.mark.parametrize("model_id, bounds", [
    ("smollm2-135m-instruct", {"loss": 0.85, "min_k": 0.85, "zlib": 0.8}),
    ("gemma3-270m", {"loss": 0.9, "min_k": 0.9, "zlib": 0.9, "min_k_pp": 0.85}),
])
def test_the_signals_separate_planted_members_from_fresh_text(model_id: str, bounds: dict[str, float]) -> None:
    config = load_config(REPO / "models.toml")
    role = ModelRole(config.model(model_id), "general")
    engine = LlamaEngine(role.spec, locate_models([role], config=config)[model_id])
    try:
        found = {}
        for name in ("members.jsonl", "nonmembers.jsonl"):
            found[name] = []
            for text in _texts(name):
                parts: list[TokenStats] = []
                engine.text_logits(text, lambda rows, targets: parts.append(position_stats(rows, targets)))
                found[name].append(item_signals(TokenStats.concat(parts), text))
    finally:
        engine.close()
    members, fresh = found["members.jsonl"], found["nonmembers.jsonl"]
    assert sum(s["loss"] for s in members) / len(members) < sum(s["loss"] for s in fresh) / len(fresh)
    for signal, bound in bounds.items():
        area = auroc([member_score(signal, s[signal]) for s in members],
                     [member_score(signal, s[signal]) for s in fresh])
        assert area > bound, (model_id, signal, area)


def test_the_command_probes_the_demo_pair_stores_and_resumes(tmp_path: Path, in_repo: Path) -> None:
    db = tmp_path / "c.db"
    args = ["contamination", "--pair", "demo", "--task", "jama", "--limit", "3", "--db", str(db), "--json",
            "--resamples", "200"]
    first = json.loads(invoke(*args).stdout)
    with sqlite3.connect(db) as conn:
        rows = conn.execute("select p.role, s.variant, count(*) from contamination_signals s join "
                            "contamination_probes p on p.key = s.probe group by 1, 2 order by 1, 2").fetchall()
        identity = json.loads(conn.execute("select identity from contamination_probes limit 1").fetchone()[0])
    assert rows == [("biomedical", "control", 3), ("biomedical", "original", 3), ("general", "control", 3),
                    ("general", "original", 3)]
    assert {"probe_version", "text_version", "k", "control", "seed", "engine"} <= set(identity)
    assert identity["engine"]["model_sha256"]
    task = first["tasks"][0]
    assert [s["signal"] for s in task["signals"]] == ["loss", "zlib", "min_k", "min_k_pp"]
    assert all(s["items"] == 3 for s in task["signals"])
    again = invoke(*args[:-3], "--resamples", "200")  # a rerun: everything stored, nothing scored
    assert "0 texts scored, 12 already stored" in again.output
    second = json.loads(invoke(*args).stdout)
    assert second == first  # the same stored rows, the same seeded statistics
