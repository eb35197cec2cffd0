"""LongHealth's ``--document-order per-patient`` assembly keeps a long common prefix across a patient's questions
(for the KV cache, engine/kv.py), while the default (reference) prompts stay exactly as they were.

The default prompts are pinned by SHA-256 (computed before the per-patient assembly changed); the per-patient
guarantees are properties of the construction (``assemble(shared_prefix=True)``, docs/tasks-longhealth.md):

* documents are filled in one seeded order per patient and repeat (the *group order*), answer documents first,
  and appear in the prompt in that order with the cut document last;
* so two items without answer documents (Task 3) differ only in how much room their question leaves: the
  documents block of the one with less room is a prefix of the other's (100% of the shorter block is shared);
* with answer documents (Tasks 1, 2), everything in the group order before the first answer document of either
  item is shared, as far as both hold it; items of a group run sorted by where their answer documents sit, so
  consecutive items share up to the earlier item's first answer document.
"""

from __future__ import annotations

import hashlib
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from medbench_local.tasks import get_task
from medbench_local.tasks.base import PromptContext, canonical_json
from medbench_local.tasks.longhealth import DIVIDER, LONGHEALTH_PROMPT, LongHealthTask, assemble, order_rank

from .conftest import REPO
from .test_task_contract import _digest as settings_digest

DATA = REPO / "bench_data" / "longhealth"


def words(text: str) -> int:
    return len(text.split())


def documents_block(user: str) -> str:
    return user.split("=== DOCUMENTS ===\n\n", 1)[1].split("\n\n=== END OF DOCUMENTS ===", 1)[0]


# ------------------------------------------------------------------------------ default prompts: unchanged

# sha256 over every item's id, system text, user text and assembly summary, in load order, with a word counter
# as tokenizer; n_ctx 0 = the reference budget (everything fits), 600 and 380 force cuts. Computed on main at
# 912ba48, before the per-patient assembly changed.
DEFAULT_PROMPTS_SHA256 = {
    ("default", 0): "3dd0a8e53ee2ecc13ee21df4e3fd36c92d89a045f2102bec006a15c91cdc8956",
    ("default", 600): "88fa77d036ff36689a75bb7aaecb4ff9a34e63b7aeac2954e93ab147faa4b28a",
    ("default", 380): "41a080bae1cb60fdda279790782749caf54c7c970b1c507cb10f6bd0834badfc",
    ("reference_quirks", 0): "3dd0a8e53ee2ecc13ee21df4e3fd36c92d89a045f2102bec006a15c91cdc8956",
    ("reference_quirks", 600): "29fabf277883f6438a35b1d6d13b0a89f23953db735fc29af46c98710850dd30",
    ("reference_quirks", 380): "a5d0515c61af1aaf5bf635268f62431ef2cc36bc02fe44d8f3a1f7ff8638d8d2",
}


def prompts_digest(task: Any, n_ctx: int) -> str:
    data = task.load(DATA)
    digest = hashlib.sha256()
    for item in data.items:
        prompt = task.prompt(item, PromptContext(documents=data.documents, count_tokens=words, n_ctx=n_ctx))
        digest.update(f"{item.id}\n{prompt.system}\n{prompt.user}\n{prompt.plan.summary()}\n".encode())
    return digest.hexdigest()


def test_default_and_quirk_prompts_are_unchanged() -> None:
    base = get_task("longhealth")
    variants = {"default": base, "reference_quirks": base.configure(reference_quirks=True)}
    for (variant, n_ctx), expected in DEFAULT_PROMPTS_SHA256.items():
        assert prompts_digest(variants[variant], n_ctx) == expected, (variant, n_ctx)


# ------------------------------------------------------------------------------ identity


def test_the_per_patient_assembly_is_a_new_evaluation_identity() -> None:
    """Stored per-patient evaluations were made with the old assembly (the cut document at its seeded place);
    their settings must not match today's, so a run never resumes into them (nor rescore mixes them)."""
    base = get_task("longhealth")
    per_patient = base.configure(document_order="per-patient").settings()
    old_per_patient = {k: v for k, v in per_patient.items() if k != "document_order_version"}
    # the old per-patient settings, as pinned on main (tests/test_task_contract.py before this change), with
    # the extraction version written as it was then (a new extraction version changes every MCQ key on purpose)
    assert settings_digest(old_per_patient) == "aaa6312fe7e44761"
    assert per_patient["document_order_version"] == 2
    assert canonical_json(per_patient) != canonical_json(old_per_patient)
    assert "document_order_version" not in base.settings()  # default evaluations keep their keys


# ------------------------------------------------------------------------------ the assembly property

