"""Results databases built directly through the store's writer (no model): for tests of the read side with
names, outputs and outcomes chosen by the test, including hostile ones."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from medbench_local.engine.base import Generation, ModelInfo
from medbench_local.store import close_database, open_database, writer
from medbench_local.tasks.base import Item, Score


@dataclass
class Side:
    """One model of a synthetic pair: its id and, per item, (outcome, output)."""

    model_id: str
    answers: Sequence[tuple[str, str]]
    settings: dict[str, object] = field(default_factory=dict)


def build_pair_db(path: Path, pair: str, bio: Side, gen: Side, *, task: str = "jama",
                  item_ids: Sequence[str] | None = None, payload_text: str = "case text") -> Path:
    """A database with one pair, one task and one evaluation per side; accuracy 1 for 'correct' items."""
    n = len(bio.answers)
    assert len(gen.answers) == n
    ids = list(item_ids) if item_ids is not None else [f"item-{i}" for i in range(n)]
    db = open_database(path)
    writer.start_run(db, "run-1", {"command": ["synthetic"], "packages": {}, "settings": {}})
    writer.record_pair(db, pair, bio.model_id, gen.model_id, "synthetic pair")
    for role, side in (("biomedical", bio), ("general", gen)):
        info = ModelInfo(side.model_id, f"/models/{role}.gguf", (("b" if role == "biomedical" else "g") * 64),
                         1000, "chat", None, None, metadata={"quantization": "Q4_K_M", "architecture": "llama"})
        writer.record_model(db, info)
        key = f"eval-{role}"
        writer.record_evaluation(db, key, info, role, task, {"task": {"task": task, **side.settings},
                                                             "engine": {"n_ctx": 512}}, "run-1")
        for item_id, (outcome, output) in zip(ids, side.answers):
            item = Item(item_id, {"case": payload_text, "question": "q?", "options": {"A": "x", "B": "y"},
                                  "answer": "A"}, source="synthetic:1")
            generation = Generation(f"prompt for {item_id}", output, 10, 0, 3, "stop", 0.1)
            score = Score(outcome, "A" if outcome == "correct" else "B", "A", "explicit", "detail",
                          {"accuracy": 1.0 if outcome == "correct" else 0.0})
            writer.record_item(db, evaluation=key, run_id="run-1", task=task, item=item, generation=generation,
                               score=score)
    writer.finish_run(db, "run-1", "completed")
    close_database(db)
    return path
