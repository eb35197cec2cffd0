"""The documentation stands alone: nothing cites a file the repository does not hold, and every link resolves.

Why: code comments, tests and docs once cited a research extraction that lived beside the repository, not in
it, so a reader of a clone could not follow a single one of those citations. What the project relies on now
lives in docs/study-reference.md, citing the primary sources (DOI, repository, path and commit). These tests
keep it that way:

* no file of the repository (tracked, or new and not ignored; never ``.venv`` or ``.git``) mentions the old
  extraction's file name or folder;
* every relative link in ``docs/*.md`` and ``README.md`` points to a file that exists, and a ``#anchor`` into
  one of our markdown files names a heading that exists there (GitHub's anchor rules);
* every ``docs/<page>.md#<anchor>`` pointer written in code, tests or docs names an existing heading.

Each checker is also run on a small tree made to break it, so a checker that silently finds nothing fails.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import REPO

# Spelled in pieces so that this file does not mention what it forbids.
FORBIDDEN: tuple[str, ...] = ("paper" + ".md", "shared" + "/reference")
NEVER_SCANNED = (".venv", ".git")
# Without git (a source tree without its .git), these are what .gitignore leaves out: generated, never written
# by hand, and stale compiled files could still hold old docstrings.
GENERATED_DIRS = {"__pycache__", ".pytest_cache", ".hypothesis", ".ruff_cache", ".mypy_cache", "build", "dist",
                  "_bundled"}
CHUNK = 1 << 20


# ------------------------------------------------------------------------------------------- the repository


def repository_files(root: Path) -> list[Path]:
    """The repository's files: git's tracked and untracked-but-not-ignored files when ``root`` is a git checkout
    (so a new file counts before it is committed), else a walk that skips ``.venv``, ``.git`` and generated
    folders. Never anything under ``.venv`` or ``.git``."""
    listed = _git_files(root)
    if listed is None:
        listed = list(_walk(root))
    return sorted(p for p in listed if p.is_file() and not p.is_symlink()
                  and p.relative_to(root).parts[0] not in NEVER_SCANNED)


def _git_files(root: Path) -> list[Path] | None:
    git = shutil.which("git")
    if git is None or not (root / ".git").exists():
        return None
    done = subprocess.run([git, "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                          capture_output=True, check=False)
    if done.returncode != 0:
        return None
    return [root / name for name in done.stdout.decode("utf-8", "surrogateescape").split("\0") if name]


def _walk(root: Path) -> Iterator[Path]:
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in NEVER_SCANNED and d not in GENERATED_DIRS
                         and not d.endswith(".egg-info"))
        for name in files:
            if not name.endswith((".pyc", ".db", ".db-wal", ".db-shm")):
                yield Path(folder) / name


def mentions(path: Path, needles: tuple[str, ...] = FORBIDDEN) -> list[str]:
    """``needle`` (case-insensitive) for each needle that occurs in ``path``, read in chunks (overlapping by the
    longest needle) so that a large file costs no more memory than a small one."""
    wanted = [n.lower().encode() for n in needles]
    overlap = max(len(n) for n in wanted) - 1
    found: set[bytes] = set()
    tail = b""
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            window = (tail + block).lower()
            found.update(n for n in wanted if n in window)
            tail = window[-overlap:] if overlap else b""
    return [n.decode() for n in wanted if n in found]


def citations(root: Path) -> list[str]:
    """``path: needle`` for every repository file that mentions a forbidden name."""
    return [f"{p.relative_to(root)}: {n}" for p in repository_files(root) for n in mentions(p)]


# ---------------------------------------------------------------------------------------------- markdown

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})[^\n]*\n.*?^ {0,3}\1[`~]*[ \t]*$", re.M | re.S)
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^()\s<>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$", re.M)
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def without_code(text: str) -> str:
    """Markdown with fenced blocks and inline code spans blanked (links there are examples, not links)."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the rendered text (links reduced to their text, code marks and emphasis
    dropped), lower-cased, every character but letters, digits, ``_``, ``-`` and spaces removed, spaces to ``-``."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"[`*]", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a markdown file; a repeated heading gets ``-1``, ``-2``, ... as on GitHub."""
    seen: dict[str, int] = {}
    found = set()
    for match in HEADING.finditer(FENCE.sub("", path.read_text(encoding="utf-8"))):
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def link_problems(path: Path) -> list[str]:
    """Each relative link of a markdown file that points nowhere: ``file: target (why)``."""
    problems = []
    for match in LINK.finditer(without_code(path.read_text(encoding="utf-8"))):
        target = match.group(1)
        if SCHEME.match(target):
            continue  # http:, https:, mailto: ... are not ours to check offline
        file_part, _, fragment = target.partition("#")
        destination = (path.parent / file_part).resolve() if file_part else path
        if not destination.exists():
            problems.append(f"{path.name}: {target} (no such file)")
        elif fragment and destination.suffix == ".md" and fragment not in anchors(destination):
            problems.append(f"{path.name}: {target} (no heading '#{fragment}' in {destination.name})")
    return problems


def documents(root: Path) -> list[Path]:
    return sorted((root / "docs").glob("*.md")) + [root / "README.md"]


# A pointer in prose or code: docs/<page>.md#<anchor>, possibly followed by more anchors of the same page
# ("docs/study-reference.md#tasks, #metrics and #reference-quirks").
POINTER = re.compile(r"\bdocs/([\w.-]+\.md)((?:#[\w-]+)(?:(?:,\s*|\s+and\s+)#[\w-]+)*)")


def pointer_problems(root: Path) -> list[str]:
    """Each ``docs/<page>.md#<anchor>`` written in a .py or .md file whose page or heading does not exist."""
    problems = []
    for path in repository_files(root):
        if path.suffix not in (".py", ".md"):
            continue
        for match in POINTER.finditer(path.read_text(encoding="utf-8", errors="replace")):
            page = root / "docs" / match.group(1)
            where = f"{path.relative_to(root)}: docs/{match.group(1)}"
            if not page.is_file():
                problems.append(f"{where} (no such page)")
                continue
            known = anchors(page)
            problems += [f"{where}#{a} (no such heading)" for a in re.findall(r"#([\w-]+)", match.group(2))
                         if a not in known]
    return problems


# ------------------------------------------------------------------------------------------------- tests


def test_no_file_cites_the_research_extraction_outside_the_repository() -> None:
    assert citations(REPO) == []


def test_every_relative_link_in_the_docs_and_readme_resolves() -> None:
    pages = documents(REPO)
    assert REPO / "docs" / "study-reference.md" in pages and REPO / "docs" / "adding-a-task.md" in pages
    assert [problem for page in pages for problem in link_problems(page)] == []


def test_every_pointer_to_a_docs_section_resolves() -> None:
    assert pointer_problems(REPO) == []


def test_the_study_reference_cites_primary_sources() -> None:
    """The page that replaced the extraction names what a reader needs to check a number at its source."""
    text = (REPO / "docs" / "study-reference.md").read_text(encoding="utf-8")
    for source in ("10.1093/jamia/ocaf045", "TIO-IKIM/CLUE", "ff75877284133361d15f12e4ab290d230f449dd0",
                   "dadaamin/CLUE-website", "src/views/Dashboard.vue", "354cc306a117f698e1878f3e97ba196be7c801ee"):
        assert source in text, source
    published = (REPO / "medbench_local" / "analysis" / "published.py").read_text(encoding="utf-8")
    for source in ("10.1093/jamia/ocaf045", "dadaamin/CLUE-website", "354cc306a117f698e1878f3e97ba196be7c801ee",
                   "TIO-IKIM/CLUE"):
        assert source in published, source


# ---------------------------------------------------------------------------------- the checkers themselves


@pytest.mark.parametrize(("heading", "anchor"), [
    ("Models (`models.toml`)", "models-modelstoml"),
    ("`--document-order per-patient` for the KV cache", "--document-order-per-patient-for-the-kv-cache"),
    ("1. Staging machine: install", "1-staging-machine-install"),
    ("Statistics in `compare`", "statistics-in-compare"),
    ("UMLS-F1", "umls-f1"),
    ("ICD-10 codes", "icd-10-codes"),
    ("The sample needs two records", "the-sample-needs-two-records"),
    ("A [linked](other.md) heading", "a-linked-heading"),
])
def test_slugs_follow_githubs_rules(heading: str, anchor: str) -> None:
    assert slug(heading) == anchor


def test_the_link_checker_finds_every_kind_of_broken_link(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "other.md").write_text("# Other\n\n## Part\n\n## Part\n", encoding="utf-8")
    page = tmp_path / "docs" / "page.md"
    page.write_text(
        "# Page\n\n## Here\n\n"
        "[ok](other.md) [ok](other.md#part) [ok](other.md#part-1) [ok](#here) [ok](https://example.org/x.md)\n"
        "[missing file](gone.md) [missing anchor](other.md#nowhere) [missing here](#there)\n"
        "[split\nacross lines](also-gone.md)\n"
        "`[in code](code.md)`\n\n```\n[in a fence](fence.md)\n```\n", encoding="utf-8")
    assert link_problems(page) == [
        "page.md: gone.md (no such file)",
        "page.md: other.md#nowhere (no heading '#nowhere' in other.md)",
        "page.md: #there (no heading '#there' in page.md)",
        "page.md: also-gone.md (no such file)",
    ]


def test_the_citation_scan_finds_a_mention_anywhere_but_venv_and_git(tmp_path: Path) -> None:
    for name in ("docs/a.md", "pkg/b.py", "data/c.bin", ".venv/lib/d.py", ".git/e"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "docs" / "a.md").write_text("See " + FORBIDDEN[0].upper() + " §3.\n", encoding="utf-8")
    (tmp_path / "pkg" / "b.py").write_text("# ../" + FORBIDDEN[1] + "/x\n", encoding="utf-8")
    # across a chunk boundary, in a binary file
    (tmp_path / "data" / "c.bin").write_bytes(b"\0" * (CHUNK - 3) + FORBIDDEN[0].encode() + b"\0")
    (tmp_path / ".venv" / "lib" / "d.py").write_text(FORBIDDEN[0], encoding="utf-8")
    (tmp_path / ".git" / "e").write_text(FORBIDDEN[1], encoding="utf-8")
    assert citations(tmp_path) == [f"data/c.bin: {FORBIDDEN[0]}", f"docs/a.md: {FORBIDDEN[0]}",
                                   f"pkg/b.py: {FORBIDDEN[1]}"]


def test_the_pointer_check_reads_every_anchor_of_a_pointer(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "ref.md").write_text("# Ref\n\n## Tasks\n\n## Metrics\n", encoding="utf-8")
    docs = "docs" + "/"  # in pieces: the pointers below are broken on purpose, and this file is scanned too
    (tmp_path / "m.py").write_text(f'"""See {docs}ref.md#tasks, #metrics and\n#quirks; {docs}gone.md#x."""\n',
                                   encoding="utf-8")
    assert pointer_problems(tmp_path) == [f"m.py: {docs}ref.md#quirks (no such heading)",
                                          f"m.py: {docs}gone.md (no such page)"]
