"""The HTML report: self-contained, plots embedded, and really rendered by a headless browser."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from .chromium import dump_dom
from .conftest import invoke
from .test_report_browser import Page

pytestmark = pytest.mark.e2e

BROWSER_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def report(demo_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report") / "report.html"
    invoke("report", "--db", str(demo_db), "-o", str(out), "--resamples", "500")
    return out


def test_report_is_self_contained(report: Path) -> None:
    html = report.read_text(encoding="utf-8")
    assert not re.search(r"<script[^>]*\ssrc=", html) and not re.search(r"(src|href)=['\"]?https?://", html)
    assert re.findall(r"<script[^>]*>", html) == ['<script type="application/json" id="mb-items">', "<script>"]
    assert "default-src 'none'" in html  # the page's Content-Security-Policy: no network at all
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) == 3  # forest plot, scores, outcomes of the demo pair
    for text in ("smollm2-135m-instruct", "gemma3-270m", "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
                 "Q4_1", "exact McNemar", "Disagreements on", "llama-cpp-python", "Outcomes per task and model",
                 "Holm-adjusted p &lt; 0.05", "← gemma3-270m (general) better", "smollm2-135m-instruct (biomedical) better →"):
        assert text in html, text
    # data file names next to their hashes, settings as labelled values (the JSON only folded)
    for task, sha in (("nejm", "e86b5d1c8094029c85302ef93aeaa74d671c28242142c21da8a8ad730efe80b8"),
                      ("jama", "02a6c95e89f36b6267c149b8e000a386abed264e07ccafa000e44d1c05e9a934")):
        assert re.search(rf"<td>{task}</td><td>{task}</td><td><code>{sha}</code></td>", html), task
    shared = re.search(r"<dl class='settings'>(.*?)</dl>", html, re.S)
    assert shared and "<dt>n_ctx</dt><dd><code>2048</code></dd>" in shared.group(1)
    assert "<dt>n_gpu_layers</dt>" in shared.group(1) and "<dt>extraction</dt>" in shared.group(1)
    outside_details = re.sub(r"<details>.*?</details>", "", html, flags=re.S)
    assert '"n_ctx"' not in outside_details  # no JSON blob outside the folded full settings
    plots = sorted(p.name for p in report.with_name("report_plots").iterdir())
    assert plots == ["demo-forest.png", "demo-outcomes.png", "demo-scores.png"]
    assert all((report.with_name("report_plots") / p).read_bytes().startswith(b"\x89PNG") for p in plots)
    assert (report.stat().st_mode & 0o777) == 0o600


def test_report_renders_in_a_headless_browser(report: Path, tmp_path: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("no headless Chromium installed (Debian package 'chromium')")
    shot = tmp_path / "shot.png"
    subprocess.run([browser, *BROWSER_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,2600",
                    f"--screenshot={shot}", report.as_uri()], capture_output=True, timeout=120, check=False)
    assert shot.exists(), "the browser produced no screenshot"
    import matplotlib.image

    pixels = (matplotlib.image.imread(shot)[..., :3] * 255).round().astype(int)
    # the score chart's bar colours (#1565c0 and #f9a825) are only there if the embedded plots rendered
    for colour in ((0x15, 0x65, 0xC0), (0xF9, 0xA8, 0x25)):
        assert (np.abs(pixels - np.array(colour)).sum(axis=-1) < 12).sum() > 500


def test_the_demo_report_opens_in_chromium_with_a_working_browser(report: Path, tmp_path: Path, demo_db: Path) -> None:
    import sqlite3

    with sqlite3.connect(demo_db) as conn:
        wrong = {item for (item,) in conn.execute(
            "select i.item_id from scores s join items i on i.key = s.item join evaluations e on "
            "e.key = s.evaluation where e.model_id = 'gemma3-270m' and s.outcome = 'wrong'")}
        total = conn.execute("select count(distinct item) from scores").fetchone()[0]
    dom = Page(dump_dom(report, tmp_path / "profile", "items?outcome=wrong&side=1&sort=order"))
    body = dom.all("body")[0]
    assert body.get("data-browser-ready") is not None and not dom.text.get("mb-errors", "").strip()
    count = next(a for t, a in dom.tags if a.get("id") == "mb-count")
    assert count["data-matching"] == str(len(wrong)) and f"of {total} items" in dom.text["mb-count"]
