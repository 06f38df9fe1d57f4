"""Export a model to an OpenVINO IR and prove the IR computes what the model computes; int8 through NNCF.

:func:`export_openvino` goes through the verified ONNX export (:func:`~sepconv.deploy.export_onnx`:
BatchNorm folded, dynamic batch, checked against PyTorch with ONNX Runtime), reads that file with
OpenVINO's ONNX front end and saves the IR (``model.xml`` + ``model.bin``, float32 weights) with
sepconv's metadata in its runtime info. The IR is then run by OpenVINO on the same images as PyTorch:

- float32 within ``atol + rtol * |reference|``, the ONNX export's rule;
- bf16, where the CPU has native bf16 (or when asked), within :func:`bf16_tolerance` of the output's
  scale: bf16 keeps 8 significant bits, so each layer's rounded input and weights carry a relative
  error of at most 2 x 2^-8, and a network of L convolution and linear layers at most 2 x L x 2^-8
  to first order;
- int8 (``int8_calibration``): NNCF's post-training quantization on real images, or its
  accuracy-controlled variant when ``max_accuracy_drop`` is given, with the top-1 accuracy of both
  IRs on a test set.

Everything is written into a scratch folder beside ``folder`` and moved into place only when every
check passed, so a failed export leaves no partial folder behind. OpenVINO's ONNX front end is used
instead of ``openvino.convert_model`` because it gives the same graph without the conversion tool's
usage telemetry.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sepconv.checks import check_float
from sepconv.deploy.metadata import METADATA_KEY, parse_metadata
from sepconv.deploy.onnx_export import (
    ExportError,
    ExportReport,
    _batch_sizes,
    _input_size,
    _verification_batches,
    export_onnx,
    verify_outputs,
)
from sepconv.deploy.openvino_runtime import (
    IR_FILES,
    OpenVinoModel,
    import_nncf,
    import_openvino,
    signal_stack_kept,
)

__all__ = [
    "BF16_UNIT_ROUNDOFF",
    "OpenVinoExportReport",
    "bf16_tolerance",
    "export_openvino",
    "ir_from_onnx",
    "openvino_accuracy",
    "openvino_model_from_onnx",
    "quantize_ir",
]

#: The relative rounding error of one bf16 value (8 significant bits, round to nearest).
BF16_UNIT_ROUNDOFF = 2.0**-8
# Images per int8 calibration batch that NNCF reads at most (its default subset is 300 images).
_INT8_SUBSET_IMAGES = 300


@dataclass
class OpenVinoExportReport:
    """What :func:`export_openvino` wrote and how closely OpenVINO reproduced PyTorch.

    ``max_abs_diff`` / ``max_rel_diff`` are OpenVINO float32's, as :class:`ExportReport` defines them;
    ``onnx`` is the report of the intermediate ONNX export (verified with ONNX Runtime). ``bf16`` holds
    the bf16 check (``max_abs_diff``, ``max_rel_diff``, ``tolerance``, ``inference_precision``) or
    ``{"skipped": reason}``; ``int8`` the int8 IR and its accuracy, or None without ``--int8``.
    """

    folder: Path
    path: Path
    input_size: tuple[int, int, int]
    batch_sizes: tuple[int, ...]
    max_abs_diff: float
    max_rel_diff: float
    atol: float
    rtol: float
    inputs: str
    openvino_version: str
    onnx: ExportReport
    bf16: dict[str, Any] = field(default_factory=dict)
    int8: dict[str, Any] | None = None
    export_seconds: float = 0.0
    file_bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of these fields, as ``sepconv export --openvino --json`` prints them."""
        document = asdict(self)
        document.update(
            folder=str(self.folder),
            path=str(self.path),
            input_size=list(self.input_size),
            batch_sizes=list(self.batch_sizes),
            onnx=self.onnx.to_dict(),
        )
        document["onnx"].pop("path")  # the intermediate file is not kept
        return document


def bf16_tolerance(model: nn.Module) -> float:
    """The largest bf16-against-float32 difference accepted, as a fraction of the output's largest value.

    ``2 x L x 2^-8`` for a model of ``L`` convolution and linear layers (see the module docstring): a
    first-order bound on the rounding of each layer's input and weights to bf16.
    """
    layers = sum(isinstance(module, nn.modules.conv._ConvNd | nn.Linear) for module in model.modules())
    return 2 * max(layers, 1) * BF16_UNIT_ROUNDOFF


