"""``sepconv --help``, every ``sepconv COMMAND --help`` and ``sepconv calc`` answer without importing torch.

torch takes seconds to import; a command line that only prints its help, or works out integer
arithmetic, must not wait for it. One fresh interpreter runs the commands one after another and lists,
after each, which heavy libraries are loaded: a command that imports one is named (not a timing test;
``benchmarks/cli_startup.py`` measures the time).
"""

from __future__ import annotations

import json
import subprocess
import sys

from sepconv.cli.main import _command_modules

# Libraries that must stay out of the help and of calc: each takes from 0.1 s (rich) to seconds (torch).
HEAVY = ("torch", "numpy", "matplotlib", "lightning", "onnxruntime", "PIL", "rich")

_PROBE = """
import contextlib, io, json, sys
from sepconv.cli.main import main

heavy = set(json.loads(sys.argv[1]))
report = []
for args in json.loads(sys.argv[2]):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            code = main(args)
        except SystemExit as exited:
            code = exited.code
    loaded = sorted({name.split(".")[0] for name in sys.modules} & heavy)
    report.append([" ".join(args), code, loaded])
print(json.dumps(report))
"""


def _loaded_after_each(calls: list[list[str]]) -> list[list]:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(HEAVY), json.dumps(calls)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout)


def test_help_and_calc_import_no_heavy_library():
    calls = [["--help"], ["--version"]]
    calls += [[command, "--help"] for command in _command_modules()]
    # calc prints its table as plain text when stdout is not a terminal (rich draws it on one)
    calls += [
        ["calc"],
        ["calc", "--json"],
        ["calc", "--in-channels", "16", "--input-size", "16,28,28", "--json"],
    ]
    report = _loaded_after_each(calls)
    assert [row[0] for row in report] == [" ".join(call) for call in calls]
    assert [(command, code, loaded) for command, code, loaded in report] == [
        (" ".join(call), 0, []) for call in calls
    ]


def test_the_probe_sees_a_command_that_imports_torch():
    # A command that runs a model imports torch: the probe must report it, or the tests above prove nothing.
    (row,) = _loaded_after_each([["summary", "standard_cnn", "--json"]])
    assert row[1] == 0 and "torch" in row[2]
