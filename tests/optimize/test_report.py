"""The report of ``sepconv optimize``: every rendering shows the result document's own numbers.

The sample document (``tests/helpers/optimize.py``) is rendered as text, rich, Markdown and HTML, and
each number is read back from what a person would see and compared with the document, to the precision
shown. Layer names come from users' models: a hostile one must show as written everywhere.
"""

from __future__ import annotations

import base64
import io
import re

import pytest
from PIL import Image as PILImage
from tests.helpers.browser import LAPTOP, PHONE, Browser, assert_healthy, launch
from tests.helpers.optimize import SITE_NAMES, sample_document
from tests.helpers.page_parser import parse_page

from sepconv.errors import ParameterError
from sepconv.optimize import report
from sepconv.optimize.report import (
    budget_met,
    budget_target_ms,
    engine_line,
    format_markdown,
    format_text,
    pareto_figure,
    print_report,
    rich_renderables,
    write_html,
)

HOSTILE = "<script>alert(1)</script>[red]$x$*y*`z`|w"
DOCUMENTS = {
    "two rounds": {},
    "one round": {"rounds": 1},
    "no data set": {"dataset": None},
    "hostile name": {"rename": {"features.1.0": HOSTILE}},
}
_UNITS = {"K": 1e3, "M": 1e6, "G": 1e9, "KiB": 1024.0, "MiB": 1024.0**2, "GiB": 1024.0**3, "B": 1.0}


def _shown(text: str) -> tuple[float, float]:
    """A number as the report shows it ("14.45M", "366.0 KiB", "7.0%", "3.12x", "+3.1%", "1,000"), and half
    of its last digit's unit: the most its rounding can hide."""
    match = re.fullmatch(r"([+-]?[\d,]*\.?\d+)\s*(K|M|G|KiB|MiB|GiB|B|%|x)?", text.strip())
    assert match, f"not a number as the report writes one: {text!r}"
    digits, unit = match.groups()
    decimals = len(digits.split(".")[1]) if "." in digits else 0
    scale = 0.01 if unit == "%" else _UNITS.get(unit or "", 1.0)
    return float(digits.replace(",", "")) * scale, 0.5 * 10.0**-decimals * scale


def _close(text: str, value: float) -> None:
    shown, half_digit = _shown(text)
    assert abs(shown - value) <= half_digit * 1.0001 + 1e-12, (text, value)


def _pair(text: str, before: float, after: float) -> None:
    first, second = text.split(" -> ")
    _close(first, before)
    _close(second, after)


def _text_tables(text: str) -> dict[str, list[dict[str, str]]]:
    """Each plain-text table of ``text`` by its title: rows as {header: cell}, columns cut at the rule."""
    lines = text.splitlines()
    tables = {}
    for index, line in enumerate(lines):
        if not line or set(line) != {"-", " "}:
            continue
        spans = [match.span() for match in re.finditer(r"-+", line)]
        spans[-1] = (spans[-1][0], 10_000)

        def cells(row: str, spans: list[tuple[int, int]] = spans) -> list[str]:
            return [row[start:end].strip() for start, end in spans]

        headers = cells(lines[index - 1])
        rows = []
        for row in lines[index + 1 :]:
            if not row:
                break
            rows.append(dict(zip(headers, cells(row), strict=True)))
        tables[lines[index - 2]] = rows
    return tables


def _markdown_rows(markdown: str, title: str) -> list[list[str]]:
    """The body rows of the Markdown table under ``**title**``, cells split at unescaped pipes."""
    block = markdown.split(f"**{title}**", 1)[1].strip().split("\n\n", 1)[0].splitlines()
    return [[cell.strip() for cell in re.split(r"(?<!\\)\|", row)[1:-1]] for row in block[2:]]


