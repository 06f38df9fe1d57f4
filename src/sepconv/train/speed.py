"""Measurements the demo reports: inference latency (``torch.utils.benchmark``) and MACs (``summarize``).

Nothing here decides how a run trains: timings vary with the machine's load, so the memory format and
precision of a run follow a fixed rule instead (:mod:`sepconv.train.precision`).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

__all__ = ["count_macs", "measure_latency_ms", "measure_onnx_latency_ms"]


def _import_benchmark() -> Any:
    """``torch.utils.benchmark``, without the CUDA_HOME warning its import logs on machines without CUDA."""
    logger = logging.getLogger("torch.utils.cpp_extension")
    quiet = logging.Filter("nothing")  # a filter whose name matches no logger rejects every record
    logger.addFilter(quiet)
    try:
        from torch.utils import benchmark
    finally:
        logger.removeFilter(quiet)
    return benchmark


@torch.inference_mode()
def measure_latency_ms(
    model: nn.Module,
    input_shape: tuple[int, ...],
    *,
    channels_last: bool = False,
    min_run_seconds: float = 0.5,
) -> float:
    """Median wall time in milliseconds of one forward pass of ``model`` (eval mode) on ``input_shape``.

    ``torch.utils.benchmark`` does the warm-up, picks how many calls to time per block so that the
    timer's overhead does not count, and runs blocks for about ``min_run_seconds``; with all of torch's
    threads, as training and inference use them.

    >>> measure_latency_ms(nn.Linear(4, 2), (1, 4), min_run_seconds=0.01) > 0
    True
    """
    benchmark = _import_benchmark()
    was_training = model.training
    model.eval()
    device = next(iter(model.parameters()), torch.empty(0)).device  # a wrapped ONNX model has none
    images = torch.randn(input_shape, device=device)
    if channels_last and images.ndim == 4:
        images = images.contiguous(memory_format=torch.channels_last)
    timer = benchmark.Timer(
        stmt="model(images)",
        globals={"model": model, "images": images},
        num_threads=torch.get_num_threads(),
    )
    try:
        measurement = timer.blocked_autorange(min_run_time=min_run_seconds)
    finally:
        model.train(was_training)
    return measurement.median * 1000.0


def measure_onnx_latency_ms(
    session: Any, input_shape: tuple[int, ...], *, min_run_seconds: float = 0.5
) -> float:
    """Median wall time in milliseconds of one ``session.run`` (an ``onnxruntime.InferenceSession``).

    The input is a float32 numpy array made once, so only ONNX Runtime's own work is timed: no tensor
    conversion, which at ~0.1 ms would be a large part of a small model's call.
    """
    import numpy as np

    benchmark = _import_benchmark()
    feed = {
        session.get_inputs()[0].name: np.random.default_rng(0).standard_normal(input_shape, dtype=np.float32)
    }
    timer = benchmark.Timer(stmt="session.run(None, feed)", globals={"session": session, "feed": feed})
    return timer.blocked_autorange(min_run_time=min_run_seconds).median * 1000.0


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass on ``input_shape`` (batch included), by ``summarize``.

    >>> count_macs(nn.Linear(4, 2), (1, 4))
    8
    """
    from sepconv.analysis import summarize

    return summarize(model, input_shape).total_macs
