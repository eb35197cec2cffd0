"""One self-contained HTML report: run metadata, paired statistics, plots (embedded PNG), disagreements.

Why self-contained: reports travel by e-mail or USB stick inside hospitals and are opened on machines without
network access; no scripts, fonts or stylesheets are fetched, every image is a data URI.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from html import escape
from typing import Any

import sqlite_utils

from .. import __version__
from ..analysis.paired import INTERVAL_NOTE, PAIRING_NOTE, TRUNCATION_NOTE, PairReport
from ..fileio import safe_component

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#212121}
h1{font-size:1.6rem}h2{margin-top:2.2rem;border-bottom:1px solid #ddd}table{border-collapse:collapse;margin:.6rem 0}
td,th{border:1px solid #ddd;padding:.25rem .5rem;font-size:.85rem;vertical-align:top}th{background:#f5f5f5}
td.num{text-align:right}.ahead-biomedical{color:#2e7d32;font-weight:600}.ahead-general{color:#c62828;font-weight:600}
code,pre{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.8rem}pre{white-space:pre-wrap;background:#fafafa;
padding:.5rem;border:1px solid #eee;max-height:18rem;overflow:auto}img{max-width:100%}.muted{color:#757575}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:.8rem}
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


def plot_file_name(pair: str, kind: str) -> str:
    """A plot's file name (also its key in ReportInput.plots). Pair names come from the database, so they are
    made safe for a path (fileio.safe_component) before they name a file."""
    return f"{safe_component(pair)}-{kind}.png"


def gather_metadata(db: sqlite_utils.Database) -> tuple[list[dict[str, Any]], list[dict[str, Any]],
                                                         list[dict[str, Any]]]:
    runs = list(db.query("select id, started_at, finished_at, status, medbench_version, llama_cpp_version, "
                         "gpu_offload_supported, git_revision, command, settings, packages from runs "
                         "order by started_at"))
    models = list(db.query("select m.sha256, m.file_name, m.size_bytes, m.quantization, m.architecture, "
                           "m.chat_template_sha256, group_concat(distinct e.model_id) as model_ids from models m "
                           "left join evaluations e on e.model_sha256 = m.sha256 group by m.sha256"))
    evaluations = list(db.query("select model_id, task, settings, created_at from evaluations "
                                "order by model_id, task, created_at"))
    return runs, models, evaluations


def _img(data: bytes, alt: str) -> str:
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def _table(headers: list[str], rows: list[list[str]], numeric: set[int] | None = None) -> str:
    numeric = numeric or set()
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>"
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _pair_section(report: PairReport, data: ReportInput) -> str:
    parts = [f"<h2>{escape(report.pair)}: {escape(report.biomedical_model)} (biomedical) vs "
             f"{escape(report.general_model)} (general)</h2>"]
    rows = []
    for r in report.rows:
        ahead = f' class="ahead-{r.ahead}"' if r.ahead else ""
        data_cell = "—" if r.data is None else escape(r.data.short) + (
            f' <b class="ahead-general">≠ {escape(r.general_data.short)} (different data)</b>'
            if r.general_data else "")
        rows.append([escape(r.task), data_cell, escape(r.metric), str(r.n),
                     f"{_pct(r.biomedical.estimate)} [{_pct(r.biomedical.low)}, {_pct(r.biomedical.high)}]",
                     f"{_pct(r.general.estimate)} [{_pct(r.general.low)}, {_pct(r.general.high)}]",
                     f"<span{ahead}>{100 * r.delta.estimate:+.1f} [{100 * r.delta.low:+.1f}, "
                     f"{100 * r.delta.high:+.1f}]</span>", escape(r.test), f"{r.p_value:.4f}",
                     f"{r.p_adjusted:.4f}", f"{r.discordant[0]} / {r.discordant[1]}" if r.discordant else "—",
                     " / ".join(f"{100 * r.truncated_rate.get(k, 0.0):.0f}%" for k in ("biomedical", "general"))])
    parts.append(_table(["task", "data", "metric", "n", "biomedical [95% CI]", "general [95% CI]",
                         "Δ bio−gen [95% CI]", "test", "p", "p (Holm)", "discordant bio>gen / gen>bio",
                         "truncated bio / gen"], rows, numeric={3, 4, 5, 6, 8, 9, 11}))
    notes = [note.text for note in report.notes]
    notes += [f"{r.group_label}: newest matching pair shown; superseded: "
              + "; ".join(f"{b[:12]}/{g[:12]}" for b, g in r.superseded)
              for r in {r.group_label: r for r in report.rows if r.superseded}.values()]
    if notes:
        parts.append("<ul class='muted'>" + "".join(f"<li>{escape(n)}</li>" for n in notes) + "</ul>")
    for kind, caption in (("forest", "Paired differences"), ("scores", "Scores"), ("outcomes", "Outcomes")):
        png = data.plots.get(plot_file_name(report.pair, kind))
        if png:
            parts.append(f"<h3>{caption}</h3>{_img(png, f'{report.pair} {caption}')}")
    for (pair, task), examples in data.examples.items():
        if pair != report.pair or not examples:
            continue
        parts.append(f"<h3>Disagreements on {escape(task)} (first {len(examples)})</h3>")
        for bio, gen in examples:
            parts.append(f"<p><b>item {escape(str(bio['item_id']))}</b></p><div class='grid'>"
                         + "".join(f"<div><b>{label}</b>: {escape(str(row['outcome']))}"
                                   f"{' · answer ' + escape(str(row['extracted'])) if row['extracted'] else ''}"
                                   f"{' (gold ' + escape(str(row['gold'])) + ')' if row['gold'] else ''}"
                                   f"<pre>{escape(row['output'] or '(no output)')}</pre></div>"
                                   for label, row in (("biomedical", bio), ("general", gen)))
                         + "</div>")
    return "\n".join(parts)


def render(data: ReportInput) -> str:
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    runs = [[escape(str(r["started_at"])), escape(str(r["status"])), escape(str(r["medbench_version"])),
             escape(str(r["llama_cpp_version"])), "yes" if r["gpu_offload_supported"] else "no",
             escape(str(r["git_revision"] or "—")), f"<code>{escape(' '.join(json.loads(r['command'] or '[]')))}</code>"]
            for r in data.runs]
    models = [[escape(str(m["model_ids"] or "—")), escape(str(m["file_name"])), f"<code>{escape(m['sha256'])}</code>",
               escape(str(m["quantization"])), escape(str(m["architecture"])), f"{(m['size_bytes'] or 0) / 1e6:,.0f} MB",
               f"<code>{escape((m['chat_template_sha256'] or '—')[:16])}</code>"] for m in data.models]
    settings = []
    for e in data.evaluations:
        s = json.loads(e["settings"] or "{}")
        engine, task = s.get("engine", {}), s.get("task", {})
        settings.append([escape(e["model_id"]), escape(e["task"]), escape(json.dumps(
            {k: engine.get(k) for k in ("n_ctx", "n_batch", "n_gpu_layers", "seed", "temperature", "prompt_mode")})),
            escape(json.dumps({k: v for k, v in task.items() if k != "task"}))])
    body = [f"<h1>medbench-local report</h1><p class='muted'>{escape(data.db_path)} · generated {generated} by "
            f"medbench-local {__version__}. Scores ×100. {escape(INTERVAL_NOTE)} {escape(PAIRING_NOTE)} "
            f"{escape(TRUNCATION_NOTE)}</p>"]
    body += [_pair_section(report, data) for report in data.reports if report.rows]
    body += ["<h2>Models</h2>", _table(["model id(s)", "file", "SHA-256", "quant", "arch", "size", "chat template"],
                                        models),
             "<h2>Settings per evaluation</h2>", _table(["model", "task", "engine", "task settings"], settings),
             "<h2>Runs</h2>", _table(["started", "status", "medbench-local", "llama-cpp-python", "GPU offload",
                                      "git revision", "command"], runs)]
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>medbench-local report</title>"
            f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>")
