"""Each kind of sepconv HTML page opened in headless Chromium: it renders, every image loads, the tables are
there and sort, it fits a phone, and it makes no network request. (The demo's page: tests/cli/test_demo.py.)
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest
from PIL import Image as PILImage
from tests.helpers.browser import LAPTOP, PHONE, Browser, assert_healthy, launch
from tests.helpers.cli import run_sepconv

from sepconv.analysis import summarize
from sepconv.cli.main import main
from sepconv.models import create_model
from sepconv.viz.report import Image, Section, Table, write_html

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser():
    yield from launch()


@pytest.fixture(scope="module")
def summary_page(tmp_path_factory) -> Path:
    """`sepconv summary mobilenet_v2 --html` once for the module (its summary takes seconds)."""
    page = tmp_path_factory.mktemp("summary") / "summary.html"
    assert main(["summary", "mobilenet_v2", "--html", str(page)]) == 0
    return page


@pytest.mark.parametrize("viewport", [LAPTOP, PHONE], ids=["laptop", "phone"])
def test_the_summary_page_in_a_browser(browser: Browser, summary_page, tmp_path, viewport) -> None:
    page = summary_page
    view = browser.open_page(page, tmp_path / "summary.png", viewport=viewport)
    assert_healthy(view, images=1, tables=2, viewport=viewport)
    model = create_model("mobilenet_v2")
    summary = summarize(model, (1, 3, 224, 224))  # the size `sepconv summary` uses for it
    totals, layers = view.tables
    assert view.title == "sepconv summary: MobileNetV2"
    assert dict((row[0], values[1]) for row, values in zip(totals["rows"], totals["values"]))[
        "parameters"
    ] == sum(parameter.numel() for parameter in model.parameters())
    assert totals["fits"]  # two columns fit a phone unscrolled; the wide per-layer table scrolls in its box
    assert [row[0] for row in layers["rows"]] == [row.display_name for row in summary.layers]
    column = layers["headers"].index("MACs")
    assert [values[column] for values in layers["values"]] == [row.macs for row in summary.layers]


def test_a_click_on_a_header_sorts_the_table_by_value_then_reverses(browser: Browser, tmp_path) -> None:
    model = create_model("standard_cnn", widths=(4, 8, 8, 16))
    summary = summarize(model, (1, 1, 28, 28))
    rows = [[row.display_name, row.macs] for row in summary.layers]
    page = write_html(tmp_path / "t.html", "t", [Section("s", tables=[Table(["layer", "MACs"], rows)])])
    header = "table.sortable th:nth-child(2)"
    once = browser.open_page(page, tmp_path / "once.png", clicks=(header,))
    twice = browser.open_page(page, tmp_path / "twice.png", clicks=(header, header))
    by_name = browser.open_page(page, tmp_path / "name.png", clicks=("table.sortable th:nth-child(1)",))
    # Sorted by value, not as text ("10" < "9" as text); Python's sort is the reference.
    ascending = sorted(summary.layers, key=lambda row: row.macs)
    (table,) = once.tables
    assert [values[1] for values in table["values"]] == [row.macs for row in ascending]
    (table,) = twice.tables
    assert [values[1] for values in table["values"]] == sorted((row.macs for row in ascending), reverse=True)
    (table,) = by_name.tables
    assert [row[0] for row in table["rows"]] == sorted(row.display_name for row in summary.layers)
    assert once.errors == twice.errors == by_name.errors == []


def test_the_compare_page_in_a_browser(browser: Browser, tmp_path, capsys) -> None:
    page = tmp_path / "compare.html"
    arguments = ["compare", "standard_cnn", "separable_cnn", "--repeats", "1", "--html", str(page), "--json"]
    code, stdout, stderr = run_sepconv(arguments, capsys)
    assert code == 0, stderr
    view = browser.open_page(page, tmp_path / "compare.png")
    assert_healthy(view, images=1, tables=1, viewport=LAPTOP)
    (table,) = view.tables
    rows = {row[0]: values for row, values in zip(table["rows"], table["values"])}
    for model, column in (("standard_cnn", 1), ("separable_cnn", 2)):
        parameters = sum(parameter.numel() for parameter in create_model(model).parameters())
        assert rows["parameters"][column] == parameters
    document = json.loads(stdout)  # the page shows the command's own numbers, unrounded
    assert rows["MACs per image"][1:3] == [document["a"]["macs"], document["b"]["macs"]]
    latency = document["a"]["latency_ms"]
    assert rows["forward ms"][1] == pytest.approx(latency["forward"], rel=1e-12)
    assert rows["parameters"][3] == pytest.approx(
        document["a"]["params"] / document["b"]["params"], rel=1e-12
    )


def test_svg_and_png_plots_both_load_under_the_pages_content_policy(browser: Browser, tmp_path) -> None:
    png = io.BytesIO()
    PILImage.new("RGB", (40, 20), (0, 114, 178)).save(png, format="PNG")
    svg = (
        b'<svg xmlns="http://www.w3.org/2000/svg" width="30" height="10"><rect width="30" height="10"/></svg>'
    )
    page = write_html(
        tmp_path / "p.html",
        "plots",
        [Section("s", images=[Image("png", png.getvalue()), Image("svg", svg, mime="image/svg+xml")])],
    )
    view = browser.open_page(page, tmp_path / "p.png")
    assert_healthy(view, images=2, tables=0, viewport=LAPTOP)
    assert [(image["naturalWidth"], image["naturalHeight"]) for image in view.images] == [(40, 20), (30, 10)]


def test_the_checks_catch_a_page_that_fetches_or_shows_a_broken_image(browser: Browser, tmp_path) -> None:
    """A control: the same checks on a bad page must fail, or the passes above would prove nothing."""
    broken = base64.b64encode(b"\x89PNG not really").decode("ascii")
    page = tmp_path / "bad.html"
    page.write_text(
        "<!DOCTYPE html><html><head><title>bad</title></head><body style='margin: 0'>"
        '<img alt="remote" src="http://127.0.0.1:9/plot.png">'
        f'<img alt="broken" src="data:image/png;base64,{broken}">'
        '<div style="width: 2000px">wide</div></body></html>'
    )
    view = browser.open_page(page, tmp_path / "bad.png")
    assert view.outside_requests == ["http://127.0.0.1:9/plot.png"]
    assert [image["naturalWidth"] for image in view.images] == [0, 0]
    assert view.page_width == 2000 > view.viewport_width
