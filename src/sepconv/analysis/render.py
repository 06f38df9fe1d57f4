"""Renderings of a :class:`~sepconv.analysis.summary.ModelSummary`: plain text, rich, markdown, CSV.

Tables use short numbers (3.50M, 300.8M) and are drawn by :class:`sepconv.formatting.Table`, as every
report's; CSV and JSON (``to_dict``) keep exact integers. ``human_count`` and ``human_bytes`` are
:func:`sepconv.formatting.short_count` and :func:`sepconv.formatting.format_bytes`, under the names
this module gave them first.

>>> human_count(3_504_872), human_count(300_774_272), human_count(950)
('3.50M', '300.8M', '950')
>>> human_bytes(3 * 1024 * 1024)
'3.0 MiB'
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sepconv.formatting import Table, format_count
from sepconv.formatting import format_bytes as human_bytes
from sepconv.formatting import short_count as human_count

if TYPE_CHECKING:
    from sepconv.analysis.summary import LayerSummary, ModelSummary

__all__ = ["csv_text", "human_bytes", "human_count", "markdown", "plain_text", "rich_renderable"]

_COLUMNS = ("Layer", "Type", "Input", "Output", "Params", "MACs", "Memory", "RF", "Stride", "Start")
_RIGHT = {"Params", "MACs", "Memory", "RF", "Stride", "Start"}
_ALIGN = "".join("r" if column in _RIGHT else "l" for column in _COLUMNS)


def _shape(shape: Sequence[int] | None) -> str:
    return "-" if shape is None else "x".join(str(size) for size in shape)


def _axes(values: Sequence[Any] | None) -> str:
    if values is None:
        return "-"
    if len(set(values)) == 1:
        return str(values[0])
    return "x".join(str(value) for value in values)


def _receptive_field(layer: LayerSummary) -> str:
    if layer.sees_whole_input:
        text = "whole input"
    elif layer.receptive_field is None:
        text = "?" if layer.output_shape is not None and "unknown" in layer.notes else "-"
    else:
        text = _axes(layer.receptive_field)
    marks = {"global context": "+g", "misaligned paths": "!", "approximate": "~"}
    suffix = "".join(mark for note, mark in marks.items() if note in layer.notes)
    return f"{text} {suffix}" if suffix and text not in ("?",) else text


def _params(layer: LayerSummary) -> str:
    if "shared" in layer.notes and layer.params == 0:
        return "(shared)"
    text = human_count(layer.params)
    if layer.trainable_params != layer.params:
        text = f"{human_count(layer.trainable_params)}/{text}"
    return text


def _cells(layer: LayerSummary) -> list[str]:
    name = layer.display_name + (" (not called)" if "not called" in layer.notes else "")
    layer_type = layer.type + (" (own ops)" if "own ops" in layer.notes else "")
    return [
        name,
        layer_type,
        _shape(layer.input_shape),
        _shape(layer.output_shape),
        _params(layer),
        human_count(layer.macs) if layer.macs else "-",
        human_bytes(layer.output_bytes) if layer.output_bytes else "-",
        _receptive_field(layer),
        _axes(layer.effective_stride),
        _axes(layer.start),
    ]


def _footer(summary: ModelSummary) -> list[str]:
    lines = [
        f"Input {', '.join(_shape(s) for s in summary.input_shapes)} -> "
        f"output {', '.join(_shape(s) for s in summary.output_shapes)}",
        f"Parameters: {format_count(summary.total_params)} ({human_count(summary.total_params)}), "
        f"trainable {format_count(summary.trainable_params)}",
        f"MACs: {format_count(summary.total_macs)} ({human_count(summary.total_macs)}) = "
        f"{human_count(summary.total_flops)} FLOPs  [1 MAC = one multiply-add, FLOPs = 2 x MACs; "
        "convolutions, linear layers, matrix products and attention]",
        f"Activations (outputs of the rows): {human_bytes(summary.activation_bytes)}",
    ]
    if summary.receptive_field is not None:
        lines.append(
            f"Receptive field: {_axes(summary.receptive_field)} px, effective stride "
            f"{_axes(summary.effective_stride)} (at '{summary.receptive_field_layer}')"
        )
    elif summary.receptive_field_lost_at is not None:
        lines.append(f"Receptive field: unknown (tracking lost at {summary.receptive_field_lost_at})")
    else:
        lines.append("Receptive field: unknown (no layer keeps a spatial layout)")
    legend = (
        "RF: receptive field in input pixels; Stride: distance between units in input pixels; Start: input "
        "coordinate of the first unit's centre; +g also sees a global summary; ! paths merged out of "
        "alignment; ~ approximate; ? unknown (tracking lost)"
    )
    lines.append(legend)
    return lines


def _measured(summary: ModelSummary) -> bool:
    return summary.measurement is not None


def _measured_cells(layer: LayerSummary, footnotes: dict[str, int]) -> list[str]:
    """ms (or "-" with a footnote mark), bytes moved and MACs per byte of one row."""
    cost = layer.measured
    if cost is None:
        return ["-", "-", "-"]
    if cost.ms is None:
        reason = cost.reason or "not timed"
        mark = footnotes.setdefault(reason, len(footnotes) + 1)
        ms = f"- [{mark}]"
    else:
        ms = f"{cost.ms:.3f}"
    intensity = "-" if cost.intensity is None or not layer.macs else f"{cost.intensity:.1f}"
    return [ms, human_bytes(cost.bytes) if cost.bytes else "-", intensity]


def _rows_and_footnotes(summary: ModelSummary) -> tuple[list[list[str]], list[str]]:
    """Each layer's cells (with the measured columns when the summary was measured) and the footnotes."""
    footnotes: dict[str, int] = {}
    rows = []
    for layer in summary.layers:
        cells = _cells(layer)
        if _measured(summary):
            cells += _measured_cells(layer, footnotes)
        rows.append(cells)
    return rows, [f"[{mark}] {reason}" for reason, mark in footnotes.items()]


