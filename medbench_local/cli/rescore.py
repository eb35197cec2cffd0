"""``medbench-local rescore``: add BERTScore or UMLS-F1 to stored summaries, without generating again."""

from __future__ import annotations

from pathlib import Path

import click

from ..analysis.rescore import APPLIES, rescore
from ..store import close_database, open_database
from .common import db_option, stdout
from .safe_text import literal


@click.command("rescore")
@db_option
@click.option("--metric", type=click.Choice(sorted(APPLIES)), required=True,
              help="bertscore: SciBERT L8 (MeQSum) / Bio_ClinicalBERT L9 (Problem Summary, MeDiSumQA); "
                   "umls: scispaCy + UMLS linker (Problem Summary, MeDiSumQA).")
@click.option("--task", "task_filter", multiple=True, metavar="TASK", help="Only these tasks (repeatable).")
def rescore_command(db_path: Path, metric: str, task_filter: tuple[str, ...]) -> None:
    """Add an optional heavy metric to the stored outputs of summarization tasks.

    The metric models load from local folders only (never downloaded): set MEDBENCH_BERTSCORE_SCIBERT,
    MEDBENCH_BERTSCORE_CLINICALBERT, MEDBENCH_SCISPACY_MODEL, MEDBENCH_UMLS_LINKER_DIR as described in
    docs/metrics-optional.md. When a model or package is missing, one line says what and nothing changes.
    'compare', 'report' and 'reproduce' then include the new metric.

    \b
    Examples:
      export MEDBENCH_BERTSCORE_SCIBERT=/models/scibert_scivocab_uncased
      medbench-local rescore --db study.db --metric bertscore --task meqsum
    """
    db = open_database(db_path, create=False)
    try:
        done = rescore(db, metric, task_filter)
    finally:
        close_database(db)
    if not done:
        stdout.print(f"Nothing to rescore: no stored results of {', '.join(APPLIES[metric])} in {db_path}.")
    for entry in done:
        stdout.print(f"{literal(entry.model_id)} · {literal(entry.task)}: {metric} added to {entry.items} items")
