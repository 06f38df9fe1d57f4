"""The processes of a multi-process run: how many this machine can hold, and that none outlives the run.

``devices`` (``--devices``) processes start on this node. Each costs at least the PyTorch runtime, the
weights, their gradients and the optimizer's state, and one batch share of activations; a value beyond
the machine's CPU cores (on CPU), its GPUs (on GPUs) or its memory is refused in one line before any
process starts (:func:`check_process_count`, :func:`check_process_memory`), instead of filling memory.

Lightning starts processes 1..N-1 by running the command again. If the launching process dies (killed,
out of memory), those would wait on their peers until gloo's half-hour timeout: :func:`launched_children`
marks the children, and :func:`die_with_launcher` (which each of them calls) makes the kernel end a
child when its launcher dies (Linux ``PR_SET_PDEATHSIG``; elsewhere a thread that watches the parent).
Processes started by torchrun are torchrun's to manage, and are left alone.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from sepconv import machine
from sepconv.errors import ParameterError
from sepconv.machine import MemoryLimitError, format_bytes, gpu_count, require_memory, usable_cpu_count

__all__ = [
    "RUNTIME_BYTES",
    "ProcessLimitError",
    "check_process_count",
    "check_process_memory",
    "die_with_launcher",
    "launched_children",
    "process_memory_estimate",
]

# Private memory of a process that has imported torch and Lightning and set up a process group, before
# any model: a lower bound from measurements (its resident size is larger, but the shared libraries in
# it are shared between the processes).
#: Memory one training process needs besides the model: a lower bound, measured.
RUNTIME_BYTES = 300 * 2**20
_LAUNCHER_VARIABLE = "SEPCONV_LAUNCHER_PID"
_PR_SET_PDEATHSIG = 1


class ProcessLimitError(ParameterError):
    """More processes than this machine can run (``.param`` is ``devices``).

    The message names ``devices``, and ``batch_size`` where a smaller batch is what would help; both are
    in ``mentions``, so that the command line can name its flags for them.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, param="devices", mentions=("devices", "batch_size"))


def check_process_count(devices: int, *, on_gpu: bool) -> None:
    """Refuse ``devices`` processes on this node beyond its usable CPU cores (CPU) or visible GPUs.

    More processes than cores only share the cores (each step waits for the slowest), and PyTorch
    cannot put two processes of one run on one GPU.

    >>> check_process_count(1, on_gpu=False)
    >>> check_process_count(10**6, on_gpu=False)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    sepconv.train.processes.ProcessLimitError: devices=1000000 is more processes than this machine can run: ...
    """
    if on_gpu:
        limit, what = gpu_count(), "GPU(s) visible to PyTorch"
    else:
        limit, what = usable_cpu_count(), "CPU core(s) usable by this process"
    if devices > limit:
        raise ProcessLimitError(
            f"devices={devices} is more processes than this machine can run: it has {limit} {what}; "
            f"set devices to at most {limit}"
        )


def process_memory_estimate(
    model: nn.Module, image: torch.Tensor, *, batch_share: int, weight_copies: int
) -> dict[str, int]:
    """A lower bound of one training process's memory, in bytes, by part (and ``"total"``).

    ``runtime``: :data:`RUNTIME_BYTES`; ``weights``: the buffers and ``weight_copies`` tensors the size
    of the parameters (the weights, their gradients, and the optimizer's state: AdamW's two moments,
    SGD's momentum); ``activations``: the output of every leaf module for ``batch_share`` images like
    ``image`` (one image, no batch dimension), in float32: what the backward pass keeps, at the least.
    """
    parameter_bytes = sum(item.numel() * item.element_size() for item in model.parameters())
    buffer_bytes = sum(item.numel() * item.element_size() for item in model.buffers())
    output_elements = 0

    def count(module: nn.Module, inputs: Any, output: Any) -> None:
        nonlocal output_elements
        if isinstance(output, torch.Tensor):
            output_elements += output.numel()

    leaves = [module for module in model.modules() if not list(module.children())]
    handles = [module.register_forward_hook(count) for module in leaves]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(image.unsqueeze(0))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    parts = {
        "runtime": RUNTIME_BYTES,
        "weights": parameter_bytes * weight_copies + buffer_bytes,
        "activations": output_elements * 4 * batch_share,
    }
    parts["total"] = sum(parts.values())
    return parts


def check_process_memory(devices: int, parts: dict[str, int]) -> None:
    """Refuse ``devices`` processes of :func:`process_memory_estimate` ``parts`` beyond the memory available.

    This process is running already: its runtime is counted once less.
    """
    needed = devices * parts["total"] - RUNTIME_BYTES
    each = ", ".join(f"{name} {format_bytes(parts[name])}" for name in ("runtime", "weights", "activations"))
    try:
        require_memory(
            "devices",
            devices,
            needed,
            what=f"{devices} training processes (each at least {format_bytes(parts['total'])}: {each})",
        )
    except MemoryLimitError as error:
        message = str(error)
        batch_bytes = devices * parts["activations"]
        available = machine.available_memory_bytes()
        if available is not None and batch_bytes > available:
            # Fewer processes would not help: each would take a larger share of the same global batch.
            message += (
                f"; the activations of the global batch alone need about {format_bytes(batch_bytes)}: "
                "use a smaller batch_size"
            )
        raise ProcessLimitError(message) from None


@contextmanager
def launched_children(world_size: int) -> Iterator[None]:
    """Within the block, processes that Lightning starts for this run know this process as their launcher.

    Only where this process launches them (a multi-process run that no launcher like torchrun started).
    """
    launches = world_size > 1 and "LOCAL_RANK" not in os.environ and _LAUNCHER_VARIABLE not in os.environ
    if launches:
        os.environ[_LAUNCHER_VARIABLE] = str(os.getpid())
    try:
        yield
    finally:
        if launches:
            os.environ.pop(_LAUNCHER_VARIABLE, None)


def die_with_launcher() -> None:
    """In a process that :func:`launched_children` started: end this process when its launcher dies."""
    launcher = os.environ.get(_LAUNCHER_VARIABLE)
    if launcher is None or int(launcher) == os.getpid():
        return
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    else:
        threading.Thread(target=_watch_parent, args=(int(launcher),), daemon=True).start()
    # The launcher may have died before the request above: then this process's parent is another.
    if os.getppid() != int(launcher):
        os._exit(1)


def _watch_parent(launcher: int) -> None:
    import time

    while os.getppid() == launcher:
        time.sleep(1.0)
    os._exit(1)
