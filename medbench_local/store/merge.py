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

All of it happens in one transaction on OUT (or in a new file beside OUT that is renamed into place only when
complete), so a refused merge writes nothing. Inputs are only read; an input written by an older medbench-local
is upgraded in a private temporary copy, never in place.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
import urllib.parse
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlite_utils

from ..errors import StoreError, UserError
from .database import close_database, open_database
from .migrations import MIGRATIONS, migrate
from .writer import transaction

SQLITE_HEADER = b"SQLite format 3\x00"
# Every table the merge knows how to combine, in an order that satisfies the foreign keys.
MERGED_TABLES: tuple[str, ...] = ("runs", "models", "pairs", "evaluations", "items", "generations", "scores",
                                  "metric_runs")
# What must agree when two databases hold the same item of the same evaluation.
COMPARED_GENERATION = ("output",)
COMPARED_SCORE = ("outcome", "extracted", "gold", "method")
PRIVATE_FILE = 0o600


class MergeConflict(UserError):
    """Two databases disagree about the same thing; nothing was written."""


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


def merge_databases(out: Path, inputs: list[Path]) -> MergeReport:
    """Merge ``inputs`` into ``out`` (created if missing). Raises StoreError / MergeConflict with one line;
    on any error ``out`` is as it was (or still absent)."""
    out = Path(out)
    inputs = [Path(p) for p in inputs]
    _check_paths(out, inputs)
    with ExitStack() as stack:
        staging = _Staging(out.parent)
        stack.callback(staging.cleanup)
        sources = []
        for path in inputs:
            sources.append(_open_source(path, staging))
            stack.callback(sources[-1][1].close)
        created = not out.exists()
        if not created:
            _check_existing_out(out)
        target_path = out.with_name(f".{out.name}.merging-{uuid.uuid4().hex[:12]}") if created else out
        db = open_database(target_path)
        report = MergeReport(out, created, [InputReport(path, upgraded=upgraded) for path, _, upgraded in sources])
        try:
            _check_tables(db, out)
            origin: dict[tuple[str, str], str] = {}
            with transaction(db):
                for (path, conn, _), counts in zip(sources, report.inputs):
                    _merge_one(db.conn, conn, str(path), str(out), counts, origin)
            report.notes += _split_notes(db.conn, [conn for _, conn, _ in sources])
            report.notes += _coverage_notes(db.conn, out)
        except sqlite3.Error as exc:  # e.g. disk full while writing OUT: rolled back as a whole
            db.conn.close()
            if created:
                _remove(target_path)
            raise StoreError(f"{out}: cannot write the merged results ({exc}); nothing was written") from None
        except BaseException:
            db.conn.close()
            if created:
                _remove(target_path)
            raise
        close_database(db)
        os.chmod(target_path, PRIVATE_FILE)
        if created:
            _move_into_place(target_path, out)
    return report


# ---------------------------------------------------------------------------------------------------------
# paths and sources


def _check_paths(out: Path, inputs: list[Path]) -> None:
    if not inputs:
        raise UserError("merge: give OUT.db and at least one database to merge into it "
                        "(e.g. medbench-local merge merged.db shard1.db shard2.db)")
    if out.is_dir():
        raise StoreError(f"{out}: is a directory, expected a results database file to merge into")
    seen: list[Path] = []
    for path in inputs:
        if not path.exists():
            raise StoreError(f"{path}: no such results database")
        if not path.is_file():
            raise StoreError(f"{path}: not a file, expected a results database")
        if _same_file(path, out):
            raise StoreError(f"{path}: is OUT itself; a database cannot be merged into itself "
                             "(list only the other databases after OUT)")
        for other in seen:
            if _same_file(path, other):
                raise StoreError(f"{path}: listed twice (also as {other})")
        seen.append(path)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


class _Staging:
    """A private (0700) temporary folder beside OUT for upgraded copies of older inputs, made on first use.

    Beside OUT rather than in /tmp: the copies hold the same (possibly patient) text as the inputs, and OUT's
    folder is where the user chose to keep such data."""

    def __init__(self, near: Path) -> None:
        self.near = near
        self.path: Path | None = None

    def file(self, name: str) -> Path:
        if self.path is None:
            self.near.mkdir(parents=True, exist_ok=True)
            self.path = Path(tempfile.mkdtemp(prefix=".medbench-merge-", dir=self.near))
        return self.path / name

    def cleanup(self) -> None:
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)


def _header(path: Path) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise StoreError(f"{path}: cannot read ({exc.strerror})") from None


