"""One self-contained HTML report: paired statistics, outcomes, plots (embedded PNG), disagreements, an item
browser, and the models, data files, settings and runs behind them.

Why self-contained: reports travel by e-mail or USB stick inside hospitals and are opened on machines without
network access; nothing is fetched, every image is a data URI, the item browser's script and data are inline.
A Content-Security-Policy allows no network at all and only the browser's own script (by its SHA-256): even a
model output that slipped past escaping could not run a script.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from html import escape
from typing import Any

import sqlite_utils

from ..analysis.disagreements import disagreements_between
from ..analysis.paired import INTERVAL_NOTE, PAIRING_NOTE, TRUNCATION_NOTE, PairReport, summary_line
from ..gates.files import safe_component
from ..store.queries import report_metadata
from ..version import __version__
from . import browser, sections

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;
padding:0 1rem;color:#212121}
h1{font-size:1.6rem}h2{margin-top:2.2rem;border-bottom:1px solid #ddd}table{border-collapse:collapse;margin:.6rem 0}
td,th{border:1px solid #ddd;padding:.25rem .5rem;font-size:.85rem;vertical-align:top}th{background:#f5f5f5}
td.num{text-align:right}.ahead-biomedical{color:#2e7d32;font-weight:600}.ahead-general{color:#c62828;font-weight:600}
code,pre{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.8rem}pre{white-space:pre-wrap;background:#fafafa;
padding:.5rem;border:1px solid #eee;max-height:18rem;overflow:auto}img{max-width:100%}.muted{color:#757575}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:.8rem}figcaption{font-size:.8rem;margin:.2rem 0 1rem}
dl.settings{display:grid;grid-template-columns:max-content 1fr;gap:.15rem .8rem;font-size:.85rem}dd{margin:0}
.example{border-left:3px solid #ddd;padding-left:.6rem;margin:1rem 0}details>summary{cursor:pointer;color:#1565c0}
.controls{display:flex;flex-wrap:wrap;gap:.4rem 1rem;margin:.5rem 0;font-size:.85rem}
#mb-table tr.item-row{cursor:pointer}#mb-table tr.item-row:hover{background:#f5f9ff}.errors{color:#c62828}
.item-detail pre{max-height:24rem}
.scroll{max-width:100%;overflow-x:auto}.scroll>table{margin:.3rem 0}.nw{white-space:nowrap}
table.stats td,table.stats th,table.outcomes td,table.outcomes th{font-size:.8rem;padding:.2rem .35rem}
ul.summary{background:#f5f9ff;border:1px solid #d6e4f5;padding:.6rem 1rem .6rem 2rem;font-size:.95rem}
ul.summary li{margin:.2rem 0}.verdict-line{font-weight:600}
#mb-search{min-width:16rem}td code{overflow-wrap:anywhere}
"""


@dataclass
class ReportInput:
    db_path: str
    reports: list[PairReport]
    runs: list[dict[str, Any]]
    models: list[dict[str, Any]]
    evaluations: list[dict[str, Any]]
    plots: dict[str, bytes] = field(default_factory=dict)          # name -> PNG
    examples: dict[tuple[str, str], list[tuple[dict[str, Any], dict[str, Any]]]] = field(default_factory=dict)
    items: list[browser.GroupRows] = field(default_factory=list)  # the item browser's rows (empty: no browser)
    # pair -> one line per task with a stored contamination probe (made by the command: docs/contamination.md)
    contamination: dict[str, list[str]] = field(default_factory=dict)


def plot_file_name(pair: str, kind: str) -> str:
    """A plot's file name (also its key in ReportInput.plots). Pair names come from the database, so they are
    made safe for a path (gates/files.py safe_component) before they name a file."""
    return f"{safe_component(pair)}-{kind}.png"


def gather_metadata(db: sqlite_utils.Database) -> tuple[list[dict[str, Any]], list[dict[str, Any]],
                                                         list[dict[str, Any]]]:
    return report_metadata(db)


