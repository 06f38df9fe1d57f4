"""Static int8 quantization of an exported model with ONNX Runtime's own tooling.

Static QDQ with per-channel weight scales: activation ranges are calibrated on real batches (a data
set's train split), and every convolution then runs on int8 kernels. Dynamic quantization
(``quantize_dynamic``) is deliberately not offered: it quantizes activations at run time and makes
convolutional networks *slower* on CPUs. Accuracy must be checked on held-out data after
quantization (:func:`onnx_accuracy`); ``sepconv export --int8`` does both.
"""

from __future__ import annotations

import itertools
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sepconv.deploy.metadata import METADATA_KEY, parse_metadata
from sepconv.io.atomic import atomic_write_bytes, check_output_path

__all__ = ["onnx_accuracy", "quantize_onnx", "random_calibration"]


def quantize_onnx(
    fp32_path: str | os.PathLike[str],
    int8_path: str | os.PathLike[str],
    calibration: Iterable[np.ndarray | torch.Tensor],
    *,
    per_channel: bool = True,
) -> Path:
    """Write an int8 (QDQ) copy of the ONNX file ``fp32_path`` to ``int8_path``, atomically.

    ``calibration`` yields batches ``(N, C, H, W)`` of normalized float images, as the model sees them
    in training; their activation ranges (min/max) fix the int8 scales, so they should be real data.
    Activations are unsigned 8-bit and weights signed 8-bit with one scale per output channel, the
    combination ONNX Runtime's x86 int8 kernels run fastest. The sepconv metadata of the fp32 file is
    carried over, with ``precision`` set to ``int8``.
    """
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    source = Path(fp32_path)
    target = Path(int8_path)
    if not source.is_file():
        raise FileNotFoundError(f"ONNX model file not found: {source}")
    if target.suffix != ".onnx":
        raise ValueError(f"int8_path must end in .onnx, got {str(target)!r}")
    check_output_path(target, parameter="int8_path")  # a device or FIFO is refused before quantizing
    if target.resolve() == source.resolve():
        raise ValueError(f"int8_path must differ from fp32_path, got {str(target)!r} for both")
    source_model = onnx.load(str(source), load_external_data=False)
    input_name = source_model.graph.input[0].name

    class _Reader(CalibrationDataReader):
        def __init__(self, batches: Iterator[np.ndarray | torch.Tensor]) -> None:
            self.batches = batches
            self.count = 0

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            if batch is None:
                return None
            self.count += 1
            array = batch.detach().cpu().float().numpy() if isinstance(batch, torch.Tensor) else batch
            return {input_name: np.ascontiguousarray(array, dtype=np.float32)}

    batches = iter(calibration)
    first = next(batches, None)
    if first is None:
        raise ValueError("calibration yielded no batches; give at least one batch of images")
    reader = _Reader(itertools.chain([first], batches))
    with tempfile.TemporaryDirectory(prefix="sepconv-int8-") as work:
        prepared = Path(work) / "prepared.onnx"
        quantized = Path(work) / "int8.onnx"
        # Shape inference and graph optimisation first, as ONNX Runtime's quantization guide asks:
        # it lets the quantizer see every tensor's shape and quantize the fused operators.
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(quantized),
            reader,
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
        model = onnx.load(str(quantized))
        _carry_metadata(
            source, source_model, model, {"calibration_batches": reader.count, "per_channel": per_channel}
        )
        atomic_write_bytes(target, model.SerializeToString())
    return target


def random_calibration(shape: Sequence[int], *, batches: int = 4, seed: int = 1) -> list[torch.Tensor]:
    """``batches`` standard normal batches of ``shape`` (batch included), from a generator seeded ``seed``.

    Calibration for int8 files whose *speed* is all that is measured (``sepconv bench``'s int8 path, the
    per-layer cost model): the activation ranges do not change which kernels run, but the accuracy
    of such a file means nothing, so it is never one to deploy.
    """
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(tuple(shape), generator=generator) for _ in range(batches)]


def onnx_accuracy(
    path: str | os.PathLike[str], dataset: Any, *, batch_size: int = 256, threads: int | None = None
) -> float:
    """Top-1 accuracy (a fraction) of the ONNX model ``path`` on ``dataset`` of ``(image, label)`` pairs."""
    from sepconv.deploy.runtime import OnnxModel, deployed_accuracy

    return deployed_accuracy(OnnxModel(path, threads=threads), dataset, batch_size=batch_size)


def _carry_metadata(source: Path, source_model: Any, model: Any, quantization: dict[str, Any]) -> None:
    stored = {entry.key: entry.value for entry in source_model.metadata_props}
    document: dict[str, Any] = {}
    if METADATA_KEY in stored:
        document = parse_metadata(stored[METADATA_KEY], where=str(source))
    document.update(
        precision="int8",
        quantization={"format": "QDQ", "activations": "uint8", "weights": "int8", **quantization},
    )
    del model.metadata_props[:]
    for key, value in stored.items():
        if key != METADATA_KEY:
            model.metadata_props.add(key=key, value=value)
    model.metadata_props.add(key=METADATA_KEY, value=json.dumps(document, sort_keys=True))
