"""The API reference's pages, as ``docs/_ext/sepconv_api.py`` plans and writes them (without Sphinx).

Every public name is documented once, on the page of the package users import it from; the other
paths to it link there. A name a tutorial uses ends with a mini-gallery of those tutorials, and a name
none uses has no such section at all (an empty mini-gallery would leave a bare heading). The whole
site's build and links are checked by ``test_site_build.py`` and ``test_site_browser.py``.
"""

from __future__ import annotations

import importlib
from collections import Counter

from tests.helpers.api_reference import generator, planned_pages

# sphinx-gallery's record of one tutorial's use: file, source folder, gallery folder, intro, title
TUTORIAL_USE = ["tut_01_x.py", "/src/tutorials", "/src/auto_tutorials", "What it shows.", "Tutorial"]


def _page_text(module: str, backrefs: dict[str, list[list[str]]]) -> str:
    page = planned_pages()[module]
    return generator()._rst(page, [], set(), backrefs)


def _entry(text: str, directive: str) -> str:
    """The lines of ``text`` from ``directive`` up to the next top-level directive or rubric."""
    start = text.index(directive)
    following = [text.find(f"\n.. {kind}", start + 1) for kind in ("auto", "rubric", "py:")]
    return text[start : min([index for index in following if index != -1] or [len(text)])]


def test_every_object_is_documented_once_under_the_name_users_import() -> None:
    homes: Counter[str] = Counter()
    for page in planned_pages().values():
        module = importlib.import_module(page.name)
        for name in page.documented:
            homes[generator()._home(page.name, name, getattr(module, name))] += 1
    assert [home for home, count in homes.items() if count > 1] == []
    layers, top = planned_pages()["sepconv.layers"], planned_pages()["sepconv"]
    assert "SeparableConv2d" in layers.documented
    assert top.elsewhere["SeparableConv2d"] == "sepconv.layers.SeparableConv2d"
    assert planned_pages()["sepconv.layers.separable"].elsewhere == {
        "SeparableConv2d": "sepconv.layers.SeparableConv2d"
    }
    assert layers.elsewhere["ChannelShuffle"] == "torch.nn.ChannelShuffle"  # another library's: a link
    # a constant a package re-exports is documented there once, with the doc comment of its definition
    assert "DEMO_LR" in planned_pages()["sepconv.demo"].documented
    assert planned_pages()["sepconv.demo.recipe"].elsewhere["DEMO_LR"] == "sepconv.demo.DEMO_LR"
    assert generator().data_description("sepconv.demo", "DEMO_LR") != []


def test_a_name_a_tutorial_uses_gets_a_mini_gallery_under_any_path_it_was_recorded() -> None:
    # sphinx-gallery records a use under the shortest path it finds (here the top package's shortcut)
    text = _page_text("sepconv.layers", {"sepconv.SeparableConv2d": [TUTORIAL_USE]})
    entry = _entry(text, ".. autoclass:: sepconv.layers.SeparableConv2d")
    assert "   .. rubric:: Examples using ``SeparableConv2d``" in entry
    minigallery = next(line for line in entry.splitlines() if "minigallery::" in line)
    assert "sepconv.SeparableConv2d" in minigallery.split()
    assert text.count("minigallery::") == 1  # no other name of the page was used


def test_a_name_no_tutorial_uses_has_no_examples_section() -> None:
    for module in ("sepconv", "sepconv.layers", "sepconv.viz"):
        text = _page_text(module, {})
        assert "minigallery" not in text and "Examples using" not in text
    # a recorded path that reaches another object with the same name does not count
    text = _page_text("sepconv.layers", {"torch.nn.Conv2d": [TUTORIAL_USE]})
    assert "minigallery" not in text


def test_a_constant_shows_its_doc_comment_and_a_type_alias_its_type() -> None:
    text = _page_text("sepconv.layers.factory", {})
    # registered under its own name inside its module's page (the full name would be doubled)
    alias = _entry(text, ".. py:data:: ActLayer")
    assert "   :value: str | Callable[[], Module] | None" in alias
    assert "An activation" in alias
    activations = _entry(text, ".. py:data:: ACTIVATIONS")
    assert "``relu6``" in activations  # a mapping lists its keys
