"""The task contract: metrics, configuration and per-item state are declared by the tasks, and declaring them
changed no evaluation identity.

The settings table was computed on main before the contract existed (``replace(task, reference_quirks=True)``
and ``replace(task, document_order="per-patient")`` were what ``run`` did then); ``configure`` must give the
same settings, hence the same evaluation keys, for every task and option.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from medbench_local.engine.base import Generation
from medbench_local.errors import UserError
from medbench_local.metrics.extraction import EXTRACTION_VERSION
from medbench_local.prompting import Prompt
from medbench_local.tasks import MetricSpec, get_task, task_ids
from medbench_local.tasks.base import METRIC_KINDS, Item, PromptContext, canonical_json

# sha256(canonical_json(task.settings()))[:16] on main at 0b3dd08
SETTINGS_ON_MAIN: dict[tuple[str, str], str] = {
    ("nejm", "default"): "f9cc2fcb1a249ed9",
    ("jama", "default"): "954f506a38ef61e7",
    ("medqa", "default"): "6ee1dcdc86203c75",
    ("pubmedqa", "default"): "2b239c80d7c00f51",
    ("mmlu_medical", "default"): "32c4c7628823cd7e",
    ("medmcqa", "default"): "40b4d93ba8f7ae3e",
    ("mednli", "default"): "b4f69a6ea0b3a777",
    ("mednli", "reference_quirks"): "bb44481f2761e763",
    ("meqsum", "default"): "05e8a0097ae1028d",
    ("meqsum", "reference_quirks"): "06437043e60d987c",
    ("problem_summary", "default"): "3d815127e20c217a",
    ("problem_summary", "reference_quirks"): "6246962ae9511dce",
    ("medisumqa", "default"): "35595d9b530f9d35",
    ("medisumqa", "reference_quirks"): "aa074f6d5c7b03f9",
    ("medisumcode", "default"): "2ea7f48829e20173",
    ("medisumcode", "reference_quirks"): "29b8353b70c3a980",
    ("longhealth", "default"): "c71124804597cb30",
    ("longhealth", "reference_quirks"): "5f44c6b2f2b387cc",
    # changed on purpose after main: per-patient assembly version 2 (documents in the group order, the cut one
    # last) is a new identity; main's per-patient digest was aaa6312fe7e44761 (tests/test_longhealth_prefix.py)
    ("longhealth", "per-patient"): "198ed3a62454aec7",
}
BUILT_IN = sorted({task for task, _ in SETTINGS_ON_MAIN})


# The extraction version the table was computed with. A new extraction version changes the keys of the
# multiple-choice evaluations on purpose (``rescore --extraction`` carries old ones over); everything else must not.
TABLE_EXTRACTION_VERSION = "2"


def _digest(settings: dict) -> str:
    """The table's digest of ``settings``, with today's extraction version written as the table's."""
    extraction = settings.get("extraction")
    if isinstance(extraction, str) and extraction.endswith(f" v{EXTRACTION_VERSION}"):
        settings = {**settings, "extraction": extraction[: -len(EXTRACTION_VERSION)] + TABLE_EXTRACTION_VERSION}
    return hashlib.sha256(canonical_json(settings).encode("utf-8")).hexdigest()[:16]


def _variants(task_id: str) -> dict[str, object]:
    task = get_task(task_id)
    return {"default": task, "reference_quirks": task.configure(reference_quirks=True),
            "per-patient": task.configure(document_order="per-patient")
            if "document_order" in task.configurable else task}


@pytest.mark.parametrize("task_id", BUILT_IN)
def test_settings_are_unchanged_from_main_for_every_task_and_option(task_id: str) -> None:
    for variant, task in _variants(task_id).items():
        expected = SETTINGS_ON_MAIN.get((task_id, variant), SETTINGS_ON_MAIN[(task_id, "default")])
        assert _digest(task.settings()) == expected, (task_id, variant)


def test_every_built_in_task_is_in_the_table() -> None:
    assert set(BUILT_IN) <= set(task_ids())


@pytest.mark.parametrize("task_id", BUILT_IN)
def test_metrics_are_declared_values(task_id: str) -> None:
    task = get_task(task_id)
    assert task.metrics and all(isinstance(m, MetricSpec) and m.kind in METRIC_KINDS for m in task.metrics)
    names = [m.name for m in task.metrics]
    assert len(names) == len(set(names))
    assert set(task.reported_metrics) <= set(names) and set(task.metric_names) <= set(names)
    assert set(task.study.clue_metrics) <= set(names)
    assert {metric for _, metric in task.study.published_columns} <= set(names)
    # an error item scores zero on metrics the task computes, never on optional ones (those come from rescore)
    optional = {m.name for m in task.metrics if m.optional}
    item = Item("x", {"task": 2})
    zeros = task.error_metrics(item)
    assert zeros and set(zeros) <= set(task.metric_names) and not set(zeros) & optional
    assert all(v == 0.0 for v in zeros.values())


def test_metric_kind_is_validated() -> None:
    with pytest.raises(ValueError, match="kind must be one of binary, continuous"):
        MetricSpec("accuracy", kind="ordinal")


