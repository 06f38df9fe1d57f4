"""How a run executes (memory format, precision, fused kernels): a fixed rule, never a timing race.

An earlier version timed a few steps each way and kept the faster; on a busy machine the timing flipped
between runs, so the same seed gave different numbers and the processes of one DDP run could disagree
(DDP then stops on mismatched parameter strides). The rule below depends only on the model, the device,
the CPU's instruction set and the settings, so every process of a run (and every rerun on the same kind
of machine) makes the same choice. ``fit`` also broadcasts rank 0's choice to the other processes.

The rule, from measurements of the twins and MobileNets on CPUs and GPUs:

* ``channels_last`` when the model has 2-D convolutions: oneDNN (CPU) and cuDNN (tensor cores) run
  NHWC convolutions faster than NCHW, and depthwise ones most of all.
* bf16 autocast on GPUs that support it, and on CPUs with native bf16 units (AVX512-BF16 or AMX, as
  :func:`sepconv.machine.cpu_features` finds them). On other CPUs bf16 is emulated and slower than
  float32, so it stays off.
* the fused BatchNorm + activation kernels (:mod:`sepconv.kernels`) when training on the CPU, the model
  has pairs they can run, and the kernels build on this machine (a C++ compiler is there). They are
  CPU kernels; on GPUs the plain modules run (cuDNN). ``benchmarks/train_throughput.py`` measured them
  faster than the plain modules on every shape of the twins and MobileNetV2 (channels_last and NCHW).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

# Re-exported: this was its home before the CPU probes moved to sepconv.machine.
from sepconv.machine import cpu_has_native_bf16

__all__ = ["PrecisionChoice", "choose_precision", "cpu_has_native_bf16", "execution_line"]


@dataclass(frozen=True)
class PrecisionChoice:
    """The resolved ``channels_last`` / ``bf16`` settings of a run, and why (printed and stored)."""

    channels_last: bool
    bf16: bool
    reason: str
    fused: bool = False

    def to_dict(self) -> dict[str, bool | str]:
        """A JSON-able dict of these fields, stored in checkpoints and reports."""
        return {
            "channels_last": self.channels_last,
            "bf16": self.bf16,
            "fused": self.fused,
            "reason": self.reason,
        }


def choose_precision(
    model: nn.Module, *, on_gpu: bool, channels_last: str, bf16: str, fused: str = "auto"
) -> PrecisionChoice:
    """Resolve the ``"auto"`` / ``"on"`` / ``"off"`` switches of a run for ``model`` on this device.

    ``fused="on"`` still runs the plain modules wherever the kernels cannot (GPU, no compiler).

    >>> choose_precision(nn.Linear(2, 2), on_gpu=False, channels_last="auto", bf16="off")
    PrecisionChoice(channels_last=False, bf16=False, reason='channels_last auto: no 2-D convolution; bf16 off; \
fused auto: no BatchNorm+activation pair', fused=False)
    """
    reasons = []
    if channels_last == "auto":
        has_conv = any(isinstance(module, nn.Conv2d) for module in model.modules())
        use_channels_last = has_conv
        reasons.append(f"channels_last auto: {'2-D convolutions' if has_conv else 'no 2-D convolution'}")
    else:
        use_channels_last = channels_last == "on"
        reasons.append(f"channels_last {channels_last}")
    if bf16 == "auto":
        if on_gpu:
            use_bf16 = torch.cuda.is_bf16_supported()
            reasons.append(f"bf16 auto: GPU {'supports' if use_bf16 else 'lacks'} bf16")
        else:
            use_bf16 = cpu_has_native_bf16()
            reasons.append(f"bf16 auto: CPU {'has' if use_bf16 else 'lacks'} native bf16")
    else:
        use_bf16 = bf16 == "on"
        reasons.append(f"bf16 {bf16}")
    use_fused, fused_reason = _choose_fused(model, on_gpu=on_gpu, fused=fused)
    reasons.append(fused_reason)
    return PrecisionChoice(use_channels_last, use_bf16, "; ".join(reasons), use_fused)


def _choose_fused(model: nn.Module, *, on_gpu: bool, fused: str) -> tuple[bool, str]:
    from sepconv.kernels import count_fusable, kernels_available

    if fused != "auto":
        return fused == "on", f"fused {fused}"
    pairs = count_fusable(model)
    if pairs == 0:
        return False, "fused auto: no BatchNorm+activation pair"
    if on_gpu:
        return False, "fused auto: GPU (the kernels are for the CPU)"
    if not kernels_available():
        return False, "fused auto: the kernels did not build (see the warning)"
    return True, f"fused auto: {pairs} BatchNorm+activation pairs on the CPU"


def execution_line(channels_last: bool, bf16: bool, fused: bool) -> str:
    """How a run trained, for the console and reports: ``channels_last on, bf16 off, fused kernels on``."""
    words = {True: "on", False: "off"}
    return f"channels_last {words[channels_last]}, bf16 {words[bf16]}, fused kernels {words[fused]}"
