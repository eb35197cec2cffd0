"""Paired comparison of a biomedical model with its general counterpart, item by item.

Why paired: both models answer the same items, so item difficulty is shared; aligning by item id gives the
honest (and much narrower) uncertainty of the *difference*. Which evaluations are paired at all is decided by
``analysis.pairing`` (same data, same task settings). Items that only one model has are counted and reported,
never silently dropped.

Tests and intervals agree by construction (analysis/stats.py): binary per-item metrics (accuracy) get the exact
McNemar test with its discordant counts, Wilson intervals per model and a continuity-corrected Tango score
interval for the difference (it never excludes 0 when the exact McNemar p >= 0.05); continuous ones (ROUGE,
F1) a paired sign-flip permutation test with BCa bootstrap intervals. p-values are Holm-adjusted across all
task x data x metric rows of one pair, and *the Holm-adjusted test decides* which model is ahead
(``MetricComparison.ahead``, the colours, ``reproduce``'s verdict); the interval is reported beside it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import sqlite_utils

from ..errors import UserError
from ..gates.stored import load_metrics, load_object, member_object
from ..store.queries import evaluation_head, evaluation_scores, has_evaluation, tasks_for
from ..tasks import get_task, task_ids
from ..tasks.base import BERTSCORE_METRICS, OUTCOMES, UMLS_METRICS
from .pair_sources import PairSource, database_pairs
from .pairing import DataLabel, PairedEvaluations, PairingNote, pair_evaluations
from .stats import (
    Interval,
    format_p,
    holm,
    mcnemar_exact,
    mean_ci,
    paired_difference_ci,
    paired_permutation_test,
    paired_proportion_difference_ci,
    wilson_ci,
)

# A difference counts as significant when its Holm-adjusted p is below this.
SIGNIFICANCE = 0.05
# compare warns when one gold label holds more than this share of the evaluated items (e.g. a --limit that took
# PubMedQA's label-sorted head: every answer "yes", where "always A" scores 100%).
DEGENERATE_GOLD_SHARE = 0.9

# One sentence per rule, shared by compare's footnote, its Markdown and the HTML report (README says the same).
PAIRING_NOTE = ("Pairs: evaluations on the same data (file SHA-256) with equal task settings; one row group per "
                "task and data; where several match, the newest pair.")
TRUNCATION_NOTE = ("Truncated (token budget ran out): a multiple-choice answer not readable by then scores 0; "
                   "a summary or code list keeps the ROUGE/F1 of the text written before the cut, as in the "
                   "CLUE reference; trunc = share of the n items truncated, biomedical/general.")
CI_NOTE = ("95% CIs: Wilson per model and continuity-corrected Tango score interval for Δ (binary metrics), BCa "
           "bootstrap (continuous); tests: exact McNemar (binary), paired sign-flip permutation (continuous); Holm "
           "across the pair's rows.")
INTERVAL_NOTE = (f"{CI_NOTE} The verdict says in words which model is ahead when the Holm-adjusted p < 0.05 "
                 "(colour only repeats it: green biomedical, red general).")
# The words of a row's verdict (compare's table, Markdown and JSON, the report, export, reproduce): the words
# carry the result, so that it survives a file, Markdown, a printout and colour blindness.
VERDICT_WORDS = {"biomedical": "biomedical ahead", "general": "general ahead", None: "no significant difference"}
# What compare prints once under its tables (and Markdown once at the end): the rest is in 'compare --help'.
METHODS_NOTE = ("Scores ×100 with 95% CIs; Δ = biomedical − general with its paired 95% CI. Verdict: Holm-adjusted "
                "p < 0.05 across the pair's rows (exact McNemar for accuracy, paired permutation otherwise). "
                "Unparseable, conflict and error items score 0; a truncated multiple-choice answer scores 0, a "
                "truncated summary or code list keeps the ROUGE/F1 of the text written before the cut.")


# Scores that optional metric back-ends add to items (compared when present).
OPTIONAL_SCORES = tuple(m.name for m in BERTSCORE_METRICS + UMLS_METRICS)


def metric_kind(task: str, metric: str) -> str | None:
    """``binary`` or ``continuous`` as the task declares it (``MetricSpec.kind``); for a task this version does
    not know, as any known task declares a metric of that name; None when nobody declares it."""
    known = task_ids()
    if task in known:
        spec = get_task(task).metric(metric)
        if spec is not None:
            return spec.kind
    for other in known:
        spec = get_task(other).metric(metric)
        if spec is not None:
            return spec.kind
    return None



@dataclass(frozen=True)
class ItemScores:
    """One evaluation's per-item results: item key -> (outcome, metrics)."""

    evaluation: str
    model_id: str
    model_sha256: str
    items: dict[str, tuple[str, dict[str, float]]]
    reference_quirks: bool = False
    golds: dict[str, str | None] = field(default_factory=dict)  # item key -> gold answer as scored

    def outcomes(self) -> dict[str, int]:
        counts = {name: 0 for name in OUTCOMES}
        for outcome, _ in self.items.values():
            counts[outcome] = counts.get(outcome, 0) + 1
        return counts


