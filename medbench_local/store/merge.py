"""Merging results databases: the shards of one evaluation (``run --shard K/N`` on many machines) into one.

Why merging is safe to do blindly: an evaluation's key is a hash of everything that decides its outputs
(weights, template, llama.cpp build, settings, task settings, data), and an item's key a hash of its task, id
and content. Two databases that hold the same evaluation key and item key therefore hold the *same* result,
unless something went wrong: then the merge refuses and names the item instead of picking one.

The rules, table by table (every column is copied by name from the table's own metadata, so columns that later
migrations add travel along without changes here):

* ``runs`` (uuid ids): kept with their provenance; the same run seen again is skipped, except that a run still
  marked ``running`` (a copy taken mid-run) is replaced by the same run's finished row.
* ``models`` (SHA-256), ``items`` (content hash): the first copy is kept (paths differ between machines).
* ``pairs``: the same name with other members is a conflict.
* ``evaluations``: identical keys merge; the same key under another model id, role or task is a conflict.
* ``generations`` + ``scores``: new items are added under new generation ids (ids are local to each database);
  an item both sides hold must have the same output, outcome, extracted and gold answer, method and metric
  values, else the merge is refused naming it. Timing and run ids may differ (the first copy is kept); metrics
  that only one side has (``rescore`` ran on one of them) are united. An ``error`` item is no result: a copy
  that has the result replaces it (a shard rerun with ``--retry-errors``), never the other way round.
* ``metric_runs``: the same evaluation and metric computed by other weights or versions is a conflict.
* ``retrievals`` (an arm's passages per item): the first copy of an evaluation's item is kept. The index's
  content identity is part of the evaluation key, so both copies name the same passages; only the time differs.

Safety, by construction (the database gate and the files gate):

* **Every input is read through the database gate** (``readonly.open_for_reading``): only regular files, never
  written, never migrated (an input written by an older medbench-local is read through a temporary upgraded
  copy that is never visible on disk), and **diagnosed before anything is written**
  (``database.diagnose(..., text=True)``: schema, storage classes, JSON validity, type, size and depth, metrics
  that are not finite numbers, text that is not UTF-8). An existing OUT is diagnosed the same way.
* **OUT is written through the files gate**: refused when it is an input, or a ``-wal``/``-shm``/``-journal``/
  ``-claims`` file of one (or an input is one of OUT's), a link, or not a regular file. A new OUT is built in a
  private temporary file beside it (``gates.files.atomic_path``) and renamed into place only when complete.
* **The whole work, notes included, is one transaction on OUT**, so a refused, damaged or interrupted merge
  writes nothing. ``stop`` is asked between rows (``merge`` passes the SIGTERM/SIGHUP flag of
  ``signals.StopFlag``): a stop request rolls back and removes the temporary files, like an error does, and so
  does a second signal (KeyboardInterrupt).
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlite_utils

from ..errors import StoreError, UserError
from ..gates.files import atomic_path, check_output_target, database_files
from ..gates.stored import DamagedValue, load_metrics, load_object
from .database import close_database, diagnose, open_database
from .readonly import SQLITE_HEADER, ReadSource, check_files, header, open_for_reading, table_names
from .writer import transaction

# Every table the merge knows how to combine, in an order that satisfies the foreign keys.
MERGED_TABLES: tuple[str, ...] = ("runs", "models", "pairs", "evaluations", "items", "generations", "scores",
                                  "metric_runs", "contamination_probes", "contamination_signals",
                                  "contamination_corpora", "contamination_overlap", "retrievals")
# What must agree when two databases hold the same item of the same evaluation.
COMPARED_GENERATION = ("output",)
COMPARED_SCORE = ("outcome", "extracted", "gold", "method")

Stop = Callable[[], "str | None"]


def _never() -> str | None:
    return None


class MergeConflict(UserError):
    """Two databases disagree about the same thing; nothing was written."""


class MergeStopped(UserError):
    """A stop signal arrived while merging; everything was rolled back."""

    def __init__(self, out: Path, signal_name: str) -> None:
        self.signal_name = signal_name
        super().__init__(f"{out}: merge stopped by {signal_name} before it finished; nothing was written "
                         "(run the same command again to merge)")


@dataclass
class InputReport:
    """What one input contributed."""

    path: Path
    runs: int = 0
    evaluations: int = 0
    added: int = 0            # items (generation + score) new to OUT
    identical: int = 0        # items OUT already held with the same result
    extended: int = 0         # items whose metrics gained values that only this input had
    retried: int = 0          # items stored as 'error' in OUT that this input has a result for
    upgraded: bool = False    # read through an upgraded temporary copy (older schema)
    unfinished_runs: list[str] = field(default_factory=list)


@dataclass
class MergeReport:
    out: Path
    created: bool
    inputs: list[InputReport]
    notes: list[str] = field(default_factory=list)

    @property
    def added(self) -> int:
        return sum(i.added for i in self.inputs)


def merge_databases(out: Path, inputs: list[Path], *, stop: Stop = _never) -> MergeReport:
    """Merge ``inputs`` into ``out`` (created if missing). Raises StoreError / MergeConflict / MergeStopped with
    one line; on any error or stop ``out`` is as it was (or still absent) and no temporary file is left."""
    out = Path(out)
    inputs = [Path(p) for p in inputs]
    _check_paths(out, inputs)
    protect = [file for path in inputs for file in database_files(path)]
    check_output_target(out, protect=protect)  # before OUT is read below (and so remembered as an input)
    with ExitStack() as stack:
        sources: list[tuple[Path, ReadSource]] = []
        for path in inputs:
            source = _open_source(path)
            stack.callback(source.db.conn.close)
            sources.append((path, source))
        created = not os.path.lexists(out)
        if not created:
            _check_existing_out(out)
        report = MergeReport(out, created, [InputReport(path, upgraded=source.upgraded) for path, source in sources])
        with (atomic_path(out, protect=protect) if created else nullcontext(out)) as target:
            with _removing_companions(target if created else None):
                _merge_into(target, out, [(str(path), source.db.conn) for path, source in sources], report, stop)
                if created and os.path.lexists(out):
                    raise StoreError(f"{out}: appeared while merging (another process?); nothing was written to "
                                     "it, run the merge again")
    return report


def _merge_into(target: Path, out: Path, sources: list[tuple[str, sqlite3.Connection]], report: MergeReport,
                stop: Stop) -> None:
    """Everything into the database file ``target`` (OUT itself, or the temporary file that becomes OUT) in one
    transaction, the notes included."""
    db = open_database(target)
    try:
        _check_tables(db, out)
        origin: dict[tuple[str, str], str] = {}
        with transaction(db):
            for (name, conn), counts in zip(sources, report.inputs):
                _merge_one(db.conn, conn, name, str(out), counts, origin, stop)
            report.notes += _split_notes(db.conn, [conn for _, conn in sources])
            report.notes += _coverage_notes(db.conn, out)
            _stop_here(stop, out)
    except sqlite3.Error as exc:  # e.g. disk full while writing OUT: rolled back as a whole
        db.conn.close()
        raise StoreError(f"{out}: cannot write the merged results ({exc}); nothing was written") from None
    except BaseException:
        db.conn.close()
        raise
    close_database(db)  # owner-only: a new OUT from atomic_path, an existing one made so by open_database


@contextmanager
def _removing_companions(target: Path | None) -> Iterator[None]:
    """The ``-wal``/``-shm``/``-journal`` files SQLite may leave beside a temporary OUT are removed on any exit
    (``atomic_path`` removes the file itself)."""
    try:
        yield
    finally:
        if target is not None:
            for file in database_files(target)[1:]:
                file.unlink(missing_ok=True)


def _stop_here(stop: Stop, out: Path | str) -> None:
    signal_name = stop()
    if signal_name:
        raise MergeStopped(Path(out), signal_name)


# ---------------------------------------------------------------------------------------------------------
# paths and sources


def _check_paths(out: Path, inputs: list[Path]) -> None:
    if not inputs:
        raise UserError("merge: give OUT.db and at least one database to merge into it "
                        "(e.g. medbench-local merge merged.db shard1.db shard2.db)")
    if out.is_dir():
        raise StoreError(f"{out}: is a directory, expected a results database file to merge into")
    out_companions = database_files(out)[1:]
    seen: list[Path] = []
    for path in inputs:
        if check_files(path) is None:
            raise StoreError(f"{path}: no such results database")
        if _same_file(path, out):
            raise StoreError(f"{path}: is OUT itself; a database cannot be merged into itself "
                             "(list only the other databases after OUT)")
        if any(_same_file(path, companion) for companion in out_companions) \
                or any(_same_file(out, companion) for companion in database_files(path)[1:]):
            raise StoreError(f"{path}: is a file SQLite keeps beside {out} (or the other way round); give the "
                             "databases themselves")
        for other in seen:
            if _same_file(path, other):
                raise StoreError(f"{path}: listed twice (also as {other})")
        seen.append(path)


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.absolute() == b.absolute() or a.resolve() == b.resolve()


def _open_source(path: Path) -> ReadSource:
    """An input through the database gate, diagnosed before anything is written."""
    if header(path) != SQLITE_HEADER:
        raise StoreError(f"{path}: not a SQLite results database")
    source = open_for_reading(path)
    problem = diagnose(source.db, text=True)
    if problem is not None:
        source.db.conn.close()
        raise StoreError(f"{path}: damaged results database: {problem}; nothing was written")
    return source


def _check_existing_out(out: Path) -> None:
    """OUT must be a results database of ours (or an empty file, or a SQLite file without tables), intact,
    before anything is written to it."""
    info = check_files(out)
    if info is None or info.st_size == 0:
        return
    if header(out) != SQLITE_HEADER:
        raise StoreError(f"{out}: not a SQLite results database; refusing to merge into it")
    if not table_names(out):
        return  # a SQLite file with an empty schema is initialised
    source = open_for_reading(out)
    try:
        problem = diagnose(source.db, text=True)
    finally:
        source.db.conn.close()
    if problem is not None:
        raise StoreError(f"{out}: damaged results database: {problem}; nothing was written")


def _check_tables(db: sqlite_utils.Database, out: Path) -> None:
    """Every table of the schema must have a merge rule: a table a future migration adds without one is
    refused here rather than silently dropped from merged databases."""
    tables = {n for (n,) in db.conn.execute("select name from sqlite_master where type = 'table' "
                                            "and name not like 'sqlite_%'")} - {"_migrations"}
    unknown = sorted(tables - set(MERGED_TABLES))
    if unknown:
        raise StoreError(f"{out}: table '{unknown[0]}' has no merge rule in this medbench-local "
                         "(store/merge.py); refusing to merge rather than drop its rows")


# ---------------------------------------------------------------------------------------------------------
# the merge itself (inside one transaction on the target)


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in conn.execute(f'pragma table_info("{table}")')]


def _rows(conn: sqlite3.Connection, table: str, columns: list[str], stop: Stop, order: str = "rowid"
          ) -> Iterator[dict[str, Any]]:
    """The rows of an input, asking ``stop`` before each (a stop signal ends the merge within one row)."""
    names = ", ".join(f'"{c}"' for c in columns)
    cursor = conn.execute(f'select {names} from "{table}" order by {order}')
    for row in cursor:
        _stop_here(stop, table)
        yield dict(zip(columns, row))


def _insert(conn: sqlite3.Connection, table: str, row: dict[str, Any]) -> int:
    names = ", ".join(f'"{c}"' for c in row)
    marks = ", ".join("?" for _ in row)
    return conn.execute(f'insert into "{table}" ({names}) values ({marks})', list(row.values())).lastrowid or 0


def _one(conn: sqlite3.Connection, sql: str, *params: Any) -> dict[str, Any] | None:
    cursor = conn.execute(sql, params)
    row = cursor.fetchone()
    return None if row is None else dict(zip([d[0] for d in cursor.description], row))


def _short(value: Any, width: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= width else text[:width - 1] + "…"


def _merge_one(dst: sqlite3.Connection, src: sqlite3.Connection, name: str, out: str, counts: InputReport,
               origin: dict[tuple[str, str], str], stop: Stop) -> None:
    for table in MERGED_TABLES:
        missing = [c for c in _columns(dst, table) if c not in _columns(src, table)]
        if missing:
            raise StoreError(f"{name}: table '{table}' has no column '{missing[0]}' (damaged database?)")
    try:
        _merge_runs(dst, src, counts, stop)
        _merge_keyed(dst, src, "models", "sha256", stop)
        _merge_pairs(dst, src, name, out, stop)
        _merge_evaluations(dst, src, name, out, counts, stop)
        _merge_keyed(dst, src, "items", "key", stop)
        _merge_generations(dst, src, name, out, counts, origin, stop)
        _merge_metric_runs(dst, src, name, out, stop)
        for table in ("contamination_probes", "contamination_signals", "contamination_corpora",
                      "contamination_overlap"):  # keyed by a hash of their identity: the first copy wins
            _merge_keyed(dst, src, table, "key", stop)
        _merge_retrievals(dst, src, stop)
    except DamagedValue as exc:  # diagnosed up front; kept so that no value can be a traceback here
        raise StoreError(f"{name} or {out}: damaged results database: {exc}; nothing was written") from None
    except sqlite3.IntegrityError as exc:
        raise StoreError(f"{name}: inconsistent results database ({exc}); nothing was written") from None
    except sqlite3.Error as exc:  # a damaged input, or OUT cannot be written (disk full, locked)
        raise StoreError(f"merging {name} into {out} failed ({exc}); nothing was written") from None


def _merge_runs(dst: sqlite3.Connection, src: sqlite3.Connection, counts: InputReport, stop: Stop) -> None:
    columns = _columns(dst, "runs")
    for row in _rows(src, "runs", columns, stop):
        if row.get("status") == "running":
            counts.unfinished_runs.append(row["id"])
        existing = _one(dst, "select status from runs where id = ?", row["id"])
        if existing is None:
            _insert(dst, "runs", row)
            counts.runs += 1
        elif existing["status"] == "running" and row.get("status") != "running":
            assignments = ", ".join(f'"{c}" = ?' for c in columns if c != "id")
            dst.execute(f"update runs set {assignments} where id = ?",
                        [row[c] for c in columns if c != "id"] + [row["id"]])


def _merge_keyed(dst: sqlite3.Connection, src: sqlite3.Connection, table: str, key: str, stop: Stop) -> None:
    """Rows identified by a content hash: the first copy wins (only paths and sources differ)."""
    columns = _columns(dst, table)
    for row in _rows(src, table, columns, stop):
        if dst.execute(f'select 1 from "{table}" where "{key}" = ?', (row[key],)).fetchone() is None:
            _insert(dst, table, row)


def _merge_retrievals(dst: sqlite3.Connection, src: sqlite3.Connection, stop: Stop) -> None:
    """An arm's retrieval per evaluation and item: the first copy wins (see the module docstring)."""
    for row in _rows(src, "retrievals", _columns(dst, "retrievals"), stop):
        if dst.execute("select 1 from retrievals where evaluation = ? and item = ?",
                       (row["evaluation"], row["item"])).fetchone() is None:
            _insert(dst, "retrievals", row)


