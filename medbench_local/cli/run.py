"""``medbench-local run``: evaluate models (usually a biomedical/general pair) on tasks, storing every item.

The options become calls of the runner (runner/plan.py assembles and checks the run, ``runner.execute`` runs it);
what stays here is how progress and the outcome are shown."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

from ..api import evaluate
from ..errors import UserError
from ..runner import LIMIT_MODES, Shard, parse_shard
from ..runner.modes import SCORING
from ..tasks import Score, get_task
from ..units import count, plural
from .common import DEFAULT_DB, config_option, match_data, stderr, stdout, task_option
from .declare import DatabasePath, InputPath, declare
from .limits import BATCH_SIZE, LLAMA_SEED, THREADS
from .safe_text import literal


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class ProgressReporter:
    """Progress per model and task (items, ETA, generated tokens per second; for log-likelihood scoring, which
    generates nothing, prompt tokens read per second), then a summary line.

    On a terminal: one rich progress bar. In logs and pipes (stderr not a terminal) bars would be redraw
    noise, so there is a line when a task starts and then at most every ``interval`` seconds, as items finish:
    "<model> · <task>: k/N items, ETA …, x tok/s" (a loaded machine may need minutes per model, and a log
    that stays silent that long looks hung). ``clock`` and ``console`` are injectable for tests.
    """

    def __init__(self, shard: Shard | None = None, console: Console | None = None,
                 clock: Callable[[], float] = time.monotonic, interval: float = 30.0) -> None:
        self._shard = f" · shard {shard}" if shard else ""  # which slice of the data this process does
        self.console = console or stderr
        self.clock = clock
        self.interval = interval
        self.progress: Progress | None = None
        self._active = False
        self._bar: TaskID | None = None
        self._label = ""
        self._tokens = 0
        self._seconds = 0.0
        self._unit = "tok/s"  # "prompt tok/s" once a log-likelihood item reports the prompt tokens it read
        self._counts: dict[str, int] = {}
        self._total = 0
        self._done_before = 0
        self._started = 0.0
        self._last_line = 0.0

    def begin(self, model_id: str, task_id: str, total: int, already_done: int) -> None:
        self._label = literal(f"{model_id} · {task_id}{self._shard}", one_line=True)
        if already_done:
            self.note(f"{model_id} · {task_id}: {already_done} of {total} {plural(total, 'item')} already done, "
                      "resuming")
        self._tokens, self._seconds, self._counts, self._unit = 0, 0.0, {}, "tok/s"
        self._total, self._done_before = total, already_done
        self._started = self._last_line = self.clock()
        self._active = True
        if total <= already_done:  # fully resumed: the note says so; an empty bar would only flash
            return
        if not self.console.is_terminal:  # logs and pipes: timed lines, not redraws of a bar
            self.console.print(f"{self._label}: {already_done}/{total} {plural(total, 'item')}, starting",
                               soft_wrap=True)  # a log line stays one line, never broken at 80 columns
            return
        # our own ETA (from the first finished item on), not rich's, which needs several samples first
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(bar_width=20), MofNCompleteColumn(),
            TextColumn("{task.fields[tps]}"), TextColumn("ETA {task.fields[eta]}"), console=self.console,
            transient=True)
        self.progress.start()
        self._bar = self.progress.add_task(self._label, total=total - already_done, tps="- tok/s", eta="…")

    def advance(self, score: Score, tokens: int, seconds: float) -> None:
        """One finished item: ``tokens`` generated in ``seconds``, or for log-likelihood scoring (method
        "loglik:…") the prompt tokens it read."""
        if score.method.startswith("loglik"):
            self._unit = "prompt tok/s"
        self._tokens += tokens
        self._seconds += seconds
        self._counts[score.outcome] = self._counts.get(score.outcome, 0) + 1
        if self.progress is not None and self._bar is not None:
            self.progress.update(self._bar, advance=1, tps=self._rate("-"), eta=self.eta(self.clock()))
            return
        now = self.clock()
        if self._active and now - self._last_line >= self.interval:
            self._last_line = now
            self.console.print(self.progress_line(now), soft_wrap=True)

    def eta(self, now: float) -> str:
        """Time left at the pace of the items finished in this run so far ('unknown' before the first)."""
        finished = sum(self._counts.values())
        left = self._total - self._done_before - finished
        return _duration((now - self._started) / finished * left) if finished else "unknown"

    def progress_line(self, now: float) -> str:
        """'<model> · <task>: k/N items, ETA 3m20s, 12.3 tok/s' from the items finished in this run so far."""
        done = self._done_before + sum(self._counts.values())
        return (f"{self._label}: {done}/{self._total} {plural(self._total, 'item')}, ETA {self.eta(now)}, "
                f"{self._rate('-')}")

    def _rate(self, unknown: str) -> str:
        """'12.3 tok/s' (or 'prompt tok/s'), ``unknown`` plus the unit before any time was measured."""
        return f"{self._tokens / self._seconds:.1f} {self._unit}" if self._seconds > 0 else f"{unknown} {self._unit}"

    def end(self) -> None:
        if not self._active:
            return
        self._active = False
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        if self._counts:
            outcomes = ", ".join(f"{k} {v}" for k, v in sorted(self._counts.items()))
            tps = f", {self._rate('')}" if self._seconds > 0 else ""
            self.console.print(f"{self._label}: {count(sum(self._counts.values()), 'item')} ({outcomes}){tps}",
                               soft_wrap=True)

    def note(self, text: str) -> None:
        """A plain-text note (never markup: it may name models, tasks or files)."""
        self.console.print(f"[dim]{literal(text)}[/dim]")


class ItemLimit(click.ParamType):
    """``--limit``: a whole number of items (>= 1) or a fraction in (0, 1) of each task's items."""

    name = "N|FRACTION"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> int | float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number: int | float = value
        else:
            text = str(value).strip()
            try:
                number = int(text)
            except ValueError:
                try:
                    number = float(text)
                except ValueError:
                    self.fail(f"'{value}' is neither a number of items nor a fraction", param, ctx)
        if isinstance(number, int) and number >= 1:
            return number
        if isinstance(number, float) and 0.0 < number < 1.0:
            return number
        self.fail(f"{value} is not a number of items (>= 1) or a fraction in (0, 1) such as 0.1", param, ctx)


