"""Issue 9 §1 per task: an echoed option list is unparseable and a letter stated with another option's text is a
``conflict``, with accuracy 0, in every multiple-choice task (case challenges, public MCQ, LongHealth), and the
new outcome is shown wherever outcomes are listed."""

from __future__ import annotations

import pytest
from rapidfuzz import fuzz

from medbench_local.cli.compare import OUTCOME_COLUMNS
from medbench_local.engine.base import Generation
from medbench_local.metrics.extraction import EXTRACTION_VERSION, Extraction
from medbench_local.report.plots import OUTCOME_COLOURS, UNPAIRED
from medbench_local.tasks import get_task
from medbench_local.tasks.base import OUTCOMES, Item
from medbench_local.tasks.choice_scoring import score_choice
from medbench_local.tasks.longhealth import LongHealthTask

from .conftest import REPO

BENCH = REPO / "bench_data"
MCQ_TASKS = ("nejm", "jama", "medqa", "pubmedqa", "mmlu_medical", "medmcqa")


def _gen(output: str, finish: str = "stop") -> Generation:
    return Generation(prompt_text="", output=output, prompt_tokens=10, truncated_tokens=0, completion_tokens=3,
                      finish_reason=finish, seconds=0.01)


def _items(task_id: str) -> list[Item]:
    return get_task(task_id).load(BENCH / task_id).items


def _other(options: dict[str, str], letter: str) -> str:
    """The option whose text is least like ``letter``'s (still possibly close: "Vitamin C" / "Vitamin D")."""
    return min((k for k in options if k != letter),
               key=lambda k: fuzz.ratio(options[k].casefold(), options[letter].casefold()))


ECHOES = [":\n{lettered}", " {lettered}", "\n{lettered}", ":\n\n{numbered}", " {letters}", ":\n{texts}",
          " {inline}"]


def _echo(template: str, options: dict[str, str]) -> str:
    return template.format(
        lettered="\n".join(f"{k}. {v}" for k, v in options.items()),
        numbered="\n".join(f"{i}. {v}" for i, v in enumerate(options.values(), 1)),
        letters="\n".join(options), texts="\n".join(options.values()),
        inline=" ".join(f"({k}) {v}" for k, v in options.items()))


@pytest.mark.parametrize("task_id", MCQ_TASKS)
@pytest.mark.parametrize("template", ECHOES)
def test_an_echoed_option_list_is_unparseable(task_id: str, template: str) -> None:
    task = get_task(task_id)
    for item in _items(task_id)[:3]:
        score = task.score(item, _gen(_echo(template, item.payload["options"])))
        assert (score.outcome, score.extracted, score.method) == ("unparseable", None, "echo"), score.detail
        assert score.metrics == {"accuracy": 0.0}


@pytest.mark.parametrize("task_id", MCQ_TASKS)
def test_an_echo_then_a_statement_counts(task_id: str) -> None:
    task = get_task(task_id)
    item = _items(task_id)[0]
    gold = item.payload["answer"]
    score = task.score(item, _gen(_echo(":\n{lettered}", item.payload["options"]) + f"\n\nThe answer is {gold}."))
    assert (score.outcome, score.extracted) == ("correct", gold)


@pytest.mark.parametrize("task_id", MCQ_TASKS)
@pytest.mark.parametrize("shape", [" {L}. {t}.", " **{L}. {t}**", ": {L}: {t}", "\n\nFinal answer: ({L}) {t}"])
def test_a_letter_with_another_options_text_is_a_conflict(task_id: str, shape: str) -> None:
    task = get_task(task_id)
    for item in _items(task_id)[:3]:
        options, gold = item.payload["options"], item.payload["answer"]
        other = _other(options, gold)
        for stated, text in ((gold, options[other]), (other, options[gold])):  # the gold letter is not credited
            for finish in ("stop", "length"):  # a conflict is never "truncated": the model did answer
                score = task.score(item, _gen(shape.format(L=stated, t=text), finish))
                assert (score.outcome, score.extracted, score.method) == ("conflict", None, "conflict")
                assert score.metrics == {"accuracy": 0.0}
        own = task.score(item, _gen(shape.format(L=gold, t=options[gold])))
        assert (own.outcome, own.extracted) == ("correct", gold)


@pytest.mark.parametrize("task_id", MCQ_TASKS)
def test_the_extraction_version_is_part_of_the_task_settings(task_id: str) -> None:
    assert get_task(task_id).settings()["extraction"].endswith(f" v{EXTRACTION_VERSION}")


