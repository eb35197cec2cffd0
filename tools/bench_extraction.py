"""Benchmark: answer extraction on pathological outputs, as a ratio against ordinary model outputs.

Guards against catastrophic regex backtracking (once ~20 s on "((((..."). Reported as ratios within the same
run, never as absolute times, because these machines are shared and noisy.

    .venv/bin/python tools/bench_extraction.py
"""

from __future__ import annotations

import statistics
import timeit

from medbench_local.metrics.extraction import extract_choice

OPTIONS = {"A": "Tinea corporis", "B": "Bacterial cellulitis", "C": "Early localized Lyme disease",
           "D": "Granuloma annulare", "E": "Fixed drug eruption"}
ORDINARY = ["The answer is C.", " C. Early localized Lyme disease", "I think it is Lyme disease.",
            "Considering the rash, the final answer is **C**.",
            "The answer is:\nA. Tinea corporis\nB. Bacterial cellulitis\nC. Early localized Lyme disease"]
PATHOLOGICAL = ["(" * 20000, "**" * 20000, "answer: " + "(* " * 10000, "A. " * 10000, "not " * 10000 + "A but B",
                "word " * 20000,
                # option-list (echo) and letter-text (conflict) checks: many list lines, one huge line
                "A. Tinea corporis\n" * 5000, "\nA" * 20000, "1. " * 10000, "(A) " * 10000 + "Tinea corporis",
                "The answer is " * 5000 + "A. Tinea corporis", "The answer is A: " + "x" * 50000,
                # extraction v3: label lists, placeholders, label sequences, examples, word runs of the fuzzy stage
                "A. A.\n" * 5000, "<text of option A>\n" * 5000, "A. x\nB. y\nC. z\n" * 3000,
                "If you choose option A, reply: " * 2000, "Tinea corporis " * 5000,
                "A. Tinea corporis is " + "very " * 10000 + "likely"]


def per_char_seconds(texts: list[str], repeat: int) -> float:
    times = []
    for text in texts:
        best = min(timeit.repeat(lambda t=text: extract_choice(t, OPTIONS), number=1, repeat=repeat))
        times.append(best / max(len(text), 1))
    return statistics.median(times)


def main() -> None:
    ordinary = per_char_seconds(ORDINARY, repeat=50)
    pathological = per_char_seconds(PATHOLOGICAL, repeat=3)
    print(f"pathological / ordinary time per character: {pathological / ordinary:.2f}x "
          "(linear behaviour keeps this near or below 1)")


if __name__ == "__main__":
    main()
