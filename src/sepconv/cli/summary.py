"""``sepconv summary MODEL``: per-layer shapes, parameters, MACs and receptive field of a model."""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from typing import Any

from sepconv.cli._common import (
    HTML_SUFFIXES,
    INPUT_SIZE_HELP,
    InputSize,
    OutputFile,
    add_input_size,
    add_json,
    add_model,
    model_channels,
    non_negative_int,
    positive_int,
    print_json,
    progress_bar,
    resolve_model,
)
from sepconv.deploy.defaults import ENGINE_NAMES
from sepconv.errors import UsageError

# A random input above this many elements (4 GiB of float32) is a typo, not a model to summarize.
MAX_INPUT_ELEMENTS = 2**30


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "summary",
        help="per-layer table: shapes, params, MACs, receptive field",
        description=(
            "Run MODEL once on a random input and report, per layer: input and output shapes, parameters, "
            "multiply-accumulates (MACs; FLOPs = 2 x MACs; convolutions, linear layers, matrix products), "
            "output memory and receptive field (size, effective stride and start, in input pixels). "
            "MODEL is a registered name (mobilenet_v2, torchvision:resnet50) or a sepconv checkpoint. "
            "The input defaults to the model's own: one image of its channels and registered size "
            "(1x28x28 for standard_cnn, 3x224x224 for the MobileNets, 3x299x299 for inception_v3)."
        ),
    )
    add_model(parser)
    add_input_size(parser, help=f"{INPUT_SIZE_HELP}; default: one image of the model's own size")
    parser.add_argument(
        "--depth", type=non_negative_int, default=None, help="fold submodules deeper than N levels"
    )
    output = parser.add_mutually_exclusive_group()
    add_json(output, help="print one JSON document (exact integers)")
    output.add_argument("--markdown", action="store_true", help="print a markdown table")
    output.add_argument("--csv", action="store_true", help="print CSV, one row per layer (exact integers)")
    parser.add_argument(
        "--html",
        action=OutputFile,
        suffixes=HTML_SUFFIXES,
        folder_must_exist=True,
        metavar="FILE.html",
        default=None,
        help="also write a self-contained HTML page (tables, a MACs chart)",
    )
    measuring = parser.add_argument_group(
        "measured cost per layer",
        "time each layer alone in an engine at its input in this summary, beside its bytes moved and "
        "arithmetic intensity (MACs per byte); measurements are cached in the cost table",
    )
    measuring.add_argument(
        "--measure",
        dest="engine",
        metavar="ENGINE",
        choices=ENGINE_NAMES,
        default=None,
        help=f"the engine to time each layer in: {', '.join(ENGINE_NAMES)}",
    )
    measuring.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        help="the batch each layer is timed on (default: N of --input-size, else 1)",
    )
    measuring.add_argument(
        "--threads", type=positive_int, default=None, help="threads of the engine (default: the usable cores)"
    )
    measuring.add_argument(
        "--cost-table",
        action=OutputFile,
        suffixes=(".json",),
        metavar="FILE.json",
        default=None,
        help="the cost table to read and extend (default: costs.json in $SEPCONV_CACHE_DIR, else "
        "$XDG_CACHE_HOME/sepconv, else ~/.cache/sepconv)",
    )
    parser.set_defaults(handler=run)


def input_shape(size: InputSize | None, model: Any) -> tuple[int, ...]:
    """The input shape, batch included, for ``--input-size`` (None: one image of the model's own size).

    N,C,H,W as given; C,H,W with batch 1; the deprecated H or H,W with batch 1 and the model's channels.
    """
    from sepconv.models import default_input_size

    if size is None:
        return (1, *default_input_size(model))
    shape = size.shape(model_channels(model))
    if math.prod(shape) > MAX_INPUT_ELEMENTS:
        raise UsageError(
            f"--input-size {size.text!r} has {math.prod(shape):,} elements, more than {MAX_INPUT_ELEMENTS:,}"
        )
    return shape


def _check_measuring_flags(args: argparse.Namespace) -> None:
    """The measuring flags need ``--measure``; the batch is set once (``--batch-size`` or N)."""
    if args.engine is None:
        flags = {"--batch-size": args.batch_size, "--threads": args.threads, "--cost-table": args.cost_table}
        given = [flag for flag, value in flags.items() if value is not None]
        if given:
            raise UsageError(f"{', '.join(given)} set how layers are timed: give --measure ENGINE too")
    elif args.input_size is not None:
        args.input_size.batch_or("--batch-size", args.batch_size, args.input_size.batch)


def run(args: argparse.Namespace) -> int:
    from sepconv.analysis import summarize
    from sepconv.analysis.profile import ModelInputError

    _check_measuring_flags(args)
    model = resolve_model(args.model)
    shape = input_shape(args.input_size, model)
    if args.batch_size is not None:
        shape = (args.batch_size, *shape[1:])
    if args.input_size is not None:  # summarize runs the model once at this size
        from sepconv.cli._memory import require_input_memory

        require_input_memory(args.input_size.text, model, shape)
    try:
        summary = summarize(model, shape, depth=args.depth)
    except ModelInputError as error:
        # The model cannot run at this shape: name the flag that chose it (or say it was the default).
        given = (
            f"--input-size {args.input_size.text}"
            if args.input_size is not None
            else "the default input size"
        )
        shape_text = "x".join(map(str, shape))
        raise UsageError(f"{args.model} cannot run at {given} ({shape_text}): {error}") from None
    if args.engine is not None:
        summary = _measure(model, summary, args)
    if args.html is not None:
        from sepconv.viz.pages import write_summary_html

        write_summary_html(summary, args.html)
    if args.json:
        print_json(summary.to_dict())
    elif args.markdown:
        sys.stdout.write(summary.to_markdown())
    elif args.csv:
        sys.stdout.write(summary.to_csv())
    elif sys.stdout.isatty():
        from rich.console import Console

        Console().print(summary.to_rich())
    else:
        print(summary)
    return 0


def _measure(model: Any, summary: Any, args: argparse.Namespace) -> Any:
    """``summary`` with each layer timed alone in ``--measure``'s engine (a progress bar on a terminal)."""
    from sepconv.deploy.engines import get_engine
    from sepconv.machine import usable_cpu_count
    from sepconv.optimize.costs import CostTable, measure_summary

    engine = get_engine(args.engine)
    with warnings.catch_warnings(record=True) as caught:  # a corrupt table: one line, then measured again
        warnings.simplefilter("always")
        table = CostTable(args.cost_table)
    for warning in caught:
        print(f"sepconv summary: warning: {' '.join(str(warning.message).split())}", file=sys.stderr)
    threads = args.threads if args.threads is not None else usable_cpu_count()
    if args.json or not sys.stderr.isatty():
        return measure_summary(model, summary, engine, threads=threads, table=table)
    with progress_bar() as update:
        return measure_summary(model, summary, engine, threads=threads, table=table, progress=update)
