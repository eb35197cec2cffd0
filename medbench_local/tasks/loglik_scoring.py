"""Multiple choice without reading free text: log-likelihood scoring and grammar-constrained answers.

A multiple-choice task exposes its options through one optional method, ``choices(item, context, target)``,
returning a ``ChoiceSet``: the context prompt (ending in the answer prefix, e.g. "The answer is"), each option's
continuation text (" A", or the option's text) and the gold key. Everything else is generic and lives here:

* ``--scoring loglik``: the engine returns each continuation's summed log-probability; we pick the argmax under
  three rules, as lm-evaluation-harness reports them: ``sum`` (``acc``), ``acc_norm`` (sum divided by the
  continuation's UTF-8 byte length) and ``mean_token`` (sum divided by its token count). One rule is the
  *headline* (the ``accuracy`` metric and ``Score.extracted``): ``sum`` for letter continuations, which all have
  the same length so the rules barely differ, and ``acc_norm`` for option texts, whose lengths differ (a sum
  favours short options). All three are stored per item as ``acc_sum``, ``acc_norm``, ``acc_mean_token``, with
  the letter each chose and every option's log-probability in ``Score.detail``.
* ``--scoring constrained``: greedy generation under a GBNF grammar that admits exactly the option
  continuations, for chat models that must generate; the output is then one of them by construction.

Default target: ``letter``. Our prompts list lettered options and end in "The answer is", so " B" is the natural
next token, and a letter's probability is not biased by option length. ``text`` (lm-eval's choice for most MCQ
tasks) is available with ``run --loglik-target text`` and is part of the evaluation identity.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..engine.base import ContinuationScore, Generation, Loglikelihoods
from ..prompting import Prompt
from .base import Score

LOGLIK_TARGETS: tuple[str, ...] = ("letter", "text")
RULES: tuple[str, ...] = ("sum", "acc_norm", "mean_token")
RULE_METRICS = {"sum": "acc_sum", "acc_norm": "acc_norm", "mean_token": "acc_mean_token"}
HEADLINE = {"letter": "sum", "text": "acc_norm"}
SCORING_VERSION = "choices-v1"


@dataclass(frozen=True)
class ChoiceSet:
    """What a multiple-choice item offers: the context, option key -> continuation text (in option order), the
    gold key, and, for tasks with more than ``accuracy``, the metrics of choosing a key (LongHealth's task
    columns). ``None`` as the key means nothing was chosen."""

    context: Prompt
    options: Mapping[str, str]
    gold: str
    key_metrics: Callable[[str | None], dict[str, float]] | None = None

    def metrics_for(self, key: str | None) -> dict[str, float]:
        if self.key_metrics is not None:
            return self.key_metrics(key)
        return {"accuracy": float(key == self.gold)}


def supports_choices(task: Any) -> bool:
    """Whether ``task`` declares options to score (``Task.multiple_choice``)."""
    return bool(task.multiple_choice)


def continuation(prefix: str, text: str) -> str:
    """The continuation text after an answer prefix: a space after a word ("The answer is" + " B"), nothing
    after a line break or an empty prefix (chat "assistant\\n" + "ENTAILMENT")."""
    return (" " + text) if prefix and not prefix[-1].isspace() else text


class UndecidedChoice(ValueError):
    """The log-likelihoods do not pick one option: a tie for the top, or a total that is not a finite number.
    A ValueError, so the runner stores the item as an ``error`` (it never becomes option A, scored)."""


def pick(values: Mapping[str, float]) -> str:
    """The key with the largest value. A tie for the largest value, or any value that is not finite (-inf from
    a zero probability, NaN from a broken model or server), raises UndecidedChoice: picking the first option
    would credit "always A" whenever a model or server fails to tell the options apart."""
    best = None
    for key, value in values.items():
        if not math.isfinite(value):
            raise UndecidedChoice(f"option {key}'s log-likelihood is {value!r}: no option can be chosen")
        if best is None or value > values[best]:
            best = key
    if best is None:
        raise UndecidedChoice("no options to choose from")
    tied = [key for key, value in values.items() if value == values[best]]
    if len(tied) > 1:
        raise UndecidedChoice(f"options {', '.join(tied)} tie at log-likelihood {values[best]!r}: no option can be "
                              "chosen")
    return best


def rule_values(scores: Mapping[str, ContinuationScore], rule: str) -> dict[str, float]:
    if rule == "sum":
        return {k: s.logprob for k, s in scores.items()}
    if rule == "acc_norm":
        return {k: s.logprob_per_byte for k, s in scores.items()}
    if rule == "mean_token":
        return {k: s.mean_logprob for k, s in scores.items()}
    raise ValueError(f"unknown rule {rule!r}")


def choices_under_rules(scores: Mapping[str, ContinuationScore]) -> dict[str, str]:
    """The option each rule chooses; UndecidedChoice when any rule cannot choose one (see ``pick``)."""
    return {rule: pick(rule_values(scores, rule)) for rule in RULES}


def require_decided(choices: ChoiceSet, result: Loglikelihoods) -> None:
    """Raise UndecidedChoice unless every rule chooses exactly one option: called where the engine's result
    arrives (runner), so that an undecided item is stored as an error, as a failed request is."""
    if len(result.scores) != len(choices.options):
        raise UndecidedChoice(f"{len(result.scores)} scores for {len(choices.options)} options")
    choices_under_rules(dict(zip(choices.options, result.scores)))


def score_loglik(choices: ChoiceSet, result: Loglikelihoods, target: str) -> Score:
    """The verdict of a loglikelihood result: the headline rule's choice decides ``accuracy`` (and the task's
    other metrics); every rule's correctness is stored too. Never unparseable: a result that does not choose
    one option raises UndecidedChoice (``require_decided``)."""
    if len(result.scores) != len(choices.options):
        raise ValueError(f"{len(result.scores)} scores for {len(choices.options)} options")
    scores = dict(zip(choices.options, result.scores))
    chosen = choices_under_rules(scores)
    headline = HEADLINE[target]
    letter = chosen[headline]
    metrics = dict(choices.metrics_for(letter))
    for rule, key in chosen.items():
        metrics[RULE_METRICS[rule]] = float(key == choices.gold)
    per_option = " ".join(f"{k}={s.logprob!r}/{s.tokens}t/{s.bytes}B" for k, s in scores.items())
    detail = (f"chosen: sum {chosen['sum']}, acc_norm {chosen['acc_norm']}, mean_token {chosen['mean_token']} "
              f"(headline {headline}); logprob/tokens/bytes: {per_option}")
    return Score("correct" if letter == choices.gold else "wrong", letter, choices.gold, f"loglik:{headline}",
                 detail, metrics)


def loglik_generation(choices: ChoiceSet, result: Loglikelihoods, score: Score) -> Generation:
    """A loglikelihood result in the shape the store keeps per item: the context as prompt, the headline
    choice's continuation as output, every continuation token as 'completion' tokens."""
    output = choices.options.get(score.extracted or "", "")
    return Generation(
        prompt_text=result.prompt_text, output=output, prompt_tokens=result.prompt_tokens,
        truncated_tokens=result.truncated_tokens, completion_tokens=sum(s.tokens for s in result.scores),
        finish_reason="loglik", seconds=result.seconds, prompt_ms=result.prompt_ms,
        prompt_tokens_evaluated=result.prompt_tokens_evaluated, server_requests=result.server_requests,
        server_tokens=result.server_tokens)