FRAME_WORD = "word"


def payload(question_words: int, answer_docs: list[str], other_docs: list[str]) -> dict[str, Any]:
    return {"question": " ".join([FRAME_WORD] * question_words), "options": {"A": "a", "B": "b", "F": "none"},
            "answer_docs": answer_docs, "other_docs": other_docs}


def corpus(lengths: list[int]) -> dict[str, str]:
    """Documents whose words name their document and position, so that any two differ everywhere."""
    return {f"p/d{k}": " ".join(f"d{k}w{i}" for i in range(n)) for k, n in enumerate(lengths)}


def shared_assembly(question_words: int, answer_docs: list[str], others: list[str], texts: dict[str, str],
                    budget: int, key: str = "patient_01/r1") -> Any:
    return assemble(payload(question_words, answer_docs, others), texts, LONGHEALTH_PROMPT, words,
                    budget=budget, seed=1, item_id=key, shared_prefix=True)


doc_lengths = st.lists(st.integers(1, 120), min_size=2, max_size=8)


@settings(max_examples=150, deadline=None)
@given(lengths=doc_lengths, frames=st.lists(st.integers(1, 60), min_size=2, max_size=5),
       budget=st.integers(150, 900), key=st.sampled_from(["patient_01/r1", "patient_02/r3", "x/r5"]))
def test_without_answer_documents_the_shorter_block_is_a_prefix_of_the_longer(
        lengths: list[int], frames: list[int], budget: int, key: str) -> None:
    """Task 3 items of one patient and repeat: the same candidates, only the question (the room) differs. Filled
    in the group order with the cut document last, the documents block of the item with less room is a prefix
    of the other's: 100% of the shorter block is shared, whatever the lengths and the budget."""
    texts = corpus(lengths)
    blocks = [documents_block(shared_assembly(q, [], list(texts), texts, budget, key).user) for q in frames]
    for a in blocks:
        for b in blocks:
            shorter, longer = sorted((a, b), key=len)
            assert longer.startswith(shorter)


@settings(max_examples=150, deadline=None)
@given(lengths=st.lists(st.integers(1, 120), min_size=3, max_size=8), budget=st.integers(150, 900),
       answers=st.lists(st.tuples(st.integers(0, 7), st.integers(1, 60)), min_size=2, max_size=4),
       key=st.sampled_from(["patient_01/r1", "patient_02/r3"]))
def test_with_answer_documents_everything_before_the_first_answer_document_is_shared(
        lengths: list[int], budget: int, answers: list[tuple[int, int]], key: str) -> None:
    """Tasks 1 and 2: each item puts its own answer document first in priority, but every document is placed
    by the group order. Two items share, as a prefix of their documents blocks, every document that precedes
    both answer documents in the group order and that both hold in full."""
    texts = corpus(lengths)
    ids = list(texts)
    group_order = sorted(ids, key=lambda d: order_rank(1, key, d))
    built = []
    for index, frame in answers:
        answer = ids[index % len(ids)]
        assembly = shared_assembly(frame, [answer], [d for d in ids if d != answer], texts, budget, key)
        full = [d for d in assembly.order if d != assembly.cut]
        built.append((answer, full, documents_block(assembly.user)))
        assert list(assembly.order) == [d for d in group_order if d in full] + ([assembly.cut] if assembly.cut
                                                                               else [])
    for answer_a, full_a, block_a in built:
        for answer_b, full_b, block_b in built:
            first = min(group_order.index(answer_a), group_order.index(answer_b))
            shared = []
            for d in group_order[:first]:
                if d not in full_a or d not in full_b:
                    break
                shared.append(texts[d])
            prefix = DIVIDER.join(shared)
            assert block_a.startswith(prefix) and block_b.startswith(prefix)


def test_run_order_sorts_a_groups_items_by_where_their_answer_documents_sit() -> None:
    """Within a patient, repeat and task, items run with the first answer document's place in the group order
    ascending: consecutive items then share up to the earlier one's first answer document."""
    task = get_task("longhealth").configure(document_order="per-patient")
    items = task.load(DATA).items
    assert isinstance(task, LongHealthTask)
    groups: dict[tuple[Any, ...], list[tuple[str, ...]]] = {}
    for item in items:
        p = item.payload
        key = task.shuffle_key(item.id, p["patient"], p["repeat"])
        group = (p["patient"], p["repeat"], p["task"])
        groups.setdefault(group, []).append(tuple(sorted(order_rank(task.seed, key, d) for d in p["answer_docs"])))
    assert any(len(set(places)) > 1 for places in groups.values())  # the sample has answers in different places
    for places in groups.values():
        assert places == sorted(places)
