"""The demo's report: the comparison table, ``curves.png``, ``comparison.png``, ``report.md`` and
``report.html``, all made from the one results document that ``sepconv demo`` prints."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from sepconv.demo.recipe import DEMO_MODELS
from sepconv.formatting import Table, format_count, format_ms, format_percent, format_ratio
from sepconv.io.atomic import atomic_write_bytes
from sepconv.viz.style import color as palette_color

__all__ = ["deployed_line", "execution_path", "table_rows", "write_report"]

# The two twins' colours in every plot: sepconv's colour-blind-safe blue and orange.
_TWIN_COLORS = (palette_color(4), palette_color(0))


def _save_png(figure: Any, path: Path) -> None:
    """``figure`` as a PNG, written atomically like every other file of the run."""
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    atomic_write_bytes(path, buffer.getvalue())


def _plot_curves(curves: dict[str, list[dict[str, float]]], path: Path) -> None:
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(10, 4))
    loss_axes, accuracy_axes = figure.subplots(1, 2)
    # One colour per model (as in the bar chart); solid = training, dashed = validation.
    for (role, rows), color in zip(curves.items(), _TWIN_COLORS, strict=False):
        epochs = [row["epoch"] for row in rows]
        loss_axes.plot(
            epochs, [row["train_loss"] for row in rows], color=color, marker="o", label=f"{role} train"
        )
        loss_axes.plot(
            epochs,
            [row.get("val_loss") for row in rows],
            color=color,
            marker="x",
            ls="--",
            label=f"{role} val",
        )
        accuracy_axes.plot(
            epochs, [100 * row.get("val_accuracy", 0) for row in rows], color=color, marker="o", label=role
        )
    loss_axes.set(title="loss (label-smoothed cross-entropy)", xlabel="epoch")
    accuracy_axes.set(title="validation accuracy (%)", xlabel="epoch")
    for axes in (loss_axes, accuracy_axes):
        axes.legend()
        axes.grid(alpha=0.3)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    figure.tight_layout()
    _save_png(figure, path)


def _plot_comparison(document: dict[str, Any], path: Path) -> None:
    from matplotlib.figure import Figure

    # Top row: what the model is; bottom row: how fast it runs, in PyTorch and deployed.
    panels = [
        ("params", "parameters", 1.0),
        ("macs", "MACs per image (millions)", 1e-6),
        ("test_accuracy", "test accuracy (%)", 100.0),
        ("latency_ms", "latency, batch 1 (ms)\nPyTorch eager", 1.0),
        ("deployed_latency_ms", "latency, batch 1 (ms)\ndeployed, fastest engine", 1.0),
        ("deployed_latency_ms_batch64", "latency, batch 64 (ms)\ndeployed, fastest engine", 1.0),
    ]
    figure = Figure(figsize=(12, 7.5))
    for axes, (key, title, scale) in zip(figure.subplots(2, 3).flat, panels, strict=True):
        values = [document[role][key] * scale for role in DEMO_MODELS]
        bars = axes.bar(list(DEMO_MODELS), values, color=list(_TWIN_COLORS))
        axes.bar_label(
            bars, labels=[f"{value:,.0f}" if key == "params" else f"{value:,.4g}" for value in values]
        )
        axes.set_title(title)
        if key == "test_accuracy":
            axes.set_ylim(min(values) - 2, 100)
        else:
            axes.margins(y=0.12)  # room for the value above the taller bar
            axes.set_xlabel(f"standard / separable: {format_ratio(document['ratios'][key])}")
    figure.tight_layout()
    _save_png(figure, path)


# (label, key, formatter) of each measured row; the ratio column is standard / separable. Batch-64
# latencies are tens of milliseconds: two decimals say all the measurement can.
_ROWS: list[tuple[str, str, Callable[[Any], str]]] = [
    ("parameters", "params", format_count),
    ("MACs per image", "macs", format_count),
    ("training time (s)", "train_seconds", "{:.1f}".format),
    ("training steps (s)", "train_step_seconds", "{:.1f}".format),
    ("latency, batch 1 (ms)", "latency_ms", format_ms),
    ("latency, batch 64 (ms)", "latency_ms_batch64", partial(format_ms, decimals=2)),
    # the fastest engine's (named under the table); each engine's own rows follow, indented
    ("deployed, batch 1 (ms)", "deployed_latency_ms", format_ms),
    ("deployed, batch 64 (ms)", "deployed_latency_ms_batch64", partial(format_ms, decimals=2)),
]
# The columns of the comparison table, in report.md, report.html and the printed table alike.
_TABLE_HEADERS = ("", "standard_cnn", "separable_cnn", "standard / separable")


def _measured(document: dict[str, Any]) -> list[tuple[str, Any, Any, float, Callable[[Any], str]]]:
    """Each measured row's exact values: (what, standard, separable, standard / separable, formatter).

    The fixed rows, then each deployment engine both twins ran on, at batch 1 and 64.
    """
    standard, separable, ratios = document["standard"], document["separable"], document["ratios"]
    rows = [(label, standard[key], separable[key], ratios[key], formatter) for label, key, formatter in _ROWS]
    for engine, figures in standard["deployed"].items():
        other = separable["deployed"].get(engine)
        if other is None:
            continue
        for key, batch, formatter in (
            ("latency_ms", 1, format_ms),
            ("latency_ms_batch64", 64, partial(format_ms, decimals=2)),
        ):
            rows.append(
                (
                    f"  {engine}, batch {batch}",
                    figures[key],
                    other[key],
                    figures[key] / other[key],
                    formatter,
                )
            )
    return rows


def table_rows(document: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """The comparison table as text cells: (what, standard, separable, standard / separable).

    ``report.md`` and ``sepconv demo``'s printed table are both made from these rows.
    """
    standard, separable, ratios = document["standard"], document["separable"], document["ratios"]
    rows = [
        (label, formatter(standard_value), formatter(separable_value), format_ratio(ratio))
        for label, standard_value, separable_value, ratio, formatter in _measured(document)
    ]
    rows.append(
        (
            "test accuracy",
            format_percent(standard["test_accuracy"]),
            format_percent(separable["test_accuracy"]),
            f"{100 * ratios['test_accuracy_difference']:+.2f} points",
        )
    )
    return rows


def deployed_line(document: dict[str, Any]) -> str:
    """Which engine ran each twin fastest, and which engines could not run here (with the reason)."""
    parts = []
    for role in DEMO_MODELS:
        figures = document[role]
        parts.append(
            f"{role} on {figures['deployed_engine']} (batch 1) and {figures['deployed_engine_batch64']} (batch 64)"
        )
    line = f"fastest deployed: {'; '.join(parts)}"
    skipped = document["standard"].get("deployed_skipped") or {}
    if skipped:
        line += "; not run here: " + "; ".join(f"{engine} ({reason})" for engine, reason in skipped.items())
    return line


def execution_path(result: dict[str, Any]) -> str:
    """How a twin trained: ``channels_last on, bf16 off, fused kernels on``."""
    from sepconv.train.precision import execution_line

    return execution_line(
        bool(result["channels_last"]),
        bool(result["bf16_training"]),
        bool(result.get("fused_training", False)),
    )


def write_report(document: dict[str, Any], curves: dict[str, list[dict[str, float]]], out_dir: Path) -> Path:
    """Write ``curves.png``, ``comparison.png``, ``report.md`` (which links them) and ``report.html``.

    ``report.html`` is one self-contained page (plots embedded, sortable table, no network) with the
    same numbers and text; the path returned is ``report.md``'s.
    """
    _plot_curves(curves, out_dir / "curves.png")
    _plot_comparison(document, out_dir / "comparison.png")
    standard, separable, recipe = (document[key] for key in ("standard", "separable", "recipe"))
    recipe_text = (
        f"Both twins trained with the same recipe: {recipe['epochs']} epochs, batch {recipe['batch_size']}, "
        f"AdamW + one-cycle (max lr {recipe['lr']}), label smoothing {recipe['label_smoothing']}, seed "
        f"{recipe['seed']}, on {recipe['train_samples']} training images ({recipe['val_samples']} validation, "
        f"{recipe['test_samples']} test), {recipe['torch_threads']} CPU threads"
        + (f" of {recipe['cpu']}." if recipe.get("cpu") else ".")
    )
    explanation = [
        "MACs are multiply-accumulates of one forward pass of one image; latency is the median of repeated",
        'forward passes in eval mode: "latency" in PyTorch eager (float32), "deployed" the exported',
        "`model.onnx` (BatchNorm folded, verified against PyTorch) on each deployment engine, timed alone",
        "with the settings a deployment uses, on the same threads (the int8 engines calibrated on 128",
        "training images; bf16 only where the CPU has native bf16). "
        + deployed_line(document)
        + ". Training time is the whole run (Lightning's setup, data loading, per-epoch validation,",
        "checkpoints); training steps are the forward, backward and optimizer steps alone. Each twin trains",
        "on the path sepconv's fixed rule picks for it (see 'What is reproducible' in the docs' training guide): "
        f"standard: {execution_path(standard)}; separable: {execution_path(separable)}.",
    ]
    lines = [
        f"# Standard vs depthwise-separable CNN on {recipe['dataset']}",
        "",
        recipe_text,
        "",
        Table(_TABLE_HEADERS, table_rows(document)).to_markdown(),
    ]
    lines += [
        "",
        *explanation,
        "",
        "![training curves](curves.png)",
        "",
        "![comparison](comparison.png)",
        "",
        f"Models: `{standard['model_path']}`, `{separable['model_path']}` (load with `sepconv.load_model`, "
        f"or `sepconv evaluate PATH --dataset {recipe['dataset']}`). Raw numbers: `results.json`.",
        "",
    ]
    report = out_dir / "report.md"
    atomic_write_bytes(report, "\n".join(lines).encode())
    _write_html_report(document, out_dir, paragraphs=[recipe_text, " ".join(explanation).replace("`", "")])
    return report


def _write_html_report(document: dict[str, Any], out_dir: Path, *, paragraphs: list[str]) -> Path:
    """``report.html``: the same table, text and plots as ``report.md``, as one self-contained page."""
    from sepconv.viz.report import Cell, Image, Section, Table, write_html

    standard, separable, ratios = document["standard"], document["separable"], document["ratios"]
    # Same text as report.md; each number keeps its exact value, which the page sorts by.
    exact = {
        label: (standard_value, separable_value, ratio)
        for label, standard_value, separable_value, ratio, _ in _measured(document)
    }
    exact["test accuracy"] = (
        standard["test_accuracy"],
        separable["test_accuracy"],
        ratios["test_accuracy_difference"],
    )
    table = Table(
        headers=list(_TABLE_HEADERS),
        rows=[
            [label, *(Cell(text, float(value)) for text, value in zip(texts, exact[label]))]
            for label, *texts in table_rows(document)
        ],
        title="standard vs separable",
    )
    images = [
        Image(title=title, data=(out_dir / name).read_bytes())
        for title, name in (("training curves", "curves.png"), ("comparison", "comparison.png"))
    ]
    models = (
        f"Models: {standard['model_path']}, {separable['model_path']} (load with sepconv.load_model). "
        f"Raw numbers: results.json."
    )
    return write_html(
        out_dir / "report.html",
        f"Standard vs depthwise-separable CNN on {document['recipe']['dataset']}",
        [Section("Results", paragraphs=[*paragraphs, models], tables=[table], images=images)],
    )
