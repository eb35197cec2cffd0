"""How well a signal separates members from non-members: AUROC and TPR at a fixed FPR, pure functions.

AUROC as the Mann-Whitney probability that a random member scores above a random non-member (ties count half);
TPR at FPR α: the share of members above the threshold that at most α of the non-members exceed (the strictest
such threshold, so the FPR actually reached is <= α; with 18 non-members and α = 5%, no non-member may exceed
it). Membership-inference papers report both (Shi et al. 2024; Zhang et al. 2025), because a usable detector
needs a low false-positive rate, which AUROC alone hides."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def auroc(members: Sequence[float], nonmembers: Sequence[float]) -> float:
    a = np.asarray(members, dtype=float)[:, None]
    b = np.asarray(nonmembers, dtype=float)[None, :]
    if a.size == 0 or b.size == 0:
        raise ValueError("need at least one member and one non-member")
    return float(((a > b).sum() + 0.5 * (a == b).sum()) / (a.size * b.size))


def tpr_at_fpr(members: Sequence[float], nonmembers: Sequence[float], fpr: float = 0.05) -> float:
    neg = np.sort(np.asarray(nonmembers, dtype=float))[::-1]
    allowed = int(np.floor(fpr * neg.size + 1e-9))  # non-members that may score above the threshold
    threshold = neg[allowed] if allowed < neg.size else -np.inf
    return float(np.mean(np.asarray(members, dtype=float) > threshold))
