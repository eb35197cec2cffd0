"""Paired comparison of a biomedical model with its general counterpart, item by item.

Why paired: both models answer the same items, so item difficulty is shared; aligning by item id and
resampling items jointly gives the honest (and much narrower) uncertainty of the *difference*. Items that only
one model has are counted and reported, never silently dropped. Binary per-item metrics (accuracy) get the
exact McNemar test with its discordant counts; continuous ones (ROUGE, F1) a paired sign-flip permutation test.
p-values are Holm-adjusted across all task × metric rows of one pair, so a paper can cite them as a family.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import sqlite_utils

from ..metrics.stats import Interval, holm, mcnemar_exact, mean_ci, paired_difference_ci, paired_permutation_test
from ..store.queries import latest_evaluation, pairs, tasks_for
from ..errors import UserError
from ..tasks import get_task
from ..tasks.base import OUTCOMES


# Per-item right/wrong scores (McNemar) and per-item continuous scores (permutation test) of our tasks.
BINARY_METRICS = frozenset({"accuracy", "task1", "task2", "task3", "task3_hallucinated", "task2_abstained"})
CONTINUOUS = frozenset({"rouge1", "rouge2", "rougeL", "em_precision", "em_recall", "em_f1", "ap_precision",
                        "ap_recall", "ap_f1", "valid_ratio", "bertscore_f1", "bertscore_precision",
                        "bertscore_recall", "umls_f1", "umls_precision", "umls_recall"})
# Scores that optional metric back-ends add to items (compared when present).
OPTIONAL_SCORES = ("bertscore_f1", "bertscore_precision", "bertscore_recall", "umls_f1", "umls_precision",
                   "umls_recall")



@dataclass(frozen=True)
class ItemScores:
    """One evaluation's per-item results: item key -> (outcome, metrics)."""

    evaluation: str
    model_id: str
    model_sha256: str
    items: dict[str, tuple[str, dict[str, float]]]
    reference_quirks: bool = False

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
    outcomes: dict[str, dict[str, int]] = field(default_factory=dict)
    evaluations: dict[str, str] = field(default_factory=dict)  # role -> evaluation key (for audits)

    @property
    def ahead(self) -> str | None:
        """Which model is ahead with the 95% CI of the difference excluding 0, if any."""
        if self.delta.low > 0:
            return "biomedical"
        if self.delta.high < 0:
            return "general"
        return None

    def to_json(self) -> dict[str, Any]:
        """The stable, documented JSON shape of one row (see README, 'compare --json')."""
        return {
            "pair": self.pair, "task": self.task, "metric": self.metric, "n": self.n,
            "biomedical": {"model": self.biomedical_model, "evaluation": self.evaluations.get("biomedical"),
                           **_interval(self.biomedical)},
            "general": {"model": self.general_model, "evaluation": self.evaluations.get("general"),
                        **_interval(self.general)},
            "delta": _interval(self.delta), "test": self.test, "p_value": self.p_value,
            "p_adjusted": self.p_adjusted,
            "discordant": None if self.discordant is None else
            {"biomedical_only": self.discordant[0], "general_only": self.discordant[1]},
            "missing": self.missing, "outcomes": self.outcomes,
        }


def _interval(interval: Interval) -> dict[str, float]:
    return {"score": interval.estimate, "ci_low": interval.low, "ci_high": interval.high}


def load_item_scores(db: sqlite_utils.Database, evaluation: str) -> ItemScores:
    head = db.conn.execute("select model_id, model_sha256, settings from evaluations where key = ?",
                           (evaluation,)).fetchone()
    settings = json.loads(head[2] or "{}")
    items = {item: (outcome, json.loads(metrics or "{}")) for item, outcome, metrics in db.conn.execute(
        "select item, outcome, metrics from scores where evaluation = ? order by generation_id", (evaluation,))}
    quirks = bool(settings.get("task", {}).get("reference_quirks"))
    return ItemScores(evaluation, head[0], head[1], items, quirks)


def _values(side: ItemScores, keys: list[str], metric: str) -> list[float]:
    return [float(side.items[k][1][metric]) for k in keys]