def _merge_pairs(dst: sqlite3.Connection, src: sqlite3.Connection, name: str, out: str, stop: Stop) -> None:
    for row in _rows(src, "pairs", _columns(dst, "pairs"), stop):
        existing = _one(dst, "select biomedical, general from pairs where name = ?", row["name"])
        if existing is None:
            _insert(dst, "pairs", row)
        elif (existing["biomedical"], existing["general"]) != (row["biomedical"], row["general"]):
            raise MergeConflict(
                f"merge refused: pair '{row['name']}' is {row['biomedical']} vs {row['general']} in {name} but "
                f"{existing['biomedical']} vs {existing['general']} in {out} or an earlier input; nothing was "
                "written")


def _merge_evaluations(dst: sqlite3.Connection, src: sqlite3.Connection, name: str, out: str,
                       counts: InputReport, stop: Stop) -> None:
    for row in _rows(src, "evaluations", _columns(dst, "evaluations"), stop):
        existing = _one(dst, "select model_id, role, task from evaluations where key = ?", row["key"])
        if existing is None:
            _insert(dst, "evaluations", row)
            counts.evaluations += 1
            continue
        for column in ("model_id", "role", "task"):
            if existing[column] != row[column]:
                raise MergeConflict(
                    f"merge refused: evaluation {row['key'][:12]}… has {column} {row[column]!r} in {name} but "
                    f"{existing[column]!r} in {out} or an earlier input (the same model file under two ids?); "
                    "nothing was written")


