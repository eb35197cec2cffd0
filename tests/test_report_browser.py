"""The report's item browser and sections on synthetic databases: hostile values stay text, the browser filters,
sorts and opens items in a real headless Chromium, examples show input, gold and metric, outputs once."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import sqlite3
from html.parser import HTMLParser
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medbench_local.report import browser
from medbench_local.report.browser import GroupRows, browser_data, difference, restore, script_json, shorten

from .chromium import browser_or_skip, dump_dom
from .conftest import invoke
from .synthetic import Side, build_pair_db

HOSTILE = [
    "</script><script>document.body.setAttribute('data-pwned','script')</script>",
    "<img src=x onerror=\"document.body.setAttribute('data-pwned','img')\">",
    "\"><svg onload=\"document.body.setAttribute('data-pwned','svg')\"></svg>",
    "<!--<script>document.body.setAttribute('data-pwned','comment')</script>",
    "</SCRIPT ><iframe src=javascript:alert(1)>&amp;\u2028\u2029",
]

# bio and gen outcomes per item; accuracy is 1 for 'correct' (tests/synthetic.py)
BIO = ["correct", "wrong", "correct", "unparseable", "wrong", "correct"]
GEN = ["wrong", "correct", "wrong", "unparseable", "correct", "correct"]
DELTA = [(b == "correct") - (g == "correct") for b, g in zip(BIO, GEN)]


class Page(HTMLParser):
    """Start tags with attributes, and the text of chosen elements (by id or class), of one HTML document."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: dict[str, str] = {}
        self.all_text: list[str] = []
        self._open: list[tuple[str, str]] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.tags.append((tag, attributes))
        name = attributes.get("id") or (attributes.get("class") or "").split(" ")[0]
        if tag not in ("br", "img", "input", "meta"):
            self._open.append((tag, name or ""))

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            opened, _ = self._open.pop()
            if opened == tag:
                break

    def handle_data(self, data: str) -> None:
        self.all_text.append(data)
        for _, name in self._open:
            if name:
                self.text[name] = self.text.get(name, "") + data

    def all(self, tag: str) -> list[dict[str, str | None]]:
        return [attrs for t, attrs in self.tags if t == tag]


def hostile_db(path: Path, text: str) -> Path:
    """A pair whose names, item ids, inputs and outputs all carry ``text``."""
    answers = [text if i in (1, 2) else f"answer {i}" for i in range(len(BIO))]
    answers[2] = ("long output line\n" * 80) + text
    build_pair_db(path, f"pair{text}", Side(f"bio{text}", list(zip(BIO, answers))),
                  Side(f"gen{text}", [(o, text if i == 2 else f"gen answer {i}") for i, o in enumerate(GEN)]),
                  item_ids=[f"item{i}{text}" for i in range(len(BIO))], payload_text=f"case {text}")
    # and every other stored text the report shows: gold and extracted answers, data names and settings,
    # model file names and header fields, the run's command line and versions
    settings = json.dumps({"task": {"task": "jama", "extraction": f"x{text}", "prompt_sha256": text},
                           "engine": {"n_ctx": 512, "sampler": text}, "data": {"name": f"data{text}"}})
    with sqlite3.connect(path) as conn:
        conn.execute("update scores set gold = ?, extracted = ? || extracted", (f"A{text}", text))
        conn.execute("update evaluations set settings = ?", (settings,))
        conn.execute("update models set file_name = ?, quantization = ?, architecture = ?", (text, text, text))
        conn.execute("update runs set command = ?, medbench_version = ?, llama_cpp_version = ?, git_revision = ?",
                     (json.dumps([text]), text, text, text))
    return path


