"""README's two set-up commands: CI runs the second one word for word, so the two must never drift apart."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _setup_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    setup = readme.split("## Set up", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", setup, flags=re.DOTALL)]


def test_ci_runs_readme_command_2_word_for_word() -> None:
    install_and_demo, install_and_test = _setup_commands()
    assert install_and_demo == "pip install . && sepconv demo"
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()
    assert ci[-1] == install_and_test
    assert "set -euo pipefail" in ci  # a failed install step fails CI instead of running a partial suite


def _landing_page() -> str:
    return (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_python_examples_print_what_they_show() -> None:
    import doctest

    blocks = re.findall(r"```python\n(.*?)```", _landing_page(), flags=re.DOTALL)
    examples = [block for block in blocks if block.lstrip().startswith(">>>")]
    assert examples, "the landing page shows its first example as a doctest"
    parser, runner = doctest.DocTestParser(), doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for number, block in enumerate(examples):
        runner.run(parser.get_doctest(block, {}, f"README block {number}", "README.md", 0))
    assert runner.summarize(verbose=False).failed == 0


def test_readme_links_into_the_repository_resolve() -> None:
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", _landing_page())
    local = [target for target in targets if "://" not in target]
    assert len(local) >= 10, "the landing page links into the docs"
    assert [target for target in local if not (ROOT / target).exists()] == []
