"""The documentation cannot drift from the tool: every command is documented."""

from __future__ import annotations

import argparse
import re

from conftest import REPO

from filelayer.cli import build_parser


def commands() -> list[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sorted(sub.choices)


def test_every_command_has_a_section_in_docs_cli() -> None:
    doc = (REPO / "docs" / "cli.md").read_text("utf-8")
    documented = set(re.findall(r"^## `filelayer (\w+)", doc, flags=re.MULTILINE))
    assert set(commands()) <= documented, set(commands()) - documented


def test_every_command_has_real_example_output() -> None:
    doc = (REPO / "docs" / "cli.md").read_text("utf-8")
    for name in commands():
        assert f"$ filelayer {name}" in doc, name


def test_the_readme_points_to_the_cli_docs() -> None:
    assert "docs/cli.md" in (REPO / "README.md").read_text("utf-8")
