"""Convert the trained standard twin to a separable model and fine-tune it, against the twin trained from scratch.

Issue 10's experiment, in one process with one recipe (the demo's: AdamW, one-cycle, batch 64,
mnist5k, seed 0):

1. the standard twin ``standard_cnn`` trained for 5 epochs (or ``--standard FILE``, e.g. the model a
   ``sepconv demo`` run wrote);
2. the separable twin ``separable_cnn`` trained from scratch for 5 epochs;
3. the standard twin converted with ``to_separable`` at each ``--ranks`` r (stem excluded by default,
   as the twin keeps a full stem), its test accuracy right after conversion, then fine-tuned from the
   converted weights (``sepconv train --init-from``'s code path) for each ``--finetune-epochs``.

Prints one table: test accuracy, MACs, and the time of each route (the training clock of each fit,
and the pure forward+backward+optimizer step time inside it). The accuracies are deterministic for a
given machine and seed; the times are this machine's, measured in this run.

    python benchmarks/conversion.py                 # about 6 minutes on 2 cores
    python benchmarks/conversion.py --standard runs/demo/standard_cnn/model.safetensors --json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch


def _fit(config: Any) -> dict[str, Any]:
    from sepconv.train import fit

    result = fit(config)
    return {
        "test_accuracy": result.test_accuracy,
        "train_seconds": result.train_seconds,
        "step_seconds": sum(row.get("step_seconds", 0.0) for row in result.history),
        "epochs": len(result.history),
        "model_path": str(result.model_path),
    }


def _recipe(model: str, out: Path, epochs: int, lr: float, init_from: str | None = None) -> Any:
    from sepconv.demo import DEMO_BATCH_SIZE, demo_config

    config = demo_config(
        model,
        out,
        dataset="mnist5k",
        epochs=epochs,
        batch_size=DEMO_BATCH_SIZE,
        lr=lr,
        seed=0,
        progress=False,
    )
    if init_from is not None:
        config.init_from = init_from
        config.out_dir = str(out)
    return config


def _test_accuracy(model: torch.nn.Module, data: Any) -> float:
    from sepconv.train.evaluation import evaluate_model

    return evaluate_model(model, data.test, num_classes=data.num_classes).accuracy


def main(argv: list[str] | None = None) -> int:
    from sepconv import load_model, save_model
    from sepconv.analysis import summarize
    from sepconv.convert import to_separable
    from sepconv.data import load_dataset
    from sepconv.demo import DEMO_EPOCHS, DEMO_LR

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--standard", help="a trained standard_cnn model file (default: train one here)")
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--finetune-epochs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--finetune-lr", type=float, default=DEMO_LR)
    parser.add_argument("--exclude", action="append", default=None, help="default: features.0.* (the stem)")
    parser.add_argument("--out", default=None, help="folder for the runs (default: a temporary one)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    exclude = args.exclude if args.exclude is not None else ["features.0.*"]

    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory() as scratch:
        out = Path(args.out or scratch)
        data = load_dataset("mnist5k", seed=0)
        rows: list[dict[str, Any]] = []
        if args.standard is None:
            say(f"training standard_cnn for {DEMO_EPOCHS} epochs")
            standard = _fit(_recipe("standard_cnn", out, DEMO_EPOCHS, DEMO_LR))
            standard_path = standard["model_path"]
            rows.append({"route": "standard_cnn from scratch", **standard})
        else:
            standard, standard_path = None, args.standard
        say(f"training separable_cnn for {DEMO_EPOCHS} epochs")
        twin = _fit(_recipe("separable_cnn", out, DEMO_EPOCHS, DEMO_LR))
        twin_macs = summarize(load_model(twin["model_path"]), (1, 1, 28, 28)).total_macs
        rows.append({"route": "separable_cnn from scratch", **twin, "macs": twin_macs})
        if standard is not None:
            rows[0]["macs"] = summarize(load_model(standard_path), (1, 1, 28, 28)).total_macs

        trained = load_model(standard_path)
        calibration = torch.stack([data.train[index][0] for index in range(64)])
        conversions = []
        for rank in args.ranks:
            started = time.perf_counter()
            converted, report = to_separable(
                trained, depth_multiplier=rank, exclude=exclude, calibration=calibration
            )
            convert_seconds = time.perf_counter() - started
            path = save_model(converted, out / f"converted_r{rank}.safetensors")
            before = _test_accuracy(converted, data)
            conversions.append(
                {
                    "rank": rank,
                    "convert_seconds": convert_seconds,
                    "test_accuracy": before,
                    "macs": report.total_macs_after,
                    "params": report.total_params_after,
                    "mean_weight_error": sum(layer.weight_error for layer in report.layers)
                    / len(report.layers),
                }
            )
            rows.append(
                {
                    "route": f"converted r={rank}, no fine-tuning",
                    "test_accuracy": before,
                    "train_seconds": 0.0,
                    "step_seconds": 0.0,
                    "epochs": 0,
                    "macs": report.total_macs_after,
                    "convert_seconds": convert_seconds,
                }
            )
            for epochs in args.finetune_epochs:
                say(f"fine-tuning the r={rank} conversion for {epochs} epoch(s)")
                run = _fit(
                    _recipe(
                        "standard_cnn",
                        out / f"finetune_r{rank}_e{epochs}",
                        epochs,
                        args.finetune_lr,
                        str(path),
                    )
                )
                rows.append(
                    {
                        "route": f"converted r={rank} + {epochs} epoch(s)",
                        **run,
                        "macs": report.total_macs_after,
                        "convert_seconds": convert_seconds,
                    }
                )

    document = {
        "dataset": "mnist5k",
        "recipe": {"epochs": DEMO_EPOCHS, "lr": DEMO_LR, "finetune_lr": args.finetune_lr, "exclude": exclude},
        "threads": torch.get_num_threads(),
        "standard": standard_path if args.standard else "trained in this run",
        "conversions": conversions,
        "routes": rows,
    }
    if args.json:
        json.dump(document, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    print(f"mnist5k, demo recipe, seed 0, {torch.get_num_threads()} threads; stem excluded: {exclude}")
    print(f"{'route':<34} {'epochs':>6} {'test acc':>9} {'MACs':>8} {'train (s)':>10} {'steps (s)':>10}")
    for row in rows:
        macs = f"{row['macs'] / 1e6:.2f}M" if row.get("macs") else "-"
        print(
            f"{row['route']:<34} {row['epochs']:>6} {row['test_accuracy']:>9.2%} {macs:>8} "
            f"{row['train_seconds']:>10.1f} {row['step_seconds']:>10.1f}"
        )
    for item in conversions:
        print(
            f"r={item['rank']}: conversion {item['convert_seconds']:.2f} s, mean relative weight error "
            f"{item['mean_weight_error']:.1%}, {item['params']:,} parameters"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
