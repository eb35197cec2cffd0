"""The HTML report's static sections: per pair statistics, outcome table, plots, disagreement examples; then
models, data files, settings and runs, written for a paper's reader rather than as JSON.

Every value from the database goes through ``html.escape`` here; nothing in this module emits a script.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable
from html import escape
from pathlib import PurePath
from typing import Any

from ..analysis.paired import SIGNIFICANCE, MetricComparison, PairReport, summary_line
from ..analysis.stats import format_p
from ..gates.stored import load_array, load_metrics, load_object
from ..tasks.base import OUTCOMES
from ..tasks.loglik_scoring import scoring_mode

# Outcomes the outcome table always shows (a zero is information); others only when they occur.
TABLE_OUTCOMES = ("correct", "wrong", "unparseable", "conflict", "truncated", "error")
# Outputs and inputs longer than this (characters or lines) are folded in a <details> element.
FOLD_CHARS, FOLD_LINES = 600, 12
# Payload fields that hold the item's input text, in the order a reader reads them.
INPUT_FIELDS = ("case", "context", "text", "sentence1", "sentence2", "question")
# Payload fields that hold the answer: shown once as "gold", never as part of the input.
ANSWER_FIELDS = ("answer", "gold", "gold_label", "summary", "codes", "answer_docs")


def img(data: bytes, alt: str) -> str:
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def table(headers: list[str], rows: list[list[str]], numeric: set[int] | None = None, cls: str = "") -> str:
    """An HTML table in its own horizontally scrolling box (a wide table never widens the page); ``headers``
    are escaped here, cells must already be HTML."""
    numeric = numeric or set()
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>"
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    attribute = f' class="{cls}"' if cls else ""
    return f"<div class='scroll'><table{attribute}><tr>{head}</tr>{body}</table></div>"


def breakable(text: str) -> str:
    """``text`` escaped, with a line-break opportunity after each "_", "-", "." and "/": a long file name or
    model id wraps inside a narrow column at those places instead of widening the table."""
    return re.sub(r"([_\-./])", r"\1<wbr>", escape(text))


def group_cell(row: MetricComparison) -> str:
    """The row group of a row: its task, and under it the data (name and short hash), breakable."""
    if row.data is None:
        return f"<b>{breakable(row.task)}</b>"
    cell = f"<b>{breakable(row.task)}</b><br><span class='muted'>{breakable(row.data.short)}</span>"
    if row.general_data is not None:
        cell += f"<br><b class='ahead-general'>≠ {breakable(row.general_data.short)} (different data)</b>"
    return cell


def nowrap(text: str) -> str:
    """HTML that a narrow column wraps only around, never inside (a number with its interval, a p-value)."""
    return f"<span class='nw'>{text}</span>"


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def folded_text(text: str, what: str) -> str:
    """``text`` in a <pre>, folded in a <details> (summary says how long) when it is long."""
    body = f"<pre>{escape(text)}</pre>"
    lines = text.count("\n") + 1
    if len(text) <= FOLD_CHARS and lines <= FOLD_LINES:
        return body
    return (f"<details><summary>{escape(what)}: {len(text):,} characters, {lines:,} lines (click to open)"
            f"</summary>{body}</details>")


def input_text(payload: Any) -> str | None:
    """The item's input as a reader reads it (case, question, options), or None when it was not stored."""
    if isinstance(payload, dict) and payload.get("not_stored"):
        return None
    if not isinstance(payload, dict):
        return json.dumps(payload, ensure_ascii=False)
    parts = [str(payload[k]) for k in INPUT_FIELDS if payload.get(k)]
    options = payload.get("options")
    if isinstance(options, dict):
        parts.append("\n".join(f"{k}. {v}" for k, v in options.items()))
    if parts:
        return "\n\n".join(parts)
    rest = {k: v for k, v in payload.items() if k not in ANSWER_FIELDS}
    return json.dumps(rest, ensure_ascii=False, indent=1)


# ---------------------------------------------------------------------------------------------- per pair

# The tests as the statistics table names them (compare --json keeps the ids).
TEST_NAMES = {"mcnemar-exact": "exact McNemar", "paired-permutation": "permutation"}


def _interval_html(interval: Any) -> str:
    return f"{pct(interval.estimate)}<br>{nowrap(f'[{pct(interval.low)}, {pct(interval.high)}]')}"