@dataclass(frozen=True)
class MetricComparison:
    pair: str
    task: str
    metric: str
    biomedical_model: str
    general_model: str
    n: int                                   # items scored on this metric by both models
    biomedical: Interval
    general: Interval
    delta: Interval                          # biomedical minus general
    test: str                                # "mcnemar-exact" or "paired-permutation"
    p_value: float
    p_adjusted: float = 1.0
    discordant: tuple[int, int] | None = None  # (biomedical right & general wrong, the reverse)
    missing: dict[str, int] = field(default_factory=dict)  # items only the other model has
    outcomes: dict[str, dict[str, int]] = field(default_factory=dict)  # every item of each evaluation
    paired_outcomes: dict[str, dict[str, int]] = field(default_factory=dict)  # the n compared items: sum n
    evaluations: dict[str, str] = field(default_factory=dict)  # role -> evaluation key (for audits)
    data: DataLabel | None = None                  # the data both evaluations ran on
    general_data: DataLabel | None = None          # set when paired across different data (on request)
    superseded: tuple[tuple[str, str], ...] = ()   # older matching (biomedical, general) evaluation pairs
    truncated_rate: dict[str, float] = field(default_factory=dict)  # role -> share of the n items truncated
    gold_labels: dict[str, int] | None = None      # binary metrics: gold answer -> items (None otherwise)

    @property
    def ahead(self) -> str | None:
        """Which model is ahead: the Holm-adjusted test is significant and the difference has that sign.

        The test decides, not the interval: the interval of the difference is reported beside it (for binary
        metrics it never excludes 0 when the unadjusted exact test is not significant; see analysis/stats.py).
        """
        if self.p_adjusted >= SIGNIFICANCE or self.delta.estimate == 0:
            return None
        return "biomedical" if self.delta.estimate > 0 else "general"

    @property
    def verdict(self) -> str:
        """The row's result in words: "biomedical ahead", "general ahead" or "no significant difference"."""
        return VERDICT_WORDS[self.ahead]

    @property
    def verdict_text(self) -> str:
        """The verdict with the p-value that decided it, as tables print it: "general ahead (Holm p 0.003)"."""
        return f"{self.verdict} (Holm p {format_p(self.p_adjusted)})"

    @property
    def degenerate_gold(self) -> tuple[str, float] | None:
        """(label, share) when one gold label holds more than 90% of the compared items, else None."""
        if not self.gold_labels:
            return None
        label, count = max(self.gold_labels.items(), key=lambda entry: (entry[1], entry[0]))
        share = count / sum(self.gold_labels.values())
        return (label, share) if share > DEGENERATE_GOLD_SHARE else None

    @property
    def different_data(self) -> bool:
        return self.general_data is not None

    @property
    def group_label(self) -> str:
        """How the row group is named in tables: task, data name and short hash."""
        if self.data is None:
            return self.task
        text = f"{self.task} · {self.data.short}"
        return text + (f" ≠ {self.general_data.short}" if self.general_data else "")

    def to_json(self) -> dict[str, Any]:
        """The stable, documented JSON shape of one row (see README, 'compare --json')."""
        degenerate = self.degenerate_gold
        return {
            "pair": self.pair, "task": self.task, "metric": self.metric, "n": self.n,
            "biomedical": {"model": self.biomedical_model, "evaluation": self.evaluations.get("biomedical"),
                           **_interval(self.biomedical), "truncated_rate": self.truncated_rate.get("biomedical")},
            "general": {"model": self.general_model, "evaluation": self.evaluations.get("general"),
                        **_interval(self.general), "truncated_rate": self.truncated_rate.get("general")},
            "delta": _interval(self.delta), "test": self.test, "p_value": self.p_value,
            "p_adjusted": self.p_adjusted, "significant": self.ahead is not None, "ahead": self.ahead,
            "verdict": self.verdict,
            "discordant": None if self.discordant is None else
            {"biomedical_only": self.discordant[0], "general_only": self.discordant[1]},
            "missing": self.missing, "outcomes": self.outcomes, "paired_outcomes": self.paired_outcomes,
            "data": None if self.data is None else self.data.to_json(),
            "scoring_mode": "generate" if self.data is None else self.data.mode,
            "different_data": None if self.general_data is None else {"general": self.general_data.to_json()},
            "superseded": [{"biomedical": b, "general": g} for b, g in self.superseded],
            "gold_labels": None if self.gold_labels is None else {
                "counts": self.gold_labels, "degenerate": degenerate is not None,
                "majority": None if degenerate is None else {"label": degenerate[0], "share": degenerate[1]}},
        }


