"""``medbench-local report``: one self-contained HTML file with plots, plus the plots as PNG files."""

from __future__ import annotations

import os
from pathlib import Path

import click

from ..analysis.paired import compare_pairs
from ..store import open_database
from .common import db_option, stdout
from .show import disagreements_between


def _write_private(path: Path, data: bytes) -> None:
    """Reports may quote model outputs about patients: owner-only, like the database."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


@click.command("report")
@db_option
@click.option("-o", "--output", "out_path", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("report.html"), show_default=True, help="The HTML file to write.")
@click.option("--pair", "pair_filter", multiple=True, metavar="NAME", help="Only these pairs (repeatable).")
@click.option("--examples", type=click.IntRange(min=0), default=3, show_default=True,
              help="Disagreement examples per pair and task.")
@click.option("--resamples", type=click.IntRange(min=100), default=10_000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def report_command(db_path: Path, out_path: Path, pair_filter: tuple[str, ...], examples: int, resamples: int,
                   seed: int) -> None:
    """Write a self-contained HTML report (opens without network; plots embedded) and the plots as PNG.

    Contents: per pair, the paired statistics table, a forest plot of the differences with 95% CIs, score
    and outcome charts, and a few disagreement examples; then every model with its SHA-256, quantization and
    settings, and every run with versions and the command line. PNGs go to <output stem>_plots/.

    \b
    Examples:
      medbench-local report --db results.db -o report.html
      medbench-local report --db study.db --pair openbiollm-8b --examples 5 -o openbiollm-8b.html
    """
    from ..report import html, plots  # matplotlib is imported only when a report is made

    db = open_database(db_path, create=False)
    try:
        reports = compare_pairs(db, pair_filter=pair_filter, resamples=resamples, seed=seed)
        runs, models, evaluations = html.gather_metadata(db)
        data = html.ReportInput(str(db_path), reports, runs, models, evaluations)
        for report in reports:
            if not report.rows:
                continue
            data.plots[f"{report.pair}-forest"] = plots.forest_plot(report)
            data.plots[f"{report.pair}-scores"] = plots.score_chart(report)
            data.plots[f"{report.pair}-outcomes"] = plots.outcome_chart(report)
            for group in {r.group_label: r for r in report.rows}.values():  # one per (task, data)
                found = disagreements_between(db, group.evaluations["biomedical"],
                                              group.evaluations["general"])[:examples] if examples else []
                data.examples[(report.pair, group.group_label)] = [(b, g) for _, b, g in found]
    finally:
        db.conn.close()
    _write_private(out_path, html.render(data).encode("utf-8"))
    plot_dir = out_path.with_name(out_path.stem + "_plots")
    if data.plots:
        plot_dir.mkdir(parents=True, exist_ok=True)
        for name, png in data.plots.items():
            _write_private(plot_dir / f"{name}.png", png)
    stdout.print(f"wrote {out_path}" + (f" and {len(data.plots)} plots in {plot_dir}/" if data.plots else ""))
