"""``sepconv convert MODEL --out FILE``: make a model's standard convolutions depthwise-separable, keeping its weights."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any

from sepconv.cli._common import (
    INPUT_SIZE_HELP,
    OutputFile,
    UsageError,
    add_data_root,
    add_input_size,
    add_json,
    add_model,
    finite_float,
    model_image_size,
    positive_int,
    print_json,
    resolve_model,
)

_EPILOG = """\
Each eligible nn.Conv2d (groups 1, kernel wider than 1x1, chosen by --include/--exclude) becomes a depthwise
k x k convolution with r filters per input channel followed by a pointwise 1x1 one, initialised from the
SVD of the original filters: exact when r >= min(out_channels, k*k), the best rank-r approximation below.
A larger r only adds parameters: above every layer's exact rank it is refused, above some layers' it is
capped there (with a warning). auto picks per layer the smallest r within --max-error (weight error)
and/or --max-output-error (the layer's output error on the calibration images, tried at every r up to
16, then 32, 64, ...: what the layer loses on real data, which the weight error says little about).
auto leaves a layer as it was (with a warning) when its separable form at the rank it needs has more parameters than the original,
so it never makes a model larger.
The report gives, per layer, r, parameters and MACs before and after, the relative weight error and the
relative output error on calibration images. Fine-tune the result with
  sepconv train --init-from FILE.safetensors --dataset ...
