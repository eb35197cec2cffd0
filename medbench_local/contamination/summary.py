"""The paired contamination signal of a pair on a task, from the stored per-item signals: pure functions.

Per item and signal, the *advantage* is the biomedical model's member score minus the general model's (member
score: the signal oriented so that higher means "more likely seen", signals.member_score). A fine-tune that
saw the benchmark gains an advantage on the benchmark's own text that it does not have on a control text
neither model saw. So the number reported is the **shift**: mean advantage on the benchmark items minus mean
advantage on the controls, with

* a rewrite control (the same items rewritten): paired per item, the BCa bootstrap CI of the mean difference
  and the sign-flip permutation test of analysis/stats.py, the same statistics ``compare`` uses;
* the user's own items (``--control PATH``): two independent samples, a percentile bootstrap CI of the
  difference of means (each sample resampled on its own) and a label-permutation test.

Flag rule: an item is flagged on a signal when its advantage on the original exceeds the 95th percentile of the
advantages on the controls (a control has a 5% chance of exceeding it, so about 5% of clean items are flagged by
chance). The most suspicious items are those with the largest excess: advantage on the original minus that on
its own control (paired) or minus the controls' mean (user's items).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..analysis.stats import paired_difference_ci, paired_permutation_test
from .signals import SIGNALS, member_score

FLAG_QUANTILE = 0.95


@dataclass(frozen=True)
class SignalShift:
    signal: str
    n_items: int
    n_controls: int
    shift: float
    low: float | None
    high: float | None
    p_value: float | None
    threshold: float
    flagged: tuple[str, ...]
    excess: dict[str, float] = field(default_factory=dict)  # item -> excess (see module docstring)

    def top(self, count: int) -> list[tuple[str, float]]:
        return sorted(self.excess.items(), key=lambda kv: (-kv[1], kv[0]))[:count]


Signals = dict[tuple[str, str], dict[str, float]]  # (variant, item id) -> {signal: value}


def advantages(bio: Signals, gen: Signals, variant: str, signal: str) -> dict[str, float]:
    """item -> biomedical member score minus general member score, on the items both models scored."""
    return {item: member_score(signal, bio[(v, item)][signal]) - member_score(signal, gen[(v, item)][signal])
            for (v, item) in bio if v == variant and (v, item) in gen}


def two_sample_ci(a: np.ndarray, b: np.ndarray, *, resamples: int, seed: int, level: float = 0.95
                  ) -> tuple[float, float]:
    """Percentile bootstrap CI of mean(a) - mean(b), each sample resampled on its own."""
    rng = np.random.default_rng(seed)
    ma = a[rng.integers(0, a.size, size=(resamples, a.size))].mean(axis=1)
    mb = b[rng.integers(0, b.size, size=(resamples, b.size))].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(ma - mb, [alpha, 1.0 - alpha])
    return float(low), float(high)


def two_sample_permutation(a: np.ndarray, b: np.ndarray, *, resamples: int, seed: int) -> float:
    """Two-sided label-permutation test of mean(a) == mean(b), with the +1 correction."""
    rng = np.random.default_rng(seed)
    pooled = np.concatenate([a, b])
    observed = abs(a.mean() - b.mean())
    hits = 0
    for _ in range(resamples):
        rng.shuffle(pooled)
        if abs(pooled[:a.size].mean() - pooled[a.size:].mean()) >= observed - 1e-12:
            hits += 1
    return (1 + hits) / (1 + resamples)


def signal_shift(bio: Signals, gen: Signals, signal: str, *, paired: bool, resamples: int = 10_000,
                 seed: int = 0) -> SignalShift | None:
    """The shift of one signal (module docstring); None when there are no items or no controls."""
    original = advantages(bio, gen, "original", signal)
    control = advantages(bio, gen, "control", signal)
    if not original or not control:
        return None
    threshold = float(np.quantile(np.array(list(control.values())), FLAG_QUANTILE))
    flagged = tuple(sorted(i for i, v in original.items() if v > threshold))
    if paired:
        items = sorted(set(original) & set(control))
        if not items:
            return None
        a = np.array([original[i] for i in items])
        b = np.array([control[i] for i in items])
        excess = {i: float(x - y) for i, x, y in zip(items, a, b)}
        shift = float((a - b).mean())
        low = high = p = None
        if len(items) >= 2:
            interval = paired_difference_ci(a.tolist(), b.tolist(), resamples=resamples, seed=seed)
            low, high = interval.low, interval.high
            p = paired_permutation_test(a.tolist(), b.tolist(), resamples=resamples, seed=seed)
        return SignalShift(signal, len(items), len(items), shift, low, high, p, threshold, flagged, excess)
    a = np.array(list(original.values()))
    b = np.array(list(control.values()))
    excess = {i: float(v - b.mean()) for i, v in original.items()}
    shift = float(a.mean() - b.mean())
    low = high = p = None
    if a.size >= 2 and b.size >= 2:
        low, high = two_sample_ci(a, b, resamples=resamples, seed=seed)
        p = two_sample_permutation(a, b, resamples=min(resamples, 5_000), seed=seed)
    return SignalShift(signal, a.size, b.size, shift, low, high, p, threshold, flagged, excess)


def pair_shifts(bio: Signals, gen: Signals, *, paired: bool, resamples: int = 10_000, seed: int = 0
                ) -> list[SignalShift]:
    """Every signal's shift, in SIGNALS order (signals without data left out)."""
    found = [signal_shift(bio, gen, name, paired=paired, resamples=resamples, seed=seed) for name in SIGNALS]
    return [s for s in found if s is not None]