def html_text(html: str) -> str:
    """The page's text as a browser shows it (markup removed, entities decoded), scripts left out."""
    parser = Page(re.sub(r"<script.*?</script>", "", html, flags=re.S))
    return "".join(parser.all_text)


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    return [s for v in value for s in _strings(v)] if isinstance(value, list) else []


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_values_never_become_markup(tmp_path: Path, text: str) -> None:
    db = hostile_db(tmp_path / "r.db", text)
    out = tmp_path / "r.html"
    invoke("report", "--db", str(db), "-o", str(out), "--resamples", "200")
    html = out.read_text(encoding="utf-8")
    page = Page(html)
    scripts = page.all("script")
    assert scripts == [{"type": "application/json", "id": "mb-items"}, {}]  # the data block and our script
    assert not page.all("iframe") and not page.all("svg")
    assert all((attrs.get("src") or "").startswith("data:image/png;base64,") for attrs in page.all("img"))
    assert not [(tag, k) for tag, attrs in page.tags for k in attrs if k.lower().startswith("on")]
    # the policy lets exactly our script run (by its hash), nothing else, and nothing from the network
    csp = next(a["content"] for a in page.all("meta") if a.get("http-equiv") == "Content-Security-Policy")
    source = re.search(r"<script>(.*?)</script></body>", html, re.S)
    assert source and source.group(1) == browser.SCRIPT
    digest = base64.b64encode(hashlib.sha256(browser.SCRIPT.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in (csp or "") and "default-src 'none'" in (csp or "")
    # the data block parses back to the hostile text
    block = re.search(r'<script type="application/json" id="mb-items">(.*?)</script>', html, re.S)
    assert block and any(text in value for value in _strings(json.loads(block.group(1))))
    shown = html_text(html)
    for value in (f"case {text}", f"A{text}", f"data{text}", f"x{text}", f"pair{text}", f"bio{text}"):
        assert value in shown, value  # each field is really on the page, as text


def test_without_the_browser_no_script_may_run(tmp_path: Path) -> None:
    db = hostile_db(tmp_path / "r.db", HOSTILE[0])
    out = tmp_path / "r.html"
    invoke("report", "--db", str(db), "-o", str(out), "--resamples", "200", "--no-items")
    html = out.read_text(encoding="utf-8")
    page = Page(html)
    assert page.all("script") == [] and 'id="mb-browser"' not in html and "Disagreements on" in html
    csp = next(a["content"] for a in page.all("meta") if a.get("http-equiv") == "Content-Security-Policy")
    assert "script-src 'none'" in (csp or "")


@settings(max_examples=300, deadline=None)
@given(st.recursive(st.text() | st.integers() | st.none(), lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12))
def test_script_json_round_trips_and_cannot_close_its_element(value: object) -> None:
    text = script_json(value)
    assert json.loads(text) == value
    assert not set("<>&\u2028\u2029") & set(text)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab\n\r\u2028", max_size=60) | st.text(max_size=60),
       st.text(alphabet="ab\n\r\u2028", max_size=60) | st.text(max_size=60), st.text(max_size=20))
def test_the_general_prompt_is_restored_exactly_from_its_difference(base: str, other: str, shared: str) -> None:
    for a, b in ((base, other), (shared + base + shared, shared + other + shared), (base, base + other)):
        diff = difference(a, b)
        assert restore(a, diff) == b
        assert sum(len(s) for s in diff if isinstance(s, str)) <= len(b)


def test_a_long_prompt_keeps_head_and_tail_and_says_how_much_is_left_out() -> None:
    text = "HEAD" + "x" * 50_000 + "TAIL"
    short = shorten(text, 1000)
    assert short.startswith("HEAD") and short.endswith("TAIL") and len(short) < 1200
    assert f"{len(text) - 1000:,} characters left out" in short
    assert shorten("short", 1000) == "short"


def _row(item: str, prompt: str, payload: dict[str, object], outcome: str = "correct") -> dict[str, object]:
    return {"item_id": item, "payload": json.dumps(payload), "prompt": prompt, "output": f"out {item}",
            "outcome": outcome, "extracted": "A", "gold": "A", "metrics": json.dumps({"accuracy": 1.0})}


def test_without_stored_inputs_no_prompt_reaches_the_browser() -> None:
    hidden = {"not_stored": True, "content_sha256": "c" * 64}
    group = GroupRows("p", "jama · x", "jama", ["accuracy"], ("b", "g"),
                      {"k1": _row("i1", "a" * 64, hidden), "k2": _row("i2", "b" * 64, hidden)},
                      {"k1": _row("i1", "a" * 64, hidden), "k2": _row("i2", "b" * 64, hidden)})
    data = browser_data([group])
    assert data["groups"][0]["inputs"] is False and data["groups"][0]["prefix"] == ""
    assert [item[5:] for item in data["items"]] == [[None, None], [None, None]]
    assert "a" * 64 not in json.dumps(data)


def test_prompts_are_stored_once_per_item_with_the_shared_part_once_per_group() -> None:
    shots = "SYSTEM and five worked examples. " * 50
    shots = shots.replace(". ", ".\n")
    bio = {f"k{i}": _row(f"i{i}", f"<bio>\n{shots}question {i}</bio>", {"case": "c"}) for i in range(20)}
    gen = {f"k{i}": _row(f"i{i}", f"<gen>user\n{shots}question {i}</gen>", {"case": "c"}) for i in range(20)}
    data = browser_data([GroupRows("p", "jama", "jama", ["accuracy"], ("b", "g"), bio, gen)])
    encoded = json.dumps(data)
    assert encoded.count("worked examples") == 50  # the shots once, not 40 times
    prefix = data["groups"][0]["prefix"]
    for i, item in enumerate(data["items"]):
        base = prefix + item[5]
        assert base == bio[f"k{i}"]["prompt"] and restore(base, item[6]) == gen[f"k{i}"]["prompt"]


def _dom(page: Path, profile: Path, fragment: str) -> Page:
    dom = Page(dump_dom(page, profile, fragment))
    body = dom.all("body")[0]
    assert body.get("data-browser-ready") is not None, dom.text.get("mb-errors")
    assert not dom.text.get("mb-errors", "").strip()
    assert "data-pwned" not in body
    return dom


def _shown(dom: Page) -> list[int]:
    return [int(attrs["data-index"] or -1) for tag, attrs in dom.tags if (attrs.get("class") == "item-row")]


@pytest.mark.parametrize("text", HOSTILE[:2])
def test_the_browser_filters_sorts_and_opens_items_in_chromium(tmp_path: Path, text: str) -> None:
    browser_or_skip()
    db = hostile_db(tmp_path / "r.db", text)
    out = tmp_path / "r.html"
    invoke("report", "--db", str(db), "-o", str(out), "--resamples", "200")
    profile = tmp_path / "profile"
    n = len(BIO)

    everything = _dom(out, profile, "")
    assert _shown(everything) == sorted(range(n), key=lambda i: (-abs(DELTA[i]), i))
    counts = [a for t, a in everything.tags if a.get("id") == "mb-count"]
    assert counts[0]["data-matching"] == str(n)

    disagree = _dom(out, profile, "items?disagree=1&sort=delta")
    assert _shown(disagree) == sorted([i for i in range(n) if DELTA[i]], key=lambda i: (-DELTA[i], i))

    wrong_bio = _dom(out, profile, "items?outcome=wrong&side=0&sort=order")
    assert _shown(wrong_bio) == [i for i in range(n) if BIO[i] == "wrong"]
    wrong_any = _dom(out, profile, "items?outcome=wrong&sort=-delta")
    either = [i for i in range(n) if "wrong" in (BIO[i], GEN[i])]
    assert _shown(wrong_any) == sorted(either, key=lambda i: (DELTA[i], i))
    none = _dom(out, profile, "items?outcome=unparseable&disagree=1")
    assert _shown(none) == []

    opened = _dom(out, profile, "items?open=2")
    detail = opened.text["item-detail"]
    assert f"item2{text}" in detail and "prompt for item" in detail
    assert opened.text["output"] == "long output line\n" * 80 + text + text  # both outputs, as text
    assert f"bio{text} (biomedical)" in detail and f"gold A{text}" in detail


def _example_row(item: str, output: str | None, payload: dict[str, object], outcome: str, value: float
                 ) -> dict[str, object]:
    return {"item_id": item, "payload": json.dumps(payload), "prompt": "p", "output": output, "outcome": outcome,
            "extracted": "B" if outcome == "wrong" else "A", "gold": "A",
            "metrics": json.dumps({"accuracy": value, "rougeL": value / 2})}


@pytest.mark.parametrize("stored", [True, False])
def test_examples_show_input_gold_metric_and_each_output_once_long_ones_folded(stored: bool) -> None:
    from medbench_local.report.sections import FOLD_CHARS, examples_block

    payload: dict[str, object] = ({"case": "CASE-TEXT", "question": "QUESTION-TEXT", "options": {"A": "OPT-A"},
                                   "answer": "A"} if stored else {"not_stored": True, "content_sha256": "c" * 64})
    long_output = "LONG-OUTPUT " * (FOLD_CHARS // 6)
    bio = _example_row("item-7", long_output, payload, "correct", 1.0)
    gen = _example_row("item-7", "SHORT-OUTPUT", payload, "wrong", 0.0)
    html = examples_block("jama · d.jsonl", [(bio, gen)], ("bio-model", "gen-model"))
    text = html_text(html)
    assert text.count("SHORT-OUTPUT") == 1 and html.count(long_output) == 1
    assert re.search(r"<details><summary>output: [\d,]+ characters.*?</summary><pre>(LONG-OUTPUT )+</pre></details>",
                     html)
    assert "<details><summary>output" not in html.split("SHORT-OUTPUT")[0].split(long_output)[-1]
    assert text.count("gold A") == 1
    assert "accuracy 100.0" in text and "accuracy 0.0" in text and "rougeL 50.0" in text
    assert "answer B" in text and "bio-model (biomedical)" in text
    if stored:
        assert all(part in text for part in ("CASE-TEXT", "QUESTION-TEXT", "A. OPT-A"))
        assert text.count("CASE-TEXT") == 1
    else:
        assert "Inputs were not stored" in text and "c" * 64 not in html


# ------------------------------------------------------------------------------ summary, search, outcome counts


def _study_report(tmp_path: Path, *extra: str) -> tuple[Path, str]:
    from .synthetic import build_study_db

    db = build_study_db(tmp_path / "study.db")
    out = tmp_path / "study.html"
    invoke("report", "--db", str(db), "-o", str(out), "--resamples", "200", *extra)
    return out, out.read_text(encoding="utf-8")


def test_the_summary_line_says_who_is_ahead_where_at_the_top(tmp_path: Path) -> None:
    from .synthetic import STUDY_BIO, STUDY_GEN, STUDY_PAIR

    out, html = _study_report(tmp_path)
    page = Page(html)
    summary = page.text["summary"]
    assert html.index("id='summary'") < html.index("<h2")  # above every section
    assert " ".join(summary.split()) == (
        f"{STUDY_PAIR}: {STUDY_BIO} (biomedical) ahead on 1 of 6 rows (jama accuracy); {STUDY_GEN} (general) "
        "ahead on 1 of 6 rows (mednli accuracy); no significant difference on 4 rows (ahead: Holm-adjusted p "
        "< 0.05).")
    assert ("a", {"href": "#pair-0"}) in page.tags and any(a.get("id") == "pair-0" for a in page.all("h2"))
    # the statistics table says it in words, with p written <0.001, never 0.0000
    stats = html_text(html.split("<table class=\"stats\">")[1].split("</table>")[0])
    assert "biomedical ahead (Holm p <0.001)" in stats and "general ahead (Holm p <0.001)" in stats
    assert stats.count("no significant difference (Holm p 1.000)") == 4 and "0.0000" not in html
    browser_or_skip()
    dom = _dom(out, tmp_path / "profile", "")
    assert " ".join(dom.text["summary"].split()) == " ".join(summary.split())  # what a reader sees


def test_outcome_counts_add_up_to_n_and_unpaired_items_are_counted_apart(tmp_path: Path) -> None:
    from medbench_local.analysis.paired import compare_pairs
    from medbench_local.report.sections import outcome_table
    from medbench_local.store.database import reading

    from .synthetic import build_study_db, study_tasks

    db = build_study_db(tmp_path / "study.db")
    with reading(db) as conn:
        (report,) = compare_pairs(conn, resamples=200)
    for row in report.rows:
        for role in ("biomedical", "general"):
            assert sum(row.paired_outcomes[role].values()) == row.n
    answered = {(t.task, "biomedical"): len(t.bio) for t in study_tasks()} | {
        (t.task, "general"): len(t.gen) for t in study_tasks()}
    for tr in re.findall(r"<tr>(.*?)</tr>", outcome_table(report))[1:]:  # per row group and model
        cells = [html_text(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", tr)]
        task, role = next(t.task for t in study_tasks() if cells[0].startswith(t.task)), cells[1]
        *counts, n, unpaired = [int(c.replace(",", "")) for c in cells[2:]]
        assert sum(counts) == n and n + unpaired == answered[(task, role)], cells
    assert any(int(html_text(c)) == 4 for c in re.findall(r"<td class=\"num\">(\d+)</td>", outcome_table(report)))


SEARCHES = [  # (the search, the item indices it finds; tests/synthetic.py and hostile_db above)
    ("gen answer 4", [4]),       # the general model's output
    ("GEN ANSWER 4", [4]),       # any case
    ("answer 3", [3]),           # both outputs of item 3 hold it
    ("prompt for item5", [5]),   # the item's input (its prompt)
    ("item0", [0]),              # the item id
    ("no such text anywhere", []),
]


@pytest.mark.parametrize("query,expected", SEARCHES)
def test_the_search_box_filters_items_by_any_text_in_chromium(tmp_path: Path, query: str, expected: list[int]
                                                             ) -> None:
    from urllib.parse import quote

    browser_or_skip()
    db = hostile_db(tmp_path / "r.db", HOSTILE[0])
    out = tmp_path / "r.html"
    invoke("report", "--db", str(db), "-o", str(out), "--resamples", "200")
    assert 'id="mb-search"' in out.read_text(encoding="utf-8")
    found = _dom(out, tmp_path / "profile", f"items?q={quote(query)}&sort=order")
    assert _shown(found) == expected
    counts = [a for t, a in found.tags if a.get("id") == "mb-count"]
    assert counts[0]["data-matching"] == str(len(expected))
    # the search combines with the other filters: "answer" (items 0, 1, 3, 4, 5) where the general model was
    # wrong (items 0 and 2)
    both = _dom(out, tmp_path / "profile", "items?q=answer&outcome=wrong&side=1&sort=order")
    assert _shown(both) == [0]
