"""``sepconv optimize MODEL|RUN --speedup S --out DIR``: make a trained model fast on this machine within an accuracy budget."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sepconv.cli._common import (
    HTML_SUFFIXES,
    INPUT_SIZE_HELP,
    OutputFile,
    add_data_root,
    add_dataset,
    add_input_size,
    add_json,
    finite_float,
    non_negative_int,
    positive_float,
    positive_int,
    print_json,
    seed,
)

_EPILOG = """\
What it does, in order:
  1. finds the layers that may change (convolutions: separable at rank r = 1, 2, 4, ... up to the exact
     rank; large linear layers: a low-rank pair), at the input each one really sees;
  2. times every candidate on --engine at --batch-size and --threads (cached in --cost-table: a rerun on
     this machine measures nothing new);
  3. measures what each candidate loses on your data: the validation accuracy with only that layer
     converted (cached too); without a data set, each layer's relative output error on random images;
  4. plans: per layer keep-or-rank for the budget at the smallest predicted loss (the Pareto front of
     latency against loss is in the report), applies the plan and times it end to end; when the engine
     misses the budget, the latency model learns from the measurement and plans again (--rounds);
  5. re-estimates BatchNorm, fine-tunes for --epochs, exports and verifies the deployable file, and
     measures test accuracy before and after.
DIR receives model.safetensors, the deployable file (model.onnx, model.int8.onnx, ...), plan.json and
report.html. Ctrl-C keeps the cost and sensitivity tables: the same command resumes from them.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "optimize",
        help="which layers to make separable or low-rank, at what rank, for a speed budget on this machine",
        description=(
            "Make MODEL (a sepconv model file, a training run's folder, or a registered name) faster on this "
            "machine and engine by a measured plan: per layer, keep it or replace it by a separable (or "
            "low-rank) one, chosen from latencies measured here and losses measured on your data."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "model",
        metavar="MODEL",
        help="sepconv model file, training run folder, or registered model name (torchvision:resnet18)",
    )
    add_dataset(
        parser,
        help="data set for sensitivity, fine-tuning and accuracy (default: the one the model was trained on)",
    )
    parser.add_argument(
        "--engine",
        default="ort",
        help=(
            "where the model will run: ort, ort-int8, torch, openvino, openvino-bf16 (native bf16 CPUs) or "
            "openvino-int8 (default ort)"
        ),
    )
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument(
        "--speedup",
        type=finite_float(minimum=1, min_inclusive=False),
        metavar="S",
        help="end to end, S times faster than the original on the engine",
    )
    budget.add_argument(
        "--latency-ms", type=positive_float, metavar="T", help="end to end, at most T ms per batch"
    )
    parser.add_argument(
        "--max-accuracy-drop",
        type=finite_float(minimum=0, maximum=100),
        metavar="D",
        help="lose at most D accuracy points (predicted from the sensitivity table); alone: the fastest plan within D",
    )
    parser.add_argument(
        "--batch-size", type=positive_int, default=1, metavar="B", help="batch the model runs at (default 1)"
    )
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        metavar="N",
        help="engine threads (default: the usable cores)",
    )
    parser.add_argument(
        "--epochs",
        type=non_negative_int,
        default=2,
        metavar="N",
        help="fine-tuning epochs; 0: none (default 2)",
    )
    parser.add_argument(
        "--lr",
        type=positive_float,
        default=None,
        metavar="LR",
        help="fine-tuning peak learning rate (default 4e-3, the demo recipe's, one-cycle)",
    )
    parser.add_argument(
        "--rounds",
        type=non_negative_int,
        default=2,
        metavar="N",
        help="re-plans after a measured miss of the budget (default 2)",
    )
    add_input_size(
        parser, help=f"{INPUT_SIZE_HELP}; for a model without a data set (default: the model's own)"
    )
    parser.add_argument("--seed", type=seed, default=None, help="split seed (default: the model's run's)")
    add_data_root(parser)
    parser.add_argument(
        "--cost-table",
        action=OutputFile,
        suffixes=(".json",),
        metavar="FILE.json",
        default=None,
        help="the measured-latency table (default $SEPCONV_CACHE_DIR/costs.json, else ~/.cache/sepconv/costs.json)",
    )
    parser.add_argument(
        "--sensitivity-table",
        action=OutputFile,
        suffixes=(".json",),
        metavar="FILE.json",
        default=None,
        help="the measured-loss table (default: sensitivity.json beside the cost table)",
    )
    parser.add_argument(
        "--out", dest="out_dir", required=True, metavar="DIR", help="output folder (new or empty)"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="clear --out first if it holds an earlier run"
    )
    parser.add_argument(
        "--html",
        action=OutputFile,
        suffixes=HTML_SUFFIXES,
        metavar="FILE.html",
        default=None,
        help="where to write the HTML report (default DIR/report.html)",
    )
    add_json(parser, help="print the result document (plan.json) and nothing else on stdout")
    parser.set_defaults(handler=run)


def config_from_args(args: argparse.Namespace) -> Any:
    """The :class:`~sepconv.optimize.run.OptimizeConfig` the flags describe (checked by the library)."""
    from sepconv.optimize.run import FINETUNE_LR, OptimizeConfig

    batch_size = args.batch_size
    input_size = None
    if args.input_size is not None:
        batch_size = args.input_size.batch_or("--batch-size", None, args.input_size.batch) or batch_size
        input_size = args.input_size.image(3)
    return OptimizeConfig(
        model=args.model,
        out_dir=args.out_dir,
        engine=args.engine,
        dataset=args.dataset,
        speedup=args.speedup,
        latency_ms=args.latency_ms,
        max_accuracy_drop=args.max_accuracy_drop,
        batch_size=batch_size,
        threads=args.threads,
        epochs=args.epochs,
        lr=FINETUNE_LR if args.lr is None else args.lr,
        rounds=args.rounds,
        input_size=input_size,
        seed=args.seed,
        data_root=args.data_root,
        cost_table=None if args.cost_table is None else str(args.cost_table),
        sensitivity_table=None if args.sensitivity_table is None else str(args.sensitivity_table),
        html=None if args.html is None else str(args.html),
        overwrite=args.overwrite,
    )


def run(args: argparse.Namespace) -> int:
    from sepconv.optimize.run import optimize_model

    config = config_from_args(args)
    try:
        with _progress_bars() as progress:
            document = optimize_model(config, progress=progress, show_progress=progress is not None)
    except KeyboardInterrupt as interrupt:
        if str(interrupt):  # fine-tuning says where its checkpoint is
            raise
        raise KeyboardInterrupt(
            "the cost and sensitivity tables keep every layer measured so far; the same command resumes "
            "from them"
        ) from None
    if args.json:
        print_json(document)
        return 0
    from sepconv.optimize.report import print_report

    print_report(document)
    return 0


@contextmanager
def _progress_bars() -> Iterator[Any]:
    """A ``progress(stage, description, completed, total)`` drawing one rich bar per stage on stderr;
    None when stderr is not a terminal (a log file gets no bars)."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.fields[stage]:<11}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=Console(stderr=True),
    ) as bars:
        tasks: dict[str, Any] = {}

        def progress(stage: str, description: str, completed: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bars.add_task(description, total=total or None, stage=stage)
            bars.update(tasks[stage], description=description, completed=completed, total=total or None)

        yield progress
