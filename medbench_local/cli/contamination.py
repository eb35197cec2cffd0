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
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from ..config import read_config
from ..contamination import overlap_run
from ..contamination import run as probe_run
from ..contamination.overlap import DEFAULT_N
from ..contamination.signals import DEFAULT_K, SIGNALS
from ..engine.llama import LlamaEngine
from ..runner import plan
from ..runner.inputs import load_tasks
from ..store import close_database, open_database
from ..tasks import get_task
from .common import DEFAULT_DB, config_option, match_data, stderr, stdout, task_option
from .declare import DatabasePath, InputPath, OutputPath, declare
from .limits import LLAMA_SEED, RESAMPLES, THREADS
from .safe_text import literal

K_RANGE = click.FloatRange(0.0, 1.0, min_open=True)


def _number(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:+.{digits}f}"


def _overlap(db: Any, loaded: list[Any], files: list[Path], index_path: Path, n: int
             ) -> list[overlap_run.TaskOverlap]:
    """Index the corpus (progress in bytes, with the rate), then every item's overlap, stored."""
    total = sum(f.stat().st_size for f in files)
    progress = Progress(TextColumn("[bold]indexing corpus"), BarColumn(bar_width=20), DownloadColumn(),
                        TransferSpeedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=stderr,
                        transient=True, disable=not stderr.is_terminal)
    index = overlap_run.NgramIndex(index_path, n=n, normalisation=overlap_run.NORMALISATION)
    try:
        with progress:
            bar = progress.add_task("corpus", total=total)
            overlap_run.index_corpus(index, files, n, on_bytes=lambda b: progress.update(bar, advance=b),
                                     on_file=lambda p, skipped: None if stderr.is_terminal else stderr.print(
                                         f"corpus: {literal(p.name)} {'already indexed' if skipped else 'indexed'}",
                                         soft_wrap=True))
        return overlap_run.measure(db, index, loaded, n)
    finally:
        index.close()


def _show_overlap(overlaps: list[Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({"overlap": [o.as_json() for o in overlaps]}, indent=2))
        return
    table = Table(title="Overlap with the corpus (word n-grams)")
    for column in ("task", "items", "with any n-gram", "share ≥ 0.5", "mean share", "longest run"):
        table.add_column(column)
    for o in overlaps:
        shares = [r.share for r in o.items.values()]
        table.add_row(literal(o.task), str(len(shares)), str(sum(1 for v in shares if v > 0)),
                      str(sum(1 for v in shares if v >= 0.5)), f"{sum(shares) / max(1, len(shares)):.3f}",
                      str(max((r.longest_run for r in o.items.values()), default=0)))
    stdout.print(table)
    for o in overlaps:
        hits = sorted(((i, r) for i, r in o.items.items() if r.found), key=lambda kv: -kv[1].share)
        if hits:
            stdout.print(f"{literal(o.task)}: " + literal(", ".join(f"{i} ({r.share:.0%})" for i, r in hits[:20])),
                         soft_wrap=True)


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


@declare(reads=("database", "config", "data", "model"), writes=("database", "output"),
         example=("contamination", "--pair", "demo", "--task", "{task}", "--data", "{data}", "--limit", "1",
                  "--db", "{db}", "--config", "{config}", "--corpus", "{data}", "--index", "{out}"))
@click.command("contamination")
@click.option("--pair", "pair_name", metavar="NAME",
              help="The biomedical/general pair from models.toml whose biomedical model is probed, with the general "
                   "model as the reference (not needed with --overlap-only).")
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
@click.option("--corpus", "corpus_paths", multiple=True, type=InputPath("data", dir_okay=True),
              help="A corpus to look for the items in (repeatable): JSONL/JSON lines, CSV/TSV, plain text, Parquet "
                   "(with pyarrow), or a folder of them. Needs --index.")
@click.option("--index", "index_path", type=OutputPath(),
              help="The n-gram index file of --corpus (SQLite, created owner-only, reused and extended across runs; "
                   "files already in it are skipped by SHA-256).")
@click.option("--ngram", "ngram", type=click.IntRange(3, 64), default=DEFAULT_N, show_default=True,
              help="n of the word n-grams (13 as lm-evaluation-harness's decontamination).")
@click.option("--overlap-only", is_flag=True, help="Only the corpus overlap: load no model.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON on standard output.")
@config_option
def contamination_command(pair_name: str, task_ids: tuple[str, ...], data: tuple[str, ...],
                          control_path: Path | None, db_path: Path, limit: int | None, k: float, seed: int,
                          resamples: int, top: int, threads: int | None, allow_cpu: bool,
                          corpus_paths: tuple[Path, ...], index_path: Path | None, ngram: int, overlap_only: bool,
                          as_json: bool, config_path: Path | None) -> None:
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
      medbench-local contamination --task medqa --overlap-only \\
          --corpus ~/meditron-instructions/ --index meditron.ngrams

    With --corpus, every item's word 13-grams (normalised: lowercase, punctuation and whitespace folded) are
    looked up in an on-disk index of the corpus: the share found and the longest common run are reported and
    stored. The index is built once (progress in MB/s) and reused.
    """
    for task_id in task_ids:
        get_task(task_id)
    if control_path is not None and len(task_ids) != 1:
        raise click.UsageError("--control holds one task's items: give exactly one --task with it")
    if bool(corpus_paths) != (index_path is not None):
        raise click.UsageError("--corpus and --index go together: the corpus is indexed into the --index file")
    if overlap_only and not corpus_paths:
        raise click.UsageError("--overlap-only needs --corpus and --index")
    if not overlap_only and pair_name is None:
        raise click.UsageError("give --pair NAME (the biomedical/general pair to probe), or --overlap-only")
    config = read_config(config_path) if pair_name is not None or config_path is not None else None
    models = plan.pick_models(config, (pair_name,), ()) if config is not None and pair_name is not None else []
    explicit = match_data(task_ids, data)
    loaded = load_tasks([(get_task(t).configure(), plan.data_choice(t, explicit).path) for t in task_ids], limit,
                        seed=seed)
    overlaps: list[overlap_run.TaskOverlap] = []
    if corpus_paths and index_path is not None:
        files = overlap_run.corpus_files(list(corpus_paths))
        db = open_database(db_path)
        try:
            overlaps = _overlap(db, loaded, files, index_path, ngram)
        except KeyboardInterrupt:
            close_database(db)
            stderr.print("[yellow]Aborted.[/yellow] The index keeps every corpus file finished before; rerun the "
                         "same command to resume.")
            sys.exit(130)
        close_database(db)
        if overlap_only:
            _show_overlap(overlaps, as_json)
            return
    assert config is not None and pair_name is not None
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
        found = _as_json(pair_name, probes, top)
        if overlaps:
            found["overlap"] = [o.as_json() for o in overlaps]
        click.echo(json.dumps(found, indent=2))
        return
    if overlaps:
        _show_overlap(overlaps, False)
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
