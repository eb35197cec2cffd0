"""BERTScore as the CLUE reference computed it, from a local model folder only; never downloads.

Reference settings (2024 code; docs/study-reference.md#bertscore): MeQSum -> SciBERT
(``allenai/scibert_scivocab_uncased``), layer 8; Problem Summary and MeDiSumQA ->
``emilyalsentzer/Bio_ClinicalBERT``, layer 9; idf off, no baseline rescaling; F1 reported. (Problem Summary
lower-cases prediction and reference first: the caller's business.)

Why our own ~80 lines and not the ``bert-score`` package: the reference used a fork installed from a git URL
(not installable offline from the package index); ``bert-score`` pulls in pandas, matplotlib and requests and
resolves models by hub name; and what matters for the numbers is small and is reproduced here exactly, so
the computation can be read and tested in one place. The semantics are those of ``bert_score.score`` with
``idf=False`` (0.3.x ``greedy_cos_idf``):

* each text is ``strip()``-ed and tokenized with the model's own tokenizer, special tokens added
  (``[CLS] ... [SEP]``), truncated to the model's maximum length (``bert_score`` uses the tokenizer's
  ``model_max_length`` alone; we also cap at ``max_position_embeddings``, which only matters for models
  whose tokenizer declares no maximum, where ``bert_score`` would crash on long texts);
* embeddings = hidden states after transformer layer ``num_layers`` (layer 0 = the embedding layer),
  L2-normalized per token;
* every token of one text is matched to its most similar token of the other (greedy, cosine). Token weights
  are 1, except ``[CLS]`` and ``[SEP]`` which weigh 0 — so they are *excluded as matched tokens* but, as in
  ``bert_score``, remain available as match targets;
* P = weighted mean over prediction tokens of their best similarity in the reference, R = the same from the
  reference side, F1 = 2PR / (P + R). A text with no token besides ``[CLS]``/``[SEP]`` (e.g. empty) gives
  P = R = F1 = 0, as ``bert_score`` does.

Offline guarantee: the model is loaded with ``local_files_only=True`` from a folder that must exist (a hub
name is never accepted), ``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE`` are set to 1 before transformers is
first imported, and no remote code is trusted. Users point to their local copies with environment variables
(docs/metrics-optional.md)::

    MEDBENCH_BERTSCORE_SCIBERT=/models/scibert_scivocab_uncased
    MEDBENCH_BERTSCORE_CLINICALBERT=/models/Bio_ClinicalBERT

Anything missing (torch/transformers not installed, variable unset, folder incomplete, layer out of range)
raises :class:`~medbench_local.metrics.optional.MetricUnavailable` with one line to show
("BERTScore skipped: ...").
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

from .optional import MetricUnavailable, env_path, missing_modules

__all__ = ["BertScoreModel", "SCIBERT", "CLINICALBERT", "MODELS", "BertScorer", "bertscore",
           "model_dir", "scorer_for", "unavailable_reason"]

METRIC = "BERTScore"
IMPLEMENTATION = "medbench-local greedy cosine, bert_score 0.3 semantics (idf off, no baseline rescale)"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json")


@dataclass(frozen=True)
class BertScoreModel:
    """A BERTScore model of the reference: which hub model to copy, which layer, which variable points to it."""

    name: str
    hub_id: str
    num_layers: int
    env_var: str


SCIBERT = BertScoreModel("scibert", "allenai/scibert_scivocab_uncased", 8, "MEDBENCH_BERTSCORE_SCIBERT")
CLINICALBERT = BertScoreModel("clinicalbert", "emilyalsentzer/Bio_ClinicalBERT", 9,
                              "MEDBENCH_BERTSCORE_CLINICALBERT")
#: The models by name; each task names the 2024 reference's choice for it (``Task.study.bertscore_model``,
#: docs/study-reference.md#bertscore).
MODELS: dict[str, BertScoreModel] = {model.name: model for model in (SCIBERT, CLINICALBERT)}


def _unavailable(reason: str) -> MetricUnavailable:
    return MetricUnavailable(METRIC, reason)


def check_model_folder(path: Path, origin: str) -> None:
    """Fail with a one-line notice unless ``path`` looks like a Hugging Face model folder."""
    if not path.is_dir():
        raise _unavailable(f"{origin}: {path} is not a folder (a local model folder is required; "
                           "hub names are never downloaded)")
    if not (path / "config.json").is_file():
        raise _unavailable(f"{origin}: {path} holds no config.json (expected a Hugging Face model folder)")
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        raise _unavailable(f"{origin}: {path} holds no model weights ({' or '.join(WEIGHT_FILES[:2])})")
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise _unavailable(f"{origin}: {path} holds no tokenizer files ({' or '.join(TOKENIZER_FILES)})")


def _require_backend() -> None:
    missing = missing_modules("torch", "transformers")
    if missing:
        raise _unavailable(f"{' and '.join(missing)} not installed (pip install 'medbench-local[bertscore]'; "
                           "see docs/metrics-optional.md)")


def model_dir(model: BertScoreModel, environ: Mapping[str, str] | None = None) -> Path:
    """The local folder configured for ``model`` (checked, not loaded)."""
    path = env_path(model.env_var, environ)
    if path is None:
        raise _unavailable(f"{model.env_var} is not set (point it at a local copy of {model.hub_id}; "
                           "see docs/metrics-optional.md)")
    check_model_folder(path, model.env_var)
    return path


def unavailable_reason(model: BertScoreModel, environ: Mapping[str, str] | None = None) -> str | None:
    """None if ``model`` can be loaded here as far as can be told without loading it, else the notice."""
    try:
        _require_backend()
        model_dir(model, environ)
    except MetricUnavailable as exc:
        return str(exc)
    return None


def _sha256_files(paths: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


class BertScorer:
    """A loaded model + tokenizer for one layer; ``score`` is pure given them. Build with :func:`scorer_for`
    or :func:`bertscore` so that the model is loaded once per process."""

    def __init__(self, model_path: Path, num_layers: int, *, batch_size: int = 16) -> None:
        _require_backend()
        path = Path(model_path)
        check_model_folder(path, "model_path")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        bar = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # a "Loading weights" bar would cut through our own progress display
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            self.model = AutoModel.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError, KeyError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise _unavailable(f"cannot load the model in {path}: {first}") from None
        finally:
            if bar:
                hf_logging.enable_progress_bar()
        self.model.float().eval()  # float32 like bert_score under transformers 4 (5 loads the checkpoint dtype)
        config = self.model.config
        available = int(getattr(config, "num_hidden_layers", 0))
        if not 1 <= num_layers <= available:
            raise _unavailable(f"the model in {path} has {available} layers; layer {num_layers} was asked for "
                               "(is the variable pointing at the right model?)")
        self.torch = torch
        self.path = path
        self.num_layers = num_layers
        self.batch_size = batch_size
        limits = [n for n in (self.tokenizer.model_max_length, getattr(config, "max_position_embeddings", None))
                  if isinstance(n, int) and 0 < n < 1_000_000]
        self.max_length = min(limits) if limits else 512
        self.special_ids = {i for i in (self.tokenizer.cls_token_id, self.tokenizer.sep_token_id) if i is not None}
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else 0

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text.strip(), add_special_tokens=True, truncation=True,
                                   max_length=self.max_length)["input_ids"])

    def _embed(self, texts: Sequence[str]) -> dict[str, tuple[list[int], Any]]:
        """token ids and per-token unit vectors of layer ``num_layers`` for each distinct text"""
        torch = self.torch
        encoded = {text: self._encode(text) for text in dict.fromkeys(texts)}
        order = sorted(encoded, key=lambda t: len(encoded[t]))
        out: dict[str, tuple[list[int], Any]] = {}
        for start in range(0, len(order), self.batch_size):
            batch = order[start:start + self.batch_size]
            width = max(len(encoded[t]) for t in batch)
            ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, text in enumerate(batch):
                ids[row, :len(encoded[text])] = torch.tensor(encoded[text], dtype=torch.long)
                mask[row, :len(encoded[text])] = 1
            with torch.inference_mode():
                hidden = self.model(input_ids=ids, attention_mask=mask,
                                    output_hidden_states=True).hidden_states[self.num_layers]
            for row, text in enumerate(batch):
                vectors = hidden[row, :len(encoded[text])].float()
                out[text] = (encoded[text], vectors / vectors.norm(dim=-1, keepdim=True))
        return out

    def _weights(self, ids: list[int]) -> Any:
        return self.torch.tensor([0.0 if i in self.special_ids else 1.0 for i in ids])

    def score(self, predictions: Sequence[str], references: Sequence[str]) -> list[dict[str, float]]:
        """``[{"precision", "recall", "f1"}]`` per (prediction, reference) pair, fractions."""
        if len(predictions) != len(references):
            raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
        embedded = self._embed([*predictions, *references])
        results = []
        for prediction, reference in zip(predictions, references):
            pred_ids, pred_vec = embedded[prediction]
            ref_ids, ref_vec = embedded[reference]
            pred_w, ref_w = self._weights(pred_ids), self._weights(ref_ids)
            if not pred_w.sum() or not ref_w.sum():
                results.append({"precision": 0.0, "recall": 0.0, "f1": 0.0})
                continue
            sim = pred_vec @ ref_vec.T
            p = float((sim.max(dim=1).values * pred_w).sum() / pred_w.sum())
            r = float((sim.max(dim=0).values * ref_w).sum() / ref_w.sum())
            results.append({"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0})
        return results

    @cached_property
    def identity(self) -> dict[str, Any]:
        """What decides the numbers: the weights (hashed), the layer, the code and library versions."""
        def shard(name: str) -> bool:
            return name.startswith(("model-", "pytorch_model-")) and name.endswith((".safetensors", ".bin"))

        weights = sorted(p for p in self.path.iterdir() if p.name in WEIGHT_FILES or shard(p.name))
        return {"implementation": IMPLEMENTATION, "model_dir": str(self.path),
                "weights_sha256": _sha256_files(weights), "num_layers": self.num_layers,
                "max_length": self.max_length, "torch": importlib.metadata.version("torch"),
                "transformers": importlib.metadata.version("transformers")}


@lru_cache(maxsize=4)
def _scorer(path: str, num_layers: int) -> BertScorer:
    return BertScorer(Path(path), num_layers)


def bertscore(predictions: Sequence[str], references: Sequence[str], *, model_path: Path,
              num_layers: int) -> list[dict[str, float]]:
    """BERTScore P/R/F1 per pair with the model in the local folder ``model_path`` at layer ``num_layers``.
    The model is loaded once per process (per folder and layer). The folder is checked before the packages:
    a hub name or a wrong path is refused the same way whether or not torch is installed."""
    check_model_folder(Path(model_path), "model_path")
    _require_backend()
    return _scorer(str(Path(model_path).resolve()), num_layers).score(predictions, references)


def scorer_for(model: BertScoreModel, environ: Mapping[str, str] | None = None) -> BertScorer:
    """The loaded scorer for a reference model, from the folder its environment variable names."""
    folder = model_dir(model, environ)
    _require_backend()
    return _scorer(str(folder.resolve()), model.num_layers)
