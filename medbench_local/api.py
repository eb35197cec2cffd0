"""The Python API: ``evaluate``, ``compare`` and ``results``, for notebooks and scripts.

Why the CLI calls these too: ``medbench-local run``, ``compare`` and ``export`` are translations of options into
these functions and of what they return into lines and tables (cli/run.py, cli/compare.py, cli/export.py), so a
script and a command with the same arguments assemble the same run, store the same rows and compute the same
numbers; there is no second code path to drift. Every function passes the same gates as a command: its inputs
(the database, models.toml, data files, a prompt file) are remembered for the call, so no output of the call may
replace them (gates/files.py), and bad input raises :class:`medbench_local.errors.UserError` with the one line the
command would print.

A sketch (the full, runnable version: docs/python-api.md)::

    import medbench_local as mb

    run = mb.evaluate(tasks=["jama"], pairs=["demo"], limit=5, db="results.db")
    comparison = mb.compare("results.db", pairs=["demo"])
    for row in comparison.records():
        print(row["task"], row["metric"], row["delta"], row["verdict"])
    items = mb.results("results.db")           # one record per item (export's rows)
    frame = items.to_pandas()                  # when pandas is installed
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .airgap.netguard import NetworkGuard
from .analysis.export import aggregate_rows, item_rows
from .analysis.pair_sources import check_models, selected_pairs
from .analysis.paired import PairReport, compare_pairs
from .analysis.retrieval_quality import arm_quality
from .config import read_config
from .contamination.compared import Contamination, contamination_of, row_json
from .errors import StoreError, UserError
from .gates.files import command_scope, remember_database, remember_input
from .retrieval.gold import read_gold
from .runner import LIMIT_MODES, Reporter, RunOptions, RunSummary, Shard, execute, parse_shard, plan
from .runner.context import MAX_BATCH, MAX_LLAMA_SEED, MAX_RESAMPLES, MAX_STATS_SEED, MAX_THREADS, MIN_RESAMPLES
from .runner.modes import SCORING
from .store import close_database
from .store.database import reading
from .tasks import Score, get_task

__all__ = ["Comparison", "Records", "RunResult", "compare", "evaluate", "results"]

log = logging.getLogger("medbench_local")

PathLike = str | Path


class Records(list[dict[str, Any]]):
    """Rows as plain dicts (JSON-ready: what ``export`` and ``compare --json`` write), in a list that also turns
    into a pandas DataFrame. pandas is optional: ``to_pandas`` says how to get it when it is missing."""

    def to_pandas(self) -> Any:
        try:
            import pandas
        except ImportError:
            raise UserError("to_pandas needs pandas, which is not installed (pip install pandas); the records "
                            "themselves are plain dicts") from None
        return pandas.DataFrame.from_records(list(self))


@dataclass(frozen=True)
class RunResult:
    """What ``evaluate`` did: the run's id and status (``completed``, ``interrupted``: stopped by a signal after
    the item in flight, ``failed``: every item failed), its counts, and what to run next."""

    db: Path
    summary: RunSummary
    hosts: tuple[str, ...] = ()
    partners: Mapping[str, list[str]] = field(default_factory=dict)

    @property
    def run_id(self) -> str:
        return self.summary.run_id

    @property
    def status(self) -> str:
        return self.summary.status

    def results(self, **filters: Any) -> Records:
        """This database's per-item records (``results(db, **filters)``)."""
        return results(self.db, **filters)

    def compare(self, **options: Any) -> Comparison:
        """This database's comparison (``compare(db, **options)``)."""
        return compare(self.db, **options)


@dataclass(frozen=True)
class Comparison:
    """Each selected pair's report (``analysis.paired.PairReport``: rows with estimates, CIs, tests and verdicts,
    and the notes a reader must see) and the notes on where pairs came from."""

    reports: list[PairReport]
    notes: list[str]
    contamination: Contamination = field(default_factory=Contamination)
    retrieval_quality: dict[str, list[str]] = field(default_factory=dict)  # pair -> its retrieval arms' lines

    def records(self) -> Records:
        """One record per pair, task, data, scoring mode and metric: exactly ``compare --json``'s objects (with
        a stored contamination probe, its shifts; with ``exclude_flagged``, the Δ without the flagged items)."""
        return Records(row_json(report, row, self.contamination) for report in self.reports for row in report.rows)

    def to_pandas(self) -> Any:
        return self.records().to_pandas()

    @property
    def empty(self) -> bool:
        """Nothing was compared (no pair has results on the same data from both models)."""
        return not any(report.rows for report in self.reports)