def _gbnf_literal(text: str) -> str:
    escaped = (text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
               .replace("\t", "\\t"))
    return f'"{escaped}"'


def choice_grammar(choices: ChoiceSet) -> str:
    """GBNF admitting exactly one of the option continuations (then only end of generation)."""
    return "root ::= " + " | ".join(_gbnf_literal(text) for text in choices.options.values()) + "\n"


def constrained_max_tokens(choices: ChoiceSet, count_tokens: Callable[[str], int]) -> int:
    """Room for the longest continuation even when the model spells it in more tokens, plus the end token."""
    return max(count_tokens(text) for text in choices.options.values()) * 2 + 2


def score_constrained(choices: ChoiceSet, generation: Generation) -> Score:
    """The key whose continuation the constrained generation produced (exact, or after stripping spaces)."""
    output = generation.output
    key = next((k for k, text in choices.options.items() if output == text), None)
    if key is None:
        key = next((k for k, text in choices.options.items() if output.strip() == text.strip()), None)
    if key is None:
        outcome = "truncated" if generation.finish_reason == "length" else "unparseable"
        return Score(outcome, None, choices.gold, "grammar", f"output {output!r} is none of the options",
                     choices.metrics_for(None) | {"accuracy": 0.0})
    return Score("correct" if key == choices.gold else "wrong", key, choices.gold, "grammar",
                 f"constrained output {output!r}", choices.metrics_for(key))


def scoring_mode(task_settings: Mapping[str, Any]) -> str:
    """The scoring mode of stored task settings (evaluations without one were generated)."""
    return str(task_settings.get("scoring_mode") or "generate")
