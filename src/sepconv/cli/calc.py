"""``sepconv calc``: output size, parameters and MACs of one layer as standard, grouped and separable conv."""

from __future__ import annotations

import argparse
from typing import Any

from sepconv import arithmetic
from sepconv.cli._common import UsageError, integer, parse_int_list, positive_int, print_json

# The report lists every group count that divides both channel counts; a million channels is far beyond
# any real layer and still enumerates in a fraction of a second.
_MAX_CHANNELS = 2**20
_channels = integer(minimum=1, maximum=_MAX_CHANNELS)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "calc",
        help="cost of one convolution: standard vs grouped vs depthwise-separable",
        description=(
            "Output size, parameters and multiply-accumulates (MACs; FLOPs = 2 x MACs) of one 2-D convolution "
            "done as a standard, a grouped (every valid group count) and a depthwise-separable convolution."
        ),
    )
    parser.add_argument("--in-channels", type=_channels, default=32, help="input channels (default 32)")
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
    parser.add_argument("--input-size", default="56", help="H or H,W of the input (default 56)")
    parser.add_argument("--no-bias", action="store_true", help="count no bias parameters")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.set_defaults(handler=run)


def _padding(text: str) -> str:
    """``--padding``: 'same', 'valid' or a non-negative integer (kept as text, as ``calculate`` takes it)."""
    if text in ("same", "valid"):
        return text
    try:
        if int(text) >= 0:
            return str(int(text))
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"must be a non-negative integer, 'valid' or 'same', got {text!r}")


def _output_axis(size: int, kernel_size: int, stride: int, padding: str, dilation: int) -> int:
    if padding == "same":
        return -(-size // stride)
    pad = 0 if padding == "valid" else int(padding)
    return arithmetic.conv_output_size(size, kernel_size, stride, pad, dilation)


def calculate(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int,
    padding: str,
    dilation: int,
    depth_multiplier: int,
    input_size: tuple[int, int],
    bias: bool,
) -> dict[str, Any]:
    """The report ``sepconv calc`` prints, as a dictionary of exact integers."""
    for name, value in (("kernel_size", kernel_size), ("stride", stride), ("dilation", dilation)):
        arithmetic.check_positive(name, value)
    arithmetic.check_positive("depth_multiplier", depth_multiplier)
    if padding not in ("same", "valid"):
        try:
            arithmetic.check_non_negative("padding", int(padding))
        except ValueError:
            raise ValueError(f"padding must be an int >= 0, 'valid' or 'same'; got {padding!r}") from None
    output_size = tuple(_output_axis(size, kernel_size, stride, padding, dilation) for size in input_size)
    rows: list[dict[str, Any]] = []
    for groups in arithmetic.valid_groups(in_channels, out_channels):
        kind = "standard" if groups == 1 else "grouped"
        if groups == in_channels:
            kind = "depthwise" if groups == out_channels else f"depthwise x{out_channels // in_channels}"
        rows.append(
            {
                "kind": kind,
                "groups": groups,
                "params": arithmetic.conv_params(in_channels, out_channels, kernel_size, groups, bias),
                "macs": arithmetic.conv_macs(in_channels, out_channels, kernel_size, output_size, groups),
            }
        )
    rows.append(
        {
            "kind": "separable",
            "groups": None,
            "params": arithmetic.separable_params(
                in_channels, out_channels, kernel_size, depth_multiplier, bias
            ),
            "macs": arithmetic.separable_macs(
                in_channels, out_channels, kernel_size, output_size, depth_multiplier
            ),
        }
    )
    standard = rows[0]
    for row in rows:
        row["params_ratio"] = row["params"] / standard["params"]
        row["macs_ratio"] = row["macs"] / standard["macs"]
    return {
        "in_channels": in_channels,
        "out_channels": out_channels,
        "kernel_size": kernel_size,
        "stride": stride,
        "padding": padding,
        "dilation": dilation,
        "depth_multiplier": depth_multiplier,
        "input_size": list(input_size),
        "output_size": list(output_size),
        "rows": rows,
        "separable_ratio_formula": arithmetic.separable_cost_ratio(
            out_channels, kernel_size, depth_multiplier
        ),
    }


def run(args: argparse.Namespace) -> int:
    input_size = parse_int_list("--input-size", args.input_size)
    if len(input_size) == 1:
        input_size = input_size * 2
    if len(input_size) != 2:
        raise UsageError(f"--input-size must be H or H,W, got {args.input_size!r}")
    _check_kernel_fits(args, input_size)
    report = calculate(
        args.in_channels,
        args.out_channels,
        args.kernel_size,
        args.stride,
        args.padding,
        args.dilation,
        args.depth_multiplier,
        input_size,
        not args.no_bias,
    )
    if args.json:
        print_json(report)
    else:
        _print_table(report)
    return 0


def _check_kernel_fits(args: argparse.Namespace, input_size: tuple[int, ...]) -> None:
    """With 'valid' or numeric padding, the dilated kernel must fit the padded input: say so with the flags."""
    if args.padding == "same":
        return
    pad = 0 if args.padding == "valid" else int(args.padding)
    extent = arithmetic.effective_kernel_size(args.kernel_size, args.dilation)
    smallest = min(input_size)
    if extent > smallest + 2 * pad:
        raise UsageError(
            f"--kernel-size {args.kernel_size} with --dilation {args.dilation} spans {extent} pixels, more than "
            f"--input-size {args.input_size} padded by --padding {args.padding} ({smallest} + 2*{pad}); "
            "use a smaller kernel or dilation, more padding, or --padding same"
        )


def _print_table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    height, width = report["input_size"]
    out_height, out_width = report["output_size"]
    title = (
        f"{report['in_channels']} -> {report['out_channels']} channels, {report['kernel_size']}x"
        f"{report['kernel_size']} kernel, stride {report['stride']}, padding {report['padding']}, "
        f"dilation {report['dilation']}: {height}x{width} -> {out_height}x{out_width}"
    )
    table = Table(title=title)
    for column in ("kind", "groups", "params", "MACs", "params vs standard", "MACs vs standard"):
        table.add_column(column, justify="left" if column == "kind" else "right")
    for row in report["rows"]:
        table.add_row(
            row["kind"],
            "-" if row["groups"] is None else str(row["groups"]),
            f"{row['params']:,}",
            f"{row['macs']:,}",
            f"{row['params_ratio']:.4f}",
            f"{row['macs_ratio']:.4f}",
        )
    console = Console()
    console.print(table)
    console.print(formula_line(report))


def formula_line(report: dict[str, Any]) -> str:
    """The separable / standard MACs ratio as a formula, with the report's depth multiplier in it.

    >>> report = calculate(16, 64, 3, 1, "same", 1, 2, (8, 8), True)
    >>> formula_line(report).split(" (depth")[0]
    'separable / standard MACs = m x (1/out_channels + 1/k^2) = 2 x (1/64 + 1/9) = 0.2535'
    """
    multiplier = report["depth_multiplier"]
    k_squared = report["kernel_size"] ** 2
    if multiplier == 1:
        formula = f"1/out_channels + 1/k^2 = 1/{report['out_channels']} + 1/{k_squared}"
    else:
        formula = (
            f"m x (1/out_channels + 1/k^2) = {multiplier} x (1/{report['out_channels']} + 1/{k_squared})"
        )
    return (
        f"separable / standard MACs = {formula} = {report['separable_ratio_formula']:.4f} (depth multiplier m = {multiplier}, bias not "
        "counted); MACs per image, FLOPs = 2 x MACs"
    )
