"""Membership signals of one text under one model, as pure functions of the model's next-token logits.

Why these four (each is a published membership-inference score; higher "member score" = more likely seen):

* **loss**: mean negative log-likelihood of the text's tokens (nats per token). Memorised text is predicted
  well, so its loss is low (Yeom et al., CSF 2018, doi:10.1109/CSF.2018.00027).
* **zlib**: loss divided by the length in bytes of the zlib-compressed text. Carlini et al. (USENIX Security
  2021, "Extracting Training Data from Large Language Models", arXiv:2012.07805) compare the model's
  perplexity with zlib's entropy so that text that is merely repetitive (easy for any compressor) is not
  mistaken for memorised text; the mean NLL over the compressed length is the form the Min-K% reference code
  uses.
* **min_k**: Min-K% Prob (Shi et al., ICLR 2024, arXiv:2310.16789): the mean log-probability of the k% least
  likely tokens. A non-member contains a few surprising tokens with very low probability; a member has few.
* **min_k_pp**: Min-K%++ (Zhang et al., ICLR 2025, arXiv:2404.02936): each token's log-probability is
  standardised against the model's own next-token distribution at that position,
  ``(log p(x_t) - mu_t) / sigma_t`` with ``mu_t = E_{z~p}[log p(z)]`` and ``sigma_t^2 = Var_{z~p}[log p(z)]``,
  then the mean of the k% lowest. A token is suspicious when it is a local maximum of the likelihood, not merely
  likely.

Everything is computed in float64 from the logits the engine hands over in chunks (``position_stats``), so the
full n_tokens x n_vocab matrix is never held.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np

DEFAULT_K = 0.2
#: Below this standard deviation a position's distribution is a point mass and its z-score is defined as 0
#: (log p(x_t) = mu_t there up to rounding; the reference code would divide 0 by 0).
SIGMA_FLOOR = 1e-12


@dataclass(frozen=True)
class SignalSpec:
    name: str
    title: str
    higher_is_member: bool
    description: str


SIGNALS: dict[str, SignalSpec] = {s.name: s for s in (
    SignalSpec("loss", "loss", False, "mean negative log-likelihood, nats per token"),
    SignalSpec("zlib", "zlib ratio", False, "loss / zlib-compressed length of the text in bytes"),
    SignalSpec("min_k", "Min-K%", True, "mean log-probability of the k% least likely tokens"),
    SignalSpec("min_k_pp", "Min-K%++", True, "mean of the k% lowest standardised token log-probabilities"),
)}


@dataclass(frozen=True)
class TokenStats:
    """Per predicted token: its log-probability and the mean and standard deviation of log p under the model's
    next-token distribution at that position (all float64, one entry per token after the first)."""

    logprob: np.ndarray
    mu: np.ndarray
    sigma: np.ndarray

    def __post_init__(self) -> None:
        if not (self.logprob.shape == self.mu.shape == self.sigma.shape) or self.logprob.ndim != 1:
            raise ValueError("logprob, mu and sigma must be 1-D arrays of one length")

    @staticmethod
    def concat(parts: list[TokenStats]) -> TokenStats:
        if not parts:
            empty = np.zeros(0)
            return TokenStats(empty, empty.copy(), empty.copy())
        return TokenStats(np.concatenate([p.logprob for p in parts]), np.concatenate([p.mu for p in parts]),
                          np.concatenate([p.sigma for p in parts]))


def position_stats(logits: np.ndarray, targets: np.ndarray) -> TokenStats:
    """From logits (rows x vocab, any float type) and the token each row predicts: log p(target), mu, sigma.

    Log-softmax with the max subtracted (no overflow); variance as E[(log p - mu)^2], never negative."""
    rows = np.asarray(logits, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[0] != len(targets):
        raise ValueError(f"logits must be (n, vocab) with n = {len(targets)} targets, got {rows.shape}")
    shifted = rows - rows.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    logp = shifted - log_norm
    p = np.exp(logp)
    mu = (p * logp).sum(axis=1)
    var = (p * (logp - mu[:, None]) ** 2).sum(axis=1)
    chosen = logp[np.arange(rows.shape[0]), np.asarray(targets, dtype=np.int64)]
    return TokenStats(chosen, mu, np.sqrt(np.maximum(var, 0.0)))


def lowest_count(n: int, k: float) -> int:
    """How many tokens "the lowest k%" of ``n`` means: floor(k * n), at least 1 (as the Min-K% reference code,
    which takes int(n * k), but never an empty mean)."""
    if not 0.0 < k <= 1.0:
        raise ValueError(f"k must lie in (0, 1], got {k}")
    return max(1, int(math.floor(k * n + 1e-9)))


def mean_of_lowest(values: np.ndarray, k: float) -> float:
    count = lowest_count(values.size, k)
    return float(np.sort(values)[:count].mean())


def zlib_length(text: str) -> int:
    """Bytes of the text compressed by zlib at its default level (the compressor's entropy estimate)."""
    return len(zlib.compress(text.encode("utf-8")))


def item_signals(stats: TokenStats, text: str, k: float = DEFAULT_K) -> dict[str, float]:
    """The four signals of one text (``SIGNALS``). Needs at least one predicted token."""
    if stats.logprob.size == 0:
        raise ValueError("no predicted tokens: the text is too short to score")
    loss = float(-stats.logprob.mean())
    z = np.where(stats.sigma > SIGMA_FLOOR, (stats.logprob - stats.mu) / np.maximum(stats.sigma, SIGMA_FLOOR), 0.0)
    return {
        "loss": loss,
        "zlib": loss / zlib_length(text),
        "min_k": mean_of_lowest(stats.logprob, k),
        "min_k_pp": mean_of_lowest(z, k),
    }


def member_score(signal: str, value: float) -> float:
    """The signal oriented so that higher means "more likely seen in training" (loss and zlib negated)."""
    return value if SIGNALS[signal].higher_is_member else -value
