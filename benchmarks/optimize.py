"""``sepconv optimize`` against issue 22's targets, each figure beside its baseline, in one process.

1. The demo's ``standard_cnn`` trained with the demo recipe (5 epochs, mnist5k, seed 0; or
   ``--standard FILE``, e.g. the model a ``sepconv demo`` run wrote).
2. For batch 1 and batch 64: ``optimize --engine ort --speedup 3`` (2 epochs of fine-tuning) with an
   empty cost table (the sensitivity table, which does not depend on the batch, is empty for batch 1
   and reused at batch 64), then again with the tables it filled (``--epochs 0``: only the planning is
   timed): the measured ORT speedup, test accuracy before and after, predicted against measured
   latency per round, planning time uncached and cached, the whole run's time.
3. The blind routes at the same budget, fine-tuned the same way (BatchNorm re-estimated, 2 epochs):
   "every convolution at r = 1, stem kept" and ``convert --depth-multiplier auto --max-error E``
   (E = 0.3 and 0.5, by weight error); their ORT latency is timed in one interleaved call with the
   original and the optimized model, and their test accuracy measured on the same split.
4. torchvision resnet18 and vgg11 at 3x64x64 (random weights: structure and speed only),
   ``--speedup 2 --engine ort`` at batch 1: the measured speedup, planning time uncached and cached.

Prints one table (figure, measured, target); ``--json`` prints every number instead. ``--quick`` is a
smoke run on a tiny configuration (a small standard_cnn trained 20 steps, batch 16 only, one plan per run
(no re-planning), 200 validation and 128 recalibration images, resnet18 at 3x32x32, no vgg11, one-call
timings): its figures mean nothing, it checks that the script runs.

    python benchmarks/optimize.py                  # about 15 minutes on 2 cores (11 min with --standard)
    python benchmarks/optimize.py --standard runs/demo/standard_cnn/model.safetensors --json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

# The targets.
SPEEDUP = 3.0
TORCHVISION_SPEEDUP = 2.0
MAX_ACCURACY_DROP_POINTS = 0.5
MAX_PREDICTION_ERROR = 0.20
MAX_PLANNING_UNCACHED_S = 600.0
MAX_PLANNING_CACHED_S = 60.0
MAX_TOTAL_S = 300.0
FINETUNE_EPOCHS = 2
BLIND_MAX_ERRORS = (0.3, 0.5)
PLANNING_STAGES = ("sites", "costs", "sensitivity", "planning", "measuring")


@dataclass(frozen=True)
class Settings:
    """What the benchmark runs; :data:`FULL` is the issue's configuration, :data:`QUICK` a smoke run."""

    standard_widths: tuple[int, ...] | None = None  # None: standard_cnn's own
    train_epochs: int = 5
    train_max_steps: int | None = None  # None: every step of train_epochs
    batch_sizes: tuple[int, ...] = (1, 64)
    speedup: float = SPEEDUP
    finetune_epochs: int = FINETUNE_EPOCHS
    rounds: int = 2  # re-plans after a measured miss (optimize's default)
    validation_images: int | None = None  # None: the whole validation split (optimize's default)
    recalibration_images: int = 512  # optimize's default
    torchvision: tuple[str, ...] = ("torchvision:resnet18", "torchvision:vgg11")
    torchvision_size: tuple[int, int, int] = (3, 64, 64)
    torchvision_speedup: float = TORCHVISION_SPEEDUP
    quick_timing: bool = False


FULL = Settings()
# Budgets a tiny model reaches whatever the machine's noise: the smoke run checks the script, not speed.
QUICK = Settings(
    standard_widths=(8, 16, 16, 32),
    train_epochs=1,
    train_max_steps=20,
    batch_sizes=(16,),
    speedup=1.05,
    finetune_epochs=1,
    rounds=0,
    validation_images=200,
    recalibration_images=128,
    torchvision=("torchvision:resnet18",),
    torchvision_size=(3, 32, 32),
    torchvision_speedup=1.05,
    quick_timing=True,
)


def _timing_plan(settings: Settings) -> Any:
    from sepconv.timing import TimingPlan

    if not settings.quick_timing:
        return None
    return TimingPlan(warmup_calls=1, min_rounds=3, min_run_seconds=0, calls_per_block=3, settle_seconds=0)


