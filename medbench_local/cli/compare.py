"""``medbench-local compare``: each pair's biomedical and general model on the same items, with paired statistics."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.table import Table

from ..analysis.paired import MetricComparison, PairReport, compare_pairs
from ..store import open_database
from .common import db_option, stdout
from .limits import RESAMPLES, STATS_SEED

OUTCOME_COLUMNS = ("correct", "wrong", "scored", "unparseable", "truncated", "error")


def load_reports(db_path: Path, pair_filter: tuple[str, ...] = (), task_filter: tuple[str, ...] = (),
                 resamples: int = 10_000, seed: int = 0) -> list[PairReport]:
    db = open_database(db_path, create=False)
    try:
        return compare_pairs(db, pair_filter=pair_filter, task_filter=task_filter, resamples=resamples, seed=seed)
    finally:
        db.conn.close()


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def _ci(row_value: object) -> str:
    low, high = getattr(row_value, "low"), getattr(row_value, "high")
    return f"[{100 * low:.1f}, {100 * high:.1f}]"


def _short_ci(interval: object) -> str:
    return f"{100 * getattr(interval, 'low'):.0f}–{100 * getattr(interval, 'high'):.0f}"


def _p(value: float) -> str:
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def _delta_cell(row: MetricComparison) -> str:
    text = f"{100 * row.delta.estimate:+.1f}\n{100 * row.delta.low:+.0f}…{100 * row.delta.high:+.0f}"
    colour = {"biomedical": "green", "general": "red"}.get(row.ahead or "")
    return f"[{colour}]{text}[/]" if colour else text


def _pair_table(report: PairReport) -> Table:
    table = Table(title=f"[bold]{report.pair}[/bold]: {report.biomedical_model} (biomedical) vs "
                        f"{report.general_model} (general)", title_justify="left", show_lines=True)
    table.add_column("task", overflow="fold", max_width=13)
    table.add_column("metric", overflow="fold", max_width=12)
    for name in ("n", "bio", "gen", "Δ", "p", "b/g"):
        table.add_column(name, justify="right", no_wrap=True, min_width=len(name))
    table.caption = ("bio, gen: score ×100 and 95% CI; Δ: biomedical − general with paired 95% CI; p: test "
                     "(Holm-adjusted); b/g: items only the biomedical / only the general model got right")
    for row in report.rows:
        missing = sum(row.missing.values())
        n_text = str(row.n) + (f"\n[yellow]{missing} unpaired[/yellow]" if missing else "")
        table.add_row(row.task, row.metric, n_text, f"{_pct(row.biomedical.estimate)}\n{_short_ci(row.biomedical)}",
                      f"{_pct(row.general.estimate)}\n{_short_ci(row.general)}", _delta_cell(row),
                      f"{_p(row.p_value)}\n({_p(row.p_adjusted)})",
                      f"{row.discordant[0]}/{row.discordant[1]}" if row.discordant else "—")
    return table


def _outcome_table(report: PairReport) -> Table:
    table = Table(title="Outcomes per item (biomedical / general)", title_justify="left")
    table.add_column("task")
    for name in OUTCOME_COLUMNS:
        table.add_column(name, justify="right")
    seen: set[str] = set()
    for row in report.rows:
        if row.task in seen:
            continue
        seen.add(row.task)
        bio, gen = row.outcomes["biomedical"], row.outcomes["general"]
        table.add_row(row.task, *(f"{bio.get(k, 0)}/{gen.get(k, 0)}" for k in OUTCOME_COLUMNS))
    return table


def markdown(reports: list[PairReport]) -> str:
    """A Markdown table per pair, ready to paste into a paper draft."""
    lines: list[str] = []
    for report in reports:
        lines += [f"### {report.pair}: {report.biomedical_model} (biomedical) vs {report.general_model} (general)",
                  "", "| task | metric | n | biomedical [95% CI] | general [95% CI] | Δ bio−gen [95% CI] | test | p "
                      "| p (Holm) | discordant bio>gen / gen>bio |",
                  "|---|---|---:|---:|---:|---:|---|---:|---:|---:|"]
        for r in report.rows:
            discordant = f"{r.discordant[0]} / {r.discordant[1]}" if r.discordant else "—"
            lines.append(
                f"| {r.task} | {r.metric} | {r.n} | {_pct(r.biomedical.estimate)} {_ci(r.biomedical)} | "
                f"{_pct(r.general.estimate)} {_ci(r.general)} | {100 * r.delta.estimate:+.1f} "
                f"[{100 * r.delta.low:+.1f}, {100 * r.delta.high:+.1f}] | {r.test} | {_p(r.p_value)} | "
                f"{_p(r.p_adjusted)} | {discordant} |")
        lines += ["", "Scores ×100; 95% percentile bootstrap CIs over items (paired for Δ); exact McNemar for "
                      "binary metrics, paired sign-flip permutation test otherwise; Holm adjustment across the "
                      "rows of the pair.", ""]
    return "\n".join(lines)


@click.command("compare")
@db_option
@click.option("--pair", "pair_filter", multiple=True, metavar="NAME", help="Only these pairs (repeatable).")
@click.option("--task", "task_filter", multiple=True, metavar="TASK", help="Only these tasks (repeatable).")
@click.option("--resamples", type=RESAMPLES, default=10_000, show_default=True,
              help="Bootstrap / permutation resamples.")
@click.option("--seed", type=STATS_SEED, default=0, show_default=True,
              help="Seed of the resampling (results are reproducible for a given seed).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (stable keys, see README) instead of tables.")
@click.option("--markdown", "as_markdown", is_flag=True, help="Print Markdown tables for a paper.")
def compare_command(db_path: Path, pair_filter: tuple[str, ...], task_filter: tuple[str, ...], resamples: int,
                    seed: int, as_json: bool, as_markdown: bool) -> None:
    """Compare each pair's biomedical model with its general counterpart on the same items.

    For every pair, task and metric: each model's score with a 95% bootstrap CI, the paired difference
    (biomedical minus general) with its paired-bootstrap CI, an exact McNemar test for binary metrics
    (with the discordant counts) or a paired permutation test for continuous ones, Holm-adjusted across the
    pair's rows, and n. Items are aligned by id; items only one model has are reported as unpaired. A
    difference is coloured when its CI excludes 0 (green: biomedical ahead, red: general ahead). Unparseable,
    truncated and error items score 0 and are counted in the outcome table.

    \b
    Examples:
      medbench-local compare --db results.db
      medbench-local compare --db results.db --pair demo --task jama --json
      medbench-local compare --db results.db --markdown > results.md
    """
    reports = load_reports(db_path, pair_filter, task_filter, resamples, seed)
    if as_json:
        click.echo(json.dumps([row.to_json() for report in reports for row in report.rows], indent=2))
        return
    if as_markdown:
        click.echo(markdown(reports))
        return
    if not any(report.rows for report in reports):
        stdout.print(f"No paired results in {db_path} yet. Run both models of a pair, e.g.: "
                     f"medbench-local run --pair demo --task jama --db {db_path}")
    for report in reports:
        if report.rows:
            stdout.print(_pair_table(report))
            stdout.print(_outcome_table(report))
        for task, missing in report.unpaired_tasks.items():
            stdout.print(f"[yellow]{report.pair} · {task}: only one model has results (the {missing} model has "
                         f"not run it yet)[/yellow]")
    stdout.print(f"[dim]Scores ×100 with 95% bootstrap CIs ({resamples} resamples, seed {seed}). Unparseable, "
                 "truncated and error items score 0. Δ coloured where its CI excludes 0.[/dim]")
