"""The repository explains itself: every rule id the code, tests, benchmarks or docs cite has a
section of its own in docs/rules.md, and no file points a reader at a document outside the
repository or at the project's issue tracker."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TEXT_ENDINGS = (".py", ".md", ".yaml", ".yml", ".toml", ".typ", ".html", ".css", ".cfg",
                ".txt", ".sh", "Makefile", "Dockerfile")
RULE_ID = re.compile(r"\bR\d+(?:\.\d+)?\b")
RULE_HEADING = re.compile(r"^#{2,4} (R\d+(?:\.\d+)?)\b", re.MULTILINE)
# What would send a reader outside: the upstream rules and seed documents, an issue or
# acceptance point of the tracker. (schemathesis names one of its checks
# `positive_data_acceptance`, a word of its own, not ours.)
OUTSIDE_POINTERS = re.compile(
    r"\.\./shared|shared/(?:spec|seeds)|spec/(?:rules|api|events)\.md|\bissue\s*#?\d+"
    r"|(?<!positive_data_)acceptance", re.IGNORECASE)


def tracked_text_files() -> list[Path]:
    """Every text file git tracks, but this one: it spells the patterns it looks for."""
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout.split()
    return [ROOT / name for name in listed
            if (name.endswith(TEXT_ENDINGS) or name.startswith(".ci/"))
            and ROOT / name != Path(__file__).resolve()]


def test_every_cited_rule_id_has_a_section_in_the_rules_reference() -> None:
    sections = set(RULE_HEADING.findall((ROOT / "docs" / "rules.md").read_text()))
    assert {"R1.1", "R4.2", "R9.4", "R10.5"} <= sections  # the page is the one we think
    unresolved = {
        f"{path.relative_to(ROOT)}: {rule}"
        for path in tracked_text_files()
        for rule in RULE_ID.findall(path.read_text(encoding="utf-8"))
        if rule not in sections
    }
    assert not unresolved, sorted(unresolved)


def test_no_file_points_outside_the_repository() -> None:
    pointers = [
        f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, match.start()) + 1}: {match[0]}"
        for path in tracked_text_files()
        for text in [path.read_text(encoding="utf-8")]
        for match in OUTSIDE_POINTERS.finditer(text)
    ]
    assert not pointers, pointers


MARKDOWN_LINK = re.compile(r"\]\(([^)\s#]+)(?:#([^)\s]*))?\)")


def anchors_of(page: Path) -> set[str]:
    """The anchors a Markdown renderer gives the headings of a page (lower case, spaces to
    hyphens, punctuation dropped)."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(encoding="utf-8"), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}


def test_every_link_between_pages_reaches_a_file_and_heading_of_the_repository() -> None:
    broken = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target, anchor in MARKDOWN_LINK.findall(page.read_text(encoding="utf-8")):
            linked = (page.parent / target).resolve()
            if target.startswith(("http://", "https://")) or not linked.exists():
                broken.append(f"{page.name} → {target}")
            elif anchor and linked.suffix == ".md" and anchor not in anchors_of(linked):
                broken.append(f"{page.name} → {target}#{anchor}")
    assert not broken, broken
