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


def override(
    args: list[str], extra: list[str], *, repeatable: tuple[str, ...] = ("--model-arg",)
) -> list[str]:
    """``args`` then ``extra``, each flag of ``extra`` replacing the same flag (and its value) in ``args``.

    ``sepconv`` refuses a flag given twice, so a test that varies one flag of a base command says so
    here instead of appending a second copy. Flags meant to repeat (``repeatable``) are kept.
    """
    replaced = {token for token in extra if token.startswith("--") and token not in repeatable}
    kept: list[str] = []
    skip_value = False
    for index, token in enumerate(args):
        if skip_value:
            skip_value = False
            continue
        if token in replaced:
            skip_value = index + 1 < len(args) and not args[index + 1].startswith("--")
            continue
        kept.append(token)
    return [*kept, *extra]