@contextmanager
def _gated(*, databases: Sequence[PathLike | None] = (), inputs: Sequence[PathLike | None] = ()) -> Iterator[None]:
    """One call = one command for the files gate: its inputs are remembered (on top of an enclosing command's,
    when the CLI is the caller) and forgotten afterwards."""
    with command_scope(inherit=True):
        for database in databases:
            if database is not None:
                remember_database(Path(database))
        for path in inputs:
            if path is not None:
                remember_input(Path(path))
        yield


def _names(value: str | Sequence[str] | None, what: str) -> tuple[str, ...]:
    """A name list given as a sequence or as a comma-separated string (as ``--task a,b``), each once."""
    if value is None:
        return ()
    parts = value.split(",") if isinstance(value, str) else list(value)
    names: list[str] = []
    for part in parts:
        if not isinstance(part, str) or not part.strip():
            raise UserError(f"{what}: {part!r} is not a name")
        if part.strip() not in names:
            names.append(part.strip())
    return tuple(names)


def _bounded(name: str, value: int | None, low: int, high: int) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high):
        raise UserError(f"{name}={value!r}: expected a whole number from {low} to {high}")


def _one_of(name: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise UserError(f"{name}={value!r}: expected one of {', '.join(allowed)}")


def _limit(value: int | float | None) -> int | float | None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 1) \
            or (isinstance(value, float) and 0.0 < value < 1.0):
        return value
    raise UserError(f"limit={value!r}: expected a number of items (>= 1) or a fraction in (0, 1) such as 0.1")


class _LogReporter:
    """The default progress of ``evaluate``: a line per model and task on the ``medbench_local`` logger (a
    library prints nothing by itself; ``logging.basicConfig(level=logging.INFO)`` shows it). The CLI passes its
    progress bar instead."""

    def __init__(self) -> None:
        self._label = ""
        self._done = 0

    def begin(self, model_id: str, task_id: str, total: int, already_done: int) -> None:
        self._label, self._done = f"{model_id} · {task_id}", 0
        log.info("%s: %d items (%d already done)", self._label, total, already_done)

    def advance(self, score: Score, tokens: int, seconds: float) -> None:
        self._done += 1

    def end(self) -> None:
        if self._label:
            log.info("%s: %d items evaluated", self._label, self._done)

    def note(self, text: str) -> None:
        log.info("%s", text)


