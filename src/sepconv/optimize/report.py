"""The report of ``sepconv optimize``: its result document (``plan.json``) for people to read.

One document, four renderings with the same numbers: plain text (:func:`format_text`, what the command
prints when stdout is a file or a pipe), rich tables (:func:`rich_renderables`, a terminal; both via
:func:`print_report`), Markdown (:func:`format_markdown`, for a README or an issue) and one
self-contained HTML page (:func:`write_html`: the Pareto front, per-layer and per-round latency as plots,
the per-layer table, accuracy before and after). The renderers read nothing but the document, a plain
dict as :func:`json.load` returns it, so a ``plan.json`` from an earlier run renders again. Every
figure and every rendering states the engine, precision, batch, threads and CPU of the measurements:
a latency means nothing without them.

Losses are in the document's ``loss_unit``: accuracy points (a run with a data set) or relative output
error (a run without one, shown as a percent). Torch-free; matplotlib, rich and Jinja2 are imported only
by the renderings that draw with them.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from sepconv.errors import ParameterError
from sepconv.formatting import (
    Table,
    format_bytes,
    format_count,
    format_ms,
    format_percent,
    format_ratio,
    short_count,
)
from sepconv.io.atomic import PathLike

__all__ = [
    "DOCUMENT_FORMAT",
    "MAX_LISTED_PLANS",
    "budget_met",
    "budget_target_ms",
    "engine_line",
    "format_markdown",
    "format_text",
    "html_sections",
    "layer_latency_figure",
    "pareto_figure",
    "print_report",
    "rich_renderables",
    "rounds_figure",
    "write_html",
]

# The "format" of the documents these renderings read, as sepconv.optimize.result writes them (not
# imported from there: result imports this module to write the page).
#: The format of the ``plan.json`` documents this page is rendered from.
DOCUMENT_FORMAT = "sepconv-optimize/1"

Document = Mapping[str, Any]
# A rendering is a list of blocks: a line of text, or a table. Text, rich and Markdown differ only in
# how they draw each block, so the three cannot show different numbers.
Block = str | Table

_POINTS = "accuracy points"
_LAYER_LEGEND = (
    "rank: the separable depth multiplier (low-rank width for a linear layer), keep = the original layer; "
    "ms: the layer alone, measured in the engine; bytes: input + output activations + weights at the "
    "engine's precision; intensity: MACs per byte (low: the layer waits on memory); output error: "
    "relative, on the calibration images; drop: accuracy points lost with only that layer converted."
)


# ----------------------------------------------------------------------------------------------- figures


def _loss_text(value: float | None, unit: str) -> str:
    """A loss in the document's unit: ``0.24 points`` or ``24.0%`` (relative output error)."""
    if value is None:
        return "-"
    return f"{value:.2f} points" if unit == _POINTS else format_percent(value, 1)


def _loss_number(value: float | None, unit: str) -> str:
    """A loss in a table whose header names the unit: ``0.24`` or ``24.0%``."""
    if value is None:
        return "-"
    return f"{value:.2f}" if unit == _POINTS else format_percent(value, 1)


def _rank_text(rank: int | None) -> str:
    return "keep" if rank is None else str(rank)


def _optional(value: float | None, formatter: Any) -> str:
    return "-" if value is None else str(formatter(value))


def engine_line(document: Document) -> str:
    """Where the latencies were measured: ``ort 1.20.1 (fp32), batch 1, 2 threads, AMD EPYC 7B13 (avx2)``."""
    engine = document["engine"]
    cpu = engine.get("cpu") or {}
    features = [name for name, present in (cpu.get("features") or {}).items() if present]
    cpu_text = cpu.get("model") or "unknown CPU"
    if features:
        cpu_text += f" ({', '.join(features)})"
    threads = engine["threads"]
    return (
        f"{engine['name']} {engine['version']} ({engine['precision']}), batch {engine['batch_size']}, "
        f"{threads} thread{'s' if threads != 1 else ''}, {cpu_text}"
    )


