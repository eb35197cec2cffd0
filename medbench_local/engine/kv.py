"""Shared-prefix KV reuse that leaves every output bit-identical to a fresh cache.

Consecutive items often share a long token prefix (system text, few-shot turns, LongHealth's patient records).
Keeping that prefix in the KV cache and decoding only the item's own suffix saves most of the prompt
processing, but a naive reuse changes results: a token's numbers depend not only on the tokens before it but on
the *shape of the ubatch that computed it*, because llama.cpp picks kernels, and their summation order, by the
number of rows in the batch. In the bundled llama.cpp's CPU backend (ggml-cpu) alone:

* repacked Q4_0/Q4_K/IQ4_NL weights (``repack.cpp``) multiply the first ``n - n % 4`` rows of a ubatch with a
  4-row GEMM (on AVX-512 in 16-row blocks) and the last ``n % 4`` rows with a GEMV;
* K-quant weights that are not repacked (Q6_K, Q5_K, ...; ``tiled/tiled.cpp``) go through a tiled kernel for
  ubatches of 8 rows or more, split into windows and 16-row microtiles, and through ``ggml_vec_dot`` below that;
* llamafile's tinyBLAS (F16/F32/Q8_0/Q4_0/Q5_0 weights and the attention products) runs for 2 rows or more
  only, in 4-column tiles with a separate kernel for the remainder.

Measured on Gemma-3-270M Q4_K_M (``tools/kv_probe.py``, docs/kv-reuse.md): reusing ``P`` tokens of a 221-token
prompt gave the fresh logits bit for bit when ``P`` is 0 or 1 modulo 4, except where the suffix was shorter than
the tiled kernel's 8 rows, and logits off by up to 1.13 otherwise. An alignment rule per kernel family would
have to follow every threshold above, and change with the next llama.cpp release.

The rule that holds whatever the kernels: **a cached token is reused only if it was computed in exactly the
ubatch the fresh path computes it in.** We therefore fix the ubatches to an absolute grid: prompt processing
runs in chunks of ``n_batch`` tokens from position 0 (llama-cpp-python's ``eval``), each split into ubatches of
``n_ubatch`` (llama.cpp's ``split_simple``), so the ubatch that holds position ``t`` does not depend on how long
the prompt is, except for the last, partial one. A prefix of ``P`` tokens is kept when ``P`` is a grid boundary
and every cached ubatch below it was complete; the suffix is then decoded in the very ubatches a fresh cache
would use. Identical inputs to identical kernels give identical bits, on any backend (thread counts do not
matter here: 1 and 2 threads gave identical outputs). The price is granularity: up to
``n_ubatch - 1`` shared tokens are recomputed, so the engine uses small ubatches where prompt processing does
not need big ones (``ubatch_for``: 32 on the CPU). ``tests/test_kv_reuse.py`` checks the equality on every task
and both demo models, byte for byte.

Everything here is pure (token lists in, positions out) so that it can be tested without a model.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

Span = tuple[int, int]

CPU_UBATCH = 32    # grid on the CPU: prompt throughput within a few percent of 512 (docs/kv-reuse.md)
OFFLOAD_UBATCH = 512  # on a GPU small ubatches are slow; there reuse works in 512-token steps


def ubatch_for(n_batch: int, offloaded: bool) -> int:
    """The ubatch size (the reuse grid) for a model on the CPU or offloaded to a GPU."""
    return min(n_batch, OFFLOAD_UBATCH if offloaded else CPU_UBATCH)


@dataclass(frozen=True)
class Batching:
    """How a fresh prompt is split (llama-cpp-python: ``n_batch`` chunks, llama.cpp: ``n_ubatch`` ubatches)."""

    n_batch: int
    n_ubatch: int

    def __post_init__(self) -> None:
        if self.n_batch < 1 or self.n_ubatch < 1:
            raise ValueError("n_batch and n_ubatch must be positive")


def fresh_spans(n_tokens: int, batching: Batching) -> list[Span]:
    """The ubatches a fresh cache computes a prompt of ``n_tokens`` in: chunks of n_batch from position 0, each
    split into ubatches of n_ubatch. Every span but the last is the same for any longer prompt."""
    spans = []
    for chunk in range(0, n_tokens, batching.n_batch):
        chunk_end = min(chunk + batching.n_batch, n_tokens)
        for u in range(chunk, chunk_end, batching.n_ubatch):
            spans.append((u, min(u + batching.n_ubatch, chunk_end)))
    return spans


def row_class(span: Span, position: int) -> Hashable:
    """What fixes a token's numbers besides the tokens before it: the ubatch that computed it."""
    return span


