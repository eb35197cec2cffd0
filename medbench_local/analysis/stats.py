"""Paired statistics for comparing two models on the *same* clinical items.

Why paired everything: both models answer identical items, so item difficulty
is shared.  Treating the two score vectors as independent samples throws that
away and yields intervals several times too wide; every function here keeps
``a[i]`` and ``b[i]`` together.  By convention ``a`` is the biomedical model and
``b`` its general-purpose base.

Why the intervals differ by metric kind, and why they must agree with the tests:
a confidence interval that excludes 0 while its own test says "not significant"
(or the reverse) invites readers to cherry-pick.  For right/wrong metrics the
test is exact McNemar, and the difference's interval is a continuity-corrected
score interval (Tango) whose test at 0 is the continuity-corrected McNemar
statistic; by exhaustive enumeration (tests/test_stats.py) it never excludes 0
when the exact McNemar p >= 0.05.  Continuous metrics (ROUGE, F1) get a BCa
bootstrap interval beside the sign-flip permutation test.  Which of the two is
authoritative is decided in one place (analysis/paired.py): the Holm-adjusted
test; the interval is reported beside it.

Why no scipy: the few distributions needed (bootstrap, sign flips, a binomial
tail at p=0.5, the normal quantile from the standard library) are short to write
exactly, and scipy is a heavy dependency for an offline tool.  numpy (already
pulled in by llama-cpp-python) vectorises the resampling;
``numpy.random.default_rng(seed)`` makes every result reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

__all__ = ["Interval", "McNemar", "format_p", "holm", "mcnemar_exact", "mean_ci", "paired_difference_ci",
           "paired_permutation_test", "paired_proportion_difference_ci", "tango_limits", "wilson_ci"]

# Index matrices are drawn this many resamples at a time (capped by _MAX_CELLS)
# so 10,000 x 1,000 runs fast without materialising a 10^7-element matrix.
_CHUNK = 1_000
_MAX_CELLS = 4_000_000
# Up to this many discordant pairs the McNemar tail is summed in exact integers.
_EXACT_BINOM_MAX_N = 2_000
# Up to this many non-zero differences all 2^m sign flips are enumerated (65,536).
_EXACT_PERM_MAX_M = 16
# Bisection steps for the score-interval limits: 2^-60 of the [-1, 1] range, far below float resolution.
_BISECTION_STEPS = 60
_NORMAL = NormalDist()


# p-values below this are written "<0.001": more digits claim a precision that the resampling (10,000 by
# default) and the exact tests' tails do not give a reader, and "0.0000" reads as "impossible".
P_FLOOR = 0.001


def format_p(p_value: float) -> str:
    """A p-value as every output writes it (compare, its Markdown, reproduce, the report, export's verdict):
    three decimals, or "<0.001"."""
    return f"<{P_FLOOR:g}" if p_value < P_FLOOR else f"{p_value:.3f}"


@dataclass(frozen=True)
class Interval:
    """A point estimate with a confidence interval; always ``low <= estimate <= high``."""

    estimate: float
    low: float
    high: float


@dataclass(frozen=True)
class McNemar:
    """Exact McNemar test outcome; only discordant pairs carry information."""

    n: int  # paired items
    a_only: int  # a right, b wrong (biomedical right / general wrong)
    b_only: int  # b right, a wrong
    p_value: float  # exact two-sided binomial test on the discordant pairs (1.0 when none)


def _as_array(values: Sequence[float], name: str) -> np.ndarray:
    x = np.asarray(values, dtype=float)
    if x.ndim != 1:
        raise ValueError(f"{name} must be a flat sequence of numbers, got shape {x.shape}")
    if x.size == 0:
        raise ValueError(f"{name} is empty: need at least one item")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or infinite values; score or drop those items first")
    return x


def _paired(a: Sequence[float], b: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    x, y = _as_array(a, "a"), _as_array(b, "b")
    if x.size != y.size:
        raise ValueError(f"paired inputs must have equal lengths, got len(a)={x.size} and len(b)={y.size}")
    return x, y


def _check_resamples(resamples: int) -> None:
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be strictly between 0 and 1, got {level}")


def _bootstrap_means(x: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """Means of ``resamples`` bootstrap resamples of ``x`` (drawn in chunks to bound memory)."""
    rng = np.random.default_rng(seed)
    n = x.size
    chunk = max(1, min(_CHUNK, _MAX_CELLS // n))
    means = np.empty(resamples)
    for start in range(0, resamples, chunk):
        stop = min(start + chunk, resamples)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = x[idx].mean(axis=1)
    return means


def _bca(x: np.ndarray, resamples: int, seed: int, level: float) -> Interval:
    """Bias-corrected and accelerated (BCa) bootstrap interval of the mean of ``x``.

    BCa rather than the plain percentile interval: per-item ROUGE and F1 are
    bounded and skewed (piled up at 0), where the percentile interval is
    off-centre and undercovers on small n; BCa corrects the median bias (z0,
    from the share of resample means below the estimate) and the skew (the
    acceleration a, from the jackknife, which for a mean is the standardised
    third moment: a = sum(d^3) / (6 * sum(d^2)^1.5), d = x - mean(x)).
    """
    _check_level(level)
    _check_resamples(resamples)
    estimate = float(np.mean(x))
    if np.all(x == x[0]):
        # Every resample is identical; short-circuit so float rounding in the
        # mean cannot make the interval not contain the value itself.
        v = float(x[0])
        return Interval(v, v, v)
    means = _bootstrap_means(x, resamples, seed)
    tolerance = 1e-12 * max(1.0, float(np.abs(x).max()))
    below = np.count_nonzero(means < estimate - tolerance)
    ties = np.count_nonzero(np.abs(means - estimate) <= tolerance)
    share = min(max((below + 0.5 * ties) / resamples, 0.5 / resamples), 1.0 - 0.5 / resamples)
    z0 = _NORMAL.inv_cdf(share)
    d = x - estimate
    spread = float(np.sum(d * d))
    acceleration = float(np.sum(d * d * d)) / (6.0 * spread ** 1.5) if spread > 0 else 0.0

    def adjusted(quantile: float) -> float:
        z = z0 + _NORMAL.inv_cdf(quantile)
        denominator = 1.0 - acceleration * z
        if denominator <= 0:  # extreme skew: the correction points past the end of the distribution
            return 1.0 if z > 0 else 0.0
        return _NORMAL.cdf(z0 + z / denominator)

    alpha = 1.0 - level
    low, high = np.quantile(means, [adjusted(alpha / 2.0), adjusted(1.0 - alpha / 2.0)])
    # The interval can miss the point estimate only through float noise or
    # absurd skew; widening keeps the documented ordering guarantee.
    return Interval(estimate, min(float(low), estimate), max(float(high), estimate))


def mean_ci(values: Sequence[float], *, resamples: int = 10_000, seed: int = 0, level: float = 0.95) -> Interval:
    """BCa bootstrap CI of the mean of per-item continuous scores (ROUGE, F1).

    Bootstrap rather than a normal/Wald interval because per-item metrics are
    bounded and often skewed (ROUGE piled up at 0), where Wald intervals
    undercover or spill outside [0, 1].  For right/wrong scores use
    ``wilson_ci`` (exact-free, closed form, good coverage at any n).
    """
    return _bca(_as_array(values, "values"), resamples, seed, level)


def paired_difference_ci(a: Sequence[float], b: Sequence[float], *, resamples: int = 10_000, seed: int = 0,
                         level: float = 0.95) -> Interval:
    """Paired BCa bootstrap CI of mean(a) - mean(b): resample ITEM INDICES jointly (a[i], b[i] stay together).

    Resampling indices jointly is the same as resampling the per-item
    differences ``a[i] - b[i]``, which is how it is computed; the estimate is
    the mean difference (equal to mean(a) - mean(b) up to float rounding).
    Keeping pairs together lets the positive correlation between two models on
    the same item cancel, which is what makes the interval honest and narrow.
    For right/wrong scores use ``paired_proportion_difference_ci``, which
    agrees with the exact McNemar test.
    """
    x, y = _paired(a, b)
    return _bca(x - y, resamples, seed, level)


def wilson_ci(successes: int, n: int, *, level: float = 0.95) -> Interval:
    """Wilson score interval of a proportion (one model's accuracy).

    Wilson rather than a bootstrap or Wald interval: with 0 or n successes the
    bootstrap collapses to a point ([100, 100] for ten right answers out of
    ten) and Wald does the same, while Wilson stays honest (about [72, 100]);
    its coverage is close to nominal from n = 10 on.
    """
    _check_level(level)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must lie in [0, n], got {successes} of {n}")
    z = _NORMAL.inv_cdf(0.5 + level / 2.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return Interval(p, max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half)))


def _tango_sd(b: np.ndarray, c: np.ndarray, n: float, delta: np.ndarray) -> np.ndarray:
    """Standard deviation of b - c under H0: p12 - p21 = delta, with p21 at its constrained maximum-likelihood
    value (Tango 1998, closed form of the quadratic); b = a right & b wrong, c = the reverse."""
    qa = 2.0 * n
    qb = -b - c + (2.0 * n - b + c) * delta
    qc = -c * delta * (1.0 - delta)
    p21 = (np.sqrt(np.maximum(qb * qb - 4.0 * qa * qc, 0.0)) - qb) / (2.0 * qa)
    return np.sqrt(np.maximum(n * (2.0 * p21 + delta * (1.0 - delta)), 0.0))


def tango_limits(b: np.ndarray | int, c: np.ndarray | int, n: int, *, level: float = 0.95,
                 correction: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised limits of the continuity-corrected Tango score interval of p(a right) - p(b right).

    The interval is every delta that the score test does not reject:
    ``max(0, |b - c - n*delta| - correction) <= z * sd(delta)``.  At delta = 0,
    sd = sqrt(b + c) whatever n, so the interval excludes 0 exactly when the
    continuity-corrected McNemar statistic (|b - c| - 1) / sqrt(b + c) exceeds z;
    that statistic never rejects where the exact McNemar test does not (checked
    for every table with b + c <= 60,000; the test suite enumerates the
    intervals themselves for b + c <= 200).
    Each limit is found by bisection between the estimate and -1 (or +1).
    """
    _check_level(level)
    b_arr, c_arr = np.asarray(b, dtype=float), np.asarray(c, dtype=float)
    if n < 1 or np.any(b_arr < 0) or np.any(c_arr < 0) or np.any(b_arr + c_arr > n):
        raise ValueError(f"need 0 <= b, c and b + c <= n (n >= 1), got b={b}, c={c}, n={n}")
    z = _NORMAL.inv_cdf(0.5 + level / 2.0)
    estimate = (b_arr - c_arr) / n
    limits = []
    for side in (-1.0, 1.0):  # -1: lower limit, searched in [-1, estimate]; +1: upper, in [estimate, 1]
        accepted, rejected = estimate.copy(), np.full_like(estimate, side)
        # the far end is itself accepted when the data sit there (all discordant pairs one way)
        edge_ok = np.maximum(0.0, np.abs(b_arr - c_arr - n * side) - correction) <= \
            z * _tango_sd(b_arr, c_arr, n, np.full_like(estimate, side))
        for _ in range(_BISECTION_STEPS):
            middle = (accepted + rejected) / 2.0
            distance = np.abs(b_arr - c_arr - n * middle)
            ok = np.maximum(0.0, distance - correction) <= z * _tango_sd(b_arr, c_arr, n, middle)
            accepted = np.where(ok, middle, accepted)
            rejected = np.where(ok, rejected, middle)
        limits.append(np.where(edge_ok, side, accepted))
    return limits[0], limits[1]


def paired_proportion_difference_ci(a_only: int, b_only: int, n: int, *, level: float = 0.95) -> Interval:
    """CI of accuracy(a) - accuracy(b) from the discordant counts of n paired right/wrong items.

    A continuity-corrected Tango score interval: it depends only on the two
    discordant counts and n (as McNemar does), never collapses to a point (0 of
    50 discordant still gives about +-10 points), and agrees with the exact
    McNemar test: it never excludes 0 when the exact p >= 0.05 (see
    ``tango_limits``).  It is slightly conservative (coverage >= 95% on most of
    the parameter space; tests/test_stats.py measures it exactly).
    """
    low, high = tango_limits(a_only, b_only, n, level=level)
    estimate = (a_only - b_only) / n
    return Interval(estimate, min(float(low), estimate), max(float(high), estimate))


def _binom_half_cdf_x2(n: int, k: int) -> float:
    """Return min(1, 2 * P(X <= k)) for X ~ Binomial(n, 1/2), with 0 <= k <= n.

    Small n: exact integer sum, one correctly rounded division.  Large n (up to
    10^5 and beyond): the tail is summed in log space, starting at the largest
    term C(n, k) (from lgamma) and walking down with the term ratio
    i / (n - i + 1), so nothing overflows; a p below ~1e-308 rounds to 0.0,
    never to NaN.
    """
    if 2 * k >= n:
        return 1.0  # the lower tail then holds at least half the mass
    if n <= _EXACT_BINOM_MAX_N:
        return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n)
    log_top = math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) - n * math.log(2.0)
    total, term = 1.0, 1.0  # terms relative to the top term C(n, k) / 2^n
    for i in range(k, 0, -1):
        term *= i / (n - i + 1)
        total += term
        if term < 1e-17 * total:
            break
    log_p = math.log(2.0) + log_top + math.log(total)
    return min(1.0, math.exp(log_p)) if log_p < 0 else 1.0


