"""``medbench-local report``: one self-contained HTML file with plots, plus the plots as PNG files."""

from __future__ import annotations

from pathlib import Path

import click

from ..analysis.pair_sources import selected_pairs
from ..analysis.paired import compare_pairs
from ..contamination.compared import Contamination, pair_probes
from ..gates.files import atomic_write, check_output_target, database_files, private_dir
from ..store.database import reading
from ..units import count
from .common import db_option, pair_options, stdout
from .compare import contamination_lines
from .declare import OutputPath, declare
from .safe_text import literal


@declare(reads=("database", "config"), writes=("output",),
         example=("report", "--db", "{db}", "--config", "{config}", "-o", "{out}"))
@click.command("report")
@db_option
@click.option("-o", "--output", "out_path", type=OutputPath(),
              default=Path("report.html"), show_default=True,
              help="The HTML file to write (owner-only, replaced atomically; the results database, a symbolic "
                   "link or a missing folder is refused).")
@pair_options
@click.option("--examples", type=click.IntRange(min=0), default=3, show_default=True,
              help="Disagreement examples per pair and task.")
@click.option("--items/--no-items", "with_items", default=True, show_default=True,
              help="Include the per-item browser (every paired item: filter, sort, open prompt and outputs; "
                   "inline, offline). --no-items gives a smaller file with statistics and examples only.")
@click.option("--resamples", type=click.IntRange(min=100), default=10_000, show_default=True,
              help="Bootstrap / permutation resamples, as in compare.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the resampling, as in compare (same seed, same numbers).")
def report_command(db_path: Path, out_path: Path, pair_filter: tuple[str, ...], model_pair: tuple[str, str] | None,
                   config_path: Path | None, examples: int, with_items: bool, resamples: int, seed: int) -> None:
    """Write a self-contained HTML report (opens without network; plots embedded) and the plots as PNG.

    Contents: per pair, the paired statistics table, an outcome table, a forest plot of the differences with
    95% CIs, score and outcome charts, and a few disagreement examples; a browser of every paired item (filter
    by task, outcome, disagreement; sort by the difference; open prompt and outputs); then every model with its
    SHA-256 and quantization, the data files with their hashes, the settings, and every run with versions and
    the command line; where 'medbench-local contamination' stored a probe of a pair, its shifts and flagged
    items per task. The pairs are those of 'compare' (the database's and models.toml's, or --models BIO GEN).
    PNGs go to <output stem>_plots/. Reports may
    quote model outputs about patients: the file is written owner-only (0600), the plot folder 0700.

    \b
    Examples:
      medbench-local report --db results.db -o report.html
      medbench-local report --db study.db --pair openbiollm-8b --examples 5 \\
          -o openbiollm-8b.html
      medbench-local report --db study.db -o 70b.html \\
          --models openbiollm-70b llama3-70b-instruct
      # without the item browser:
      medbench-local report --db big.db --no-items -o summary.html
    """
    from ..report import html  # matplotlib is imported only when a report is made

    protect = database_files(db_path)
    check_output_target(out_path, protect=protect)  # refuse a bad target before any work
    plot_dir = out_path.with_name(out_path.stem + "_plots")
    with reading(db_path) as db:
        selection = selected_pairs(db, db_path, config_path, pair_filter, model_pair)
        reports = compare_pairs(db, selection.pairs, resamples=resamples, seed=seed)
        data = html.gather(db, str(db_path), reports, examples=examples, with_items=with_items)
        found = Contamination(pair_probes(db, reports, resamples=resamples, seed=seed))
        data.contamination = {report.pair: contamination_lines(report, found) for report in reports}
        page = html.render(data).encode("utf-8")
    atomic_write(out_path, page, protect=protect)
    if data.plots:
        private_dir(plot_dir, protect=protect)
        for name, png in data.plots.items():
            atomic_write(plot_dir / name, png, protect=protect)
    stdout.print(f"wrote {literal(out_path)}"
                 + (f" and {count(len(data.plots), 'plot')} in {literal(plot_dir)}/" if data.plots else ""))