@pytest.mark.parametrize("options", DOCUMENTS.values(), ids=DOCUMENTS.keys())
def test_the_plain_text_holds_the_documents_numbers(options) -> None:
    document = sample_document(**options)
    text = format_text(document)
    assert "\x1b" not in text and "┃" not in text  # no colour, no box drawing: plain text for a pipe
    tables = _text_tables(text)
    rows = tables["Per layer (before -> after)"]
    assert [row["layer"] for row in rows] == [layer["name"] for layer in document["layers"]]
    for row, layer in zip(rows, document["layers"], strict=True):
        assert row["kind"] == layer["kind"]
        assert row["rank"] == ("keep" if layer["rank"] is None else str(layer["rank"]))
        for column, key in (("MACs", "macs"), ("ms", "ms"), ("bytes", "bytes"), ("intensity", "intensity")):
            _pair(row[column], layer[f"{key}_before"], layer[f"{key}_after"])
        for column, key in (("output error", "output_error"), ("drop", "accuracy_drop")):
            if layer[key] is None:
                assert row[column] == "-"
            else:
                _close(row[column], layer[key])
    rounds = tables["Predicted vs measured end to end, per round"]
    assert [int(row["round"]) for row in rounds] == [row["round"] for row in document["rounds"]]
    for row, expected in zip(rounds, document["rounds"], strict=True):
        _close(row["predicted ms"], expected["predicted_ms"])
        _close(row["measured ms"], expected["measured_ms"])
        _close(row["error"], expected["relative_error"])
        _close(row["fixed ms"], expected["latency_model"]["fixed_ms"])
        _close(row["scale"], expected["latency_model"]["scale"])
    result = {row[""]: row for row in tables["Result"]}
    latency = document["latency"]
    measured = result["latency, measured (ms)"]
    _close(measured["original"], latency["original_ms"])
    _close(measured["optimized"], latency["optimized_ms"])
    _close(measured["original / optimized"], latency["speedup"])
    planned = result["latency, planned (ms)"]
    _close(planned["original"], latency["reference_ms"])
    _close(planned["optimized"], latency["predicted_ms"])
    _close(planned["original / optimized"], latency["reference_ms"] / latency["predicted_ms"])
    for label, key in (("MACs per image", "macs"), ("parameters", "params")):
        _close(result[label]["original"], document[key]["before"])
        _close(result[label]["optimized"], document[key]["after"])
    accuracy = document["accuracy"]
    accuracy_tables = [title for title in tables if title.startswith("Accuracy")]
    if accuracy is None:
        assert accuracy_tables == [] and "Accuracy: not measured" in text
    else:
        (title,) = accuracy_tables
        assert f"({accuracy['images']:,} images)" in title
        shown = {row[""]: row["accuracy"] for row in tables[title]}
        for label, key in (("original", "original"), ("fine-tuned", "fine_tuned"), ("drop (points)", "drop")):
            _close(shown[label], accuracy[key])
        _close(shown["converted (before fine-tuning)"], accuracy["converted"])
    assert f"Measured on {engine_line(document)}." in text
    assert "Budget: 3.00x faster (0.433 ms or less)" in text and ": met: " in text
    assert f"Pareto front: {len(document['pareto'])} plans" in text
    for path in document["files"].values():
        assert path in text


def test_the_engine_line_names_engine_precision_batch_threads_and_cpu() -> None:
    assert engine_line(sample_document()) == "ort 1.20.1 (fp32), batch 1, 2 threads, AMD EPYC 7B13 (avx2)"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_print_report_is_plain_text_into_a_pipe_and_rich_tables_on_a_terminal() -> None:
    document = sample_document(rename={"features.1.0": HOSTILE})
    piped = io.StringIO()
    print_report(document, piped)
    assert piped.getvalue() == format_text(document)
    terminal = _Terminal()
    print_report(document, terminal)
    shown = re.sub(r"\x1b\[[0-9;]*m", "", terminal.getvalue())
    assert "┏" in shown and "Per layer (before -> after)" in shown
    assert HOSTILE in shown  # rich markup in a layer name is shown, not obeyed
    renderables = rich_renderables(document)
    assert len(renderables) == len(report._blocks(document)) + 1
    (budget,) = [item for item in renderables if getattr(item, "plain", "").startswith("Budget: ")]
    assert [budget.plain[span.start : span.end] for span in budget.spans] == ["met"]


@pytest.mark.parametrize("options", DOCUMENTS.values(), ids=DOCUMENTS.keys())
def test_the_markdown_holds_the_documents_numbers_and_shows_names_literally(options) -> None:
    document = sample_document(**options)
    markdown = format_markdown(document)
    rows = _markdown_rows(markdown, "Per layer (before -> after)")
    for row, layer in zip(rows, document["layers"], strict=True):
        name = row[0]
        if "`" not in layer["name"]:
            assert name == f"`{layer['name']}`"
        _pair(row[3], layer["macs_before"], layer["macs_after"])
        _pair(row[4], layer["ms_before"], layer["ms_after"])
    assert len(rows) == len(document["layers"])
    assert "<script>" not in markdown and "[red]" not in markdown.replace("\\[red\\]", "")
    if "rename" in options:
        assert r"&lt;script&gt;alert(1)&lt;/script&gt;\[red\]$x$\*y\*\`z\`\|w" in markdown
    assert markdown.startswith("## sepconv optimize: ")
    assert document["files"]["plan"] not in markdown and "Time (s)" not in markdown  # a summary
    assert "Not changed: classifier.1" in markdown


