"""The study's published numbers, shipped with the package, and how they map onto our tasks and metrics.

Sources (facts, cited):

* ``clue_june2024.csv``: the CLUE per-model results of June 2024, 26 models, values ×100, the numbers
  contemporaneous with Dorfner et al. Transcribed from github.com/dadaamin/CLUE-website, file
  src/views/Dashboard.vue at commit 354cc306a117f698e1878f3e97ba196be7c801ee (``modelScores``: Level 1 and 2;
  ``modelMetrics``: per task; each LongHealth array is [Level 2, Task 1, Task 2, Task 3]). The evaluation code
  that produced them: github.com/TIO-IKIM/CLUE at commit ff75877284133361d15f12e4ab290d230f449dd0.
* ``case_challenges_abstract.csv``: the four case-challenge accuracies quoted in the abstract of Dorfner et al.,
  J Am Med Inform Assoc 2025;32(6):1015-1024, doi:10.1093/jamia/ocaf045.

What each column means and how we compare: docs/study-reference.md#published-numbers.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from importlib import resources

from ..tasks import get_task, task_ids

# Our models.toml ids -> the study's names (CLUE table name, abstract name).
STUDY_NAMES: dict[str, tuple[str, str | None]] = {
    "openbiollm-8b": ("Llama3-OpenBioLLM-8B", "OpenBioLLM-8B"),
    "llama3-8b-instruct": ("Meta-Llama-3-8B-Instruct", "Llama-3-8B-Instruct"),
    "openbiollm-70b": ("Llama3-OpenBioLLM-70B", "OpenBioLLM-70B"),
    "llama3-70b-instruct": ("Meta-Llama-3-70B-Instruct", "Llama-3-70B-Instruct"),
    "biomistral-7b": ("BioMistral-7B", None),
    "mistral-7b-instruct-v0.1": ("Mistral-7B-Instruct-v0.1", None),
    "meditron-7b": ("meditron-7b", None),
    "llama2-7b": ("llama2-7b-hf", None),  # CLUE lists "llama2-7b" and "llama2-7b-hf"; -hf is the HF base [U]
    "meditron-70b": ("meditron-70b", None),
    "llama2-70b": ("Llama-2-70b", None),
}

# The CLUE aggregates (docs/study-reference.md#clue-levels), computed by us from our task scores, under the
# pseudo-task "clue".
AGGREGATE_COLUMNS: dict[str, tuple[str, str]] = {"level1": ("clue", "level1"), "level2": ("clue", "level2")}


def clue_columns() -> dict[str, tuple[str, str]]:
    """CLUE column -> (our task id, our metric key): the aggregates, then what each task declares
    (``Task.study.published_columns``)."""
    columns = dict(AGGREGATE_COLUMNS)
    for task_id in task_ids():
        columns.update({column: (task_id, metric) for column, metric in get_task(task_id).study.published_columns})
    return columns


def clue_level_spec(level: int) -> dict[str, tuple[str, ...]]:
    """task id -> metric names averaged into that task's component of CLUE Level ``level``, as each task
    declares it (``Task.study``: ``clue_level``, ``clue_metrics``), in registry order: what
    ``analysis.clue_levels.level_score`` takes."""
    spec = {}
    for task_id in task_ids():
        study = get_task(task_id).study
        if study.clue_level == level:
            spec[task_id] = tuple(study.clue_metrics)
    return spec


def case_challenge_tasks() -> dict[str, str]:
    """The abstract's benchmark name -> our task id (``Task.study.study_benchmark``)."""
    found = {}
    for task_id in task_ids():
        name = get_task(task_id).study.study_benchmark
        if name:
            found[name] = task_id
    return found


@dataclass(frozen=True)
class PublishedValue:
    study_name: str
    task: str
    metric: str
    value: float  # ×100, as published
    source: str


def _read(name: str) -> list[dict[str, str]]:
    text = resources.files("medbench_local.data").joinpath(name).read_text(encoding="utf-8")
    return list(csv.DictReader(io.StringIO(text)))


def published_values() -> list[PublishedValue]:
    values = []
    columns, benchmarks = clue_columns(), case_challenge_tasks()
    for row in _read("clue_june2024.csv"):
        for column, (task, metric) in columns.items():
            if row.get(column):
                values.append(PublishedValue(row["model"], task, metric, float(row[column]), "CLUE June 2024"))
    for row in _read("case_challenges_abstract.csv"):
        values.append(PublishedValue(row["model"], benchmarks[row["benchmark"]], "accuracy",
                                     float(row["accuracy_percent"]), row["source"]))
    return values


def lookup(model_id: str, aliases: dict[str, str] | None = None) -> dict[tuple[str, str], PublishedValue]:
    """Published values of one of our models, keyed by (task, metric). ``aliases`` maps extra model ids to a
    study name (CLUE or abstract spelling) for users whose models.toml names differ."""
    names = set()
    if aliases and model_id in aliases:
        names.add(aliases[model_id])
    clue, abstract = STUDY_NAMES.get(model_id, (None, None))
    names |= {n for n in (clue, abstract) if n}
    if aliases and model_id in aliases:  # an alias of a CLUE name also brings the abstract name, and back
        for clue_name, abstract_name in STUDY_NAMES.values():
            if aliases[model_id] in (clue_name, abstract_name):
                names |= {n for n in (clue_name, abstract_name) if n}
    return {(v.task, v.metric): v for v in published_values() if v.study_name in names}