@pytest.mark.parametrize("task_id", BUILT_IN)
def test_configure_returns_a_copy_and_leaves_the_registry_alone(task_id: str) -> None:
    task = get_task(task_id)
    before = task.settings()
    task.configure(reference_quirks=True)
    assert get_task(task_id).settings() == before
    assert task.configure() is task  # nothing asked, nothing changed


@pytest.mark.parametrize("task_id", [t for t in BUILT_IN if t != "longhealth"])
def test_document_order_on_a_task_without_documents_is_refused(task_id: str) -> None:
    with pytest.raises(UserError, match=f"task '{task_id}' has no documents to order"):
        get_task(task_id).configure(document_order="per-patient")
    assert get_task(task_id).configure(document_order="per-question") is get_task(task_id)


def test_reference_quirks_on_a_task_without_quirks_is_a_no_op() -> None:
    for task_id in ("nejm", "jama", "medqa", "pubmedqa", "mmlu_medical", "medmcqa"):
        task = get_task(task_id)
        assert "reference_quirks" not in task.configurable
        assert task.configure(reference_quirks=True).settings() == task.settings()


def test_prompt_override_goes_through_configure(tmp_path: Path) -> None:
    override = tmp_path / "p.toml"
    override.write_text('system = "Be brief."\n', encoding="utf-8")
    task = get_task("jama").configure(prompts=override)
    assert task.template.system == "Be brief." and task.settings() != get_task("jama").settings()
    assert get_task("jama").template.system != "Be brief."


def _fake_generation(prompt_text: str, output: str) -> Generation:
    return Generation(prompt_text=prompt_text, output=output, prompt_tokens=1, truncated_tokens=0,
                      completion_tokens=1, finish_reason="stop", seconds=0.0)


def test_longhealth_assembly_travels_with_the_prompt_not_the_task() -> None:
    """Two items prompted before either is scored (as a pool of engines or a re-ordered run would) each get
    their own assembly facts; the frozen task holds no per-item state."""
    task = get_task("longhealth")
    data = task.load(Path(__file__).resolve().parent.parent / "bench_data" / "longhealth")
    context = PromptContext(documents=data.documents, count_tokens=lambda text: len(text.split()), n_ctx=4096)
    first, second = data.items[0], data.items[1]
    p1, p2 = task.prompt(first, context), task.prompt(second, context)
    assert p1.plan is not None and p2.plan is not None and p1.plan is not p2.plan
    s2 = task.score(second, _fake_generation(p2.user, "The correct answer is A: x"), p2.plan)
    s1 = task.score(first, _fake_generation(p1.user, "The correct answer is A: x"), p1.plan)
    for item, score, plan in ((first, s1, p1.plan), (second, s2, p2.plan)):
        assert score.metrics["budget_tokens"] == float(plan.budget), item.id
        assert plan.summary() in score.detail
    assert not any(isinstance(v, dict) for v in vars(task).values())  # no hidden per-item dict
    unplanned = task.score(first, _fake_generation(p1.user, "The correct answer is A: x"))
    assert "budget_tokens" not in unplanned.metrics and "not recorded" in unplanned.detail


def test_plan_does_not_change_prompt_equality() -> None:
    assert Prompt("s", "u", plan={"a": 1}) == Prompt("s", "u", plan=None)


def _task_id_uses(source: str, ids: set[str]) -> list[int]:
    """Lines where a task id is compared with, used as a dict key / subscript, or listed in a collection: the
    shapes a central per-task table or an ``if task == "..."`` check takes (help examples and docs are fine)."""
    import ast

    lines = []
    for node in ast.walk(ast.parse(source)):
        pools: list[ast.AST] = []
        if isinstance(node, ast.Compare):
            pools = [node.left, *node.comparators]
        elif isinstance(node, ast.Dict):
            pools = [k for k in node.keys if k is not None]
        elif isinstance(node, ast.Subscript):
            pools = [node.slice]
        elif isinstance(node, (ast.Set, ast.Tuple, ast.List)):
            pools = list(node.elts)
        lines += [p.lineno for p in pools if isinstance(p, ast.Constant) and p.value in ids]
    return lines


def test_no_task_id_is_tested_outside_tasks() -> None:
    package = Path(__file__).resolve().parent.parent / "medbench_local"
    ids = set(task_ids())
    found = {str(path.relative_to(package)): lines for path in sorted(package.rglob("*.py"))
             if "tasks" not in path.relative_to(package).parts[:1]
             and (lines := _task_id_uses(path.read_text(encoding="utf-8"), ids))}
    assert found == {}


def test_the_task_id_guard_sees_the_old_shapes() -> None:
    ids = {"longhealth", "meqsum"}
    assert _task_id_uses('double = quirks and task != "longhealth"\n', ids) == [1]
    assert _task_id_uses('MODELS = {"meqsum": 1}\n', ids) == [1]
    assert _task_id_uses('x = MODELS["meqsum"]\n', ids) == [1]
    assert _task_id_uses('"""mentions longhealth in prose"""\n', ids) == []