def _checked(document: Document) -> Document:
    """``document`` if it is a result of ``sepconv optimize`` in the format this module reads."""
    found = document.get("format") if isinstance(document, Mapping) else type(document).__name__
    if found != DOCUMENT_FORMAT:
        raise ParameterError(
            f"document must be a sepconv optimize result (format {DOCUMENT_FORMAT!r}), got format {found!r}",
            param="document",
        )
    return document


def budget_target_ms(document: Document) -> float | None:
    """The latency the budget asks for in ms; ``None`` when the budget is on accuracy alone.

    The run records the one it planned for (``latency.budget_ms``: ``--speedup`` applies to the original's
    latency as measured when planning, ``reference_ms``); without it, ``latency_ms`` or ``original_ms``
    over ``speedup``, the tighter when both are given.

    >>> budget_target_ms({"budget": {"speedup": 3.0, "latency_ms": None}, "latency": {"original_ms": 1.5}})
    0.5
    """
    budget, latency = document["budget"], document["latency"]
    if latency.get("budget_ms") is not None:
        return float(latency["budget_ms"])
    original_ms = latency["original_ms"]
    targets = []
    if budget.get("latency_ms") is not None:
        targets.append(float(budget["latency_ms"]))
    if budget.get("speedup") is not None:
        targets.append(original_ms / budget["speedup"])
    return min(targets) if targets else None


def budget_met(document: Document) -> bool:
    """Whether the measured result meets every part of the budget that was measured.

    Speed: the measured speedup reaches ``speedup`` and the measured latency is within ``latency_ms``.
    Accuracy: the fine-tuned model's drop is within ``max_accuracy_drop`` (not checked, so not failed,
    when the run had no data set to measure accuracy on).
    """
    budget, latency, accuracy = document["budget"], document["latency"], document["accuracy"]
    checks = []
    if budget.get("speedup") is not None:
        checks.append(latency["speedup"] >= budget["speedup"])
    if budget.get("latency_ms") is not None:
        checks.append(latency["optimized_ms"] <= budget["latency_ms"])
    drop = _drop(accuracy)
    if budget.get("max_accuracy_drop") is not None and drop is not None:
        checks.append(drop <= budget["max_accuracy_drop"])
    return all(checks)


def _drop(accuracy: Mapping[str, Any] | None) -> float | None:
    """The points lost after fine-tuning; None when the run measured no accuracy."""
    drop = None if accuracy is None else accuracy.get("drop")
    return None if drop is None else float(drop)


def _budget_line(document: Document) -> str:
    budget, latency, accuracy = document["budget"], document["latency"], document["accuracy"]
    asked = []
    if budget.get("speedup") is not None:
        asked.append(f"{format_ratio(budget['speedup'])} faster")
    if budget.get("latency_ms") is not None:
        asked.append(f"at most {format_ms(budget['latency_ms'])} ms")
    target = budget_target_ms(document)
    if budget.get("speedup") is not None and target is not None:
        asked[-1] += f" ({format_ms(target)} ms or less)"
    if budget.get("max_accuracy_drop") is not None:
        asked.append(f"at most {budget['max_accuracy_drop']:.2f} accuracy points lost")
    got = [f"{format_ratio(latency['speedup'])} faster ({format_ms(latency['optimized_ms'])} ms measured)"]
    drop = _drop(accuracy)
    if drop is not None:
        got.append(f"{drop:.2f} points lost")
    elif budget.get("max_accuracy_drop") is not None:
        got.append("accuracy not measured" + (" (no data set)" if accuracy is None else ""))
    verdict = "met" if budget_met(document) else "missed"
    return f"Budget: {', '.join(asked) or 'none'}: {verdict}: {', '.join(got)}."