def train_standard(settings: Settings, work: Path) -> Path:
    """The demo's standard twin trained with the demo recipe; the path of its model file."""
    from sepconv.demo import DEMO_BATCH_SIZE, DEMO_LR, demo_config
    from sepconv.train import fit

    config = demo_config(
        "standard_cnn",
        work,
        dataset="mnist5k",
        epochs=settings.train_epochs,
        batch_size=DEMO_BATCH_SIZE,
        lr=DEMO_LR,
        seed=0,
        progress=False,
    )
    if settings.standard_widths is not None:
        config.model_kwargs = {"widths": list(settings.standard_widths)}
    config.max_steps = settings.train_max_steps
    result = fit(config)
    assert result.model_path is not None
    return Path(result.model_path)


def planning_seconds(document: dict[str, Any]) -> float:
    """Everything before fine-tuning: sites, costs, sensitivity, planning and the end-to-end rounds."""
    return sum(document["timings_s"][stage] for stage in PLANNING_STAGES)


def optimize(config: Any) -> tuple[dict[str, Any] | None, str | None, float]:
    """(document, refusal, wall seconds) of one ``optimize_model`` run; a budget out of reach is a refusal."""
    from sepconv.optimize.planner import BudgetError
    from sepconv.optimize.run import optimize_model

    started = time.perf_counter()
    try:
        document = optimize_model(config)
    except BudgetError as error:
        return None, str(error), time.perf_counter() - started
    return document, None, time.perf_counter() - started


def blind_routes(inputs: Any, base: Any, work: Path) -> dict[str, dict[str, Any]]:
    """Each blind route applied to the model, BatchNorm re-estimated and fine-tuned as optimize does it.

    Returns per route its fine-tuned model and test accuracy (batch-independent, so measured once).
    """
    import shutil
    import warnings

    from sepconv import load_model
    from sepconv.convert import to_separable
    from sepconv.optimize.run import accuracy_percent, apply_plan, recover
    from sepconv.optimize.sites import find_sites

    assert inputs.data is not None
    sites, _ = find_sites(inputs.model, inputs.input_size)
    convs = [site.name for site in sites if site.kind == "conv"]
    routes: dict[str, Any] = {
        "every conv r=1, stem kept": apply_plan(inputs.model, dict.fromkeys(convs[1:], 1))
    }
    for error in BLIND_MAX_ERRORS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            converted, _ = to_separable(inputs.model, depth_multiplier="auto", max_relative_error=error)
        routes[f"auto by weight error {error:g}"] = converted
    results = {}
    for index, (name, converted) in enumerate(routes.items()):
        folder = work / f"blind-{index}"
        finished = folder / "finetune" / "model.safetensors"
        if finished.is_file():  # a rerun in the same --work folder keeps a route fine-tuned before
            fine_tuned, seconds = load_model(finished).eval(), None
        else:
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            _, fine_tuned, seconds = recover(base, inputs, converted, folder, show_progress=False)
        results[name] = {
            "model": fine_tuned,
            "accuracy": accuracy_percent(fine_tuned, inputs.data),
            "fine_tuning_s": seconds,
        }
    return results


def time_side_by_side(models: dict[str, torch.nn.Module], config: Any, inputs: Any) -> dict[str, float]:
    """Median end-to-end ORT latency (ms) of each model, in one interleaved call."""
    from sepconv.deploy.engines import get_engine
    from sepconv.optimize.run import time_end_to_end

    timings = time_end_to_end(models, inputs, get_engine(config.engine), config)
    return {name: timing.median_ms for name, timing in timings.items()}


def prepare_standard(settings: Settings, model_file: Path, work: Path) -> tuple[Any, Any, dict[str, Any]]:
    """The base configuration, the model's inputs (data, image size) and the fine-tuned blind routes."""
    from sepconv.optimize.run import OptimizeConfig, load_inputs

    base = OptimizeConfig(
        model=str(model_file),
        out_dir=str(work / "unused"),
        engine="ort",
        speedup=settings.speedup,
        epochs=settings.finetune_epochs,
        rounds=settings.rounds,
        validation_images=settings.validation_images,
        recalibration_images=settings.recalibration_images,
        timing_plan=_timing_plan(settings),
        overwrite=True,  # the benchmark's own folders: a rerun replaces them
    )
    inputs = load_inputs(base)
    return base, inputs, blind_routes(inputs, base, work / "blind")


