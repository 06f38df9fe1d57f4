"""A hypothesis strategy for depthwise convolution geometries, shared by the kernel tests."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st


@st.composite
def depthwise_geometries(draw: Any, min_channels: int = 2) -> dict[str, Any]:
    """Batch 1-3, channels up to 20 (full 8-wide vectors, a remainder, fewer than one vector), kernels
    1-5 per side, strides and dilations 1-2, padding 0-2, and a map that holds the dilated kernel
    (2 x 2 at least, so channels_last is a real layout)."""
    kernel = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    min_h = max(2, (kernel[0] - 1) * dilation[0] + 1 - 2 * padding[0])
    min_w = max(2, (kernel[1] - 1) * dilation[1] + 1 - 2 * padding[1])
    return {
        "batch": draw(st.integers(1, 3)),
        "channels": draw(st.integers(min_channels, 20)),
        "height": draw(st.integers(min_h, min_h + 10)),
        "width": draw(st.integers(min_w, min_w + 10)),
        "kernel": kernel,
        "stride": stride,
        "padding": padding,
        "dilation": dilation,
    }
