"""The run history (``medbench-local runs``): what each invocation of ``run`` did, newest first.

Counts come from the per-item rows (``generations.run_id``), not from anything the run wrote about itself at
the end, so a run that was killed still shows exactly what it stored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlite_utils

from ..gates.stored import DamagedValue, load_array, load_object


@dataclass(frozen=True)
class RunEntry:
    id: str
    started_at: str
    finished_at: str | None
    status: str
    command: list[str] | str
    medbench_version: str | None
    settings: dict[str, Any]
    generated: int
    outcomes: dict[str, int] = field(default_factory=dict)
    retrieval: dict[str, float] | None = None  # arms: items, mean ms per search, mean passage tokens per prompt
    # served log-likelihood items of this run: (items, HTTP requests, tokens sent), None when it has none
    served: tuple[int, int, int] | None = None

    @property
    def served_per_item(self) -> tuple[float, float] | None:
        """(requests, tokens sent) per served log-likelihood item of this run."""
        if not self.served or not self.served[0]:
            return None
        items, requests, tokens = self.served
        return requests / items, tokens / items

    @property
    def duration_seconds(self) -> float | None:
        """Wall time from start to the recorded end; None while no end is recorded (running, or killed)."""
        if not self.finished_at:
            return None
        try:
            return (datetime.fromisoformat(self.finished_at) - datetime.fromisoformat(self.started_at)).total_seconds()
        except (TypeError, ValueError):  # not recorded, not a time, or one with a time zone and one without
            return None

    @property
    def models(self) -> list[dict[str, Any]]:
        return [m for m in self.settings.get("models") or [] if isinstance(m, dict)]

    @property
    def tasks(self) -> list[dict[str, Any]]:
        return [t for t in self.settings.get("tasks") or [] if isinstance(t, dict)]

    @property
    def planned(self) -> int | None:
        """Generations the run set out to do: every model on every item of every task, once per scoring mode
        (``--scoring both`` stores two per item), those already done included."""
        counts = [t.get("items") for t in self.tasks]
        if not self.models or not counts or not all(isinstance(c, int) for c in counts):
            return None
        return len(self.models) * sum(counts) * self.modes  # type: ignore[arg-type]

    @property
    def modes(self) -> int:
        """How many scoring modes each item was evaluated in (1 for runs older than the setting)."""
        scoring = self.settings.get("scoring")
        return len(scoring) if isinstance(scoring, list) and scoring else 1


def _command(value: object, run_id: str) -> list[str]:
    return [str(part) for part in load_array(value, "runs", "command", run_id)]


def _settings(value: object, run_id: str) -> dict[str, Any]:
    settings = load_object(value, "runs", "settings", run_id)
    for key in ("models", "tasks"):  # read as lists below
        if not isinstance(settings.get(key) or [], list):
            raise DamagedValue("runs", "settings", run_id, f"has '{key}' that is not a JSON array")
    return settings


def recent_runs(db: sqlite_utils.Database, limit: int | None = None) -> list[RunEntry]:
    """Runs newest first (all when ``limit`` is None), with what each one generated, by outcome, and for runs of
    retrieval arms the items retrieved for, the mean search time and passage tokens per item."""
    rows = db.conn.execute(
        "select id, started_at, finished_at, status, command, medbench_version, settings from runs "
        "order by started_at desc, rowid desc" + (" limit ?" if limit else ""),
        (limit,) if limit else ()).fetchall()
    outcomes: dict[str, dict[str, int]] = {}
    retrieval: dict[str, dict[str, float]] = {}
    served: dict[str, tuple[int, int, int]] = {}
    # a database from before m008 has no such columns: it is read as it is, never migrated, by ``runs``
    counted = "server_requests" in {row[1] for row in db.conn.execute("pragma table_info(generations)")}
    ids = [row[0] for row in rows]
    for start in range(0, len(ids), 500):  # stay below SQLite's bound-parameter limit
        chunk = ids[start:start + 500]
        marks = ",".join("?" for _ in chunk)
        for run_id, outcome, count in db.conn.execute(
                f"select g.run_id, s.outcome, count(*) from generations g join scores s on s.generation_id = g.id "
                f"where g.run_id in ({marks}) group by g.run_id, s.outcome", chunk):
            outcomes.setdefault(run_id, {})[outcome] = count
        for run_id, items, ms, tokens in db.conn.execute(
                f"select g.run_id, count(*), avg(r.retrieval_ms), avg(r.passage_tokens) from retrievals r "
                f"join generations g on g.evaluation = r.evaluation and g.item = r.item "
                f"where g.run_id in ({marks}) group by g.run_id", chunk):
            retrieval[run_id] = {"items": int(items), "ms_per_item": float(ms or 0.0),
                                 "passage_tokens_per_item": float(tokens or 0.0)}
        if counted:
            for run_id, items, requests, tokens in db.conn.execute(
                    f"select run_id, count(*), sum(server_requests), coalesce(sum(server_tokens), 0) "
                    f"from generations where run_id in ({marks}) and server_requests is not null "
                    f"group by run_id", chunk):
                served[run_id] = (int(items), int(requests), int(tokens))
    return [RunEntry(id=row[0], started_at=row[1], finished_at=row[2], status=row[3],
                     command=_command(row[4], row[0]), medbench_version=row[5],
                     settings=_settings(row[6], row[0]),
                     generated=sum(outcomes.get(row[0], {}).values()), outcomes=outcomes.get(row[0], {}),
                     retrieval=retrieval.get(row[0]), served=served.get(row[0]))
            for row in rows]
