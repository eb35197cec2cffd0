"""MedNLI (CLUE): natural language inference on sentence pairs from clinical notes, scored by accuracy.

Data: the PhysioNet release ``mli_test_v1.jsonl`` (JSON Lines, SNLI schema; credentialed access): fields
``sentence1`` (premise), ``sentence2`` (hypothesis), ``gold_label`` (entailment / neutral / contradiction)
and ``pairID`` (the item id; ``mednli-<line>`` when absent). Other fields (parses, ...) are ignored. A folder
is searched for ``mli_test_v1.jsonl`` (else its only ``.jsonl`` file).

As in the CLUE reference (docs/study-reference.md#the-clue-pipeline, #mednli): the first 3 records are the
few-shot examples and are not evaluated (1,422 test pairs -> 1,419 evaluated); the few-shot answer is the gold
label as written in the file; no answer prefix; 20 new tokens; the output is cleaned with the reference regex
before scoring.

Scoring (``Score.extracted`` holds the label read, ``Score.detail`` why):

* default (correct behaviour): the cleaned output must name exactly one of ENTAILMENT / NEUTRAL /
  CONTRADICTION as a whole word, case-insensitively. Mentions that are negated ("not a contradiction",
  "no entailment") are ignored. No label, only negated labels, or two different labels ("ENTAILMENT or
  NEUTRAL") -> ``unparseable`` (``truncated`` if the token budget ran out); accuracy 0 for those.
* ``reference_quirks=True`` (``run --reference-quirks``): the reference rule, correct iff the upper-cased gold
  label occurs *exactly once* as a substring of the upper-cased output (``re.findall``), so "ENTAILMENT or
  NEUTRAL" counts as correct for an entailment pair while "Entailment. Final answer: entailment" does not.
  Outputs that fail the rule are ``wrong`` when they mention any label, else ``unparseable``/``truncated``.
  Quirk mode also sends no task stop strings (the reference passed none).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..engine.base import Generation
from ..errors import DataError
from ..prompting import Prompt
from .base import ACCURACY, Item, MetricSpec, PromptContext, Score, StudyRole, TaskBase, TaskData
from .clue_common import CLEANUP_VERSION, clean_output, split_shots, user_block_stop
from .datafiles import DataLayout, check_unique_ids, find_data_file, jsonl_records, optional_text, required_text
from .loglik_scoring import ChoiceSet, continuation
from .prompts import PromptTemplate

LABELS: tuple[str, ...] = ("ENTAILMENT", "NEUTRAL", "CONTRADICTION")
MEDNLI_FILE = "mli_test_v1.jsonl"
SCORING_VERSION = "mednli-strict-v1"            # default rule, recorded in settings
QUIRK_SCORING_VERSION = "clue-2024-label-count"  # reference rule

MEDNLI_PROMPT = PromptTemplate(
    system=("You support clinicians by checking statements against patient records. Each request gives a "
            "PREMISE, a sentence from a clinical note, and a HYPOTHESIS about the same patient. Decide how "
            "the hypothesis relates to the premise and reply with one label only: ENTAILMENT if the premise "
            "shows the hypothesis is true, CONTRADICTION if the premise shows it is false, NEUTRAL if the "
            "premise does not settle it."),
    user="PREMISE: {sentence1}\nHYPOTHESIS: {sentence2}",
    answer_prefix="",
)

DATA_FORMAT = (f"PhysioNet MedNLI JSON Lines ({MEDNLI_FILE}): sentence1, sentence2, gold_label, pairID; "
               "first 3 records are few-shot examples (docs/tasks-clue.md)")

_LABEL_RE = re.compile(r"\b(entailment|neutral|contradiction)\b", re.IGNORECASE)
# a negation word up to two words before a label: "not a contradiction", "no clear entailment", "isn't neutral"
# (the words in between are separated by spaces only: "no contradiction, so: entailment" negates nothing)
_NEGATED_RE = re.compile(r"\b(?:not|no|never|neither|nor|isn't|isnt|without|rather\s+than|instead\s+of)"
                         r"\s+(?:[\w-]+\s+){0,2}[\"'(*]*$", re.IGNORECASE)


def parse_label(text: str) -> tuple[str | None, str]:
    """Strict reading of a MedNLI answer: (label or None, detail). See the module docstring."""
    asserted: list[str] = []
    negated: list[str] = []
    for match in _LABEL_RE.finditer(text):
        before = text[max(0, match.start() - 40): match.start()]
        (negated if _NEGATED_RE.search(before) else asserted).append(match.group(1).upper())
    distinct = sorted(set(asserted), key=LABELS.index)
    if len(distinct) == 1:
        ignored = f" (negated mention ignored: {', '.join(sorted(set(negated)))})" if negated else ""
        return distinct[0], f"label {distinct[0]}{ignored}"
    if len(distinct) > 1:
        return None, f"several labels: {', '.join(distinct)}"
    if negated:
        return None, f"only negated label(s): {', '.join(sorted(set(negated)))}"
    return None, "no label found"


def label_spelling(examples: list[str]) -> Callable[[str], str]:
    """How the few-shot answers write a label: all lower case, all upper case, or capitalised."""
    words = [e.strip() for e in examples if e.strip()]
    if words and all(w == w.lower() for w in words):
        return str.lower
    if not words or all(w == w.upper() for w in words):
        return str.upper
    return str.capitalize


def reference_label_count(text: str, gold: str) -> int:
    """The reference count: ``len(re.findall(gold.upper(), output.upper()))``."""
    return len(re.findall(re.escape(gold.upper()), text.upper()))


@dataclass(frozen=True)
class MedNLITask(TaskBase):
    id: str = "mednli"
    title: str = "MedNLI (CLUE)"
    description: str = ("Clinical natural language inference: does a note sentence entail, contradict or leave "
                        "open a hypothesis? 3-shot, accuracy.")
    template: PromptTemplate = MEDNLI_PROMPT
    reference_quirks: bool = False
    max_tokens: int = 20
    n_shots: int = 3
    data_format: str = DATA_FORMAT
    metrics: tuple[MetricSpec, ...] = (ACCURACY,)
    configurable = ("prompts", "reference_quirks")
    multiple_choice = True
    study = StudyRole(quirk_counts_first_twice=True, clue_level=1, clue_metrics=("accuracy",),
                      published_columns=(("mednli_acc", "accuracy"),))
    data_layout = DataLayout(
        MEDNLI_FILE, "jsonl", tuple({"sentence1": f"Premise {n}.", "sentence2": f"Hypothesis {n}.",
                                     "gold_label": LABELS[n % 3].lower(), "pairID": f"p{n}"} for n in range(5)),
        text_fields=("sentence1", "sentence2", "gold_label"), id_field="pairID")

    @property
    def stop(self) -> tuple[str, ...]:  # type: ignore[override]  # TaskBase declares it as a field
        return () if self.reference_quirks else user_block_stop(self.template)

    def load(self, path: Path) -> TaskData:
        file = find_data_file(path, (MEDNLI_FILE,), (".jsonl",), "MedNLI")
        items = []
        for line, record in jsonl_records(file):
            sentence1, sentence2, gold = (required_text(file, line, record, name, numbers=True, strip=False)
                                          for name in ("sentence1", "sentence2", "gold_label"))
            if gold.strip().upper() not in LABELS:
                raise DataError(file, f"'{gold}' is not one of entailment, neutral, contradiction", line=line,
                                field="gold_label")
            pair_id = optional_text(file, line, record, "pairID", numbers=True)
            items.append(Item(id=pair_id or f"mednli-{line}",
                              payload={"sentence1": sentence1, "sentence2": sentence2, "gold_label": gold},
                              source=f"{file}:{line}"))
        check_unique_ids(items, "pairID")
        return split_shots(file, items, self.n_shots)

    def _user(self, item: Item) -> str:
        return self.template.user.format(sentence1=item.payload["sentence1"], sentence2=item.payload["sentence2"])

    def prompt(self, item: Item, context: PromptContext) -> Prompt:
        shots = tuple((self._user(shot), shot.payload["gold_label"]) for shot in context.shots)
        return Prompt(system=self.template.system, user=self._user(item), shots=shots,
                      answer_prefix=self.template.answer_prefix)

    def choices(self, item: Item, context: PromptContext, target: str = "letter") -> ChoiceSet:
        """The three labels as continuations (``run --scoring loglik|constrained``), spelled as the few-shot
        answers spell them (the file's casing; upper case without shots). Label and text are the same here, so
        ``target`` changes nothing."""
        prompt = self.prompt(item, context)
        spell = label_spelling([shot.payload["gold_label"] for shot in context.shots])
        options = {label: continuation(prompt.answer_prefix, spell(label)) for label in LABELS}
        return ChoiceSet(prompt, options, item.payload["gold_label"].strip().upper())

    def score(self, item: Item, generation: Generation, plan: Any = None) -> Score:
        gold = item.payload["gold_label"].strip().upper()
        text = clean_output(generation.output)
        incomplete = "truncated" if generation.finish_reason == "length" else "unparseable"
        if self.reference_quirks:
            count = reference_label_count(text, gold)
            if count == 1:
                return Score("correct", gold, gold, QUIRK_SCORING_VERSION, "gold label occurs once",
                             {"accuracy": 1.0})
            mentioned = [label for label in LABELS if label in text.upper()]
            detail = f"gold label occurs {count} times; labels mentioned: {', '.join(mentioned) or 'none'}"
            return Score("wrong" if mentioned else incomplete, "|".join(mentioned) or None, gold,
                         QUIRK_SCORING_VERSION, detail, {"accuracy": 0.0})
        label, detail = parse_label(text)
        if label is None:
            return Score(incomplete, None, gold, SCORING_VERSION, detail, {"accuracy": 0.0})
        correct = label == gold
        return Score("correct" if correct else "wrong", label, gold, SCORING_VERSION, detail,
                     {"accuracy": 1.0 if correct else 0.0})

    def settings(self) -> dict[str, Any]:
        return {"task": self.id, "max_tokens": self.max_tokens, "stop": list(self.stop),
                "prompt_sha256": self.template.sha256, "shots": self.n_shots, "shot_selection": "first-k",
                "reference_quirks": self.reference_quirks, "postprocess": CLEANUP_VERSION,
                "scoring": QUIRK_SCORING_VERSION if self.reference_quirks else SCORING_VERSION}


TASKS = [MedNLITask()]