def mcnemar_exact(a: Sequence[bool], b: Sequence[bool]) -> McNemar:
    """Exact McNemar test of equal accuracy for paired right/wrong outcomes.

    Exact binomial rather than the chi-square approximation because with a few
    hundred items the discordant counts are often small, where the chi-square
    p is unreliable.  Two-sided p = min(1, 2 * P(X <= min(a_only, b_only))),
    X ~ Binomial(a_only + b_only, 1/2): the doubled-tail convention, which is
    exact for a symmetric null distribution.
    """
    if len(a) != len(b):
        raise ValueError(f"paired inputs must have equal lengths, got len(a)={len(a)} and len(b)={len(b)}")
    if len(a) == 0:
        raise ValueError("a and b are empty: need at least one paired item")
    for name, seq in (("a", a), ("b", b)):
        bad = [v for v in seq if v not in (0, 1)]
        if bad:
            raise ValueError(f"{name} must hold booleans (right/wrong), got e.g. {bad[0]!r}")
    a_only = sum(1 for x, y in zip(a, b) if x and not y)
    b_only = sum(1 for x, y in zip(a, b) if y and not x)
    p = _binom_half_cdf_x2(a_only + b_only, min(a_only, b_only))
    return McNemar(n=len(a), a_only=a_only, b_only=b_only, p_value=p)


