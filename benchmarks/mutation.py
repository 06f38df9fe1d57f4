"""Mutation score of sepconv's critical modules, measured with mutmut 3 against the fast tests.

A mutant is the code with one small deliberate bug (``<`` for ``<=``, ``+ 1`` for ``- 1``, an argument
dropped, a constant changed). The fast tests (``-m "not slow"``) kill a mutant by failing on it; a
mutant that survives is either equivalent (no observable behaviour changes: judged by hand, recorded
with a one-line reason in ``benchmarks/mutation_equivalent.toml``) or a gap in the tests.

    pip install -e '.[mutation]'                       # mutmut, pinned
    python benchmarks/mutation.py                      # every group below
    python benchmarks/mutation.py --module arithmetic  # one group (repeat --module for more)
    python benchmarks/mutation.py --list               # the groups, their files and tests
    python benchmarks/mutation.py --module io --resume       # go on with an interrupted run
    python benchmarks/mutation.py --module io --report-only  # print the last run again (after judging)

Why mutmut 3: it writes every mutant of a file into one "trampolined" copy and picks the mutant at
run time, and it records which tests call each function, so a mutant runs only the tests that reach
its function, in a process forked from one that already imported torch and the tests. Tools that
rewrite the file and re-import per mutant pay torch's import (seconds) every time.

The run happens in a copy of the project under ``--workdir`` (default: the system's temporary
folder), never in the repository: mutmut reads its settings from ``[tool.mutmut]`` of the
``pyproject.toml`` it finds, so the copy gets one written for the group, and its ``mutants/`` folder
stays there. Each run starts clean (mutmut's cache is removed) so that results never come from an
older test suite; only ``--resume`` keeps the verdicts of an interrupted run. Expect minutes per group
on 2 cores (the slowest tests of a function run for each of its surviving mutants); the script prints
each group's time. To look at one mutant after a run::

    cd <workdir>/<group> && mutmut show 'sepconv.arithmetic.x_conv_output_size__mutmut_3'

Score = (killed + timed out) / (total - equivalent - import-time): a timeout means the tests did not
pass on the mutant (they hung), so it was detected; "no tests" mutants are in the denominator (no fast
test even reaches that code). "import-time" mutants sit in code that runs only while the module is
imported (a rule table built by calling a factory): mutmut switches a mutant on after the import, so
no test can ever see them; they are listed, with ``kind = "import-time"``, beside the equivalent ones.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EQUIVALENT_FILE = ROOT / "benchmarks" / "mutation_equivalent.toml"

# Always added to the pytest command line: the fast tests only, no cache folder left behind, and not
# the doctests of mutmut's copies of each function (every copy keeps the docstring, so a module's
# doctests would run once per mutant of each function; the public function's doctest is kept).
PYTEST_ARGS = ["-m", "not slow", "-k", "not __mutmut_", "-p", "no:cacheprovider"]


@dataclass(frozen=True)
class Group:
    """Source files mutated together, and the fast tests that may kill their mutants.

    mutmut runs ``tests`` once to learn which test calls which function, then runs, for each mutant,
    only the tests that called its function. Listing a test here that never reaches the group's code
    costs one run of it and nothing more. A source file listed among the tests adds its doctests.
    """

    files: tuple[str, ...]
    tests: tuple[str, ...]
    # Tests that cannot run on mutmut's copy, each with the reason (passed to pytest as --deselect).
    deselect: tuple[tuple[str, str], ...] = ()


GROUPS: dict[str, Group] = {
    "arithmetic": Group(
        files=("src/sepconv/arithmetic.py",),
        tests=("tests/test_arithmetic.py", "tests/test_arithmetic_arguments.py", "src/sepconv/arithmetic.py"),
    ),
    # The argument checks and their wording moved out of arithmetic.py (issue 21): measured beside it.
    "checks": Group(
        files=("src/sepconv/checks.py", "src/sepconv/errors.py"),
        tests=(
            "tests/test_checks.py",
            "tests/test_arithmetic_arguments.py",
            "tests/test_arithmetic_types.py",
            "src/sepconv/checks.py",
            "src/sepconv/errors.py",
        ),
    ),
    "layers": Group(
        files=tuple(
            f"src/sepconv/layers/{name}.py"
            for name in ("__init__", "blocks", "conv", "depthwise", "factory", "padding", "separable")
        ),
        tests=("tests/layers", "src/sepconv/layers"),
        deselect=(
            (
                "tests/layers/test_export.py::test_torch_compile_captures_one_graph_with_same_values",
                "mutmut's trampolines set a ContextVar, which torch.compile(fullgraph=True) cannot trace",
            ),
        ),
    ),
    "analysis": Group(
        files=tuple(f"src/sepconv/analysis/{name}.py" for name in ("fields", "summary", "costs")),
        tests=(
            "tests/analysis",
            "tests/cli/test_summary.py",  # the JSON of `sepconv summary` is ModelSummary.to_dict()
            "tests/cli/test_rf.py",
            "src/sepconv/analysis/fields.py",
            "src/sepconv/analysis/summary.py",
            "src/sepconv/analysis/costs.py",
        ),
    ),
    "io": Group(
        # The replay registry was io/transforms.py's until issue 21 moved it above io: mutated with it.
        files=(
            *(f"src/sepconv/io/{name}.py" for name in ("model_file", "recipe", "transforms")),
            "src/sepconv/convert/replay.py",
        ),
        tests=(
            "tests/io",
            "tests/convert/test_replay.py",
            "tests/train/test_state.py",
            "src/sepconv/io/model_file.py",
            "src/sepconv/io/recipe.py",
            "src/sepconv/io/transforms.py",
            "src/sepconv/convert/replay.py",
        ),
    ),
    # Every training run writes checkpoints, so every fit in tests/train reaches checkpoint.py; listing
    # only the files that test checkpoints and training state keeps a surviving mutant from re-running
    # dozens of unrelated fits (seconds each). Add a file here when it starts testing checkpoints.
    "train": Group(
        files=("src/sepconv/train/checkpoint.py", "src/sepconv/train/state.py"),
        tests=(
            "tests/train/test_state.py",
            "tests/train/test_checkpoint.py",
            "tests/train/test_checkpoint_integrity.py",
            "tests/train/test_resume_exact.py",
            "tests/train/test_fit.py",
            "tests/train/test_init_from.py",
            "tests/train/test_schedule_and_limits.py",  # max_steps: where the last checkpoint is written
            "src/sepconv/train/checkpoint.py",
            "src/sepconv/train/state.py",
        ),
    ),
}

# What the copy needs besides the source and the tests (the tests read a few files at the top).
COPIED = ("src", "tests", "pyproject.toml", "README.md", "docs", "benchmarks")
IGNORED_WHEN_COPYING = shutil.ignore_patterns(
    "__pycache__", "*.pyc", ".pytest_cache", ".hypothesis", "*.egg-info", "mutants", "runs", "lightning_logs"
)

# mutmut's exit-code classes, folded into the columns printed here.
COLUMNS = ("total", "killed", "survived", "timeout", "no tests", "equivalent", "import-time", "other")


@dataclass
class FileResult:
    path: str
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COLUMNS, 0))
    survivors: list[tuple[str, str, str]] = field(default_factory=list)  # (id, status, diff)

    @property
    def score(self) -> float | None:
        judged = self.counts["total"] - self.counts["equivalent"] - self.counts["import-time"]
        if judged == 0:
            return None
        return (self.counts["killed"] + self.counts["timeout"]) / judged


def existing_tests(group: Group) -> list[str]:
    """The group's test paths that exist (a file renamed or not yet written is skipped, with a note)."""
    missing = [path for path in group.tests if not (ROOT / path).exists()]
    for path in missing:
        print(f"   note: {path} does not exist; running without it", flush=True)
    return [path for path in group.tests if path not in missing]


