"""``sepconv rf MODEL --layer NAME --out FILE.png``: theoretical and effective receptive field of one unit."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sepconv.cli._common import (
    INPUT_SIZE_HELP,
    InputSize,
    OutputFile,
    add_input_size,
    add_json,
    add_model,
    model_image_size,
    non_negative_int,
    print_json,
    resolve_model,
)
from sepconv.errors import UsageError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "rf",
        help="receptive-field map of one unit: theoretical box and input-gradient heat map (PNG/SVG)",
        description=(
            "For one output unit of layer NAME (at --position, default the centre of its output map; "
            "summed over channels unless --channel), draw over the input the theoretical receptive field "
            "(from sepconv summary: size, effective stride, start) and the effective receptive field: "
            "|d unit / d input| summed over input channels, for the model's actual weights in eval mode. "
            "The input is --image, else a test image of the data set the model was trained on (from its "
            "run folder), else an mnist5k digit for 1x28x28 models, else seeded random noise."
        ),
    )
    add_model(parser)
    parser.add_argument(
        "--layer", required=True, metavar="NAME", help="qualified layer name, e.g. features.7"
    )
    parser.add_argument(
        "--position", metavar="Y,X", help="row,column in the layer's output map (default: its centre)"
    )
    parser.add_argument(
        "--channel", type=non_negative_int, metavar="C", help="one output channel (default: sum of all)"
    )
    parser.add_argument("--image", metavar="FILE", help="an image file (any format PIL reads)")
    add_input_size(parser, help=f"{INPUT_SIZE_HELP}; default: the model's own")
    parser.add_argument(
        "--out",
        required=True,
        action=OutputFile,
        suffixes=(".png", ".svg"),
        metavar="FILE",
        help="where to write the picture (.png or .svg)",
    )
    add_json(parser, help="print the numbers as one JSON document")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from sepconv.viz.fields import receptive_field_map
    from sepconv.viz.style import save_figure

    out = Path(args.out)  # its suffix and kind were checked when the flags were parsed
    position = _position(args.position)
    model = resolve_model(args.model)
    if args.input_size is not None:  # the gradient pass runs the model once at this size
        from sepconv.cli._memory import require_input_memory

        require_input_memory(args.input_size.text, model, (1, *_image_shape(args.input_size, model)))
    image, label = _input_image(args, model)
    field, figure = receptive_field_map(
        model, args.layer, image, position=position, channel=args.channel, input_label=label
    )
    try:
        save_figure(figure, out)
    except OSError as error:
        raise UsageError(f"cannot write --out {str(out)!r}: {error.strerror or error}") from error
    if args.json:
        print_json({"model": args.model, "out": str(out), **field.to_dict()})
        return 0
    box, support = field.theoretical, field.support
    print(
        f"{args.layer} at (row {field.position[0]}, column {field.position[1]}); input: {label}\n"
        f"theoretical field: rows {box.top}..{box.top + box.height - 1}, columns {box.left}.."
        f"{box.left + box.width - 1} ({box.height}x{box.width} pixels)"
        + (", extends past the border (drawn clipped)" if field.extends_past_border else "")
        + "\n"
        + (
            f"non-zero gradient: rows {support.top}..{support.top + support.height - 1}, columns "
            f"{support.left}..{support.left + support.width - 1}"
            if support is not None
            else "non-zero gradient: none (the unit is flat at this input: a ReLU at 0 or a ReLU6 at 6)"
        )
        + f"\nwrote {out}"
    )
    return 0


def _position(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    parts = text.split(",")
    try:
        values = tuple(int(part) for part in parts)
    except ValueError:
        values = ()
    if len(values) != 2 or min(values) < 0:
        raise UsageError(f"--position must be two integers >= 0, ROW,COLUMN (e.g. 3,3), got {text!r}")
    return values


def _image_shape(size: InputSize | None, model: Any) -> tuple[int, int, int]:
    """(C, H, W) of the input: --input-size, else the model's registered size."""
    from sepconv.models import default_input_size, model_spec

    if size is not None:
        size.require_one_image("rf maps one unit of one image")
        return model_image_size(size, model)  # type: ignore[return-value]
    if model_spec(model) is None:
        raise UsageError("the model has no registered input size; give --input-size C,H,W")
    return default_input_size(model)


def _input_image(args: argparse.Namespace, model: Any) -> tuple[Any, str]:
    """The image to draw on and differentiate at (C x H x W), and a line saying where it came from."""
    if args.image is not None:
        shape = _image_shape(args.input_size, model)
        return _read_image(Path(args.image), shape), f"{Path(args.image).name} (pixels scaled to [0, 1])"
    from sepconv.train.run_folder import data_for_model

    found = data_for_model(args.model)
    if found is not None:
        image = _first_test_image(*found)
        # The model's own data fixes the size, unless --input-size asks for another one.
        if image is not None and (
            args.input_size is None or tuple(image.shape) == _image_shape(args.input_size, model)
        ):
            return image, f"{found[0]} test image 0 (the model's training data)"
    shape = _image_shape(args.input_size, model)
    if shape == (1, 28, 28):
        return _first_test_image("mnist5k", 0), "mnist5k test image 0"
    import torch

    # Noise rather than a blank grid: a constant input leaves ReLU units at zero, so the gradient vanishes.
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    return noise, "random noise (seed 0, standard normal)"


def _first_test_image(name: str, seed: int) -> Any:
    """The first test image of data set ``name`` (normalized as in training); None if not on this machine."""
    from sepconv.data import load_dataset
    from sepconv.data.torchvision_sets import DatasetNotFoundError

    try:
        data = load_dataset(name, seed=seed)
    except DatasetNotFoundError:
        return None  # the caller falls back to another input, and the output says which
    # torch's Dataset declares no __len__; every split here has one
    return data.test[0][0] if len(data.test) > 0 else None  # type: ignore[arg-type]


def _read_image(path: Path, shape: tuple[int, int, int]) -> Any:
    """``path`` as a C x H x W float tensor in [0, 1], converted to ``shape``'s channels and resized."""
    from PIL import Image, UnidentifiedImageError
    from torchvision.transforms.functional import pil_to_tensor

    channels, height, width = shape
    try:
        with Image.open(path) as opened:
            picture = opened.convert("RGB" if channels == 3 else "L").resize(
                (width, height), Image.Resampling.BILINEAR
            )
    except UnidentifiedImageError:
        raise UsageError(f"--image {str(path)!r} is not an image file PIL can read") from None
    except OSError as error:
        raise UsageError(f"--image {str(path)!r} cannot be read: {error.strerror or error}") from None
    pixels = pil_to_tensor(picture).float() / 255
    # A gray image for a model of C != 1, 3 channels: the same gray in every channel.
    return pixels if pixels.shape[0] == channels else pixels.expand(channels, -1, -1).contiguous()