def _page_tables(document: dict, tmp_path) -> tuple[dict[str, list], object]:
    html = write_html(document, tmp_path / "optimize.html").read_text(encoding="utf-8")
    page = parse_page(html)
    assert page.resources and all(resource.startswith("data:") for resource in page.resources)
    assert "http://" not in html and "https://" not in html and "default-src 'none'" in html
    titles = re.findall(r"<caption>(.*?)</caption>", html)
    assert len(titles) == len(page.tables)
    return dict(zip(titles, page.tables, strict=True)), page


def _values(table: list) -> list[list[float | None]]:
    return [
        [float(cell[1]["data-value"]) if "data-value" in cell[1] else None for cell in row]
        for row in table[1:]
    ]


@pytest.mark.parametrize("options", DOCUMENTS.values(), ids=DOCUMENTS.keys())
def test_the_html_page_holds_the_documents_exact_numbers(options, tmp_path) -> None:
    document = sample_document(**options)
    tables, page = _page_tables(document, tmp_path)
    layers = tables["Per layer"]
    headers = [cell[0] for cell in layers[0]]
    assert [row[0][0] for row in layers[1:]] == [layer["name"] for layer in document["layers"]]
    for row, layer in zip(_values(layers), document["layers"], strict=True):
        shown = dict(zip(headers, row, strict=True))
        for key in ("macs", "ms", "bytes", "intensity"):
            assert shown[f"{key.replace('macs', 'MACs')} before"] == layer[f"{key}_before"]
            assert shown[f"{key.replace('macs', 'MACs')} after"] == layer[f"{key}_after"]
        assert shown["rank"] == layer["rank"] and shown["exact rank"] == layer["max_rank"]
        assert shown["output error"] == layer["output_error"]
        assert shown["accuracy drop (points)"] == layer["accuracy_drop"]
    rounds = _values(tables["Predicted vs measured end to end, per round"])
    assert [row[:4] for row in rounds] == [
        [row["round"], row["predicted_ms"], row["measured_ms"], row["relative_error"]]
        for row in document["rounds"]
    ]
    result = {row[0][0]: row for row in tables["Result"][1:]}
    latency = document["latency"]
    measured = [float(cell[1]["data-value"]) for cell in result["latency, measured (ms)"][1:]]
    assert measured == [
        latency["original_ms"],
        latency["optimized_ms"],
        pytest.approx(latency["speedup"], rel=1e-12),
    ]
    assert float(result["MACs per image"][2][1]["data-value"]) == document["macs"]["after"]
    pareto = _values(tables["Plans on the Pareto front"])
    assert [row[1:3] for row in pareto] == [
        [plan["predicted_ms"], plan["predicted_loss"]] for plan in document["pareto"]
    ]
    chosen = [row[3][0] for row in tables["Plans on the Pareto front"][1:]]
    assert chosen == ["chosen" if plan["chosen"] else "" for plan in document["pareto"]]
    accuracy = document["accuracy"]
    accuracy_tables = [title for title in tables if title.startswith("test split")]
    if accuracy is None:
        assert accuracy_tables == [] and any("Accuracy: not measured" in text for text in page.text)
    else:
        (title,) = accuracy_tables
        shown = [row[1] for row in _values(tables[title])]
        assert shown == [accuracy[key] for key in ("original", "converted", "fine_tuned", "drop")]
    assert len(page.images) == 3
    for image in page.images:
        decoded = PILImage.open(io.BytesIO(base64.b64decode(image.split(",", 1)[1])))
        assert decoded.format == "PNG" and decoded.width > 300
    assert engine_line(document) in page.text


