"""Tests for medbench_local.analysis.stats against hand-computed or analytically known values."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from fractions import Fraction

import numpy as np
import pytest

from medbench_local.analysis.stats import (
    Interval,
    McNemar,
    holm,
    mcnemar_exact,
    mean_ci,
    paired_difference_ci,
    paired_permutation_test,
    paired_proportion_difference_ci,
    tango_limits,
    wilson_ci,
)

Z95 = 1.959963984540054


def _vectors(a_only: int, b_only: int, both: int = 0, neither: int = 0) -> tuple[list[bool], list[bool]]:
    """Boolean right/wrong vectors with the given 2x2 cell counts."""
    a = [True] * a_only + [False] * b_only + [True] * both + [False] * neither
    b = [False] * a_only + [True] * b_only + [True] * both + [False] * neither
    return a, b


def _exact_two_sided(n: int, k: int) -> float:
    """Reference: min(1, 2 * sum_{i<=k} C(n, i) / 2^n) in exact rational arithmetic."""
    return float(min(Fraction(1), Fraction(2 * sum(math.comb(n, i) for i in range(k + 1)), 2**n)))


# --------------------------------------------------------------------------- McNemar


def test_mcnemar_textbook_table() -> None:
    # Discordant b=10, c=2 (plus concordant cells that must not matter):
    # p = 2 * (C(12,0) + C(12,1) + C(12,2)) / 2^12 = 2 * (1 + 12 + 66) / 4096 = 158/4096.
    a, b = _vectors(10, 2, both=30, neither=8)
    result = mcnemar_exact(a, b)
    assert (result.n, result.a_only, result.b_only) == (50, 10, 2)
    assert result.p_value == pytest.approx(158 / 4096, rel=1e-12)
    assert result.p_value == pytest.approx(0.0385742, abs=1e-7)
    # Swapping the models swaps the counts but not the two-sided p.
    swapped = mcnemar_exact(b, a)
    assert (swapped.a_only, swapped.b_only) == (2, 10)
    assert swapped.p_value == result.p_value


def test_mcnemar_counts_on_interleaved_vectors() -> None:
    a = [True, False, True, True, False, False, True]
    b = [False, True, True, False, False, True, True]
    # index: 0 a-only, 1 b-only, 2 both, 3 a-only, 4 neither, 5 b-only, 6 both
    result = mcnemar_exact(a, b)
    assert (result.n, result.a_only, result.b_only) == (7, 2, 2)
    assert result.p_value == 1.0
    # numpy booleans and 0/1 ints are accepted too.
    assert mcnemar_exact(np.array(a), [int(v) for v in b]) == result


def test_mcnemar_balanced_and_no_discordance_give_one() -> None:
    assert mcnemar_exact(*_vectors(7, 7, both=3)).p_value == 1.0
    assert mcnemar_exact(*_vectors(0, 0, both=5, neither=5)).p_value == 1.0
    assert mcnemar_exact([True], [True]) == McNemar(n=1, a_only=0, b_only=0, p_value=1.0)
    # 1 vs 0 discordant: p = 2 * P(X <= 0 | n=1) = 2 * 1/2 = 1.
    assert mcnemar_exact([True], [False]).p_value == 1.0


def test_mcnemar_all_one_sided() -> None:
    # 8 vs 0: p = 2 * 1/2^8 = 1/128.
    assert mcnemar_exact(*_vectors(8, 0)).p_value == pytest.approx(1 / 128, rel=1e-12)


@pytest.mark.parametrize(("a_only", "b_only"), [(1_800, 1_200), (1_560, 1_440), (1_500, 1_499)])
def test_mcnemar_log_space_path_matches_exact_rationals(a_only: int, b_only: int) -> None:
    # n = 3000 discordant pairs is above the exact-integer cut-off, so this
    # exercises the lgamma/log-space tail against exact rational arithmetic.
    result = mcnemar_exact(*_vectors(a_only, b_only))
    expected = _exact_two_sided(a_only + b_only, min(a_only, b_only))
    assert result.p_value == pytest.approx(expected, rel=1e-9)


def test_mcnemar_large_counts_are_finite() -> None:
    # 60,000 vs 40,000: the true p is ~1e-870, below the smallest double, so it
    # must come out as a (correctly rounded) 0.0, not NaN or an exception.
    p = mcnemar_exact(*_vectors(60_000, 40_000)).p_value
    assert not math.isnan(p)
    assert 0.0 <= p < 1e-300
    # 50,500 vs 49,500 is ~3.2 sigma: compare with the continuity-corrected
    # normal approximation, which is very accurate at n = 100,000.
    p = mcnemar_exact(*_vectors(50_500, 49_500)).p_value
    z = (1_000 - 1) / math.sqrt(100_000)
    assert p == pytest.approx(math.erfc(z / math.sqrt(2)), rel=2e-3)


# --------------------------------------------------------------------------- Holm


def test_holm_known_example() -> None:
    # Sorted: 0.005 (x4) = 0.02, 0.01 (x3) = 0.03, 0.03 (x2) = 0.06, 0.04 (x1) = 0.04 -> running max 0.06.
    # Back in input order [0.01, 0.04, 0.03, 0.005] -> [0.03, 0.06, 0.06, 0.02].
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02], abs=1e-15)


def test_holm_caps_at_one_and_is_monotone() -> None:
    raw = [0.5, 0.001, 0.3, 0.02, 0.9, 0.02]
    adjusted = holm(raw)
    assert all(0.0 <= q <= 1.0 for q in adjusted)
    assert all(q >= p for p, q in zip(raw, adjusted))
    order = sorted(range(len(raw)), key=raw.__getitem__)
    assert all(adjusted[i] <= adjusted[j] for i, j in zip(order, order[1:]))
    # 0.5 * 4 and 0.9 * 2 exceed 1 -> capped; the tied 0.02s share one adjusted value (0.02 * 5 = 0.1).
    assert adjusted[0] == 1.0 and adjusted[4] == 1.0
    assert adjusted[3] == adjusted[5] == pytest.approx(0.1)
    assert holm([0.2]) == [0.2]


# --------------------------------------------------------------------------- bootstrap CIs


def test_mean_ci_estimate_and_ordering() -> None:
    values = [0.0, 1.0, 1.0, 0.25, 0.6, 0.9, 0.1, 1.0, 0.0, 0.75]
    ci = mean_ci(values, resamples=2_000)
    assert isinstance(ci, Interval)
    assert ci.estimate == pytest.approx(statistics.fmean(values), rel=1e-12)
    assert 0.0 <= ci.low <= ci.estimate <= ci.high <= 1.0
    assert ci.low < ci.high


def test_mean_ci_seed_reproducible_and_seed_sensitive() -> None:
    values = np.random.default_rng(123).random(150).tolist()
    first = mean_ci(values, resamples=2_000, seed=7)
    assert mean_ci(values, resamples=2_000, seed=7) == first
    other = mean_ci(values, resamples=2_000, seed=8)
    assert other.estimate == first.estimate
    assert (other.low, other.high) != (first.low, first.high)
    assert other.low == pytest.approx(first.low, abs=0.02)
    assert other.high == pytest.approx(first.high, abs=0.02)


def test_mean_ci_degenerate_inputs_collapse() -> None:
    assert mean_ci([0.1] * 37) == Interval(0.1, 0.1, 0.1)
    assert mean_ci([0.42]) == Interval(0.42, 0.42, 0.42)
    assert paired_difference_ci([1.5, 0.75], [1.0, 0.25]) == Interval(0.5, 0.5, 0.5)
    assert paired_difference_ci([1.0], [0.0]) == Interval(1.0, 1.0, 1.0)


def test_mean_ci_width_matches_binomial_theory() -> None:
    # 1000 items at 70% accuracy: the 95% half-width should be ~1.96*sqrt(.21/1000) = 0.0284.
    values = [1.0] * 700 + [0.0] * 300
    ci = mean_ci(values)
    assert ci.estimate == pytest.approx(0.7)
    assert (ci.high - ci.low) / 2 == pytest.approx(1.96 * math.sqrt(0.21 / 1000), rel=0.1)


def test_mean_ci_coverage_on_known_bernoulli_mean() -> None:
    data_rng = np.random.default_rng(2024)
    hits = 0
    for rep in range(200):
        sample = (data_rng.random(200) < 0.3).astype(float)
        ci = mean_ci(sample, resamples=2_000, seed=rep)
        hits += ci.low <= 0.3 <= ci.high
    assert 0.90 <= hits / 200 <= 0.99


def test_paired_difference_ci_coverage_on_known_difference() -> None:
    # Correlated right/wrong pairs: P(both)=.45, P(a only)=.15, P(b only)=.05, P(neither)=.35,
    # so accuracy(a) = .60, accuracy(b) = .50 and the true difference is exactly 0.10.
    cells = np.array([[1.0, 1.0], [1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    probs = [0.45, 0.15, 0.05, 0.35]
    data_rng = np.random.default_rng(99)
    hits = 0
    for rep in range(200):
        pairs = cells[data_rng.choice(4, size=200, p=probs)]
        ci = paired_difference_ci(pairs[:, 0], pairs[:, 1], resamples=2_000, seed=rep)
        assert ci.estimate == pytest.approx(pairs[:, 0].mean() - pairs[:, 1].mean(), abs=1e-12)
        hits += ci.low <= 0.10 <= ci.high
    assert 0.90 <= hits / 200 <= 0.99


def test_paired_ci_is_narrower_than_ignoring_the_pairing() -> None:
    # Strongly correlated scores: pairing must cancel the shared item difficulty.
    rng = np.random.default_rng(5)
    difficulty = rng.random(300)
    a = difficulty + 0.05 + rng.normal(0, 0.02, 300)
    b = difficulty + rng.normal(0, 0.02, 300)
    paired = paired_difference_ci(a, b, resamples=2_000)
    ca, cb = mean_ci(a, resamples=2_000), mean_ci(b, resamples=2_000)
    assert paired.low > 0.0
    assert paired.high - paired.low < 0.5 * (ca.high - ca.low)
    assert cb.high > ca.low  # unpaired intervals overlap even though the effect is clear


# --------------------------------------------------------------------------- permutation test


def test_permutation_identical_vectors() -> None:
    x = [0.3, 0.5, 0.9, 0.0]
    assert paired_permutation_test(x, x) == 1.0


def test_permutation_exact_hand_count() -> None:
    # 4 non-zero differences, all positive: only all-plus and all-minus reach |T_obs| -> 2/16.
    assert paired_permutation_test([0.5, 0.7, 0.4, 0.9], [0.1, 0.2, 0.3, 0.5]) == 0.125
    # Zero differences are ignored: still 2/16 with six ties added.
    a = [0.5, 0.7, 0.4, 0.9] + [0.2] * 6
    b = [0.1, 0.2, 0.3, 0.5] + [0.2] * 6
    assert paired_permutation_test(a, b) == 0.125


def test_permutation_exact_sixteen_matches_binomial_count() -> None:
    # d = eleven +1 and five -1: T* = 16 - 2K with K ~ Bin(16, 1/2) minus signs;
    # |T*| >= 6  <=>  K <= 5 or K >= 11, so p = 2 * (1+16+120+560+1820+4368) / 2^16 = 13770/65536.
    a = [1.0] * 11 + [0.0] * 5
    b = [0.0] * 11 + [1.0] * 5
    assert paired_permutation_test(a, b) == 13_770 / 65_536


def test_permutation_monte_carlo_matches_known_value() -> None:
    # 20 non-zero differences -> Monte Carlo. d = fourteen +1 and six -1: |T*| >= 8 <=> K <= 6 or K >= 14,
    # exact p = 2 * (1+20+190+1140+4845+15504+38760) / 2^20 = 120920/1048576 = 0.11532; MC SE ~0.0023.
    a = [1.0] * 14 + [0.0] * 6
    b = [0.0] * 14 + [1.0] * 6
    p = paired_permutation_test(a, b, resamples=20_000, seed=3)
    assert p == pytest.approx(120_920 / 1_048_576, abs=0.01)
    assert paired_permutation_test(a, b, resamples=20_000, seed=3) == p


def test_permutation_monte_carlo_plus_one_floor() -> None:
    # 40 positive differences: the true p is 2/2^40, so no resample reaches |T_obs|
    # and the +1 correction gives exactly 1/(1 + resamples), never 0.
    assert paired_permutation_test([1.0] * 40, [0.0] * 40, resamples=999) == 1 / 1000


def test_permutation_detects_clear_shift() -> None:
    rng = np.random.default_rng(11)
    b = rng.random(30)
    a = b + 0.5 + rng.normal(0, 0.2, 30)
    assert paired_permutation_test(a, b) < 0.01


# --------------------------------------------------------------------------- intervals that agree with the tests


def test_issue_case_zero_vs_four_discordant_of_fifty_is_not_significant_either_way() -> None:
    # issue 9: 50 paired items, discordant 0 vs 4. The percentile bootstrap gave [-16, -2] (excluding 0) while
    # the exact McNemar p is 2/16 = 0.125; the interval must include 0 like the test.
    a, b = _vectors(0, 4, both=30, neither=16)
    assert mcnemar_exact(a, b).p_value == 0.125
    ci = paired_proportion_difference_ci(0, 4, 50)
    assert ci.estimate == pytest.approx(-0.08) and ci.low < 0.0 < ci.high
    # one more discordant item the same way (0 vs 5): still p = 0.0625, still includes 0; 0 vs 6: both say yes
    assert paired_proportion_difference_ci(0, 5, 50).high > 0.0 and mcnemar_exact(*_vectors(0, 5, 45)).p_value > 0.05
    assert paired_proportion_difference_ci(0, 6, 50).high < 0.0 and mcnemar_exact(*_vectors(0, 6, 44)).p_value < 0.05


def _exact_significant_by_table(m: int) -> list[bool]:
    """For every b = 0..m (c = m - b): exact two-sided McNemar p < 0.05, in exact integer arithmetic."""
    cumulative, total = [], 0
    for i in range(m + 1):
        total += math.comb(m, i)
        cumulative.append(total)
    return [2 * min(b, m - b) < m and 40 * cumulative[min(b, m - b)] < 2**m for b in range(m + 1)]


def test_binary_interval_never_excludes_zero_when_exact_mcnemar_is_not_significant() -> None:
    # Exhaustive over every table with b + c <= 200 discordant pairs. Whether the interval excludes 0 depends
    # on (b, c) only (the score statistic's spread at 0 is sqrt(b + c) for any n), so two n per table suffice;
    # the implementation's docstring records the same check up to b + c = 60,000, done once offline.
    wrong_way: list[tuple[int, int, int]] = []
    conservative = tables = 0
    for m in range(201):
        significant = np.array(_exact_significant_by_table(m))
        b = np.arange(m + 1)
        for n in (max(m, 1), 2 * m + 37):
            low, high = tango_limits(b, m - b, n)
            excludes = (low > 0) | (high < 0)
            tables += m + 1
            wrong_way += [(int(bi), m - int(bi), n) for bi in np.flatnonzero(excludes & ~significant)]
            conservative += int(np.count_nonzero(significant & ~excludes))
    assert tables == 40_602 and wrong_way == []
    # the other direction (exact p < 0.05, interval still covers 0) is rare: measured 24 of 40,602 tables
    # (12 (b, c) tables such as 4 vs 13, each at two n)
    assert conservative / tables < 0.001


def test_binary_interval_and_exact_test_agree_on_small_n_and_few_discordant() -> None:
    # n = 20..200, discordant counts 0..10 each way: "CI excludes 0" == "exact McNemar p < 0.05" everywhere.
    b, c = (grid.ravel() for grid in np.meshgrid(np.arange(11), np.arange(11), indexing="ij"))
    significant = np.array([mcnemar_exact(*_vectors(int(x), int(y), neither=1)).p_value < 0.05 for x, y in zip(b, c)])
    checked = agree = 0
    for n in range(20, 201, 10):
        low, high = tango_limits(b, c, n)
        checked += b.size
        agree += int(np.count_nonzero(((low > 0) | (high < 0)) == significant))
    assert checked == 19 * 121 and agree == checked  # agreement rate 1.0 on this grid
    spot = paired_proportion_difference_ci(9, 1, 20)  # the scalar API gives the same verdict
    assert spot.low > 0 and mcnemar_exact(*_vectors(9, 1, neither=10)).p_value < 0.05


def _log_factorials(n: int) -> np.ndarray:
    return np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, n + 1)))])


def test_binary_interval_coverage_is_near_nominal_by_complete_enumeration() -> None:
    # Exact coverage, not a Monte Carlo estimate: every (b, c) table of n pairs weighted by its multinomial
    # probability under (p12, p21). The interval is conservative (it inherits exact McNemar's caution) but
    # never far from 95%: measured min 0.960, mean 0.983 on this grid.
    coverages = []
    for n in (20, 30, 50, 80, 120, 200):
        b, c = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
        keep = b + c <= n
        b, c = b[keep], c[keep]
        low, high = tango_limits(b, c, n)
        logf = _log_factorials(n)
        for p12 in (0.0, 0.02, 0.05, 0.1, 0.2, 0.3):
            for p21 in (0.0, 0.02, 0.05, 0.1, 0.2, 0.3):
                with np.errstate(divide="ignore", invalid="ignore"):
                    log_p = (logf[n] - logf[b] - logf[c] - logf[n - b - c] + np.where(b > 0, b * np.log(p12), 0.0)
                             + np.where(c > 0, c * np.log(p21), 0.0) + (n - b - c) * np.log(1 - p12 - p21))
                probability = np.exp(np.nan_to_num(log_p, nan=-np.inf))
                assert probability.sum() == pytest.approx(1.0, abs=1e-9)
                delta = p12 - p21
                coverages.append(float(probability[(low <= delta + 1e-12) & (delta - 1e-12 <= high)].sum()))
    assert min(coverages) >= 0.95
    assert 0.95 <= float(np.mean(coverages)) <= 0.995


def _tango_statistic(b: int, c: int, n: int, delta: float, correction: float = 1.0) -> float:
    """Independent scalar transcription of Tango's (1998) score statistic, continuity-corrected."""
    qa, qb, qc = 2 * n, -b - c + (2 * n - b + c) * delta, -c * delta * (1 - delta)
    p21 = (math.sqrt(max(qb * qb - 4 * qa * qc, 0.0)) - qb) / (2 * qa)
    sd = math.sqrt(max(n * (2 * p21 + delta * (1 - delta)), 0.0))
    return max(0.0, abs(b - c - n * delta) - correction) / sd


