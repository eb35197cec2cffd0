"""Throughput of the corpus overlap index (contamination --corpus): MB of corpus per minute.

Generates a JSONL corpus of the given size (random words from a 20,000-word vocabulary, Zipf-distributed, in
documents of 50 to 400 words), then times, in the same run: (1) reading and normalising only (the baseline: what
any pass over the corpus costs), (2) building the SQLite n-gram index from scratch, (3) a second pass over the
already indexed corpus (resume: hashing only), (4) looking up 1,000 items. Prints MB/min and the ratio to the
baseline.

    python tools/bench_overlap.py --mb 300
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from medbench_local.contamination.overlap import DEFAULT_N, NORMALISATION, documents, index_corpus, item_overlap, words
from medbench_local.store.ngram_index import NgramIndex


def generate(path: Path, megabytes: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    vocab = np.array([f"w{n:x}{'ab'[n % 2]}" for n in range(20_000)])
    samples: list[str] = []
    written = 0
    with open(path, "w", encoding="utf-8") as handle:
        while written < megabytes * 1_000_000:
            count = int(rng.integers(50, 400))
            text = " ".join(vocab[np.minimum(rng.zipf(1.2, count) - 1, vocab.size - 1)])
            line = json.dumps({"instruction": "Answer.", "output": text}) + "\n"
            handle.write(line)
            written += len(line)
            if len(samples) < 500:
                samples.append(text)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        corpus = Path(folder) / "corpus.jsonl"
        samples = generate(corpus, args.mb)
        size = corpus.stat().st_size / 1e6
        started = time.perf_counter()
        for text, _ in documents(corpus):
            words(text)
        baseline = time.perf_counter() - started
        index = NgramIndex(Path(folder) / "i.ngrams", n=DEFAULT_N, normalisation=NORMALISATION)
        started = time.perf_counter()
        index_corpus(index, [corpus], DEFAULT_N)
        build = time.perf_counter() - started
        started = time.perf_counter()
        index_corpus(index, [corpus], DEFAULT_N)
        resume = time.perf_counter() - started
        items = samples[:500] + [" ".join(reversed(s.split())) for s in samples[:500]]
        started = time.perf_counter()
        found = sum(item_overlap(index, text, DEFAULT_N).share == 1.0 for text in items)
        lookup = time.perf_counter() - started
        index_size = (Path(folder) / "i.ngrams").stat().st_size / 1e6
        index.close()
    print(f"corpus {size:.0f} MB; index {index_size:.0f} MB on disk")
    print(f"read + normalise (baseline): {size / baseline * 60:,.0f} MB/min")
    print(f"build the index:             {size / build * 60:,.0f} MB/min ({build / baseline:.1f}x the baseline's time)")
    print(f"rerun (files already in it): {size / resume * 60:,.0f} MB/min (SHA-256 only)")
    print(f"1,000 item lookups:          {lookup:.2f} s ({found} of the 500 verbatim found whole)")


if __name__ == "__main__":
    main()
