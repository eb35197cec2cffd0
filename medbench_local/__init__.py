"""medbench-local: does a biomedical fine-tune beat its general-purpose base, measured locally?

The package is organised along the data flow:
models.toml -> ``config`` -> ``tasks`` (dataset + prompt builder + scorer) -> ``engine`` (llama.cpp)
-> ``metrics`` (pure scoring functions) -> ``store`` (SQLite) -> ``cli`` (run / compare / models / tasks).
"""

__version__ = "0.1.0"
