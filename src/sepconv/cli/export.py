"""``sepconv export MODEL --onnx FILE --openvino DIR``: a verified ONNX file and/or OpenVINO IR, and
optionally int8 twins with their accuracy."""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path
from typing import Any

from sepconv.cli._common import (
    INPUT_SIZE_HELP,
    OutputFile,
    UsageError,
    add_data_root,
    add_dataset,
    add_input_size,
    add_json,
    add_model,
    check_output_file,
    finite_float,
    model_image_size,
    positive_int,
    print_json,
    resolve_model,
    seed,
)

# Images per verification batch taken from the data set, and per calibration batch.
VERIFY_IMAGES = 16
# The accuracy an int8 model may lose before we warn (issue 8: one point of top-1).
INT8_WARN_POINTS = 1.0
# Batches of 32 training images that calibrate the int8 file unless --calibration-batches says otherwise.
CALIBRATION_BATCHES = 8


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export to ONNX and/or OpenVINO (BatchNorm folded, verified against PyTorch), optionally int8",
        description=(
            "Fold BatchNorm into the convolutions, export MODEL to ONNX with a dynamic batch dimension, and "
            "verify the file: ONNX Runtime and PyTorch run the same images (a batch of the data set when one "
            "is known, else random) at batch 1 and 7; the command fails and writes nothing when they differ "
            "by more than --atol + --rtol x |PyTorch|. With --int8, also writes FILE's int8 twin "
            "(NAME.int8.onnx: static QDQ, per-channel weights, calibrated on the data set's train split) "
            "and reports both files' top-1 accuracy on the test split. --openvino DIR writes an OpenVINO IR "
            "(DIR/model.xml + model.bin, from the verified ONNX export) checked the same way with OpenVINO, "
            "and on CPUs with native bf16 also in bf16 (within 2 x L x 2^-8 of the output's scale, L "
            "convolution and linear layers); with --int8, DIR/model.int8.xml too (NNCF post-training "
            "quantization on the train split; --max-accuracy-drop for NNCF's accuracy-controlled variant). "
            "Give --onnx, --openvino or both."
        ),
    )
    add_model(parser)
    parser.add_argument(
        "--onnx",
        action=OutputFile,
        suffixes=(".onnx",),
        folder_must_exist=True,
        metavar="FILE",
        help="the .onnx file to write",
    )
    parser.add_argument(
        "--openvino",
        type=_ir_folder,
        metavar="DIR",
        help="the folder to write the OpenVINO IR into (model.xml, model.bin; created if missing)",
    )
    add_input_size(parser, help=f"{INPUT_SIZE_HELP}; default: the model's own")
    add_dataset(
        parser,
        help=(
            "data set whose images verify the export and whose normalization and class names go into the "
            "file; default: the one the model was trained on (config.json beside a sepconv model file)"
        ),
    )
    parser.add_argument(
        "--int8",
        action="store_true",
        help="also write NAME.int8.onnx and/or DIR/model.int8.xml (needs a data set: --calibration)",
    )
    parser.add_argument(
        "--max-accuracy-drop",
        type=finite_float(minimum=0),
        default=None,
        metavar="POINTS",
        help=(
            "with --openvino --int8: NNCF's accuracy-controlled quantization keeps layers in float until the "
            "top-1 drop on the validation split is at most POINTS"
        ),
    )
    parser.add_argument(
        "--calibration",
        metavar="DATASET",
        help="data set to calibrate int8 on (its train split) and to measure accuracy on (its test split)",
    )
    parser.add_argument(
        "--calibration-batches",
        type=positive_int,
        default=None,
        help=f"with --int8: batches of 32 to calibrate on (default {CALIBRATION_BATCHES})",
    )
    parser.add_argument(
        "--seed",
        type=seed,
        default=None,
        help="split seed (default: the training run's for the data set it was trained on, else 0)",
    )
    add_data_root(parser)
    parser.add_argument("--atol", type=finite_float(minimum=0), default=1e-4, help="default 1e-4")
    parser.add_argument("--rtol", type=finite_float(minimum=0), default=1e-3, help="default 1e-3")
    parser.add_argument("--no-fold", action="store_true", help="keep BatchNorm layers as they are")
    add_json(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from sepconv.deploy import export_onnx
    from sepconv.deploy.onnx_export import check_input_fits

    target = None if args.onnx is None else Path(args.onnx)  # suffix and kind checked at parsing
    # Flags that contradict each other, or one that would be silently ignored, before any work.
    if target is None and args.openvino is None:
        raise UsageError("give --onnx FILE, --openvino DIR or both: what to export to")
    if args.max_accuracy_drop is not None and not (args.int8 and args.openvino is not None):
        raise UsageError(
            f"--max-accuracy-drop applies with --openvino and --int8 only (it controls NNCF's int8 quantization), "
            f"got --max-accuracy-drop {args.max_accuracy_drop:g}"
            + " without "
            + " and ".join(
                flag for flag, given in (("--int8", args.int8), ("--openvino", args.openvino)) if not given
            )
        )
    if args.openvino is not None:
        from sepconv.deploy.openvino_runtime import openvino_unavailable_reason

        reason = openvino_unavailable_reason(int8=args.int8)
        if reason is not None:
            raise UsageError(f"--openvino cannot be used here: {reason}")
    if args.calibration_batches is not None and not args.int8:
        raise UsageError(
            f"--calibration-batches applies with --int8 only (it calibrates the int8 file), got "
            f"--calibration-batches {args.calibration_batches} without --int8"
        )
    if args.calibration and args.dataset and args.calibration != args.dataset:
        raise UsageError(
            f"--dataset {args.dataset!r} and --calibration {args.calibration!r} must be the same data set"
        )
    if args.int8 and target is not None:  # its int8 twin is written too: the same rule, before any work
        check_output_file("--onnx", target.with_suffix(".int8.onnx"), (".onnx",))
    if args.input_size is not None:
        args.input_size.require_one_image("export writes the file with a dynamic batch dimension")
    model = resolve_model(args.model)
    input_size = model_image_size(args.input_size, model)
    if input_size is not None:  # verification runs every batch size at once: refuse what cannot fit
        from sepconv.cli._memory import require_input_memory

        batches = inspect.signature(export_onnx).parameters["batch_sizes"].default
        require_input_memory(
            args.input_size.text, model, (max(batches), *input_size), other_images=sum(batches) - max(batches)
        )
    data = _load_data(args, model)
    if args.int8 and data is None:
        raise UsageError("--int8 needs --calibration DATASET: int8 scales must be calibrated on real images")
    inputs = None
    metadata: dict[str, Any] = {}
    if data is not None:
        size = (data.in_channels, *data.image_size)
        if input_size is not None and tuple(input_size) != size:
            raise UsageError(
                f"--input-size {args.input_size.text!r} does not match data set {data.name}'s images {size}"
            )
        input_size = size
        # The data set's normalization and class names go into the file: refuse one the model does not
        # fit (as evaluate does), before anything is exported.
        _check_data_fits(args, model, data)
        inputs = _first_images(data.test if len(data.test) else data.train, VERIFY_IMAGES)
        metadata = {"mean": data.mean, "std": data.std, "class_names": data.class_names, "dataset": data.name}
    elif input_size is not None:
        check_input_fits(model, input_size)  # its error names input_size; cli/main.py makes it the flag
    document: dict[str, Any] = {"model": args.model, "dataset": None if data is None else data.name}
    common = {
        "input_size": input_size,
        "inputs": inputs,
        "atol": args.atol,
        "rtol": args.rtol,
        "fold_bn": not args.no_fold,
        "metadata": metadata,
    }
    if target is not None:
        document["onnx"] = export_onnx(model, target, **common).to_dict()
    try:
        if args.int8 and target is not None:
            document["int8"] = _int8(target, data, args.calibration_batches or CALIBRATION_BATCHES)
        if args.openvino is not None:
            document["openvino"] = _openvino(args, model, data, common)
    except BaseException:
        if target is not None:  # the command failed: leave none of its files behind
            target.unlink(missing_ok=True)
            target.with_suffix(".int8.onnx").unlink(missing_ok=True)
        raise
    if args.json:
        print_json(document)
    else:
        _print_report(document)
    for int8 in (document.get("int8"), (document.get("openvino") or {}).get("int8")):
        if int8 and int8["accuracy_drop_points"] > INT8_WARN_POINTS:
            print(
                f"sepconv export: warning: int8 loses {int8['accuracy_drop_points']:.2f} points of top-1 accuracy "
                f"in {int8['path']} (more than {INT8_WARN_POINTS:g}); try more --calibration-batches or keep "
                f"the fp32 file",
                file=sys.stderr,
            )
    return 0


def _ir_folder(value: str) -> Path:
    """``--openvino DIR``: a folder that exists or can be created (its parent exists), not a file."""
    folder = Path(value)
    if folder.exists() and not folder.is_dir():
        raise argparse.ArgumentTypeError(f"{value!r} exists and is not a folder")
    if not folder.parent.is_dir():
        raise argparse.ArgumentTypeError(
            f"{value!r}: its parent folder {str(folder.parent)!r} does not exist"
        )
    return folder


def _openvino(args: argparse.Namespace, model: Any, data: Any, common: dict[str, Any]) -> dict[str, Any]:
    """Export the OpenVINO IR (int8 too with --int8) and return its report as a dict."""
    from torch.utils.data import DataLoader

    from sepconv.deploy.openvino_export import export_openvino

    calibration = None
    if args.int8:
        loader = DataLoader(data.train, batch_size=32, shuffle=False)
        count = args.calibration_batches or CALIBRATION_BATCHES
        calibration = [images for index, (images, _) in enumerate(loader) if index < count]
    validation = data.val if data is not None and len(data.val) else None
    report = export_openvino(
        model,
        args.openvino,
        **common,
        int8_calibration=calibration,
        int8_test=data.test if args.int8 else None,
        int8_validation=validation,
        max_accuracy_drop=args.max_accuracy_drop,
    )
    return report.to_dict()


def _load_data(args: argparse.Namespace, model: Any) -> Any:
    """The data set named by --dataset or --calibration, else the training run's; None if none is known."""
    from sepconv.data import load_dataset
    from sepconv.train.run_folder import data_for_model

    found = data_for_model(args.model, args.dataset or args.calibration, args.seed)
    if found is None:
        return None
    name, split_seed = found
    return load_dataset(name, root=args.data_root, seed=split_seed)


def _check_data_fits(args: argparse.Namespace, model: Any, data: Any) -> None:
    """A UsageError naming the data set's flag unless the model takes its images and has its class count."""
    from sepconv.deploy.onnx_export import check_input_fits

    flag = "--dataset" if args.dataset else "--calibration" if args.calibration else None
    source = f"{flag} {data.name}" if flag else f"data set {data.name} (the model's training run's)"
    size = (data.in_channels, *data.image_size)
    try:
        outputs = check_input_fits(model, size, parameter=f"{source}'s image size")
    except ValueError as error:
        raise UsageError(f"{error}; give the data set the model was trained on") from None
    if outputs is not None and outputs != data.num_classes:
        raise UsageError(
            f"{source} has {data.num_classes} classes but {args.model} outputs {outputs}; give the data set the "
            f"model was trained on, whose normalization and class names the file will carry"
        )


def _first_images(split: Any, count: int) -> Any:
    import torch

    return torch.stack([split[index][0] for index in range(min(count, len(split)))])


def _int8(fp32_file: Path, data: Any, calibration_batches: int) -> dict[str, Any]:
    from torch.utils.data import DataLoader

    from sepconv.deploy import onnx_accuracy, quantize_onnx

    int8_file = fp32_file.with_suffix(".int8.onnx")
    loader = DataLoader(data.train, batch_size=32, shuffle=False)
    batches = (images for index, (images, _) in enumerate(loader) if index < calibration_batches)
    quantize_onnx(fp32_file, int8_file, batches)
    try:
        fp32_accuracy = onnx_accuracy(fp32_file, data.test)
        int8_accuracy = onnx_accuracy(int8_file, data.test)
    except BaseException:
        int8_file.unlink(missing_ok=True)
        raise
    return {
        "path": str(int8_file),
        "file_bytes": int8_file.stat().st_size,
        "calibration_batches": min(calibration_batches, len(loader)),
        "test_samples": len(data.test),
        "fp32_accuracy": fp32_accuracy,
        "int8_accuracy": int8_accuracy,
        "accuracy_drop_points": 100 * (fp32_accuracy - int8_accuracy),
    }


def _print_report(document: dict[str, Any]) -> None:
    from sepconv.formatting import format_bytes, format_percent

    onnx = document.get("onnx")
    dataset = document["dataset"]
    if onnx is not None:
        folded = len(onnx["folded_batchnorms"])
        print(
            f"wrote {onnx['path']} ({format_bytes(onnx['file_bytes'])}, opset {onnx['opset']}, dynamic batch, "
            f"{folded} BatchNorm layer{'s' if folded != 1 else ''} folded)"
        )
        print(
            f"verified with ONNX Runtime on {_images(onnx, dataset)} at batch sizes {', '.join(map(str, onnx['batch_sizes']))}: "
            f"max abs diff {onnx['max_abs_diff']:.2e}, max rel diff {onnx['max_rel_diff']:.2e} "
            f"(atol {onnx['atol']:g}, rtol {onnx['rtol']:g})"
        )
    int8 = document.get("int8")
    if int8:
        print(
            f"wrote {int8['path']} ({format_bytes(int8['file_bytes'])}, int8 QDQ, per-channel weights, "
            f"{int8['calibration_batches']} calibration batches)"
        )
        _print_accuracy(document, int8, format_percent)
    ir = document.get("openvino")
    if ir is not None:
        print(
            f"wrote {ir['path']} and its .bin ({format_bytes(ir['file_bytes'])} in all, OpenVINO "
            f"{ir['openvino_version'].split('-')[0]} IR, float32 weights, dynamic batch)"
        )
        print(
            f"verified with OpenVINO on {_images(ir, dataset)} at batch sizes {', '.join(map(str, ir['batch_sizes']))}: "
            f"max abs diff {ir['max_abs_diff']:.2e}, max rel diff {ir['max_rel_diff']:.2e} "
            f"(atol {ir['atol']:g}, rtol {ir['rtol']:g})"
        )
        bf16 = ir["bf16"]
        if "skipped" in bf16:
            print(f"bf16 not checked: {bf16['skipped']}")
        else:
            print(
                f"bf16 ({bf16['inference_precision']} as OpenVINO ran it): max rel diff {bf16['max_rel_diff']:.2e} "
                f"(tolerance {bf16['tolerance']:.3g} of the output's scale)"
            )
        if ir.get("int8"):
            int8 = ir["int8"]
            method = (
                "accuracy-controlled" if int8["max_accuracy_drop_points"] is not None else "post-training"
            )
            print(
                f"wrote {int8['path']} ({format_bytes(int8['file_bytes'])} with its .bin, NNCF {method} int8, "
                f"{int8['calibration_images']} calibration images)"
            )
            _print_accuracy(document, int8, format_percent)


def _images(report: dict[str, Any], dataset: str | None) -> str:
    return str(report["inputs"]) if dataset is None else f"{dataset} test images"


def _print_accuracy(document: dict[str, Any], int8: dict[str, Any], format_percent: Any) -> None:
    print(
        f"top-1 on {document['dataset']} test ({int8['test_samples']} images): fp32 "
        f"{format_percent(int8['fp32_accuracy'])}, int8 {format_percent(int8['int8_accuracy'])} "
        f"({-int8['accuracy_drop_points']:+.2f} points)"
    )