def compare_metric(pair: str, task: str, metric: str, bio: ItemScores, gen: ItemScores, *,
                   resamples: int, seed: int) -> MetricComparison | None:
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
    binary = all(v in (0.0, 1.0) for v in a + b) and (metric in BINARY_METRICS or metric not in CONTINUOUS)
    if binary:
        mc = mcnemar_exact([v == 1.0 for v in a], [v == 1.0 for v in b])
        test, p_value, discordant = "mcnemar-exact", mc.p_value, (mc.a_only, mc.b_only)
    else:
        test, discordant = "paired-permutation", None
        p_value = paired_permutation_test(a, b, resamples=resamples, seed=seed)
    return MetricComparison(
        pair=pair, task=task, metric=metric, biomedical_model=bio.model_id, general_model=gen.model_id,
        n=len(keys), biomedical=mean_ci(a, resamples=resamples, seed=seed),
        general=mean_ci(b, resamples=resamples, seed=seed),
        delta=paired_difference_ci(a, b, resamples=resamples, seed=seed), test=test, p_value=p_value,
        discordant=discordant,
        missing={"biomedical": len(gen_keys - bio_keys), "general": len(bio_keys - gen_keys)},
        outcomes={"biomedical": bio.outcomes(), "general": gen.outcomes()},
        evaluations={"biomedical": bio.evaluation, "general": gen.evaluation},
    )


def _metric_names(task: str, bio: ItemScores, gen: ItemScores) -> list[str]:
    """The scores to compare: the task's reported metrics (``reported_metrics``, else ``metric_names``, in
    order) plus optional ones that are present. Per-item accounting values that tasks also store (token
    budgets, kept-document shares) and components such as ICD precision/recall are not compared."""
    present: list[str] = []
    for side in (bio, gen):
        for _, metrics in side.items.values():
            present += [m for m in metrics if m not in present]
    try:
        known = get_task(task)
        declared = list(getattr(known, "reported_metrics", known.metric_names)) + list(OPTIONAL_SCORES)
    except UserError:  # a task this version does not know: compare everything stored
        return present
    return [m for m in declared if m in present]


@dataclass
class PairReport:
    """Everything compare/report need for one pair: the rows, and tasks that only one model has run."""

    pair: str
    biomedical_model: str
    general_model: str
    rows: list[MetricComparison] = field(default_factory=list)
    unpaired_tasks: dict[str, str] = field(default_factory=dict)  # task -> which model is missing


def compare_pairs(db: sqlite_utils.Database, *, pair_filter: tuple[str, ...] = (),
                  task_filter: tuple[str, ...] = (), resamples: int = 10_000, seed: int = 0) -> list[PairReport]:
    reports = []
    for pair in pairs(db):
        if pair_filter and pair["name"] not in pair_filter:
            continue
        report = PairReport(pair["name"], pair["biomedical"], pair["general"])
        for task in tasks_for(db, [pair["biomedical"], pair["general"]]):
            if task_filter and task not in task_filter:
                continue
            keys = {role: latest_evaluation(db, pair[role], task) for role in ("biomedical", "general")}
            if not keys["biomedical"] or not keys["general"]:
                report.unpaired_tasks[task] = "biomedical" if not keys["biomedical"] else "general"
                continue
            bio, gen = load_item_scores(db, keys["biomedical"]), load_item_scores(db, keys["general"])
            for metric in _metric_names(task, bio, gen):
                row = compare_metric(pair["name"], task, metric, bio, gen, resamples=resamples, seed=seed)
                if row is not None:
                    report.rows.append(row)
        adjusted = holm([r.p_value for r in report.rows]) if report.rows else []
        report.rows = [_with_adjusted(r, p) for r, p in zip(report.rows, adjusted)]
        reports.append(report)
    return reports


def _with_adjusted(row: MetricComparison, p_adjusted: float) -> MetricComparison:
    values = asdict(row)
    values.update(biomedical=row.biomedical, general=row.general, delta=row.delta, p_adjusted=p_adjusted)
    return MetricComparison(**values)