def test_a_hostile_layer_name_is_escaped_in_the_page_and_drawn_as_written(tmp_path) -> None:
    document = sample_document(rename={"features.1.0": HOSTILE})
    html = write_html(document, tmp_path / "hostile.html").read_text(encoding="utf-8")
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    tables, _ = _page_tables(document, tmp_path)
    assert tables["Per layer"][2][0][0] == HOSTILE  # read back as written
    assert HOSTILE in [cell[0] for cell in tables["Plans on the Pareto front"][0]]
    # '$x$' would be mathematical notation to matplotlib: the tick label keeps the dollar signs
    figure = report.layer_latency_figure(document)
    (axes,) = figure.axes
    assert f"{HOSTILE} (2)".replace("$", r"\$") in [label.get_text() for label in axes.get_yticklabels()]


def test_every_plot_names_the_engine_and_the_front_shows_every_plan(tmp_path) -> None:
    document = sample_document()
    figures = [pareto_figure(document), report.layer_latency_figure(document), report.rounds_figure(document)]
    assert all(figure.get_suptitle() == engine_line(document) for figure in figures)
    (axes,) = figures[0].axes
    (front,) = axes.get_lines()[:1]
    assert sorted(front.get_xdata()) == sorted(plan["predicted_ms"] for plan in document["pareto"])
    (chosen,) = [plan for plan in document["pareto"] if plan["chosen"]]
    star = axes.collections[0].get_offsets()
    assert star.tolist() == [[chosen["predicted_ms"], chosen["predicted_loss"]]]
    budget_lines = [line for line in axes.get_lines() if line.get_linestyle() == "--"]
    assert budget_lines[0].get_xdata()[0] == pytest.approx(budget_target_ms(document))


def test_the_budget_is_met_only_when_every_measured_part_of_it_is() -> None:
    document = sample_document()
    assert budget_met(document) and budget_target_ms(document) == pytest.approx(1.30 / 3)
    # the budget the run planned for wins: --speedup applies to the original as measured when planning
    document["latency"]["budget_ms"] = 0.45
    assert budget_target_ms(document) == 0.45 and "Budget: 3.00x faster (0.450 ms or less)" in format_text(
        document
    )
    faster = sample_document()
    faster["budget"]["speedup"] = 4.0
    assert not budget_met(faster) and ": missed: " in format_text(faster)
    stricter = sample_document()
    stricter["budget"]["max_accuracy_drop"] = 0.1
    assert not budget_met(stricter)
    by_latency = sample_document()
    del by_latency["latency"]["budget_ms"]  # computed from the budget when the run did not record it
    by_latency["budget"].update(speedup=None, latency_ms=0.40)
    assert budget_target_ms(by_latency) == 0.40 and not budget_met(by_latency)
    by_latency["budget"]["latency_ms"] = 0.42
    assert budget_met(by_latency) and "Budget: at most 0.420 ms" in format_text(by_latency)
    unmeasured = sample_document(dataset=None)
    unmeasured["budget"]["max_accuracy_drop"] = 0.1  # no data set: the accuracy part cannot be checked
    assert budget_met(unmeasured) and "accuracy not measured" in format_text(unmeasured)


def test_the_sample_sites_are_the_ones_the_report_lists() -> None:
    assert [layer["name"] for layer in sample_document()["layers"]] == list(SITE_NAMES)


@pytest.fixture(scope="module")
def browser():
    yield from launch()


@pytest.mark.browser
@pytest.mark.parametrize("viewport", [LAPTOP, PHONE], ids=["laptop", "phone"])
@pytest.mark.parametrize("options", [{}, {"dataset": None, "rounds": 1}], ids=["full", "no data, one round"])
def test_the_page_in_a_browser(browser: Browser, tmp_path, viewport, options) -> None:
    document = sample_document(**options, rename={"features.1.0": HOSTILE})
    page = write_html(document, tmp_path / "optimize.html")
    view = browser.open_page(page, tmp_path / "optimize.png", viewport=viewport)
    tables = 7 if document["accuracy"] is not None else 6  # the accuracy table, when there is one
    assert_healthy(view, images=3, tables=tables, viewport=viewport)
    assert view.title == f"sepconv optimize: {document['model']}" + (
        " on mnist5k" if options == {} else " (no data set)"
    )
    (layers,) = [table for table in view.tables if table["caption"] == "Per layer"]
    assert [row[0] for row in layers["rows"]] == [layer["name"] for layer in document["layers"]]
    column = layers["headers"].index("ms after")
    assert [values[column] for values in layers["values"]] == [
        layer["ms_after"] for layer in document["layers"]
    ]