def _merge_generations(dst: sqlite3.Connection, src: sqlite3.Connection, name: str, out: str,
                       counts: InputReport, origin: dict[tuple[str, str], str], stop: Stop) -> None:
    """Generation ids are local to each database: new items get fresh ids in OUT, their scores follow."""
    generation_columns = [c for c in _columns(dst, "generations") if c != "id"]
    score_columns = [c for c in _columns(dst, "scores") if c != "generation_id"]
    for generation in _rows(src, "generations", ["id", *generation_columns], stop, order="id"):
        source_id = generation.pop("id")
        score = _one(src, "select " + ", ".join(f'"{c}"' for c in score_columns)
                     + " from scores where generation_id = ?", source_id)
        place = (generation["evaluation"], generation["item"])
        existing = _one(dst, "select g.id, g.output, s.outcome, s.extracted, s.gold, s.method, s.metrics "
                             "from generations g left join scores s on s.generation_id = g.id "
                             "where g.evaluation = ? and g.item = ?", *place)
        action = _resolution(existing, score)
        if action == "keep":
            counts.identical += 1
            continue
        if action == "replace":
            dst.execute("delete from scores where generation_id = ?", (existing["id"],))  # type: ignore[index]
            dst.execute("delete from generations where id = ?", (existing["id"],))      # type: ignore[index]
            counts.retried += 1
        if action in ("add", "replace"):
            new_id = _insert(dst, "generations", generation)
            if score is not None:
                _insert(dst, "scores", {"generation_id": new_id, **score})
            origin[place] = name
            counts.added += action == "add"
            continue
        assert existing is not None
        incoming = {**{c: generation[c] for c in COMPARED_GENERATION},
                    **({c: score[c] for c in (*COMPARED_SCORE, "metrics")} if score else {})}
        merged_metrics = _compare_result(dst, src, existing, incoming, place, name, origin.get(place, out),
                                         source_id)
        if merged_metrics is not None:
            dst.execute("update scores set metrics = ? where generation_id = ?", (merged_metrics, existing["id"]))
            counts.extended += 1
        else:
            counts.identical += 1


