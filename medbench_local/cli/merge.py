"""``medbench-local merge``: combine results databases, e.g. the shards of ``run --shard K/N``, into one."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..signals import StopFlag
from ..store.merge import MergeReport, MergeStopped, merge_databases
from ..units import count
from .common import stderr, stdout
from .declare import DatabasePath, OutputPath, declare
from .safe_text import literal


@declare(reads=("database",), writes=("output",), example=("merge", "{out}", "{db}"))
@click.command("merge")
@click.argument("out", type=OutputPath(), metavar="OUT.db")
@click.argument("inputs", nargs=-1, type=DatabasePath(), metavar="A.db [B.db ...]")
def merge_command(out: Path, inputs: tuple[Path, ...]) -> None:
    """Merge results databases into OUT.db (created if missing, else added to).

    Identical evaluations (same model file, template, llama.cpp build, settings, task settings and data) become
    one, their items united; runs are kept with their provenance. An item that two databases hold with a
    different output or score is a conflict: the merge is refused, the item named, and nothing is written
    (an item stored as 'error' is no result: a copy that has the result replaces it).
    Merging the same databases again changes nothing. The inputs are only read (an older version's database
    is upgraded in a temporary copy) and checked for damage before anything is written; a database from a
    newer version is refused. OUT ends owner-only (0600); it may not be one of the inputs or a file SQLite
    keeps beside one (-wal, -shm, -journal). Ctrl-C, SIGTERM or SIGHUP stops the merge: nothing is written
    and no temporary file is left.

    \b
    Examples:
      # three machines (or a Slurm array), one shard each, then one database:
      medbench-local run --pair demo --task jama --shard 1/3 --db shard1.db
      medbench-local run --pair demo --task jama --shard 2/3 --db shard2.db
      medbench-local run --pair demo --task jama --shard 3/3 --db shard3.db
      medbench-local merge merged.db shard1.db shard2.db shard3.db
      medbench-local compare --db merged.db
    \b
      # add one more database to an existing one:
      medbench-local merge study.db late-shard.db
    """
    with StopFlag() as stop:
        try:
            report = merge_databases(out, list(inputs), stop=lambda: stop.signal_name if stop.requested else None)
        except MergeStopped as exc:
            stderr.print(f"[yellow]{literal(exc)}[/yellow]", soft_wrap=True)
            sys.exit(130)
        except KeyboardInterrupt:  # a second stop signal: everything was rolled back on the way out
            stderr.print(f"[yellow]Aborted.[/yellow] Nothing was written to {literal(out)}.", soft_wrap=True)
            sys.exit(130)
    _print_report(report, out)


def _print_report(report: MergeReport, out: Path) -> None:
    for entry in report.inputs:
        parts = [f"{count(entry.added, 'item')} added", f"{entry.identical} already there"]
        if entry.retried:
            parts.append(f"{count(entry.retried, 'error')} replaced by results")
        if entry.extended:
            parts.append(f"{entry.extended} gained metrics")
        parts.append(f"{count(entry.runs, 'run')} added")
        note = " (older schema: read through an upgraded temporary copy)" if entry.upgraded else ""
        stdout.print(f"{literal(entry.path)}: {', '.join(parts)}{note}", soft_wrap=True)
        if entry.unfinished_runs:
            ids = literal(", ".join(run_id[:12] for run_id in entry.unfinished_runs))
            stderr.print(f"[yellow]{literal(entry.path)}: run {ids} is still running or was killed; merged what it had "
                         "stored (rerun its command to complete it, then merge again)[/yellow]", soft_wrap=True)
    for note in report.notes:
        stderr.print(f"[yellow]{literal(note)}[/yellow]", soft_wrap=True)
    verb = "created" if report.created else "updated"
    stdout.print(f"{literal(out)} {verb}: {count(report.added, 'item')} added from "
                 f"{count(len(report.inputs), 'database')}", soft_wrap=True)
    stdout.print(f"Compare with: medbench-local compare --db {literal(out)}", soft_wrap=True)
