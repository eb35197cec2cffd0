"""The HTML report: self-contained, plots embedded, and really rendered by a headless browser."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from .conftest import invoke

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
    assert "<script" not in html and not re.search(r"(src|href)=['\"]?https?://", html)
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) == 3  # forest plot, scores, outcomes of the demo pair
    for text in ("smollm2-135m-instruct", "gemma3-270m", "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
                 "Q4_1", "mcnemar-exact", "Disagreements on", "llama-cpp-python"):
        assert text in html
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