def _read_only(path: Path) -> sqlite3.Connection:
    """A connection that cannot write ``path``. ``mode=ro`` still lets SQLite read a WAL beside the file;
    where the folder is not writable and no WAL is there, ``immutable`` spares it the ``-shm`` it cannot make."""
    absolute = path.absolute()
    uri = "file:" + urllib.parse.quote(str(absolute)) + "?mode=ro"
    wal = absolute.with_name(absolute.name + "-wal")
    if not os.access(absolute.parent, os.W_OK) and not (wal.exists() and wal.stat().st_size > 0):
        uri += "&immutable=1"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=30.0)
        conn.execute("pragma query_only = 1")
        conn.execute("pragma busy_timeout = 30000")
        return conn
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot open for reading ({exc})") from None


def _schema_state(conn: sqlite3.Connection, path: Path) -> list[str]:
    """The migrations ``path`` records; refuses foreign and newer databases."""
    try:
        tables = {name for (name,) in conn.execute("select name from sqlite_master where type = 'table'")}
        if "_migrations" not in tables:
            raise StoreError(f"{path}: not a medbench-local results database (no _migrations table)")
        done = [name for (name,) in conn.execute("select name from _migrations order by rowid")]
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path}: cannot use as a results database ({exc})") from None
    known = [name for name, _ in MIGRATIONS]
    newer = [name for name in done if name not in known]
    if newer:
        raise StoreError(f"{path}: written by a newer medbench-local (unknown schema migration '{newer[0]}'); "
                         "merge with that version, or upgrade medbench-local")
    return done


def _open_source(path: Path, staging: _Staging) -> tuple[Path, sqlite3.Connection, bool]:
    """(path, read-only connection at this version's schema, whether an upgraded copy is read)."""
    if _header(path) != SQLITE_HEADER:
        raise StoreError(f"{path}: not a SQLite results database")
    conn = _read_only(path)
    try:
        done = _schema_state(conn, path)
        upgraded = len(done) < len(MIGRATIONS)
        if upgraded:  # older schema: upgrade a private copy, the input itself stays untouched
            copy = staging.file(f"{uuid.uuid4().hex}.db")
            os.close(os.open(copy, os.O_CREAT | os.O_WRONLY, PRIVATE_FILE))
            target = sqlite3.connect(copy)
            try:
                conn.backup(target)
                migrate(sqlite_utils.Database(target), str(path))
            finally:
                target.close()
            conn.close()
            conn = _read_only(copy)
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise StoreError(f"{path}: cannot read the results database ({exc})") from None
    except BaseException:
        conn.close()
        raise
    return path, conn, upgraded


def _check_existing_out(out: Path) -> None:
    """OUT must be a results database of ours (or an empty file) before anything is written to it."""
    if out.stat().st_size == 0:
        return
    if _header(out) != SQLITE_HEADER:
        raise StoreError(f"{out}: not a SQLite results database; refusing to merge into it")
    conn = _read_only(out)
    try:
        tables = [n for (n,) in conn.execute("select name from sqlite_master where type = 'table'")]
        if tables:
            _schema_state(conn, out)
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{out}: cannot use as a results database ({exc})") from None
    finally:
        conn.close()


def _check_tables(db: sqlite_utils.Database, out: Path) -> None:
    """Every table of the schema must have a merge rule: a table a future migration adds without one is
    refused here rather than silently dropped from merged databases."""
    tables = {n for (n,) in db.conn.execute("select name from sqlite_master where type = 'table' "
                                            "and name not like 'sqlite_%'")} - {"_migrations"}
    unknown = sorted(tables - set(MERGED_TABLES))
    if unknown:
        raise StoreError(f"{out}: table '{unknown[0]}' has no merge rule in this medbench-local "
                         "(store/merge.py); refusing to merge rather than drop its rows")


def _remove(path: Path) -> None:
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        file.unlink(missing_ok=True)


def _move_into_place(temp: Path, out: Path) -> None:
    """Give the finished file OUT's name; never replace an OUT that appeared meanwhile."""
    try:
        os.link(temp, out)
    except FileExistsError:
        _remove(temp)
        raise StoreError(f"{out}: appeared while merging (another process?); nothing was written to it, "
                         "run the merge again") from None
    except OSError:  # no hard links on this file system: rename (atomic, replaces)
        os.replace(temp, out)
    else:
        temp.unlink()
    for leftover in (temp.with_name(temp.name + "-wal"), temp.with_name(temp.name + "-shm")):
        leftover.unlink(missing_ok=True)
    try:
        fd = os.open(out.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass  # not every platform can fsync a folder


# ---------------------------------------------------------------------------------------------------------
# the merge itself (inside one transaction on the target)


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in conn.execute(f'pragma table_info("{table}")')]