def _resolution(existing: dict[str, Any] | None, score: dict[str, Any] | None) -> str:
    """What to do with an incoming item: "add" it (new to OUT), "replace" OUT's copy (an ``error``), "keep" OUT's
    copy (the incoming one is an error, or both are), or "compare" two results.

    Why errors are special: an error is the absence of a result (``run --retry-errors`` generates it again),
    not a result that could conflict; a shard rerun after a failure must merge over its old error."""
    if existing is None:
        return "add"
    incoming_failed = score is None or score.get("outcome") == "error"
    if existing["outcome"] == "error" and not incoming_failed:
        return "replace"
    if incoming_failed:
        return "keep"
    return "compare"


def _compare_result(dst: sqlite3.Connection, src: sqlite3.Connection, existing: dict[str, Any],
                    incoming: dict[str, Any], place: tuple[str, str], name: str, other: str, source_id: int
                    ) -> str | None:
    """Raise MergeConflict when the two results of one item differ; return the united metrics JSON when the
    incoming side adds metric values the existing one lacks (else None)."""
    for column in (*COMPARED_GENERATION, *COMPARED_SCORE):
        if column in incoming and existing[column] != incoming[column]:
            _conflict(src, place, name, other, column, existing[column], incoming[column])
    if "metrics" not in incoming:
        return None
    ours = load_metrics(existing["metrics"], existing["id"])
    theirs = load_metrics(incoming["metrics"], source_id)
    for metric in sorted(ours.keys() & theirs.keys()):
        if ours[metric] != theirs[metric]:
            _conflict(src, place, name, other, f"metric {metric}", ours[metric], theirs[metric])
    if theirs.keys() <= ours.keys():
        return None
    return json.dumps({**ours, **theirs}, sort_keys=True)


