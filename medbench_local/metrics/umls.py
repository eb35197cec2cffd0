"""UMLS-F1 as the CLUE reference computed it, from local scispaCy files only (docs/study-reference.md#umls-f1).

The definition (``TIO-IKIM/CLUE`` eval/utils.py, ``dadaamin/UMLS-F1``): run scispaCy ``en_core_sci_sm`` with
the ``scispacy_linker`` pipe (``linker_name="umls"``, ``resolve_abbreviations=True``, other parameters
default) over the prediction and over the reference separately; for each, the concept set is the **canonical
names of the top-1 linked UMLS concept** of every entity that has at least one candidate. Then

    P = |pred ∩ ref| / |pred| (0 if pred is empty),  R = |pred ∩ ref| / |ref| (0 if ref is empty),
    F1 = 2PR / (P + R) (0 if P + R = 0).

Canonical *names*, not CUIs, are compared, as in the reference (two concepts sharing a name count as one).
The reference never adds scispaCy's ``abbreviation_detector``, so ``resolve_abbreviations`` has no effect
there; we build the same pipeline, so it has none here either.

The set arithmetic (:func:`umls_prf`) takes any callable ``text -> concept names``, so it is tested with a
fake linker; :func:`doc_concepts` is the reference's entity-to-name step on a spaCy ``Doc``; :func:`load_umls`
builds the real extractor, **only from local files** (docs/metrics-optional.md):

* ``MEDBENCH_SCISPACY_MODEL`` — a folder holding the ``en_core_sci_sm`` model (its ``config.cfg``), or the
  name of the installed model package; default: the installed ``en_core_sci_sm`` package, if any.
* ``MEDBENCH_UMLS_LINKER_DIR`` — a folder with the six UMLS linker files scispaCy normally downloads on first
  use (about 1 GB: ``nmslib_index.bin``, ``tfidf_vectorizer.joblib``, ``tfidf_vectors_sparse.npz``,
  ``concept_aliases.json``, ``umls_*.jsonl`` and ``umls_semantic_type_tree.tsv``), either with these plain
  names or as scispaCy caches them (``<hash>.<hash>.nmslib_index.bin``), so a copy of ``~/.scispacy/datasets``
  from a connected machine works as it is. Default: scispaCy's own cache folder (``$SCISPACY_CACHE/datasets``
  or ``~/.scispacy/datasets``) when it holds all six files.

scispaCy would fetch the linker files over the network (a HEAD request even when cached); we register a
linker whose paths are the local files, so nothing is ever fetched. Missing pieces raise
:class:`~medbench_local.metrics.optional.MetricUnavailable` ("UMLS-F1 skipped: ...").
"""

from __future__ import annotations

import importlib.metadata
import os
import re
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from .optional import MetricUnavailable, env_path, missing_modules

__all__ = ["ConceptExtractor", "umls_prf", "doc_concepts", "UmlsConcepts", "linker_files", "load_umls",
           "unavailable_reason"]

METRIC = "UMLS-F1"
MODEL_ENV = "MEDBENCH_SCISPACY_MODEL"
LINKER_ENV = "MEDBENCH_UMLS_LINKER_DIR"
DEFAULT_MODEL = "en_core_sci_sm"
LOCAL_LINKER_NAME = "medbench_local_umls"
#: the reference pipe configuration, with our local linker in place of the downloading "umls" one
LINKER_CONFIG = {"resolve_abbreviations": True, "linker_name": LOCAL_LINKER_NAME}

#: role -> file name, as a pattern (the KB's name changes with the UMLS release: umls_2022_ab_cat0129.jsonl
#: for scispaCy 0.5.x)
LINKER_FILES: dict[str, str] = {
    "ann_index": r"nmslib_index\.bin",
    "tfidf_vectorizer": r"tfidf_vectorizer\.joblib",
    "tfidf_vectors": r"tfidf_vectors_sparse\.npz",
    "concept_aliases_list": r"concept_aliases\.json",
    "kb": r"umls_\w+\.jsonl",
    "types": r"umls_semantic_type_tree\.tsv",
}
#: scispaCy's cache names a file "<sha256(url)>.<sha256(etag)>.<name>" (and keeps a "<that>.json" note beside)
_CACHE_PREFIX = r"(?:[0-9a-f]{64}\.){0,2}"

ConceptExtractor = Callable[[str], Iterable[str]]


def umls_prf(prediction: str, reference: str, concepts: ConceptExtractor) -> dict[str, float]:
    """``{"umls_precision", "umls_recall", "umls_f1"}`` for one pair, fractions, reference definition."""
    pred, ref = set(concepts(prediction)), set(concepts(reference))
    common = len(pred & ref)
    p = common / len(pred) if pred else 0.0
    r = common / len(ref) if ref else 0.0
    return {"umls_precision": p, "umls_recall": r, "umls_f1": 2 * p * r / (p + r) if p + r else 0.0}


def doc_concepts(doc: Any, cui_to_entity: Mapping[str, Any]) -> set[str]:
    """Canonical names of the top-1 linked concept of every entity of ``doc`` that has a candidate."""
    return {cui_to_entity[ent._.kb_ents[0][0]].canonical_name for ent in doc.ents if ent._.kb_ents}


class UmlsConcepts:
    """The loaded scispaCy pipeline as a ``text -> concept names`` callable, with what identifies it."""

    def __init__(self, nlp: Any, identity: dict[str, Any]) -> None:
        self.nlp = nlp
        self.linker = nlp.get_pipe("scispacy_linker")
        self.identity = identity

    def __call__(self, text: str) -> set[str]:
        return doc_concepts(self.nlp(text), self.linker.kb.cui_to_entity)