def _layer_table(document: Document, *, markdown: bool = False) -> Table:
    rows = []
    for layer in document["layers"]:
        name = layer["name"]
        rows.append(
            [
                _markdown_name(name) if markdown else name,
                layer["kind"],
                _rank_text(layer["rank"]),
                f"{short_count(layer['macs_before'])} -> {short_count(layer['macs_after'])}",
                f"{format_ms(layer['ms_before'])} -> {format_ms(layer['ms_after'])}",
                f"{format_bytes(layer['bytes_before'])} -> {format_bytes(layer['bytes_after'])}",
                f"{layer['intensity_before']:.1f} -> {layer['intensity_after']:.1f}",
                _optional(layer["output_error"], lambda value: format_percent(value, 1)),
                _optional(layer["accuracy_drop"], "{:.2f}".format),
            ]
        )
    headers = ["layer", "kind", "rank", "MACs", "ms", "bytes", "intensity", "output error", "drop"]
    return Table(headers, rows, align="lll" + "r" * 6, title="Per layer (before -> after)")


def _rounds_table(document: Document) -> Table:
    target = budget_target_ms(document)
    rows = [
        [
            str(row["round"]),
            format_ms(row["predicted_ms"]),
            format_ms(row["measured_ms"]),
            f"{row['relative_error']:+.1%}",
            format_ms(row["latency_model"]["fixed_ms"]),
            f"{row['latency_model']['scale']:.3f}",
            "-" if target is None else ("yes" if row["measured_ms"] <= target else "no"),
        ]
        for row in document["rounds"]
    ]
    headers = ["round", "predicted ms", "measured ms", "error", "fixed ms", "scale", "within budget"]
    return Table(headers, rows, title="Predicted vs measured end to end, per round")


def _result_table(document: Document) -> Table:
    latency, macs, params = document["latency"], document["macs"], document["params"]
    spread = latency.get("spread_ms") or {}
    rows = [
        [
            "latency, measured (ms)",
            format_ms(latency["original_ms"]),
            format_ms(latency["optimized_ms"]),
            format_ratio(latency["speedup"]),
        ],
        [
            "spread (ms)",
            _optional(spread.get("original"), format_ms),
            _optional(spread.get("optimized"), format_ms),
            "",
        ],
        [
            _PLANNED,
            _optional(latency.get("reference_ms"), format_ms),
            format_ms(latency["predicted_ms"]),
            format_ratio(_planned_from(latency) / latency["predicted_ms"]),
        ],
        ["MACs per image", short_count(macs["before"]), short_count(macs["after"]), _ratio(macs)],
        ["parameters", short_count(params["before"]), short_count(params["after"]), _ratio(params)],
    ]
    return Table(["", "original", "optimized", "original / optimized"], rows, title="Result")


# The row of what the plan was made from: the original as measured when planning (reference_ms), the
# chosen plan as the latency model predicts it.
_PLANNED = "latency, planned (ms)"
_RESULT_CAPTION = (
    "Measured: the original and the optimized model timed together, end to end, as deployed. Planned: "
    "the original as measured when planning, and the plan as the latency model predicts it."
)


def _planned_from(latency: Mapping[str, Any]) -> float:
    """The original's latency the plan was made from (the final measurement when the run lacks it)."""
    return float(latency.get("reference_ms") or latency["original_ms"])


def _ratio(pair: Mapping[str, int]) -> str:
    return format_ratio(pair["before"] / pair["after"]) if pair["after"] else "-"


# (label, key) of the accuracy table, in the text and on the page; a value may be null (no fine-tuning).
_ACCURACY_ROWS = (
    ("original", "original"),
    ("converted (before fine-tuning)", "converted"),
    ("fine-tuned", "fine_tuned"),
    ("drop (points)", "drop"),
)


def _accuracy_block(document: Document) -> Block:
    accuracy = document["accuracy"]
    if accuracy is None:
        return "Accuracy: not measured (the run had no data set; losses are relative output errors)."
    rows = [[label, _optional(accuracy.get(key), "{:.2f}".format)] for label, key in _ACCURACY_ROWS]
    title = f"Accuracy on the {accuracy['split']} split ({format_count(accuracy['images'])} images), %"
    return Table(["", "accuracy"], rows, title=title)


