"""The repository's documents point only at what it contains: no files outside it, no missing paths, no
missing sections (fast: reads tracked text files, imports neither torch nor snakemake)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Documents a working copy may have beside the repository but users do not: built from pieces so that this file
# does not mention them itself.
FORBIDDEN = [
    "REFERENCE" + ".md",
    "DESIGN" + ".md",
    "STYLE" + ".md",
    "../" + "shared",
    "/work/" + "shared",
    "notes" + "/",
]
# Backticked tokens starting with these are repository paths; results/ and resources/ are made by a run.
REPO_DIRS = (
    "config",
    "src",
    "rules",
    "scripts",
    "docs",
    "tests",
    "envs",
    "profiles",
    "notebooks",
    "report",
    ".test",
    ".ci",
)
PATH_IN_CODE = re.compile(r"(?<![\w./$-])((?:" + "|".join(map(re.escape, REPO_DIRS)) + r")/[\w./<>{}*-]*)")
FENCED_BLOCK = re.compile(r"^```.*?^```", flags=re.DOTALL | re.MULTILINE)
MARKDOWN_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
# "docs/protocol.md#optimisers", "README.md#performance", or "docs/protocol.md, Optimisers"
ANCHOR_CITATION = re.compile(r"((?:docs/)?[\w-]+\.md)#([\w-]+)")
NAMED_CITATION = re.compile(r"(docs/[\w-]+\.md), ([A-Z][^\n]*)")


def tracked_text_files() -> dict[str, str]:
    try:
        names = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.split("\0")
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    texts = {}
    for name in filter(None, names):
        path = ROOT / name
        if path.is_file():
            data = path.read_bytes()
            if b"\0" not in data[:8192]:
                texts[name] = data.decode("utf-8", errors="replace")
    return texts


def markdown_docs() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def headings(markdown: str) -> list[str]:
    text = FENCED_BLOCK.sub("", markdown)
    return [m.group(1).strip() for m in re.finditer(r"^#{1,6}\s+(.+)$", text, flags=re.MULTILINE)]


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.lower().replace("`", "")).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for heading in headings(path.read_text()):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def test_slug_matches_github_anchors():
    assert slug("Protocol notes (where we follow the public code, or deviate)") == (
        "protocol-notes-where-we-follow-the-public-code-or-deviate"
    )
    assert slug("The paper config (VTAB-1k, ViT-B/16 in21k)") == "the-paper-config-vtab-1k-vit-b16-in21k"
    assert slug("Dropout, heads and precision") == "dropout-heads-and-precision"


def test_no_file_points_outside_the_repository():
    hits = [
        f"{name}: {word}" for name, text in tracked_text_files().items() for word in FORBIDDEN if word in text
    ]
    assert not hits, "documents users do not have are cited:\n" + "\n".join(hits)


def _linked_paths(doc: Path) -> list[tuple[str, Path]]:
    """(as written, resolved) for every repository path a markdown file names: relative links (from the file's
    folder) and backticked paths (from the repository root); run outputs and placeholders are left out."""
    text = doc.read_text()
    found = []
    for target in MARKDOWN_LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue
        found.append((target, (doc.parent / target.split("#")[0]).resolve()))
    prose = FENCED_BLOCK.sub("", text)
    for span in re.findall(r"`([^`\n]+)`", prose):
        for path in PATH_IN_CODE.findall(span):
            if not any(c in path for c in "{<*"):
                found.append((path, ROOT / path.rstrip(".,;:")))
    return found


@pytest.mark.parametrize("doc", markdown_docs(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_paths_in_documents_exist(doc):
    missing = [written for written, path in _linked_paths(doc) if not path.exists()]
    assert not missing, f"{doc.name} names paths the repository does not have: {missing}"


def test_path_finder_sees_links_and_backticked_paths(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text(
        "[a](../config/paper.yaml) `--configfile=config/x.yaml` `results/table1.csv` "
        "`src/vptft/{name}.py` [w](https://example.org/docs/a.md)\n```\nrules/none.smk\n```\n"
    )
    assert [written for written, _ in _linked_paths(doc)] == ["../config/paper.yaml", "config/x.yaml"]


def _cited_sections(texts: dict[str, str]) -> list[tuple[str, str, str]]:
    """(citing file, cited document, anchor or heading) of every citation of a markdown document's section."""
    cited = []
    for name, text in texts.items():
        for doc, anchor in ANCHOR_CITATION.findall(text):
            if doc.startswith("docs/") or doc == "README.md":
                cited.append((name, doc, "#" + anchor))
        cited += [(name, doc, heading) for doc, heading in NAMED_CITATION.findall(text)]
    return cited


def test_cited_sections_exist():
    texts = tracked_text_files()
    cited = _cited_sections(texts)
    assert any(doc == "docs/protocol.md" for _, doc, _ in cited), (
        "no file cites a section of docs/protocol.md"
    )
    problems = []
    for name, doc, section in cited:
        path = ROOT / doc
        if not path.is_file():
            problems.append(f"{name}: {doc} does not exist")
        elif section.startswith("#"):
            if section[1:] not in anchors(path):
                problems.append(f"{name}: {doc}{section} is not a heading of {doc}")
        elif not any(section.lower().startswith(h.lower()) for h in headings(path.read_text())):
            problems.append(f"{name}: {doc}, {section!r} names no heading of {doc}")
    assert not problems, "\n".join(problems)


def test_links_within_documents_reach_headings():
    problems = []
    for doc in markdown_docs():
        for target in MARKDOWN_LINK.findall(doc.read_text()):
            if "#" not in target or re.match(r"^[a-z][a-z0-9+.-]*:", target):
                continue
            file, anchor = target.split("#", 1)
            path = (doc.parent / file).resolve() if file else doc
            if path.suffix == ".md" and path.is_file() and anchor not in anchors(path):
                problems.append(f"{doc.name}: {target}")
    assert not problems, f"links to headings that do not exist: {problems}"
