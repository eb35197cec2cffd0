"""``run --no-store-inputs`` keeps every input text out of everything the tool writes (issue 10, class 12).

The cases carry unique marker strings as their case text and option texts. The (fake) model answers with a
slightly misspelled option text, so the answer is read by the fuzzy rule, whose explanation used to quote
the matched option text. No marker may appear in the database file's bytes (WAL included), the exports or
the report. Outputs and gold answers are kept by design (they are what the scores are computed from).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medbench_local.config import LocalSource, ModelSpec, load_config
from medbench_local.engine.base import GenerateRequest, Generation, ModelInfo
from medbench_local.engine.identity import identity as engine_identity
from medbench_local.prompting import Prompt
from medbench_local.prompting.prompt_format import render_base
from medbench_local.runner import ModelRole, RunOptions, execute, load_tasks
from medbench_local.store import close_database, open_database, writer
from medbench_local.tasks import get_task

from .conftest import REPO, invoke, rows

MARKERS = {"case": "Qzxv case marker Kappa", "question": "Qzxv question marker Lambda",
           "A": "Wombatine glossoplexy", "B": "Quintessal marrowfume", "C": "Zebrafold pyrexate",
           "D": "Hollowmere cardiopsis"}


class MisspellingEngine:
    """Answers every item with option B's text, misspelled: only the fuzzy rule can read it."""

    def __init__(self, spec: ModelSpec) -> None:
        self.settings: dict[str, Any] = {"n_ctx": 4096, "seed": 1, "n_threads": 1}
        self.info = ModelInfo(model_id=spec.id, path=f"/fake/{spec.id}.gguf", sha256=spec.id[0] * 64,
                              size_bytes=1, prompt_mode="base", chat_template=None, chat_template_sha256=None)

    def identity(self) -> dict[str, Any]:  # as an in-process engine's, with a fixed build
        return engine_identity(self.info.sha256, self.info.chat_template_sha256, self.settings, build="fake")

    def render(self, prompt: Prompt) -> str:
        return render_base(prompt)

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def generate(self, request: GenerateRequest) -> Generation:
        answer = " I think it is quintesal marowfume."
        return Generation(prompt_text=self.render(request.prompt), output=answer, prompt_tokens=10,
                          truncated_tokens=0, completion_tokens=8, finish_reason="stop", seconds=0.01)

    def close(self) -> None:
        pass


class Quiet:
    def begin(self, *args: object) -> None: ...
    def advance(self, *args: object) -> None: ...
    def end(self) -> None: ...
    def note(self, text: str) -> None: ...


def _cases(path: Path) -> Path:
    lines = []
    for n in range(3):
        lines.append(json.dumps({"id": f"c{n}", "case": f"{MARKERS['case']} {n}", "question": MARKERS["question"],
                                 "options": {k: MARKERS[k] for k in "ABCD"}, "answer": "B"}))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_no_input_text_reaches_the_database_exports_or_report(tmp_path: Path) -> None:
    config = load_config(REPO / "models.toml")
    tasks = load_tasks([(get_task("jama"), _cases(tmp_path / "cases.jsonl"))], None)
    db_path = tmp_path / "private.db"
    db = open_database(db_path)
    writer.record_pair(db, "p", "bio", "gen", "")
    models = [ModelRole(ModelSpec(id=mid, role=role, source=LocalSource(Path(f"/fake/{mid}.gguf"))), role)  # type: ignore[arg-type]
              for mid, role in (("bio", "biomedical"), ("gen", "general"))]
    summary = execute(db, config, models, tasks, {m.spec.id: Path("/fake") for m in models},
                      RunOptions(store_inputs=False), Quiet(), engine_factory=lambda s, p, o: MisspellingEngine(s))
    close_database(db)
    assert summary.generated == 6
    assert rows(db_path, "select distinct method, extracted from scores") == [("fuzzy", "B")]  # read by fuzzy

    outputs = {"database": db_path.read_bytes()}
    wal = db_path.with_name(db_path.name + "-wal")
    if wal.exists():
        outputs["wal"] = wal.read_bytes()
    for fmt in ("csv", "jsonl"):
        out = tmp_path / f"items.{fmt}"
        invoke("export", "--db", str(db_path), "--format", fmt, "-o", str(out))
        outputs[f"export {fmt}"] = out.read_bytes()
    invoke("export", "--db", str(db_path), "--aggregate", "-o", str(tmp_path / "agg.csv"))
    outputs["export aggregate"] = (tmp_path / "agg.csv").read_bytes()
    invoke("report", "--db", str(db_path), "-o", str(tmp_path / "report.html"), "--resamples", "200")
    outputs["report"] = (tmp_path / "report.html").read_bytes()
    shown = invoke("show", "--db", str(db_path), "--pair", "p", "--task", "jama").output
    outputs["show"] = shown.encode()

    leaks = {(where, name) for where, content in outputs.items() for name, marker in MARKERS.items()
             if marker.encode() in content or marker.lower().encode() in content.lower()}
    assert not leaks
    detail, = {d for (d,) in rows(db_path, "select distinct detail from scores")}
    assert "option B" in detail and "[input text]" in detail  # the explanation stays useful
