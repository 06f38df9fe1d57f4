"""What the demo measures of one trained twin: size, MACs, accuracy, training time, and latency in
PyTorch eager and deployed: its exported, verified ``model.onnx`` run by every deployment engine
available here (ONNX Runtime and OpenVINO, float and int8), each timed alone with its deployment
settings, and the fastest named."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sepconv.timing import TimingPlan, time_interleaved

if TYPE_CHECKING:
    import torch

__all__ = ["DEMO_ENGINES", "measure_twin"]

#: The engines (:data:`sepconv.deploy.ENGINES`) each twin is deployed to, in the report's order.
DEMO_ENGINES = ("ort", "openvino", "openvino-bf16", "ort-int8", "openvino-int8")
# Batches of 32 training images that calibrate the int8 engines (as `sepconv export --int8` does).
_CALIBRATION_BATCHES = 4

# Batch 1 and batch 64 of one twin, timed interleaved; about a second per twin and runtime.
LATENCY_PLAN = TimingPlan(warmup_calls=3, min_rounds=5, min_run_seconds=1.0, min_block_seconds=0.05)


def measure_twin(
    trained: Any, data: Any, out_dir: Path, *, engines: Sequence[str] = DEMO_ENGINES
) -> dict[str, Any]:
    """The figures of one trained twin (``trained``: a :class:`~sepconv.train.TrainResult`) as a JSON-ready
    dict; its ONNX file is written to ``out_dir / MODEL / model.onnx``, and the files the ``engines``
    derive from it (int8 files, the OpenVINO IR in ``openvino/``) beside it."""
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
        **_deploy(model, data, out_dir / trained.model_name, engines),
        "channels_last": channels_last,
        "bf16_training": trained.bf16,
        "fused_training": trained.fused,
        "precision_reason": trained.precision_reason,
        "model_path": str(trained.model_path),
    }


def _deploy(model: torch.nn.Module, data: Any, folder: Path, engines: Sequence[str]) -> dict[str, Any]:
    """Export ``model`` as ``sepconv export`` would (verified on test images) and time it on each engine.

    Each engine is timed in its own block, with the settings a deployment uses (ONNX Runtime's
    defaults, idle threads spinning; OpenVINO compiled for latency at each batch size), and its
    session ends before the next engine is timed, so no engine's threads disturb another's.
    """
    import torch

    from sepconv.deploy import export_onnx
    from sepconv.deploy.engines import ENGINES
    from sepconv.deploy.execution_paths import PathUnavailableError

    images = torch.stack([data.test[index][0] for index in range(min(16, len(data.test)))])
    metadata = {"mean": data.mean, "std": data.std, "class_names": data.class_names, "dataset": data.name}
    path = folder / "model.onnx"
    report = export_onnx(model, path, inputs=images, metadata=metadata)
    image_shape = tuple(images.shape[1:])
    calibration = _calibration(data)
    generator = torch.Generator().manual_seed(0)
    feeds = {batch: torch.randn(batch, *image_shape, generator=generator) for batch in (1, 64)}
    deployed: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    for name in engines:
        engine = ENGINES[name]
        reason = engine.unavailable_reason()
        if reason is not None:
            skipped[name] = reason
            continue
        subfolder = folder / "openvino" if name.startswith("openvino") else folder
        try:
            runner = engine.model_from_onnx(
                path, image_shape, subfolder, threads=torch.get_num_threads(), calibration=calibration
            )
        except PathUnavailableError as error:
            skipped[name] = str(error)
            continue
        latency_ms = _median_latencies_ms({batch: runner.bind(feed) for batch, feed in feeds.items()})
        deployed[name] = {
            **engine.describe(),
            "path": str(runner.path),
            "latency_ms": latency_ms[1],
            "latency_ms_batch64": latency_ms[64],
        }
        del runner  # its threads end here, before the next engine (or the next twin's training) runs
    if not deployed:
        raise PathUnavailableError(f"no deployment engine can run here: {skipped}")
    fastest = min(deployed, key=lambda name: deployed[name]["latency_ms"])
    fastest_batch64 = min(deployed, key=lambda name: deployed[name]["latency_ms_batch64"])
    return {
        "deployed_engine": fastest,
        "deployed_latency_ms": deployed[fastest]["latency_ms"],
        "deployed_engine_batch64": fastest_batch64,
        "deployed_latency_ms_batch64": deployed[fastest_batch64]["latency_ms_batch64"],
        "deployed": deployed,
        "deployed_skipped": skipped,
        "onnx_path": str(path),
        "onnx_max_abs_diff": report.max_abs_diff,
    }


def _calibration(data: Any) -> list[torch.Tensor]:
    """The first batches of 32 training images: what the int8 engines calibrate on."""
    from torch.utils.data import DataLoader

    loader = DataLoader(data.train, batch_size=32, shuffle=False)
    return [images for index, (images, _) in zip(range(_CALIBRATION_BATCHES), loader)]


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