def mutmut_settings(group: Group, max_children: int) -> str:
    """The ``[tool.mutmut]`` table written into the copy's pyproject.toml."""

    def toml_list(items) -> str:
        return "[" + ", ".join(json.dumps(item) for item in items) + "]"

    return (
        "\n\n[tool.mutmut]\n"
        'source_paths = ["src"]\n'
        f"only_mutate = {toml_list(group.files)}\n"
        f"pytest_add_cli_args = {toml_list(pytest_args(group))}\n"
        f"pytest_add_cli_args_test_selection = {toml_list(existing_tests(group))}\n"
        # Fork each mutant from the process that ran the stats (torch and the tests already
        # imported); with one OpenMP thread per process (set below) forking after torch is safe.
        'process_isolation = "fork"\n'
        "use_git_change_detection = false\n"
        f"# max_children = {max_children} (passed on the command line)\n"
    )


def pytest_args(group: Group) -> list[str]:
    return PYTEST_ARGS + [argument for test, _ in group.deselect for argument in ("--deselect", test)]


def prepare_copy(workdir: Path, group: Group, max_children: int) -> None:
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, workdir / name, ignore=IGNORED_WHEN_COPYING)
        elif source.is_file():
            shutil.copy2(source, workdir / name)
    with open(workdir / "pyproject.toml", "a", encoding="utf-8") as f:
        f.write(mutmut_settings(group, max_children))


