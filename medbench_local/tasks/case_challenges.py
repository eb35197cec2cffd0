"""NEJM- and JAMA-style clinical case challenges: multiple choice, text only, scored by accuracy.

The study's exact prompt and parsing are unknown to us (docs/study-reference.md#case-challenges), so we use our
own wording: a physician persona, the case, the question, lettered options, and a request to answer "The answer
is X". The answer prefix "The answer is" is appended after the generation prompt (as the CLUE reference does
with its task prefixes), which nudges both chat and base models to name a letter first. The extraction cascade
then reads prefix + output; an answer that cannot be read is ``unparseable`` (or ``truncated`` when the token
budget ran out first) and counts as wrong, but is always reported; so are echoed option lists (unparseable) and
letters stated with another option's text (``conflict``), see metrics/extraction.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..engine.base import Generation
from ..metrics.extraction import extract_choice, extraction_setting
from ..prompting import Prompt
from .base import ACCURACY, Item, MetricSpec, PromptContext, Score, StudyRole, TaskBase, TaskData
from .choice_scoring import score_choice
from .datafiles import DataLayout
from .loglik_scoring import ChoiceSet, continuation
from .mcq_data import load_mcq
from .prompts import PromptTemplate

CASE_CHALLENGE_PROMPT = PromptTemplate(
    system=("You are an experienced attending physician solving a clinical case challenge. Read the case, weigh "
            "every option, and commit to the single best answer."),
    user=("Case:\n{case}\n\nQuestion: {question}\n\nOptions:\n{options}\n\n"
          "Which option ({letters}) is the single best answer? Begin your reply with \"The answer is\" "
          "followed by its letter."),
    answer_prefix="The answer is",
)

DATA_FORMAT = ("JSONL {id, case, question, options{A..}, answer} or CSV id,case,question,A,B,...,answer "
               "(see bench_data/README.md)")

_CASES = tuple({"id": f"c{n}", "case": f"A {50 + n}-year-old with chest pain.", "question": "Next step?",
                "A": "ECG", "B": "Discharge", "C": "Antacids", "D": "Observe", "answer": "A"} for n in range(2))
CASES_JSONL = DataLayout("cases.jsonl", "jsonl", tuple(
    {k: v for k, v in case.items() if len(k) > 1} | {"options": {k: v for k, v in case.items() if len(k) == 1}}
    for case in _CASES), text_fields=("id", "case", "question", "answer"), id_field="id")
CASES_CSV = DataLayout("cases.csv", "csv", _CASES, text_fields=("id", "case", "question", "answer"), id_field="id")


@dataclass(frozen=True)
class CaseChallengeTask(TaskBase):
    id: str
    title: str
    description: str
    template: PromptTemplate = CASE_CHALLENGE_PROMPT
    max_tokens: int = 64
    stop: tuple[str, ...] = ("\n\n",)
    data_format: str = DATA_FORMAT
    metrics: tuple[MetricSpec, ...] = (ACCURACY,)
    study: StudyRole = StudyRole()  # the benchmark's name in the study abstract's table: study_benchmark
    data_layout: DataLayout = field(default=CASES_JSONL, compare=False, repr=False)  # what its files look like
    configurable = ("prompts",)
    multiple_choice = True

    def load(self, path: Path) -> TaskData:
        return TaskData(load_mcq(path))

    def prompt(self, item: Item, context: PromptContext) -> Prompt:
        options = "\n".join(f"{letter}. {text}" for letter, text in item.payload["options"].items())
        letters = list(item.payload["options"])
        user = self.template.user.format(case=item.payload["case"], question=item.payload["question"],
                                         options=options, letters=", ".join(letters[:-1]) + " or " + letters[-1])
        return Prompt(system=self.template.system, user=user, answer_prefix=self.template.answer_prefix)

    def score(self, item: Item, generation: Generation, plan: Any = None) -> Score:
        found = extract_choice(self.template.answer_prefix + generation.output, item.payload["options"],
                               instructions=self.template.user)
        return score_choice(item.payload["answer"], found, generation.finish_reason)

    def choices(self, item: Item, context: PromptContext, target: str = "letter") -> ChoiceSet:
        """The options as continuations of the prompt's answer prefix: " A", " B", ... (``target="letter"``) or
        each option's text (``"text"``), for ``run --scoring loglik|constrained``."""
        prompt = self.prompt(item, context)
        options = {letter: continuation(prompt.answer_prefix, letter if target == "letter" else text)
                   for letter, text in item.payload["options"].items()}
        return ChoiceSet(prompt, options, item.payload["answer"])

    def settings(self) -> dict[str, Any]:
        return {"task": self.id, "max_tokens": self.max_tokens, "stop": list(self.stop),
                "prompt_sha256": self.template.sha256,
                "extraction": extraction_setting("explicit>lone_letter>fuzzy(85,5)")}


TASKS = [
    CaseChallengeTask(
        id="nejm", title="NEJM-style case challenges",
        description="Diagnosis from a clinical vignette (image findings described in text); usually 5 options.",
        study=StudyRole(study_benchmark="NEJM")),
    CaseChallengeTask(
        id="jama", title="JAMA-style clinical challenges",
        description="Next step in management from a clinical vignette; usually 4 options.",
        study=StudyRole(study_benchmark="JAMA"), data_layout=CASES_CSV),
]
