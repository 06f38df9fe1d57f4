"""A checked ``nn.Conv2d``: the common base of every convolution layer in sepconv.

It adds three things a plain ``nn.Conv2d`` lacks, and nothing else: argument errors that name the
parameter, the value and what would be valid; ``padding="same"`` for every stride and dilation
(TensorFlow semantics, see :mod:`sepconv.layers.padding`); and an input check that says which layer
got which shape, with a hint for the usual mix-ups (a missing batch dimension, channels-last data).
Because it *is* an ``nn.Conv2d``, FX, ONNX export, quantization, FLOP counters and ``torch.compile``
treat it like one.
"""

from __future__ import annotations

import numbers
from typing import Any

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn
from torch.fx._symbolic_trace import is_fx_symbolic_tracing

from sepconv.arithmetic import check_groups, check_positive
from sepconv.checks import choice_error
from sepconv.errors import ArgumentTypeError
from sepconv.layers.padding import PADDING_MODES, is_padding_mode, pad_same, plan_padding

__all__ = ["Conv2d", "IntPair", "PaddingArg", "check_bias", "check_input_channels", "name_layers", "to_pair"]

# Symbolic tracing cannot do arithmetic on the input's shape, so pad_same must stay one graph node;
# fx.wrap patches the name in the globals of the module that calls it, which is this one.
torch.fx.wrap("pad_same")

#: A size for both dimensions (``3``) or for each (``(3, 5)``).
IntPair = int | tuple[int, int]
#: Padding: an int or pair, or ``'valid'`` (none) or ``'same'`` (output size = input size / stride).
PaddingArg = int | tuple[int, int] | str


def to_pair(name: str, value: IntPair) -> tuple[int, int]:
    """Turn an integer or a pair of them (numpy's included) into a pair of positive ints.

    A wrong type (a float, a str, a bool) raises :class:`~sepconv.errors.ArgumentTypeError` (a
    TypeError), a wrong value (0, a pair of three) a ValueError; both name ``name`` and the value.
    """
    message = f"{name} must be a positive int or a pair of them, got {value!r}"
    if isinstance(value, tuple | list):
        if len(value) != 2:
            raise ValueError(message)
        pair = tuple(value)
    else:
        pair = (value, value)
    if any(isinstance(item, bool) or not isinstance(item, numbers.Integral) for item in pair):
        raise ArgumentTypeError(message)
    if any(item < 1 for item in pair):
        raise ValueError(message)
    return int(pair[0]), int(pair[1])


def check_bias(bias: object) -> bool:
    """``bias`` if it is a bool; anything else (``None``, ``0``, ``"yes"``) is a TypeError naming it."""
    if not isinstance(bias, bool):
        raise ArgumentTypeError(f"bias must be True or False, got {bias!r}")
    return bias


def name_layers(model: nn.Module) -> nn.Module:
    """Record each submodule's qualified name on it, so that its errors can say where they happened."""
    for name, module in model.named_modules():
        if name:
            module._sepconv_name = name
    return model


