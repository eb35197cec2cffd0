"""The per-item browser inside the HTML report: every paired item, filterable, sortable, openable, offline.

Why inline and hand-written: the report must open on an air-gapped hospital machine from a single file, so the
items travel as one inline JSON block and the browser is a small inline script (no library, no network; the
page's Content-Security-Policy only lets this exact script run, see html.py).

Why this shape: thousands of items must stay light. Items are compact arrays, not objects; outcomes are
indices; a prompt is stored once per item (the general model's prompt as a difference from the biomedical
one, by lines: the two chat templates differ only around the same text), with the part every item of a row group shares
(system prompt, few-shot examples) stored once per group; over-long prompts are shortened in the middle with a
visible marker. The script renders the table a page at a time and builds an item's detail only when it is
opened.

Safety: the script writes every database value with ``textContent`` (never as HTML), and the JSON block has
``<``, ``>`` and ``&`` escaped as ``\\u003c`` etc., so a model output containing ``</script>`` cannot end it.
"""

from __future__ import annotations

import difflib
import json
import os
from dataclasses import dataclass, field
from typing import Any

import sqlite_utils

from ..analysis.paired import PairReport
from ..gates.stored import load_metrics, load_object
from ..store.report_items import evaluation_item_rows
from ..tasks.base import OUTCOMES

# A prompt longer than this is shortened in the middle (head and tail kept) in the report; `show --prompts`
# prints it whole. LongHealth prompts carry whole patient records (100,000+ characters).
MAX_PROMPT_CHARS = 12_000
# Table rows rendered at once; "show more" adds as many again.
PAGE_ROWS = 200


@dataclass
class GroupRows:
    """One row group of ``compare`` (pair × task × data × scoring mode) with both evaluations' item rows."""

    pair: str
    label: str
    task: str
    metrics: list[str]
    models: tuple[str, str]                                    # biomedical, general
    biomedical: dict[str, dict[str, Any]] = field(default_factory=dict)
    general: dict[str, dict[str, Any]] = field(default_factory=dict)


def gather(db: sqlite_utils.Database, reports: list[PairReport]) -> list[GroupRows]:
    """The item rows of every row group of every pair report (the evaluations the pairing rule paired)."""
    groups: list[GroupRows] = []
    for report in reports:
        by_group: dict[str, list[str]] = {}
        first = {}
        for row in report.rows:
            by_group.setdefault(row.group_label, []).append(row.metric)
            first.setdefault(row.group_label, row)
        for label, metrics in by_group.items():
            row = first[label]
            groups.append(GroupRows(report.pair, label, row.task, metrics,
                                    (report.biomedical_model, report.general_model),
                                    evaluation_item_rows(db, row.evaluations["biomedical"]),
                                    evaluation_item_rows(db, row.evaluations["general"])))
    return groups


def inputs_stored(row: dict[str, Any] | None) -> bool:
    """False when the item was stored with ``run --no-store-inputs`` (its payload is only a hash)."""
    if row is None:
        return False
    payload = load_object(row.get("payload"), "items", "payload", row.get("item"))
    return not payload.get("not_stored")


def shorten(text: str, limit: int = MAX_PROMPT_CHARS) -> str:
    """``text`` itself, or its head and tail around a marker that says how much was left out."""
    if len(text) <= limit:
        return text
    keep = limit // 2
    return (f"{text[:keep]}\n\n[… {len(text) - 2 * keep:,} characters left out of the report; "
            f"`medbench-local show --prompts` prints the whole prompt …]\n\n{text[-keep:]}")