def _chosen_index(document: Document) -> int | None:
    return next((index for index, plan in enumerate(document["pareto"]) if plan["chosen"]), None)


def _pareto_line(document: Document) -> str:
    front, unit = document["pareto"], document["loss_unit"]
    if not front:
        return "Pareto front: no plan."
    fastest = min(front, key=lambda plan: plan["predicted_ms"])
    slowest = max(front, key=lambda plan: plan["predicted_ms"])
    line = (
        f"Pareto front: {len(front)} plans, from {format_ms(slowest['predicted_ms'])} ms at "
        f"{_loss_text(slowest['predicted_loss'], unit)} to {format_ms(fastest['predicted_ms'])} ms at "
        f"{_loss_text(fastest['predicted_loss'], unit)} (predicted)"
    )
    chosen = _chosen_index(document)
    if chosen is not None:
        plan = front[chosen]
        line += (
            f"; chosen: plan {chosen + 1}, {format_ms(plan['predicted_ms'])} ms at "
            f"{_loss_text(plan['predicted_loss'], unit)}"
        )
    return line + "."


def _skipped_lines(document: Document) -> list[str]:
    return [f"Not changed: {name} ({reason})" for name, reason in document["skipped"]]


def _files(document: Document) -> dict[str, str]:
    return {what: path for what, path in document["files"].items() if path}


def _cache_line(document: Document) -> str:
    counts = "; ".join(
        f"{table} table: {counts.get('measured', 0)} measured, {counts.get('reused', 0)} reused"
        for table, counts in (document.get("cached") or {}).items()
        if counts
    )
    return f"Cached measurements: {counts}." if counts else ""


def _stages(document: Document) -> list[tuple[str, float]]:
    """(stage, seconds) of each stage that ran, in the document's order."""
    timings = document.get("timings_s") or {}
    return [(stage.replace("_", " "), seconds) for stage, seconds in timings.items() if seconds is not None]


def _notes(document: Document) -> list[str]:
    return [f"Note: {note}" for note in document.get("notes") or []]


def _run_lines(document: Document) -> list[str]:
    """Skipped layers, files, time per stage, caches and notes: one line each."""
    lines = _skipped_lines(document)
    files = _files(document)
    if files:
        lines.append("Files: " + ", ".join(f"{what} {path}" for what, path in files.items()))
    stages = ", ".join(f"{stage} {seconds:.1f}" for stage, seconds in _stages(document))
    if stages:
        lines.append(f"Time (s): {stages}")
    if _cache_line(document):
        lines.append(_cache_line(document))
    return lines + _notes(document)


def _title(document: Document) -> str:
    dataset = document["dataset"]
    return f"sepconv optimize: {document['model']}" + (f" on {dataset}" if dataset else " (no data set)")


def _blocks(document: Document, *, markdown: bool = False) -> list[Block]:
    return [
        f"Measured on {engine_line(document)}.",
        _budget_line(document),
        _layer_table(document, markdown=markdown),
        _LAYER_LEGEND,
        _pareto_line(document),
        _rounds_table(document),
        _result_table(document),
        _RESULT_CAPTION,
        _accuracy_block(document),
        # Markdown is the summary a README quotes: where this run put its files and how long it took
        # stay in the report of the run.
        "\n".join(_skipped_lines(document) + _notes(document) if markdown else _run_lines(document)),
    ]


# ---------------------------------------------------------------------------------------- text renderings


def format_text(document: Document) -> str:
    """The report as plain text (no markup, no colour): what a pipe or a file receives."""
    parts = [_title(_checked(document))]
    for block in _blocks(document):
        parts.append(block.to_text() if isinstance(block, Table) else block)
    return _join(parts) + "\n"