@pytest.mark.parametrize(("b", "c", "n"), [(10, 2, 50), (0, 4, 50), (3, 9, 120), (25, 5, 60), (1, 0, 20)])
def test_tango_limits_are_where_the_score_statistic_crosses_z(b: int, c: int, n: int) -> None:
    ci = paired_proportion_difference_ci(b, c, n)
    assert ci.low < ci.estimate < ci.high and ci.estimate == pytest.approx((b - c) / n)
    for limit, inward in ((ci.low, 1e-6), (ci.high, -1e-6)):
        if abs(limit) < 1.0:
            assert _tango_statistic(b, c, n, limit) == pytest.approx(Z95, abs=1e-6)
            assert _tango_statistic(b, c, n, limit + inward) < Z95 < _tango_statistic(b, c, n, limit - inward)
    # at 0 the statistic is the continuity-corrected McNemar (|b - c| - 1) / sqrt(b + c), whatever n
    assert _tango_statistic(b, c, n, 0.0) == pytest.approx(max(0, abs(b - c) - 1) / math.sqrt(b + c))


def test_binary_interval_without_discordance_does_not_collapse() -> None:
    # 0 discordant of 50: the bootstrap said [0, 0]; the score interval still admits about +-10 points
    ci = paired_proportion_difference_ci(0, 0, 50)
    assert ci.estimate == 0.0 and -0.15 < ci.low < -0.05 and ci.high == pytest.approx(-ci.low)
    assert paired_proportion_difference_ci(0, 50, 50) == Interval(-1.0, -1.0, pytest.approx(-0.85, abs=0.1))