@declare(reads=("database", "config", "data", "prompts", "model"), writes=("database",),
         example=("run", "--model", "smollm2-135m-instruct", "--task", "{task}", "--limit", "1", "--db", "{db}",
                  "--config", "{config}", "--prompts", "{prompts}", "--data", "{task}={data}", "--accept-changed-model"))
@click.command("run")
@click.option("--pair", "pairs", multiple=True, metavar="NAME", help="Run both models of a pair (repeatable).")
@click.option("--model", "model_ids", multiple=True, metavar="ID", help="Run a single model (repeatable).")
@click.option("--arm", "arm_ids", multiple=True, metavar="NAME",
              help="Run an arm: a model with passages from a retrieval index ([arms.NAME] in models.toml; the same "
                   "as --model NAME; docs/retrieval.md). Repeatable.")
@task_option("Task id, see 'medbench-local tasks list' (repeatable, or comma-separated: --task mednli,meqsum).",
             required=True)
@click.option("--data", multiple=True, metavar="[TASK=]PATH",
              help="Dataset file or folder. Default: ./bench_data/<task>, else the sample shipped with "
                   "medbench-local. With several tasks use TASK=PATH.")
@click.option("--db", "db_path", type=DatabasePath(writes=True), default=DEFAULT_DB,
              show_default=True, help="SQLite results database (created if missing).")
@click.option("--limit", type=ItemLimit(),
              help="Only N items of each task, or a fraction (0.1 = 10%, rounded up). A seeded random sample "
                   "(--seed), the same for every model, on resume, and growing with N; see --limit-mode.")
@click.option("--limit-mode", type=click.Choice(LIMIT_MODES), default="random", show_default=True,
              help="How --limit picks items: 'random' (seeded sample, unbiased on label-sorted files such as "
                   "PubMedQA's) or 'first' (the file's first N items, the old behaviour).")
@click.option("--shard", "shard_text", metavar="K/N",
              help="Evaluate only shard K of N (1 <= K <= N): the items whose hash of task and item id falls in "
                   "it, so N machines can split one evaluation and 'medbench-local merge' joins their databases. "
                   "--limit then applies within the shard. Not part of the result identity. A Slurm array "
                   "numbered from 0: --shard $((SLURM_ARRAY_TASK_ID+1))/N, N the full array size (ready-made "
                   "scripts: tools/slurm/, docs/scale-out.md).")
