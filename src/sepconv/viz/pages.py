"""The HTML pages of ``sepconv summary --html`` and ``sepconv compare --html``: tables and plots, one file each.

Each builder turns a result object the command already has (a :class:`~sepconv.analysis.ModelSummary`,
a :class:`~sepconv.deploy.compare.Comparison`) into :class:`~sepconv.viz.report.Section` objects, so
the page shows exactly the numbers the command printed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sepconv.io.atomic import PathLike
from sepconv.viz.report import Cell, Section, Table, figure_image, write_html
from sepconv.viz.style import color, new_figure

__all__ = ["comparison_sections", "summary_sections", "write_comparison_html", "write_summary_html"]


def _shape(shape: Any) -> str:
    return "" if shape is None else "x".join(map(str, shape))


def _axes_text(values: Any) -> str:
    return "" if values is None else "x".join(f"{value:g}" for value in values)


def _measured_cells(row: Any) -> list[Any]:
    """ms (or why the layer was not timed alone), bytes moved and MACs per byte of a measured row."""
    cost = row.measured
    if cost is None:
        return ["", "", ""]
    time = cost.ms if cost.ms is not None else f"- ({cost.reason})"
    intensity = cost.intensity if row.macs else None
    return [time, cost.bytes or None, intensity]


def summary_sections(summary: Any, *, top: int = 25) -> list[Section]:
    """Totals, a bar chart of the ``top`` layers by MACs, and the per-layer table of ``summary``."""
    totals = Table(
        headers=["what", "value"],
        rows=[
            ["parameters", summary.total_params],
            ["trainable parameters", summary.trainable_params],
            ["MACs (multiply-accumulates, one forward pass)", summary.total_macs],
            ["FLOPs (2 x MACs)", summary.total_flops],
            ["activation memory (bytes, all outputs)", summary.activation_bytes],
            ["receptive field (input pixels)", _axes_text(summary.receptive_field) or "unknown"],
            ["effective stride", _axes_text(summary.effective_stride) or "unknown"],
        ],
        title="Totals",
    )
    measured = summary.measurement is not None
    caption = (
        "MACs are counted at PyTorch's operator level (torch.utils.flop_counter); click a header to sort."
    )
    if measured:
        engine = summary.measurement["engine"]
        caption += (
            f" ms: each layer run alone in {engine['description']} {engine['version']} at batch "
            f"{summary.measurement['batch_size']} with {summary.measurement['threads']} threads (median); "
            "bytes moved: input + output + weights at the engine's precision; MACs per byte: arithmetic "
            "intensity (low: the layer waits on memory)."
        )
    layers = Table(
        headers=[
            "layer",
            "type",
            "output shape",
            "params",
            "MACs",
            "output bytes",
            "receptive field",
            "stride",
            *(["ms", "bytes moved", "MACs per byte"] if measured else []),
        ],
        rows=[
            [
                row.display_name,
                row.type,
                _shape(row.output_shape),
                row.params,
                row.macs,
                row.output_bytes,
                _axes_text(row.receptive_field),
                _axes_text(row.effective_stride),
                *(_measured_cells(row) if measured else []),
            ]
            for row in summary.layers
        ],
        title="Layers",
        caption=caption,
    )
    heaviest = sorted((row for row in summary.layers if row.macs), key=lambda row: row.macs, reverse=True)[
        :top
    ]
    images = []
    if heaviest:
        figure = new_figure(8, max(2.5, 0.28 * len(heaviest) + 1))
        axes = figure.subplots()
        names = [row.display_name for row in heaviest][::-1]
        values = [row.macs / 1e6 for row in heaviest][::-1]
        axes.barh(names, values, color=color(4))
        axes.set(xlabel="MACs (millions)", title=f"The {len(heaviest)} layers with the most MACs")
        axes.grid(axis="x", alpha=0.3)
        images.append(figure_image(figure, "MACs per layer"))
    shapes = ", ".join(_shape(shape) for shape in summary.input_shapes)
    return [
        Section(f"{summary.model} at input {shapes}", tables=[totals], images=images),
        Section("Per layer", tables=[layers]),
    ]


def write_summary_html(summary: Any, path: PathLike) -> Path:
    """Write ``summary`` as a self-contained HTML page."""
    return write_html(path, f"sepconv summary: {summary.model}", summary_sections(summary))


def comparison_sections(comparison: Any) -> list[Section]:
    """The side-by-side table, a latency vs MACs chart, and the agreement of ``comparison``."""
    header, *rows = comparison.table_rows()
    a, b = comparison.a, comparison.b
    # The text rounds ("575.6K"); each cell keeps its exact number, to sort by and to read back.
    exact = {
        "parameters": (a.params, b.params),
        "MACs per image": (a.macs, b.macs),
        "forward ms": (a.forward_ms, b.forward_ms),
        "forward+backward ms": (a.forward_backward_ms, b.forward_backward_ms),
    }
    rows = [
        [
            label,
            *(Cell(text, float(value)) for text, value in zip(texts, exact[label])),
            _ratio_cell(ratio, *exact[label]),
        ]
        if label in exact
        else [label, *texts, ratio]
        for label, *texts, ratio in rows
    ]
    table = Table(headers=header, rows=rows, title="Side by side", caption=comparison.timing_note())
    figure = new_figure(8, 3.2)
    left, right = figure.subplots(1, 2)
    names = ["A", "B"]
    left.bar(names, [comparison.a.macs / 1e6, comparison.b.macs / 1e6], color=[color(0), color(1)])
    left.set(title="MACs per image", ylabel="millions")
    width = 0.38
    for offset, (label, key) in enumerate(
        (("forward", "forward_ms"), ("forward+backward", "forward_backward_ms"))
    ):
        values = [getattr(comparison.a, key), getattr(comparison.b, key)]
        positions = [index + (offset - 0.5) * width for index in range(2)]
        right.bar(positions, values, width, label=label, color=color(offset + 4))
    right.set(
        title=f"Latency, batch {comparison.batch_size} (median)",
        ylabel="ms",
        xticks=[0, 1],
        xticklabels=names,
    )
    right.legend()
    for axes in (left, right):
        axes.grid(axis="y", alpha=0.3)
    paragraphs = [f"A: {comparison.a.name}. B: {comparison.b.name}.", comparison.agreement_line()]
    return [
        Section(
            "Comparison",
            paragraphs=paragraphs,
            tables=[table],
            images=[figure_image(figure, "MACs and latency")],
        )
    ]


def _ratio_cell(text: str, a: float, b: float) -> Cell | str:
    return Cell(text, a / b) if text and b else text


def write_comparison_html(comparison: Any, path: PathLike) -> Path:
    """Write ``comparison`` as a self-contained HTML page."""
    return write_html(
        path, f"sepconv compare: {comparison.a.name} vs {comparison.b.name}", comparison_sections(comparison)
    )