def standard_batch(base: Any, inputs: Any, blind: dict[str, Any], batch: int, work: Path) -> dict[str, Any]:
    """optimize at ``batch`` (empty cost table), again cached, and everything timed side by side."""
    from sepconv import load_model

    # Costs depend on the batch, so each batch starts from an empty cost table; the sensitivity
    # table does not (it is measured on the data), so the second batch reuses the first's.
    config = replace(
        base,
        batch_size=batch,
        out_dir=str(work / f"optimize-b{batch}"),
        cost_table=str(work / f"costs-b{batch}.json"),
        sensitivity_table=str(work / "sensitivity.json"),
    )
    document, refusal, wall = optimize(config)
    cached, _, cached_wall = optimize(replace(config, out_dir=str(work / f"cached-b{batch}"), epochs=0))
    entry: dict[str, Any] = {"refusal": refusal, "wall_s": wall}
    if document is not None:
        optimized = load_model(document["files"]["model"])
        latencies = time_side_by_side(
            {
                "original": inputs.model,
                "optimized": optimized,
                **{name: route["model"] for name, route in blind.items()},
            },
            config,
            inputs,
        )
        entry.update(
            {
                "document": document,
                "planning_s": planning_seconds(document),
                "cached_planning_s": None if cached is None else planning_seconds(cached),
                "cached_measured": None if cached is None else cached["cached"],
                "cached_wall_s": cached_wall,
                "side_by_side_ms": latencies,
                "blind_accuracy": {name: route["accuracy"] for name, route in blind.items()},
            }
        )
    return entry


def torchvision_model(settings: Settings, index: int, name: str, work: Path) -> dict[str, Any]:
    """optimize a torchvision model on random images (empty tables), then again cached."""
    from sepconv.optimize.run import OptimizeConfig

    tables = work / f"tables-tv{index}"
    config = OptimizeConfig(
        model=name,
        out_dir=str(work / f"tv{index}"),
        engine="ort",
        speedup=settings.torchvision_speedup,
        input_size=settings.torchvision_size,
        rounds=settings.rounds,
        cost_table=str(tables / "costs.json"),
        sensitivity_table=str(tables / "sensitivity.json"),
        timing_plan=_timing_plan(settings),
        overwrite=True,
    )
    # The same random weights for both runs (the sensitivity table's key names the weights): without a
    # seed, the second run's model would be another one, measured afresh, not the cached case timed.
    torch.manual_seed(0)
    document, refusal, wall = optimize(config)
    torch.manual_seed(0)
    cached, _, cached_wall = optimize(replace(config, out_dir=str(work / f"tv{index}-cached")))
    return {
        "refusal": refusal,
        "wall_s": wall,
        "document": document,
        "planning_s": None if document is None else planning_seconds(document),
        "cached_planning_s": None if cached is None else planning_seconds(cached),
        "cached_wall_s": cached_wall,
    }