@click.option("--seed", type=LLAMA_SEED, default=1234, show_default=True,
              help="llama.cpp seed (decoding is greedy) and the seed of the --limit sample.")
@click.option("--threads", type=THREADS,
              help="CPU threads for llama.cpp, prompt processing and generation alike. Default: the physical cores "
                   "not busy with other work (1-minute load average), at least 1. Results do not depend on it.")
@click.option("--batch-size", type=BATCH_SIZE, default=512, show_default=True,
              help="llama.cpp n_batch (prompt processing batch; part of the result identity).")
@click.option("--prompts", "prompt_file", type=InputPath("prompts"),
              help="TOML file overriding the task prompt: system, user, answer_prefix.")
@click.option("--scoring", type=click.Choice(list(SCORING)), default="generate",
              show_default=True,
              help="How multiple-choice answers are obtained. generate: free text, read by answer extraction. "
                   "loglik: the option (\" A\", \" B\", ...) the model finds most probable after the prompt, no "
                   "text to read. both: generate and loglik, stored as two evaluations of the same items (compare "
                   "them with 'show --model M --task T --modes generate,loglik'). constrained: generation limited "
                   "by a grammar to the option letters. Free-text tasks only support generate.")
@click.option("--loglik-target", type=click.Choice(["letter", "text"]), default="letter", show_default=True,
              help="Continuations scored by loglik/constrained: the option letter, or the option's text "
                   "(lm-eval style; headline then acc_norm). Part of the result identity.")
@click.option("--kv-reuse", type=click.Choice(["on", "off"]), default="on", show_default=True,
              help="Keep the prompt prefix shared with the previous item (system text, few-shot turns, LongHealth "
                   "records) in the KV cache and process only the rest. Outputs are byte-identical either way "
                   "(README 'Performance'); off processes every prompt from an empty cache.")
@click.option("--document-order", type=click.Choice(["per-question", "per-patient"]), default="per-question",
              show_default=True,
              help="LongHealth: shuffle documents and draw distractors per question (the reference), or per patient "
                   "and repeat, running a patient's questions together so the KV cache keeps their records. Part "
                   "of the result identity.")
@click.option("--retry-errors", is_flag=True, help="Generate again the items that ended in 'error'.")
@click.option("--reference-quirks", is_flag=True,
              help="Reproduce known quirks of the CLUE reference code instead of the correct behaviour, to match "
                   "the published numbers (README 'Reference quirks'; per task: docs/tasks-clue.md).")
@click.option("--accept-changed-model", is_flag=True,
              help="Carry on although a model id's file changed since results were stored (new evaluations).")
@click.option("--allow-cpu", is_flag=True,
              help="Run models configured for the GPU on a CPU-only llama.cpp build (normally refused).")
@click.option("--store-inputs/--no-store-inputs", default=True, show_default=True,
              help="With --no-store-inputs, case texts and rendered prompts are stored as SHA-256 only "
                   "(outputs, gold answers and scores are kept). For data that may contain patient information.")
