"""Our numbers next to the study's published ones, and whether its headline findings hold (``reproduce``).

Why here, in analysis/: the rule that calls a finding "reproduced" decides what the project claims, so it lives
with the paired comparison it is built on (analysis/paired.py) and is tested there, not in the command that
prints it (cli/reproduce.py only turns options into these calls and the rows into tables or JSON).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from ..errors import UserError
from ..store.queries import model_tasks, summarize_evaluation
from .clue_levels import level_score
from .pair_sources import PairSource
from .paired import compare_pairs
from .pairing import model_evaluations
from .published import clue_level_spec, lookup, published_values


def study_names() -> list[str]:
    """Every name the published tables use (CLUE and abstract spellings): what --as accepts."""
    return sorted({v.study_name for v in published_values()}, key=str.casefold)


def check_aliases(aliases: dict[str, str], model_ids: list[str], where: str) -> None:
    """Refuse an --as whose study name the published tables do not know, or whose model id has no results
    here, instead of silently printing nothing for it."""
    names = study_names()
    for model, study in aliases.items():
        if study not in names:
            raise UserError(f"--as {model}={study}: unknown study name '{study}'; valid names: {', '.join(names)}")
        if model not in model_ids:
            known = ", ".join(model_ids) if model_ids else "none"
            raise UserError(f"--as {model}={study}: no results of a model '{model}' in {where} "
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
            level_published = published.get(("clue", metric))
            level_value = level_score(ours_by_task, clue_level_spec(level))
            if level_published is not None and level_value is not None:
                result.append(_row(model_id, level_published, None, level_value, None))
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


def reproduction(db: Any, aliases: dict[str, str], pair_list: Sequence[PairSource], where: str, *,
                 only_pair_members: bool = False, tasks: tuple[str, ...] = (), resamples: int = 10_000
                 ) -> dict[str, list[dict[str, Any]]]:
    """Everything ``reproduce`` reports, after checking the aliases: ``values`` (ours vs published),
    ``findings`` (the headline verdicts) and ``unpublished`` (tasks a study model ran without published values).

    ``only_pair_members``: list only the models of ``pair_list`` (``--pair``/``--models`` given); ``tasks``:
    only these (empty: all). ``where`` names the database in messages.
    """
    check_aliases(aliases, list(dict.fromkeys(m for m, _ in model_tasks(db))), where)
    members = {m for p in pair_list for m in p.members} if only_pair_members else None
    values = value_rows(db, aliases, pair_list, members, tasks)
    verdicts = findings(db, aliases, resamples, pair_list, tasks)
    unpublished = [u for u in unpublished_tasks(db, aliases)
                   if (members is None or u["model"] in members) and (not tasks or u["task"] in tasks)]
    return {"values": values, "findings": verdicts, "unpublished": unpublished}
