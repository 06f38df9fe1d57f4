"""Run ``sepconv`` in a child process on a machine said to have a given memory, and measure what it cost."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import sepconv

# The child reports its own peak resident set on stdout after the command: VmHWM, the high-water mark
# of its own address space. Not ru_maxrss: Linux carries into it the peak of the image that exec
# replaced, i.e. of the forked test worker (1.7 GB after a demo test), and RUSAGE_CHILDREN of the
# test process would count every earlier child too.
_CHILD = """
import re, sys
from pathlib import Path
import sepconv.machine
sepconv.machine.available_memory_bytes = lambda: {available}
from sepconv.cli.main import main
code = main(sys.argv[1:])
print("maxrss_kib", re.search(r"VmHWM:\\s+(\\d+) kB", Path("/proc/self/status").read_text()).group(1))
sys.exit(code)
"""


@dataclass(frozen=True)
class ChildRun:
    code: int
    stdout: str
    stderr: str
    maxrss_bytes: int


def run_with_memory(args: list[str], *, available: int = 8 * 2**30, timeout: float = 60.0) -> ChildRun:
    """``sepconv ARGS`` in a fresh interpreter whose ``available_memory_bytes()`` is ``available``.

    A fixed figure (default 8 GiB) makes a refusal the same on every machine; ``timeout`` bounds the run
    (subprocess.TimeoutExpired fails the test).
    """
    source = str(Path(sepconv.__file__).resolve().parents[1])
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join([source, os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run(
        [sys.executable, "-c", _CHILD.format(available=available), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment,
        check=False,
    )
    maxrss = [line for line in result.stdout.splitlines() if line.startswith("maxrss_kib ")]
    return ChildRun(
        code=result.returncode,
        stdout=result.stdout,
        stderr=result.stderr,
        maxrss_bytes=int(maxrss[-1].split()[1]) * 1024 if maxrss else -1,
    )
