"""``sepconv summary MODEL``: per-layer shapes, parameters, MACs and receptive field of a model."""

from __future__ import annotations

import argparse
import sys

from sepconv.cli._common import parse_int_list, print_json, resolve_model
from sepconv.cli.main import UsageError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "summary",
        help="per-layer table: shapes, params, MACs, receptive field",
        description=(
            "Run MODEL once on a random input and report, per layer: input and output shapes, parameters, "
            "multiply-accumulates (MACs; FLOPs = 2 x MACs; convolutions, linear layers, matrix products), "
            "output memory and receptive field (size, effective stride and start, in input pixels). "
            "MODEL is a registered name (mobilenet_v2, torchvision:resnet50) or a sepconv checkpoint."
        ),
    )
    parser.add_argument("model", metavar="MODEL", help="registered model name or checkpoint file")
    parser.add_argument(
        "--input-size",
        default="1,3,224,224",
        help="input shape, batch included, e.g. 1,3,224,224 (default); H or H,W means batch 1, 3 channels",
    )
    parser.add_argument("--depth", type=int, default=None, help="fold submodules deeper than N levels")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print one JSON document (exact integers)")
    output.add_argument("--markdown", action="store_true", help="print a markdown table")
    output.add_argument("--csv", action="store_true", help="print CSV, one row per layer (exact integers)")
    parser.set_defaults(handler=run)


def input_shape(text: str) -> tuple[int, ...]:
    """'1,3,224,224' as is; '224' or '224,160' as (1, 3, H, W)."""
    sizes = parse_int_list("--input-size", text)
    if len(sizes) <= 2:
        return (1, 3, sizes[0], sizes[-1])
    return sizes


def run(args: argparse.Namespace) -> int:
    from sepconv.analysis import summarize

    if args.depth is not None and args.depth < 0:
        raise UsageError(f"--depth must be >= 0, got {args.depth}")
    shape = input_shape(args.input_size)
    model = resolve_model(args.model)
    summary = summarize(model, shape, depth=args.depth)
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
