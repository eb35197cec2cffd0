"""``medbench-local compare``: each pair's biomedical and general model on the same items, with paired statistics."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..analysis.paired import CI_NOTE, METHODS_NOTE, PAIRING_NOTE, MetricComparison, PairReport, summary_line
from ..analysis.stats import format_p
from ..api import compare
from ..contamination.compared import Contamination, excluded_rows, row_json
from ..contamination.readback import FLAG_SIGNAL
from ..contamination.signals import SIGNALS
from ..errors import UserError
from ..tasks.base import OUTCOMES
from .common import db_option, pair_options, stderr, stdout, task_option
from .declare import InputPath, declare
from .layout import Column, print_prose, print_table
from .limits import RESAMPLES, STATS_SEED
from .safe_text import literal, plain

OUTCOME_COLUMNS = OUTCOMES  # every outcome, in the order tasks/base.py defines them


def contamination_lines(report: PairReport, found: Contamination) -> list[str]:
    """One line per task of the pair with a stored probe: each signal's shift with its CI, and the flags."""
    lines = []
    for (pair, task), probe in found.probes.items():
        if pair != report.pair:
            continue
        parts = []
        for shift in probe.shifts:
            ci = "" if shift.low is None else f" [{shift.low:+.3g}, {shift.high:+.3g}]"
            p = "" if shift.p_value is None else f" p {format_p(shift.p_value)}"
            parts.append(f"{SIGNALS[shift.signal].title} {shift.shift:+.3g}{ci}{p}")
        flag = probe.shift(FLAG_SIGNAL)
        flagged = f"; {len(probe.flagged)} of {flag.n_items} items flagged ({SIGNALS[FLAG_SIGNAL].title})" \
            if flag is not None else ""
        control = str(probe.settings.get("control", "?")).split(":")[0]
        lines.append(f"{pair} · {task}: contamination probe (control: {control}), shift of the biomedical − "
                     f"general advantage, benchmark vs control: {'; '.join(parts)}{flagged}. "
                     "Positive: the biomedical model knows the benchmark's text better than the control's "
                     "(docs/contamination.md).")
    return lines


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def _ci(row_value: object) -> str:
    low, high = row_value.low, row_value.high
    return f"[{100 * low:.1f}, {100 * high:.1f}]"


def _short_ci(interval: object) -> str:
    return f"[{100 * interval.low:.0f}–{100 * interval.high:.0f}]"


def truncation(row: MetricComparison) -> str:
    """'3%/10%': the share of the row's items each model ran out of tokens on (biomedical/general)."""
    return "/".join(f"{100 * row.truncated_rate.get(role, 0.0):.0f}%" for role in ("biomedical", "general"))


# green: biomedical ahead, red: general ahead; the words say the same (colour only repeats them)
_COLOUR = {"biomedical": "green", "general": "red"}


def _coloured(row: MetricComparison, text: str) -> str:
    colour = _COLOUR.get(row.ahead or "")
    return f"[{colour}]{text}[/]" if colour else text


def _delta_cell(row: MetricComparison) -> str:
    return _coloured(row, f"{100 * row.delta.estimate:+.1f}\n[{100 * row.delta.low:+.0f}, "
                          f"{100 * row.delta.high:+.0f}]")


def _verdict_cell(row: MetricComparison) -> str:
    return _coloured(row, row.verdict) + f"\n(Holm p {format_p(row.p_adjusted)})"


def _group_cell(row: MetricComparison) -> str:
    if row.data is None:
        return literal(row.task)
    text = f"{literal(row.task)}\n[dim]{literal(row.data.short)}[/dim]"
    if row.general_data is not None:
        text += f"\n[bold red]≠ {literal(row.general_data.short)}\n(different data)[/bold red]"
    return text


PAIR_COLUMNS = (Column("task · data", legend=True), Column("metric"), Column("n", "right"),
                Column("biomedical", "right"), Column("general", "right"), Column("Δ bio−gen", "right"),
                Column("verdict"), Column("discordant", "right"), Column("truncated", "right"))


def _pair_title(report: PairReport) -> str:
    return (f"[bold]{literal(report.pair)}[/bold]: {literal(report.biomedical_model)} (biomedical) vs "
            f"{literal(report.general_model)} (general)")


