"""``medbench-local reproduce``: our numbers next to the published ones, and whether the headline findings hold."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from ..analysis.paired import compare_pairs
from ..analysis.published import STUDY_NAMES, lookup
from ..errors import UserError
from ..metrics.clue_levels import level1, level2
from ..store import open_database
from ..store.queries import latest_evaluation, pairs, summarize_evaluation
from .common import db_option, stdout
from .limits import RESAMPLES


def _aliases(values: tuple[str, ...]) -> dict[str, str]:
    aliases = {}
    for value in values:
        model, sep, study = value.partition("=")
        if not sep or not model or not study:
            raise UserError(f"--as expects MODEL_ID=STUDY_NAME (e.g. my-bio=Llama3-OpenBioLLM-8B), got '{value}'")
        aliases[model] = study
    return aliases


def value_rows(db: Any, aliases: dict[str, str]) -> list[dict[str, Any]]:
    """Per model, task and metric with a published value: ours (×100, as the reference aggregates) and theirs;
    plus the CLUE Level-1/Level-2 aggregates when every component task has been run."""
    result: list[dict[str, Any]] = []
    models = [m for (m,) in db.conn.execute("select distinct model_id from evaluations order by model_id")]
    for model_id in models:
        published = lookup(model_id, aliases)
        if not published:
            continue
        ours_by_task: dict[str, dict[str, float]] = {}
        for (task,) in db.conn.execute("select distinct task from evaluations where model_id = ? order by task",
                                       (model_id,)):
            summary = summarize_evaluation(db, latest_evaluation(db, model_id, task) or "")
            ours_by_task[task] = {k: 100 * v for k, v in summary.metrics.items()}
            for (p_task, metric), value in published.items():
                if p_task == task:
                    result.append(_row(model_id, value, summary.n, ours_by_task[task].get(metric)))
        for metric, level in (("level1", level1), ("level2", level2)):
            value = published.get(("clue", metric))
            ours = level(ours_by_task)
            if value is not None and ours is not None:
                result.append(_row(model_id, value, None, ours))
    return result


def _row(model_id: str, value: Any, n: int | None, ours: float | None) -> dict[str, Any]:
    return {"model": model_id, "study_name": value.study_name, "task": value.task, "metric": value.metric,
            "n": n, "ours": ours, "published": value.value,
            "difference": None if ours is None else ours - value.value, "source": value.source}


def findings(db: Any, aliases: dict[str, str], resamples: int) -> list[dict[str, Any]]:
    """Per pair and task: the direction of the biomedical-minus-general difference, published vs ours."""
    result = []
    for report in compare_pairs(db, resamples=resamples):
        bio_pub, gen_pub = lookup(report.biomedical_model, aliases), lookup(report.general_model, aliases)
        for task in dict.fromkeys(r.task for r in report.rows):
            metrics = [m for (t, m) in bio_pub if t == task and (t, m) in gen_pub]
            rows = [r for r in report.rows if r.task == task and r.metric in metrics]
            if not rows:
                continue
            pub_delta = sum(bio_pub[(task, r.metric)].value - gen_pub[(task, r.metric)].value for r in rows) / len(rows)
            our_delta = 100 * sum(r.delta.estimate for r in rows) / len(rows)
            same = (pub_delta > 0) == (our_delta > 0) and pub_delta != 0 and our_delta != 0
            significant = all(r.ahead == ("biomedical" if our_delta > 0 else "general") for r in rows)
            verdict = ("reproduced" if same and significant else
                       "same direction, not significant" if same else "not reproduced")
            result.append({"pair": report.pair, "task": task, "metrics": [r.metric for r in rows],
                           "published_delta": pub_delta, "our_delta": our_delta, "n": min(r.n for r in rows),
                           "verdict": verdict})
    return result


@click.command("reproduce")
@db_option
@click.option("--as", "aliases", multiple=True, metavar="MODEL=STUDY_NAME",
              help="Treat one of your model ids as a study model (e.g. my-bio=Llama3-OpenBioLLM-8B).")
@click.option("--resamples", type=RESAMPLES, default=10_000, show_default=True,
              help="Bootstrap resamples.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def reproduce_command(db_path: Path, aliases: tuple[str, ...], resamples: int, as_json: bool) -> None:
    """Compare our results with the study's published numbers, per model and metric, and check the headline
    findings (the sign of biomedical minus general per task).

    Published numbers ship with medbench-local: CLUE June 2024 per-model results (the numbers contemporaneous
    with Dorfner et al.) and the four case-challenge accuracies of the Dorfner et al. abstract. Our values
    are aggregated as the reference did (per-item mean; with --reference-quirks runs also its double-counted
    first item). Expect differences: quantized GGUF weights, llama.cpp kernels and our own prompts are not
    the original setup. A finding is 'reproduced' when our paired difference has the published sign and its
    95% CI excludes 0 for every metric of the task.

    \b
    Examples:
      medbench-local run --pair openbiollm-8b --task nejm --data nejm=my_nejm.jsonl --db study.db
      medbench-local reproduce --db study.db
      medbench-local reproduce --db results.db --as smollm2-135m-instruct=Llama3-OpenBioLLM-8B \\
          --as gemma3-270m=Meta-Llama-3-8B-Instruct
    """
    alias_map = _aliases(aliases)
    db = open_database(db_path, create=False)
    try:
        values, verdicts = value_rows(db, alias_map), findings(db, alias_map, resamples)
        pair_names = [p["name"] for p in pairs(db)]
    finally:
        db.conn.close()
    if as_json:
        click.echo(json.dumps({"values": values, "findings": verdicts}, indent=2))
        return
    if not values:
        stdout.print(f"No results of the study's models in {db_path}. Study model ids: "
                     f"{', '.join(STUDY_NAMES)}; run e.g. 'medbench-local run --pair openbiollm-8b --task nejm "
                     "--data nejm=...', or map your own ids with --as MODEL=STUDY_NAME.")
        return
    table = Table(title="Ours vs published (×100)", title_justify="left")
    for name in ("model", "study name", "task", "metric", "n", "ours", "published", "Δ"):
        table.add_column(name, justify="right" if name in ("n", "ours", "published", "Δ") else "left")
    for v in values:
        table.add_row(v["model"], v["study_name"], v["task"], v["metric"], "—" if v["n"] is None else str(v["n"]),
                      "—" if v["ours"] is None else f"{v['ours']:.1f}", f"{v['published']:.1f}",
                      "—" if v["difference"] is None else f"{v['difference']:+.1f}")
    stdout.print(table)
    if verdicts:
        table = Table(title="Headline findings: biomedical − general", title_justify="left")
        for name in ("pair", "task", "published Δ", "our Δ", "n", "verdict"):
            table.add_column(name)
        for f in verdicts:
            colour = {"reproduced": "green", "not reproduced": "red"}.get(f["verdict"], "yellow")
            table.add_row(f["pair"], f["task"], f"{f['published_delta']:+.1f}", f"{f['our_delta']:+.1f}",
                          str(f["n"]), f"[{colour}]{f['verdict']}[/]")
        stdout.print(table)
    elif pair_names:
        stdout.print("[dim]No pair with published values for both models and a task they both ran.[/dim]")
