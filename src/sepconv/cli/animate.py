"""``sepconv animate``: an animated GIF of a convolution sliding over its input (a thin shell over
:mod:`sepconv.viz.animate`); ``--layer MODEL:NAME`` takes the geometry of a model's layer."""

from __future__ import annotations

import argparse
import difflib
import sys
from typing import Any

from sepconv.cli._common import (
    INPUT_SIZE_HELP,
    OutputFile,
    UsageError,
    add_input_size,
    add_json,
    check_output_file,
    finite_float,
    non_negative_int,
    parse_int_list,
    positive_int,
    print_json,
    seed,
)

# Channels drawn from a real layer: enough to show the grouping, few enough to read (and to render).
_MAX_LAYER_GROUPS = 3
_MAX_LAYER_CHANNELS_PER_GROUP = 2
_DEFAULT_OUT = "conv.gif"
# The geometry flags --layer replaces (their defaults are None so that a given one can be refused).
_DEFAULT_FPS = 2.0
_GEOMETRY_FLAGS = (
    "kernel_size",
    "stride",
    "padding",
    "dilation",
    "groups",
    "in_channels",
    "out_channels",
    "depth_multiplier",
    "output_padding",
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "animate",
        help="animated GIF of a convolution: kernel window, padding, stride, dilation, groups",
        description=(
            "Draw a 2-D convolution frame by frame: the kernel window on the padded (or, transposed, "
            "zero-inserted) input and the output cell it writes. Every value comes from F.conv2d / "
            "F.conv_transpose2d on the drawn tensors (random small integers from --seed)."
        ),
    )
    add_input_size(parser, help=f"{INPUT_SIZE_HELP}; C is --in-channels (default 1,5,5)")
    parser.add_argument("--kernel-size", default=None, help="K or KH,KW (default 3)")
    parser.add_argument("--stride", default=None, help="S or SH,SW (default 1)")
    parser.add_argument(
        "--padding", type=_padding, default=None, help="int >= 0, 'valid' or 'same' (default 0)"
    )
    parser.add_argument("--dilation", default=None, help="D or DH,DW (default 1)")
    parser.add_argument("--in-channels", type=positive_int, default=None, help="default 1")
    parser.add_argument("--out-channels", type=positive_int, default=None, help="default 1")
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument("--groups", type=positive_int, default=None, help="grouped convolution (default 1)")
    modes.add_argument("--depthwise", action="store_true", help="groups = in-channels")
    modes.add_argument("--separable", action="store_true", help="depthwise step, then pointwise step")
    parser.add_argument(
        "--depth-multiplier", type=positive_int, default=None, help="for --depthwise/--separable (default 1)"
    )
    parser.add_argument(
        "--transposed", action="store_true", help="transposed convolution (zero-insertion view)"
    )
    parser.add_argument(
        "--output-padding", type=non_negative_int, default=None, help="for --transposed (default 0)"
    )
    parser.add_argument(
        "--layer",
        metavar="MODEL:NAME",
        help="geometry of a model's layer, e.g. mobilenet_v2:features.2.conv.1.0",
    )
    parser.add_argument("--seed", type=seed, default=0, help="seed of the random values (default 0)")
    parser.add_argument(
        "--out",
        action=OutputFile,
        suffixes=(".gif", ".mp4"),
        help=f".gif, or .mp4 (needs ffmpeg on PATH or pip install 'sepconv[video]'), to write (default {_DEFAULT_OUT}; none with --json)",
    )
    parser.add_argument(
        "--fps", type=finite_float(minimum=0, min_inclusive=False), default=_DEFAULT_FPS, help="default 2"
    )
    add_json(parser, help="print the frames and output as one JSON document")
    parser.set_defaults(handler=run)


def _padding(text: str) -> str | int:
    if text in ("same", "valid"):
        return text
    try:
        if int(text) >= 0:
            return int(text)
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"must be a non-negative integer, 'valid' or 'same', got {text!r}")