def evaluate(tasks: str | Sequence[str], *, pairs: str | Sequence[str] = (), models: str | Sequence[str] = (),
             arms: str | Sequence[str] = (),
             data: Mapping[str, PathLike] | None = None, db: PathLike = "results.db", config: PathLike | None = None,
             limit: int | float | None = None, limit_mode: str = "random", shard: str | None = None,
             seed: int = 1234, threads: int | None = None, batch_size: int = 512, prompts: PathLike | None = None,
             scoring: str = "generate", loglik_target: str = "letter", kv_reuse: bool = True,
             document_order: str = "per-question", retry_errors: bool = False, reference_quirks: bool = False,
             accept_changed_model: bool = False, allow_cpu: bool = False, store_inputs: bool = True,
             reporter: Reporter | None = None, notify: Callable[[str], None] | None = None,
             command: Sequence[str] | None = None) -> RunResult:
    """Run models (the members of ``pairs``, ``models``, and ``arms``: models with retrieval, docs/retrieval.md)
    on ``tasks`` and store every prompt, generation and score in ``db``: exactly ``medbench-local run`` (its ``--help`` explains every option; the keyword arguments
    carry the same names with underscores). Running the same call again resumes.

    ``data``: task id -> data file or folder (default: ./bench_data/<task>, else the shipped sample). ``notify``
    receives the lines ``run`` prints before it starts (which default data was taken, which hosts a served model
    reaches). A KeyboardInterrupt stops after the item in flight and is re-raised, with everything before it
    committed. Returns the run's summary: check ``status`` (``failed`` when every item failed: the first error
    is in ``summary.first_error``; ``interrupted`` when a SIGTERM or SIGHUP stopped it after the item in flight).
    """
    task_ids = _names(tasks, "tasks")
    pair_names, arm_ids = _names(pairs, "pairs"), _names(arms, "arms")
    model_ids = tuple(dict.fromkeys((*_names(models, "models"), *arm_ids)))
    _one_of("limit_mode", limit_mode, LIMIT_MODES)
    _one_of("scoring", scoring, list(SCORING))
    _one_of("loglik_target", loglik_target, ("letter", "text"))
    _bounded("seed", seed, 0, MAX_LLAMA_SEED)
    _bounded("threads", threads, 1, MAX_THREADS)
    _bounded("batch_size", batch_size, 1, MAX_BATCH)
    limit = _limit(limit)
    say = notify or (lambda line: log.info("%s", line))
    db_path = Path(db).expanduser()
    explicit = {task: Path(path).expanduser() for task, path in (data or {}).items()}
    with _gated(databases=[db_path], inputs=[config, prompts, *explicit.values()]):
        parsed_shard: Shard | None = parse_shard(shard) if shard is not None else None
        if not task_ids:
            raise UserError("nothing to run: give tasks (e.g. tasks=['jama']; 'medbench-local tasks list')")
        for task_id in task_ids:  # every name first: an unknown task is named as such
            get_task(task_id)
        for task_id in explicit:
            if task_id not in task_ids:
                raise UserError(f"data names task '{task_id}', which is not among the tasks ({', '.join(task_ids)})")
        loaded_config = read_config(Path(config) if config is not None else None)
        for arm in arm_ids:
            if arm in loaded_config.models and not loaded_config.models[arm].is_arm:
                raise UserError(f"--arm {arm}: '{arm}' is a model, not an arm; run it with --model {arm}")
        chosen_models = plan.pick_models(loaded_config, pair_names, model_ids)
        chosen = []
        for task_id in task_ids:
            chosen.append(plan.data_choice(task_id, explicit))
            if chosen[-1].shown is not None:
                say(f"{task_id}: no --data given, using {chosen[-1].shown} (its full path is recorded in the run: "
                    "'medbench-local runs')")
        modes = plan.scoring_modes(scoring)
        prepared = plan.prepare(loaded_config, chosen_models, chosen,
                                prompts=Path(prompts) if prompts is not None else None,
                                reference_quirks=reference_quirks, document_order=document_order, limit=limit,
                                limit_mode=limit_mode, seed=seed, shard=parsed_shard, modes=modes,
                                loglik_target=loglik_target, allow_cpu=allow_cpu)
        if prepared.hosts:
            say(f"served models: this run reaches {', '.join(prepared.hosts)} and no other host (network guard)")
        database, created = plan.open_for_run(db_path, prepared, accept_changed_model)
        recorded = plan.recorded_pairs(database, loaded_config, pair_names, model_ids)
        options = RunOptions(seed=seed, n_threads=threads, n_batch=batch_size, limit=limit, limit_mode=limit_mode,
                             retry_errors=retry_errors, store_inputs=store_inputs, allow_cpu=allow_cpu,
                             shard=parsed_shard, scoring=modes, loglik_target=loglik_target, kv_reuse=kv_reuse,
                             command=list(command) if command is not None else _call_line(task_ids, pair_names,
                                                                                          model_ids, db_path))
        progress = reporter or _LogReporter()
        guard = NetworkGuard(allow=prepared.hosts) if prepared.hosts else nullcontext()
        started = False
        try:
            with guard:
                summary = execute(database, loaded_config, prepared.models, prepared.tasks, prepared.paths, options,
                                  progress, pairs=recorded)
            started = True
            partners = plan.partners_to_run(database, loaded_config, prepared.models, prepared.tasks)
        except KeyboardInterrupt:
            started = True
            progress.end()
            raise
        except sqlite3.Error as exc:  # e.g. disk full: the item in flight was rolled back, the rest is intact
            progress.end()
            raise StoreError(f"{db_path}: cannot write results ({exc}); everything committed before is intact, "
                             "free space or fix permissions and rerun the same command to resume") from None
        finally:
            if started:
                close_database(database)
            else:
                plan.close_or_discard(database, db_path, created)
    return RunResult(db_path, summary, tuple(prepared.hosts), partners)


def _call_line(tasks: Sequence[str], pairs: Sequence[str], models: Sequence[str], db: Path) -> list[str]:
    """What the run records as its command line when a script, not the CLI, started it: the equivalent command,
    after the API's name in place of the program ('runs' shows it as that command, marked "from Python")."""
    return (["medbench_local.evaluate", "run", "--task", ",".join(tasks)] + (["--pair", ",".join(pairs)] if pairs else [])
            + (["--model", ",".join(models)] if models else []) + ["--db", str(db)])


