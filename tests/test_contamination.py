"""The contamination probe's pure parts and its storage: the control rewrite, the item text, the paired shift and
flag rule, AUROC/TPR, the n-gram overlap on a generated corpus, and the migration's tables."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medbench_local.contamination.control import nudge_number, rewrite
from medbench_local.contamination.overlap import (
    DEFAULT_N,
    NORMALISATION,
    corpus_files,
    corpus_identity,
    index_corpus,
    item_overlap,
    longest_run,
    ngram_hashes,
    words,
)
from medbench_local.contamination.roc import auroc, tpr_at_fpr
from medbench_local.contamination.summary import FLAG_QUANTILE, pair_shifts, signal_shift
from medbench_local.contamination.text import item_text
from medbench_local.paths import default_data
from medbench_local.store import contamination as stored
from medbench_local.store import open_database
from medbench_local.store.database import expected_types
from medbench_local.store.ngram_index import NgramIndex
from medbench_local.tasks import get_task, task_ids

MCQ = {"case": "Mr. Smith, a 67-year-old man, has potassium 7.3 mmol/L and type 2 diabetes; John Smith's wife "
               "Mary says he took 40 mg.", "question": "What next?",
       "options": {"A": "Calcium", "B": "Insulin", "C": "Wait", "D": "Dialysis"}, "answer": "B"}


def _sample_items(task: str) -> list:
    found = default_data(task)
    return [] if found is None else get_task(task).configure().load(found.path).items


# ---------------------------------------------------------------------------------------------- text and control

@pytest.mark.parametrize("task", task_ids())
def test_every_bundled_task_gives_a_plain_text_with_its_gold_answer(task: str) -> None:
    for item in _sample_items(task)[:3]:
        text = item_text(item.payload)
        assert text.strip()
        assert "<|" not in text and "<start_of_turn>" not in text  # no chat template
        if isinstance(item.payload.get("options"), dict):
            assert re.search(r"^Answer: ", text, re.MULTILINE)


@settings(max_examples=80)
@given(st.integers(0, 2**32 - 1), st.text(min_size=1, max_size=12))
def test_the_rewrite_keeps_the_gold_answer_with_its_option_and_is_deterministic(seed: int, item_id: str) -> None:
    out = rewrite(MCQ, seed=seed, item_id=item_id)
    assert out == rewrite(MCQ, seed=seed, item_id=item_id)
    assert out["options"][out["answer"]] == MCQ["options"][MCQ["answer"]]
    assert sorted(out["options"].values()) == sorted(MCQ["options"].values())
    assert list(out["options"]) == list(MCQ["options"])  # relettered A, B, C, D in the new order


def test_the_rewrite_replaces_names_and_numbers_consistently() -> None:
    out = rewrite(MCQ, seed=3, item_id="x")["case"]
    assert "Smith" not in out and "John" not in out and "Mary" not in out
    surname = re.search(r"Mr\. (\w+)", out).group(1)  # type: ignore[union-attr]
    assert f"{surname}'s" in out  # the same name replaced the same way twice
    assert "type 2 diabetes" in out  # one-digit numbers stay
    assert "67" not in out and "7.3" not in out and " 40 " not in out


@given(st.from_regex(r"[1-9][0-9]{1,4}(\.[0-9]{1,2})?", fullmatch=True), st.integers(0, 100))
def test_a_nudged_number_keeps_its_shape_and_changes_by_one_in_the_last_digit(number: str, seed: int) -> None:
    new = nudge_number(number, random.Random(seed))
    assert new != number and len(new) == len(number) and new[:-1] == number[:-1]
    assert abs(int(new[-1]) - int(number[-1])) == 1


# ---------------------------------------------------------------------------------------------- the paired shift

def _signals(values: dict[tuple[str, str], float]) -> dict[tuple[str, str], dict[str, float]]:
    return {key: {"loss": v, "zlib": v / 100, "min_k": -v, "min_k_pp": -v} for key, v in values.items()}


def test_a_fine_tune_that_saw_the_items_shows_a_positive_shift_and_flags_them() -> None:
    """The biomedical model's loss is lower than the general's on the originals of ten items of 30 only: those are
    flagged on every signal and listed first, and the shift is positive with a CI and a test that say so."""
    rng = np.random.default_rng(0)
    items = [f"i{n}" for n in range(30)]
    gen = {(v, i): 3.0 + rng.normal(0, 0.05) for v in ("original", "control") for i in items}
    bio = {k: v + 0.2 + rng.normal(0, 0.05) for k, v in gen.items()}  # the fine-tune is worse on everything...
    seen = items[:10]
    for i in seen:
        bio[("original", i)] -= 2.0  # ...except on the benchmark text it saw
    shifts = pair_shifts(_signals(bio), _signals(gen), paired=True, resamples=2000)
    assert [s.signal for s in shifts] == ["loss", "zlib", "min_k", "min_k_pp"]
    for s in shifts:
        assert s.shift > 0 and s.low is not None and s.low > 0 and s.p_value is not None and s.p_value < 0.05
        assert set(seen) <= set(s.flagged)
        assert {i for i, _ in s.top(10)} == set(seen)


def test_no_shift_when_the_models_differ_the_same_way_on_originals_and_controls() -> None:
    rng = np.random.default_rng(1)
    items = [f"i{n}" for n in range(40)]
    gen = {(v, i): 3.0 + rng.normal(0, 0.3) for v in ("original", "control") for i in items}
    bio = {k: v - 0.5 + rng.normal(0, 0.1) for k, v in gen.items()}  # better everywhere: domain knowledge
    s = signal_shift(_signals(bio), _signals(gen), "loss", paired=True, resamples=2000)
    assert s is not None and s.low is not None and s.high is not None and s.low < 0 < s.high


def test_user_controls_are_compared_as_an_independent_sample() -> None:
    rng = np.random.default_rng(2)
    orig = {("original", f"b{n}"): 3.0 + rng.normal(0, 0.1) for n in range(20)}
    ctrl = {("control", f"u{n}"): 3.0 + rng.normal(0, 0.1) for n in range(15)}
    gen = {**orig, **ctrl}
    bio = {**{k: v - 1.0 for k, v in orig.items()}, **ctrl}
    s = signal_shift(_signals(bio), _signals(gen), "loss", paired=False, resamples=2000)
    assert s is not None and s.n_items == 20 and s.n_controls == 15
    assert s.shift == pytest.approx(1.0, abs=0.1) and s.low is not None and s.low > 0
    assert len(s.flagged) == 20 and FLAG_QUANTILE == 0.95


# ---------------------------------------------------------------------------------------------- AUROC

@given(st.lists(st.floats(-10, 10), min_size=1, max_size=20), st.lists(st.floats(-10, 10), min_size=1, max_size=20))
def test_auroc_is_the_share_of_correctly_ordered_pairs(pos: list[float], neg: list[float]) -> None:
    naive = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg) / (len(pos) * len(neg))
    assert auroc(pos, neg) == pytest.approx(naive)
    assert auroc(neg, pos) == pytest.approx(1.0 - naive)


@given(st.lists(st.floats(-10, 10), min_size=1, max_size=20), st.lists(st.floats(-10, 10), min_size=1, max_size=40))
def test_tpr_at_fpr_keeps_the_false_positive_rate(pos: list[float], neg: list[float]) -> None:
    tpr = tpr_at_fpr(pos, neg, 0.05)
    threshold_candidates = sorted(neg, reverse=True)
    allowed = int(0.05 * len(neg) + 1e-9)
    threshold = threshold_candidates[allowed] if allowed < len(neg) else -np.inf
    assert sum(n > threshold for n in neg) <= allowed
    assert tpr == pytest.approx(sum(p > threshold for p in pos) / len(pos))


# ---------------------------------------------------------------------------------------------- n-gram overlap

def test_normalisation_folds_case_punctuation_and_whitespace() -> None:
    assert words("Answer:  B.\tGive IV calcium-gluconate!") == ["answer", "b", "give", "iv", "calcium", "gluconate"]
    assert (ngram_hashes("The QUICK, brown fox jumps over it", 3)[:2] == ngram_hashes("the quick brown fox", 3)).all()


@given(st.lists(st.booleans(), max_size=40))
def test_longest_run(hits: list[bool]) -> None:
    text = "".join("1" if h else "0" for h in hits)
    assert longest_run(np.array(hits, dtype=bool)) == max((len(r) for r in text.split("0")), default=0)


def _paraphrase(text: str, every: int) -> str:
    """Change one word in every ``every`` words (a light rewording)."""
    out = text.split()
    for position in range(every // 2, len(out), every):
        out[position] = "zq" + out[position]
    return " ".join(out)


def test_overlap_finds_every_verbatim_item_and_no_absent_one(tmp_path: Path) -> None:
    """A generated corpus (JSONL, CSV and plain text, in a folder) holding some items verbatim inside other text,
    some paraphrased, the rest absent: recall on the verbatim ones is exact (share 1), absent ones share nothing,
    and a paraphrase changing a word in every 8 shares nothing at n = 13 while one changing a word in every 40
    is found in part (docs/contamination.md)."""
    items = [(f"{task}-{item.id}", item_text(item.payload)) for task in ("jama", "nejm", "medqa")
             for item in _sample_items(task)]
    items = [(i, t) for i, t in items if len(words(t)) >= 60]
    verbatim, light, heavy, absent = items[0:6], items[6:9], items[9:12], items[12:]
    assert verbatim and light and heavy and absent
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    with open(corpus / "a.jsonl", "w", encoding="utf-8") as f:
        for n, (_, text) in enumerate(verbatim[:3]):
            f.write(json.dumps({"instruction": "Answer the question.", "input": text, "n": n}) + "\n")
        f.write(json.dumps({"text": "nothing to see here " * 30}) + "\n")
    with open(corpus / "b.csv", "w", encoding="utf-8") as f:
        for _, text in verbatim[3:]:
            f.write('"' + ("Context. " + text).replace('"', '""') + '",x\n')
    (corpus / "c.txt").write_text("\n\n".join([_paraphrase(t, 40) for _, t in light]
                                              + [_paraphrase(t, 8) for _, t in heavy]), encoding="utf-8")
    index = NgramIndex(tmp_path / "corpus.ngrams", n=DEFAULT_N, normalisation=NORMALISATION)
    try:
        index_corpus(index, corpus_files([corpus]), DEFAULT_N)
        result = {i: item_overlap(index, t, DEFAULT_N) for i, t in items}
        assert all(result[i].share == 1.0 for i, _ in verbatim)
        assert all(result[i].longest_run == len(words(t)) - DEFAULT_N + 1 for i, t in verbatim)
        assert all(result[i].found == 0 for i, _ in absent + heavy)
        assert all(0.0 < result[i].share < 1.0 for i, _ in light)
        assert len(corpus_identity(index, DEFAULT_N)["files"]) == 3
    finally:
        index.close()


def test_the_index_resumes_per_file_and_refuses_another_n(tmp_path: Path) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text("one two three four five six seven eight nine ten eleven twelve thirteen fourteen\n")
    path = tmp_path / "i.ngrams"
    seen: list[bool] = []
    for _ in range(2):
        index = NgramIndex(path, n=13, normalisation=NORMALISATION)
        index_corpus(index, [corpus], 13, on_file=lambda p, skipped: seen.append(skipped))
        index.close()
    assert seen == [False, True]
    from medbench_local.errors import StoreError

    with pytest.raises(StoreError, match="n=13"):
        NgramIndex(path, n=8, normalisation=NORMALISATION)


def test_a_results_database_is_not_taken_as_an_index(tmp_path: Path) -> None:
    from medbench_local.errors import StoreError
    from medbench_local.store import close_database

    db_path = tmp_path / "results.db"
    close_database(open_database(db_path))
    with pytest.raises(StoreError, match="not an n-gram index"):
        NgramIndex(db_path, n=13, normalisation=NORMALISATION)


# ---------------------------------------------------------------------------------------------- the stored rows

def test_the_migration_declares_the_tables_and_rows_round_trip(tmp_path: Path) -> None:
    assert {"contamination_probes", "contamination_signals", "contamination_corpora",
            "contamination_overlap"} <= set(expected_types())
    db = open_database(tmp_path / "r.db")
    try:
        db.conn.execute("pragma foreign_keys=off")  # no model row needed for this round trip
        stored.record_probe(db, "p", model_id="m", model_sha256="0" * 64, role="general", pair="demo", task="jama",
                            identity={"k": 0.2})
        stored.record_signals(db, "p", "original", "i1", text_sha256="t", tokens=10, truncated=0,
                              signals={"loss": 1.0, "zlib": 0.1, "min_k": -2.0, "min_k_pp": -1.0}, seconds=0.1)
        assert stored.stored_signals(db, "p") == {("original", "i1"): "t"}
        assert stored.read_signals(db, "p")[("original", "i1")]["min_k"] == -2.0
        assert stored.probes(db)[0]["identity"] == {"k": 0.2}
    finally:
        db.conn.close()


# ---------------------------------------------------------------------------------------------- compare

def test_compare_shows_the_probe_and_recomputes_without_the_flagged_items(tmp_path: Path) -> None:
    """A synthetic pair on 20 items where the biomedical model is right on items 0-5 only; a stored probe in which
    the biomedical model's advantage on the originals of items 0-3 stands far above every control's: compare
    --json carries the probe's shifts and flags (those four among them), and --exclude-flagged's Δ is computed on
    the items not flagged."""
    from click.testing import CliRunner

    from medbench_local.cli import main
    from medbench_local.store import close_database

    from .synthetic import Side, build_pair_db

    n = 20
    db_path = build_pair_db(tmp_path / "r.db", "demo",
                            Side("bio", [("correct", "A")] * 6 + [("wrong", "B")] * (n - 6)),
                            Side("gen", [("wrong", "B")] * n))
    rng = np.random.default_rng(0)
    db = open_database(db_path)
    try:
        settings = {"probe_version": "probe-1", "text_version": "plain-1", "k": 0.2, "control": "rewrite",
                    "seed": 1, "task": "jama"}
        for role, model, sha in (("biomedical", "bio", "b" * 64), ("general", "gen", "g" * 64)):
            key = f"probe-{role}"
            stored.record_probe(db, key, model_id=model, model_sha256=sha, role=role, pair="demo", task="jama",
                                identity={**settings, "engine": {"model_sha256": sha}})
            for i in range(n):
                for variant in ("original", "control"):
                    loss = 3.0 + rng.normal(0, 0.05)
                    if role == "biomedical" and variant == "original" and i < 4:
                        loss -= 2.0  # seen in fine-tuning
                    stored.record_signals(db, key, variant, f"item-{i}", text_sha256="t", tokens=50, truncated=0,
                                          signals={"loss": loss, "zlib": loss / 100, "min_k": -2 * loss,
                                                   "min_k_pp": -loss}, seconds=0.0)
    finally:
        close_database(db)
    result = CliRunner().invoke(main, ["compare", "--db", str(db_path), "--json", "--exclude-flagged",
                                       "--resamples", "200"])
    assert result.exit_code == 0, result.output
    row = json.loads(result.output)[0]
    flagged = set(row["contamination"]["flagged"])
    assert {f"item-{i}" for i in range(4)} <= flagged  # the seen ones, and whatever noise flags by chance
    assert row["contamination"]["shifts"]["min_k"]["shift"] > 0
    assert row["n"] == n and row["excluding_flagged"]["n"] == n - len(flagged)
    right = sum(f"item-{i}" not in flagged for i in range(6))  # the biomedical model's right answers left
    assert row["excluding_flagged"]["delta"] == pytest.approx(right / (n - len(flagged)))
    table = CliRunner().invoke(main, ["compare", "--db", str(db_path), "--exclude-flagged", "--resamples", "200"])
    assert table.exit_code == 0 and "contamination probe" in table.output and "without flagged" in table.output
    page = tmp_path / "r.html"
    made = CliRunner().invoke(main, ["report", "--db", str(db_path), "--no-items", "--resamples", "200",
                                     "-o", str(page)])
    assert made.exit_code == 0, made.output
    assert "<h3>Contamination probe</h3>" in page.read_text(encoding="utf-8")
