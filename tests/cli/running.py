"""Run ``sepconv`` in this process and capture what it says, argparse's own exits included."""

from __future__ import annotations

import pytest

from sepconv.cli.main import main


def run_sepconv(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of ``sepconv ARGS`` run in this process (argparse exits itself)."""
    try:
        code = main(args)
    except SystemExit as exited:
        code = exited.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err
