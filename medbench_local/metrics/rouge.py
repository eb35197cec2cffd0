"""Per-example ROUGE exactly as the CLUE reference code computed it.

Why this module is so small: ROUGE numbers are only comparable with the
published CLUE table (docs/study-reference.md#published-numbers) if every
knob matches the reference implementation (docs/study-reference.md#rouge).
The June-2024 CLUE code called ``evaluate.load("rouge")`` (evaluate 0.4.0 on top of ``rouge-score`` 0.1.2)
once *per example* and averaged the per-example F-measures afterwards.
``evaluate`` is only a thin wrapper: for a single prediction/reference pair
its bootstrap aggregator returns that pair's own score, so calling
``rouge_score`` directly with the same settings gives identical numbers
without pulling in ``evaluate``/``datasets``.  The settings are:

* rouge types ``rouge1``, ``rouge2``, ``rougeL`` (sentence-level LCS, *not*
  ``rougeLsum``);
* ``use_stemmer=False`` (no Porter stemming; also means no NLTK data is
  ever needed, so scoring works fully offline);
* the default tokenizer, which lower-cases, replaces every character outside
  ``[a-z0-9]`` by a space and splits on whitespace.  Consequence worth
  knowing: accented / non-Latin letters are *dropped* ("café" -> "caf"),
  and text made only of such characters scores 0;
* the F-measure is reported, as a fraction in [0, 1] (the paper's tables
  are these fractions x100, averaged over examples).

Averaging over examples (and the reference's double-counted first example,
docs/study-reference.md#reference-quirks) is the caller's business; this
module scores one pair.
"""

from __future__ import annotations

import importlib.metadata
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover - typing only
    from rouge_score.rouge_scorer import RougeScorer

__all__ = ["ROUGE_TYPES", "ROUGE_IMPL_VERSION", "rouge_scores", "rouge_prf"]

#: The three ROUGE variants CLUE reports, in the order of its tables.
ROUGE_TYPES: tuple[str, ...] = ("rouge1", "rouge2", "rougeL")


def _impl_version() -> str:
    """Package and version of the ROUGE implementation, for run provenance."""
    try:
        return f"rouge-score=={importlib.metadata.version('rouge-score')}"
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover
        return "rouge-score (version unknown)"


#: Recorded alongside results so a run says which ROUGE implementation scored it.
ROUGE_IMPL_VERSION: str = _impl_version()


@lru_cache(maxsize=1)
def _scorer() -> RougeScorer:
    """Build the reference-configured scorer once and reuse it.

    Lazy so that importing this module stays cheap (``rouge_score`` pulls in
    NLTK and NumPy); cached because construction is not free and the scorer
    is stateless, so sharing one instance cannot change results.
    """
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=False)


def rouge_prf(
    prediction: str, reference: str, *, lowercase: bool = False
) -> dict[str, tuple[float, float, float]]:
    """Return ``{rouge_type: (precision, recall, f_measure)}`` for one pair.

    Why expose P and R at all: CLUE reports only F, but P/R are what tell
    you whether a low score comes from verbose or from terse outputs, and
    they pin down argument order (``rouge_score`` takes the *target* first;
    swapping it silently swaps P and R while leaving F unchanged).

    ``lowercase`` mirrors the 2024 Problem-Summary code, which lower-cased
    predictions and references before scoring.  For ROUGE it is a no-op
    because the default tokenizer lower-cases anyway; it is kept so that the
    task code can state the reference pipeline literally.
    """
    if lowercase:
        prediction = prediction.lower()
        reference = reference.lower()
    scores = _scorer().score(reference, prediction)  # (target, prediction)
    return {
        key: (float(scores[key].precision), float(scores[key].recall), float(scores[key].fmeasure))
        for key in ROUGE_TYPES
    }


def rouge_scores(prediction: str, reference: str, *, lowercase: bool = False) -> dict[str, float]:
    """Return ``{"rouge1": F, "rouge2": F, "rougeL": F}`` for one prediction/reference pair.

    F-measures as fractions in [0, 1], computed with the CLUE reference
    settings (see the module docstring).  An empty (or token-less)
    prediction or reference scores 0.0 for every type, as in
    ``rouge_score``.  ``lowercase`` is accepted for fidelity with the 2024
    Problem-Summary code and does not change the result.
    """
    return {key: prf[2] for key, prf in rouge_prf(prediction, reference, lowercase=lowercase).items()}