def paired_permutation_test(a: Sequence[float], b: Sequence[float], *, resamples: int = 10_000,
                            seed: int = 0) -> float:
    """Two-sided sign-flip permutation test of mean(a - b) == 0 for continuous paired metrics.

    Exact enumeration when the number of non-zero differences is <= 16, else Monte Carlo with the +1 correction
    (p = (1 + #{|T*| >= |T_obs|}) / (1 + resamples)).

    Under the null the two models are exchangeable on each item, so each
    difference's sign is a fair coin; no normality assumption (unlike a paired
    t-test on skewed ROUGE scores).  Zero differences flip to themselves and are
    dropped.  The +1 correction counts the observed labelling as one of the
    resamples, so a Monte Carlo p is never 0 and the test stays valid.
    Comparisons allow a 1e-12 relative tolerance so sums of the same numbers
    in a different order still count as ties.
    """
    _check_resamples(resamples)
    x, y = _paired(a, b)
    d = x - y
    d = d[d != 0.0]
    m = d.size
    if m == 0:
        return 1.0
    t_obs = abs(float(d.sum()))
    threshold = t_obs - 1e-12 * float(np.abs(d).sum())
    if m <= _EXACT_PERM_MAX_M:
        bits = (np.arange(2**m)[:, None] >> np.arange(m)) & 1
        t_star = np.abs((1 - 2 * bits) @ d)
        return float(np.count_nonzero(t_star >= threshold)) / 2**m
    rng = np.random.default_rng(seed)
    chunk = max(1, min(_CHUNK, _MAX_CELLS // m))
    hits = 0
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        signs = 1 - 2 * rng.integers(0, 2, size=(size, m))
        hits += int(np.count_nonzero(np.abs(signs @ d) >= threshold))
    return (1 + hits) / (1 + resamples)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order, monotone, capped at 1.

    Holm rather than plain Bonferroni: it controls the same family-wise error
    rate under any dependence between tasks, yet is uniformly more powerful.
    Sorted ascending, p_(j) (j = 0..m-1) becomes max_{i<=j} (m - i) * p_(i),
    capped at 1, so adjusted values never decrease as the raw ones increase.
    """
    p = [float(v) for v in p_values]
    if not p:
        raise ValueError("p_values is empty: need at least one p-value")
    bad = [v for v in p if not 0.0 <= v <= 1.0]  # also rejects NaN
    if bad:
        raise ValueError(f"p-values must lie in [0, 1], got {bad[0]!r}")
    m = len(p)
    adjusted = [0.0] * m
    running = 0.0
    for rank, idx in enumerate(sorted(range(m), key=p.__getitem__)):
        running = max(running, min(1.0, (m - rank) * p[idx]))
        adjusted[idx] = running
    return adjusted