def _unavailable(reason: str) -> MetricUnavailable:
    return MetricUnavailable(METRIC, reason)


def _scispacy_cache() -> Path:
    return Path(os.environ.get("SCISPACY_CACHE", str(Path.home() / ".scispacy"))) / "datasets"


def linker_files(folder: Path, origin: str = LINKER_ENV) -> dict[str, Path]:
    """The six linker files in ``folder`` by role; exactly one match per role (cache ``.json`` notes ignored)."""
    if not folder.is_dir():
        raise _unavailable(f"{origin}: {folder} is not a folder")
    files = [p for p in folder.iterdir() if p.is_file()]
    found: dict[str, Path] = {}
    for role, name in LINKER_FILES.items():
        pattern = re.compile(_CACHE_PREFIX + name)
        matches = [p for p in files if pattern.fullmatch(p.name)]
        if len(matches) != 1:
            shown = name.replace("\\w+", "*").replace("\\", "")
            raise _unavailable(f"{origin}: {folder} holds {len(matches) or 'no'} {shown} file(s), expected one "
                               "(the UMLS linker files; see docs/metrics-optional.md)")
        found[role] = matches[0]
    return found


def _model_source(environ: Mapping[str, str] | None) -> str:
    path = env_path(MODEL_ENV, environ)
    if path is not None:
        if path.is_dir():
            if not (path / "config.cfg").is_file():
                raise _unavailable(f"{MODEL_ENV}: {path} holds no config.cfg (expected the en_core_sci_sm "
                                   "model folder, the one with config.cfg and meta.json)")
            return str(path)
        if len(path.parts) == 1 and str(path).isidentifier() and not missing_modules(str(path)):
            return str(path)  # an installed model package, e.g. en_core_sci_sm
        raise _unavailable(f"{MODEL_ENV}={path} is neither a folder nor an installed model package")
    if missing_modules(DEFAULT_MODEL):
        raise _unavailable(f"{MODEL_ENV} is not set and the {DEFAULT_MODEL} package is not installed "
                           "(see docs/metrics-optional.md)")
    return DEFAULT_MODEL


def _linker_folder(environ: Mapping[str, str] | None) -> tuple[Path, str]:
    path = env_path(LINKER_ENV, environ)
    if path is not None:
        return path, LINKER_ENV
    cache = _scispacy_cache()
    try:
        linker_files(cache, "scispaCy cache")
    except MetricUnavailable:
        raise _unavailable(f"{LINKER_ENV} is not set and scispaCy's cache ({cache}) does not hold the UMLS "
                           "linker files (see docs/metrics-optional.md)") from None
    return cache, "scispaCy cache"


def _resolve(environ: Mapping[str, str] | None) -> tuple[str, dict[str, Path]]:
    missing = missing_modules("spacy", "scispacy")
    if missing:
        raise _unavailable(f"{' and '.join(missing)} not installed (pip install 'medbench-local[umls]'; "
                           "see docs/metrics-optional.md)")
    model = _model_source(environ)
    folder, origin = _linker_folder(environ)
    return model, linker_files(folder, origin)


def unavailable_reason(environ: Mapping[str, str] | None = None) -> str | None:
    """None if UMLS-F1 can be set up here as far as can be told without loading it, else the notice."""
    try:
        _resolve(environ)
    except MetricUnavailable as exc:
        return str(exc)
    return None


def load_umls(environ: Mapping[str, str] | None = None) -> UmlsConcepts:
    """The reference pipeline from local files (loaded once per process; the linker needs several GB RAM)."""
    model, files = _resolve(environ)
    return _load(model, tuple(sorted((role, str(path)) for role, path in files.items())))


@lru_cache(maxsize=1)
def _load(model: str, files: tuple[tuple[str, str], ...]) -> UmlsConcepts:
    paths = dict(files)
    try:
        import spacy
        from scispacy import candidate_generation
        from scispacy.linking import EntityLinker  # noqa: F401  (registers the "scispacy_linker" factory)
        from scispacy.linking_utils import UmlsKnowledgeBase

        candidate_generation.DEFAULT_PATHS[LOCAL_LINKER_NAME] = candidate_generation.LinkerPaths(
            ann_index=paths["ann_index"], tfidf_vectorizer=paths["tfidf_vectorizer"],
            tfidf_vectors=paths["tfidf_vectors"], concept_aliases_list=paths["concept_aliases_list"])
        candidate_generation.DEFAULT_KNOWLEDGE_BASES[LOCAL_LINKER_NAME] = (
            lambda: UmlsKnowledgeBase(file_path=paths["kb"], types_file_path=paths["types"]))
        nlp = spacy.load(model)
        nlp.add_pipe("scispacy_linker", config=LINKER_CONFIG)
    except (ImportError, AttributeError, TypeError) as exc:
        raise _unavailable(f"this scispaCy version's linker API is not the one medbench-local was written "
                           f"for (0.5.x): {type(exc).__name__}: {exc}") from None
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _unavailable(f"cannot load the scispaCy pipeline: {first}") from None
    identity = {
        "model": f"{nlp.meta.get('lang', 'en')}_{nlp.meta.get('name', model)}-{nlp.meta.get('version', '?')}",
        "resolve_abbreviations": LINKER_CONFIG["resolve_abbreviations"],
        "linker_files": {role: {"name": Path(path).name, "bytes": Path(path).stat().st_size}
                         for role, path in sorted(paths.items())},
        "scispacy": importlib.metadata.version("scispacy"), "spacy": importlib.metadata.version("spacy"),
    }
    return UmlsConcepts(nlp, identity)
