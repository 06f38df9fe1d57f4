"""``sepconv evaluate CHECKPOINT``: accuracy, per-class accuracy and the confusion matrix on a data set."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sepconv.cli._common import (
    OutputFile,
    UsageError,
    add_data_root,
    add_dataset,
    add_json,
    check_output_file,
    positive_int,
    print_json,
    seed,
)
from sepconv.formatting import format_percent

if TYPE_CHECKING:
    from sepconv.deploy.runtime import DeployedModel


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="accuracy, per-class accuracy and confusion matrix (PNG) of a trained model",
        description=(
            "Evaluate a model file written by sepconv (model.safetensors, a checkpoint's .safetensors / "
            ".state file, a .onnx file from sepconv export, run by ONNX Runtime, or an OpenVINO IR from sepconv "
            "export --openvino (its model.xml, model.int8.xml or the folder holding them), run by OpenVINO; a "
            "deployed file runs on the data set's images under the normalization stored in it, as "
            "OnnxModel.predict and OpenVinoModel.predict run it) on a split of a data set; writes the confusion "
            "matrix as a PNG."
        ),
    )
    parser.add_argument(
        "checkpoint",
        metavar="CHECKPOINT",
        help=(
            "a .safetensors model, a .state checkpoint, an exported .onnx file, or an OpenVINO IR (.xml, or "
            "the folder sepconv export --openvino wrote)"
        ),
    )
    add_dataset(parser, help="data set name (default mnist5k)", default="mnist5k")
    parser.add_argument("--split", choices=("test", "val", "train"), default="test", help="default test")
    parser.add_argument(
        "--seed", type=seed, default=0, help="split seed; use the one the model was trained with"
    )
    add_data_root(parser)
    parser.add_argument("--download", action="store_true", help="allow downloading torchvision data sets")
    parser.add_argument("--skip-bad-images", action="store_true", help="skip unreadable images (counted)")
    parser.add_argument("--batch-size", type=positive_int, default=256, help="default 256")
    parser.add_argument(
        "--confusion-png",
        action=OutputFile,
        suffixes=(".png",),
        metavar="PATH",
        help="where to write the PNG (default: beside CHECKPOINT)",
    )
    add_json(parser)
    parser.set_defaults(handler=run)


def _model_file(checkpoint: str) -> Path:
    from sepconv.deploy.openvino_runtime import IR_FILES
    from sepconv.train.run_folder import model_file_path

    given = Path(checkpoint)
    if given.suffix == ".xml" or (given.is_dir() and any((given / name).is_file() for name in IR_FILES)):
        from sepconv.deploy.openvino_runtime import resolve_ir_path

        try:
            return resolve_ir_path(given)
        except FileNotFoundError as error:
            raise UsageError(str(error)) from None
    path = model_file_path(checkpoint)
    if not path.is_file():
        raise UsageError(f"model file not found: {path}")
    return path


def _deployed(onnx_model: Any, model_file: Path, data: Any) -> Any:
    """The deployed file as a module run by its engine, fed the data set's images under the file's own
    stored normalization (as its predict applies it), so the accuracy is the deployed file's."""
    if onnx_model.mean is not None and len(onnx_model.mean) != data.in_channels:
        raise UsageError(
            f"{model_file} does not fit data set {data.name}: the file takes {len(onnx_model.mean)} input "
            f"channels but the data set's images have {data.in_channels}"
        )
    return onnx_model.as_module(input_mean=list(data.mean), input_std=list(data.std))


def run(args: argparse.Namespace) -> int:
    from sepconv import load_model
    from sepconv.data import load_dataset
    from sepconv.train.evaluation import ModelDataMismatchError, evaluate_model
    from sepconv.viz.confusion import plot_confusion_matrix

    model_file = _model_file(args.checkpoint)
    png = check_output_file(
        "--confusion-png",
        args.confusion_png or model_file.with_name(f"{model_file.stem}-confusion.png"),
        (".png",),
    )  # the default beside the model, too, before any work
    onnx_model: DeployedModel | None = None  # an exported file, run by its engine
    if model_file.suffix == ".onnx":
        from sepconv.deploy import OnnxModel

        onnx_model = OnnxModel(model_file)
    elif model_file.suffix == ".xml":
        from sepconv.deploy.openvino_runtime import OpenVinoModel, openvino_unavailable_reason

        reason = openvino_unavailable_reason()
        if reason is not None:
            raise UsageError(f"{model_file} is an OpenVINO IR, which cannot run here: {reason}")
        onnx_model = OpenVinoModel(model_file)
    else:
        model = load_model(model_file)
    data = load_dataset(
        args.dataset,
        root=args.data_root,
        seed=args.seed,
        download=args.download,
        skip_bad_images=args.skip_bad_images,
    )
    split = getattr(data, args.split)
    if len(split) == 0:
        raise UsageError(f"--split {args.split} of --dataset {args.dataset} is empty; choose another split")
    if onnx_model is not None:
        model = _deployed(onnx_model, model_file, data)
    try:
        evaluation = evaluate_model(
            model,
            split,
            num_classes=data.num_classes,
            class_names=data.class_names,
            batch_size=args.batch_size,
        )
    except ModelDataMismatchError as error:
        raise UsageError(f"{model_file} does not fit data set {data.name}: {error}") from error
    plot_confusion_matrix(
        evaluation,
        png,
        title=f"{model_file.name} on {data.name} {args.split}: {format_percent(evaluation.accuracy)}",
    )
    document: dict[str, Any] = {
        "checkpoint": str(model_file),
        "dataset": data.name,
        "split": args.split,
        **evaluation.to_dict(),
        "skipped_images": len(data.skipped),
        "confusion_png": str(png),
    }
    if args.json:
        print_json(document)
        return 0
    _print_report(document)
    return 0


def _print_report(document: dict[str, Any]) -> None:
    from rich.console import Console

    from sepconv.formatting import Table, format_count

    console = Console()
    console.print(
        f"{document['checkpoint']} on {document['dataset']} ({document['split']}, {document['num_samples']} samples): "
        f"accuracy {format_percent(document['accuracy'])}"
    )
    rows = [
        [name, format_percent(accuracy), format_count(sum(document["confusion_matrix"][index]))]
        for index, (name, accuracy) in enumerate(document["per_class_accuracy"].items())
    ]
    console.print(Table(["class", "accuracy", "samples"], rows, title="per-class accuracy").to_rich())
    console.print(f"confusion matrix: {document['confusion_png']}")