def ir_from_onnx(onnx_file: Path, xml_file: Path, *, extra_metadata: Mapping[str, Any] | None = None) -> Path:
    """Read the ONNX file with OpenVINO and save it as the IR ``xml_file`` (+ ``.bin``), float32 weights.

    The ONNX file's sepconv metadata is carried into the IR's runtime info, updated by ``extra_metadata``.
    """
    import onnx

    openvino = import_openvino()
    stored = {
        entry.key: entry.value for entry in onnx.load(str(onnx_file), load_external_data=False).metadata_props
    }
    document: dict[str, Any] = {}
    if METADATA_KEY in stored:
        document = parse_metadata(stored[METADATA_KEY], where=str(onnx_file))
    document.update(
        {"engine": "openvino", "openvino_version": openvino.get_version(), **(extra_metadata or {})}
    )
    try:
        model = openvino.Core().read_model(str(onnx_file))
    except Exception as error:  # OpenVINO's front end raises RuntimeError kinds of its own
        raise ExportError(
            f"OpenVINO cannot read the ONNX export: {' '.join(str(error).split())[:300]}"
        ) from None
    model.set_rt_info(json.dumps(document, sort_keys=True), [METADATA_KEY])
    openvino.save_model(model, str(xml_file), compress_to_fp16=False)
    return xml_file


def openvino_model_from_onnx(
    onnx_file: Path,
    input_size: Sequence[int],
    folder: Path,
    *,
    precision: str,
    threads: int,
    calibration: Sequence[torch.Tensor] | None = None,
    calibration_batches: int = 3,
) -> OpenVinoModel:
    """A verified ONNX file as OpenVINO deploys it: its IR in ``folder`` (``model.xml``, and for
    ``precision`` ``"int8"`` ``model.int8.xml``), compiled for latency with ``threads`` threads.

    int8 calibrates on ``calibration`` (real, normalized batches), else on ``calibration_batches``
    random batches of 8, which is enough to time the file but not to trust its accuracy. For callers
    that export once and run the file on several engines (``sepconv bench``, the demo).
    """
    from sepconv.deploy.quantize import random_calibration

    folder.mkdir(parents=True, exist_ok=True)
    xml = ir_from_onnx(onnx_file, folder / IR_FILES[0])
    if precision == "int8":
        batches = calibration
        if batches is None:
            batches = random_calibration((8, *input_size), batches=calibration_batches)
        xml = quantize_ir(xml, folder / IR_FILES[1], batches)
    return OpenVinoModel(xml, threads=threads, precision="bf16" if precision == "bf16" else "fp32")