def stats_table(report: PairReport) -> str:
    """Per row: task and data, metric, n, both scores and Δ with their 95% CIs, the verdict in words with the
    Holm-adjusted p and under it the test with its unadjusted p, discordant counts and truncation. Cells wrap between
    values, never inside one; the table scrolls in its own box when the page is narrower still."""
    rows = []
    for r in report.rows:
        ahead = f' class="ahead-{r.ahead}"' if r.ahead else ""
        missing = sum(r.missing.values())
        delta = (f"<span{ahead}>{100 * r.delta.estimate:+.1f}<br>"
                 f"{nowrap(f'[{100 * r.delta.low:+.1f}, {100 * r.delta.high:+.1f}]')}</span>")
        verdict = (f"<span{ahead}>{escape(r.verdict)}</span> {nowrap(f'(Holm p {escape(format_p(r.p_adjusted))})')}"
                   f"<br><span class='muted'>{escape(TEST_NAMES.get(r.test, r.test))}, "
                   f"{nowrap(f'p {escape(format_p(r.p_value))}')}</span>")
        rows.append([group_cell(r), breakable(r.metric),
                     f"{r.n:,}" + (f"<br><span class='muted'>{missing:,} unpaired</span>" if missing else ""),
                     _interval_html(r.biomedical), _interval_html(r.general), delta, verdict,
                     f"{r.discordant[0]} / {r.discordant[1]}" if r.discordant else "—",
                     " / ".join(f"{100 * r.truncated_rate.get(k, 0.0):.0f}%" for k in ("biomedical", "general"))])
    return table(["task · data", "metric", "n", "biomedical [95% CI]", "general [95% CI]", "Δ bio−gen [95% CI]",
                  "verdict (Holm-adjusted p); test (unadjusted p)", "discordant bio>gen / gen>bio",
                  "truncated bio / gen"], rows, numeric={2, 3, 4, 5, 7, 8}, cls="stats")


def summary_block(reports: list[PairReport]) -> str:
    """One line per pair at the top of the report: which model is ahead on which rows, how many rows are
    significant; each links to its pair's section."""
    lines = [f"<li><a href='#pair-{index}'>{escape(report.pair)}</a>: "
             f"{escape(summary_line(report)[len(report.pair) + 2:])}</li>"
             for index, report in enumerate(reports) if report.rows]
    return f"<ul class='summary' id='summary'>{''.join(lines)}</ul>" if lines else ""


def _groups(report: PairReport) -> list[MetricComparison]:
    """The first row of each (task, data, mode) row group, in table order."""
    return list({r.group_label: r for r in reversed(report.rows)}.values())[::-1]


def outcome_table(report: PairReport) -> str:
    """Outcome counts of the n compared items per row group and model (they add up to n), and the items only
    that model answered (unpaired: not compared), so that every count adds up."""
    groups = _groups(report)
    extra = [o for o in OUTCOMES if o not in TABLE_OUTCOMES
             and any(g.paired_outcomes.get(role, {}).get(o) for g in groups for role in ("biomedical", "general"))]
    columns = list(TABLE_OUTCOMES) + extra
    rows = []
    for group in groups:
        for role, other, model in (("biomedical", "general", report.biomedical_model),
                                   ("general", "biomedical", report.general_model)):
            counts = group.paired_outcomes.get(role, {})
            rows.append([group_cell(group), f"<span title='{escape(model)}'>{role}</span>"]
                        + [f"{counts.get(o, 0):,}" for o in columns] + [f"{sum(counts.values()):,}",
                                                                         f"{group.missing.get(other, 0):,}"])
    return table(["task · data", "model"] + columns + ["n (sum)", "unpaired"], rows,
                 numeric=set(range(2, len(columns) + 4)), cls="outcomes")


OUTCOME_CAPTION = ("Counts of the n items both models answered (each row adds up to n, the n of the statistics "
                   "table's first metric of the row group); unpaired: items only that model answered, which are "
                   "not compared.")


FOREST_CAPTION = ("Δ = biomedical − general per task, data and metric, with its 95% CI and n (items both models "
                  f"answered). Green: biomedical ahead, red: general ahead, grey: not significant. A row is "
                  f"coloured when its Holm-adjusted p < {SIGNIFICANCE:g} (the rule <code>compare</code> uses), "
                  "not by whether the interval excludes 0; the two agree except at the margin (see the notes "
                  "above).")


