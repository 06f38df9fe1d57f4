"""The ``sepconv-cli`` directive: the command-line reference, generated from sepconv's own parsers.

For ``sepconv`` and each of its commands the page shows a section with the command's one-line purpose
and the exact text of ``sepconv COMMAND --help``, formatted by argparse itself at a fixed width, so the
reference cannot drift from what the command prints.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from docutils import nodes
from sphinx.util.docutils import SphinxDirective

HELP_WIDTH = 100


def _help_text(parser: argparse.ArgumentParser) -> str:
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(HELP_WIDTH)  # argparse reads the width from COLUMNS when it formats
    try:
        return parser.format_help().rstrip()
    finally:
        if previous is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = previous


def command_parsers() -> dict[str, argparse.ArgumentParser]:
    """``sepconv``'s parser and each command's, by the command line that shows them (``sepconv train``)."""
    from sepconv.cli.main import build_parser

    parser = build_parser()
    found = {"sepconv": parser}
    for action in parser._actions:  # argparse keeps subcommands only here
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in sorted(action.choices.items()):
                found[f"sepconv {name}"] = sub
    return found


def _command_summaries(parser: argparse.ArgumentParser) -> dict[str, str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return {choice.dest: choice.help or "" for choice in action._choices_actions}
    return {}


class SepconvCliDirective(SphinxDirective):
    """Insert one section per command with its ``--help`` text."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        parsers = command_parsers()
        summaries = _command_summaries(parsers["sepconv"])
        result: list[nodes.Node] = []
        for title, parser in parsers.items():
            section_id = nodes.make_id(title.replace(" ", "-"))
            section = nodes.section(ids=[section_id])
            section += nodes.title(text=title)
            summary = summaries.get(title.removeprefix("sepconv "), "")
            if summary:
                purpose = nodes.paragraph(text=summary[0].upper() + summary[1:])
                purpose["support_smartquotes"] = False  # "--resume" stays two hyphens, not a dash
                section += purpose
            block = nodes.literal_block(text=_help_text(parser))
            block["language"] = "text"
            section += block
            result.append(section)
        return result


def setup(app: Any) -> dict[str, Any]:
    app.add_directive("sepconv-cli", SepconvCliDirective)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