def gather(db: sqlite_utils.Database, db_path: str, reports: list[PairReport], *, examples: int = 3,
           with_items: bool = True) -> ReportInput:
    """Everything the report shows, read while the database is open: per pair with results its three plots and
    up to ``examples`` disagreements per task and data (analysis/disagreements.py, the items ``show`` lists),
    the item browser's rows (``with_items``), and the models, data and runs behind them."""
    from . import plots  # matplotlib is imported only when a report is made

    runs, models, evaluations = gather_metadata(db)
    data = ReportInput(db_path, reports, runs, models, evaluations)
    for report in reports:
        if not report.rows:
            continue
        data.plots[plot_file_name(report.pair, "forest")] = plots.forest_plot(report)
        data.plots[plot_file_name(report.pair, "scores")] = plots.score_chart(report)
        data.plots[plot_file_name(report.pair, "outcomes")] = plots.outcome_chart(report)
        for group in {r.group_label: r for r in report.rows}.values():  # one per (task, data)
            found = disagreements_between(db, group.evaluations["biomedical"],
                                          group.evaluations["general"])[:examples] if examples else []
            data.examples[(report.pair, group.group_label)] = [(b, g) for _, b, g in found]
    data.items = browser.gather(db, reports) if with_items else []
    return data


def _pair_section(report: PairReport, data: ReportInput, index: int) -> str:
    parts = [f"<h2 id='pair-{index}'>{escape(report.pair)}: {escape(report.biomedical_model)} (biomedical) vs "
             f"{escape(report.general_model)} (general)</h2>",
             f"<p class='verdict-line'>{escape(summary_line(report, names=False))}</p>", sections.stats_table(report),
             sections.notes_block(report), "<h3>Outcomes per task and model</h3>",
             f"<p class='muted'>{escape(sections.OUTCOME_CAPTION)}</p>", sections.outcome_table(report),
             sections.plots_block(report, data.plots, plot_file_name)]
    if data.contamination.get(report.pair):
        parts.append("<h3>Contamination probe</h3><ul>" + "".join(
            f"<li>{escape(line)}</li>" for line in data.contamination[report.pair]) + "</ul>")
    for (pair, task), examples in data.examples.items():
        if pair == report.pair and examples:
            parts.append(sections.examples_block(task, examples, (report.biomedical_model, report.general_model)))
    return "\n".join(parts)


def content_security_policy(script: str) -> str:
    """No network of any kind; images only as data URIs; inline styles; only ``script`` (by its hash) runs, or
    no script at all when there is none (``report --no-items``)."""
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode()
    scripts = f"'sha256-{digest}'" if script else "'none'"
    return (f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src {scripts}; "
            "base-uri 'none'; form-action 'none'")


def render(data: ReportInput) -> str:
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = [f"<h1>medbench-local report</h1>{sections.summary_block(data.reports)}"
            f"<p class='muted'>{escape(data.db_path)} · generated {generated} by medbench-local {__version__}. "
            f"Scores ×100. {escape(INTERVAL_NOTE)} {escape(PAIRING_NOTE)} {escape(TRUNCATION_NOTE)}</p>"]
    body += [_pair_section(report, data, index) for index, report in enumerate(data.reports) if report.rows]
    script = ""
    if data.items:
        browser_html, script = browser.section(data.items)
        body += ["<h2 id='items'>Items</h2>", browser_html]
    body += ["<h2>Models</h2>", sections.models_table(data.models),
             "<h2>Data files</h2>", sections.data_table(data.evaluations),
             "<h2>Settings</h2>", sections.settings_block(data.evaluations, data.models),
             "<h2>Runs</h2>", sections.runs_table(data.runs)]
    csp = escape(content_security_policy(script), quote=False)  # no quote of either kind in it but the CSP's own
    tail = f"<script>{script}</script>" if script else ""
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
            f"<title>medbench-local report</title><style>{STYLE}</style></head><body>{''.join(body)}{tail}"
            "</body></html>")