def export_openvino(
    model: nn.Module,
    folder: str | os.PathLike[str],
    *,
    input_size: Sequence[int] | None = None,
    inputs: torch.Tensor | None = None,
    batch_sizes: Sequence[int] = (1, 7),
    atol: float = 1e-4,
    rtol: float = 1e-3,
    fold_bn: bool = True,
    metadata: Mapping[str, Any] | None = None,
    bf16: bool | None = None,
    int8_calibration: Iterable[torch.Tensor] | None = None,
    int8_test: Any = None,
    int8_validation: Any = None,
    max_accuracy_drop: float | None = None,
    threads: int | None = None,
) -> OpenVinoExportReport:
    """Export ``model`` to the OpenVINO IR ``folder/model.xml`` (+ ``.bin``), verified against PyTorch.

    ``input_size``, ``inputs``, ``batch_sizes``, ``atol``, ``rtol``, ``fold_bn`` and ``metadata`` are
    :func:`~sepconv.deploy.export_onnx`'s, and the same check applies to OpenVINO float32. ``bf16``:
    also check bf16 inference within :func:`bf16_tolerance` (None: where the CPU has native bf16; the
    report says why it was skipped elsewhere). ``int8_calibration``: batches of real, normalized
    images; with them ``folder/model.int8.xml`` is written too (NNCF post-training quantization), and
    given ``int8_test`` (a data set of ``(image, label)``) both IRs' top-1 accuracy is measured on it.
    ``max_accuracy_drop`` (points of top-1) uses NNCF's accuracy-controlled quantization, which keeps
    layers in float until the drop on ``int8_validation`` (default ``int8_test``) is within it.

    ``folder`` is created if missing (its parent must exist); IR files already in it are replaced,
    anything else is left alone. Nothing is moved into it unless every check passed.

    Raises:
        ExportError: a model OpenVINO cannot read or that it does not reproduce.
        ModuleNotFoundError: openvino (or, for int8, nncf) is not installed; the message says how.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    target = _check_folder(folder)
    size = _input_size(model, input_size, inputs)
    sizes = _batch_sizes(batch_sizes)
    atol = check_float("atol", atol, minimum=0)
    rtol = check_float("rtol", rtol, minimum=0)
    if max_accuracy_drop is not None:
        max_accuracy_drop = check_float("max_accuracy_drop", max_accuracy_drop, minimum=0)
        if int8_calibration is None:
            raise ValueError("max_accuracy_drop needs int8_calibration: it controls the int8 quantization")
        if int8_validation is None and int8_test is None:
            raise ValueError("max_accuracy_drop needs int8_validation (or int8_test) to measure the drop on")
    openvino = import_openvino()
    if int8_calibration is not None:
        import_nncf()  # before any work: a missing nncf is said now, not after the float export
    started = time.perf_counter()
    reference = copy.deepcopy(model).float().cpu().eval().to(memory_format=torch.contiguous_format)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        onnx_report = export_onnx(
            model,
            scratch / "model.onnx",
            input_size=size,
            inputs=inputs,
            batch_sizes=sizes,
            atol=atol,
            rtol=rtol,
            fold_bn=fold_bn,
            metadata=metadata,
        )
        xml = ir_from_onnx(scratch / "model.onnx", scratch / IR_FILES[0])
        batches = _verification_batches(inputs, size, sizes)
        max_abs, max_rel = verify_outputs(
            OpenVinoModel(xml, threads=threads), reference, batches, atol=atol, rtol=rtol, engine="OpenVINO"
        )
        bf16_report = _check_bf16(xml, reference, batches, bf16, threads)
        export_seconds = time.perf_counter() - started
        int8_report = None
        if int8_calibration is not None:
            int8_report = _int8(
                xml,
                scratch / IR_FILES[1],
                int8_calibration,
                test=int8_test,
                validation=int8_validation if int8_validation is not None else int8_test,
                max_accuracy_drop=max_accuracy_drop,
                threads=threads,
            )
        (scratch / "model.onnx").unlink()
        written = _move_into(scratch, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if int8_report is not None:
        int8_report["path"] = str(target / IR_FILES[1])
    return OpenVinoExportReport(
        folder=target,
        path=target / IR_FILES[0],
        input_size=size,
        batch_sizes=sizes,
        max_abs_diff=max_abs,
        max_rel_diff=max_rel,
        atol=float(atol),
        rtol=float(rtol),
        inputs="random normal" if inputs is None else "given images",
        openvino_version=str(openvino.get_version()),
        onnx=onnx_report,
        bf16=bf16_report,
        int8=int8_report,
        export_seconds=export_seconds,
        file_bytes=sum(path.stat().st_size for path in written if path.name.startswith("model.")),
    )


def openvino_accuracy(
    path: str | os.PathLike[str], dataset: Any, *, batch_size: int = 256, threads: int | None = None
) -> float:
    """Top-1 accuracy (a fraction) of the OpenVINO IR ``path`` on ``dataset`` of ``(image, label)`` pairs."""
    from sepconv.deploy.runtime import deployed_accuracy

    return deployed_accuracy(OpenVinoModel(path, threads=threads), dataset, batch_size=batch_size)


def _check_folder(folder: str | os.PathLike[str]) -> Path:
    target = Path(folder)
    if target.exists() and not target.is_dir():
        raise ValueError(f"folder {str(target)!r} exists and is not a folder; give a folder for the IR files")
    if not target.parent.is_dir():
        raise FileNotFoundError(f"cannot write {target}: folder {target.parent} does not exist")
    return target


def _check_bf16(
    xml: Path, reference: nn.Module, batches: Sequence[torch.Tensor], wanted: bool | None, threads: int | None
) -> dict[str, Any]:
    from sepconv.machine import cpu_has_native_bf16

    if wanted is False:
        return {"skipped": "not asked for"}
    if wanted is None and not cpu_has_native_bf16():
        return {
            "skipped": "this CPU has no native bf16 (no AVX512-BF16 or AMX); OpenVINO would run float32 instead"
        }
    tolerance = bf16_tolerance(reference)
    ir = OpenVinoModel(xml, threads=threads, precision="bf16")
    try:
        max_abs, max_rel = verify_outputs(
            ir, reference, batches, atol=0.0, rtol=tolerance, engine="OpenVINO bf16"
        )
    except ExportError as error:
        raise ExportError(f"{error} (bf16's first-order bound for this model)") from None
    return {
        "max_abs_diff": max_abs,
        "max_rel_diff": max_rel,
        "tolerance": tolerance,
        "inference_precision": ir.inference_precision,
    }


def quantize_ir(
    xml: str | os.PathLike[str],
    int8_xml: str | os.PathLike[str],
    calibration: Iterable[torch.Tensor],
    *,
    validation: Any = None,
    max_accuracy_drop: float | None = None,
) -> Path:
    """Quantize the IR ``xml`` to int8 with NNCF into ``int8_xml`` (+ ``.bin``); returns ``int8_xml``.

    ``calibration``: batches of real, normalized images (NNCF reads at most 300 images). With
    ``max_accuracy_drop`` (points of top-1) NNCF's accuracy-controlled quantization keeps layers in
    float until the top-1 drop on ``validation`` (a data set of ``(image, label)``) is within it. The
    IR's sepconv metadata is carried over, with ``precision`` int8 and how it was quantized.
    """
    nncf = import_nncf()
    openvino = import_openvino()
    arrays = [np.ascontiguousarray(torch.as_tensor(batch).float().numpy()) for batch in calibration]
    if not arrays:
        raise ValueError("calibration holds no batches; int8 scales must be calibrated on real images")
    model = openvino.Core().read_model(str(xml))
    document = (
        json.loads(model.get_rt_info([METADATA_KEY]).astype(str)) if model.has_rt_info([METADATA_KEY]) else {}
    )
    images = sum(len(array) for array in arrays)
    subset = min(images, _INT8_SUBSET_IMAGES)
    method = "quantize"
    # NNCF's progress bars go to stdout, where `sepconv export --json` prints its JSON and nothing else.
    with contextlib.redirect_stdout(io.StringIO()), signal_stack_kept():
        if max_accuracy_drop is None:
            quantized = nncf.quantize(model, nncf.Dataset(arrays), subset_size=subset)
        else:
            if validation is None:
                raise ValueError("max_accuracy_drop needs validation: the data set the drop is measured on")
            method = "quantize_with_accuracy_control"
            quantized = nncf.quantize_with_accuracy_control(
                model,
                nncf.Dataset(arrays),
                nncf.Dataset(_labelled_batches(validation)),
                validation_fn=_validation_fn,
                max_drop=max_accuracy_drop / 100.0,
                drop_type=nncf.DropType.ABSOLUTE,
                subset_size=subset,
            )
    document.update(
        precision="int8",
        quantization={
            "tool": "nncf",
            "nncf_version": str(nncf.__version__),
            "method": method,
            "calibration_images": images,
            "max_accuracy_drop_points": max_accuracy_drop,
        },
    )
    quantized.set_rt_info(json.dumps(document, sort_keys=True), [METADATA_KEY])
    target = Path(int8_xml)
    openvino.save_model(quantized, str(target), compress_to_fp16=False)
    return target


def _int8(
    xml: Path,
    int8_xml: Path,
    calibration: Iterable[torch.Tensor],
    *,
    test: Any,
    validation: Any,
    max_accuracy_drop: float | None,
    threads: int | None,
) -> dict[str, Any]:
    batches = list(calibration)
    quantize_ir(xml, int8_xml, batches, validation=validation, max_accuracy_drop=max_accuracy_drop)
    report: dict[str, Any] = {
        "path": str(int8_xml),
        "file_bytes": int8_xml.stat().st_size + int8_xml.with_suffix(".bin").stat().st_size,
        "method": "quantize" if max_accuracy_drop is None else "quantize_with_accuracy_control",
        "calibration_batches": len(batches),
        "calibration_images": sum(len(batch) for batch in batches),
        "max_accuracy_drop_points": max_accuracy_drop,
    }
    if test is not None:
        fp32_accuracy = openvino_accuracy(xml, test, threads=threads)
        int8_accuracy = openvino_accuracy(int8_xml, test, threads=threads)
        report.update(
            test_samples=len(test),
            fp32_accuracy=fp32_accuracy,
            int8_accuracy=int8_accuracy,
            accuracy_drop_points=100 * (fp32_accuracy - int8_accuracy),
        )
    return report


def _labelled_batches(dataset: Any, batch_size: int = 256) -> list[tuple[np.ndarray, np.ndarray]]:
    from torch.utils.data import DataLoader

    return [
        (images.float().numpy(), torch.as_tensor(labels).numpy())
        for images, labels in DataLoader(dataset, batch_size=batch_size)
    ]


def _validation_fn(compiled: Any, batches: Iterable[tuple[np.ndarray, np.ndarray]]) -> float:
    """Top-1 accuracy of an OpenVINO compiled model over ``(images, labels)`` batches (NNCF's metric)."""
    correct = total = 0
    for images, labels in batches:
        logits = compiled(images)[compiled.outputs[0]]
        correct += int((np.asarray(logits).argmax(axis=1) == labels).sum())
        total += len(labels)
    return correct / max(total, 1)


def _move_into(scratch: Path, target: Path) -> list[Path]:
    """Move the files of ``scratch`` into ``target`` (created if missing), each replacing its namesake.

    IR files of an earlier export that this one did not write (an int8 IR beside a new float one) are
    removed, so that the folder never pairs files of two exports.
    """
    target.mkdir(exist_ok=True)
    fresh = {file.name for file in scratch.iterdir()}
    for name in IR_FILES:
        for stale in (target / name, (target / name).with_suffix(".bin")):
            if stale.name not in fresh and stale.is_file():
                stale.unlink()
    written = []
    for file in sorted(scratch.iterdir()):
        destination = target / file.name
        os.replace(file, destination)
        written.append(destination)
    return written