def test_pubmedqa_label_word_does_not_read_an_echo_of_the_labels() -> None:
    task = get_task("pubmedqa")
    item = next(i for i in _items("pubmedqa") if i.payload["answer"] == "A")  # gold "yes", the first label
    for output in (" yes\nno\nmaybe", "\nYes\nNo\nMaybe", ": **Yes**\n**No**\n**Maybe**", " yes\n\nno"):
        score = task.score(item, _gen(output))
        assert (score.outcome, score.extracted, score.method) == ("unparseable", None, "echo"), output
    assert task.score(item, _gen(" yes, the abstract shows no difference")).outcome == "correct"


# ---- LongHealth ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def longhealth() -> dict[str, Item]:
    return {item.id: item for item in LongHealthTask().load(BENCH / "longhealth").items}


@pytest.mark.parametrize("item_id", ["patient_01/q01/task1/r1", "patient_01/q01/task2/r1",
                                     "patient_01/q01/task3/r1"])
def test_longhealth_echo_and_conflict(longhealth: dict[str, Item], item_id: str) -> None:
    task, item = LongHealthTask(), longhealth[item_id]
    options, gold, n = item.payload["options"], item.payload["gold"], item.payload["task"]
    zero = {"accuracy": 0.0, f"task{n}": 0.0, **({"task2_abstained": 0.0} if n == 2 else {}),
            **({"task3_hallucinated": 0.0} if n == 3 else {})}
    listing = "\n".join(f"{k}: {v}" for k, v in options.items())
    for output in ("The correct answer is " + listing, listing, "The correct answer is:\n" + listing):
        score = task.score(item, _gen(output))
        assert (score.outcome, score.extracted, score.method) == ("unparseable", None, "echo"), output
        assert {k: v for k, v in score.metrics.items() if k in zero} == zero
    other = _other(options, gold)
    for stated, text in ((gold, options[other]), (other, options[gold])):
        score = task.score(item, _gen(f"The correct answer is {stated}: {text}."))
        assert (score.outcome, score.extracted, score.method) == ("conflict", None, "conflict")
        assert {k: v for k, v in score.metrics.items() if k in zero} == zero
    right = task.score(item, _gen(f"The correct answer is {gold}: {options[gold]}."))
    assert (right.outcome, right.method) == ("correct", "reference_regex")


def test_longhealth_unread_task3_answer_is_no_hallucination(longhealth: dict[str, Item]) -> None:
    """Nothing read (or not credited) on Task 3 is a format failure, not a hallucinated answer."""
    score = LongHealthTask().score(longhealth["patient_01/q01/task3/r1"], _gen("I am not sure."))
    assert score.outcome == "unparseable" and score.metrics["task3_hallucinated"] == 0.0


def test_longhealth_reference_quirks_keep_reading_the_regex_alone(longhealth: dict[str, Item]) -> None:
    item = longhealth["patient_01/q01/task1/r1"]
    options, gold = item.payload["options"], item.payload["gold"]
    other = _other(options, gold)
    quirky = LongHealthTask(reference_quirks=True)
    score = quirky.score(item, _gen(f"The correct answer is {gold}: {options[other]}."))
    assert (score.outcome, score.extracted) == ("correct", gold)  # what the reference code counted


# ---- the shared rule and the places that list outcomes ---------------------------------------------------------


def test_score_choice_outcomes() -> None:
    assert score_choice("B", Extraction("B", "explicit", "x"), "stop").outcome == "correct"
    assert score_choice("B", Extraction("C", "explicit", "x"), "length").outcome == "wrong"
    assert score_choice("B", Extraction(None, "none", "x"), "stop").outcome == "unparseable"
    assert score_choice("B", Extraction(None, "echo", "x"), "length").outcome == "truncated"
    conflict = score_choice("B", Extraction(None, "conflict", "x"), "length")
    assert (conflict.outcome, conflict.extracted, conflict.metrics) == ("conflict", None, {"accuracy": 0.0})


def test_conflict_is_an_outcome_listed_everywhere() -> None:
    assert OUTCOMES.index("conflict") == OUTCOMES.index("unparseable") + 1
    assert tuple(OUTCOME_COLUMNS) == OUTCOMES
    assert set(OUTCOME_COLOURS) == set(OUTCOMES) | {UNPAIRED}  # plus the grey of items not compared