def _measurement_lines(summary: ModelSummary) -> list[str]:
    measurement = summary.measurement
    if measurement is None:
        return []
    engine = measurement["engine"]
    timed = [
        layer.measured.ms for layer in summary.layers if layer.measured and layer.measured.ms is not None
    ]
    return [
        f"Measured: {engine['description']} (version {engine['version']}), batch "
        f"{measurement['batch_size']}, {measurement['threads']} thread{'s' if measurement['threads'] != 1 else ''}, "
        f"{measurement['cpu']['model']}; each layer run alone, {sum(timed):.3f} ms in all",
        "ms: median per call; Bytes: input + output + weights moved at the engine's precision; "
        "MACs/B: arithmetic intensity (low: the layer waits on memory)",
    ]


def _table(summary: ModelSummary, cells: Sequence[list[str]]) -> Table:
    columns: tuple[str, ...] = _COLUMNS
    align = _ALIGN
    if _measured(summary):
        columns, align = (*_COLUMNS, "ms", "Bytes", "MACs/B"), _ALIGN + "rrr"
    return Table(columns, cells, align=align, title=summary.model)


def plain_text(summary: ModelSummary) -> str:
    """A fixed-width table, the totals below it."""
    rows, footnotes = _rows_and_footnotes(summary)
    table = _table(summary, rows)
    return "\n".join([table.to_text(), *_footer(summary), *_measurement_lines(summary), *footnotes])


def markdown(summary: ModelSummary) -> str:
    """A GitHub-flavoured markdown table, the totals below it as a list."""
    cells, footnotes = _rows_and_footnotes(summary)
    rows = [[f"`{cell}`" if index == 0 else cell for index, cell in enumerate(row)] for row in cells]
    lines = [_table(summary, rows).to_markdown(), ""]
    lines.extend(f"- {text}" for text in [*_footer(summary), *_measurement_lines(summary), *footnotes])
    return "\n".join(lines) + "\n"


def csv_text(summary: ModelSummary) -> str:
    """One row per layer, exact integers; per-axis values joined with 'x'."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    fields = [
        "name",
        "call_index",
        "type",
        "input_shape",
        "output_shape",
        "params",
        "trainable_params",
        "macs",
        "flops",
        "output_bytes",
        "receptive_field",
        "effective_stride",
        "start",
        "sees_whole_input",
        "notes",
    ]
    measured = ["measured_ms", "measured_spread_ms", "bytes_moved", "intensity", "not_timed_because"]
    writer.writerow(fields + (measured if _measured(summary) else []))
    for layer in summary.layers:
        writer.writerow(
            [
                layer.name,
                layer.call_index,
                layer.type,
                _shape(layer.input_shape) if layer.input_shape else "",
                _shape(layer.output_shape) if layer.output_shape else "",
                layer.params,
                layer.trainable_params,
                layer.macs,
                layer.flops,
                layer.output_bytes,
                "x".join(map(str, layer.receptive_field)) if layer.receptive_field else "",
                "x".join(map(str, layer.effective_stride)) if layer.effective_stride else "",
                "x".join(map(str, layer.start)) if layer.start else "",
                layer.sees_whole_input,
                ";".join(layer.notes),
                *(_measured_csv(layer) if _measured(summary) else []),
            ]
        )
    return buffer.getvalue()


def _measured_csv(layer: LayerSummary) -> list[Any]:
    cost = layer.measured
    if cost is None:
        return ["", "", "", "", ""]
    values = (cost.ms, cost.spread_ms, cost.bytes, cost.intensity, cost.reason)
    return ["" if value is None else value for value in values]


def rich_renderable(summary: ModelSummary) -> Any:
    """The table as a ``rich`` Table, the totals below it."""
    from rich.console import Group
    from rich.text import Text

    rows, footnotes = _rows_and_footnotes(summary)
    table = _table(summary, rows).to_rich()
    return Group(table, Text("\n".join([*_footer(summary), *_measurement_lines(summary), *footnotes])))
