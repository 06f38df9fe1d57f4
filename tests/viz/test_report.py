"""The HTML report: one self-contained page whose tables and plots hold the command's own numbers."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image as PILImage
from tests.helpers.cli import run_sepconv
from tests.helpers.page_parser import parse_page

from sepconv.analysis import summarize
from sepconv.models import create_model
from sepconv.viz.pages import summary_sections, write_summary_html
from sepconv.viz.report import Cell, Section, Table, render_html, write_html


def test_names_are_escaped_and_numbers_sort_by_value() -> None:
    table = Table(
        ["layer", "MACs"], [["<script>alert(1)</script>", 1234567], ["b&c", Cell("n/a")], ["d", 2.5]]
    )
    html = render_html("model <x>", [Section("s", ["a < b"], [table])])
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<title>model &lt;x&gt;</title>" in html
    (rows,) = parse_page(html).tables
    assert [cell[0] for cell in rows[1]] == ["<script>alert(1)</script>", "1,234,567"]
    assert rows[1][1][1]["data-value"] == "1234567.0" and rows[3][1][1]["data-value"] == "2.5"
    assert "data-value" not in rows[2][1][1]  # a text cell sorts as text


def test_the_summary_page_holds_the_summary_and_loads_nothing_from_outside(tmp_path) -> None:
    model = create_model("standard_cnn", widths=(4, 8, 8, 16))
    summary = summarize(model, (1, 1, 28, 28))
    path = write_summary_html(summary, tmp_path / "summary.html")
    html = path.read_text(encoding="utf-8")
    page = parse_page(html)
    # Every resource is inline data: a page that fetched anything would not open offline.
    assert page.resources and all(resource.startswith("data:") for resource in page.resources)
    assert "http://" not in html and "https://" not in html
    assert "default-src 'none'" in html  # the Content-Security-Policy forbids any other source
    (image,) = page.images
    decoded = PILImage.open(io.BytesIO(base64.b64decode(image.split(",", 1)[1])))
    assert decoded.format == "PNG" and decoded.width > 300
    totals, layers = page.tables
    values = {row[0][0]: row[1][1].get("data-value") for row in totals[1:]}
    assert float(values["parameters"]) == sum(p.numel() for p in model.parameters())
    assert float(values["MACs (multiply-accumulates, one forward pass)"]) == summary.total_macs
    assert len(layers) - 1 == len(summary.layers)
    assert [float(row[4][1]["data-value"]) for row in layers[1:]] == [row.macs for row in summary.layers]
    assert len(summary_sections(summary)) == 2


def test_write_html_refuses_other_suffixes_without_writing(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"must end in \.html, got '.*page\.htm_'"):
        write_html(tmp_path / "page.htm_", "t", [])
    assert list(tmp_path.iterdir()) == []


def test_summary_and_compare_write_their_pages(tmp_path, capsys) -> None:
    code, _, stderr = run_sepconv(["summary", "standard_cnn", "--html", str(tmp_path / "s.html")], capsys)
    assert code == 0, stderr
    assert len(parse_page((tmp_path / "s.html").read_text()).tables) == 2
    arguments = [
        "compare",
        "standard_cnn",
        "separable_cnn",
        "--repeats",
        "1",
        "--html",
        str(tmp_path / "c.html"),
    ]
    code, _, stderr = run_sepconv(arguments, capsys)
    assert code == 0, stderr
    page = parse_page((tmp_path / "c.html").read_text())
    (table,) = page.tables
    assert [row[0][0] for row in table[1:3]] == ["parameters", "MACs per image"]
    assert len(page.images) == 1


@pytest.mark.parametrize(
    ("target", "reason"),
    [("missing/s.html", "does not exist"), ("s.txt", "--html must end in .html or .htm, got ")],
)
def test_a_bad_html_path_is_one_line_before_any_work(tmp_path, capsys, target, reason) -> None:
    code, stdout, stderr = run_sepconv(["summary", "standard_cnn", "--html", str(tmp_path / target)], capsys)
    assert code == 2 and stdout == "" and len(stderr.strip().splitlines()) == 1
    assert stderr.startswith("sepconv summary: error: --html") and reason in stderr
    assert list(tmp_path.iterdir()) == []
