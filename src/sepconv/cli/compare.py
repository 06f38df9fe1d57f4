"""``sepconv compare A B``: two models side by side, costs on paper against speed measured on this machine."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from sepconv.cli._common import (
    HTML_SUFFIXES,
    INPUT_SIZE_HELP,
    OutputFile,
    UsageError,
    add_data_root,
    add_input_size,
    add_json,
    add_model,
    model_image_size,
    positive_int,
    print_json,
    resolve_model,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    from sepconv.deploy.defaults import AGREEMENT_SAMPLES, DEFAULT_BATCH_SIZE, DEFAULT_REPEATS

    parser = subparsers.add_parser(
        "compare",
        help="two models (e.g. one and its conversion) side by side: MACs vs measured speed, agreement",
        description=(
            "Report, for A and B side by side: parameters, MACs per image, receptive field, and the median "
            "latency of a forward pass (eval mode, no gradients) and of a forward+backward pass (train "
            "mode, loss = sum of the outputs), measured in this process with A and B interleaved after a "
            "warm-up. A / B of the latencies is the realized speedup, shown next to A / B of the MACs. "
            "When A and B come from the same architecture (a model and its conversion or its folded "
            "copy), also the relative error of B's logits against A's and their top-1 agreement on real "
            "images: the test split of the data set A (else B) was trained on when a config.json of its "
            "training run is beside the model file, else mnist5k's test split for 1x28x28 inputs, else "
            "random normal images. A and B are registered names (standard_cnn, torchvision:resnet18) "
            "or sepconv model files."
        ),
    )
    add_model(parser, "a", "A")
    add_model(parser, "b", "B")
    add_input_size(
        parser,
        help=(
            f"{INPUT_SIZE_HELP}; N is the batch, as --batch-size; default: the training data set's, else the models' own "
            "(which must then be the same)"
        ),
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        help=(
            f"images per timed call, forward and forward+backward alike (default {DEFAULT_BATCH_SIZE}: "
            "the smallest at which BatchNorm can train)"
        ),
    )
    parser.add_argument(
        "--repeats",
        type=positive_int,
        default=DEFAULT_REPEATS,
        help=f"interleaved timing rounds; latencies are their median (default {DEFAULT_REPEATS})",
    )
    parser.add_argument(
        "--samples",
        type=positive_int,
        default=AGREEMENT_SAMPLES,
        help=f"images to compare outputs on (default {AGREEMENT_SAMPLES})",
    )
    parser.add_argument(
        "--engine",
        default=None,
        metavar="ENGINE",
        help=(
            "also time each model's forward pass deployed on this engine (ort, ort-int8, torch, openvino, "
            "openvino-bf16, openvino-int8), exported and run as sepconv export and the engine would"
        ),
    )
    add_data_root(parser)
    add_json(parser)
    parser.add_argument(
        "--html",
        action=OutputFile,
        suffixes=HTML_SUFFIXES,
        folder_must_exist=True,
        metavar="FILE.html",
        default=None,
        help="also write a self-contained HTML page",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from sepconv.deploy.compare import DEFAULT_BATCH_SIZE, compare_models

    batch_size = args.batch_size
    if args.input_size is not None:
        batch_size = args.input_size.batch_or("--batch-size", batch_size, args.input_size.batch)
    model_a, model_b = resolve_model(args.a), resolve_model(args.b)
    input_size = model_image_size(args.input_size, model_a)
    data = _training_data(args)
    if input_size is None and data is None:
        _check_default_sizes(args, model_a, model_b)
    comparison = compare_models(  # a MemoryLimitError names its parameter: `sepconv` names the flag
        model_a,
        model_b,
        names=(args.a, args.b),
        input_size=input_size,
        batch_size=DEFAULT_BATCH_SIZE if batch_size is None else batch_size,
        repeats=args.repeats,
        dataset=data,
        samples=args.samples,
        engine=args.engine,
    )
    if args.html is not None:
        from sepconv.viz.pages import write_comparison_html

        write_comparison_html(comparison, args.html)
    if args.json:
        print_json(comparison.to_dict())
    elif sys.stdout.isatty():
        from rich.console import Console

        console = Console()
        for renderable in comparison.to_rich():
            console.print(renderable)
    else:
        sys.stdout.write(comparison.format_table())
    return 0


def _training_data(args: argparse.Namespace) -> Any:
    """The data set A (else B) was trained on, from its run's config.json; None when neither is known."""
    from sepconv.train.run_folder import data_for_model

    for spec in (args.a, args.b):
        found = data_for_model(spec)
        if found is not None:
            from sepconv.data import load_dataset

            return load_dataset(found[0], root=args.data_root, seed=found[1])
    return None


def _check_default_sizes(args: argparse.Namespace, model_a: Any, model_b: Any) -> None:
    from sepconv.models import default_input_size, model_spec

    if model_spec(model_a) is None or model_spec(model_b) is None:
        return  # compare_models names the model whose size is unknown
    size_a, size_b = default_input_size(model_a), default_input_size(model_b)
    if size_a != size_b:
        raise UsageError(
            f"A ({args.a}) takes {'x'.join(map(str, size_a))} images and B ({args.b}) takes "
            f"{'x'.join(map(str, size_b))}; give --input-size C,H,W that fits both"
        )
