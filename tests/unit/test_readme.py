"""The README's CLI section is the real `--help` of every command.

`pytest tests/unit/test_readme.py --update-golden` rewrites the section from the code.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from xds_server.cli.main import COMMANDS, build_parser

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = re.compile(r"(<!-- cli:begin -->\n)(.*?)(<!-- cli:end -->)", re.DOTALL)


def help_texts(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("COLUMNS", "100")
    parser = build_parser()
    subparsers = next(
        action for action in parser._actions if isinstance(action, argparse._SubParsersAction)
    )
    blocks = [f"$ splitplane --help\n{parser.format_help()}"]
    for name in COMMANDS:
        blocks.append(f"$ splitplane {name} --help\n{subparsers.choices[name].format_help()}")
    return "```\n" + "\n".join(blocks) + "```\n"


def test_readme_cli_section_matches_every_commands_help(
    monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    expected = help_texts(monkeypatch)
    readme = README.read_text()
    match = SECTION.search(readme)
    assert match, "README.md lacks the <!-- cli:begin --> ... <!-- cli:end --> section"
    if request.config.getoption("--update-golden"):
        README.write_text(readme[: match.start(2)] + expected + readme[match.end(2) :])
        return
    assert match.group(2) == expected, "run: pytest tests/unit/test_readme.py --update-golden"


def test_every_flag_of_every_command_has_help(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    parser = build_parser()
    subparsers = next(
        action for action in parser._actions if isinstance(action, argparse._SubParsersAction)
    )
    for name, command in subparsers.choices.items():
        for action in command._actions:
            assert action.help, f"splitplane {name}: {action.option_strings or action.dest}"
