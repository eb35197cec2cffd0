"""Plots for the report, as PNG bytes (matplotlib, headless Agg backend; nothing is fetched, fonts are local).

Why PNG bytes: the HTML report embeds them as data URIs so that it opens on an air-gapped machine with no
network and no companion files; the same bytes are also written next to it for papers and slides.
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
# Labels carry pair and model names read from the database: "$" must never switch on math parsing (a name
# like "a$\\frac" would make the renderer raise).
matplotlib.rcParams["text.parse_math"] = False
import matplotlib.pyplot as plt  # noqa: E402

from ..analysis.paired import MetricComparison, PairReport  # noqa: E402

OUTCOME_COLOURS = {"correct": "#2e7d32", "scored": "#66bb6a", "wrong": "#c62828", "unparseable": "#ef6c00",
                   "conflict": "#6d4c41", "truncated": "#8e24aa", "error": "#424242"}


def _png(figure: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def forest_plot(report: PairReport) -> bytes:
    """Paired differences (biomedical − general) with 95% CIs, one line per task × metric."""
    rows: list[MetricComparison] = report.rows
    figure, axis = plt.subplots(figsize=(7, 0.45 * len(rows) + 1.2))
    for y, row in enumerate(reversed(rows)):
        colour = {"biomedical": "#2e7d32", "general": "#c62828"}.get(row.ahead or "", "#455a64")
        axis.plot([100 * row.delta.low, 100 * row.delta.high], [y, y], color=colour, linewidth=2)
        axis.plot(100 * row.delta.estimate, y, "o", color=colour)
    axis.axvline(0, color="#9e9e9e", linestyle="--", linewidth=1)
    axis.set_yticks(range(len(rows)), [f"{r.group_label} · {r.metric}" for r in reversed(rows)])
    axis.set_xlabel(f"{report.biomedical_model} − {report.general_model} (points, 95% CI)")
    axis.set_title(f"{report.pair}: paired differences")
    return _png(figure)


def score_chart(report: PairReport) -> bytes:
    """Each model's score with its 95% CI, side by side per task × metric."""
    rows = report.rows
    figure, axis = plt.subplots(figsize=(max(5.0, 1.1 * len(rows) + 2), 3.6))
    width = 0.38
    for offset, side, colour, label in ((-width / 2, "biomedical", "#1565c0", report.biomedical_model),
                                        (width / 2, "general", "#f9a825", report.general_model)):
        values = [100 * getattr(r, side).estimate for r in rows]
        errors = [[100 * (getattr(r, side).estimate - getattr(r, side).low) for r in rows],
                  [100 * (getattr(r, side).high - getattr(r, side).estimate) for r in rows]]
        axis.bar([i + offset for i in range(len(rows))], values, width, yerr=errors, capsize=3, color=colour,
                 label=label)
    axis.set_xticks(range(len(rows)), [f"{r.group_label}\n{r.metric}" for r in rows], fontsize=8)
    axis.set_ylabel("score ×100")
    axis.set_ylim(0, 105)
    axis.legend(fontsize=8)
    axis.set_title(f"{report.pair}: scores per task")
    return _png(figure)


def outcome_chart(report: PairReport) -> bytes:
    """Stacked outcome counts per task and model: where a model fails on format rather than knowledge."""
    tasks = list(dict.fromkeys(r.group_label for r in report.rows))  # one stack per (task, data)
    first = {task: next(r for r in report.rows if r.group_label == task) for task in tasks}
    labels, stacks = [], []
    for task in tasks:
        for role, model in (("biomedical", report.biomedical_model), ("general", report.general_model)):
            labels.append(f"{task}\n{model[:18]}")
            stacks.append(first[task].outcomes[role])
    figure, axis = plt.subplots(figsize=(max(5.0, 0.9 * len(labels) + 2), 3.6))
    bottoms = [0] * len(labels)
    for outcome, colour in OUTCOME_COLOURS.items():
        counts = [stack.get(outcome, 0) for stack in stacks]
        if any(counts):
            axis.bar(range(len(labels)), counts, bottom=bottoms, color=colour, label=outcome)
            bottoms = [b + c for b, c in zip(bottoms, counts)]
    axis.set_xticks(range(len(labels)), labels, fontsize=7)
    axis.set_ylabel("items")
    axis.legend(fontsize=7, ncols=3)
    axis.set_title(f"{report.pair}: outcomes")
    return _png(figure)