@pytest.mark.browser
def test_a_click_sorts_the_per_layer_table_by_measured_ms(browser: Browser, tmp_path) -> None:
    document = sample_document()
    page = write_html(document, tmp_path / "optimize.html")
    headers = ["layer", "kind", "rank", "exact rank", "MACs before", "MACs after", "ms before", "ms after"]
    # the per-layer table is the page's second; "ms after" its eighth column
    header = f"section:nth-of-type(2) table.sortable th:nth-child({headers.index('ms after') + 1})"
    view = browser.open_page(page, tmp_path / "sorted.png", clicks=(header,))
    (layers,) = [table for table in view.tables if table["caption"] == "Per layer"]
    column = layers["headers"].index("ms after")
    assert [values[column] for values in layers["values"]] == sorted(
        layer["ms_after"] for layer in document["layers"]
    )
    assert view.errors == []


def test_a_sparse_document_renders_everywhere(tmp_path) -> None:
    """An accuracy-only budget, no fine-tuning, no front, no round, a stage that did not run, no HTML file."""
    document = sample_document()
    document["budget"].update(speedup=None, latency_ms=None)
    document["latency"].update(budget_ms=None, reference_ms=None)
    document["accuracy"].update(fine_tuned=None, drop=None)
    document.update(pareto=[], rounds=[], notes=[])
    document["timings_s"]["fine_tuning"] = None
    document["files"]["html"] = None
    assert budget_target_ms(document) is None and budget_met(document)
    text = format_text(document)
    assert "Budget: at most 0.50 accuracy points lost: met: " in text and "accuracy not measured" in text
    assert "Pareto front: no plan." in text and "fine tuning" not in text
    shown = {
        row[""]: row["accuracy"] for row in _text_tables(text)["Accuracy on the test split (1,000 images), %"]
    }
    assert shown["fine-tuned"] == shown["drop (points)"] == "-"
    _close(shown["original"], 98.6)
    assert format_markdown(document).count("|") > 0
    tables, page = _page_tables(document, tmp_path)
    assert len(page.images) == 1  # the per-layer plot; no front and no round to draw
    assert _values(tables["Plans on the Pareto front"]) == []
    assert [row[0][0] for row in tables["Files written"][1:]] == ["model", "deployable", "plan"]


@pytest.mark.parametrize("render", [format_text, format_markdown, rich_renderables, report.html_sections])
@pytest.mark.parametrize(("document", "found"), [({"format": "other/2"}, "'other/2'"), ([], "'list'")])
def test_a_document_of_another_format_is_refused_by_name(render, document, found) -> None:
    with pytest.raises(
        ParameterError, match=f"format 'sepconv-optimize/1'\\), got format {found}"
    ) as refused:
        render(document)
    assert refused.value.param == "document"


def test_a_long_front_is_plotted_whole_and_listed_thinned_with_the_chosen_plan(tmp_path) -> None:
    document = sample_document()
    chosen_index = next(index for index, plan in enumerate(document["pareto"]) if plan["chosen"])
    chosen = document["pareto"][chosen_index]
    # 600 plans: the sample's, then more beyond it on a made-up curve, the chosen one among them
    extra = [
        {"predicted_ms": 2.0 + step / 100, "predicted_loss": 1.0 / (step + 1), "ranks": {}, "chosen": False}
        for step in range(600 - len(document["pareto"]))
    ]
    document["pareto"] = [*document["pareto"], *extra]
    tables, page = _page_tables(document, tmp_path)
    listed = tables["Plans on the Pareto front"][1:]
    numbers = [int(row[0][0]) for row in listed]
    assert len(numbers) <= report.MAX_LISTED_PLANS + 1 and numbers == sorted(numbers)
    assert chosen_index + 1 in numbers and [row[3][0] for row in listed].count("chosen") == 1
    by_latency = sorted(range(600), key=lambda index: document["pareto"][index]["predicted_ms"])
    assert {by_latency[0] + 1, by_latency[-1] + 1} <= set(numbers)  # the slowest and the fastest
    for row in listed:
        plan = document["pareto"][int(row[0][0]) - 1]
        assert float(row[1][1]["data-value"]) == plan["predicted_ms"]
    assert any("of the 600 plans" in text for text in page.text)
    (axes,) = pareto_figure(document).axes
    assert len(axes.get_lines()[0].get_xdata()) == 600
    assert chosen["chosen"]


def test_the_report_reads_the_format_the_command_writes() -> None:
    from sepconv.optimize import result

    assert report.DOCUMENT_FORMAT == result.DOCUMENT_FORMAT == sample_document()["format"]
