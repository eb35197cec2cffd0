"""The membership signals (contamination/signals.py) against a naive computation from the same logits: for each
position, the softmax by its definition, the expectation and variance of log p written out as sums, and the
lowest-k% mean by sorting a Python list. Property tests over random logits, targets, texts and k."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medbench_local.contamination.signals import (
    SIGNALS,
    TokenStats,
    item_signals,
    lowest_count,
    member_score,
    position_stats,
)


def naive(logits: np.ndarray, targets: list[int], text: str, k: float) -> dict[str, float]:
    logprobs, zs = [], []
    for row, target in zip(logits.tolist(), targets):
        top = max(row)
        total = sum(math.exp(v - top) for v in row)
        logp = [v - top - math.log(total) for v in row]
        p = [math.exp(v) for v in logp]
        mu = sum(pi * li for pi, li in zip(p, logp))
        var = sum(pi * (li - mu) ** 2 for pi, li in zip(p, logp))
        logprobs.append(logp[target])
        sigma = math.sqrt(max(var, 0.0))
        zs.append((logp[target] - mu) / sigma if sigma > 1e-12 else 0.0)
    n = len(logprobs)
    count = max(1, int(k * n + 1e-9))
    loss = -sum(logprobs) / n
    return {"loss": loss, "zlib": loss / len(zlib.compress(text.encode("utf-8"))),
            "min_k": sum(sorted(logprobs)[:count]) / count, "min_k_pp": sum(sorted(zs)[:count]) / count}


@st.composite
def cases(draw: st.DrawFn) -> tuple[np.ndarray, list[int], str, float]:
    n = draw(st.integers(1, 12))
    vocab = draw(st.integers(2, 30))
    scale = draw(st.sampled_from([0.1, 1.0, 10.0, 60.0]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    logits = (rng.standard_normal((n, vocab)) * scale).astype(np.float32)
    targets = [draw(st.integers(0, vocab - 1)) for _ in range(n)]
    text = draw(st.text(min_size=1, max_size=200))
    k = draw(st.sampled_from([0.05, 0.1, 0.2, 0.5, 1.0]))
    return logits, targets, text, k


@settings(max_examples=150)
@given(cases())
def test_signals_equal_a_naive_computation_from_the_same_logits(case: tuple[np.ndarray, list[int], str, float]) -> None:
    logits, targets, text, k = case
    got = item_signals(position_stats(logits, np.array(targets)), text, k)
    want = naive(logits, targets, text, k)
    assert set(got) == set(SIGNALS)
    for name in SIGNALS:
        assert got[name] == pytest.approx(want[name], rel=1e-6, abs=1e-6), name


@settings(max_examples=60)
@given(cases(), st.integers(1, 5))
def test_chunked_positions_give_the_same_signals(case: tuple[np.ndarray, list[int], str, float], chunk: int) -> None:
    """The engine hands logits over in chunks: concatenated chunk statistics equal one pass over all rows."""
    logits, targets, text, k = case
    whole = item_signals(position_stats(logits, np.array(targets)), text, k)
    parts = [position_stats(logits[i:i + chunk], np.array(targets[i:i + chunk])) for i in range(0, len(targets), chunk)]
    assert item_signals(TokenStats.concat(parts), text, k) == pytest.approx(whole, rel=1e-12, abs=1e-12)


def test_a_point_mass_position_has_z_zero_and_no_nan() -> None:
    logits = np.array([[1000.0, 0.0, 0.0], [0.0, 1.0, 2.0]])
    got = item_signals(position_stats(logits, np.array([0, 2])), "ab", 1.0)
    assert all(math.isfinite(v) for v in got.values())


@pytest.mark.parametrize("n, k, count", [(1, 0.2, 1), (4, 0.2, 1), (5, 0.2, 1), (10, 0.2, 2), (99, 0.2, 19),
                                         (100, 0.2, 20), (10, 1.0, 10), (3, 0.5, 1)])
def test_lowest_count(n: int, k: float, count: int) -> None:
    assert lowest_count(n, k) == count


@pytest.mark.parametrize("k", [0.0, -0.1, 1.5])
def test_k_out_of_range_is_refused(k: float) -> None:
    with pytest.raises(ValueError):
        lowest_count(10, k)


def test_member_scores_point_the_same_way() -> None:
    """A sharper prediction of the same targets raises every member score."""
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((20, 10))
    targets = rng.integers(0, 10, 20)
    sharper = logits.copy()
    sharper[np.arange(20), targets] += 5.0
    low = item_signals(position_stats(logits, targets), "some text here")
    high = item_signals(position_stats(sharper, targets), "some text here")
    for name in SIGNALS:
        assert member_score(name, high[name]) > member_score(name, low[name]), name
