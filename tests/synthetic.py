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


# ------------------------------------------------------------------------------------------- a study database

# Long names as real studies have them: the read commands must print each of them whole at any width.
STUDY_PAIR = "openbiollm-70b-vs-llama3-70b-instruct"
STUDY_BIO = "openbiollm-llama3-70b-instruct-q4_k_m-imatrix-2024"
STUDY_GEN = "meta-llama-3-70b-instruct-q4_k_m-imatrix-2024-05"


@dataclass(frozen=True)
class StudyTask:
    """One task of the study database: its data file and, per item, each model's (outcome, metrics)."""

    task: str
    data_name: str
    data_sha256: str
    bio: Sequence[tuple[str, dict[str, float]]]
    gen: Sequence[tuple[str, dict[str, float]]]


def _mcq(right: Sequence[bool], extra: Sequence[str] = ()) -> list[tuple[str, dict[str, float]]]:
    out = [("correct", {"accuracy": 1.0}) if r else ("wrong", {"accuracy": 0.0}) for r in right]
    return out + [(outcome, {"accuracy": 0.0}) for outcome in extra]


def study_tasks(n: int = 60) -> list[StudyTask]:
    """Three tasks with clear results: the biomedical model far ahead on jama, the general one ahead on mednli
    (which it also answered on 4 more items: unpaired), and a summary task (long metric names) with no
    significant difference; some unparseable, truncated and error outcomes."""
    third = n // 3
    jama_bio = _mcq([i % 4 != 0 for i in range(n - 2)], ("unparseable", "truncated"))
    jama_gen = _mcq([i % 3 == 0 for i in range(n - 1)], ("error",))
    nli_bio = _mcq([i % 3 == 0 for i in range(n)])
    nli_gen = _mcq([i % 5 != 0 for i in range(n + 4)])
    summary = [("scored", {"rouge1": 0.30 + 0.01 * (i % 7), "rouge2": 0.1, "rougeL": 0.25 + 0.01 * (i % 5),
                           "bertscore_precision": 0.80 + 0.001 * (i % 3)}) for i in range(third)]
    summary_gen = [("truncated" if i == 0 else "scored", {**m, "rougeL": m["rougeL"] + (0.02 if i % 2 else -0.02)})
                   for i, (_, m) in enumerate(summary)]
    return [
        StudyTask("jama", "jama_clinical_challenge_cases_2024_revised.jsonl",
                  "e86b5d1c8094029c85302ef93aeaa74d671c28242142c21da8a8ad730efe80b8", jama_bio, jama_gen),
        StudyTask("mednli", "mednli_test_set_physionet_release_1.0.0.jsonl",
                  "02a6c95e89f36b6267c149b8e000a386abed264e07ccafa000e44d1c05e9a934", nli_bio, nli_gen),
        StudyTask("problem_summary", "bionlp2023_problem_summary_test_set.csv",
                  "7f3c1e0d9b2a4c5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6", summary, summary_gen),
    ]


def build_study_db(path: Path, tasks: Sequence[StudyTask] | None = None, *, pair: str = STUDY_PAIR,
                   bio_id: str = STUDY_BIO, gen_id: str = STUDY_GEN) -> Path:
    """A study database: one pair with long model ids, several tasks on long-named data files with SHA-256
    fingerprints, significant differences both ways, unpaired items, every kind of outcome, and a run whose
    settings name the models and tasks (for ``runs``)."""
    tasks = list(tasks) if tasks is not None else study_tasks()
    db = open_database(path)
    settings = {"models": [{"id": bio_id, "role": "biomedical"}, {"id": gen_id, "role": "general"}],
                "tasks": [{"task": t.task, "data": f"/srv/clinical-data/{t.data_name}", "items": len(t.bio)}
                          for t in tasks]}
    writer.start_run(db, "run-study", {"command": ["medbench-local", "run", "--pair", pair, "--task",
                                                   ",".join(t.task for t in tasks)], "packages": {},
                                       "settings": settings})
    writer.record_pair(db, pair, bio_id, gen_id, "synthetic study pair")
    for role, model_id in (("biomedical", bio_id), ("general", gen_id)):
        info = ModelInfo(model_id, f"/models/{model_id}.gguf", ("b" if role == "biomedical" else "c") * 64,
                         42 * 2**30, "chat", None, None, metadata={"quantization": "Q4_K_M", "architecture": "llama"})
        writer.record_model(db, info)
        for t in tasks:
            key = f"eval-{role}-{t.task}"
            writer.record_evaluation(db, key, info, role, t.task, {
                "task": {"task": t.task, "data_sha256": t.data_sha256, "prompt_sha256": "d" * 64},
                "data": {"path": f"/srv/clinical-data/{t.data_name}", "name": t.data_name},
                "engine": {"n_ctx": 8192, "seed": 0}}, "run-study")
            for i, (outcome, metrics) in enumerate(t.bio if role == "biomedical" else t.gen):
                gold = "ABCD"[i % 4]  # balanced: no "one gold answer holds 90%" warning
                answer = gold if outcome == "correct" else "ABCD"[(i + 1) % 4]
                payload = ({"case": f"Case {i}: a 54-year-old with chest pain radiating to the left arm.",
                            "question": "What is the most likely diagnosis?",
                            "options": {"A": "Acute coronary syndrome", "B": "Costochondritis",
                                        "C": "Pulmonary embolism", "D": "Aortic dissection"}, "answer": gold}
                           if "accuracy" in metrics else {"text": f"Patient note {i}.", "summary": "chest pain"})
                item = Item(f"{t.task}-{i:04d}", payload, source="synthetic:study")
                generation = None if outcome == "error" else Generation(
                    f"<|system|>You are a clinician.\n<|user|>{payload}\n<|assistant|>",
                    f"The answer is {answer}." if "accuracy" in metrics else f"Summary {i} by {role}",
                    40, 0, 12, "length" if outcome == "truncated" else "stop", 0.2)
                score = Score(outcome, answer if "accuracy" in metrics else None,
                              gold if "accuracy" in metrics else None, "explicit", "", dict(metrics))
                writer.record_item(db, evaluation=key, run_id="run-study", task=t.task, item=item,
                                   generation=generation, score=score, error="timeout" if outcome == "error" else None)
    writer.finish_run(db, "run-study", "completed")
    close_database(db)
    return path