def rows(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(figure, measured, target or baseline) for the table."""
    table: list[tuple[str, str, str]] = []
    for batch, entry in report["standard_cnn"]["batches"].items():
        where = f"standard_cnn batch {batch}"
        if entry.get("document") is None:
            table.append((f"{where}: plan", f"refused: {entry['refusal']}", f">= {SPEEDUP:g}x"))
            continue
        document = entry["document"]
        latency, accuracy = document["latency"], document["accuracy"]
        side = entry["side_by_side_ms"]
        table.append((f"{where}: ORT speedup (in the run)", f"{latency['speedup']:.2f}x", f">= {SPEEDUP:g}x"))
        table.append(
            (
                f"{where}: ORT speedup (re-timed beside the blind routes)",
                f"{side['original'] / side['optimized']:.2f}x ({side['optimized']:.3f} ms)",
                f"original {side['original']:.3f} ms",
            )
        )
        table.append(
            (
                f"{where}: test accuracy",
                f"{accuracy['fine_tuned']:.2f}% (converted {accuracy['converted']:.2f}%)",
                f"original {accuracy['original']:.2f}%, drop <= {MAX_ACCURACY_DROP_POINTS:g}",
            )
        )
        for name, accuracy_percent in entry["blind_accuracy"].items():
            table.append(
                (
                    f"{where}: blind route '{name}'",
                    f"{side['original'] / side[name]:.2f}x ({side[name]:.3f} ms), {accuracy_percent:.2f}%",
                    f"optimize: {side['original'] / side['optimized']:.2f}x, {accuracy['fine_tuned']:.2f}%",
                )
            )
        for row in document["rounds"]:
            table.append(
                (
                    f"{where}: round {row['round']} predicted / measured",
                    f"{row['predicted_ms']:.3f} / {row['measured_ms']:.3f} ms ({row['relative_error']:+.1%})",
                    f"within {MAX_PREDICTION_ERROR:.0%}",
                )
            )
        table.append(
            (
                f"{where}: planning time uncached / cached",
                f"{entry['planning_s']:.0f} s / {entry['cached_planning_s']:.1f} s",
                f"<= {MAX_PLANNING_UNCACHED_S:.0f} s / <= {MAX_PLANNING_CACHED_S:.0f} s",
            )
        )
        table.append((f"{where}: whole run", f"{entry['wall_s']:.0f} s", f"<= {MAX_TOTAL_S:.0f} s"))
    for name, entry in report["torchvision"].items():
        document = entry["document"]
        if document is None:
            table.append((f"{name}: plan", f"refused: {entry['refusal']}", f">= {TORCHVISION_SPEEDUP:g}x"))
            continue
        table.append(
            (f"{name}: ORT speedup", f"{document['latency']['speedup']:.2f}x", f">= {TORCHVISION_SPEEDUP:g}x")
        )
        table.append(
            (
                f"{name}: planning time uncached / cached",
                f"{entry['planning_s']:.0f} s / {entry['cached_planning_s']:.1f} s",
                f"<= {MAX_PLANNING_UNCACHED_S:.0f} s / <= {MAX_PLANNING_CACHED_S:.0f} s",
            )
        )
    return table


def _plain(report: dict[str, Any]) -> dict[str, Any]:
    """The report without models (for --json)."""

    def strip(value: Any) -> Any:
        if isinstance(value, torch.nn.Module):
            return None
        if isinstance(value, dict):
            return {
                str(key): strip(item)
                for key, item in value.items()
                if key != "model" or isinstance(item, str)
            }
        if isinstance(value, list | tuple):
            return [strip(item) for item in value]
        return value

    return strip(report)  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--standard", default=None, help="a trained standard_cnn model file (default: train one)"
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run on a tiny configuration")
    parser.add_argument("--json", action="store_true", help="print every number as JSON")
    parser.add_argument("--work", default=None, help="folder for the runs (default: a temporary one)")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL

    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="sepconv-bench-optimize-") as scratch:
        work = Path(args.work) if args.work else Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        if args.standard is None:
            say("training standard_cnn with the demo recipe ...")
            model_file = train_standard(settings, work / "train")
        else:
            model_file = Path(args.standard)
        report: dict[str, Any] = {
            "threads": torch.get_num_threads(),
            "standard_cnn": {"model": str(model_file), "batches": {}},
            "torchvision": {},
        }
        say("standard_cnn: the blind routes ...")
        base, inputs, blind = prepare_standard(settings, model_file, work / "standard")
        # The most telling figures first, and each section saved as it ends (work/report.json): a
        # long run cut short still has what it measured.
        steps: list[tuple[str, Any]] = [
            (f"standard_cnn batch {settings.batch_sizes[0]}", None),
            *((name, index) for index, name in enumerate(settings.torchvision[:1])),
            *((f"standard_cnn batch {batch}", None) for batch in settings.batch_sizes[1:]),
            *((name, index + 1) for index, name in enumerate(settings.torchvision[1:])),
        ]
        for label, index in steps:
            say(f"{label} ...")
            if index is None:
                batch = int(label.rsplit(" ", 1)[1])
                report["standard_cnn"]["batches"][batch] = standard_batch(
                    base, inputs, blind, batch, work / "standard"
                )
            else:
                report["torchvision"][label] = torchvision_model(settings, index, label, work / "torchvision")
            report["seconds"] = time.perf_counter() - started
            (work / "report.json").write_text(json.dumps(_plain(report), indent=2) + "\n")
        if args.json:
            json.dump(_plain(report), sys.stdout, indent=2)
            sys.stdout.write("\n")
            return 0
        table = rows(report)
        width = max(len(row[0]) for row in table)
        value_width = max(len(row[1]) for row in table)
        print(f"{'figure':<{width}}  {'measured':<{value_width}}  target / baseline")
        for figure, measured, target in table:
            print(f"{figure:<{width}}  {measured:<{value_width}}  {target}")
        print(f"benchmark: {report['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