@config_option
def run_command(pairs: tuple[str, ...], model_ids: tuple[str, ...], arm_ids: tuple[str, ...],
                task_ids: tuple[str, ...],
                data: tuple[str, ...], db_path: Path, limit: int | float | None, limit_mode: str, shard_text: str | None,
                seed: int, threads: int | None, batch_size: int, prompt_file: Path | None, scoring: str,
                loglik_target: str, kv_reuse: str, document_order: str, retry_errors: bool, reference_quirks: bool,
                accept_changed_model: bool, allow_cpu: bool, store_inputs: bool, config_path: Path) -> None:
    """Run models on tasks and store every prompt, generation and score.

    Each model is loaded once, decodes greedily with a fixed seed, and every finished item is committed to
    the database immediately. Running the same command again resumes: items already done for the same model
    file, template, llama.cpp build and task settings are skipped. Ctrl-C (or SIGTERM, SIGHUP) stops after
    the item in flight; a second one aborts at once, even in the middle of a long prompt. Two runs of the same
    model and task on one database share the items instead of colliding.

    \b
    Examples:
      medbench-local run --pair demo --task jama
      medbench-local run --pair demo --task nejm --task jama --db results.db
      medbench-local run --pair openbiollm-8b --task jama \\
          --data jama=~/cases/jama.csv
      medbench-local run --model llama3-8b-instruct --task nejm \\
          --data my_nejm.jsonl --limit 5
      medbench-local run --pair demo --task pubmedqa \\
          --data pubmedqa=~/pubmedqa --limit 0.1
      medbench-local run --pair demo --task jama --shard 2/3 --db shard2.db
          # then, with the other shards: medbench-local merge
      medbench-local run --pair demo --task jama --task mednli --scoring both
      medbench-local run --pair demo --task longhealth \\
          --document-order per-patient
      medbench-local run --model my-served-model --task jama
          # a model with engine = "openai" in models.toml
      medbench-local run --arm smollm2-135m-instruct+demo-guidelines --task jama
          # a model with passages from a retrieval index ([arms.NAME])

    A model with engine = "openai" in models.toml is run on its OpenAI-compatible server (llama-server,
    vLLM, llama-cpp-python's server) with up to max_concurrency items in flight; the run reaches that server
    and no other host (docs/scale-out.md).
    """
    shard = parse_shard(shard_text) if shard_text is not None else None
    for task_id in task_ids:  # every name first: an unknown task is named as such, before any data is looked for
        get_task(task_id)
    explicit = match_data(task_ids, data)
    reporter = ProgressReporter(shard)
    try:
        result = evaluate(task_ids, pairs=pairs, models=model_ids, arms=arm_ids, data=explicit, db=db_path, config=config_path,
                          limit=limit, limit_mode=limit_mode, shard=shard_text, seed=seed, threads=threads,
                          batch_size=batch_size, prompts=prompt_file, scoring=scoring, loglik_target=loglik_target,
                          kv_reuse=kv_reuse == "on", document_order=document_order, retry_errors=retry_errors,
                          reference_quirks=reference_quirks, accept_changed_model=accept_changed_model,
                          allow_cpu=allow_cpu, store_inputs=store_inputs, reporter=reporter,
                          notify=lambda line: stderr.print(f"[dim]{literal(line)}[/dim]", soft_wrap=True),
                          command=sys.argv[:])
    except KeyboardInterrupt:
        reporter.end()
        stderr.print("[yellow]Aborted.[/yellow] Everything committed before the item in flight is kept; "
                      "rerun the same command to resume.")
        sys.exit(130)
    summary, partners = result.summary, result.partners
    which = f" (shard {shard})" if shard else ""
    line = (f"run {summary.run_id[:12]}{which}: {summary.generated} generated, {summary.skipped} already done"
            + (f", {count(summary.errors, 'error')}" if summary.errors else "")
            + (f", {summary.done_elsewhere} finished by a concurrent run" if summary.done_elsewhere else "")
            + (f", {summary.held_elsewhere} left to a concurrent run of the same model and task (rerun "
               "afterwards to fill in anything it does not finish)" if summary.held_elsewhere else ""))
    if summary.status == "interrupted":
        cause = f" ({summary.stop_signal})" if summary.stop_signal and summary.stop_signal != "SIGINT" else ""
        stderr.print(f"[yellow]Stopped after the item in flight{cause}.[/yellow] {line}. "
                     "Rerun the same command to resume.")
        sys.exit(130)
    if summary.status == "failed":
        raise UserError(f"{line}: every item failed, the run is recorded as failed (first error: "
                        f"{summary.first_error[:300]}); fix the cause, then rerun with --retry-errors")
    stdout.print(line)
    if shard:
        stdout.print(f"Join the {shard.count} shards' databases with: medbench-local merge merged.db "
                     "shard1.db shard2.db ...")
    for partner, task_list in partners.items():
        stdout.print(f"Next, the other model of its pair: medbench-local run --model {literal(partner)} --task "
                     f"{','.join(task_list)} --db {literal(db_path)}", soft_wrap=True)
    stdout.print(f"{'Then compare' if partners else 'Compare'} with: medbench-local compare --db {literal(db_path)}",
                 soft_wrap=True)