def _pair_rows(report: PairReport, excluded: dict[tuple[str, str, str], MetricComparison] | None = None
               ) -> list[list[str]]:
    rows = []
    for row in report.rows:
        missing = sum(row.missing.values())
        cells = [_group_cell(row), literal(row.metric),
                 str(row.n) + (f"\n[yellow]({missing} unpaired)[/yellow]" if missing else ""),
                 f"{_pct(row.biomedical.estimate)}\n{_short_ci(row.biomedical)}",
                 f"{_pct(row.general.estimate)}\n{_short_ci(row.general)}",
                 _delta_cell(row), _verdict_cell(row),
                 f"{row.discordant[0]}/{row.discordant[1]}" if row.discordant else "—", truncation(row)]
        if excluded is not None:
            other = excluded.get((report.pair, row.group_label, row.metric))
            cells.append("—" if other is None else f"{_delta_cell(other)}\nn={other.n}")
        rows.append(cells)
    return rows


def _groups(report: PairReport) -> list[MetricComparison]:
    """The first row of each (task, data, mode) row group, in table order."""
    return list({r.group_label: r for r in reversed(report.rows)}.values())[::-1]


def _outcome_table(report: PairReport) -> tuple[list[Column], list[list[str]]]:
    """Outcomes of the n compared items per row group (biomedical/general; they add up to n) and the items
    only one model answered (not compared)."""
    groups = _groups(report)
    shown = [name for name in OUTCOME_COLUMNS if name in ("correct", "wrong") or any(
        g.paired_outcomes.get(role, {}).get(name) for g in groups for role in ("biomedical", "general"))]
    columns = [Column("task · data", legend=True)] + [Column(name, "right") for name in shown] + [
        Column("n", "right"), Column("unpaired", "right")]
    rows = []
    for group in groups:
        bio, gen = group.paired_outcomes["biomedical"], group.paired_outcomes["general"]
        rows.append([_group_cell(group)] + [f"{bio.get(k, 0)}/{gen.get(k, 0)}" for k in shown]
                    + [str(group.n), f"{group.missing.get('general', 0)}/{group.missing.get('biomedical', 0)}"])
    return columns, rows


def warnings(report: PairReport) -> list[str]:
    """One line per thing a reader must know before trusting the table (plain text, no markup)."""
    lines = [f"{report.pair} · {note.text}" for note in report.notes]
    seen: set[str] = set()
    for row in report.rows:
        degenerate = row.degenerate_gold
        if degenerate and row.group_label not in seen:
            seen.add(row.group_label)
            lines.append(f"{report.pair} · {row.group_label}: {100 * degenerate[1]:.0f}% of the {row.n} compared "
                         f"items have the gold answer '{degenerate[0]}' — a model that always answers "
                         f"'{degenerate[0]}' scores {100 * degenerate[1]:.0f}% (a --limit with --limit-mode first "
                         "on a label-sorted file?)")
    for task, missing in report.unpaired_tasks.items():
        lines.append(f"{report.pair} · {task}: only one model has results (the {missing} model has not run it yet)")
    return lines


def superseded_lines(report: PairReport) -> list[str]:
    lines = []
    seen: set[str] = set()
    for row in report.rows:
        if row.superseded and row.group_label not in seen:
            seen.add(row.group_label)
            older = "; ".join(f"{b[:12]}/{g[:12]}" for b, g in row.superseded)
            lines.append(f"{report.pair} · {row.group_label}: newest matching pair shown; superseded "
                         f"(biomedical/general evaluation): {older}")
    return lines


def markdown(reports: list[PairReport]) -> str:
    """A Markdown table per pair, ready to paste into a paper draft; the methods once, at the end."""
    lines: list[str] = []
    for report in reports:
        lines += [f"### {report.pair}: {report.biomedical_model} (biomedical) vs {report.general_model} (general)",
                  "", summary_line(report, names=False), "",
                  "| task | metric | n | biomedical [95% CI] | general [95% CI] | Δ bio−gen [95% CI] | verdict "
                  "(Holm-adjusted p) | test | p (unadjusted) | discordant bio>gen / gen>bio | truncated bio / gen "
                  "| data |",
                  "|---|---|---:|---:|---:|---:|---|---|---:|---:|---:|---|"]
        for r in report.rows:
            discordant = f"{r.discordant[0]} / {r.discordant[1]}" if r.discordant else "—"
            data = "—" if r.data is None else f"{r.data.short}" + (
                f" ≠ {r.general_data.short} (**different data**)" if r.general_data else "")
            verdict = f"**{r.verdict_text}**" if r.ahead else r.verdict_text
            lines.append(
                f"| {r.task} | {r.metric} | {r.n} | {_pct(r.biomedical.estimate)} {_ci(r.biomedical)} | "
                f"{_pct(r.general.estimate)} {_ci(r.general)} | {100 * r.delta.estimate:+.1f} "
                f"[{100 * r.delta.low:+.1f}, {100 * r.delta.high:+.1f}] | {verdict} | {r.test} | "
                f"{format_p(r.p_value)} | {discordant} | {truncation(r).replace('/', ' / ')} | {data} |")
        notes = warnings(report) + superseded_lines(report)
        lines += ([""] + [f"> {line}" for line in notes] if notes else []) + [""]
    lines += [f"Scores ×100. {METHODS_NOTE} {CI_NOTE} {PAIRING_NOTE}", ""]
    return "\n".join(lines)


