"""Fewer requests per served log-likelihood item (issue 24, item 2): the context is tokenized once per item and
each option costs one echo request, with scores identical to the exact token route; requests and tokens sent
are counted per item, stored, and shown by ``runs``. Against the fake servers of test_served.py."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest

from medbench_local.engine.base import LoglikelihoodRequest, Loglikelihoods
from medbench_local.engine.http import ServerClient
from medbench_local.engine.openai_compat import OpenAICompatEngine
from medbench_local.prompting import Prompt
from medbench_local.store import open_database
from medbench_local.store.writer import start_run
from tests.conftest import invoke
from tests.test_served import LOGLIK_CONTINUATIONS, FakeServer, served_spec

MERGED = 3  # the merging fake's token for "??"
NO_BOS_TEMPLATE = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}<assistant>"
BOS_TEMPLATE = "<s>{% for m in messages %}{{ m.content }}{% endfor %}<s>"


class MergingServer(FakeServer):
    """A fake whose tokenizer merges "??" into one token, so a continuation starting with "?" after a context
    ending in "?" changes the context's last token (the in-process rule then scores the option's own tokens)."""

    def tokens(self, text: str, add: bool = True) -> list[int]:
        tokens: list[int] = []
        for token in super().tokens(text, add=False):
            if tokens and tokens[-1] == ord("?") + 10 and token == ord("?") + 10:
                tokens[-1] = MERGED
            else:
                tokens.append(token)
        return ([1] if self.add_bos and add else []) + tokens

    def detokens(self, tokens: list[int]) -> str:
        return "".join("??" if t == MERGED else super(MergingServer, self).detokens([t]) for t in tokens)


def engine_for(tmp_path: Path, server: FakeServer, template: str, n_ctx: int = 128
               ) -> tuple[OpenAICompatEngine, list[str]]:
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        return server(request)

    spec = served_spec(tmp_path, n_ctx=n_ctx, chat_template=template)
    engine = OpenAICompatEngine(spec, None, client=ServerClient(spec.served.base_url, retries=0,
                                                                transport=httpx.MockTransport(handler)))
    return engine, paths


def exact(engine: OpenAICompatEngine, request: LoglikelihoodRequest) -> Loglikelihoods:
    """The same item by the exact token route alone (the route every item took before)."""
    engine._joint_scores = lambda *args: None  # type: ignore[method-assign]
    try:
        return engine.loglikelihood(request)
    finally:
        del engine._joint_scores


def summary(result: Loglikelihoods) -> list[Any]:
    return [result.prompt_tokens, result.truncated_tokens,
            [(s.text, round(s.logprob, 9), s.tokens, s.bytes, s.greedy) for s in result.scores]]


QUESTIONS = ["Which?", "What is the dose??", "x" * 5, "y" * 200]
CONTINUATIONS = [*LOGLIK_CONTINUATIONS, ("?", "??", " A?"), ("? yes", " no")]


@pytest.mark.parametrize("kind", ["vllm", "llama-cpp-python"])
@pytest.mark.parametrize("template", [NO_BOS_TEMPLATE, BOS_TEMPLATE], ids=["server-bos", "template-bos"])
@pytest.mark.parametrize("question", QUESTIONS, ids=["short", "ends-in-?", "five", "long"])
@pytest.mark.parametrize("continuations", CONTINUATIONS, ids=["letters", "words", "labels", "merging", "mixed"])
def test_one_request_per_option_gives_the_exact_routes_scores(tmp_path: Path, kind: str, template: str,
                                                              question: str, continuations: tuple[str, ...]) -> None:
    engine, paths = engine_for(tmp_path, MergingServer(kind, n_ctx=128), template)
    request = LoglikelihoodRequest(Prompt(system="", user=question), continuations)
    engine.loglikelihood(request)  # the first item also asks for the BOS id, once per engine
    before = len(paths)
    result = engine.loglikelihood(request)
    fast_requests = len(paths) - before
    reference = exact(engine, request)
    assert summary(result) == summary(reference)
    assert result.server_requests == fast_requests and reference.server_requests is not None
    assert fast_requests <= reference.server_requests
    merges = question.endswith("?") and any(c.startswith("?") for c in continuations)
    if template == NO_BOS_TEMPLATE and result.truncated_tokens == 0 and len(question) < 100 and not merges:
        assert fast_requests == 1 + len(continuations)  # the context tokenized once, one echo per option
        assert reference.server_requests == 1 + 2 * len(continuations)
    assert result.server_tokens is not None and result.server_tokens >= sum(
        result.prompt_tokens + s.tokens for s in result.scores)


def test_options_go_one_after_another_each_beginning_with_the_context(tmp_path: Path) -> None:
    """What a prefix cache needs: consecutive requests that share the item's context as their beginning."""
    server = FakeServer("vllm", n_ctx=128)
    engine, _ = engine_for(tmp_path, server, NO_BOS_TEMPLATE)
    result = engine.loglikelihood(LoglikelihoodRequest(Prompt(system="", user="Which?"), (" A", " B", " C")))
    sent = [body["prompt"] for body in server.completions]
    assert sent == [result.prompt_text + c for c in (" A", " B", " C")]


def test_runs_shows_requests_and_tokens_per_served_item(tmp_path: Path) -> None:
    path = tmp_path / "study.db"
    db = open_database(path)
    start_run(db, "r1", {"command": ["medbench-local", "run"], "settings": {"models": [], "tasks": []}})
    db.conn.close()
    conn = sqlite3.connect(path)
    conn.execute("pragma foreign_keys = off")
    for item, (requests, tokens) in enumerate([(5, 400), (5, 420), (9, 900)]):
        conn.execute("insert into generations (evaluation, item, run_id, finish_reason, server_requests, "
                     "server_tokens) values ('e', ?, 'r1', 'loglik', ?, ?)", (f"i{item}", requests, tokens))
    conn.execute("insert into generations (evaluation, item, run_id, finish_reason) values ('e2', 'i0', 'r1', "
                 "'stop')")  # an in-process item: not counted
    conn.commit()
    conn.close()
    listed = json.loads(invoke("runs", "--db", str(path), "--json").output)
    assert listed[0]["served_loglik"] == {"items": 3, "requests": 19, "tokens_sent": 1720}
    text = invoke("runs", "--db", str(path)).output
    assert "3 log-likelihood items: 6.3 requests and 573 tokens sent per item" in " ".join(text.split())
