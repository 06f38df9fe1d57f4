"""Measurements the training and demo code act on: memory format choice, latency, MACs.

Whether ``channels_last`` helps depends on the model and the machine (on a 2-core CPU it made the
separable twin's training step about 2x faster and the standard one's a little faster; elsewhere it can
be slower), so :func:`faster_memory_format` times a few training steps in each format and keeps the
faster one instead of guessing. bf16 autocast is the same story (:func:`faster_with_bf16`): on an AMD
EPYC with AVX512-BF16 it halved the standard twin's step time; on CPUs without bf16 units it is slower.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["count_macs", "faster_memory_format", "faster_with_bf16", "measure_latency_ms"]


def _step_seconds(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, repeats: int, bf16: bool = False
) -> float:
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-9)
    times = []
    for index in range(repeats + 1):
        start = time.perf_counter()
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(images)
        loss = nn.functional.cross_entropy(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if images.device.type == "cuda":
            torch.cuda.synchronize()
        if index:  # the first step pays for kernel selection and allocation
            times.append(time.perf_counter() - start)
    return min(times)


@contextmanager
def _probe(
    model: nn.Module, input_shape: tuple[int, ...], num_classes: int, channels_last: bool
) -> Iterator[tuple[nn.Module, torch.Tensor, torch.Tensor]]:
    """A throw-away copy of ``model`` with random images and labels, the global RNG restored afterwards.

    Restoring the RNG means that probing does not change what a seeded run computes next.
    """
    rng_state = torch.get_rng_state()
    try:
        device = next(model.parameters()).device
        images = torch.randn(input_shape, device=device)
        labels = torch.randint(0, num_classes, (input_shape[0],), device=device)
        probe = copy.deepcopy(model).train()
        if channels_last:
            probe = probe.to(memory_format=torch.channels_last)
            images = images.contiguous(memory_format=torch.channels_last)
        yield probe, images, labels
    finally:
        torch.set_rng_state(rng_state)


def faster_memory_format(
    model: nn.Module, input_shape: tuple[int, ...], num_classes: int, *, repeats: int = 3
) -> bool:
    """True when a training step of ``model`` on ``input_shape`` (N, C, H, W) is faster in channels_last.

    Times copies of the model (the original is untouched); the global RNG is left as it was.
    """
    with _probe(model, input_shape, num_classes, channels_last=False) as (probe, images, labels):
        contiguous = _step_seconds(probe, images, labels, repeats)
    with _probe(model, input_shape, num_classes, channels_last=True) as (probe, images, labels):
        last = _step_seconds(probe, images, labels, repeats)
    return last < contiguous * 0.95


def faster_with_bf16(
    model: nn.Module, input_shape: tuple[int, ...], num_classes: int, *, channels_last: bool, repeats: int = 3
) -> bool:
    """True when bf16 autocast makes a training step of ``model`` at least 10% faster than float32.

    CPUs with bf16 instructions (AVX512-BF16, AMX) often gain; others lose. Like
    :func:`faster_memory_format`, it times a copy and leaves the global RNG as it was.
    """
    with _probe(model, input_shape, num_classes, channels_last) as (probe, images, labels):
        float32 = _step_seconds(probe, images, labels, repeats)
        bf16 = _step_seconds(probe, images, labels, repeats, bf16=True)
    return bf16 < float32 * 0.9


@torch.inference_mode()
def measure_latency_ms(
    model: nn.Module,
    input_shape: tuple[int, ...],
    *,
    repeats: int = 20,
    warmup: int = 3,
    channels_last: bool = False,
    max_seconds: float | None = None,
) -> float:
    """Median wall time in milliseconds of one forward pass of ``model`` (eval mode) on ``input_shape``.

    ``max_seconds`` stops the repeats early (after the warm-up and at least 3 timed runs) on slow models.

    >>> measure_latency_ms(nn.Linear(4, 2), (1, 4), repeats=3) > 0
    True
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    images = torch.randn(input_shape, device=device)
    if channels_last and images.ndim == 4:
        images = images.contiguous(memory_format=torch.channels_last)
    for _ in range(warmup):
        model(images)
    times: list[float] = []
    budget_start = time.perf_counter()
    for _ in range(repeats):
        start = time.perf_counter()
        model(images)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1000.0)
        if max_seconds is not None and len(times) >= 3 and time.perf_counter() - budget_start > max_seconds:
            break
    model.train(was_training)
    return statistics.median(times)


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass on ``input_shape`` (batch included), by ``summarize``.

    >>> count_macs(nn.Linear(4, 2), (1, 4))
    8
    """
    from sepconv.analysis import summarize

    return summarize(model, input_shape).total_macs