def lines(text: str) -> list[str]:
    """``text`` split after each "\\n" (only there, as the script does; the pieces join back to ``text``)."""
    parts = text.split("\n")
    return [part + "\n" for part in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def difference(base: str, other: str) -> list[Any]:
    """``other`` as segments over ``base``'s lines: [i, j] stands for base lines i..j-1, a string for itself.

    Why lines: two chat templates wrap the same user text differently at both ends (and between turns), so a
    line diff finds the long shared middle cheaply (a few dozen lines per prompt), where a character diff
    would cost seconds per thousand items."""
    base_lines, other_lines = lines(base), lines(other)
    segments: list[Any] = []
    matcher = difflib.SequenceMatcher(None, base_lines, other_lines, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            segments.append([i1, i2])
        elif j2 > j1:
            segments.append("".join(other_lines[j1:j2]))
    return segments


def restore(base: str, segments: list[Any]) -> str:
    """The inverse of ``difference`` (the script does the same)."""
    base_lines = lines(base)
    return "".join(s if isinstance(s, str) else "".join(base_lines[s[0]:s[1]]) for s in segments)


def _metric(metrics_json: str | None, names: list[str], row: object) -> list[float | None]:
    metrics = load_metrics(metrics_json, row)
    return [round(float(metrics[name]), 6) if name in metrics else None for name in names]


def _side(row: dict[str, Any] | None, metrics: list[str]) -> list[Any] | None:
    if row is None:
        return None
    outcome = OUTCOMES.index(row["outcome"]) if row["outcome"] in OUTCOMES else str(row["outcome"])
    return [outcome, row["extracted"], _metric(row["metrics"], metrics, row.get("generation_id")), row["output"]]


def browser_data(groups: list[GroupRows]) -> dict[str, Any]:
    """The browser's JSON: groups, and per item [group, item id, gold, biomedical side, general side, prompt
    rest after the group prefix (None without stored inputs), general prompt as line segments over the
    biomedical one (``difference``; None when equal)].
    A side is [outcome index, extracted answer, metric values in the group's metric order, output] or None."""
    out_groups: list[dict[str, Any]] = []
    items: list[list[Any]] = []
    for index, group in enumerate(groups):
        keys = list(group.biomedical) + [k for k in group.general if k not in group.biomedical]
        prompts: dict[str, tuple[str, str | None]] = {}
        for key in keys:
            bio, gen = group.biomedical.get(key), group.general.get(key)
            if inputs_stored(bio or gen) and (bio is None or inputs_stored(bio)) and (gen is None or inputs_stored(gen)):
                base = shorten((bio or gen or {}).get("prompt") or "")
                other = shorten(gen["prompt"] or "") if bio is not None and gen is not None else None
                prompts[key] = (base, other)
        prefix = os.path.commonprefix([base for base, _ in prompts.values()]) if len(prompts) > 1 else ""
        out_groups.append({"pair": group.pair, "label": group.label, "task": group.task, "metrics": group.metrics,
                           "models": list(group.models), "prefix": prefix,
                           "inputs": len(prompts) == len(keys)})
        for key in keys:
            bio, gen = group.biomedical.get(key), group.general.get(key)
            first = bio or gen or {}
            rest: str | None = None
            diff: list[Any] | None = None
            if key in prompts:
                base, other = prompts[key]
                rest = base[len(prefix):]
                diff = difference(base, other) if other is not None and other != base else None
            items.append([index, first.get("item_id"), first.get("gold"), _side(bio, group.metrics),
                          _side(gen, group.metrics), rest, diff])
    return {"outcomes": list(OUTCOMES), "groups": out_groups, "items": items, "page": PAGE_ROWS}


def script_json(data: Any) -> str:
    """JSON that is safe inside a <script> element: no ``<``, ``>`` or ``&`` survive (they become \\u escapes,
    which JSON.parse turns back), so no ``</script>`` or ``<!--`` can appear in the block."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return (text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


CONTROLS = """
<div id="mb-browser" class="browser">
<p id="mb-errors" class="errors" hidden></p>
<noscript><p class="muted">The item browser needs JavaScript (it runs offline, inside this file).</p></noscript>
<div class="controls">
<label>search <input type="search" id="mb-search" placeholder="text in input, outputs, gold, item id"></label>
<label>row group <select id="mb-group"><option value="">all</option></select></label>
<label>outcome <select id="mb-outcome"><option value="">any</option></select></label>
<label>of <select id="mb-side"><option value="either">either model</option>
<option value="0">biomedical</option><option value="1">general</option></select></label>
<label><input type="checkbox" id="mb-disagree"> models disagree</label>
<label>sort <select id="mb-sort"><option value="absdelta">|Δ| largest first</option>
<option value="delta">Δ biomedical better first</option><option value="-delta">Δ general better first</option>
<option value="order">data order</option></select></label>
</div>
<p id="mb-count" class="muted"></p>
<table id="mb-table"><thead><tr><th>item</th><th>row group</th><th>biomedical</th><th>general</th>
<th>metric bio / gen</th><th>Δ</th></tr></thead><tbody id="mb-rows"></tbody></table>
<button type="button" id="mb-more" hidden>show more</button>
</div>
"""

# The browser. Every database value reaches the page through textContent (text(), cell()), never innerHTML.
SCRIPT = r"""
(function () {
  "use strict";
  var errors = document.getElementById("mb-errors");
  function fail(message) { errors.hidden = false; errors.textContent += message + "\n"; }
  window.addEventListener("error", function (e) { fail("script error: " + e.message + " (line " + e.lineno + ")"); });
  function $(id) { return document.getElementById(id); }
  function el(tag, cls, content) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (content !== undefined && content !== null) node.textContent = String(content);
    return node;
  }
  function pct(v) { return v === null || v === undefined ? "—" : (100 * v).toFixed(1); }
  function signed(v) { return v === null ? "—" : (v > 0 ? "+" : "") + (100 * v).toFixed(1); }
  try {
    var D = JSON.parse($("mb-items").textContent);
    var O = D.outcomes, G = D.groups, I = D.items, page = D.page;
    var multiplePairs = G.some(function (g) { return g.pair !== G[0].pair; });
    function outcomeName(side) { return side === null ? "—" : (typeof side[0] === "number" ? O[side[0]] : side[0]); }
    function delta(item) {
      var b = item[3], g = item[4];
      if (!b || !g || b[2][0] === null || g[2][0] === null) return null;
      return b[2][0] - g[2][0];
    }
    var deltas = I.map(delta);
    G.forEach(function (g, i) {
      var option = el("option", null, (multiplePairs ? g.pair + " · " : "") + g.label);
      option.value = String(i);
      $("mb-group").appendChild(option);
    });
    var seen = {};
    I.forEach(function (item) { [item[3], item[4]].forEach(function (s) { if (s) seen[outcomeName(s)] = 1; }); });
    O.concat(Object.keys(seen).filter(function (o) { return O.indexOf(o) < 0; })).forEach(function (o) {
      if (!seen[o]) return;
      var option = el("option", null, o);
      option.value = o;
      $("mb-outcome").appendChild(option);
    });
    var state = {q: "", group: "", outcome: "", side: "either", disagree: false, sort: "absdelta", open: null};
    // the text search: each item's own text (id, gold, answers, outputs, its part of the prompt, with the end
    // of the part all items of its row group share, so that a phrase across the two is found) lower-cased once,
    // on the first search; the shared part itself is searched once per group
    var texts = null, groupHits = null, searched = null;
    function itemText(item) {
      var parts = [item[1], item[2]];
      [item[3], item[4]].forEach(function (s) { if (s) { parts.push(s[1], s[3]); } });
      if (item[5] !== null) parts.push(G[item[0]].prefix.slice(-200) + item[5]);
      if (item[6]) item[6].forEach(function (s) { if (typeof s === "string") parts.push(s); });
      return parts.filter(function (p) { return p !== null && p !== undefined; }).join("\n").toLowerCase();
    }
    function found(index) {
      var q = state.q.toLowerCase();
      if (!texts) texts = I.map(itemText);
      if (searched !== q) {
        groupHits = G.map(function (g) { return g.prefix.toLowerCase().indexOf(q) >= 0; });
        searched = q;
      }
      return groupHits[I[index][0]] || texts[index].indexOf(q) >= 0;
    }
    var shown = page, openRow = null;

    function readHash() {
      var hash = location.hash.replace(/^#/, "");
      if (hash.indexOf("items?") !== 0) return;
      var params = new URLSearchParams(hash.slice(6));
      ["q", "group", "outcome", "side", "sort"].forEach(function (k) { if (params.has(k)) state[k] = params.get(k); });
      state.disagree = params.get("disagree") === "1";
      state.open = params.has("open") ? Number(params.get("open")) : null;
    }
    function writeHash() {
      var params = new URLSearchParams();
      Object.keys(state).forEach(function (k) {
        var v = state[k];
        if (v !== null && v !== "" && v !== false) params.set(k, v === true ? "1" : String(v));
      });
      history.replaceState(null, "", "#items?" + params.toString());
    }
    function matches(index) {
      var item = I[index];
      if (state.group !== "" && String(item[0]) !== state.group) return false;
      if (state.disagree && !deltas[index]) return false;
      if (state.q !== "" && !found(index)) return false;
      if (state.outcome !== "") {
        var sides = state.side === "either" ? [item[3], item[4]] : [item[3 + Number(state.side)]];
        if (!sides.some(function (s) { return s && outcomeName(s) === state.outcome; })) return false;
      }
      return true;
    }
    function ordered() {
      var list = [];
      for (var i = 0; i < I.length; i++) if (matches(i)) list.push(i);
      var key = {absdelta: function (i) { return -Math.abs(deltas[i]); }, delta: function (i) { return -deltas[i]; },
                 "-delta": function (i) { return deltas[i]; }}[state.sort];
      if (key) list.sort(function (a, b) {
        var na = deltas[a] === null, nb = deltas[b] === null;
        if (na || nb) return na === nb ? a - b : (na ? 1 : -1);
        return key(a) - key(b) || a - b;
      });
      return list;
    }
    function prompt(item, side) {
      if (item[5] === null) return null;
      var base = G[item[0]].prefix + item[5];
      if (side === 0 || !item[6]) return base;
      var lines = [], start = 0, at;
      while ((at = base.indexOf("\n", start)) >= 0) { lines.push(base.slice(start, at + 1)); start = at + 1; }
      if (start < base.length) lines.push(base.slice(start));
      return item[6].map(function (s) { return typeof s === "string" ? s : lines.slice(s[0], s[1]).join(""); }).join("");
    }
    function folded(summary, text) {
      var details = el("details");
      details.appendChild(el("summary", null, summary));
      details.appendChild(el("pre", null, text));
      return details;
    }
    function detail(index) {
      var item = I[index], group = G[item[0]], box = el("div", "item-detail");
      box.setAttribute("data-item", String(index));
      box.appendChild(el("p", null, "item " + item[1] + " · gold " + (item[2] === null ? "—" : item[2])));
      if (item[5] === null) {
        box.appendChild(el("p", "muted", "Inputs were not stored for this run (--no-store-inputs): no prompt."));
      } else if (!item[6]) {
        box.appendChild(folded("prompt (the same for both models)", prompt(item, 0)));
      } else {
        box.appendChild(folded("prompt of " + group.models[0] + " (biomedical)", prompt(item, 0)));
        box.appendChild(folded("prompt of " + group.models[1] + " (general)", prompt(item, 1)));
      }
      var grid = el("div", "grid");
      [0, 1].forEach(function (s) {
        var side = item[3 + s], cell = el("div", "side");
        cell.appendChild(el("b", null, group.models[s] + (s === 0 ? " (biomedical)" : " (general)")));
        if (side === null) { cell.appendChild(el("p", "muted", "no result for this item")); grid.appendChild(cell); return; }
        var facts = "outcome " + outcomeName(side) + " · answer " + (side[1] === null ? "—" : side[1]) + " · " +
          group.metrics.map(function (m, k) { return m + " " + pct(side[2][k]); }).join(", ");
        cell.appendChild(el("p", null, facts));
        cell.appendChild(el("pre", "output", side[3] === null ? "(no output: generation failed)" : side[3]));
        grid.appendChild(cell);
      });
      box.appendChild(grid);
      return box;
    }
    function toggle(index, tr) {
      if (openRow && openRow.parentNode) openRow.parentNode.removeChild(openRow);
      if (state.open === index && openRow) { state.open = null; openRow = null; writeHash(); return; }
      var row = el("tr", "detail-row"), td = el("td");
      td.colSpan = 6;
      td.appendChild(detail(index));
      row.appendChild(td);
      tr.parentNode.insertBefore(row, tr.nextSibling);
      openRow = row;
      state.open = index;
      writeHash();
    }
    function render() {
      var list = ordered(), body = $("mb-rows");
      if (state.open !== null) {
        var at = list.indexOf(state.open);
        if (at < 0) state.open = null; else if (at >= shown) shown = at + 1;
      }
      body.textContent = "";
      openRow = null;
      var fragment = document.createDocumentFragment(), openTr = null;
      list.slice(0, shown).forEach(function (index) {
        var item = I[index], group = G[item[0]], tr = el("tr", "item-row");
        tr.setAttribute("data-index", String(index));
        var m = function (s) { return s ? pct(s[2][0]) : "—"; };
        [item[1], (multiplePairs ? group.pair + " · " : "") + group.label, outcomeName(item[3]), outcomeName(item[4]),
         m(item[3]) + " / " + m(item[4]), signed(deltas[index])].forEach(function (value, k) {
          tr.appendChild(el("td", k === 5 ? "num" : (k === 2 || k === 3 ? "outcome" : null), value));
        });
        tr.addEventListener("click", function () { toggle(index, tr); });
        if (index === state.open) openTr = tr;
        fragment.appendChild(tr);
      });
      body.appendChild(fragment);
      if (openTr) { var keep = state.open; state.open = null; toggle(keep, openTr); }
      var count = $("mb-count");
      count.setAttribute("data-matching", String(list.length));
      count.textContent = list.length + " of " + I.length + " items" +
        (list.length > shown ? " (first " + shown + " shown)" : "") + "; Δ on each row group's first metric.";
      $("mb-more").hidden = list.length <= shown;
      writeHash();
    }
    function bind(id, key, value, event) {
      $(id).addEventListener(event || "change", function () {
        state[key] = value(); state.open = null; shown = page; render();
      });
    }
    readHash();
    $("mb-search").value = state.q;
    $("mb-group").value = state.group; $("mb-outcome").value = state.outcome; $("mb-side").value = state.side;
    $("mb-sort").value = state.sort; $("mb-disagree").checked = state.disagree;
    bind("mb-search", "q", function () { return $("mb-search").value.trim(); }, "input");
    bind("mb-group", "group", function () { return $("mb-group").value; });
    bind("mb-outcome", "outcome", function () { return $("mb-outcome").value; });
    bind("mb-side", "side", function () { return $("mb-side").value; });
    bind("mb-sort", "sort", function () { return $("mb-sort").value; });
    bind("mb-disagree", "disagree", function () { return $("mb-disagree").checked; });
    $("mb-more").addEventListener("click", function () { shown += page; render(); });
    render();
    document.body.setAttribute("data-browser-ready", performance.now().toFixed(0));
  } catch (e) {
    fail("script error: " + (e && e.message ? e.message : e));
  }
})();
"""


def section(groups: list[GroupRows]) -> tuple[str, str]:
    """(HTML of the browser with its inline JSON, the script's source: html.py puts it in the page and hashes it
    for the Content-Security-Policy)."""
    data = browser_data(groups)
    stored = all(g["inputs"] for g in data["groups"])
    intro = ("<p class='muted'>Every item of every paired row group. Filter, sort by the difference of the row "
             "group's first metric (biomedical − general), search any text of an item (its input, both "
             "outputs and answers, the gold answer, its id), click an item to see "
             + ("its prompt and " if stored else "") + "both outputs. 'Models disagree': that difference is not 0 "
             "(as in <code>show</code>). The view is kept in the address (#items?…), so a filtered view can be "
             "bookmarked." + ("" if stored else " Inputs were not stored for some runs (--no-store-inputs): "
                              "their prompts are not in this report.") + "</p>")
    block = f'<script type="application/json" id="mb-items">{script_json(data)}</script>'
    return intro + CONTROLS + block, SCRIPT
