"""The ``medbench-local`` command line: one module per command group (the simonw/llm layout, split early).

Errors that are the user's to fix (``UserError``) become one line on stderr and exit code 1; anything else
is a bug and keeps its traceback.
"""

from __future__ import annotations

import re

import click

from ..errors import UserError
from ..gates.files import command_scope
from ..gates.secrets import redact
from ..version import __version__
from .compare import compare_command
from .contamination import contamination_command
from .export import export_command
from .index import index_group
from .merge import merge_command
from .models import models_group
from .report import report_command
from .reproduce import reproduce_command
from .rescore import rescore_command
from .run import run_command
from .runs import runs_command
from .safe_text import plain
from .show import show_command
from .tasks import tasks_group
from .view import view_command


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> object:
        try:
            with command_scope():  # the inputs a command reads are protected from its outputs (gates/files.py)
                return super().invoke(ctx)
        except UserError as exc:  # messages quote file content, names and servers' answers: one line, control
            # characters visible, no API key or Authorization text (gates/secrets.py)
            raise click.ClickException(plain(redact(str(exc)), one_line=True)) from None
        except click.UsageError as exc:
            _hint_task_lists(exc)
            raise


def _hint_task_lists(exc: click.UsageError) -> None:
    """``--task jama mednli`` (lm-eval users type lists so): Click's "unexpected extra argument (mednli)" gains
    the spelling that works, ``--task jama,mednli``."""
    from ..tasks import task_ids

    found = re.match(r"Got unexpected extra arguments? \((.*)\)", exc.message)
    if not found or exc.ctx is None or "task_ids" not in exc.ctx.params:
        return
    extra = found.group(1).split()
    if extra and set(extra) <= set(task_ids()):
        given = tuple(exc.ctx.params.get("task_ids") or ())
        exc.message = (f"{exc.message}: separate several tasks with commas: "
                       f"--task {','.join(dict.fromkeys((*given, *extra)))}")


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="medbench-local")
def main() -> None:
    """Does this biomedical fine-tune beat its general-purpose base on our clinical tasks?

    Runs GGUF models in-process through llama.cpp, fully offline, stores every prompt and generation in
    SQLite, and compares each biomedical model with its general counterpart.

    \b
    A first session:
      medbench-local models list              # models.toml's models: on disk?
      medbench-local tasks list               # the tasks and their data formats
      medbench-local run --pair demo --task jama --db results.db
      medbench-local compare --db results.db  # both models, side by side
      medbench-local runs --db results.db     # what each run did
      medbench-local view --db results.db     # browse it all (extra: [view])
    """


main.add_command(run_command)
main.add_command(compare_command)
main.add_command(export_command)
main.add_command(show_command)
main.add_command(report_command)
main.add_command(reproduce_command)
main.add_command(rescore_command)
main.add_command(merge_command)
main.add_command(models_group)
main.add_command(index_group)
main.add_command(tasks_group)
main.add_command(runs_command)
main.add_command(view_command)
main.add_command(contamination_command)
from .bundle import bundle_group  # noqa: E402  (air-gapped workflow)
from .doctor import doctor_command  # noqa: E402
from .helptext import use_everywhere  # noqa: E402

main.add_command(bundle_group)
main.add_command(doctor_command)
use_everywhere(main)  # --help wraps between words only (helptext.py)
