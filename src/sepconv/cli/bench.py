"""``sepconv bench MODEL``: latency and throughput of one model across execution paths, side by side."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from sepconv.cli._common import (
    INPUT_SIZE_HELP,
    add_input_size,
    add_json,
    add_model,
    finite_float,
    model_image_size,
    parse_int_list,
    print_json,
    progress_bar,
    resolve_model,
)

_BATCH_SIZES = "1,16"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="latency and throughput across execution paths (eager, channels_last, compiled, ONNX, OpenVINO)",
        description=(
            "Time MODEL on the CPU along each execution path, interleaved in one process after warm-up: "
            "eager (NCHW float32, the baseline), channels_last, folded_channels_last (BatchNorm folded "
            "into the convolutions, channels_last), bf16 (autocast, only on CPUs with native bf16), "
            "compiled (torch.compile with freezing), onnx_fp32 and onnx_int8 (ONNX Runtime with its default "
            "settings, as deployed; int8 calibrated on random images), openvino_fp32, openvino_bf16 (native "
            "bf16 CPUs only) and openvino_int8 (OpenVINO compiled for latency at each batch size; int8 "
            "through NNCF on random images). Every engine runs with the settings a deployment of it uses, "
            "listed under the tables with the CPU and its instruction sets; a pause between blocks lets the "
            "previous engine's idle threads go to sleep. Reports median / min / max latency per batch, "
            "images/s, speedup over eager and each path's largest output difference from eager. Paths that "
            "cannot run here are listed as skipped with the reason. MODEL is a registered name "
            "(mobilenet_v2, torchvision:resnet18) or a sepconv checkpoint."
        ),
    )
    add_model(parser)
    add_input_size(
        parser, help=f"{INPUT_SIZE_HELP}; N is the one batch size to time; default: the model's own"
    )
    parser.add_argument(
        "--batch-sizes", default=None, help=f"batch sizes to time, e.g. 1,16 (default {_BATCH_SIZES})"
    )
    parser.add_argument(
        "--paths",
        default=None,
        type=_path_names,
        help="comma-separated paths to time, e.g. eager,onnx_fp32 (default: all); eager always runs",
    )
    parser.add_argument(
        "--train",
        action="store_true",
        help="also time training steps (eager, channels_last, bf16, compiled among --paths)",
    )
    parser.add_argument(
        "--seconds",
        type=finite_float(minimum=0),
        default=3.0,
        help="time each phase for at least this long, in interleaved rounds (default 3)",
    )
    add_json(parser)
    parser.set_defaults(handler=run)


def _path_names(text: str) -> list[str]:
    """An argparse ``type`` for ``--paths``: known path names, or one line listing the valid ones."""
    from sepconv.deploy.bench import EXECUTION_PATHS

    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in EXECUTION_PATHS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown path {', '.join(map(repr, unknown)) or repr(text)}; valid: {', '.join(EXECUTION_PATHS)}"
        )
    return names


def run(args: argparse.Namespace) -> int:
    from sepconv.deploy.bench import benchmark_paths  # its refusals name parameters: `sepconv` names flags

    batch_sizes = None if args.batch_sizes is None else parse_int_list("--batch-sizes", args.batch_sizes)
    if args.input_size is not None:
        batch_sizes = args.input_size.batch_or("--batch-sizes", batch_sizes, (args.input_size.batch,))
    batch_sizes = batch_sizes or parse_int_list("--batch-sizes", _BATCH_SIZES)
    model = resolve_model(args.model)
    input_size = model_image_size(args.input_size, model)
    options: dict[str, Any] = {
        "input_size": input_size,
        "batch_sizes": batch_sizes,
        "paths": args.paths,
        "train": args.train,
        "min_run_seconds": args.seconds,
    }
    if args.json:
        report = benchmark_paths(model, **options)
        print_json({"model": args.model, **report.to_dict()})
        return 0

    with progress_bar() as update:
        report = benchmark_paths(model, **options, progress=update)
    print(f"{args.model}: input {'x'.join(map(str, report.input_size))}, {report.threads} threads")
    if sys.stdout.isatty():
        from rich.console import Console

        console = Console()
        for renderable in report.to_rich():
            console.print(renderable)
    else:
        sys.stdout.write(report.format_table())
    return 0
