"""``medbench-local index``: build a retrieval index over your own documents, look into it, search it, and measure
how often it finds the passage that answers an item (the retrieval arm's first half: docs/retrieval.md)."""

from __future__ import annotations

import time
from pathlib import Path

import click
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

from ..errors import UserError
from ..retrieval.gold import read_gold
from ..retrieval.index import RetrievalIndex, build_index, file_sha256
from ..retrieval.passages import Split
from ..retrieval.quality import gold_of, quality
from ..retrieval.query import QUERY_MODES, fts_query, query_text
from ..runner import load_tasks
from ..runner.plan import data_choice
from ..tasks import get_task
from ..units import plural
from .common import match_data, stderr, stdout, task_option
from .declare import InputPath, OutputPath, declare
from .safe_text import literal

KS = (1, 3, 5, 10)


@click.group("index")
def index_group() -> None:
    """Retrieval indexes over your own documents (guidelines, pathways), for retrieval arms.

    An index is one SQLite file: the passages, SQLite's full-text index over them (FTS5, BM25 ranking), the SHA-256
    of every corpus file and the settings. An arm in models.toml ([arms.NAME]) runs a model with passages from it
    (docs/retrieval.md).

    \b
    Examples:
      medbench-local index build guidelines/ --out guidelines.idx
      medbench-local index info guidelines.idx
      medbench-local index search guidelines.idx "peaked T waves potassium"
      medbench-local index eval guidelines.idx --task jama \\
          --gold bench_data/retrieval/demo-gold.csv
    """


@declare(reads=("data",), writes=("output",), example=("index", "build", "{data}", "--out", "{out}"))
@index_group.command("build")
@click.argument("corpus", nargs=-1, required=True, type=InputPath("data", dir_okay=True))
@click.option("--out", "out_path", type=OutputPath(), required=True,
              help="The index file to write: built in a private temporary file beside it and renamed into place "
                   "when complete (owner-only, 0600); an existing file is replaced only then.")
@click.option("--passage-words", type=click.IntRange(8, 4096), default=120, show_default=True,
              help="Words per passage (about 1.3 tokens each in English). A document of at most this many words is "
                   "one passage with the document's id.")
@click.option("--overlap", type=click.IntRange(0, 4095), default=20, show_default=True,
              help="Words shared by consecutive passages of one document, so that a sentence cut at a boundary is "
                   "whole in one of them.")
def build_command(corpus: tuple[Path, ...], out_path: Path, passage_words: int, overlap: int) -> None:
    """Build an index from CORPUS files and folders.

    Reads .txt and .md (one document per file), .html/.htm (visible text; script and style left out), .jsonl (one
    document per line: field "text", optional "id") and .csv (one document per row: column "text", or all
    columns; optional "id") and .pdf (its pages' text, with pypdf installed: pip install 'medbench-local[pdf]');
    folders are read for these files, in name order. Document ids (the JSONL/CSV "id",
    else the file name's stem) must be unique; a document longer than --passage-words becomes pieces <id>#1,
    <id>#2, ... A file that is not UTF-8, empty, or a line that is not a JSON object stops the build with one
    line naming file, line and field; nothing is written then.

    \b
    Examples:
      medbench-local index build bench_data/retrieval/demo-guidelines.jsonl \\
          --out demo-guidelines.idx
      medbench-local index build guidelines/ pathways.md --out hospital.idx \\
          --passage-words 200 --overlap 40
    """
    split = Split(passage_words, overlap)
    problem = split.problem()
    if problem:
        raise click.BadParameter(problem, param_hint="'--overlap'")
    started = time.monotonic()
    with Progress(TextColumn("[bold]indexing[/bold] {task.description}"), BarColumn(bar_width=20),
                  MofNCompleteColumn(), TextColumn("files · ETA"), TimeRemainingColumn(), console=stderr,
                  transient=True) as progress:
        bar = progress.add_task("", total=None)

        def advance(name: str, done: int, total: int) -> None:
            progress.update(bar, description=literal(name, one_line=True), completed=done, total=total)

        summary = build_index(list(corpus), out_path, split, advance)
    stdout.print(f"{literal(out_path)}: {summary.passages} {plural(summary.passages, 'passage')} from "
                 f"{summary.documents} {plural(summary.documents, 'document')} in {summary.files} "
                 f"{plural(summary.files, 'file')} ({time.monotonic() - started:.1f} s); identity "
                 f"{summary.identity}", soft_wrap=True)