def _interval(interval: Interval) -> dict[str, float]:
    return {"score": interval.estimate, "ci_low": interval.low, "ci_high": interval.high}


def load_item_scores(db: sqlite_utils.Database, evaluation: str) -> ItemScores:
    head = evaluation_head(db, evaluation)
    settings = load_object(head[2], "evaluations", "settings", evaluation)
    items: dict[str, tuple[str, dict[str, float]]] = {}
    golds: dict[str, str | None] = {}
    for generation_id, item, outcome, metrics, gold in evaluation_scores(db, evaluation):
        items[item] = (outcome, load_metrics(metrics, generation_id))
        golds[item] = gold
    quirks = bool(member_object(settings, "task", "evaluations", "settings", evaluation).get("reference_quirks"))
    return ItemScores(evaluation, head[0], head[1], items, quirks, golds)


def _outcome_counts(side: ItemScores, keys: list[str]) -> dict[str, int]:
    """Outcomes of the compared items only: they add up to the row's n (unpaired items are counted apart)."""
    counts = {name: 0 for name in OUTCOMES}
    for key in keys:
        outcome = side.items[key][0]
        counts[outcome] = counts.get(outcome, 0) + 1
    return counts


def _values(side: ItemScores, keys: list[str], metric: str) -> list[float]:
    return [float(side.items[k][1][metric]) for k in keys]


def compare_metric(pair: str, task: str, metric: str, bio: ItemScores, gen: ItemScores, *,
                   resamples: int, seed: int, group: PairedEvaluations | None = None) -> MetricComparison | None:
    """Compare one metric on the items both models have it for; None when there are none."""
    bio_keys = {k for k, (_, m) in bio.items.items() if metric in m}
    gen_keys = {k for k, (_, m) in gen.items.items() if metric in m}
    # a fixed order (by item key), not the order items were stored in: the bootstrap resamples by position, so a
    # database merged from shards or resumed after a crash must give the same intervals as one uninterrupted run
    keys = sorted(bio_keys & gen_keys)
    if not keys:
        return None
    a, b = _values(bio, keys, metric), _values(gen, keys, metric)
    # right/wrong per item -> McNemar; an F1 or ROUGE that happens to be 0 or 1 everywhere stays continuous
    binary = all(v in (0.0, 1.0) for v in a + b) and metric_kind(task, metric) != "continuous"
    gold_labels = None
    if binary:
        right_a, right_b = [v == 1.0 for v in a], [v == 1.0 for v in b]
        mc = mcnemar_exact(right_a, right_b)
        test, p_value, discordant = "mcnemar-exact", mc.p_value, (mc.a_only, mc.b_only)
        bio_ci, gen_ci = wilson_ci(sum(right_a), len(keys)), wilson_ci(sum(right_b), len(keys))
        delta = paired_proportion_difference_ci(mc.a_only, mc.b_only, len(keys))
        gold_labels = dict(Counter(str(bio.golds[k]) for k in keys if bio.golds.get(k) is not None)) or None
    else:
        test, discordant = "paired-permutation", None
        p_value = paired_permutation_test(a, b, resamples=resamples, seed=seed)
        bio_ci, gen_ci = mean_ci(a, resamples=resamples, seed=seed), mean_ci(b, resamples=resamples, seed=seed)
        delta = paired_difference_ci(a, b, resamples=resamples, seed=seed)
    truncated = {role: sum(side.items[k][0] == "truncated" for k in keys) / len(keys)
                 for role, side in (("biomedical", bio), ("general", gen))}
    return MetricComparison(
        pair=pair, task=task, metric=metric, biomedical_model=bio.model_id, general_model=gen.model_id,
        n=len(keys), biomedical=bio_ci, general=gen_ci, delta=delta, test=test, p_value=p_value,
        discordant=discordant,
        missing={"biomedical": len(gen_keys - bio_keys), "general": len(bio_keys - gen_keys)},
        outcomes={"biomedical": bio.outcomes(), "general": gen.outcomes()},
        paired_outcomes={"biomedical": _outcome_counts(bio, keys), "general": _outcome_counts(gen, keys)},
        evaluations={"biomedical": bio.evaluation, "general": gen.evaluation},
        data=group.data if group else None, general_data=group.general_data if group else None,
        superseded=group.superseded if group else (), truncated_rate=truncated, gold_labels=gold_labels,
    )


