"""The documentation cannot drift from the tool: every command is documented."""

from __future__ import annotations

import argparse
import re

from filelayer.cli import build_parser
from tests.support.processes import REPO


def commands() -> list[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sorted(sub.choices)


def test_every_command_has_a_section_in_docs_cli() -> None:
    doc = (REPO / "docs" / "cli.md").read_text("utf-8")
    documented = set(re.findall(r"^## `filelayer ([\w-]+)", doc, flags=re.MULTILINE))
    assert set(commands()) <= documented, set(commands()) - documented


def test_every_command_has_real_example_output() -> None:
    doc = (REPO / "docs" / "cli.md").read_text("utf-8")
    for name in commands():
        assert f"$ filelayer {name}" in doc, name


def test_the_readme_points_to_the_cli_docs() -> None:
    assert "docs/cli.md" in (REPO / "README.md").read_text("utf-8")


def test_every_relative_link_in_the_documentation_exists() -> None:
    """A link to a file of this repository (README.md, docs/) names a file that exists."""
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    missing = []
    for page in pages:
        text = page.read_text("utf-8")
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue  # a URL, or an anchor in the same page
            path = (page.parent / target.split("#", 1)[0]).resolve()
            if not path.exists():
                missing.append(f"{page.relative_to(REPO)}: {target}")
    assert not missing, missing