def _join(parts: Sequence[str]) -> str:
    """Lines stay together; a table has a blank line either side."""
    text = ""
    for index, part in enumerate(parts):
        multi_line = "\n" in part or (index > 0 and "\n" in parts[index - 1])
        text += ("\n\n" if multi_line else "\n") + part if index else part
    return text


def rich_renderables(document: Document) -> list[Any]:
    """The report as ``rich`` renderables (tables as rich tables); every string shown as text, never markup."""
    from rich.text import Text

    renderables: list[Any] = [Text(_title(_checked(document)), style="bold")]
    for block in _blocks(document):
        if isinstance(block, Table):
            renderables.append(block.to_rich())
            continue
        text = Text(block)
        if block.startswith("Budget: "):  # the verdict in colour
            text.highlight_regex(r"(?<=: )met(?=: )", "bold green")
            text.highlight_regex(r"(?<=: )missed(?=: )", "bold red")
        renderables.append(text)
    return renderables


def print_report(document: Document, file: IO[str] | None = None) -> None:
    """Print the report to ``file`` (stdout): rich tables on a terminal, plain text otherwise."""
    stream = sys.stdout if file is None else file
    if stream.isatty():
        from rich.console import Console

        console = Console(file=stream)
        for renderable in rich_renderables(document):
            console.print(renderable)
    else:
        stream.write(format_text(document))


def format_markdown(document: Document) -> str:
    """The report as a GitHub-flavoured Markdown summary, for a README or an issue: a heading, the lines
    as paragraphs, the tables as tables; without the run's file paths, stage times and cache counts."""
    parts = [f"## {_markdown_text(_title(_checked(document)))}"]
    for block in _blocks(document, markdown=True):
        if isinstance(block, Table):
            parts.append(block.to_markdown())
        elif "\n" in block:  # several lines: a list
            parts.append("\n".join(f"- {_markdown_text(line)}" for line in block.splitlines()))
        else:
            parts.append(_markdown_text(block))
    return "\n\n".join(parts) + "\n"


def _markdown_text(text: str) -> str:
    """``text`` as Markdown shows it literally: a layer named ``<b>x</b>`` or ``*x*`` stays as written."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    for character in "\\`*_[]":
        text = text.replace(character, "\\" + character)
    return text


def _markdown_name(name: str) -> str:
    """A layer name in a Markdown table: as code, or escaped where a backtick would end the code span."""
    return f"`{name}`" if "`" not in name else _markdown_text(name)


# ------------------------------------------------------------------------------------------------- HTML


def _plain(text: str) -> str:
    """``text`` for a matplotlib label: a ``$`` in a layer name must not start mathematical notation."""
    return text.replace("$", r"\$")


def _stamp(figure: Any, document: Document) -> None:
    """The engine, precision, batch, threads and CPU at the top of ``figure``."""
    figure.suptitle(_plain(engine_line(document)), fontsize=8, color="#5a5a5a")


def pareto_figure(document: Document) -> Any:
    """Every plan of the Pareto front as a point (predicted latency, predicted loss), the chosen one a
    star, the original and the fine-tuned result as measured, and the budget's lines (a Figure)."""
    from sepconv.viz.style import color, new_figure

    front, unit = document["pareto"], document["loss_unit"]
    latency, budget, accuracy = document["latency"], document["budget"], document["accuracy"]
    figure = new_figure(8, 4.6)
    axes = figure.subplots()
    ordered = sorted(front, key=lambda plan: plan["predicted_ms"])
    scale = 1.0 if unit == _POINTS else 100.0  # relative output error drawn in percent
    axes.plot(
        [plan["predicted_ms"] for plan in ordered],
        [plan["predicted_loss"] * scale for plan in ordered],
        marker="o",
        markersize=4,
        color=color(4),
        label=f"plans on the Pareto front ({len(front)}, predicted)",
        drawstyle="steps-post",
    )
    chosen = [plan for plan in front if plan["chosen"]]
    if chosen:
        axes.scatter(
            [chosen[0]["predicted_ms"]],
            [chosen[0]["predicted_loss"] * scale],
            marker="*",
            s=220,
            color=color(5),
            zorder=3,
            label="chosen (predicted)",
        )
    axes.scatter(
        [latency["original_ms"]], [0], marker="s", s=50, color="black", zorder=3, label="original (measured)"
    )
    drop = _drop(accuracy)
    if unit == _POINTS and drop is not None:
        axes.scatter(
            [latency["optimized_ms"]],
            [drop],
            marker="D",
            s=50,
            color=color(2),
            zorder=3,
            label="optimized (measured)",
        )
    target = budget_target_ms(document)
    if target is not None:
        axes.axvline(target, color=color(0), linestyle="--", label=f"latency budget ({format_ms(target)} ms)")
    if unit == _POINTS and budget.get("max_accuracy_drop") is not None:
        axes.axhline(budget["max_accuracy_drop"], color=color(6), linestyle=":", label="accuracy budget")
    axes.set(
        xlabel="end-to-end latency (ms)",
        ylabel="accuracy points lost" if unit == _POINTS else "summed relative output error (%)",
        title="Latency against loss: the plans, the original and the result",
    )
    axes.grid(alpha=0.3)
    axes.legend(loc="upper right")
    _stamp(figure, document)
    return figure


