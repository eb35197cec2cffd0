"""Log-likelihood multiple choice (tasks/loglik_scoring.py, LlamaEngine.loglikelihood) and constrained answers.

The engine evaluates the context once and every option's continuation from that KV state, all options in one
batched decode. It is checked against a naive reference written here independently (``NaiveScorer``): the
cache emptied for every option, the whole context + continuation decoded with logits at the positions that
predict it. Both must choose the same option on every item, and their log-probabilities agree within
``TOLERANCE_NATS``, measured on the demo pair (docs/loglik.md): the two compute the same quantities in different
batch shapes, which moves the last bits (docs/kv-reuse.md explains why).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from medbench_local.engine.base import ContinuationScore, Generation, Loglikelihoods
from medbench_local.prompting import Prompt
from medbench_local.tasks import PromptContext, get_task
from medbench_local.tasks.loglik_scoring import (
    ChoiceSet,
    choice_grammar,
    choices_under_rules,
    continuation,
    score_constrained,
    score_loglik,
    supports_choices,
)
from medbench_local.tasks.registry import task_ids

from .conftest import REPO, invoke, rows

# Measured on 64 items each (jama, nejm, mednli, medqa, mmlu_medical, medmcqa, pubmedqa; letters and option texts;
# docs/loglik.md): largest |engine - naive| 0.108 nats for SmolLM2 (letters: 0.0, bit-identical) and 0.537 for
# Gemma-3, whose Q4_K/Q6_K/Q5_0 kernels round differently for different batch shapes. Same choice on 64/64 and
# 63/64 items (the exception: a naive margin of 0.079 between the top two options). Tolerances: measured + ~10%.
TOLERANCE_NATS = {"smollm2-135m-instruct": 0.12, "gemma3-270m": 0.6}
MCQ_TASKS = ("nejm", "jama", "medqa", "pubmedqa", "mmlu_medical", "medmcqa", "mednli", "longhealth")


def scores(values: dict[str, tuple[float, int, int]]) -> Loglikelihoods:
    return Loglikelihoods(prompt_text="ctx", scores=tuple(ContinuationScore(k, lp, n, b, False)
                                                          for k, (lp, n, b) in values.items()),
                          prompt_tokens=10, truncated_tokens=0, prompt_tokens_evaluated=10,
                          continuation_tokens_evaluated=0, seconds=0.1)


# ------------------------------------------------------------------------------------------ scoring, unit level


@pytest.mark.parametrize("values, gold, target, expected", [
    # letters: same length, the sum decides
    ({"A": (-2.0312545711, 1, 2), "B": (-0.5000000001, 1, 2), "C": (-3.1, 1, 2)}, "B", "letter",
     ("B", "B", "B", "correct")),
    # texts: a short option wins on the sum, the long one per byte (acc_norm, the text headline) and per token
    ({"A": (-4.0, 2, 5), "B": (-6.0, 6, 40)}, "B", "text", ("A", "B", "B", "correct")),
    ({"A": (-4.0, 2, 5), "B": (-6.0, 6, 40)}, "B", "letter", ("A", "B", "B", "wrong")),
    # a tie below the top chooses nothing different
    ({"A": (-3.0, 1, 2), "B": (-1.0, 1, 2), "C": (-3.0, 1, 2)}, "B", "letter", ("B", "B", "B", "correct")),
])
def test_each_rule_chooses_its_argmax_and_the_headline_decides_accuracy(
        values: dict[str, tuple[float, int, int]], gold: str, target: str,
        expected: tuple[str, str, str, str]) -> None:
    choices = ChoiceSet(Prompt("s", "u"), {k: " " + k for k in values}, gold)
    score = score_loglik(choices, scores(values), target)
    by_rule = choices_under_rules(dict(zip(values, scores(values).scores)))
    assert (by_rule["sum"], by_rule["acc_norm"], by_rule["mean_token"], score.outcome) == expected
    assert score.metrics["acc_sum"] == float(by_rule["sum"] == gold)
    assert score.metrics["acc_norm"] == float(by_rule["acc_norm"] == gold)
    assert score.metrics["acc_mean_token"] == float(by_rule["mean_token"] == gold)
    assert score.metrics["accuracy"] == float(score.extracted == gold)
    for key, (lp, n, b) in values.items():  # every option's log-probability is kept, at full precision
        assert f"{key}={lp!r}/{n}t/{b}B" in score.detail


UNDECIDED = [
    # (log-probabilities, what the error names): a tie for the top or a total that is not a finite number is an
    # error, never option A (all -inf options used to pick A and score correct)
    ({"A": (-1.0, 1, 2), "B": (-1.0, 1, 2)}, "tie"),
    ({"A": (-2.0, 1, 2), "B": (-0.5, 1, 2), "C": (-0.5, 1, 2), "D": (-3.0, 1, 2)}, "tie"),
    ({"A": (-math.inf, 1, 2), "B": (-math.inf, 1, 2)}, "-inf"),
    ({"A": (-math.inf, 1, 2), "B": (-1.0, 1, 2)}, "-inf"),
    ({"A": (math.nan, 1, 2), "B": (-1.0, 1, 2)}, "nan"),
    ({"A": (-1.0, 1, 2), "B": (math.inf, 1, 2)}, "inf"),
    ({"A": (-4.0, 2, 4), "B": (-2.0, 1, 2)}, "tie"),  # sums differ; per byte (acc_norm) they tie
]


@pytest.mark.parametrize("values, named", UNDECIDED, ids=[f"{i}-{n}" for i, (_, n) in enumerate(UNDECIDED)])
@pytest.mark.parametrize("target", ["letter", "text"])
def test_a_tie_or_a_non_finite_total_is_an_error_never_option_a(values: dict[str, tuple[float, int, int]],
                                                                named: str, target: str) -> None:
    from medbench_local.tasks.loglik_scoring import UndecidedChoice, require_decided

    choices = ChoiceSet(Prompt("s", "u"), {k: " " + k for k in values}, "A")
    with pytest.raises(UndecidedChoice, match=named) as raised:
        require_decided(choices, scores(values))
    assert isinstance(raised.value, ValueError)  # the runner stores ValueErrors as error items
    with pytest.raises(UndecidedChoice):
        score_loglik(choices, scores(values), target)


@given(st.dictionaries(st.sampled_from("ABCDEFGHIJ"),
                       st.tuples(st.floats(-50, 0), st.integers(1, 9), st.integers(1, 60)), min_size=2))
def test_the_chosen_option_is_always_a_maximum(values: dict[str, tuple[float, int, int]]) -> None:
    from medbench_local.tasks.loglik_scoring import RULES, UndecidedChoice, rule_values

    result = scores(values)
    by_key = dict(zip(values, result.scores))
    tops = [rule_values(by_key, rule) for rule in RULES]
    if any(sum(v == max(r.values()) for v in r.values()) > 1 for r in tops):
        with pytest.raises(UndecidedChoice):
            choices_under_rules(by_key)
        return
    chosen = choices_under_rules(by_key)
    assert values[chosen["sum"]][0] == max(v[0] for v in values.values())
    assert math.isclose(values[chosen["acc_norm"]][0] / values[chosen["acc_norm"]][2],
                        max(v[0] / v[2] for v in values.values()))


@pytest.mark.parametrize("prefix, text, expected", [
    ("The answer is", "B", " B"), ("The correct answer is", "F", " F"), ("", "ENTAILMENT", "ENTAILMENT"),
    ("Answer:\n", "C", "C"), ("Answer: ", "C", "C")])
def test_continuations_join_the_answer_prefix_like_text(prefix: str, text: str, expected: str) -> None:
    assert continuation(prefix, text) == expected


def test_constrained_output_maps_back_to_its_option() -> None:
    choices = ChoiceSet(Prompt("s", "u"), {"A": " A", "B": " B"}, "B")

    def gen(output: str, finish: str = "stop") -> Generation:
        return Generation("p", output, 5, 0, 1, finish, 0.1)

    assert score_constrained(choices, gen(" B")).outcome == "correct"
    assert score_constrained(choices, gen("A")).extracted == "A"
    assert score_constrained(choices, gen("")).outcome == "unparseable"
    assert score_constrained(choices, gen(" ", "length")).outcome == "truncated"


@given(st.lists(st.text(min_size=1, max_size=12), min_size=2, max_size=5, unique=True))
def test_grammar_lists_every_option_as_an_escaped_literal(texts: list[str]) -> None:
    grammar = choice_grammar(ChoiceSet(Prompt("s", "u"), {chr(65 + i): t for i, t in enumerate(texts)}, "A"))
    assert grammar.startswith("root ::= ") and grammar.endswith("\n")
    body = grammar[len("root ::= "):-1]
    assert "\n" not in body  # newlines inside options are escaped, one rule line
    literals = re.findall(r'"(?:[^"\\]|\\.)*"', body)  # GBNF string literals, escapes included
    assert " | ".join(literals) == body  # nothing but the alternatives (an option may itself contain " | ")
    unescape = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\"}
    decoded = [re.sub(r"\\(.)", lambda m: unescape[m.group(1)], lit[1:-1]) for lit in literals]
    assert decoded == texts  # each option exactly once, in order, read back to its own text


def context(task_id: str, data: object) -> PromptContext:
    return PromptContext(shots=data.shots, documents=data.documents,  # type: ignore[attr-defined]
                         count_tokens=lambda text: len(text.split()), n_ctx=4096)


@pytest.mark.parametrize("task_id", MCQ_TASKS)
def test_every_multiple_choice_task_offers_its_options_as_continuations(task_id: str) -> None:
    task = get_task(task_id)
    data = task.load(REPO / "bench_data" / task_id)
    for item in data.items[:4]:
        for target in ("letter", "text"):
            choices = task.choices(item, context(task_id, data), target)  # type: ignore[attr-defined]
            assert choices.gold in choices.options
            assert len(set(choices.options.values())) == len(choices.options) >= 2
            assert all(text.strip() for text in choices.options.values())
            assert choices.metrics_for(choices.gold)["accuracy"] == 1.0
            wrong = next(k for k in choices.options if k != choices.gold)
            assert choices.metrics_for(wrong)["accuracy"] == 0.0


def test_free_text_tasks_have_no_choices_and_are_refused_before_the_database_exists(tmp_path: Path,
                                                                                     in_repo: Path) -> None:
    free = [t for t in task_ids() if not supports_choices(get_task(t))]
    assert set(free) == {"meqsum", "problem_summary", "medisumqa", "medisumcode"}
    for mode in ("loglik", "both", "constrained"):
        db = tmp_path / f"{mode}.db"
        result = invoke("run", "--pair", "demo", "--task", "jama", "--task", "meqsum", "--scoring", mode,
                        "--db", str(db), expect=1)
        assert "task 'meqsum' is not multiple choice" in result.output
        errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1 and "Traceback" not in result.output  # (notes name the sample data used)
        assert not db.exists()


# ------------------------------------------------------------------------------------------ real models


class NaiveScorer:
    """Full recomputation per option, independent of the engine's code: its own llama.cpp context, the cache
    emptied before every option, context + continuation decoded in one go with logits at the positions that
    predict the continuation. ``n_ubatch`` is the engine's prompt grid by default (kv.ubatch_for), so that the
    remaining differences are those of scoring, not of a different prompt batching (which alone moves Gemma-3's
    log-probabilities by up to 0.54 nats: docs/loglik.md)."""

    def __init__(self, model_path: Path, n_ctx: int, n_ubatch: int | None = None) -> None:
        import llama_cpp

        from medbench_local.engine import kv

        self.llama_cpp = llama_cpp
        self.llm = llama_cpp.Llama(model_path=str(model_path), n_ctx=n_ctx, n_batch=n_ctx, verbose=False,
                                   n_ubatch=n_ubatch or kv.ubatch_for(512, offloaded=False),
                                   n_threads=1, n_threads_batch=1, swa_full=True)
        self.batch = llama_cpp.llama_batch_init(n_ctx, 0, 1)
        self.n_vocab = self.llm.n_vocab()

    def logprobs(self, context: list[int], continuations: list[list[int]]) -> list[float]:
        import numpy as np

        low, ctx = self.llama_cpp, self.llm.ctx
        result = []
        for cont in continuations:
            low.llama_memory_clear(low.llama_get_memory(ctx), True)
            tokens = context + cont
            for i, token in enumerate(tokens):
                self.batch.token[i], self.batch.pos[i], self.batch.n_seq_id[i] = token, i, 1
                self.batch.seq_id[i][0] = 0
                self.batch.logits[i] = i >= len(context) - 1
            self.batch.n_tokens = len(tokens)
            assert low.llama_decode(ctx, self.batch) == 0
            total = 0.0
            for j, token in enumerate(cont):
                row = np.ctypeslib.as_array(low.llama_get_logits_ith(ctx, len(context) - 1 + j),
                                            shape=(self.n_vocab,)).astype(np.float64)
                total += float(row[token] - (row.max() + np.log(np.exp(row - row.max()).sum())))
            result.append(total)
        return result

    def close(self) -> None:
        self.llama_cpp.llama_batch_free(self.batch)
        self.llm.close()


def compare_with_naive(model_id: str, cases: tuple[tuple[str, str, int], ...], n_threads: int = 1,
                       naive_ubatch: int | None = None) -> list[tuple[str, str, str, list[float], list[float]]]:
    """(task, target, item id, engine log-probabilities, naive log-probabilities) for the first items of each
    case; the engine scores its items in run order (so later contexts reuse the KV cache)."""
    from medbench_local.config import load_config
    from medbench_local.engine.base import LoglikelihoodRequest
    from medbench_local.engine.llama import LlamaEngine
    from medbench_local.modelfiles.resolve import require

    spec = load_config(REPO / "models.toml").model(model_id)
    path = require(spec)
    engine = LlamaEngine(spec, path, n_threads=n_threads)
    naive = NaiveScorer(path, 1024, naive_ubatch)
    found = []
    try:
        for task_id, target, limit in cases:
            task = get_task(task_id)
            data = task.load(REPO / "bench_data" / task_id)
            ctx = PromptContext(shots=data.shots, documents=data.documents, count_tokens=engine.count_tokens,
                                n_ctx=spec.n_ctx)
            for item in data.items[:limit]:
                choices = task.choices(item, ctx, target)  # type: ignore[attr-defined]
                texts = tuple(choices.options.values())
                ours = engine.loglikelihood(LoglikelihoodRequest(choices.context, texts))
                rendered = engine.render(choices.context)
                context_tokens = engine.tokenize(rendered)
                conts = []
                for text in texts:  # independent split: tokenize the whole text, cut at the context's length
                    whole = engine.tokenize(rendered + text)
                    assert whole[:len(context_tokens)] == context_tokens
                    conts.append(whole[len(context_tokens):])
                assert [s.tokens for s in ours.scores] == [len(c) for c in conts]
                assert ours.continuation_tokens_evaluated == sum(len(c) - 1 for c in conts)
                found.append((task_id, target, item.id, [s.logprob for s in ours.scores],
                              naive.logprobs(context_tokens, conts)))
    finally:
        engine.close()
        naive.close()
    return found


@pytest.mark.e2e
@pytest.mark.parametrize("model_id", ["smollm2-135m-instruct", "gemma3-270m"])
def test_engine_matches_a_naive_full_recomputation_per_option(model_id: str) -> None:
    """Same choice on every item, log-probabilities within the measured tolerance; letters (one token, read
    from the context's logits) and option texts (several tokens, scored in one batched decode)."""
    cases = (("mednli", "letter", 1), ("jama", "letter", 1), ("mmlu_medical", "text", 2), ("medmcqa", "text", 2))
    worst = 0.0
    for task_id, target, item_id, mine, reference in compare_with_naive(model_id, cases):
        assert mine.index(max(mine)) == reference.index(max(reference)), (task_id, target, item_id, mine, reference)
        worst = max(worst, *(abs(a - b) for a, b in zip(mine, reference)))
    assert worst <= TOLERANCE_NATS[model_id], worst


@pytest.mark.e2e
def test_scoring_both_stores_two_evaluations_that_show_pairs(tmp_path: Path, in_repo: Path) -> None:
    db = tmp_path / "r.db"
    invoke("run", "--model", "smollm2-135m-instruct", "--task", "jama", "--limit", "4", "--scoring", "both",
           "--db", str(db))
    invoke("run", "--model", "smollm2-135m-instruct", "--task", "jama", "--limit", "4", "--scoring", "constrained",
           "--db", str(db))
    evaluations = rows(db, "select key, coalesce(json_extract(settings, '$.task.scoring_mode'), 'generate') "
                           "from evaluations order by 2")
    assert [mode for _, mode in evaluations] == ["constrained", "generate", "loglik"]
    assert len({key for key, _ in evaluations}) == 3
    per_mode = rows(db, "select coalesce(json_extract(e.settings, '$.task.scoring_mode'), 'generate'), "
                        "group_concat(i.item_id, ',') from scores s join evaluations e on e.key = s.evaluation "
                        "join items i on i.key = s.item group by 1 order by 1")
    assert len({items for _, items in per_mode}) == 1  # the same items in every mode
    loglik = rows(db, "select g.output, g.finish_reason, s.extracted, s.outcome, s.metrics, s.method from scores s "
                      "join generations g on g.id = s.generation_id join evaluations e on e.key = s.evaluation "
                      "where json_extract(e.settings, '$.task.scoring_mode') = 'loglik'")
    for output, finish, extracted, outcome, metrics, method in loglik:
        assert finish == "loglik" and output == f" {extracted}" and outcome in ("correct", "wrong")
        assert {"accuracy", "acc_sum", "acc_norm", "acc_mean_token"} <= set(__import__("json").loads(metrics))
        assert method == "loglik:sum"
    constrained = rows(db, "select g.output, s.outcome from scores s join generations g on g.id = s.generation_id "
                           "join evaluations e on e.key = s.evaluation "
                           "where json_extract(e.settings, '$.task.scoring_mode') = 'constrained'")
    assert constrained and all(out in (" A", " B", " C", " D", " E") for out, _ in constrained), constrained
    shown = invoke("show", "--db", str(db), "--model", "smollm2-135m-instruct", "--task", "jama",
                   "--modes", "generate,loglik").output
    assert "items where generate and loglik disagree" in shown
