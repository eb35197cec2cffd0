"""Retrieval over a local corpus: passages (passages.py), a hashed SQLite FTS5 index ranked by BM25 (index.py,
SQL in store/retrieval_index.py), queries that are never a syntax error (query.py), passages placed into a
prompt within a token budget (augment.py), and recall@k / MRR where gold passages are known (quality.py).

Why here, below the runner: an arm (a model plus retrieval, config.ArmSpec) is run like any model; the runner
asks this package for an item's passages before the prompt is rendered."""