def _metric_names(task: str, bio: ItemScores, gen: ItemScores) -> list[str]:
    """The scores to compare: the task's reported metrics (``MetricSpec.reported``, in declaration order; optional
    ones such as BERTScore only when present). Per-item accounting values that tasks also store (token
    budgets, kept-document shares) and components such as ICD precision/recall are not compared."""
    present: list[str] = []
    for side in (bio, gen):
        for _, metrics in side.items.values():
            present += [m for m in metrics if m not in present]
    try:
        known = get_task(task)
        declared = list(known.reported_metrics)
    except UserError:  # a task this version does not know: compare everything stored
        return present
    return [m for m in declared if m in present]


@dataclass
class PairReport:
    """Everything compare/report need for one pair: the rows, tasks that only one model has run, and what the
    pairing rule did not pair (one line each)."""

    pair: str
    biomedical_model: str
    general_model: str
    rows: list[MetricComparison] = field(default_factory=list)
    unpaired_tasks: dict[str, str] = field(default_factory=dict)  # task -> which model is missing
    notes: list[PairingNote] = field(default_factory=list)
    groups: list[PairedEvaluations] = field(default_factory=list)


def summary_line(report: PairReport, *, names: bool = True) -> str:
    """One sentence per pair: which model is ahead on which rows, how many rows are significant (plain text).
    ``names``: start with the pair's name and name the models (not needed under a title that does)."""
    rows = report.rows
    lead = f"{report.pair}: " if names else ""
    if not rows:
        return f"{lead}nothing compared."
    tasks = Counter(r.task for r in {r.group_label: r for r in rows}.values())

    def where(side: str | None) -> list[str]:
        return [f"{r.task}{f' ({r.data.short})' if r.data and tasks[r.task] > 1 else ''} {r.metric}"
                for r in rows if r.ahead == side]

    parts = []
    for side, model in (("biomedical", report.biomedical_model), ("general", report.general_model)):
        found = where(side)
        if found:
            who = f"{model} ({side})" if names else side
            count = "the one row" if len(rows) == 1 else f"{len(found)} of {len(rows)} rows"
            parts.append(f"{who} ahead on {count} ({', '.join(found)})")
    neither = len(where(None))
    if neither == len(rows):
        parts.append(f"no significant difference on any of the {len(rows)} rows" if neither > 1
                     else "no significant difference on the one row")
    elif neither:
        parts.append(f"no significant difference on {neither}" + (" row" if neither == 1 else " rows"))
    return lead + "; ".join(parts) + " (ahead: Holm-adjusted p < 0.05)."


def _without(side: ItemScores, keys: frozenset[str]) -> ItemScores:
    return replace(side, items={k: v for k, v in side.items.items() if k not in keys},
                   golds={k: v for k, v in side.golds.items() if k not in keys})


def compare_pairs(db: sqlite_utils.Database, pair_list: Sequence[PairSource] | None = None, *,
                  pair_filter: tuple[str, ...] = (), task_filter: tuple[str, ...] = (), resamples: int = 10_000,
                  seed: int = 0, allow_different_data: bool = False,
                  exclude: Mapping[tuple[str, str], frozenset[str]] | None = None) -> list[PairReport]:
    """Per pair: one row per task x data x metric, paired by ``analysis.pairing``, Holm-adjusted per pair.

    ``pair_list``: the pairs to compare, as the read commands select them (``analysis.pair_sources``: database,
    models.toml, ``--models``); None: the database's pairs. ``exclude``: (pair, task) -> item keys left out of
    both models' items (``compare --exclude-flagged``: the items the contamination probe flagged)."""
    reports = []
    for pair in database_pairs(db) if pair_list is None else pair_list:
        if pair_filter and pair.name not in pair_filter:
            continue
        report = PairReport(pair.name, pair.biomedical, pair.general)
        for task in tasks_for(db, [pair.biomedical, pair.general]):
            if task_filter and task not in task_filter:
                continue
            has = {role: has_evaluation(db, getattr(pair, role), task) for role in ("biomedical", "general")}
            if not all(has.values()):
                report.unpaired_tasks[task] = "biomedical" if not has["biomedical"] else "general"
                continue
            groups, notes = pair_evaluations(db, pair.biomedical, pair.general, task,
                                             allow_different_data=allow_different_data)
            report.notes += notes
            report.groups += groups
            for group in groups:
                bio, gen = load_item_scores(db, group.biomedical), load_item_scores(db, group.general)
                left_out = (exclude or {}).get((pair.name, task))
                if left_out:
                    bio, gen = _without(bio, left_out), _without(gen, left_out)
                for metric in _metric_names(task, bio, gen):
                    row = compare_metric(pair.name, task, metric, bio, gen, resamples=resamples, seed=seed,
                                         group=group)
                    if row is not None:
                        report.rows.append(row)
        adjusted = holm([r.p_value for r in report.rows]) if report.rows else []
        report.rows = [replace(r, p_adjusted=p) for r, p in zip(report.rows, adjusted)]
        reports.append(report)
    return reports
