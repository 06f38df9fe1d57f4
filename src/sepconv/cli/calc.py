"""``sepconv calc``: output size, parameters and MACs of one layer as standard, grouped and separable conv."""

from __future__ import annotations

import argparse
import sys

from sepconv import arithmetic
from sepconv.cli._common import (
    INPUT_SIZE_HELP,
    InputSize,
    UsageError,
    add_input_size,
    add_json,
    integer,
    positive_int,
    print_json,
)

# The report lists every group count that divides both channel counts; a million channels is far beyond
# any real layer and still enumerates in a fraction of a second.
_MAX_CHANNELS = 2**20
_channels = integer(minimum=1, maximum=_MAX_CHANNELS)
_IN_CHANNELS = 32  # the default layer: 32 -> 64 channels at 56x56, a MobileNet's second stage
_SIZE = 56


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "calc",
        help="cost of one convolution: standard vs grouped vs depthwise-separable",
        description=(
            "Output size, parameters and multiply-accumulates (MACs; FLOPs = 2 x MACs) of one 2-D convolution "
            "done as a standard, a grouped (every valid group count) and a depthwise-separable convolution."
        ),
    )
    parser.add_argument(
        "--in-channels",
        type=_channels,
        default=None,
        help=f"input channels (default: C of --input-size, else {_IN_CHANNELS})",
    )
    parser.add_argument("--out-channels", type=_channels, default=64, help="output channels (default 64)")
    parser.add_argument("--kernel-size", type=positive_int, default=3, help="square kernel size (default 3)")
    parser.add_argument("--stride", type=positive_int, default=1)
    parser.add_argument(
        "--padding",
        type=_padding,
        default="same",
        help="int >= 0, 'valid' or 'same' (default 'same', TF style)",
    )
    parser.add_argument("--dilation", type=positive_int, default=1)
    parser.add_argument(
        "--depth-multiplier", type=positive_int, default=1, help="depthwise filters per input channel"
    )
    add_input_size(
        parser,
        help=f"{INPUT_SIZE_HELP}; default {_IN_CHANNELS},{_SIZE},{_SIZE}, or --in-channels,{_SIZE},{_SIZE}",
    )
    parser.add_argument("--no-bias", action="store_true", help="count no bias parameters")
    add_json(parser)
    parser.set_defaults(handler=run)


def _padding(text: str) -> int | str:
    """``--padding``: 'same', 'valid' or a non-negative integer."""
    if text in ("same", "valid"):
        return text
    try:
        if int(text) >= 0:
            return int(text)
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"must be a non-negative integer, 'valid' or 'same', got {text!r}")


def run(args: argparse.Namespace) -> int:
    in_channels, input_size = args.in_channels, (_SIZE, _SIZE)
    if args.input_size is not None:
        input_size = args.input_size.flat("calc counts one image")
        in_channels = args.input_size.channels_or("--in-channels", in_channels)
        _check_channels_in_range(args.input_size, in_channels)
    _check_kernel_fits(args, input_size)
    costs = arithmetic.convolution_costs(
        in_channels or _IN_CHANNELS,
        args.out_channels,
        args.kernel_size,
        input_size,
        stride=args.stride,
        padding=args.padding,
        dilation=args.dilation,
        depth_multiplier=args.depth_multiplier,
        bias=not args.no_bias,
    )
    if args.json:
        print_json(costs.to_dict())
    else:
        _print_table(costs)
    return 0


def _check_channels_in_range(size: InputSize, channels: int | None) -> None:
    """C of --input-size is --in-channels: the same bound (every group count is listed)."""
    if channels is not None and channels > _MAX_CHANNELS:
        raise UsageError(f"--input-size {size.text}: C must be at most {_MAX_CHANNELS:,} (as --in-channels)")


def _check_kernel_fits(args: argparse.Namespace, input_size: tuple[int, ...]) -> None:
    """With 'valid' or numeric padding, the dilated kernel must fit the padded input: say so with the flags."""
    if args.padding == "same":
        return
    pad = 0 if args.padding == "valid" else args.padding
    extent = arithmetic.effective_kernel_size(args.kernel_size, args.dilation)
    smallest = min(input_size)
    if extent > smallest + 2 * pad:
        raise UsageError(
            f"--kernel-size {args.kernel_size} with --dilation {args.dilation} spans {extent} pixels, more than "
            f"--input-size {args.input_size.text if args.input_size else _SIZE} padded by --padding {args.padding} ({smallest} + 2*{pad}); "
            "use a smaller kernel or dilation, more padding, or --padding same"
        )


def _print_table(costs: arithmetic.ConvolutionCosts) -> None:
    """The table with rich on a terminal; plain text in a pipe (as summary, bench and compare print),
    which also keeps rich's import out of a scripted ``sepconv calc``."""
    from sepconv.formatting import Table, format_count, format_ratio

    height, width = costs.input_size
    out_height, out_width = costs.output_size
    title = (
        f"{costs.in_channels} -> {costs.out_channels} channels, {costs.kernel_size}x"
        f"{costs.kernel_size} kernel, stride {costs.stride}, padding {costs.padding}, "
        f"dilation {costs.dilation}: {height}x{width} -> {out_height}x{out_width}"
    )
    rows = [
        [
            row.kind,
            "-" if row.groups is None else str(row.groups),
            format_count(row.params),
            format_count(row.macs),
            format_ratio(row.params_ratio),
            format_ratio(row.macs_ratio),
        ]
        for row in costs.rows
    ]
    headers = ["kind", "groups", "params", "MACs", "params vs standard", "MACs vs standard"]
    table = Table(headers, rows, title=title)
    if not sys.stdout.isatty():
        print(table.to_text())
        print(formula_line(costs))
        return
    from rich.console import Console

    console = Console()
    console.print(table.to_rich())
    console.print(formula_line(costs))


def formula_line(costs: arithmetic.ConvolutionCosts) -> str:
    """The separable / standard MACs ratio as a formula, with the depth multiplier of ``costs`` in it.

    >>> costs = arithmetic.convolution_costs(16, 64, 3, 8, depth_multiplier=2)
    >>> formula_line(costs).split(" (depth")[0]
    'separable / standard MACs = m x (1/out_channels + 1/k^2) = 2 x (1/64 + 1/9) = 0.2535'
    """
    multiplier = costs.depth_multiplier
    k_squared = costs.kernel_size**2
    if multiplier == 1:
        formula = f"1/out_channels + 1/k^2 = 1/{costs.out_channels} + 1/{k_squared}"
    else:
        formula = f"m x (1/out_channels + 1/k^2) = {multiplier} x (1/{costs.out_channels} + 1/{k_squared})"
    return (
        f"separable / standard MACs = {formula} = {costs.separable_ratio_formula:.4f} (depth multiplier m = {multiplier}, bias not "
        "counted); MACs per image, FLOPs = 2 x MACs"
    )