def layer_latency_figure(document: Document) -> Any:
    """Per layer, the measured ms of the original layer and of its replacement side by side (a Figure)."""
    from sepconv.viz.style import color, new_figure

    layers = document["layers"]
    figure = new_figure(8, max(2.6, 0.42 * len(layers) + 1.4))
    axes = figure.subplots()
    positions = list(range(len(layers)))[::-1]  # first layer at the top
    height = 0.4
    axes.barh(
        [position + height / 2 for position in positions],
        [layer["ms_before"] for layer in layers],
        height,
        color=color(0),
        label="original",
    )
    axes.barh(
        [position - height / 2 for position in positions],
        [layer["ms_after"] for layer in layers],
        height,
        color=color(4),
        label="optimized",
    )
    axes.set_yticks(positions, [_plain(f"{layer['name']} ({_rank_text(layer['rank'])})") for layer in layers])
    axes.set(xlabel="measured ms per layer", title="Per layer: measured latency before and after (rank)")
    axes.grid(axis="x", alpha=0.3)
    axes.legend(loc="lower right")
    _stamp(figure, document)
    return figure


def rounds_figure(document: Document) -> Any:
    """Per re-planning round, the predicted and the measured end-to-end latency and the budget (a Figure)."""
    from sepconv.viz.style import color, new_figure

    rounds = document["rounds"]
    figure = new_figure(8, 3.2)
    axes = figure.subplots()
    width = 0.38
    numbers = [row["round"] for row in rounds]
    axes.bar(
        [n - width / 2 for n in numbers],
        [r["predicted_ms"] for r in rounds],
        width,
        color=color(1),
        label="predicted",
    )
    axes.bar(
        [n + width / 2 for n in numbers],
        [r["measured_ms"] for r in rounds],
        width,
        color=color(4),
        label="measured",
    )
    target = budget_target_ms(document)
    if target is not None:
        axes.axhline(target, color=color(0), linestyle="--", label=f"budget ({format_ms(target)} ms)")
    axes.set(
        xlabel="round",
        ylabel="end-to-end ms",
        title="Predicted vs measured latency per round",
        xticks=numbers,
    )
    axes.grid(axis="y", alpha=0.3)
    axes.legend(loc="center left", bbox_to_anchor=(1.0, 0.5))
    _stamp(figure, document)
    return figure