def _markdown_contamination(reports: list[PairReport], found: Contamination) -> str:
    lines = [line for report in reports for line in contamination_lines(report, found)]
    return "".join(f"> {line}\n" for line in lines)


@declare(reads=("database", "config", "data"),
         example=("compare", "--db", "{db}", "--config", "{config}", "--gold", "{gold}"))
@click.command("compare")
@db_option
@pair_options
@task_option("Only these tasks (repeatable, or comma-separated: --task nejm,jama).")
@click.option("--resamples", type=RESAMPLES, default=10_000, show_default=True,
              help="Bootstrap / permutation resamples (continuous metrics).")
@click.option("--seed", type=STATS_SEED, default=0, show_default=True,
              help="Seed of the resampling (results are reproducible for a given seed).")
@click.option("--allow-different-data", is_flag=True,
              help="Where the two models ran a task only on different data files, pair their newest evaluations "
                   "by item id anyway (rows marked 'different data'). Normally refused.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (stable keys, see README) instead of tables.")
@click.option("--markdown", "as_markdown", is_flag=True, help="Print Markdown tables for a paper.")
@click.option("--exclude-flagged", is_flag=True,
              help="Where a contamination probe is stored ('medbench-local contamination'), also compute every Δ "
                   "on the items it did not flag (Min-K%), shown beside the Δ on all items.")
@click.option("--gold", "gold_path", type=InputPath("data"),
              help="Retrieval arms: a CSV (item_id,gold_passage) naming the passage that answers each item, for items "
                   "without a 'gold_passage' field; recall@k and MRR are then shown beside the delta.")