def run_mutmut(workdir: Path, max_children: int, log_path: Path) -> int:
    env = dict(os.environ)
    # One thread per process: max_children processes share the cores, and libgomp's thread pool
    # must not exist before a fork (a forked child would wait on threads that are not there).
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    # The C++ kernels' build rules name their source paths, so a build from the copy would replace the
    # machine's cached build (and the next ordinary run would compile again): the copies get their own
    # cache beside them, compiled once and kept from one run to the next.
    # For the same reason every group runs in the same folder (then moved to its own): one compile.
    env["TORCH_EXTENSIONS_DIR"] = str(workdir.parent / "torch_extensions")
    env.pop("PYTEST_ADDOPTS", None)
    command = [
        sys.executable,
        "-c",
        "import sys; from mutmut.__main__ import cli; sys.exit(cli())",
        "run",
        "--max-children",
        str(max_children),
    ]
    with open(log_path, "a", encoding="utf-8") as log:
        return subprocess.run(command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT).returncode


def load_equivalent() -> dict[str, dict[str, str]]:
    if not EQUIVALENT_FILE.exists():
        return {}
    with open(EQUIVALENT_FILE, "rb") as f:
        entries = tomllib.load(f).get("equivalent", {})
    for mutant, entry in entries.items():
        if entry.get("kind", "equivalent") not in ("equivalent", "import-time") or not entry.get("reason"):
            raise SystemExit(
                f"{EQUIVALENT_FILE}: {mutant} needs a reason and kind 'equivalent' or 'import-time'"
            )
    return entries


def changed_lines(diff: str) -> str:
    """The mutant's new line(s) from mutmut's unified diff, stripped: how an entry is recognised."""
    lines = [
        line[1:].strip() for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++")
    ]
    return " / ".join(lines)


def removed_lines(diff: str) -> str:
    lines = [
        line[1:].strip() for line in diff.splitlines() if line.startswith("-") and not line.startswith("---")
    ]
    return " / ".join(lines)


def collect_results(
    workdir: Path, group: Group, equivalent: dict[str, dict[str, str]], warnings: list[str]
) -> list[FileResult]:
    """Read mutmut's verdicts from the copy (in this process, from the copy's folder)."""
    previous = Path.cwd()
    os.chdir(workdir)
    try:
        from mutmut import configuration

        configuration.reset_config()
        from mutmut.mutation.data import SourceFileMutationData
        from mutmut.mutation.diff_apply import get_diff_for_mutant
        from mutmut.stats import status_by_exit_code

        results = []
        for path in group.files:
            result = FileResult(path)
            data = SourceFileMutationData(path=Path(path))
            data.load()
            for mutant, exit_code in sorted(data.exit_code_by_key.items()):
                status = status_by_exit_code[exit_code]
                if exit_code == 2:
                    # pytest's "interrupted": the tests stopped themselves on the mutant (a Ctrl-C of
                    # mutmut's run ends its workers with SIGTERM instead), so they did not pass: caught.
                    status = "killed"
                result.counts["total"] += 1
                entry = equivalent.get(mutant)
                if status in ("killed", "timeout"):
                    result.counts[status] += 1
                    if entry:
                        warnings.append(f"{mutant} is listed as equivalent but the tests now kill it")
                    continue
                diff = get_diff_for_mutant(mutant, path=path)
                if entry:
                    if entry.get("mutation", "").strip() == changed_lines(diff):
                        result.counts[entry.get("kind", "equivalent")] += 1
                        continue
                    warnings.append(
                        f"{mutant}: the equivalent entry no longer matches the mutant "
                        f"(recorded {entry.get('mutation')!r}, now {changed_lines(diff)!r}); judge it again"
                    )
                column = status if status in ("survived", "no tests") else "other"
                result.counts[column] += 1
                result.survivors.append((mutant, status, diff))
            results.append(result)
        return results
    finally:
        os.chdir(previous)


def print_table(rows: list[FileResult]) -> None:
    header = ["module", *COLUMNS, "score"]
    print("| " + " | ".join(header) + " |")
    print("|---|" + "---:|" * (len(header) - 1))
    for row in rows:
        score = "n/a" if row.score is None else f"{100 * row.score:.1f}%"
        cells = [row.path.removeprefix("src/sepconv/"), *(str(row.counts[c]) for c in COLUMNS), score]
        print("| " + " | ".join(cells) + " |")