def _pair_flag(flag: str, text: str | None, default: int) -> int | tuple[int, int]:
    if text is None:
        return default
    values = parse_int_list(flag, text)
    if len(values) == 1:
        return values[0]
    if len(values) == 2:
        return values[0], values[1]
    raise UsageError(f"{flag} must be one or two integers, got {text!r}")


def _spatial(args: argparse.Namespace) -> tuple[int, int]:
    """(H, W) of the drawn input: --input-size's, else 5x5."""
    return (5, 5) if args.input_size is None else args.input_size.flat("animate draws one input")


def _in_channels(args: argparse.Namespace) -> int | None:
    """--in-channels, or C of --input-size (the same number when both are given)."""
    if args.input_size is None:
        return args.in_channels
    return args.input_size.channels_or("--in-channels", args.in_channels)


def geometry_from_flags(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of :func:`sepconv.viz.animate.plan_animation` from the command's flags."""
    return {
        "in_channels": _in_channels(args) or 1,
        "out_channels": args.out_channels or 1,
        "input_size": _spatial(args),
        "kernel_size": _pair_flag("--kernel-size", args.kernel_size, 3),
        "stride": _pair_flag("--stride", args.stride, 1),
        "padding": 0 if args.padding is None else args.padding,
        "dilation": _pair_flag("--dilation", args.dilation, 1),
        "groups": args.groups or 1,
        "depthwise": args.depthwise,
        "depth_multiplier": args.depth_multiplier or 1,
        "separable": args.separable,
        "transposed": args.transposed,
        "output_padding": args.output_padding or 0,
        "seed": args.seed,
    }


def geometry_from_layer(
    spec: str, input_size: int | tuple[int, int], channels: int | None = None
) -> dict[str, Any]:
    """Geometry of the layer ``MODEL:QUALIFIED.NAME``, its channels capped for drawing.

    Up to three groups of up to two input and two output channels each keep the layer's structure
    (dense, grouped or depthwise) while the picture stays readable.
    """
    from torch import nn

    from sepconv.cli._common import resolve_model
    from sepconv.layers.separable import SeparableConv2d

    model_spec, separator, name = spec.rpartition(":")
    if not separator or not model_spec or not name:
        raise UsageError(f"--layer must be MODEL:QUALIFIED.NAME, got {spec!r}")
    model = resolve_model(model_spec)
    modules = dict(model.named_modules())
    drawable = (nn.Conv2d, nn.ConvTranspose2d, SeparableConv2d)
    if name not in modules or not isinstance(modules[name], drawable):
        candidates = [key for key, module in modules.items() if isinstance(module, drawable)]
        close = difflib.get_close_matches(name, candidates, n=5, cutoff=0.5)
        what = "no layer" if name not in modules else f"{type(modules[name]).__name__} is not a convolution:"
        if close:
            hint = f"; close names: {', '.join(close)}"
        elif candidates:
            hint = f"; it has {len(candidates)} convolutions, e.g. {candidates[0]}"
        else:
            hint = "; it has no convolution"
        raise UsageError(f"{what} {name!r} in {model_spec}{hint}")
    layer = modules[name]
    separable = isinstance(layer, SeparableConv2d)
    conv = layer.depthwise if separable else layer
    if channels is not None and channels != conv.in_channels:
        raise UsageError(
            f"--input-size gives {channels} channels, but layer {name!r} of {model_spec} takes "
            f"{conv.in_channels}; give C,H,W with C = {conv.in_channels}"
        )
    padding = getattr(conv, "padding_spec", conv.padding)  # sepconv's layers keep 'same' there
    groups = conv.groups
    in_per_group, out_per_group = conv.in_channels // groups, conv.out_channels // groups
    shown_groups = min(groups, _MAX_LAYER_GROUPS)
    geometry: dict[str, Any] = {
        "input_size": input_size,
        "kernel_size": tuple(conv.kernel_size),
        "stride": tuple(conv.stride),
        "padding": padding if isinstance(padding, str) else tuple(padding),
        "dilation": tuple(conv.dilation),
    }
    if separable:
        return geometry | {
            "separable": True,
            "in_channels": shown_groups,
            "depth_multiplier": min(layer.depth_multiplier, _MAX_LAYER_CHANNELS_PER_GROUP),
            "out_channels": min(layer.out_channels, _MAX_LAYER_CHANNELS_PER_GROUP),
        }
    if isinstance(conv, nn.ConvTranspose2d):
        # A transposed weight is (in, out / groups, ...): channel counts swap their roles.
        geometry |= {"transposed": True, "output_padding": tuple(conv.output_padding)}
    return geometry | {
        "groups": shown_groups,
        "in_channels": shown_groups * min(in_per_group, _MAX_LAYER_CHANNELS_PER_GROUP),
        "out_channels": shown_groups * min(out_per_group, _MAX_LAYER_CHANNELS_PER_GROUP),
    }


def run(args: argparse.Namespace) -> int:
    from sepconv.viz.animate import plan_animation, write_animation

    out = args.out if args.out is not None or args.json else _DEFAULT_OUT
    if out is not None:
        out = str(check_output_file("--out", out, (".gif", ".mp4")))  # the default, too, before any work
    if args.layer:
        given = [f"--{flag.replace('_', '-')}" for flag in _GEOMETRY_FLAGS if getattr(args, flag) is not None]
        given += [
            flag for flag, on in (("--depthwise", args.depthwise), ("--separable", args.separable)) if on
        ]
        if given or args.transposed:
            raise UsageError(f"--layer sets the geometry; drop {', '.join(given) or '--transposed'}")
        channels = None if args.input_size is None else args.input_size.channels
        geometry = geometry_from_layer(args.layer, _spatial(args), channels)
        geometry["seed"] = args.seed
    else:
        _refuse_ignored_flags(args)
        geometry = geometry_from_flags(args)
    animation = plan_animation(**geometry)  # a MemoryLimitError names its parameter, sepconv its flag
    if out is not None:
        _write_with_progress(write_animation, animation, out, args.fps)
    if args.json:
        print_json({"geometry": _jsonable(geometry), "out": out, **animation.to_dict()})
    else:
        print(f"wrote {out}: {len(animation.frames)} frames")
    return 0


def _refuse_ignored_flags(args: argparse.Namespace) -> None:
    """A flag that this combination of modes would silently ignore is a mistake: say which and why."""
    if args.depth_multiplier is not None and not (args.depthwise or args.separable):
        raise UsageError(
            f"--depth-multiplier {args.depth_multiplier} applies to --depthwise or --separable only; "
            "add one of them or drop it"
        )
    if args.output_padding is not None and not args.transposed:
        raise UsageError(
            f"--output-padding {args.output_padding} applies to --transposed only; add it or drop it"
        )
    if args.depthwise and args.out_channels is not None:
        raise UsageError(
            f"--out-channels {args.out_channels} has no effect with --depthwise (out-channels = in-channels x "
            "--depth-multiplier); drop it, or use --separable for a pointwise step to that many channels"
        )
    if args.json and args.out is None and args.fps != _DEFAULT_FPS:
        raise UsageError(f"--fps {args.fps:g} has no effect with --json and no --out (nothing is written)")


def _write_with_progress(write: Any, animation: Any, out: str, fps: float) -> None:
    if not sys.stderr.isatty():
        write(animation, out, fps=fps)
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn

    with Progress(
        TextColumn("drawing frames"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task("frames", total=len(animation.frames))
        write(
            animation,
            out,
            fps=fps,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )


def _jsonable(geometry: dict[str, Any]) -> dict[str, Any]:
    return {key: list(value) if isinstance(value, tuple) else value for key, value in geometry.items()}