"""


# The parameters that to_separable's warnings and report name; the command prints their flags.
_NAMED_PARAMETERS = ("depth_multiplier", "max_relative_error", "max_output_error")


def depth_multiplier(text: str) -> int | str:
    """An argparse ``type``: a positive integer, or 'auto'."""
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1 or str(value) != text.strip().lstrip("+"):
        raise argparse.ArgumentTypeError(f"must be a positive integer or 'auto', got {text!r}")
    return value


depth_multiplier.__name__ = "a positive integer or 'auto'"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="turn a model's standard convolutions into depthwise-separable ones (SVD), with a report",
        description=(
            "Convert MODEL (a registered name or a sepconv model file / checkpoint) with "
            "sepconv.convert.to_separable and write the result as a sepconv model file (safetensors; "
            "sepconv.load_model rebuilds it)."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model(parser)
    parser.add_argument(
        "--out",
        required=True,
        action=OutputFile,
        suffixes=(".safetensors",),
        folder_must_exist=True,
        metavar="FILE.safetensors",
        help="where to write the converted model",
    )
    parser.add_argument(
        "--depth-multiplier",
        type=depth_multiplier,
        default=1,
        metavar="N|auto",
        help=(
            "depthwise filters per input channel (the rank r); auto: per layer, the smallest r within "
            "--max-error and/or --max-output-error (default 1)"
        ),
    )
    parser.add_argument(
        "--max-error",
        dest="max_relative_error",  # to_separable's name, so that its errors name this flag
        type=finite_float(minimum=0, maximum=1),
        default=None,
        metavar="E",
        help="with --depth-multiplier auto: the largest relative weight error a layer may keep (e.g. 0.1)",
    )
    parser.add_argument(
        "--max-output-error",
        dest="max_output_error",
        type=finite_float(minimum=0, maximum=1),
        default=None,
        metavar="E",
        help=(
            "with --depth-multiplier auto: the largest relative output error a layer may have on the "
            "calibration images (e.g. 0.1); needs --calibration other than none"
        ),
    )
    parser.add_argument(
        "--include",
        action="append",
        default=None,
        metavar="PATTERN",
        help="convert only layers matching this glob; repeatable",
    )
    parser.add_argument(
        "--exclude",
        action="append",
        default=None,
        metavar="PATTERN",
        help="leave layers matching this glob (e.g. 'features.0.*'); repeatable",
    )
    parser.add_argument(
        "--init",
        choices=("svd", "random"),
        default="svd",
        help="svd keeps the weights (default); random starts afresh",
    )
    parser.add_argument(
        "--min-kernel-size",
        type=positive_int,
        default=2,
        metavar="K",
        help="convert kernels at least K wide (default 2)",
    )
    add_input_size(
        parser, help=f"{INPUT_SIZE_HELP}; the image MACs are counted for; default: the model's own"
    )
    parser.add_argument(
        "--calibration",
        default="auto",
        metavar="DATASET|auto|none",
        help=(
            "images for the output errors: a data set name; auto (default): the one the model was trained on "
            "(config.json beside a model file), else random normal images; none: skip output errors"
        ),
    )
    parser.add_argument(
        "--samples", type=positive_int, default=32, metavar="N", help="calibration images (default 32)"
    )
    parser.add_argument(
        "--recalibrate-bn",
        type=positive_int,
        default=None,
        metavar="N",
        help=(
            "re-estimate the BatchNorm statistics of the converted model on N training images of the data set "
            "(--calibration's, else the one the model was trained on), for a model used without fine-tuning "
            "(fine-tuning re-estimates them anyway)"
        ),
    )
    add_data_root(parser)
    add_json(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from sepconv.cli.main import flag_words
    from sepconv.convert import to_separable
    from sepconv.convert.replay import save_model
    from sepconv.models import default_input_size

    out = Path(args.out)  # its suffix, kind and folder were checked when the flags were parsed
    if args.depth_multiplier == "auto" and args.max_relative_error is None and args.max_output_error is None:
        raise UsageError(
            "--depth-multiplier auto needs --max-error E (the largest relative weight error, e.g. 0.1) or "
            "--max-output-error E (the largest relative output error on the calibration images)"
        )
    for flag, value in (
        ("--max-error", args.max_relative_error),
        ("--max-output-error", args.max_output_error),
    ):
        if value is not None and args.depth_multiplier != "auto":
            raise UsageError(
                f"{flag} applies with --depth-multiplier auto only, got --depth-multiplier {args.depth_multiplier}"
            )
    if args.max_output_error is not None and args.calibration == "none":
        raise UsageError(
            "--max-output-error measures each layer on calibration images: give --calibration auto or a data "
            "set, not none"
        )
    if args.input_size is not None:
        args.input_size.require_one_image("convert counts MACs per image")
    model = resolve_model(args.model)
    size = model_image_size(args.input_size, model)
    if args.recalibrate_bn is not None and _data_set_name(args) is None:
        raise UsageError(
            "--recalibrate-bn needs training images: name a data set with --calibration, or convert a model "
            "file from a training run (its config.json names the data set)"
        )
    calibration, source = _calibration(args, model, size)
    if args.max_output_error is not None and _data_set_name(args) is None:
        print(
            f"sepconv convert: warning: --max-output-error measures the layers on {source}, which say little "
            "about the images the model will see: name its data set with --calibration",
            file=sys.stderr,
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        converted, report = to_separable(
            model,
            depth_multiplier=args.depth_multiplier,
            init=args.init,
            min_kernel_size=args.min_kernel_size,
            include=args.include,
            exclude=args.exclude,
            max_relative_error=args.max_relative_error,
            max_output_error=args.max_output_error,
            calibration=calibration,
            input_size=size,
        )
    for warning in caught:
        message = flag_words(" ".join(str(warning.message).split()), _NAMED_PARAMETERS, "convert")
        print(f"sepconv convert: warning: {message}", file=sys.stderr)
    recalibrated = None
    if args.recalibrate_bn is not None:
        from sepconv.convert import recalibrate_batchnorm

        images, recalibrated = _training_images(args, size or default_input_size(model))
        recalibrate_batchnorm(converted, images)
    written = save_model(converted, out)
    if args.json:
        print_json(
            {
                "model": args.model,
                "out": str(written),
                "calibration": source,
                "batchnorm_recalibrated_on": recalibrated,
                **report.to_dict(),
            }
        )
        return 0
    sys.stdout.write(flag_words(report.format_table(), _NAMED_PARAMETERS, "convert"))
    if source is not None:
        print(f"calibration images: {source}")
    if recalibrated is not None:
        print(f"BatchNorm statistics re-estimated on {recalibrated}")
    print(
        f"wrote {written} (load with sepconv.load_model; fine-tune with: sepconv train --init-from {written} "
        f"--dataset ...)"
    )
    return 0


def _data_set_name(args: argparse.Namespace) -> tuple[str, int] | None:
    """(name, split seed) of the data set: --calibration's, else the one the model was trained on.

    The split seed is the training run's when the data set is the one it was trained on, else 0
    (:func:`sepconv.train.run_folder.split_seed`).
    """
    from sepconv.train.run_folder import data_for_model

    named = args.calibration if args.calibration not in ("auto", "none") else None
    return data_for_model(args.model, named)


def _load(args: argparse.Namespace, size: tuple[int, ...] | None) -> Any:
    from sepconv.data import load_dataset

    name, seed = _data_set_name(args)  # type: ignore[misc]
    data = load_dataset(name, root=args.data_root, seed=seed)
    if size is not None and (data.in_channels, *data.image_size) != tuple(size):
        raise UsageError(
            f"--input-size {args.input_size.text!r} does not match the {name} images, "
            f"{(data.in_channels, *data.image_size)}"
        )
    return data


def _calibration(
    args: argparse.Namespace, model: Any, size: tuple[int, ...] | None
) -> tuple[Any, str | None]:
    """(images, where they came from) for the output errors, or (None, None) with --calibration none."""
    import torch

    from sepconv.models import default_input_size

    if args.calibration == "none":
        return None, None
    if _data_set_name(args) is None:
        generator = torch.Generator().manual_seed(0)
        shape = size or default_input_size(model)
        return torch.randn(args.samples, *shape, generator=generator), f"{args.samples} random normal images"
    data = _load(args, size)
    count = min(args.samples, len(data.test))
    return torch.stack([data.test[index][0] for index in range(count)]), f"{count} {data.name} test images"


def _training_images(args: argparse.Namespace, size: tuple[int, ...]) -> tuple[Any, str]:
    """The first --recalibrate-bn training images of the data set, and a description of them."""
    import torch

    data = _load(args, size)
    count = min(args.recalibrate_bn, len(data.train))
    if count < 2:
        raise UsageError(f"--recalibrate-bn needs at least 2 training images, the data set has {count}")
    return torch.stack(
        [data.train[index][0] for index in range(count)]
    ), f"{count} {data.name} training images"
