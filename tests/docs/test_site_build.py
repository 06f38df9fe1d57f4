"""The documentation site builds, whole, with warnings as errors, and shows what the code says.

One build per test run (``built_site`` in ``conftest.py``: slow, ``xdist_group("docs-site")``), then
read back: every page of the toctree was written, every tutorial was executed (its output is on its
page), the CLI reference holds each command's exact ``--help``, and the API reference documents every
public name that ``docs/_ext/sepconv_api.py`` plans, where the inventory (``objects.inv``) says.
"""

from __future__ import annotations

import html
import importlib.util
import re
import sys
from types import ModuleType

import pytest
from sphinx.util.inventory import InventoryFile
from tests.helpers.cli import run_sepconv
from tests.helpers.page_parser import parse_page
from tests.helpers.site import SiteBuild, toctree_documents

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("docs-site")]

# Pages Sphinx writes that no toctree lists: the index of names, the modules' index and the search page.
GENERATED_PAGES = {"genindex", "py-modindex", "search"}
# What sphinx-gallery puts on a tutorial's page only when it ran it: printed output, figures, animations.
EXECUTED_OUTPUT = ("sphx-glr-script-out", "sphx-glr-single-img", "sphx-glr-multi-img", 'class="animation"')


def _extension(site: SiteBuild, name: str) -> ModuleType:
    """A Sphinx extension of the site (``docs/_ext/NAME.py``), imported from the copy that was built."""
    spec = importlib.util.spec_from_file_location(f"docs_ext_{name}", site.sources / "_ext" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # a dataclass of the module looks its module up there
    spec.loader.exec_module(module)
    return module


def _text(fragment: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", fragment))


def test_the_whole_site_builds_with_warnings_as_errors(built_site: SiteBuild) -> None:
    # for the record (-rA shows it); a timing never decides a test
    print(f"site built in {built_site.seconds:.1f} s ({built_site.cpu_seconds:.1f} s of CPU)")
    assert built_site.returncode == 0, built_site.log[-6000:]
    assert (built_site.out / "index.html").is_file()


def test_the_build_writes_nothing_into_the_repository(built_site: SiteBuild) -> None:
    # Sphinx builds a copy of docs/ (tests/helpers/site.py): generated pages stay in the scratch folder.
    assert built_site.written_into_repository == []
    assert (built_site.sources / "auto_tutorials").is_dir()  # ...where sphinx-gallery did write


def test_every_page_of_the_toctree_is_built_and_every_page_is_in_it(built_site: SiteBuild) -> None:
    reached, found = toctree_documents(built_site.out)
    assert [document for document in reached if not (built_site.out / f"{document}.html").is_file()] == []
    assert found - set(reached) == set()  # a page no toctree reaches is a page nobody finds
    built = {page.removesuffix(".html") for page in built_site.pages()}
    assert built - set(reached) == GENERATED_PAGES
    # the sections of the root page, each with pages under it
    assert {"guide/index", "howto/index", "auto_tutorials/index", "reference/cli", "reference/index"} <= set(
        reached
    )


def test_every_tutorial_was_executed_and_its_output_is_on_its_page(built_site: SiteBuild) -> None:
    tutorials = sorted((built_site.sources / "tutorials").glob("tut_*.py"))
    gallery = (built_site.out / "auto_tutorials" / "index.html").read_text(encoding="utf-8")
    for tutorial in tutorials:
        page = built_site.out / "auto_tutorials" / f"{tutorial.stem}.html"
        assert page.is_file(), tutorial.name
        text = page.read_text(encoding="utf-8")
        assert any(marker in text for marker in EXECUTED_OUTPUT), f"{tutorial.name} shows no output"
        assert "Total running time of the script" in text, tutorial.name
        assert f'href="{tutorial.stem}.html' in gallery, f"{tutorial.name} is not in the gallery"


def test_the_cli_reference_shows_each_commands_exact_help(built_site: SiteBuild, capsys, monkeypatch) -> None:
    cli = _extension(built_site, "sepconv_cli")
    page = (built_site.out / "reference" / "cli.html").read_text(encoding="utf-8")
    monkeypatch.setenv("COLUMNS", str(cli.HELP_WIDTH))  # argparse's width, as the page was formatted
    commands = cli.command_parsers()
    summaries = cli._command_summaries(commands["sepconv"])
    assert len(commands) > 10  # sepconv itself and each of its commands
    for title in commands:
        section = re.search(
            rf'<section id="{re.escape(title.replace(" ", "-"))}">(.*?)</section>', page, re.DOTALL
        )
        assert section is not None, f"no section for {title}"
        shown = re.search(r"<pre>(.*?)</pre>", section.group(1), re.DOTALL)
        assert shown is not None, title
        code, printed, _ = run_sepconv([*title.split()[1:], "--help"], capsys)
        assert code == 0 and _text(shown.group(1)).rstrip() == printed.rstrip(), title
        summary = summaries.get(title.removeprefix("sepconv "))
        if summary:  # the purpose line, as the parser says it ("--resume" not turned into a dash)
            purpose = re.search(r"</h2>\s*<p>(.*?)</p>", section.group(1), re.DOTALL)
            assert purpose is not None and _text(purpose.group(1)) == summary[0].upper() + summary[1:]


def test_the_api_reference_documents_every_public_name(built_site: SiteBuild) -> None:
    """Every name ``plan_pages()`` documents is in the inventory (so a link to it resolves), on its
    module's page under its own anchor; every re-export it lists instead points to a documented name."""
    planned = _extension(built_site, "sepconv_api").plan_pages()
    inventory = InventoryFile.loads((built_site.out / "objects.inv").read_bytes(), uri="").data
    where = {
        name: item.uri
        for kind, items in inventory.items()
        if kind.startswith("py:")
        for name, item in items.items()
    }
    modules = [page.name for page in planned]
    names = [f"{page.name}.{name}" for page in planned for name in page.documented]
    assert len(names) > 100
    assert [name for name in modules + names if name not in where] == []
    api = built_site.out / "reference" / "api"
    ids = {
        page.name: set(parse_page((api / f"{page.name}.html").read_text(encoding="utf-8")).ids)
        for page in planned
    }
    for page in planned:
        for name in page.documented:
            assert where[f"{page.name}.{name}"] == f"reference/api/{page.name}.html#{page.name}.{name}"
            assert f"{page.name}.{name}" in ids[page.name]
    ours = {
        f"{page.name}.{name}": target
        for page in planned
        for name, target in page.elsewhere.items()
        if target.startswith("sepconv.")
    }
    assert {name: target for name, target in ours.items() if target not in where} == {}