def _rows(conn: sqlite3.Connection, table: str, columns: list[str], order: str = "rowid"
          ) -> Iterator[dict[str, Any]]:
    names = ", ".join(f'"{c}"' for c in columns)
    cursor = conn.execute(f'select {names} from "{table}" order by {order}')
    for row in cursor:
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
               origin: dict[tuple[str, str], str]) -> None:
    for table in MERGED_TABLES:
        missing = [c for c in _columns(dst, table) if c not in _columns(src, table)]
        if missing:
            raise StoreError(f"{name}: table '{table}' has no column '{missing[0]}' (damaged database?)")
    try:
        _merge_runs(dst, src, counts)
        _merge_keyed(dst, src, "models", "sha256")
        _merge_pairs(dst, src, name, out)
        _merge_evaluations(dst, src, name, out, counts)
        _merge_keyed(dst, src, "items", "key")
        _merge_generations(dst, src, name, out, counts, origin)
        _merge_metric_runs(dst, src, name, out)
    except sqlite3.IntegrityError as exc:
        raise StoreError(f"{name}: inconsistent results database ({exc}); nothing was written") from None
    except sqlite3.Error as exc:  # a damaged input, or OUT cannot be written (disk full, locked)
        raise StoreError(f"merging {name} into {out} failed ({exc}); nothing was written") from None


def _merge_runs(dst: sqlite3.Connection, src: sqlite3.Connection, counts: InputReport) -> None:
    columns = _columns(dst, "runs")
    for row in _rows(src, "runs", columns):
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


def _merge_keyed(dst: sqlite3.Connection, src: sqlite3.Connection, table: str, key: str) -> None:
    """Rows identified by a content hash: the first copy wins (only paths and sources differ)."""
    columns = _columns(dst, table)
    for row in _rows(src, table, columns):
        if dst.execute(f'select 1 from "{table}" where "{key}" = ?', (row[key],)).fetchone() is None:
            _insert(dst, table, row)


def _merge_pairs(dst: sqlite3.Connection, src: sqlite3.Connection, name: str, out: str) -> None:
    for row in _rows(src, "pairs", _columns(dst, "pairs")):
        existing = _one(dst, "select biomedical, general from pairs where name = ?", row["name"])
        if existing is None:
            _insert(dst, "pairs", row)
        elif (existing["biomedical"], existing["general"]) != (row["biomedical"], row["general"]):
            raise MergeConflict(
                f"merge refused: pair '{row['name']}' is {row['biomedical']} vs {row['general']} in {name} but "
                f"{existing['biomedical']} vs {existing['general']} in {out} or an earlier input; nothing was "
                "written")


def _merge_evaluations(dst: sqlite3.Connection, src: sqlite3.Connection, name: str, out: str,
                       counts: InputReport) -> None:
    for row in _rows(src, "evaluations", _columns(dst, "evaluations")):
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
                       counts: InputReport, origin: dict[tuple[str, str], str]) -> None:
    """Generation ids are local to each database: new items get fresh ids in OUT, their scores follow."""
    generation_columns = [c for c in _columns(dst, "generations") if c != "id"]
    score_columns = [c for c in _columns(dst, "scores") if c != "generation_id"]
    for generation in _rows(src, "generations", ["id", *generation_columns], order="id"):
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
        merged_metrics = _compare_result(dst, src, existing, incoming, place, name, origin.get(place, out))
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
                    incoming: dict[str, Any], place: tuple[str, str], name: str, other: str) -> str | None:
    """Raise MergeConflict when the two results of one item differ; return the united metrics JSON when the
    incoming side adds metric values the existing one lacks (else None)."""
    for column in (*COMPARED_GENERATION, *COMPARED_SCORE):
        if column in incoming and existing[column] != incoming[column]:
            _conflict(src, place, name, other, column, existing[column], incoming[column])
    if "metrics" not in incoming:
        return None
    ours = json.loads(existing["metrics"] or "{}")
    theirs = json.loads(incoming["metrics"] or "{}")
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


def _merge_metric_runs(dst: sqlite3.Connection, src: sqlite3.Connection, name: str, out: str) -> None:
    for row in _rows(src, "metric_runs", _columns(dst, "metric_runs")):
        existing = _one(dst, "select identity from metric_runs where evaluation = ? and metric = ?",
                        row["evaluation"], row["metric"])
        if existing is None:
            _insert(dst, "metric_runs", row)
        elif json.loads(existing["identity"] or "{}") != json.loads(row["identity"] or "{}"):
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
            groups.setdefault((model_id, task), []).append(_flatten(json.loads(settings or "{}")))
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