@pytest.mark.parametrize(("successes", "n", "low", "high"), [
    (7, 10, 0.3968, 0.8922), (0, 10, 0.0, 0.2775), (10, 10, 0.7225, 1.0), (81, 263, 0.2553, 0.3662)])
def test_wilson_interval_matches_published_values(successes: int, n: int, low: float, high: float) -> None:
    ci = wilson_ci(successes, n)
    assert ci.estimate == pytest.approx(successes / n)
    assert (ci.low, ci.high) == (pytest.approx(low, abs=1e-4), pytest.approx(high, abs=1e-4))


def test_bca_interval_covers_a_skewed_mean_on_small_samples() -> None:
    # ROUGE-like scores: many zeros and a long right tail (mean known exactly: 0.4 * 0.5 = 0.2).
    rng = np.random.default_rng(7)
    hits = 0
    for rep in range(300):
        sample = np.where(rng.random(30) < 0.4, rng.beta(2, 2, 30), 0.0)
        ci = mean_ci(sample, resamples=1_000, seed=rep)
        hits += ci.low <= 0.2 <= ci.high
    assert 0.90 <= hits / 300 <= 0.99


def test_bca_corrects_towards_the_long_tail() -> None:
    # Right-skewed data: the BCa interval sits further right of the mean than left of it.
    values = [0.0] * 20 + [0.05, 0.1, 0.1, 0.2, 0.9, 1.0]
    ci = mean_ci(values, resamples=4_000, seed=1)
    assert ci.high - ci.estimate > ci.estimate - ci.low


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: mean_ci([]), "empty"),
        (lambda: mean_ci([0.1, float("nan")]), "NaN"),
        (lambda: mean_ci([1.0, 0.0], level=1.0), "level"),
        (lambda: mean_ci([1.0, 0.0], level=0.0), "level"),
        (lambda: mean_ci([1.0, 0.0], resamples=0), "resamples"),
        (lambda: paired_difference_ci([1.0, 0.0], [1.0]), "equal lengths"),
        (lambda: paired_difference_ci([], []), "empty"),
        (lambda: paired_difference_ci([1.0], [0.0], level=1.5), "level"),
        (lambda: mcnemar_exact([True, False], [True]), "equal lengths"),
        (lambda: mcnemar_exact([], []), "empty"),
        (lambda: mcnemar_exact([True, 0.5], [True, False]), "booleans"),
        (lambda: paired_permutation_test([1.0], [1.0, 2.0]), "equal lengths"),
        (lambda: paired_permutation_test([], []), "empty"),
        (lambda: paired_permutation_test([1.0], [0.0], resamples=0), "resamples"),
        (lambda: holm([]), "empty"),
        (lambda: holm([0.5, 1.2]), r"\[0, 1\]"),
        (lambda: holm([float("nan")]), r"\[0, 1\]"),
        (lambda: wilson_ci(3, 0), "n must be"),
        (lambda: wilson_ci(11, 10), "successes"),
        (lambda: paired_proportion_difference_ci(5, 6, 10), r"b \+ c <= n"),
        (lambda: paired_proportion_difference_ci(1, 1, 10, level=1.0), "level"),
    ],
)
def test_invalid_inputs_raise_value_error(call: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()
