"""``medbench-local reproduce``: our numbers next to the published ones, and whether the headline findings hold."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..analysis.pair_sources import selected_pairs
from ..analysis.published import STUDY_NAMES
from ..analysis.reproduce import reproduction
from ..analysis.stats import format_p
from ..errors import UserError
from ..store.database import reading
from .common import db_option, pair_options, stdout, task_option
from .declare import declare
from .layout import Column, print_table
from .limits import RESAMPLES
from .safe_text import literal

VALUE_COLUMNS = (Column("model", legend=True), Column("study name", legend=True), Column("task"),
                 Column("data", legend=True), Column("metric"), Column("n", "right"), Column("ours", "right"),
                 Column("published", "right"), Column("Δ", "right"))
FINDING_COLUMNS = (Column("pair", legend=True), Column("task"), Column("data", legend=True),
                   Column("published Δ", "right"), Column("our Δ", "right"), Column("n", "right"),
                   Column("p (Holm)", "right"), Column("verdict"))


def _aliases(values: tuple[str, ...]) -> dict[str, str]:
    aliases = {}
    for value in values:
        model, sep, study = value.partition("=")
        if not sep or not model or not study:
            raise UserError(f"--as expects MODEL_ID=STUDY_NAME (e.g. my-bio=Llama3-OpenBioLLM-8B), got '{value}'")
        aliases[model] = study
    return aliases


@declare(reads=("database", "config"), example=("reproduce", "--db", "{db}", "--config", "{config}"))
@click.command("reproduce")
@db_option
@pair_options
@task_option("Only these tasks (repeatable, or comma-separated: --task nejm,jama).")
@click.option("--as", "aliases", multiple=True, metavar="MODEL=STUDY_NAME",
              help="Treat one of your model ids as a study model (e.g. my-bio=Llama3-OpenBioLLM-8B).")
@click.option("--resamples", type=RESAMPLES, default=10_000, show_default=True,
              help="Bootstrap resamples.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def reproduce_command(db_path: Path, pair_filter: tuple[str, ...], model_pair: tuple[str, str] | None,
                      config_path: Path | None, task_ids: tuple[str, ...], aliases: tuple[str, ...], resamples: int,
                      as_json: bool) -> None:
    """Compare our results with the study's published numbers, per model and metric, and check the headline
    findings (the sign of biomedical minus general per task).

    Published numbers ship with medbench-local: CLUE June 2024 per-model results (the numbers contemporaneous
    with Dorfner et al.) and the four case-challenge accuracies of the Dorfner et al. abstract. Our values
    are aggregated as the reference did (per-item mean; with --reference-quirks runs also its double-counted
    first item). Expect differences: quantized GGUF weights, llama.cpp kernels and our own prompts are not
    the original setup. A finding is 'reproduced' when, for every metric of the task, the Holm-adjusted test
    of our paired difference (exact McNemar or permutation, as in 'compare') is significant (p < 0.05) and the
    difference has the published sign; the evaluations are those 'compare' pairs (same data, same settings).
    --as must name a model with results here and a study name of the published tables (the error lists them).
    The pairs are those of 'compare' (the database's and models.toml's; --pair, --models BIO GEN); with --pair
    or --models only their models are listed.

    \b
    Examples:
      medbench-local run --pair openbiollm-8b --task nejm \\
          --data nejm=my_nejm.jsonl --db study.db
      medbench-local reproduce --db study.db
      medbench-local reproduce --db study.db --task nejm,jama \\
          --models openbiollm-70b llama3-70b-instruct
      medbench-local reproduce --db results.db \\
          --as smollm2-135m-instruct=Llama3-OpenBioLLM-8B \\
          --as gemma3-270m=Meta-Llama-3-8B-Instruct
    """
    alias_map = _aliases(aliases)
    with reading(db_path) as db:
        selection = selected_pairs(db, db_path, config_path, pair_filter, model_pair, task_ids)
        found = reproduction(db, alias_map, selection.pairs, str(db_path), only_pair_members=bool(
            pair_filter or model_pair), tasks=task_ids, resamples=resamples)
        values, verdicts, unpublished = found["values"], found["findings"], found["unpublished"]
        pair_names = [p.name for p in selection.pairs]
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    for entry in unpublished:
        stdout.print(f"[yellow]{literal(entry['model'])} · {literal(entry['task'])}: no published values for this "
                     f"task ({literal(' / '.join(entry['study_names']))} has published values for: "
                     f"{literal(', '.join(entry['published_tasks']))})[/yellow]")
    if not values:
        if not unpublished:
            stdout.print(f"No results of the study's models in {literal(db_path)}. Study model ids: "
                         f"{', '.join(STUDY_NAMES)}; run e.g. 'medbench-local run --pair openbiollm-8b --task "
                         "nejm --data nejm=...', or map your own ids with --as MODEL=STUDY_NAME.")
        return
    rows = []
    for v in values:
        data = "—" if v["data"] is None else f"{v['data']['name']} {(v['data']['sha256'] or '')[:8]}".strip()
        rows.append([literal(v["model"]), literal(v["study_name"]), literal(v["task"]), literal(data),
                     literal(v["metric"]), "—" if v["n"] is None else str(v["n"]),
                     "—" if v["ours"] is None else f"{v['ours']:.1f}", f"{v['published']:.1f}",
                     "—" if v["difference"] is None else f"{v['difference']:+.1f}"])
    print_table(stdout, VALUE_COLUMNS, rows, title="[bold]Ours vs published (×100)[/bold]", heading=1)
    if verdicts:
        rows = []
        for f in verdicts:
            colour = {"reproduced": "green", "not reproduced": "red"}.get(f["verdict"], "yellow")
            data = "—" if f["data"] is None else f"{f['data']['name']} {(f['data']['sha256'] or '')[:8]}".strip()
            rows.append([literal(f["pair"]), literal(f["task"]),
                         literal(data + (" (different data)" if f["different_data"] else "")),
                         f"{f['published_delta']:+.1f}", f"{f['our_delta']:+.1f}", str(f["n"]),
                         format_p(f["p_adjusted"]), f"[{colour}]{f['verdict']}[/]"])
        print_table(stdout, FINDING_COLUMNS, rows, title="[bold]Headline findings: biomedical − general[/bold]",
                    heading=2, notes=["[dim]reproduced: Holm-adjusted p < 0.05 with the published sign, for every "
                                      "metric[/dim]"])
    elif pair_names:
        stdout.print("[dim]No pair with published values for both models and a task they both ran.[/dim]")