def plots_block(report: PairReport, plots: dict[str, bytes], file_name: Any) -> str:
    parts = []
    captions = {"forest": ("Paired differences", FOREST_CAPTION),
                "scores": ("Scores", "Each model's score ×100 with its 95% CI."),
                "outcomes": ("Outcomes", "Items per outcome, per task and model (the table above in bars; "
                                         "light grey: unpaired items, not compared).")}
    for kind, (title, caption) in captions.items():
        png = plots.get(file_name(report.pair, kind))
        if png:
            if kind == "forest":
                caption = (f"<b class='ahead-general'>← {escape(report.general_model)} (general) better</b> | "
                           f"<b class='ahead-biomedical'>{escape(report.biomedical_model)} (biomedical) better →"
                           f"</b>. {caption}")
            parts.append(f"<figure><h3>{title}</h3>{img(png, f'{report.pair} {title}')}"
                         f"<figcaption class='muted'>{caption}</figcaption></figure>")
    return "".join(parts)


def _side_html(row: dict[str, Any], label: str) -> str:
    metrics = load_metrics(row.get("metrics"), row.get("generation_id"))
    facts = [f"outcome <b>{escape(str(row['outcome']))}</b>",
             f"answer {escape(str(row['extracted'])) if row.get('extracted') is not None else '—'}"]
    facts += [f"{escape(str(k))} {pct(float(v))}" for k, v in metrics.items() if isinstance(v, (int, float))]
    output = row["output"] if row.get("output") is not None else "(no output: generation failed)"
    return f"<div><b>{escape(label)}</b><p>{' · '.join(facts)}</p>{folded_text(output, 'output')}</div>"


def examples_block(task: str, examples: list[tuple[dict[str, Any], dict[str, Any]]],
                   models: tuple[str, str]) -> str:
    """Disagreements: the input once (unless not stored), the gold answer once, then each model's outcome,
    answer, per-item metrics and output, long texts folded."""
    parts = [f"<h3>Disagreements on {escape(task)} (first {len(examples)})</h3>"]
    for bio, gen in examples:
        payload = load_object(bio.get("payload"), "items", "payload", bio.get("item"))
        text = input_text(payload)
        gold = bio.get("gold") if bio.get("gold") is not None else gen.get("gold")
        parts.append(f"<div class='example'><p><b>item {escape(str(bio['item_id']))}</b> · gold "
                     f"<b>{escape(str(gold)) if gold is not None else '—'}</b></p>")
        parts.append("<p class='muted'>Inputs were not stored for this run (--no-store-inputs).</p>" if text is None
                     else folded_text(text, "input"))
        parts.append("<div class='grid'>" + _side_html(bio, f"{models[0]} (biomedical)")
                     + _side_html(gen, f"{models[1]} (general)") + "</div></div>")
    return "".join(parts)


def notes_block(report: PairReport) -> str:
    notes = [note.text for note in report.notes]
    notes += [f"{r.group_label}: newest matching pair shown; superseded: "
              + "; ".join(f"{b[:12]}/{g[:12]}" for b, g in r.superseded)
              for r in {r.group_label: r for r in report.rows if r.superseded}.values()]
    return ("<ul class='muted'>" + "".join(f"<li>{escape(n)}</li>" for n in notes) + "</ul>") if notes else ""


# ---------------------------------------------------------------------------------------------- metadata

def models_table(models: list[dict[str, Any]]) -> str:
    """Every model file: the short facts first, the 64-character SHA-256 last (it scrolls in the table's box on a
    narrow page rather than squeezing the names)."""
    rows = [[breakable(str(m["model_ids"] or "—")), breakable(str(m["file_name"])), escape(str(m["quantization"])),
             escape(str(m["architecture"])), f"{(m['size_bytes'] or 0) / 2**20:,.0f} MiB",
             f"<code>{escape((m['chat_template_sha256'] or '—')[:16])}</code>", f"<code>{escape(m['sha256'])}</code>"]
            for m in models]
    return table(["model id(s)", "file", "quantization", "architecture", "size", "chat template", "SHA-256"], rows)


def _settings(evaluation: dict[str, Any]) -> dict[str, Any]:
    return load_object(evaluation.get("settings"), "evaluations", "settings", evaluation.get("key"))


def _part(settings: dict[str, Any], key: str) -> dict[str, Any]:
    value = settings.get(key)
    return value if isinstance(value, dict) else {}


