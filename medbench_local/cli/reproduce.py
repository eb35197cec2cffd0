"""``medbench-local reproduce``: our numbers next to the published ones, and whether the headline findings hold."""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import click

from ..analysis.paired import compare_pairs
from ..analysis.pair_sources import PairSource
from ..analysis.pairing import model_evaluations
from ..analysis.published import STUDY_NAMES, clue_level_spec, lookup, published_values
from ..errors import UserError
from ..metrics.clue_levels import level_score
from ..metrics.stats import format_p
from ..store.database import reading
from ..store.queries import model_tasks, summarize_evaluation
from .common import db_option, pair_options, selected_pairs, stdout, task_option
from .declare import declare
from .layout import Column, print_table
from .safe_text import literal
from .limits import RESAMPLES


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


def study_names() -> list[str]:
    """Every name the published tables use (CLUE and abstract spellings): what --as accepts."""
    return sorted({v.study_name for v in published_values()}, key=str.casefold)


def check_aliases(aliases: dict[str, str], model_ids: list[str], db_path: Path) -> None:
    """Refuse an --as whose study name the published tables do not know, or whose model id has no results
    here, instead of silently printing nothing for it."""
    names = study_names()
    for model, study in aliases.items():
        if study not in names:
            raise UserError(f"--as {model}={study}: unknown study name '{study}'; valid names: {', '.join(names)}")
        if model not in model_ids:
            known = ", ".join(model_ids) if model_ids else "none"
            raise UserError(f"--as {model}={study}: no results of a model '{model}' in {db_path} "
                            f"(models with results: {known})")


def value_rows(db: Any, aliases: dict[str, str], pair_list: Sequence[PairSource] | None = None,
               models: Collection[str] | None = None, tasks: Collection[str] = ()) -> list[dict[str, Any]]:
    """Per model, task, data and metric with a published value: ours (×100, as the reference aggregates) and
    theirs; plus the CLUE Level-1/Level-2 aggregates when every component task has been run.

    The evaluations are those ``compare`` pairs (analysis.pairing), one per data; a model in no pair counts
    with its newest evaluation per data. The CLUE levels use each task's newest data. ``models``/``tasks``: only
    these (None/empty: all with results).
    """
    result: list[dict[str, Any]] = []
    ran = [(m, t) for m, t in model_tasks(db) if (models is None or m in models) and (not tasks or t in tasks)]
    for model_id in dict.fromkeys(m for m, _ in ran):
        published = lookup(model_id, aliases)
        if not published:
            continue
        ours_by_task: dict[str, dict[str, float]] = {}
        for task in [t for m, t in ran if m == model_id]:
            for key, data in model_evaluations(db, model_id, task, pair_list):
                summary = summarize_evaluation(db, key)
                ours = {k: 100 * v for k, v in summary.metrics.items()}
                ours_by_task.setdefault(task, ours)
                for (p_task, metric), value in published.items():
                    if p_task == task:
                        result.append(_row(model_id, value, summary.n, ours.get(metric), data.to_json()))
        for metric, level in (("level1", 1), ("level2", 2)):
            value = published.get(("clue", metric))
            level_value = level_score(ours_by_task, clue_level_spec(level))
            if value is not None and level_value is not None:
                result.append(_row(model_id, value, None, level_value, None))
    return result


def unpublished_tasks(db: Any, aliases: dict[str, str]) -> list[dict[str, Any]]:
    """Tasks that a study model (or an --as alias) ran but the study published no value for."""
    result = []
    for model_id, task in model_tasks(db):
        published = lookup(model_id, aliases)
        if published and not any(t == task for t, _ in published):
            names = sorted({v.study_name for v in published.values()})
            result.append({"model": model_id, "study_names": names, "task": task,
                           "published_tasks": sorted({t for t, _ in published if t != "clue"})})
    return result


def _row(model_id: str, value: Any, n: int | None, ours: float | None, data: dict[str, Any] | None
         ) -> dict[str, Any]:
    return {"model": model_id, "study_name": value.study_name, "task": value.task, "metric": value.metric,
            "data": data, "n": n, "ours": ours, "published": value.value,
            "difference": None if ours is None else ours - value.value, "source": value.source}


def findings(db: Any, aliases: dict[str, str], resamples: int, pair_list: Sequence[PairSource] | None = None,
             tasks: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Per pair, task and data: the direction of the biomedical-minus-general difference, published vs ours.

    'reproduced' only when, for every metric of the task with published values, the Holm-adjusted test is
    significant (p < 0.05) and our difference has the published sign; 'same direction, not significant' when
    the mean difference has the published sign but that fails; else 'not reproduced'.
    """
    result = []
    for report in compare_pairs(db, pair_list, task_filter=tasks, resamples=resamples):
        bio_pub, gen_pub = lookup(report.biomedical_model, aliases), lookup(report.general_model, aliases)
        for label in dict.fromkeys(r.group_label for r in report.rows):
            group = [r for r in report.rows if r.group_label == label]
            task = group[0].task
            metrics = [m for (t, m) in bio_pub if t == task and (t, m) in gen_pub]
            rows = [r for r in group if r.metric in metrics]
            if not rows:
                continue
            pub_delta = sum(bio_pub[(task, r.metric)].value - gen_pub[(task, r.metric)].value for r in rows) / len(rows)
            our_delta = 100 * sum(r.delta.estimate for r in rows) / len(rows)
            same = (pub_delta > 0) == (our_delta > 0) and pub_delta != 0 and our_delta != 0
            published_side = "biomedical" if pub_delta > 0 else "general"
            significant = all(r.ahead == published_side for r in rows)  # Holm-adjusted p < 0.05, that sign
            verdict = ("reproduced" if same and significant else
                       "same direction, not significant" if same else "not reproduced")
            result.append({"pair": report.pair, "task": task,
                           "data": None if rows[0].data is None else rows[0].data.to_json(),
                           "different_data": rows[0].different_data, "metrics": [r.metric for r in rows],
                           "published_delta": pub_delta, "our_delta": our_delta, "n": min(r.n for r in rows),
                           "p_adjusted": max(r.p_adjusted for r in rows), "verdict": verdict})
    return result


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
        check_aliases(alias_map, list(dict.fromkeys(m for m, _ in model_tasks(db))), db_path)
        members = {m for p in selection.pairs for m in p.members} if pair_filter or model_pair else None
        values = value_rows(db, alias_map, selection.pairs, members, task_ids)
        verdicts = findings(db, alias_map, resamples, selection.pairs, task_ids)
        unpublished = [u for u in unpublished_tasks(db, alias_map)
                       if (members is None or u["model"] in members) and (not task_ids or u["task"] in task_ids)]
        pair_names = [p.name for p in selection.pairs]
    if as_json:
        click.echo(json.dumps({"values": values, "findings": verdicts, "unpublished": unpublished}, indent=2))
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
