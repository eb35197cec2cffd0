"""What a run is made of, from what was asked: the models, each task's data, the configured and loaded tasks, the
located model files and the hosts of served models; all of it checked before a database is touched, then the
database opened for the run.

Why here and not in the command: ``run`` (cli/run.py) is a translation of options into these calls and of the
outcome into lines; what a run consists of, and in which order it is checked (runner/__init__.py, "Order
matters"), is the runner's, so that any caller of the runner assembles a run the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import sqlite_utils

from ..config import Config, PairSpec
from ..errors import UserError
from ..gates.files import database_files
from ..paths import SAMPLES_DIR, default_data
from ..store import close_database, open_database, queries, writer
from ..tasks import get_task
from ..tasks.base import TaskBase
from ..tasks.datafiles import require_regular_file
from .checks import check_arms, check_model_history, check_scoring, check_served, locate_models, require_decoding
from .inputs import LoadedTask, ModelRole, Shard, load_tasks
from .modes import scoring_modes

__all__ = ["DataChoice", "RunPlan", "close_or_discard", "data_choice", "open_for_run", "partners_to_run",
           "pairs_to_record", "pick_models", "prepare", "recorded_pairs", "scoring_modes"]


@dataclass(frozen=True)
class DataChoice:
    """One task's data path; ``shown`` says which default was taken when no ``--data`` named it (else None)."""

    task_id: str
    path: Path
    shown: str | None = None


@dataclass(frozen=True)
class RunPlan:
    """A run that passed every check that needs no database: models, loaded tasks, model files, served hosts."""

    models: list[ModelRole]
    tasks: list[LoadedTask]
    paths: dict[str, Path]
    modes: tuple[str, ...]
    hosts: list[str]


def pick_models(config: Config, pairs: tuple[str, ...], model_ids: tuple[str, ...]) -> list[ModelRole]:
    """The models of the named pairs (with their pair roles) and the single models (with their own roles), each
    once, in that order."""
    chosen: dict[str, ModelRole] = {}
    for name in pairs:
        pair = config.pair(name)
        for role, mid in (("biomedical", pair.biomedical), ("general", pair.general)):
            chosen.setdefault(mid, ModelRole(config.model(mid), role))
    for mid in model_ids:
        spec = config.model(mid)
        chosen.setdefault(mid, ModelRole(spec, spec.role))
    if not chosen:
        raise UserError("nothing to run: give --pair NAME or --model ID (see 'medbench-local models list')")
    return list(chosen.values())


def data_choice(task_id: str, explicit: dict[str, Path]) -> DataChoice:
    """A task's data path: the one given (``explicit``: task id -> path), else ./bench_data/<task>, else the
    sample shipped with medbench-local (paths.default_data; absolute, so the run records where its items came
    from)."""
    if task_id in explicit:
        path = explicit[task_id]
        if path.exists() and not path.is_dir():
            require_regular_file(path)  # a FIFO or device is refused here, before any loader opens it
        return DataChoice(task_id, path)
    get_task(task_id)  # an unknown task is named as such, not as a missing sample
    found = default_data(task_id)
    if found is None:
        raise UserError(f"task '{task_id}': no --data given and no sample for it (./bench_data/{task_id} "
                        "is not here and none ships with medbench-local); pass --data")
    shown = f"./{SAMPLES_DIR}/{task_id}" if found.origin.startswith("sample in") else "the shipped sample"
    return DataChoice(task_id, found.path, shown)


def prepare(config: Config, models: list[ModelRole], data: list[DataChoice], *, prompts: Path | None = None,
            reference_quirks: bool = False, document_order: str | None = None, limit: int | float | None = None,
            limit_mode: str = "random", seed: int = 1234, shard: Shard | None = None,
            modes: tuple[str, ...] = ("generate",), loglik_target: str = "letter", allow_cpu: bool = False
            ) -> RunPlan:
    """Configure and load every task, check the scoring modes, locate and check every model file, make sure this
    llama.cpp build decodes here and every served model's server answers: all before a database exists."""
    task_paths: list[tuple[TaskBase, Path]] = []
    for choice in data:
        task = get_task(choice.task_id).configure(prompts=prompts, reference_quirks=reference_quirks,
                                                  document_order=document_order)
        task_paths.append((task, choice.path))
    tasks = load_tasks(task_paths, limit, limit_mode=limit_mode, seed=seed, shard=shard)
    check_scoring(tasks, modes, loglik_target)
    paths = locate_models(models, allow_cpu, config)
    check_arms(models)  # each arm's index opens and is intact
    require_decoding(models, paths)  # a build that crashes on this CPU is one line here, before anything exists
    hosts = check_served(models, modes)  # served models: reachable, named, key accepted; before the database
    return RunPlan(models, tasks, paths, modes, hosts)


