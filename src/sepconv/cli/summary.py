"""``sepconv summary MODEL``: per-layer shapes, parameters, MACs and receptive field of a model."""

from __future__ import annotations

import argparse
import math
import sys
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
    print_json,
    resolve_model,
)
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


def run(args: argparse.Namespace) -> int:
    from sepconv.analysis import summarize
    from sepconv.analysis.profile import ModelInputError

    model = resolve_model(args.model)
    shape = input_shape(args.input_size, model)
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
