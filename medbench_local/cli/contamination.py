"""``medbench-local contamination``: was the benchmark in the biomedical model's training data?

The options become calls of contamination/ (run.py: the membership probe of a pair; overlap.py: n-gram overlap
with a corpus); what stays here is the progress bar, the table and the JSON."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from ..contamination import run as probe_run
from ..contamination.signals import DEFAULT_K, SIGNALS
from ..engine.llama import LlamaEngine
from ..errors import UserError
from ..runner import plan
from ..runner.inputs import load_tasks
from ..store import close_database, open_database
from ..tasks import get_task
from .common import DEFAULT_DB, config_option, match_data, read_config, stderr, stdout, task_option
from .declare import DatabasePath, InputPath, declare
from .limits import LLAMA_SEED, RESAMPLES, THREADS
from .safe_text import literal


def _k(value: Any) -> float:
    return float(value)


K_RANGE = click.FloatRange(0.0, 1.0, min_open=True)


def _number(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:+.{digits}f}"


def _table(probes: list[probe_run.TaskProbe], top: int) -> Table:
    table = Table(title="Shift of the biomedical − general advantage, benchmark items vs control (positive: the "
                        "biomedical model knows the benchmark's own text better than the control)")
    for column in ("task", "signal", "items", "shift", "95% CI", "p", "flagged"):
        table.add_column(column, overflow="fold")
    for probe in probes:
        for s in probe.shifts:
            ci = "-" if s.low is None else f"[{s.low:+.3f}, {s.high:+.3f}]"
            p = "-" if s.p_value is None else f"{s.p_value:.3g}"
            table.add_row(literal(probe.loaded.task.id), SIGNALS[s.signal].title, f"{s.n_items}/{s.n_controls}",
                          _number(s.shift), ci, p, str(len(s.flagged)))
    return table


def _as_json(pair: str, probes: list[probe_run.TaskProbe], top: int) -> dict[str, Any]:
    return {"pair": pair, "tasks": [{
        "task": p.loaded.task.id, "identity": p.settings.identity(p.loaded.task.id), "probes": p.keys,
        "unchanged_controls": p.unchanged_controls,
        "signals": [{"signal": s.signal, "items": s.n_items, "controls": s.n_controls, "shift": s.shift,
                     "ci_low": s.low, "ci_high": s.high, "p_value": s.p_value, "flag_threshold": s.threshold,
                     "flagged": list(s.flagged),
                     "most_suspicious": [{"item": i, "excess": v} for i, v in s.top(top)]} for s in p.shifts],
    } for p in probes]}


@declare(reads=("database", "config", "data", "model"), writes=("database",),
         example=("contamination", "--pair", "demo", "--task", "{task}", "--data", "{data}", "--limit", "1",
                  "--db", "{db}", "--config", "{config}"))
@click.command("contamination")
@click.option("--pair", "pair_name", required=True, metavar="NAME",
              help="The biomedical/general pair from models.toml whose biomedical model is probed, with the general "
                   "model as the reference.")
@task_option("Task id(s) whose items are probed (repeatable, or comma-separated).", required=True)
@click.option("--data", multiple=True, metavar="[TASK=]PATH",
              help="The task's data, as for 'run' (default: ./bench_data/<task>, else the shipped sample).")
@click.option("--control", "control_path", type=InputPath("data", dir_okay=True),
              help="Your own unpublished items in the task's format, as the control (one task only). Default: "
                   "the tool's meaning-preserving rewrite of the same items (docs/contamination.md).")
@click.option("--db", "db_path", type=DatabasePath(writes=True), default=DEFAULT_DB, show_default=True,
              help="SQLite results database (created if missing); the probe's rows are stored there and a rerun "
                   "skips what is stored.")
@click.option("--limit", type=click.IntRange(1), help="Only the first N items of each task (a seeded sample, as "
                                                      "'run --limit').")
@click.option("--k", "k", type=K_RANGE, default=DEFAULT_K, show_default=True,
              help="Min-K% and Min-K%++: the share of least likely tokens averaged (0.2 = 20%).")
@click.option("--seed", type=LLAMA_SEED, default=1234, show_default=True,
              help="Seed of the control rewrite, of the --limit sample and of the statistics.")
@click.option("--resamples", type=RESAMPLES, default=10_000, show_default=True,
              help="Bootstrap and permutation resamples.")
@click.option("--top", type=click.IntRange(0, 1000), default=5, show_default=True,
              help="How many of the most suspicious items to list per signal.")
@click.option("--threads", type=THREADS, help="CPU threads for llama.cpp (default: the idle physical cores).")
@click.option("--allow-cpu", is_flag=True,
              help="Run models configured for the GPU on a CPU-only llama.cpp build (normally refused).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON on standard output.")
@config_option
def contamination_command(pair_name: str, task_ids: tuple[str, ...], data: tuple[str, ...],
                          control_path: Path | None, db_path: Path, limit: int | None, k: float, seed: int,
                          resamples: int, top: int, threads: int | None, allow_cpu: bool, as_json: bool,
                          config_path: Path | None) -> None:
    """Was the benchmark in the biomedical model's training data? A paired membership probe.

    Each item's own text (case, question, options and gold answer, as plain text without a chat template) is read
    by both models of the pair; per item the loss, zlib ratio, Min-K% and Min-K%++ give the biomedical model's
    advantage over its general reference. The same is measured on a control neither model can have trained on:
    the items after a meaning-preserving rewrite (options shuffled and relettered, names replaced, numbers
    nudged), or your own items (--control). The shift of the advantage on the benchmark relative to the control
    is reported per signal with its 95% CI and a paired test, with the items that stand out. This is evidence,
    not proof: read docs/contamination.md for what it can and cannot show.

    \b
    Examples:
      medbench-local contamination --pair demo --task jama --db results.db
      medbench-local contamination --pair demo --task jama,nejm --json
      medbench-local contamination --pair openbiollm-8b --task medqa \\
          --data medqa=~/medqa/test.jsonl --control my_cases.jsonl
    """
    for task_id in task_ids:
        get_task(task_id)
    if control_path is not None and len(task_ids) != 1:
        raise click.UsageError("--control holds one task's items: give exactly one --task with it")
    config = read_config(config_path)
    models = plan.pick_models(config, (pair_name,), ())
    explicit = match_data(task_ids, data)
    loaded = load_tasks([(get_task(t).configure(), plan.data_choice(t, explicit).path) for t in task_ids], limit,
                        seed=seed)
    probes = [probe_run.prepare(task, control_path, k=k, seed=seed) for task in loaded]
    paths = probe_run.check_models(config, models, allow_cpu)
    db = open_database(db_path)
    total = sum(len(p.texts) for p in probes) * len(models)

    def load(entry: Any, path: Path) -> LlamaEngine:
        return LlamaEngine(entry.spec, path, seed=seed, n_threads=threads, allow_cpu=allow_cpu)

    progress = Progress(TextColumn("[bold]contamination probe"), BarColumn(bar_width=20), MofNCompleteColumn(),
                        TextColumn("texts"), TextColumn("ETA"), TimeRemainingColumn(), console=stderr,
                        transient=True, disable=not stderr.is_terminal)
    counts = {"scored": 0, "stored": 0}
    last = [time.monotonic()]
    try:
        with progress:
            bar = progress.add_task("probe", total=total)

            def advance(skipped: bool) -> None:
                counts["stored" if skipped else "scored"] += 1
                progress.update(bar, advance=1)
                now = time.monotonic()
                if not stderr.is_terminal and now - last[0] >= 30:
                    last[0] = now
                    stderr.print(f"contamination probe: {sum(counts.values())}/{total} texts", soft_wrap=True)

            probe_run.run_pair(db, pair_name, models, paths, probes, load, advance)
        probe_run.summarize(db, probes, resamples=resamples, seed=seed)
    except KeyboardInterrupt:
        close_database(db)
        stderr.print("[yellow]Aborted.[/yellow] Every text scored before the one in flight is stored; rerun the same "
                     "command to resume.")
        sys.exit(130)
    close_database(db)
    if as_json:
        click.echo(json.dumps(_as_json(pair_name, probes, top), indent=2))
        return
    stderr.print(f"[dim]{counts['scored']} texts scored, {counts['stored']} already stored (db {literal(db_path)})"
                 "[/dim]", soft_wrap=True)
    stdout.print(_table(probes, top))
    for probe in probes:
        for s in probe.shifts:
            if top and s.top(top):
                listed = ", ".join(f"{i} ({v:+.2f})" for i, v in s.top(top))
                stdout.print(f"{literal(probe.loaded.task.id)} · {SIGNALS[s.signal].title}: most suspicious "
                             f"{literal(listed)}", soft_wrap=True)
        if probe.unchanged_controls:
            stdout.print(f"{literal(probe.loaded.task.id)}: {probe.unchanged_controls} of its controls read exactly "
                         "like the original (nothing to rewrite): those items carry no evidence.", soft_wrap=True)
    stdout.print("Flagged: items whose advantage on the original exceeds the 95th percentile of the controls' "
                 "(about 5% of clean items by chance). See docs/contamination.md.", soft_wrap=True)
