"""Plots for the report, as PNG bytes (matplotlib, headless Agg backend; nothing is fetched, fonts are local).

Why PNG bytes: the HTML report embeds them as data URIs so that it opens on an air-gapped machine with no
network and no companion files; the same bytes are also written next to it for papers and slides.

Why every chart is horizontal with a computed height: labels are task, data and model names of any length, read
from the database. Side by side under vertical bars they overlapped as soon as a pair had a few tasks; stacked
on the y axis, wrapped to a fixed width and given a row pitch computed from their line count, they cannot
(tests/test_report_plots.py measures the drawn text boxes). Each ``*_figure`` function returns the figure so
that the layout can be checked before it becomes pixels.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
# Labels carry pair and model names read from the database: "$" must never switch on math parsing (a name
# like "a$\\frac" would make the renderer raise).
matplotlib.rcParams["text.parse_math"] = False
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.transforms import ScaledTranslation, blended_transform_factory  # noqa: E402

from ..analysis.paired import SIGNIFICANCE, MetricComparison, PairReport  # noqa: E402

UNPAIRED = "unpaired (not compared)"
OUTCOME_COLOURS = {"correct": "#2e7d32", "scored": "#66bb6a", "wrong": "#c62828", "unparseable": "#ef6c00",
                   "conflict": "#6d4c41", "truncated": "#8e24aa", "error": "#424242", UNPAIRED: "#cfd8dc"}
AHEAD_COLOURS = {"biomedical": "#2e7d32", "general": "#c62828", None: "#607d8b"}
MODEL_COLOURS = {"biomedical": "#1565c0", "general": "#f9a825"}

LABEL_WIDTH = 38          # characters per label line before it wraps
FONT_SIZE = 8.0           # points, tick labels
_LINE_HEIGHT = 1.45       # line pitch as a multiple of the font size (matplotlib's default spacing is 1.2)
_TOP_INCHES, _BOTTOM_INCHES = 0.9, 0.75   # title and side labels above, x label below the axes


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def wrap_label(text: str, width: int = LABEL_WIDTH) -> str:
    """Wrap a label to lines of at most ``width`` characters: between words, else after a "-", "_", "." or "/"
    inside a long name (a model id, a file name), and only inside a run of other characters as a last resort."""
    lines: list[str] = []
    for part in str(text).split("\n"):
        pieces = [piece for word in part.split() for piece in _name_pieces(word, width)]
        line = ""
        for piece, joined in pieces:
            glue = "" if joined or not line else " "
            if line and len(line) + len(glue) + len(piece) > width:
                lines.append(line)
                line = piece
            else:
                line += glue + piece
        lines.append(line)
    return "\n".join(lines)


def _name_pieces(word: str, width: int) -> list[tuple[str, bool]]:
    """``word`` as (piece, joined to the piece before) pairs: the whole word when it fits a line, else its parts
    after each separator, each cut to ``width`` when even that is too long."""
    if len(word) <= width:
        return [(word, False)]
    parts = [part for part in re.split(r"(?<=[-_./])", word) if part]
    out: list[tuple[str, bool]] = []
    for part in parts:
        out += [(part[i:i + width], True) for i in range(0, len(part), width)]
    return [(out[0][0], False)] + out[1:]


def _pitch(labels: Sequence[str]) -> float:
    """Inches per axis row so that the tallest wrapped label fits in its row with a margin."""
    lines = max((label.count("\n") + 1 for label in labels), default=1)
    return lines * FONT_SIZE * _LINE_HEIGHT / 72 + 0.14


def _figure(rows: float, pitch: float, width: float = 7.5) -> tuple[Figure, plt.Axes]:
    """A figure whose axes are exactly ``rows * pitch`` inches tall, with fixed margins above and below."""
    height = rows * pitch + _TOP_INCHES + _BOTTOM_INCHES
    figure, axis = plt.subplots(figsize=(width, height))
    figure.subplots_adjust(top=1 - _TOP_INCHES / height, bottom=_BOTTOM_INCHES / height, left=0.05, right=0.78)
    return figure, axis


def _row_label(row: MetricComparison) -> str:
    return wrap_label(f"{row.group_label} · {row.metric}")


def forest_figure(report: PairReport) -> Figure:
    """Paired differences (biomedical − general) with 95% CIs, one line per task × data × metric, n on the right.

    Colour follows ``compare``: a row is green or red when the Holm-adjusted test is significant
    (``MetricComparison.ahead``), whatever its interval looks like; which side favours which model is written
    above the zero line."""
    rows: list[MetricComparison] = list(reversed(report.rows))
    labels = [_row_label(r) for r in rows]
    figure, axis = _figure(max(len(rows), 1), _pitch(labels))
    for y, row in enumerate(rows):
        colour = AHEAD_COLOURS[row.ahead]
        axis.plot([100 * row.delta.low, 100 * row.delta.high], [y, y], color=colour, linewidth=2)
        axis.plot(100 * row.delta.estimate, y, "o", color=colour)
    reach = max([abs(100 * v) for r in rows for v in (r.delta.low, r.delta.high)] + [1.0]) * 1.12
    axis.set_xlim(-reach, reach)  # zero in the middle: both sides get the same room
    axis.set_ylim(-0.6, len(rows) - 0.4)
    axis.axvline(0, color="#9e9e9e", linestyle="--", linewidth=1)
    axis.set_yticks(range(len(rows)), labels, fontsize=FONT_SIZE)
    counts = axis.twinx()
    counts.set_ylim(axis.get_ylim())
    counts.set_yticks(range(len(rows)), [f"n = {r.n:,}" for r in rows], fontsize=FONT_SIZE)
    at_zero = blended_transform_factory(axis.transData, axis.transAxes)
    sides = (f"← {wrap_label(report.general_model, 40)} better ", f" {wrap_label(report.biomedical_model, 40)} better →")
    for text, align, role in ((sides[0], "right", "general"), (sides[1], "left", "biomedical")):
        # a fixed distance in points above the axes (a fraction of the axes height grows with the row count)
        axis.annotate(text, xy=(0, 1), xycoords=at_zero, xytext=(0, 4), textcoords="offset points", ha=align,
                      multialignment=align, va="bottom", fontsize=FONT_SIZE, color=AHEAD_COLOURS[role])
    side_lines = max(text.count("\n") + 1 for text in sides)
    axis.set_xlabel("Δ biomedical − general, points ×100, 95% CI", fontsize=FONT_SIZE)
    axis.set_title(wrap_label(f"{report.pair}: paired differences", 70), fontsize=10,
                   pad=side_lines * FONT_SIZE * _LINE_HEIGHT + 10)  # above the side labels
    handles = [Line2D([], [], color=AHEAD_COLOURS["biomedical"], marker="o", label="biomedical ahead"),
               Line2D([], [], color=AHEAD_COLOURS["general"], marker="o", label="general ahead"),
               Line2D([], [], color=AHEAD_COLOURS[None], marker="o", label="not significant")]
    # the legend starts right of the widest "n = …" label (its width estimated generously: 0.7 em a character)
    n_width = max(len(f"n = {r.n:,}") for r in rows) * FONT_SIZE * 0.7 / 72 + 0.25
    axis.legend(handles=handles, title=f"Holm p < {SIGNIFICANCE:g}", fontsize=7, title_fontsize=7,
                loc="upper left", bbox_to_anchor=(1, 1), borderaxespad=0,
                bbox_transform=axis.transAxes + ScaledTranslation(n_width, 0, figure.dpi_scale_trans))
    return figure


def forest_plot(report: PairReport) -> bytes:
    return _png(forest_figure(report))


def score_figure(report: PairReport) -> Figure:
    """Each model's score with its 95% CI, two bars per task × data × metric."""
    rows = list(reversed(report.rows))
    labels = [_row_label(r) for r in rows]
    figure, axis = _figure(max(len(rows), 1), _pitch(labels))
    height = 0.38
    for offset, side, label in ((height / 2, "biomedical", report.biomedical_model),
                                (-height / 2, "general", report.general_model)):
        values = [100 * getattr(r, side).estimate for r in rows]
        errors = [[100 * (getattr(r, side).estimate - getattr(r, side).low) for r in rows],
                  [100 * (getattr(r, side).high - getattr(r, side).estimate) for r in rows]]
        axis.barh([y + offset for y in range(len(rows))], values, height, xerr=errors, capsize=2,
                  color=MODEL_COLOURS[side], label=wrap_label(f"{label} ({side})", 28))
    axis.set_yticks(range(len(rows)), labels, fontsize=FONT_SIZE)
    axis.set_ylim(-0.6, len(rows) - 0.4)
    axis.set_xlim(0, 105)
    axis.set_xlabel("score ×100, 95% CI", fontsize=FONT_SIZE)
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    axis.set_title(wrap_label(f"{report.pair}: scores per task", 70), fontsize=10)
    return figure


