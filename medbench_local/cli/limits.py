"""Ranges of the numeric command-line options, in one place.

Why bounded: llama.cpp receives threads, batch size and seed as C integers (a value beyond their range would
wrap silently, and llama.cpp reads seed 2**32 - 1 as "pick a random seed"), and numpy refuses a negative seed
with a traceback. Click checks these ranges before anything else runs, so a bad value is one line naming the
option, before any database is created or opened. Like every usage error (a bad option value, an unknown
option) it exits with code 2 and Click's usage banner; a bad input *file* exits with code 1.
"""

from __future__ import annotations

import click

from ..runner.context import MAX_BATCH, MAX_LLAMA_SEED, MAX_RESAMPLES, MAX_STATS_SEED, MAX_THREADS, MIN_RESAMPLES


class BoundedInt(click.IntRange):
    """An integer option with a closed range; a value outside it (or not an integer) is a usage error like any
    other bad option value: Click's one 'Error:' line naming the option, exit code 2 (a bad input *file* is
    exit code 1)."""


THREADS = BoundedInt(1, MAX_THREADS)
BATCH_SIZE = BoundedInt(1, MAX_BATCH)
LLAMA_SEED = BoundedInt(0, MAX_LLAMA_SEED)
STATS_SEED = BoundedInt(0, MAX_STATS_SEED)
RESAMPLES = BoundedInt(MIN_RESAMPLES, MAX_RESAMPLES)