def print_survivors(rows: list[FileResult], full_diff: bool) -> None:
    for row in rows:
        for mutant, status, diff in row.survivors:
            print(f"\n{status}: {mutant}")
            if full_diff:
                print(diff.rstrip())
            else:
                print(f"    - {removed_lines(diff)}\n    + {changed_lines(diff)}")


def _lock_workdir(workdir: Path):
    """An exclusive lock on ``workdir`` held until the process exits, or None if another run holds it.

    Two runs would share ``workdir/running`` and delete each other's verdicts; mutmut renames its
    processes, so looking for them with ``ps`` does not find them.
    """
    import fcntl

    workdir.mkdir(parents=True, exist_ok=True)
    handle = open(workdir / ".lock", "w")  # noqa: SIM115 (kept open: the lock lives as long as the run)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--module", action="append", choices=list(GROUPS), help="group to run (repeatable)")
    parser.add_argument("--list", action="store_true", help="print the groups and exit")
    parser.add_argument("--max-children", type=int, default=2, help="mutants tested at once (default 2)")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "sepconv-mutation",
        help="where the copies are made, one folder per group (default: %(default)s)",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="do not run mutmut: read the results of the last run in --workdir again (after judging mutants)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run of the group in --workdir (same tests: results are kept)",
    )
    parser.add_argument("--diff", action="store_true", help="print the whole diff of each survivor")
    parser.add_argument("--json", type=Path, help="also write the table and survivors to this file")
    args = parser.parse_args(argv)

    names = args.module or list(GROUPS)
    if args.list:
        for name in names:
            print(
                f"{name}:\n  mutated: {' '.join(GROUPS[name].files)}\n  tests:   {' '.join(GROUPS[name].tests)}"
            )
            for test, reason in GROUPS[name].deselect:
                print(f"  not run: {test} ({reason})")
        return 0
    if args.workdir.resolve().is_relative_to(ROOT):
        parser.error("--workdir must be outside the repository (mutmut writes a mutants/ folder there)")

    if not args.report_only:
        lock = _lock_workdir(args.workdir)
        if lock is None:
            parser.error(
                f"another mutation run is using {args.workdir}; wait for it or pass another --workdir"
            )
    equivalent = load_equivalent()
    rows: list[FileResult] = []
    timings: dict[str, float] = {}
    warnings: list[str] = []
    failed: list[str] = []
    for name in names:
        group = GROUPS[name]
        workdir = args.workdir / name
        print(f"== {name}: mutating {len(group.files)} file(s) in {workdir}", flush=True)
        start = time.perf_counter()
        log_path = workdir / "mutmut.log"
        if args.report_only:
            code = 0 if (workdir / "mutants").is_dir() else 1
        else:
            running = args.workdir / "running"
            if args.resume and (workdir / "mutants").is_dir():
                # mutmut keeps the verdicts it has and tests the mutants it has not reached
                if running.exists():
                    shutil.rmtree(running)
                workdir.rename(running)
            else:
                prepare_copy(running, group, args.max_children)
            code = run_mutmut(running, args.max_children, running / "mutmut.log")
            if workdir.exists():
                shutil.rmtree(workdir)
            running.rename(workdir)
        if not args.report_only:
            timings[name] = time.perf_counter() - start
            print(f"   mutmut exited {code} after {timings[name]:.0f} s (log: {log_path})", flush=True)
        if code != 0:
            failed.append(name)
            if log_path.exists():
                print(log_path.read_text(encoding="utf-8", errors="replace")[-3000:])
            else:
                print(f"   no results in {workdir}: run the group first")
            continue
        group_rows = collect_results(workdir, group, equivalent, warnings)
        rows.extend(group_rows)
        print_table(group_rows)

    if rows:
        print("\n## Mutation score (fast tests)\n")
        print_table(rows)
        if timings:
            print("\n## Runtime\n")
            for name, seconds in timings.items():
                print(f"- {name}: {seconds:.0f} s ({seconds / 60:.1f} min)")
            print(f"- total: {sum(timings.values()):.0f} s")
        print("\n## Surviving mutants not judged equivalent")
        print_survivors(rows, args.diff)
    for warning in warnings:
        print(f"\nwarning: {warning}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "timings_s": timings,
                    "modules": [
                        {"path": r.path, **r.counts, "score": r.score, "survivors": r.survivors} for r in rows
                    ],
                },
                indent=2,
            ),
            encoding="utf-8",
        )
    if failed:
        print(f"\nmutmut failed for: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