@declare(reads=("index",), example=("index", "info", "{index}"))
@index_group.command("info")
@click.argument("index_path", metavar="INDEX", type=InputPath("index"))
def info_command(index_path: Path) -> None:
    """Print what an index holds and how it was built: its identity (what arms' results are keyed on), the file's
    SHA-256, the settings, and every corpus file with its SHA-256 (check them with sha256sum).

    \b
    Example:
      medbench-local index info guidelines.idx
    """
    with RetrievalIndex(index_path) as index:
        meta, sources = index.meta, index.sources()
    settings = ", ".join(f"{k} {v}" for k, v in sorted(dict(meta["settings"]).items()))
    files = plural(len(sources), "file")
    lines = [f"index         {index_path}",
             f"identity      {meta['content_sha256']}  (content: settings + passages)",
             f"file sha256   {file_sha256(index_path)}",
             f"passages      {meta.get('passages')} from {meta.get('documents')} documents in {len(sources)} {files}",
             f"settings      {settings}",
             f"built         {meta.get('built_at')} with {meta.get('built_with')}",
             "files:"]
    lines += [f"  {s['sha256']}  {s['name']}  ({s['documents']} documents, {s['passages']} passages, "
              f"{s['size_bytes']:,} bytes)" for s in sources]
    stdout.print(literal("\n".join(lines)), soft_wrap=True)


@declare(reads=("index",), example=("index", "search", "{index}", "chest pain"))
@index_group.command("search")
@click.argument("index_path", metavar="INDEX", type=InputPath("index"))
@click.argument("query")
@click.option("-k", "k", type=click.IntRange(1, 50), default=5, show_default=True, help="Passages to show.")
def search_command(index_path: Path, query: str, k: int) -> None:
    """Show the passages an arm would retrieve for QUERY, best first, with their BM25 scores.

    Any text is a valid query: it is cut into words, each searched as a plain word (quotes, AND/OR/NOT and
    punctuation have no special meaning), ranked by BM25.

    \b
    Example:
      medbench-local index search guidelines.idx "tall peaked T waves, K+ 7.3"
    """
    with RetrievalIndex(index_path, verify=False) as index:
        hits = index.search(fts_query(query), k)
    if not hits:
        stdout.print("no passage shares a word with the query")
        return
    for rank, hit in enumerate(hits, start=1):
        stdout.print(literal(f"{rank}. {hit.id}  (score {hit.score:.3f})\n   {hit.text[:400]}"), soft_wrap=True)


@declare(reads=("index", "data"),
         example=("index", "eval", "{index}", "--task", "{task}", "--data", "{data}"))
@index_group.command("eval")
@click.argument("index_path", metavar="INDEX", type=InputPath("index"))
@task_option("The task whose items are searched for (one).", required=True)
@click.option("--data", "data", multiple=True, metavar="[TASK=]PATH",
              help="The task's data (default: its sample, as in 'run').")
@click.option("--gold", "gold_path", type=InputPath("data"),
              help="CSV with columns item_id, gold_passage: the passage (or document) id that answers each item, "
                   "for items without a 'gold_passage' field of their own.")
@click.option("--query", "query_mode", type=click.Choice(QUERY_MODES), default="case+question", show_default=True,
              help="What of each item is searched, as an arm's query setting.")
def eval_command(index_path: Path, task_ids: tuple[str, ...], data: tuple[str, ...], gold_path: Path | None,
                 query_mode: str) -> None:
    """Retrieval quality: recall@k and MRR of the index for a task's items whose gold passage is known, for
    k = 1, 3, 5, 10, and the milliseconds a search takes.

    recall@k: the share of items whose gold passage (or a piece of the gold document) is among the first k
    retrieved; MRR: the mean of 1/rank of the first such passage within k (0 when absent). Next to an arm's
    accuracy delta they tell "retrieval failed" from "the model ignored the passage".

    \b
    Example:
      medbench-local index eval demo-guidelines.idx --task jama \\
          --gold bench_data/retrieval/demo-gold.csv
    """
    if len(task_ids) != 1:
        raise UserError("index eval: give one --task")
    task_id = task_ids[0]
    choice = data_choice(task_id, match_data(task_ids, data))
    loaded = load_tasks([(get_task(task_id).configure(), choice.path)], None)[0]
    gold_file = read_gold(gold_path) if gold_path is not None else {}
    rankings: list[tuple[list[str], str]] = []
    elapsed: list[float] = []
    with RetrievalIndex(index_path) as index:
        for item in loaded.items:
            gold = gold_of(item.payload, item.id, gold_file)
            if gold is None:
                continue
            started = time.perf_counter()
            hits = index.search(fts_query(query_text(item.payload, query_mode, fallback="")), max(KS))
            elapsed.append((time.perf_counter() - started) * 1000)
            rankings.append(([hit.id for hit in hits], gold))
    if not rankings:
        stdout.print(f"{task_id}: none of the {len(loaded.items)} {plural(len(loaded.items), 'item')} names a gold "
                     "passage (a 'gold_passage' field, or --gold FILE); nothing to measure")
        return
    stdout.print(f"{task_id}: {len(rankings)} of {len(loaded.items)} items name a gold passage; query "
                 f"{query_mode}; {sum(elapsed) / len(elapsed):.2f} ms per search", soft_wrap=True)
    for k in KS:
        found = quality(rankings, k)
        stdout.print(f"  k={k:<3} recall@k {found.recall:.3f}   MRR@k {found.mrr:.3f}")