def open_for_run(db_path: Path, plan: RunPlan, accept_changed_model: bool = False
                 ) -> tuple[sqlite_utils.Database, bool]:
    """The results database for ``plan`` (created when missing; ``created`` says so), after refusing a model id
    whose file changed since results were stored under it (then a database this call created is removed)."""
    created = not db_path.exists()
    db = open_database(db_path)
    try:
        check_model_history(db, plan.models, plan.paths, accept_changed_model)
    except UserError:
        close_or_discard(db, db_path, created)
        raise
    return db, created


def close_or_discard(db: sqlite_utils.Database, db_path: Path, created: bool) -> None:
    """Close the database after a run that could not start; remove it when this command created it and no run
    was recorded in it (nothing is left behind for a run that never began)."""
    empty = created and not writer.holds_runs(db)
    close_database(db)
    if empty:
        for file in database_files(db_path):
            file.unlink(missing_ok=True)


def pairs_to_record(config: Config, pair_names: tuple[str, ...], model_ids: tuple[str, ...],
                    recorded: list[dict[str, str]]) -> list[PairSpec]:
    """The models.toml pairs that ``run --model X`` records: those containing X that the database does not hold
    yet, so that ``compare`` and the ``paired_items`` view pair two models run one at a time. A pair the database
    already holds (under its name, with whatever members) is left as it is: only ``run --pair`` redefines one."""
    known = {row["name"] for row in recorded}
    return [pair for pair in config.pairs.values()
            if pair.name not in known and pair.name not in pair_names
            and (pair.biomedical in model_ids or pair.general in model_ids)
            and not any(_arm_not_built(config, member) for member in (pair.biomedical, pair.general)
                        if member not in model_ids)]


def _arm_not_built(config: Config, model_id: str) -> bool:
    """A retrieval arm whose index is not built here: a pair waiting for it is not recorded by another model's run
    (it is recorded once the arm runs, or by 'run --pair')."""
    spec = config.models.get(model_id)
    return spec is not None and spec.retrieval is not None and not spec.retrieval.index.is_file()


def recorded_pairs(db: sqlite_utils.Database, config: Config, pair_names: tuple[str, ...],
                   model_ids: tuple[str, ...]) -> tuple[PairSpec, ...]:
    """The pair definitions a run records: the pairs it was asked to run, and the models.toml pairs of its single
    models that the database does not hold yet (``pairs_to_record``)."""
    return tuple(config.pair(name) for name in pair_names) \
        + tuple(pairs_to_record(config, pair_names, model_ids, queries.pairs(db)))


def partners_to_run(db: sqlite_utils.Database, config: Config, models: list[ModelRole], tasks: list[LoadedTask]
                    ) -> dict[str, list[str]]:
    """Per model of a models.toml pair this run did not include: the tasks of this run it has no results for yet
    (what ``run --model X`` should suggest next, instead of a compare with nothing to pair). A retrieval arm whose
    index is not built is not suggested (``index build`` comes first; ``doctor`` lists it)."""
    ran = {entry.spec.id for entry in models}
    missing: dict[str, list[str]] = {}
    for pair in config.pairs.values():
        members = {pair.biomedical, pair.general}
        if not members & ran:
            continue
        for partner in sorted(members - ran):
            if _arm_not_built(config, partner):
                continue  # an arm whose index is not built here cannot run yet: not a next step
            for loaded in tasks:
                if not queries.has_evaluation(db, partner, loaded.task.id):
                    missing.setdefault(partner, []).append(loaded.task.id)
    return missing