def compare_command(db_path: Path, pair_filter: tuple[str, ...], model_pair: tuple[str, str] | None,
                    config_path: Path | None, task_ids: tuple[str, ...], resamples: int, seed: int,
                    allow_different_data: bool, as_json: bool, as_markdown: bool, exclude_flagged: bool,
                    gold_path: Path | None) -> None:
    """Compare each pair's biomedical model with its general counterpart on the same items.

    What is paired: per task, evaluations on the same data (the data file's SHA-256, so a renamed file is the
    same data) whose task settings are equal (prompt, extraction, shots, quirks, token budget). Each (task,
    data) is its own row group, labelled with the file name and a short hash; where several matching pairs
    exist (e.g. after 'rescore --extraction') the newest is shown and the older ones are listed as superseded.
    Evaluations on different data are not paired (one line says so; --allow-different-data pairs them by item
    id, marked); nothing pairable at all exits 1.

    Which pairs: those recorded in the database (by 'run --pair', or 'run --model' for the models.toml pairs
    containing the model) and those of models.toml (--config; found as 'run' finds it) of which a model has
    results, so two models run one at a time are compared; --models BIO GEN pairs any two models ad hoc. Where
    the database and models.toml name a pair with different members, the database's are used (a note says
    so). An unknown pair, model or task is an error naming those that exist.

    For a retrieval arm (docs/retrieval.md), a line under the table gives, of its items whose gold passage is known
    (an item field 'gold_passage', or --gold FILE), recall@k, MRR, and how many had the gold passage in the prompt
    and were answered correctly: "retrieval failed" against "the model ignored the passage".

    The numbers: for every pair, task, data and metric, each model's score with a 95% CI (Wilson for accuracy,
    BCa bootstrap for ROUGE/F1), the paired difference Δ (biomedical minus general) with its CI (a
    continuity-corrected Tango score interval for accuracy, which never excludes 0 when the exact McNemar p >=
    0.05; BCa bootstrap otherwise), an exact McNemar test (with the discordant counts: items only the
    biomedical / only the general model got right) or a paired sign-flip permutation test, Holm-adjusted
    across the pair's rows, and n. The verdict column says it in words: "biomedical ahead" or "general ahead"
    when the Holm-adjusted p < 0.05, else "no significant difference", with that p (written "<0.001" below
    0.001); colour only repeats it. --markdown and --json add the unadjusted p and carry the same verdict
    words. Items are aligned by id; items only one model has are counted as unpaired, not compared.

    Outcomes: unparseable, conflict (a letter stated with another option's text) and error items score 0. A
    truncated item (the token budget ran out) scores 0 when it is a multiple-choice answer that could not be
    read; a truncated summary or ICD code list keeps the ROUGE/F1 of what it wrote (as the CLUE reference
    did). The 'truncated' column shows the share truncated, biomedical/general. The outcome table counts the
    n compared items (its columns add up to n) and the unpaired ones apart. A yellow line warns when one gold
    answer holds more than 90% of the compared items.

    Tables never split a word, number or hash: when one does not fit the terminal, its headers are
    abbreviated, then long labels move to a legend under it, then each row becomes a block of its own. Piped
    to a file, tables keep their full width (set COLUMNS to choose one).

    \b
    Examples:
      medbench-local compare --db results.db
      medbench-local compare --db results.db --pair demo --task jama --json
      medbench-local compare --db results.db --markdown > results.md
      medbench-local compare --db results.db --task jama --allow-different-data
      medbench-local compare --db study.db --task nejm,jama \\
          --models openbiollm-70b llama3-70b-instruct
    """
    comparison = compare(db_path, pairs=pair_filter, models=model_pair, tasks=task_ids, config=config_path,
                         resamples=resamples, seed=seed, allow_different_data=allow_different_data,
                         exclude_flagged=exclude_flagged, gold=gold_path)
    reports, conflicts, found = comparison.reports, comparison.notes, comparison.contamination
    quality = comparison.retrieval_quality
    nothing = not any(report.rows for report in reports)
    refused = [note for report in reports for note in report.notes if note.refused]
    if nothing and not refused and not any(warnings(report) for report in reports):
        raise UserError(f"no paired results in {db_path} yet: run both models of a pair, e.g. 'medbench-local "
                        f"run --pair demo --task jama --db {db_path}' (or one at a time with --model)")
    if as_json or as_markdown:
        # the rows carry data, superseded pairs and gold-label warnings; Markdown quotes every note. On stderr
        # only what was refused (and, when nothing was compared, why), so that standard output stays clean.
        for report in reports:
            for note in report.notes:
                if note.refused:
                    stderr.print(f"[yellow]{literal(report.pair)} · {literal(note.text)}[/yellow]")
        if nothing:
            for line in [line for report in reports for line in warnings(report)]:
                stderr.print(f"[yellow]{literal(line)}[/yellow]")
            sys.exit(1)
        click.echo(json.dumps([row_json(report, row, found) for report in reports
                               for row in report.rows], indent=2)
                   if as_json else plain(markdown(reports) + _markdown_contamination(reports, found)))
        lines = [f"> {report.pair} · {line}" for report in reports for line in quality.get(report.pair, [])]
        if as_markdown and lines:  # retrieval arms' quality (the JSON rows stay the documented contract)
            click.echo(plain("\n".join(lines)))
        return
    for line in conflicts:
        print_prose(stdout, f"[dim]{literal(line)}[/dim]")
    for report in reports:
        if report.rows:
            stdout.print()
            print_prose(stdout, _pair_title(report))
            print_prose(stdout, f"[bold]{literal(summary_line(report, names=False))}[/bold]")
            columns = PAIR_COLUMNS + ((Column("Δ without flagged", "right"),) if exclude_flagged else ())
            print_table(stdout, columns, _pair_rows(report, excluded_rows(found)),
                        heading=2, show_lines=True)
            for line in contamination_lines(report, found):
                print_prose(stdout, f"[cyan]{literal(line)}[/cyan]")
            columns, rows = _outcome_table(report)
            print_table(stdout, columns, rows, title="Outcomes of the n compared items (biomedical/general); "
                                                     "unpaired: items only that model answered, not compared")
        for line in superseded_lines(report):
            print_prose(stdout, f"[dim]{literal(line)}[/dim]")
        for line in quality.get(report.pair, []):
            print_prose(stdout, f"[dim]{literal(line)}[/dim]")
        for line in warnings(report):
            print_prose(stdout, f"[yellow]{literal(line)}[/yellow]")
    if nothing:  # only notes and warnings: nothing was compared
        sys.exit(1)
    print_prose(stdout, f"[dim]{METHODS_NOTE} Discordant: items only the biomedical/only the general model got "
                        f"right. {resamples} resamples, seed {seed}. Unadjusted p: --markdown, --json; the full "
                        "method: compare --help.[/dim]")
