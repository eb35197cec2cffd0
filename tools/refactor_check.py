"""Proof that a refactor changed no stored key, output or number (issue 21: "without changing any stored key,
output or number").

Three steps, each a subcommand:

* ``snapshot OUT DB...``: what the read commands print for each database (``compare --json`` and its table,
  ``export`` per item and ``--aggregate``, CSV and JSONL, ``reproduce --json`` (also with the demo models as
  study models), ``runs --json``, ``show`` per task, ``view --metadata-out``), plus ``tasks list`` and every
  command's ``--help``, one file per command in OUT, with its exit status and standard error. ``--code DIR``
  runs another checkout (the commit before the refactor, exported with ``git archive``), so the "before" side can
  be taken again later from the same database files. Taken before the refactor and again after it, from the same database files, the two folders
  must be byte for byte the same (``diff``): the read side is unchanged.
* ``diff A B``: the two snapshot folders, file by file; exit 1 on the first difference (a unified diff of it).
* ``rows OLD.db NEW.db``: the write side. NEW is a fresh ``run`` with the same command after the refactor; every
  stored row must equal OLD's, table by table, apart from what differs between two runs of the same command by
  nature: run ids, timestamps and durations, generation ids (local to a database), the database path in the
  stored command line, the source revision, and the thread count that ``run`` picks from the machine's load
  (not part of the evaluation identity). Evaluation and item keys, prompts, outputs, token counts, scores and
  metric values are compared exactly.

Usage (from the repository root, with the package on the path)::

    python tools/refactor_check.py snapshot /tmp/before /tmp/a.db /tmp/b.db
    ... refactor ...
    python tools/refactor_check.py snapshot /tmp/after /tmp/a.db /tmp/b.db
    python tools/refactor_check.py diff /tmp/before /tmp/after
    python tools/refactor_check.py rows /tmp/a.db /tmp/a-again.db
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

#: name -> read command (after ``--db DB``); each one's standard output is one snapshot file.
READ_COMMANDS: dict[str, list[str]] = {
    "compare.json": ["compare", "--json"],
    "compare.txt": ["compare"],
    "export.csv": ["export"],
    "export.jsonl": ["export", "--format", "jsonl"],
    "export-aggregate.csv": ["export", "--aggregate"],
    "export-aggregate.jsonl": ["export", "--aggregate", "--format", "jsonl"],
    "reproduce.json": ["reproduce", "--json"],
    "reproduce-as.json": ["reproduce", "--json", "--as", "smollm2-135m-instruct=Llama3-OpenBioLLM-8B",
                          "--as", "gemma3-270m=Meta-Llama-3-8B-Instruct"],
    "runs.json": ["runs", "--json", "--limit", "0"],
    "view-metadata.json": ["view", "--metadata-out", "{out}"],
}
#: outputs that depend on no database: the task list and every command's help (option types and choices).
GENERAL_COMMANDS: dict[str, list[str]] = {
    "tasks-list.txt": ["tasks", "list"],
    **{f"help-{name}.txt": [name, "--help"] for name in ("run", "compare", "export", "reproduce", "runs", "show",
                                                          "view", "report", "rescore", "merge")},
}
#: per task the database holds: ``show`` of the demo pair, and of one model's two scoring modes where it has both.
SHOW_COMMANDS: dict[str, list[str]] = {
    "show-{task}.txt": ["show", "--pair", "demo", "--task", "{task}"],
    "show-modes-{task}.txt": ["show", "--model", "smollm2-135m-instruct", "--task", "{task}", "--modes",
                              "generate,loglik"],
}

#: table -> columns that differ between two runs of the same command by nature (see the module docstring).
VOLATILE: dict[str, set[str]] = {
    "runs": {"id", "started_at", "finished_at", "git_revision"},
    "models": {"first_seen"},
    "evaluations": {"created_at", "run_id"},
    "generations": {"id", "run_id", "created_at", "seconds", "prompt_ms", "generation_ms"},
    "scores": {"generation_id"},
    "metric_runs": {"created_at"},
    "_migrations": {"applied_at"},
}
#: members of stored JSON that depend on the machine's load when the run started (``--threads`` not given).
VOLATILE_ENGINE_SETTINGS = ("n_threads", "n_threads_batch", "threads_rule")


def _cli(code: Path, *args: str) -> str:
    """The command's exit status, standard output and standard error, run from the checkout ``code``; an
    ``{out}`` argument is a temporary file whose content is appended. The temporary file's path is written as
    ``{out}``, this checkout's and ``code``'s as ``<checkout>``."""
    with tempfile.TemporaryDirectory() as scratch:
        target = Path(scratch) / "out"
        args = tuple(str(target) if arg == "{out}" else arg for arg in args)
        env = {**os.environ, "PYTHONPATH": str(code), "COLUMNS": "200", "NO_COLOR": "1"}
        result = subprocess.run([sys.executable, "-m", "medbench_local", *args], cwd=code, env=env,
                                capture_output=True, text=True, check=False)
        written = f"--- {{out}}\n{target.read_text(encoding='utf-8')}" if target.exists() else ""
    text = f"exit {result.returncode}\n{result.stdout}--- stderr\n{result.stderr}{written}"
    for checkout in (code, REPO):  # the databases record this checkout's paths, wherever the command ran
        text = text.replace(str(checkout), "<checkout>")
    return text.replace(str(target), "{out}")


def snapshot(out: Path, databases: list[Path], code: Path = REPO) -> None:
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    for name, command in GENERAL_COMMANDS.items():
        (out / name).write_text(_cli(code, *command), encoding="utf-8")
        written += 1
    for index, db in enumerate(databases, 1):
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            tasks = [task for (task,) in conn.execute("select distinct task from evaluations order by task")]
        commands = dict(READ_COMMANDS)
        for task in tasks:
            commands.update({name.format(task=task): [a.format(task=task) for a in command]
                             for name, command in SHOW_COMMANDS.items()})
        for name, command in commands.items():
            written += 1
            (out / f"db{index}-{name}").write_text(_cli(code, *command, "--db", str(db)), encoding="utf-8")
    print(f"{written} outputs in {out}")


def diff(before: Path, after: Path) -> int:
    names = sorted({p.name for p in before.iterdir()} | {p.name for p in after.iterdir()})
    differing = 0
    for name in names:
        a, b = before / name, after / name
        if not a.exists() or not b.exists():
            print(f"{name}: only in {'after' if not a.exists() else 'before'}")
            differing += 1
            continue
        if a.read_bytes() != b.read_bytes():
            differing += 1
            lines = difflib.unified_diff(a.read_text().splitlines(), b.read_text().splitlines(), str(a), str(b),
                                         lineterm="", n=1)
            print("\n".join(list(lines)[:40]))
    print(f"{len(names)} outputs compared, {differing} differ")
    return 1 if differing else 0


def _normalised(table: str, row: dict[str, Any], db: Path) -> dict[str, Any]:
    row = {k: v for k, v in row.items() if k not in VOLATILE.get(table, set())}
    if table == "runs":
        command = json.loads(row["command"])
        row["command"] = ["<db>" if arg == str(db) else arg for arg in command[1:]]  # argv[0]: the entry point
        settings = json.loads(row["settings"])
        settings["n_threads"] = None if settings.get("n_threads") is None else "<threads>"
        row["settings"] = settings
        packages = json.loads(row["packages"])
        row["packages"] = packages
    if table == "evaluations":
        settings = json.loads(row["settings"])
        for name in VOLATILE_ENGINE_SETTINGS:
            settings.get("engine", {}).pop(name, None)
        row["settings"] = settings
    return row


def _table(conn: sqlite3.Connection, table: str, db: Path) -> list[str]:
    """Every row of ``table`` as canonical JSON, the volatile columns left out, sorted (ids differ in order)."""
    conn.row_factory = sqlite3.Row
    found = []
    for row in conn.execute(f'select * from "{table}"'):
        found.append(json.dumps(_normalised(table, dict(row), db), sort_keys=True, ensure_ascii=False))
    return sorted(found)


def _generations(conn: sqlite3.Connection) -> list[str]:
    """Generations joined with their scores by (evaluation, item): generation ids are local to a database."""
    conn.row_factory = sqlite3.Row
    found = []
    for row in conn.execute("select g.*, s.outcome, s.extracted, s.gold, s.method, s.detail, s.metrics "
                            "from generations g join scores s on s.generation_id = g.id"):
        values = {k: v for k, v in dict(row).items() if k not in VOLATILE["generations"]}
        found.append(json.dumps(values, sort_keys=True, ensure_ascii=False))
    return sorted(found)


def rows(old: Path, new: Path) -> int:
    connections = {path: sqlite3.connect(f"file:{path}?mode=ro", uri=True) for path in (old, new)}
    problems = 0
    try:
        tables = {path: {name for (name,) in conn.execute("select name from sqlite_master where type = 'table'")}
                  for path, conn in connections.items()}
        if tables[old] != tables[new]:
            print(f"tables differ: {sorted(tables[old] ^ tables[new])}")
            problems += 1
        views = {path: sorted(conn.execute("select name, sql from sqlite_master where type = 'view'").fetchall())
                 for path, conn in connections.items()}
        if views[old] != views[new]:
            print("the views' definitions differ")
            problems += 1
        checked = []
        for table in sorted(tables[old] & tables[new]):
            if table.startswith("sqlite_"):
                continue
            a = _table(connections[old], table, old)
            b = _table(connections[new], table, new)
            checked.append(f"{table} {len(a)}")
            if a != b:
                problems += 1
                print(f"{table}: {len(a)} rows in {old}, {len(b)} in {new}; first difference:")
                changed = [line for line in difflib.unified_diff(a, b, lineterm="", n=0)
                           if line[:1] in "-+" and line[:3] not in ("---", "+++")]
                for line in changed[:2]:
                    print("  " + line[:400])
        a, b = _generations(connections[old]), _generations(connections[new])
        checked.append(f"generations+scores {len(a)}")
        if a != b:
            problems += 1
            print("generations joined with scores differ")
    finally:
        for conn in connections.values():
            conn.close()
    print(f"{old} vs {new}: rows compared ({', '.join(checked)}); {problems} difference(s)")
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="step", required=True)
    take = sub.add_parser("snapshot", help="the read commands' outputs for each database, into OUT")
    take.add_argument("out", type=Path)
    take.add_argument("databases", type=Path, nargs="+")
    take.add_argument("--code", type=Path, default=REPO,
                      help="the checkout whose medbench_local runs the commands (default: this one); e.g. the commit "
                           "before the refactor, exported with 'git archive COMMIT | tar -x -C DIR'")
    compare = sub.add_parser("diff", help="two snapshot folders, file by file")
    compare.add_argument("before", type=Path)
    compare.add_argument("after", type=Path)
    stored = sub.add_parser("rows", help="two databases' stored rows, volatile columns left out")
    stored.add_argument("old", type=Path)
    stored.add_argument("new", type=Path)
    args = parser.parse_args(argv)
    if args.step == "snapshot":
        snapshot(args.out, args.databases, args.code.resolve())
        return 0
    if args.step == "diff":
        return diff(args.before, args.after)
    return rows(args.old, args.new)


if __name__ == "__main__":
    sys.exit(main())