def _conflict(src: sqlite3.Connection, place: tuple[str, str], name: str, other: str, what: str,
              ours: Any, theirs: Any) -> None:
    evaluation, item = place
    head = _one(src, "select e.model_id, e.task, i.item_id from evaluations e, items i where e.key = ? "
                     "and i.key = ?", evaluation, item) or {"model_id": "?", "task": "?", "item_id": item}
    raise MergeConflict(
        f"merge refused: {head['task']} item '{head['item_id']}' of model '{head['model_id']}' (evaluation "
        f"{evaluation[:12]}…) has a different {what} in {name} ({_short(theirs)}) than in {other} "
        f"({_short(ours)}); nothing was written")


def _merge_metric_runs(dst: sqlite3.Connection, src: sqlite3.Connection, name: str, out: str, stop: Stop) -> None:
    for row in _rows(src, "metric_runs", _columns(dst, "metric_runs"), stop):
        existing = _one(dst, "select identity from metric_runs where evaluation = ? and metric = ?",
                        row["evaluation"], row["metric"])
        if existing is None:
            _insert(dst, "metric_runs", row)
        elif load_object(existing["identity"], "metric_runs", "identity", row["evaluation"]) \
                != load_object(row["identity"], "metric_runs", "identity", row["evaluation"]):
            raise MergeConflict(
                f"merge refused: {row['metric']} of evaluation {row['evaluation'][:12]}… was computed by "
                f"different weights or versions in {name} and in {out} or an earlier input; nothing was written")