def html_sections(document: Document) -> list[Any]:
    """The page's :class:`~sepconv.viz.report.Section` objects; each number keeps its exact value."""
    from sepconv.viz.report import Cell, Section, figure_image
    from sepconv.viz.report import Table as PageTable

    unit, latency = _checked(document)["loss_unit"], document["latency"]
    layers = document["layers"]

    def ms(value: float | None) -> Cell:
        return Cell("-") if value is None else Cell(format_ms(value), value)

    def ratio(numerator: float, denominator: float) -> Cell:
        return (
            Cell(format_ratio(numerator / denominator), numerator / denominator) if denominator else Cell("-")
        )

    def loss(value: float | None) -> Cell:
        return Cell("-") if value is None else Cell(_loss_number(value, unit), value)

    def number(value: float | None, text: str = "{:.2f}") -> Cell:
        return Cell("-") if value is None else Cell(text.format(value), value)

    macs, params, spread = document["macs"], document["params"], latency.get("spread_ms") or {}
    result = PageTable(
        headers=["", "original", "optimized", "original / optimized"],
        rows=[
            [
                "latency, measured (ms)",
                ms(latency["original_ms"]),
                ms(latency["optimized_ms"]),
                ratio(latency["original_ms"], latency["optimized_ms"]),
            ],
            ["spread (ms)", ms(spread.get("original")), ms(spread.get("optimized")), ""],
            [
                _PLANNED,
                ms(latency.get("reference_ms")),
                ms(latency["predicted_ms"]),
                ratio(_planned_from(latency), latency["predicted_ms"]),
            ],
            ["MACs per image", macs["before"], macs["after"], ratio(macs["before"], macs["after"])],
            ["parameters", params["before"], params["after"], ratio(params["before"], params["after"])],
        ],
        title="Result",
        caption=_RESULT_CAPTION,
    )
    summary = Section(
        "Result",
        paragraphs=[f"Measured on {engine_line(document)}.", _budget_line(document), _pareto_line(document)],
        tables=[result],
        images=[figure_image(pareto_figure(document), "Pareto front: predicted latency vs predicted loss")]
        if document["pareto"]
        else [],
    )
    layer_table = PageTable(
        headers=[
            "layer",
            "kind",
            "rank",
            "exact rank",
            "MACs before",
            "MACs after",
            "ms before",
            "ms after",
            "bytes before",
            "bytes after",
            "intensity before",
            "intensity after",
            "output error",
            "accuracy drop (points)",
        ],
        rows=[
            [
                layer["name"],
                layer["kind"],
                Cell("keep") if layer["rank"] is None else layer["rank"],
                layer["max_rank"],
                layer["macs_before"],
                layer["macs_after"],
                ms(layer["ms_before"]),
                ms(layer["ms_after"]),
                layer["bytes_before"],
                layer["bytes_after"],
                number(layer["intensity_before"]),
                number(layer["intensity_after"]),
                Cell("-")
                if layer["output_error"] is None
                else Cell(format_percent(layer["output_error"], 1), layer["output_error"]),
                number(layer["accuracy_drop"]),
            ]
            for layer in layers
        ],
        title="Per layer",
        caption=_LAYER_LEGEND + " Click a header to sort.",
    )
    per_layer = Section(
        "Per layer",
        tables=[layer_table],
        images=[figure_image(layer_latency_figure(document), "Per-layer latency before and after")]
        if layers
        else [],
    )
    target = budget_target_ms(document)
    rounds_table = PageTable(
        headers=[
            "round",
            "predicted ms",
            "measured ms",
            "relative error",
            "fixed ms",
            "scale",
            "within budget",
        ],
        rows=[
            [
                row["round"],
                ms(row["predicted_ms"]),
                ms(row["measured_ms"]),
                Cell(f"{row['relative_error']:+.1%}", row["relative_error"]),
                ms(row["latency_model"]["fixed_ms"]),
                number(row["latency_model"]["scale"], "{:.3f}"),
                "-" if target is None else ("yes" if row["measured_ms"] <= target else "no"),
            ]
            for row in document["rounds"]
        ],
        title="Predicted vs measured end to end, per round",
        caption="relative error = (predicted - measured) / measured; the latency model predicts "
        "fixed ms + scale x the summed per-layer ms of a plan, refitted after each round.",
    )
    rounds = Section(
        "Predicted vs measured latency",
        tables=[rounds_table],
        images=[figure_image(rounds_figure(document), "Predicted vs measured latency per round")]
        if document["rounds"]
        else [],
    )
    accuracy = document["accuracy"]
    if accuracy is None:
        accuracy_section = Section("Accuracy", paragraphs=[str(_accuracy_block(document))])
    else:
        accuracy_section = Section(
            "Accuracy",
            tables=[
                PageTable(
                    headers=["", "accuracy (%)"],
                    rows=[[label, number(accuracy.get(key))] for label, key in _ACCURACY_ROWS],
                    title=f"{accuracy['split']} split, {format_count(accuracy['images'])} images",
                )
            ],
        )
    names = [layer["name"] for layer in layers]
    shown_plans = _plans_to_list(document["pareto"])
    pareto_table = PageTable(
        headers=[
            "plan",
            "predicted ms",
            f"predicted loss ({'points' if unit == _POINTS else 'output error'})",
            "chosen",
            *names,
        ],
        rows=[
            [
                index + 1,
                ms(plan["predicted_ms"]),
                loss(plan["predicted_loss"]),
                "chosen" if plan["chosen"] else "",
                *(_rank_text(plan["ranks"].get(name)) for name in names),
            ]
            for index, plan in shown_plans
        ],
        title="Plans on the Pareto front",
        caption=f"Ranks per layer (keep = the original layer). {_shown_caption(document, shown_plans)}",
    )
    files = PageTable(["file", "path"], list(_files(document).items()), title="Files written")
    stages = PageTable(
        ["stage", "seconds"],
        [[stage, number(seconds, "{:.1f}")] for stage, seconds in _stages(document)],
        title="Time per stage",
    )
    notes = [*_skipped_lines(document), _cache_line(document), *(document.get("notes") or [])]
    run = Section("The run", paragraphs=[note for note in notes if note], tables=[files, stages])
    return [summary, per_layer, rounds, accuracy_section, Section("Pareto front", tables=[pareto_table]), run]


