"""``medbench-local rescore``: score stored outputs again without generating: add BERTScore or UMLS-F1 to
summaries, or re-read multiple-choice answers with today's extraction."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..analysis.rescore import RESCORE_METRICS, ExtractionRescore, applies, rescore, rescore_extraction
from ..errors import StoreError, UserError
from ..gates.stored import DamagedValue
from ..metrics.extraction import EXTRACTION_VERSION
from ..store import close_database, open_database
from ..units import count
from .common import db_option, split_commas, stdout
from .declare import InputPath, declare


def _extraction_line(entry: ExtractionRescore) -> str:
    label = f"{entry.model_id} · {entry.task}"
    if entry.status == "rescored":
        changes = ", ".join(f"{k} {a}→{b}" for k, (a, b) in (entry.changed or {}).items()) or "no outcome changed"
        return (f"{label}: {count(entry.items, 'item')} re-scored with extraction v{EXTRACTION_VERSION} into evaluation "
                f"{(entry.new_key or '')[:12]} (from {entry.old_key[:12]}, which is kept): {changes}")
    colour = {"refused": "yellow", "skipped": "yellow"}.get(entry.status, "dim")
    return f"[{colour}]{label} ({entry.old_key[:12]}): {entry.status}: {entry.note}[/{colour}]"


@declare(reads=("database", "prompts"), writes=("database",),
         example=("rescore", "--db", "{db}", "--extraction", "--prompts", "{prompts}"))
@click.command("rescore")
@db_option
@click.option("--metric", type=click.Choice(sorted(RESCORE_METRICS)),
              help="bertscore: SciBERT L8 (MeQSum) / Bio_ClinicalBERT L9 (Problem Summary, MeDiSumQA); "
                   "umls: scispaCy + UMLS linker (Problem Summary, MeDiSumQA).")
@click.option("--extraction", is_flag=True,
              help="Re-read the stored multiple-choice outputs with today's answer extraction "
                   f"(v{EXTRACTION_VERSION}) into new evaluations; the old ones are kept.")
@click.option("--task", "task_filter", multiple=True, metavar="TASK[,TASK...]", callback=split_commas,
              help="Only these tasks (repeatable, or comma-separated).")
@click.option("--model", "model_filter", multiple=True, metavar="ID",
              help="Only these model ids (repeatable; --extraction only).")
@click.option("--prompts", "prompt_file", type=InputPath("prompts"),
              help="With --extraction: the --prompts file the evaluations were run with (the answer prefix is "
                   "part of what is read).")
def rescore_command(db_path: Path, metric: str | None, extraction: bool, task_filter: tuple[str, ...],
                    model_filter: tuple[str, ...], prompt_file: Path | None) -> None:
    """Score stored outputs again, without generating: add an optional heavy metric to summaries
    (--metric), or re-read multiple-choice answers with today's extraction (--extraction).

    --metric: the metric models load from local folders only (never downloaded): set
    MEDBENCH_BERTSCORE_SCIBERT, MEDBENCH_BERTSCORE_CLINICALBERT, MEDBENCH_SCISPACY_MODEL,
    MEDBENCH_UMLS_LINKER_DIR as described in docs/metrics-optional.md. When a model or package is missing,
    one line says what and nothing changes. 'compare', 'report' and 'reproduce' then include the new metric.

    --extraction: the extraction version is part of every result's identity, so results read by an older
    extraction are re-scored into a NEW evaluation, under the key a fresh 'run' would use today; the old
    evaluation and its scores stay as they were (export and show still read them). 'compare' then uses the
    new one, and running the same 'run' command again generates nothing. Evaluations stored with
    --no-store-inputs are refused (the options are not in the database); running it twice does nothing new.

    \b
    Examples:
      export MEDBENCH_BERTSCORE_SCIBERT=/models/scibert_scivocab_uncased
      medbench-local rescore --db study.db --metric bertscore --task meqsum
      medbench-local rescore --db study.db --extraction
      medbench-local rescore --db study.db --extraction --task jama \\
          --model gemma3-270m
    """
    if bool(metric) == extraction:
        raise UserError("give either --metric NAME (add BERTScore/UMLS-F1) or --extraction (re-read answers)")
    if model_filter and not extraction:
        raise UserError("--model only applies to --extraction (--metric always covers every model)")
    if prompt_file is not None and not extraction:
        raise UserError("--prompts only applies to --extraction")
    db = open_database(db_path, create=False)
    try:
        if extraction:
            results = rescore_extraction(db, task_filter=task_filter, model_filter=model_filter,
                                         prompt_file=prompt_file, command=sys.argv[:])
        else:
            assert metric is not None
            done = rescore(db, metric, task_filter)
    except DamagedValue as exc:  # a stored value the gate refuses (gates/stored.py): one line, nothing written
        raise StoreError(f"{db_path}: damaged results database: {exc}") from None
    finally:
        close_database(db)
    if extraction:
        if not results:
            stdout.print(f"Nothing to rescore: no stored multiple-choice results in {db_path}.")
        for entry in results:
            stdout.print(_extraction_line(entry), soft_wrap=True)  # one line per evaluation, never wrapped
        if any(entry.status == "rescored" for entry in results):
            stdout.print(f"Compare with: medbench-local compare --db {db_path}")
        return
    if not done:
        stdout.print(f"Nothing to rescore: no stored results of {', '.join(applies(metric))} in {db_path}.")
    for item in done:
        stdout.print(f"{item.model_id} · {item.task}: {metric} added to {count(item.items, 'item')}")