def _split_notes(dst: sqlite3.Connection, sources: list[sqlite3.Connection]) -> list[str]:
    """A model and task whose inputs ended up under different evaluation keys: the databases were made with
    something different (llama.cpp build, settings, data), so their items do not pool, and ``compare`` reads
    only the latest evaluation. Usual cause: cluster nodes with different installs."""
    keys = {key for conn in sources for (key,) in conn.execute("select key from evaluations")}
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for key, model_id, task, settings in dst.execute("select key, model_id, task, settings from evaluations"):
        if key in keys:
            groups.setdefault((model_id, task), []).append(
                _flatten(load_object(settings, "evaluations", "settings", key)))
    notes = []
    for (model_id, task), found in sorted(groups.items()):
        if len(found) < 2:
            continue
        differing = sorted(k for k in set().union(*found) if k.startswith(("identity.", "task."))
                           and len({json.dumps(f.get(k), sort_keys=True) for f in found}) > 1)
        notes.append(f"{model_id}·{task}: the databases hold {len(found)} evaluations with different keys "
                     f"(differing: {', '.join(differing[:4]) or 'see the evaluations table'}); their items are "
                     "not pooled and compare reads the latest one only; rerun the odd shards with matching "
                     "settings")
    return notes


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, inner in value.items():
            flat.update(_flatten(inner, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): value}


def _coverage_notes(dst: sqlite3.Connection, out: Path) -> list[str]:
    """Optional metrics computed before the merge cover only the items their database had then."""
    notes = []
    for evaluation, metric, items, model_id, task, total in dst.execute(
            "select m.evaluation, m.metric, m.items, e.model_id, e.task, "
            "(select count(*) from scores s where s.evaluation = m.evaluation) "
            "from metric_runs m join evaluations e on e.key = m.evaluation order by e.model_id, e.task"):
        if items is not None and items < total:
            notes.append(f"{model_id}·{task}: {metric} was computed on {items} of its {total} items; add it to the "
                         f"rest with: medbench-local rescore --metric {metric} --db {out}")
    return notes