def compare(db: PathLike = "results.db", *, pairs: str | Sequence[str] = (), models: Sequence[str] | None = None,
            tasks: str | Sequence[str] = (), config: PathLike | None = None, resamples: int = 10_000,
            seed: int = 0, allow_different_data: bool = False, exclude_flagged: bool = False,
            gold: PathLike | None = None) -> Comparison:
    """Each pair's biomedical model against its general counterpart on the same items, with paired statistics:
    exactly ``medbench-local compare`` (its ``--help`` explains the numbers). ``models``: two model ids,
    biomedical first, paired ad hoc (``--models BIO GEN``). Nothing pairable is not an error here: the
    comparison is ``empty`` and its reports' notes say why. ``exclude_flagged``: where a contamination probe is
    stored (``medbench-local contamination``), every delta is also recomputed on the items it did not flag.
    ``gold``: a CSV (item_id,gold_passage) for retrieval arms whose items carry no ``gold_passage``; the
    comparison's ``retrieval_quality`` then gives recall@k and MRR per pair (docs/retrieval.md)."""
    model_pair = _model_pair(models)
    _bounded("resamples", resamples, MIN_RESAMPLES, MAX_RESAMPLES)
    _bounded("seed", seed, 0, MAX_STATS_SEED)
    db_path = Path(db).expanduser()
    with _gated(databases=[db_path], inputs=[config, gold]), reading(db_path) as database:
        gold_passages = read_gold(Path(gold)) if gold is not None else {}
        task_ids = _names(tasks, "tasks")
        selection = selected_pairs(database, db_path, Path(config) if config is not None else None,
                                   _names(pairs, "pairs"), model_pair, task_ids)
        reports = compare_pairs(database, selection.pairs, task_filter=task_ids, resamples=resamples, seed=seed,
                                allow_different_data=allow_different_data)
        found = contamination_of(database, selection.pairs, reports, task_filter=task_ids, resamples=resamples,
                                 seed=seed, allow_different_data=allow_different_data,
                                 exclude_flagged=exclude_flagged)
        quality: dict[str, list[str]] = {}
        for report in reports:
            for model in (report.biomedical_model, report.general_model):
                for task in dict.fromkeys(row.task for row in report.rows):
                    arm = arm_quality(database, model, task, gold_passages)
                    if arm is not None:
                        quality.setdefault(report.pair, []).append(arm.line())
        return Comparison(reports, list(selection.conflicts), found, quality)


def results(db: PathLike = "results.db", *, aggregate: bool = False, pairs: str | Sequence[str] = (),
            models: Sequence[str] | None = None, tasks: str | Sequence[str] = (),
            model_ids: str | Sequence[str] = (), omit_inputs: bool = False, config: PathLike | None = None,
            resamples: int = 10_000, seed: int = 0) -> Records:
    """The stored results as records: one per item of each evaluation (default), or compare's numbers per pair,
    role, task and metric with ``aggregate=True``: exactly ``medbench-local export``'s rows (its ``--help``
    explains the columns); every record has every column (None where a row has no value). ``model_ids`` keeps only those models' rows (``export --model``)."""
    model_pair = _model_pair(models)
    _bounded("resamples", resamples, MIN_RESAMPLES, MAX_RESAMPLES)
    _bounded("seed", seed, 0, MAX_STATS_SEED)
    db_path = Path(db).expanduser()
    with _gated(databases=[db_path], inputs=[config]), reading(db_path) as database:
        pair_names, task_ids, only = _names(pairs, "pairs"), _names(tasks, "tasks"), _names(model_ids, "model_ids")
        selection = selected_pairs(database, db_path, Path(config) if config is not None else None, pair_names,
                                   model_pair, task_ids)
        check_models(database, only, str(db_path))
        only_pairs = bool(pair_names or model_pair)
        rows = aggregate_rows(database, selection.pairs, only_pairs, only, task_ids, resamples, seed) if aggregate \
            else item_rows(database, selection.pairs, only_pairs, only, task_ids, omit_inputs)
        return Records(_uniform(rows))


def _uniform(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every row with every column of every row, in first-seen order (a row without a metric has None there):
    what export writes, and what a DataFrame expects."""
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    return [{column: row.get(column) for column in columns} for row in rows]


def _model_pair(models: Sequence[str] | None) -> tuple[str, str] | None:
    if models is None:
        return None
    if isinstance(models, str) or len(models) != 2:
        raise UserError(f"models={models!r}: give two model ids, biomedical first (e.g. ['bio-id', 'general-id'])")
    return models[0], models[1]
