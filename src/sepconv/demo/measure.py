"""What the demo measures of one trained twin: size, MACs, accuracy, training time, and latency in
PyTorch eager and deployed (its exported, verified ``model.onnx`` run by ONNX Runtime)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["measure_twin"]


def measure_twin(trained: Any, data: Any, out_dir: Path) -> dict[str, Any]:
    """The figures of one trained twin (``trained``: a :class:`~sepconv.train.TrainResult`) as a JSON-ready
    dict; its ONNX file is written to ``out_dir / MODEL / model.onnx``."""
    from sepconv.train.speed import count_macs, measure_latency_ms

    image_shape = (data.in_channels, *data.image_size)
    model = trained.model.cpu().eval()
    channels_last = trained.channels_last
    return {
        "model": trained.model_name,
        "params": sum(parameter.numel() for parameter in model.parameters()),
        "macs": count_macs(model, (1, *image_shape)),
        "test_accuracy": trained.test_accuracy,
        "val_accuracy": trained.history[-1].get("val_accuracy") if trained.history else None,
        "train_seconds": trained.train_seconds,
        "train_step_seconds": sum(row.get("step_seconds", 0.0) for row in trained.history),
        "latency_ms": measure_latency_ms(model, (1, *image_shape), channels_last=channels_last),
        "latency_ms_batch64": measure_latency_ms(model, (64, *image_shape), channels_last=channels_last),
        **_deploy(model, data, out_dir / trained.model_name / "model.onnx"),
        "channels_last": channels_last,
        "bf16_training": trained.bf16,
        "fused_training": trained.fused,
        "precision_reason": trained.precision_reason,
        "model_path": str(trained.model_path),
    }


def _deploy(model: torch.nn.Module, data: Any, path: Path) -> dict[str, Any]:
    """Export ``model`` as ``sepconv export`` would (verified on test images) and time ONNX Runtime."""
    import torch

    from sepconv.deploy import OnnxModel, export_onnx
    from sepconv.train.speed import measure_onnx_latency_ms

    images = torch.stack([data.test[index][0] for index in range(min(16, len(data.test)))])
    metadata = {"mean": data.mean, "std": data.std, "class_names": data.class_names, "dataset": data.name}
    report = export_onnx(model, path, inputs=images, metadata=metadata)
    # As a deployment runs it: ONNX Runtime's defaults, spinning threads included. The session (and
    # its threads, which would compete with the next twin's training) ends with this function.
    session = OnnxModel(path, spin_wait=True).session
    image_shape = tuple(images.shape[1:])
    return {
        "onnx_latency_ms": measure_onnx_latency_ms(session, (1, *image_shape)),
        "onnx_latency_ms_batch64": measure_onnx_latency_ms(session, (64, *image_shape)),
        "onnx_path": str(path),
        "onnx_max_abs_diff": report.max_abs_diff,
    }