def check_input_channels(module: nn.Module, x: torch.Tensor, in_channels: int) -> None:
    """Raise a ValueError naming ``module`` when ``x`` is not (N, C, H, W) or (C, H, W) with C = in_channels."""
    if x.dim() == 4 and x.shape[1] == in_channels:
        return
    if x.dim() == 3 and x.shape[0] == in_channels:
        return
    layer = getattr(module, "_sepconv_name", None) or type(module).__name__
    shape = tuple(x.shape)
    message = (
        f"layer '{layer}' expects input of shape (N, {in_channels}, H, W) or ({in_channels}, H, W): "
        f"{in_channels} channels, got shape {shape}"
    )
    if x.dim() == 4 and x.shape[-1] == in_channels:
        message += "; it looks channels-last (N, H, W, C): pass x.permute(0, 3, 1, 2)"
    elif x.dim() == 4 and x.shape[0] == in_channels and in_channels > 1:
        # With one channel the batch of one matches by coincidence: (1, 3, H, W) into a one-channel
        # layer is an RGB image for a grayscale model, not a swap, and transposing would not fix it.
        message += "; the batch and channel dimensions look swapped: pass x.transpose(0, 1)"
    elif x.dim() == 3 and x.shape[-1] == in_channels:
        message += "; it looks like one channels-last image (H, W, C): pass x.permute(2, 0, 1).unsqueeze(0)"
    elif x.dim() == 3:
        message += "; a 3-D tensor is read as one unbatched image (C, H, W)"
    elif x.dim() == 2:
        message += "; it looks like a single-channel image without batch: pass x[None, None]"
    raise ValueError(message)


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` with named argument errors, input checks and 'same' padding for any stride.

    >>> Conv2d(3, 8, 3, stride=2, padding="same")(torch.zeros(1, 3, 7, 7)).shape
    torch.Size([1, 8, 4, 4])
    """

    # nn.Conv2d types these as tuples of any length; in a 2-D convolution they are pairs
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    dilation: tuple[int, int]
    padding: str | tuple[int, int]

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair,
        stride: IntPair = 1,
        padding: PaddingArg = 0,
        dilation: IntPair = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        in_channels = check_positive("in_channels", in_channels)
        out_channels = check_positive("out_channels", out_channels)
        groups = check_groups(in_channels, out_channels, groups)
        bias = check_bias(bias)
        kernel_pair = to_pair("kernel_size", kernel_size)
        stride_pair = to_pair("stride", stride)
        dilation_pair = to_pair("dilation", dilation)
        if not isinstance(padding_mode, str) or not is_padding_mode(padding_mode):
            raise choice_error("padding_mode", padding_mode, PADDING_MODES)
        plan = plan_padding(padding, kernel_pair, stride_pair, dilation_pair)
        super().__init__(
            in_channels,
            out_channels,
            kernel_pair,
            stride=stride_pair,
            padding=plan.conv_padding,
            dilation=dilation_pair,
            groups=groups,
            bias=bias,
            padding_mode=padding_mode,
            device=device,
            dtype=dtype,
        )
        self.padding_spec: str | tuple[int, int] = padding if isinstance(padding, str) else plan.conv_padding
        self._explicit_pad = plan.explicit_pad
        self._dynamic_same = plan.dynamic_same

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Convolve ``x`` (N, C_in, H, W) or (C_in, H, W), first padding it where 'same' needs to.

        Raises:
            ValueError: ``x`` has not that shape; the message names the layer and suggests a fix.
        """
        if not is_fx_symbolic_tracing():
            check_input_channels(self, x, self.in_channels)
        if self._dynamic_same:
            x = pad_same(x, list(self.kernel_size), list(self.stride), list(self.dilation), self.padding_mode)
        elif self._explicit_pad is not None:
            mode = "constant" if self.padding_mode == "zeros" else self.padding_mode
            x = F.pad(x, list(self._explicit_pad), mode=mode)
        output: torch.Tensor = self._conv_forward(x, self.weight, self.bias)  # untyped in torch
        return output

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this layer (weights aside)."""
        return {
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel_size": self.kernel_size,
            "stride": self.stride,
            "padding": self.padding_spec,
            "dilation": self.dilation,
            "groups": self.groups,
            "bias": self.bias is not None,
            "padding_mode": self.padding_mode,
        }

    def extra_repr(self) -> str:
        """The arguments ``print(layer)`` shows: the channels, then what differs from the defaults."""
        return _describe(self.get_config(), _CONV_DEFAULTS)


_CONV_DEFAULTS: dict[str, Any] = {
    "stride": (1, 1),
    "padding": (0, 0),
    "dilation": (1, 1),
    "groups": 1,
    "bias": True,
    "padding_mode": "zeros",
    "depth_multiplier": 1,
}


def _describe(config: dict[str, Any], defaults: dict[str, Any]) -> str:
    """Render a config the way ``nn.Conv2d`` prints itself: positional channels, then non-defaults."""
    positional = [str(config[key]) for key in ("in_channels", "out_channels") if key in config]
    keywords = [
        f"{key}={value!r}"
        for key, value in config.items()
        if key not in ("in_channels", "out_channels") and (key not in defaults or defaults[key] != value)
    ]
    return ", ".join(positional + keywords)