def score_chart(report: PairReport) -> bytes:
    return _png(score_figure(report))


def outcome_figure(report: PairReport) -> Figure:
    """Stacked outcome counts per task and model: where a model fails on format rather than knowledge.

    One horizontal bar per (task, data) row group and model; the two models of a group sit together. As in the
    outcome table: the n compared items by outcome, then the items only that model answered (light grey)."""
    groups = list({r.group_label: r for r in report.rows}.values())  # first row of each (task, data) group
    labels: list[str] = []
    stacks: list[dict[str, int]] = []
    positions: list[float] = []
    y = 0.0
    for group in reversed(groups):
        for role, other, model in (("general", "biomedical", report.general_model),
                                   ("biomedical", "general", report.biomedical_model)):
            labels.append(wrap_label(f"{group.group_label}\n{model} ({role})"))
            # the compared items by outcome (they add up to n), then the items only this model answered
            compared = group.paired_outcomes.get(role) or group.outcomes.get(role, {})
            stacks.append({**compared, UNPAIRED: group.missing.get(other, 0)})
            positions.append(y)
            y += 1
        y += 0.5  # a gap between row groups
    figure, axis = _figure(max(y - 0.5, 1), _pitch(labels))
    lefts = [0] * len(labels)
    for outcome, colour in OUTCOME_COLOURS.items():
        counts = [stack.get(outcome, 0) for stack in stacks]
        if any(counts):
            axis.barh(positions, counts, 0.8, left=lefts, color=colour, label=outcome)
            lefts = [left + count for left, count in zip(lefts, counts)]
    axis.set_yticks(positions, labels, fontsize=FONT_SIZE)
    axis.set_ylim(-0.6, max(positions, default=0) + 0.6)
    axis.set_xlabel("items", fontsize=FONT_SIZE)
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    axis.set_title(wrap_label(f"{report.pair}: outcomes", 70), fontsize=10)
    return figure


def outcome_chart(report: PairReport) -> bytes:
    return _png(outcome_figure(report))