def span_classes(spans: Sequence[Span]) -> list[Hashable]:
    return [row_class(span, t) for span in spans for t in range(span[0], span[1])]


def generated_class(position: int) -> Hashable:
    """Generated tokens are decoded one at a time."""
    return row_class((position, position + 1), position)


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


@dataclass(frozen=True)
class Plan:
    """How to bring the cache from what it holds to ``tokens``: keep [0, reuse), decode ``pieces`` in order."""

    tokens: tuple[int, ...]
    reuse: int                      # cached tokens kept (a ubatch boundary)
    pieces: tuple[Span, ...]        # the fresh ubatches from ``reuse`` on (decode_calls joins them)
    classes: tuple[Hashable, ...]   # the ubatch of every token of ``tokens`` once the pieces are decoded

    @property
    def evaluated(self) -> int:
        return len(self.tokens) - self.reuse


def _suffix_pieces(reuse: int, spans: Sequence[Span]) -> list[Span]:
    pieces = []
    for start, end in spans:
        if end <= reuse:
            continue
        pieces.append((max(start, reuse), end))
    return pieces


def decode_calls(pieces: Sequence[Span], batching: Batching) -> list[Span]:
    """Join consecutive ``pieces`` (ubatches) into as few ``llama_decode`` calls as llama.cpp will split back into
    exactly those pieces.

    Why: one call per ubatch made prompt processing slower than llama-cpp-python's own (one call per ``n_batch``
    chunk), by up to 20 % at a 16-token grid (docs/kv-reuse.md). llama.cpp cuts a call into ubatches of
    ``n_ubatch`` rows from the call's first token (``split_simple``), so a piece joins the call before it only
    if every piece already in that call is a whole ``n_ubatch`` (the cut then falls where the piece starts),
    the two touch, and the call stays within ``n_batch`` (the batch's capacity). A fresh prompt then goes in one
    call per chunk; after a reuse, calls may cross chunk lines, which is harmless: the ubatches are the same."""
    calls: list[Span] = []
    for start, end in pieces:
        if calls:
            call_start, call_end = calls[-1]
            if (call_end == start and (call_end - call_start) % batching.n_ubatch == 0
                    and end - call_start <= batching.n_batch):
                calls[-1] = (call_start, end)
                continue
        calls.append((start, end))
    return calls


def plan(cached: Sequence[int], cached_classes: Sequence[Hashable], tokens: Sequence[int],
         batching: Batching, enabled: bool = True) -> Plan:
    """The longest safe reuse of ``cached`` (tokens held in the KV cache, with the ubatch each was computed in)
    for a prompt ``tokens``, and the ubatches to decode after it. At least the last prompt token is always
    decoded, because its logits are needed."""
    tokens = tuple(tokens)
    spans = fresh_spans(len(tokens), batching)
    fresh = span_classes(spans)
    best = 0
    if enabled and tokens:
        limit = min(common_prefix(cached, tokens), len(tokens) - 1, len(cached_classes))
        same = 0
        while same < limit and cached_classes[same] == fresh[same]:
            same += 1
        best = max((start for start, _ in spans if start <= same), default=0)
    return Plan(tokens=tokens, reuse=best, pieces=tuple(_suffix_pieces(best, spans)), classes=tuple(fresh))


@dataclass
class CacheState:
    """What sequence 0 of the KV cache holds: token ids by position and the ubatch each was computed in.
    Invalidated (emptied) whenever something failed half-way, so it never claims more than is true."""

    tokens: list[int] = field(default_factory=list)
    classes: list[Hashable] = field(default_factory=list)

    def clear(self) -> None:
        self.tokens, self.classes = [], []

    def keep(self, n: int) -> None:
        del self.tokens[n:]
        del self.classes[n:]
