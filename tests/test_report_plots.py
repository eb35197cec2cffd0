"""The report's charts: no drawn label overlaps another, whatever the task, data and model names are.

The check measures what matplotlib really draws (each text's window extent after a draw), for any number of
rows and any label length (hypothesis), so it holds for the class of names, not for one example.
"""

from __future__ import annotations

from itertools import combinations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from matplotlib.figure import Figure
from matplotlib.text import Text
from matplotlib.transforms import Bbox

from medbench_local.analysis.paired import MetricComparison, PairReport
from medbench_local.analysis.pairing import DataLabel
from medbench_local.analysis.stats import Interval
from medbench_local.report import plots

NAME = st.text(alphabet=st.sampled_from("abcdefghijklmnopqrstuvwxyz-_. 0123456789ÄéΩ"), min_size=1, max_size=90)


def _row(pair: str, task: str, data: str, metric: str, bio: str, gen: str, n: int, delta: float,
         p_adjusted: float) -> MetricComparison:
    outcomes = {"correct": n // 2, "wrong": n // 4, "unparseable": n // 8, "conflict": 1, "truncated": 2, "error": 1}
    return MetricComparison(
        pair=pair, task=task, metric=metric, biomedical_model=bio, general_model=gen, n=n,
        biomedical=Interval(0.5, 0.4, 0.6), general=Interval(0.5 - delta, 0.4 - delta, 0.6 - delta),
        delta=Interval(delta, delta - 0.1, delta + 0.1), test="mcnemar-exact", p_value=p_adjusted,
        p_adjusted=p_adjusted, outcomes={"biomedical": outcomes, "general": outcomes},
        data=DataLabel(data, "ab" * 32))


def make_report(pair: str, bio: str, gen: str, tasks: list[str], metrics: list[str], n: int = 1234) -> PairReport:
    rows = [_row(pair, task, f"{task}-data.jsonl", metric, bio, gen, n, 0.3 * ((i % 3) - 1), 0.01 * (i % 10))
            for i, (task, metric) in enumerate((t, m) for t in tasks for m in metrics)]
    return PairReport(pair, bio, gen, rows)


def _texts(figure: Figure) -> list[Text]:
    """Every drawn, non-empty text of the figure: titles, legend entries, annotations and the tick labels of
    ticks inside the view (matplotlib keeps label objects for ticks outside it, but does not draw them)."""
    undrawn: set[int] = set()
    for axes in figure.axes:
        for axis in (axes.xaxis, axes.yaxis):
            low, high = sorted(axis.get_view_interval())
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                if not low - 1e-9 <= tick.get_loc() <= high + 1e-9:
                    undrawn.update({id(tick.label1), id(tick.label2)})
    found = [t for t in figure.findobj(Text) if t.get_visible() and t.get_text().strip() and id(t) not in undrawn]
    return [t for t in found if t.get_window_extent().width > 0]


def overlaps(figure: Figure) -> list[tuple[str, str]]:
    """Pairs of drawn texts whose boxes intersect (a text inside a legend with its own legend is allowed)."""
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()  # type: ignore[attr-defined]
    boxes: list[tuple[str, Bbox]] = [(t.get_text(), t.get_window_extent(renderer)) for t in _texts(figure)]
    found = []
    for (a, box_a), (b, box_b) in combinations(boxes, 2):
        shrunk_a = Bbox.from_extents(box_a.x0 + 0.5, box_a.y0 + 0.5, box_a.x1 - 0.5, box_a.y1 - 0.5)
        if shrunk_a.overlaps(box_b):
            found.append((a, b))
    return found


FIGURES = {"forest": plots.forest_figure, "scores": plots.score_figure, "outcomes": plots.outcome_figure}


@pytest.mark.parametrize("kind", sorted(FIGURES))
def test_long_names_and_many_tasks_do_not_overlap(kind: str) -> None:
    """The case that used to overlap: several tasks with data names, long model names, two metrics each."""
    report = make_report("openbiollm-llama3-70b-vs-llama3-70b-instruct",
                         "openbiollm-llama3-70b-instruct-q4_k_m-imatrix", "meta-llama-3-70b-instruct-q4_k_m",
                         ["nejm", "jama", "medqa", "pubmedqa", "mmlu_medical", "mednli", "meqsum"],
                         ["accuracy", "rougeL"])
    figure = FIGURES[kind](report)
    assert overlaps(figure) == []
    rows = 2 * 7 if kind == "outcomes" else len(report.rows)  # outcomes: one bar per task and model
    assert len(figure.axes[0].get_yticklabels()) == rows


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(sorted(FIGURES)), pair=NAME, bio=NAME, gen=NAME,
       tasks=st.lists(NAME, min_size=1, max_size=6, unique=True),
       metrics=st.lists(st.sampled_from(["accuracy", "rouge1", "rougeL", "em_f1", "task3_hallucinated"]),
                        min_size=1, max_size=3, unique=True),
       n=st.integers(min_value=1, max_value=10_000_000))
def test_no_label_overlaps_for_any_names(kind: str, pair: str, bio: str, gen: str, tasks: list[str],
                                         metrics: list[str], n: int) -> None:
    figure = FIGURES[kind](make_report(pair, bio, gen, tasks, metrics, n))
    try:
        assert overlaps(figure) == []
    finally:
        import matplotlib.pyplot as plt

        plt.close(figure)


def test_forest_plot_names_the_sides_shows_n_and_colours_by_the_holm_rule() -> None:
    report = make_report("demo", "bio-model", "gen-model", ["jama", "nejm", "medqa"], ["accuracy"], n=77)
    figure = plots.forest_figure(report)
    texts = [t.get_text() for t in _texts(figure)]
    assert any("gen-model better" in t and t.lstrip().startswith("←") for t in texts)
    assert any("bio-model better" in t and t.rstrip().endswith("→") for t in texts)
    assert texts.count("n = 77") == 3
    axis = figure.axes[0]
    # rows are drawn bottom-up: (line, marker) per row; each row's colour follows MetricComparison.ahead
    lines = [line for line in axis.get_lines() if len(line.get_xdata()) == 2 and line.get_linestyle() == "-"]
    expected = [plots.AHEAD_COLOURS[r.ahead] for r in reversed(report.rows)]
    assert [line.get_color() for line in lines] == expected
    assert {r.ahead for r in report.rows} == {"biomedical", "general", None}  # all three colours exercised


def test_wrap_label_keeps_every_character_and_bounds_the_width() -> None:
    text = "x" * 100 + " jama · data.jsonl"
    wrapped = plots.wrap_label(text, 30)
    assert all(len(line) <= 30 for line in wrapped.split("\n"))
    assert wrapped.replace("\n", "").replace(" ", "") == text.replace(" ", "")
