"""``sepconv diagram``: a picture of which input channels each output channel of a convolution block reads."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sepconv.cli._common import (
    DeprecatedSpelling,
    OutputFile,
    add_json,
    finite_float,
    integer,
    positive_int,
    print_json,
)
from sepconv.viz.diagram import DIAGRAM_KINDS  # torch- and matplotlib-free, cheap to import

# A diagram draws at most 32 boxes per column whatever the count; this bound only keeps the exact
# counts (and the group checks) to sizes that any real layer stays far below.
_channels = integer(minimum=1, maximum=2**16)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "diagram",
        help="draw the channel connectivity of a convolution block, with parameter and MAC counts",
        description=(
            "Draw input channels on the left, output channels on the right (hidden channels between for "
            "separable, inverted-residual and shuffle), each group as a coloured block, and annotate every "
            "step with its parameters and multiply-accumulates (MACs) at the given size, stride 1, no bias."
        ),
    )
    parser.add_argument("kind", choices=DIAGRAM_KINDS, help="the block to draw")
    parser.add_argument("--in-channels", type=_channels, default=8, help="input channels (default 8)")
    parser.add_argument("--out-channels", type=_channels, default=16, help="output channels (default 16)")
    parser.add_argument(
        "--groups", type=positive_int, help="groups of grouped, pointwise and shuffle (default 2, 1, 2)"
    )
    parser.add_argument(
        "--kernel-size", type=positive_int, help="square kernel size (default 3; pointwise 1)"
    )
    parser.add_argument(
        "--expand-ratio",
        type=finite_float(minimum=0, min_inclusive=False),
        help="hidden channels / in-channels of inverted-residual (default 6) and shuffle (default 0.25)",
    )
    parser.add_argument(
        "--output-size", type=positive_int, default=56, help="output height = width for the MACs (default 56)"
    )
    # The old spelling: it was always the output's size, which every other command's --input-size is not.
    parser.add_argument(
        "--input-size",
        dest="output_size",
        type=positive_int,
        action=_DeprecatedOutputSize,
        metavar="SIZE",
        help="deprecated spelling of --output-size",
    )
    parser.add_argument(
        "--out",
        required=True,
        action=OutputFile,
        suffixes=(".png", ".svg"),
        help="the picture to write: FILE.png or FILE.svg",
    )
    add_json(parser, help="print the counts as one JSON document")
    parser.set_defaults(handler=run)


class _DeprecatedOutputSize(DeprecatedSpelling):
    """``--input-size`` of diagram: stores the output size, with a one-line note on stderr."""

    def note(self, values: Any) -> str:
        return f"--input-size is deprecated here; it sets the output size: give --output-size {values}"


def run(args: argparse.Namespace) -> int:
    from sepconv.formatting import format_count
    from sepconv.viz.diagram import diagram
    from sepconv.viz.style import save_figure

    out = Path(args.out)  # its suffix and kind were checked when the flags were parsed
    figure, plan = diagram(
        args.kind,
        in_channels=args.in_channels,
        out_channels=args.out_channels,
        groups=args.groups,
        kernel_size=args.kernel_size,
        expand_ratio=args.expand_ratio,
        input_size=args.output_size,
    )
    save_figure(figure, out)
    if args.json:
        print_json({**plan.to_dict(), "path": str(out)})
        return 0
    width = max(len(step.name) for step in plan.steps)
    for step in plan.steps:
        print(
            f"{step.name:<{width}}  {step.in_channels:>5} -> {step.out_channels:<5} groups {step.groups:<5} "
            f"params {format_count(step.params):>12}  MACs {format_count(step.macs):>15}"
        )
    print(
        f"total params {format_count(plan.total_params)}, MACs {format_count(plan.total_macs)}; "
        f"{plan.params_ratio:.3f} x the params and {plan.macs_ratio:.3f} x the MACs of a standard "
        f"{plan.kernel_size}x{plan.kernel_size} convolution"
    )
    print(f"wrote {out}")
    return 0
