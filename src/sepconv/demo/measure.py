"""What the demo measures of one trained twin: size, MACs, accuracy, training time, and latency in
PyTorch eager and deployed (its exported, verified ``model.onnx`` run by ONNX Runtime)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sepconv.timing import TimingPlan, time_interleaved

if TYPE_CHECKING:
    import torch

__all__ = ["measure_twin"]

# Batch 1 and batch 64 of one twin, timed interleaved; about a second per twin and runtime.
LATENCY_PLAN = TimingPlan(warmup_calls=3, min_rounds=5, min_run_seconds=1.0, min_block_seconds=0.05)


def measure_twin(trained: Any, data: Any, out_dir: Path) -> dict[str, Any]:
    """The figures of one trained twin (``trained``: a :class:`~sepconv.train.TrainResult`) as a JSON-ready
    dict; its ONNX file is written to ``out_dir / MODEL / model.onnx``."""
    from sepconv.analysis import summarize

    image_shape = (data.in_channels, *data.image_size)
    model = trained.model.cpu().eval()
    channels_last = trained.channels_last
    latency_ms = _torch_latencies_ms(model, image_shape, channels_last=channels_last)
    return {
        "model": trained.model_name,
        "params": sum(parameter.numel() for parameter in model.parameters()),
        "macs": summarize(model, (1, *image_shape)).total_macs,
        "test_accuracy": trained.test_accuracy,
        "val_accuracy": trained.history[-1].get("val_accuracy") if trained.history else None,
        "train_seconds": trained.train_seconds,
        "train_step_seconds": sum(row.get("step_seconds", 0.0) for row in trained.history),
        "latency_ms": latency_ms[1],
        "latency_ms_batch64": latency_ms[64],
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

    images = torch.stack([data.test[index][0] for index in range(min(16, len(data.test)))])
    metadata = {"mean": data.mean, "std": data.std, "class_names": data.class_names, "dataset": data.name}
    report = export_onnx(model, path, inputs=images, metadata=metadata)
    # As a deployment runs it: ONNX Runtime's defaults, spinning threads included. The session (and
    # its threads, which would compete with the next twin's training) ends with this function.
    session = OnnxModel(path, spin_wait=True).session
    latency_ms = _onnx_latencies_ms(session, tuple(images.shape[1:]))
    return {
        "onnx_latency_ms": latency_ms[1],
        "onnx_latency_ms_batch64": latency_ms[64],
        "onnx_path": str(path),
        "onnx_max_abs_diff": report.max_abs_diff,
    }


def _median_latencies_ms(calls: Mapping[int, Callable[[], object]]) -> dict[int, float]:
    return {batch: timing.median_ms for batch, timing in time_interleaved(calls, LATENCY_PLAN).items()}


def _torch_latencies_ms(
    model: torch.nn.Module, image_shape: tuple[int, ...], *, channels_last: bool
) -> dict[int, float]:
    """Median milliseconds of one eager forward (inference mode) at batch 1 and 64, with torch's threads."""
    import torch

    calls: dict[int, Callable[[], object]] = {}
    for batch in (1, 64):
        images = torch.randn(batch, *image_shape)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        calls[batch] = partial(model, images)
    with torch.inference_mode():
        return _median_latencies_ms(calls)


def _onnx_latencies_ms(session: Any, image_shape: tuple[int, ...]) -> dict[int, float]:
    """Median milliseconds of one ``session.run`` at batch 1 and 64.

    The inputs are float32 numpy arrays made once, so only ONNX Runtime's own work is timed: no tensor
    conversion, which at ~0.1 ms would be a large part of a small model's call.
    """
    import numpy as np

    name = session.get_inputs()[0].name
    generator = np.random.default_rng(0)
    feeds = {
        batch: {name: generator.standard_normal((batch, *image_shape), dtype=np.float32)} for batch in (1, 64)
    }
    return _median_latencies_ms({batch: partial(session.run, None, feed) for batch, feed in feeds.items()})