# The page lists at most this many plans: an exact front over many layers can hold thousands, which
# would make a page of megabytes; the plot shows every one and plan.json keeps them all.
#: The most plans the page lists (the plot shows all, ``plan.json`` keeps all).
MAX_LISTED_PLANS = 40


def _plans_to_list(front: Sequence[Mapping[str, Any]]) -> list[tuple[int, Mapping[str, Any]]]:
    """(index, plan) of the plans the page lists: all of a short front, else plans evenly spaced from the
    slowest to the fastest, and the chosen one, in the front's order."""
    if len(front) <= MAX_LISTED_PLANS:
        return list(enumerate(front))
    by_latency = sorted(range(len(front)), key=lambda index: front[index]["predicted_ms"])
    steps = MAX_LISTED_PLANS - 1
    listed = {by_latency[round(step * (len(front) - 1) / steps)] for step in range(steps + 1)}
    listed.update(index for index, plan in enumerate(front) if plan["chosen"])
    return [(index, front[index]) for index in sorted(listed)]


def _shown_caption(document: Document, listed: Sequence[Any]) -> str:
    total = len(document["pareto"])
    if len(listed) == total:
        return ""
    return (
        f"{len(listed)} of the {total:,} plans, evenly spaced in latency, and the chosen one; the plot "
        "shows them all and plan.json lists them all."
    )


def write_html(document: Document, path: PathLike) -> Path:
    """Write the report as one self-contained HTML page at ``path`` (a ``.html`` name), atomically.

    Plots are embedded, tables sort by a click, a Content-Security-Policy forbids every outside
    resource, and every string of the document (layer and model names) is escaped.
    """
    from sepconv.viz.report import write_html as write_page

    return write_page(path, _title(document), html_sections(document), subtitle=engine_line(document))