def data_table(evaluations: list[dict[str, Any]]) -> str:
    """Each data file (by content) with its name, SHA-256 and the evaluations that ran on it."""
    found: dict[tuple[str, str, str], list[str]] = {}
    for e in evaluations:
        settings = _settings(e)
        task, data = _part(settings, "task"), _part(settings, "data")
        name = str(data.get("name") or (PurePath(str(data["path"])).name if data.get("path") else "—"))
        key = (str(e["task"]), name, str(task.get("data_sha256") or "—"))
        found.setdefault(key, [])
        if e["model_id"] not in found[key]:
            found[key].append(e["model_id"])
    rows = [[escape(task), escape(name), f"<code>{escape(sha)}</code>", escape(", ".join(models))]
            for (task, name, sha), models in sorted(found.items())]
    return table(["task", "data file", "SHA-256 (content)", "models run on it"], rows)


def readable_settings(evaluation: dict[str, Any], models: dict[str, dict[str, Any]]) -> dict[str, str]:
    """The settings that decide a result, label -> value, for one evaluation (missing ones are left out)."""
    settings = _settings(evaluation)
    engine, task, identity = _part(settings, "engine"), _part(settings, "task"), _part(settings, "identity")
    model = models.get(str(evaluation.get("model_sha256") or identity.get("model_sha256")), {})
    values: dict[str, Any] = {
        "model file SHA-256": evaluation.get("model_sha256") or identity.get("model_sha256"),
        "quantization": model.get("quantization"),
        "scoring mode": scoring_mode(task),
        "prompt SHA-256": task.get("prompt_sha256"),
        "prompt mode": engine.get("prompt_mode"),
        "extraction": task.get("extraction"),
        "max tokens": task.get("max_tokens"),
        "few-shot examples SHA-256": task.get("shots_sha256"),
        "n_ctx": engine.get("n_ctx"),
        "n_gpu_layers": engine.get("n_gpu_layers"),
        "n_batch": engine.get("n_batch"),
        "seed": engine.get("seed"),
        "sampler": engine.get("sampler"),
        "temperature": engine.get("temperature"),
        "llama-cpp-python": identity.get("llama_cpp_python"),
        "chat template SHA-256": identity.get("chat_template_sha256"),
    }
    return {label: str(value) for label, value in values.items() if value is not None and value != ""}


def settings_block(evaluations: list[dict[str, Any]], models: list[dict[str, Any]]) -> str:
    """Settings shared by every evaluation as one definition list; those that differ as a table; the full
    stored JSON of each evaluation folded below."""
    by_sha = {str(m["sha256"]): m for m in models}
    readable = [readable_settings(e, by_sha) for e in evaluations]
    labels = list(dict.fromkeys(label for r in readable for label in r))
    shared = [label for label in labels if len({r.get(label) for r in readable}) == 1 and readable]
    differing = [label for label in labels if label not in shared]
    parts = []
    if shared:
        parts.append("<h3>Shared by all evaluations</h3><dl class='settings'>" + "".join(
            f"<dt>{escape(label)}</dt><dd><code>{escape(readable[0][label])}</code></dd>" for label in shared)
            + "</dl>")
    if differing:
        rows = [[escape(str(e["model_id"])), escape(str(e["task"]))]
                + [f"<code>{escape(_short(r.get(label, '—')))}</code>" for label in differing]
                for e, r in zip(evaluations, readable)]
        parts.append("<h3>Per evaluation</h3>" + table(["model", "task"] + differing, rows))
    parts.append("<details><summary>Full stored settings (JSON) of every evaluation</summary>" + "".join(
        f"<p><b>{escape(str(e['model_id']))} · {escape(str(e['task']))}</b> <span class='muted'>"
        f"{escape(str(e.get('created_at') or ''))}</span></p>"
        f"<pre>{escape(json.dumps(_settings(e), indent=1, sort_keys=True, ensure_ascii=False))}</pre>"
        for e in evaluations) + "</details>")
    return "".join(parts)


def _short(value: str) -> str:
    """A 64-hex SHA-256 as its first 12 characters (the full value is in the shared list or the JSON)."""
    return value[:12] + "…" if len(value) == 64 and all(c in "0123456789abcdef" for c in value) else value


def runs_table(runs: Iterable[dict[str, Any]]) -> str:
    rows = []
    for r in runs:
        command = " ".join(str(part) for part in load_array(r["command"], "runs", "command", r.get("id")))
        rows.append([escape(str(r["started_at"])), escape(str(r["status"])), escape(str(r["medbench_version"])),
                     escape(str(r["llama_cpp_version"])), "yes" if r["gpu_offload_supported"] else "no",
                     escape(str(r["git_revision"] or "—")), f"<code>{escape(command)}</code>"])
    return table(["started", "status", "medbench-local", "llama-cpp-python", "GPU offload", "git revision",
                  "command"], rows)
