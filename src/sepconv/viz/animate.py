"""Animations of a 2-D convolution sliding over its padded, dilated input, frame by frame: the entry points.

Computing, drawing and encoding are separate: :mod:`sepconv.viz.animation_plan` returns the frames as
data, every value read from the real PyTorch operator (:func:`plan_animation`, :func:`conv_step`,
:func:`conv_transpose_step`); :mod:`sepconv.viz.animation_render` draws them with matplotlib's object
API; :mod:`sepconv.viz.animation_encode` turns the pictures into an animated GIF (or an MP4 when
``ffmpeg`` is available). Here :func:`write_animation` runs the last two and writes the file atomically,
:func:`animate_conv` all three, and :func:`draw_frame` gives one frame as a figure.

>>> animation = plan_animation(input_size=4, kernel_size=3, seed=0)
>>> len(animation.frames), animation.steps[0].output.shape
(4, torch.Size([1, 2, 2]))
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sepconv.checks import check_float
from sepconv.io.atomic import PathLike, atomic_write_bytes, check_output_path
from sepconv.viz.animation_encode import ANIMATION_FORMATS, encode_gif, encode_mp4, ffmpeg_executable
from sepconv.viz.animation_plan import (
    MAX_FRAMES,
    ConvAnimation,
    ConvStep,
    Frame,
    conv_step,
    conv_transpose_step,
    plan_animation,
)
from sepconv.viz.animation_render import StepRenderer, require_render_memory

__all__ = [
    "MAX_FRAMES",
    "ConvAnimation",
    "ConvStep",
    "Frame",
    "animate_conv",
    "conv_step",
    "conv_transpose_step",
    "draw_frame",
    "ffmpeg_executable",
    "plan_animation",
    "write_animation",
]

Progress = Callable[[int, int], None]


def write_animation(
    animation: ConvAnimation, path: PathLike, *, fps: float = 2.0, progress: Progress | None = None
) -> Path:
    """Draw every frame and write an animated GIF (or MP4, by suffix) atomically; returns ``path``.

    ``progress(done, total)`` is called after each frame is drawn. MP4 needs ``ffmpeg``: on PATH, or
    the one the ``imageio-ffmpeg`` package ships (``pip install 'sepconv[video]'``).
    Nothing is written when drawing or encoding fails. Frames that cannot fit in memory (a lower
    bound: the canvas and one RGB copy of every frame) are refused before the first is drawn, with a
    :class:`~sepconv.machine.MemoryLimitError` naming the geometry parameter that sized the grid.
    """
    target = Path(path)
    kind = target.suffix.lower().lstrip(".")
    if kind not in ANIMATION_FORMATS:
        raise ValueError(f"path must end in .gif or .mp4, got {str(path)!r}")
    fps = check_float("fps", fps, minimum=0, min_inclusive=False)
    ffmpeg = ffmpeg_executable() if kind == "mp4" else None
    if kind == "mp4" and ffmpeg is None:
        raise ValueError(
            "writing .mp4 needs ffmpeg: put it on PATH or pip install 'sepconv[video]'; or write a .gif"
        )
    _check_writable(target)
    total = len(animation.frames)
    if total > MAX_FRAMES:
        raise ValueError(
            f"the animation would have {total} frames (more than {MAX_FRAMES}); use a smaller input or fewer channels"
        )
    require_render_memory(animation)
    images = []
    for step in animation.steps:
        renderer = StepRenderer(step)
        for frame in step.frames:
            images.append(renderer.render(frame))
            if progress is not None:
                progress(len(images), total)
    data = encode_gif(images, fps) if ffmpeg is None else encode_mp4(images, fps, ffmpeg)
    return atomic_write_bytes(target, data)


def animate_conv(
    path: PathLike, *, fps: float = 2.0, progress: Progress | None = None, **geometry: Any
) -> ConvAnimation:
    """:func:`plan_animation` with ``geometry``, then :func:`write_animation` to ``path``; returns the plan."""
    animation = plan_animation(**geometry)
    write_animation(animation, path, fps=fps, progress=progress)
    return animation


def draw_frame(step: ConvStep, index: int) -> Any:
    """The matplotlib Figure of frame ``index`` of ``step`` (for a still picture, or a notebook)."""
    renderer = StepRenderer(step)
    renderer.show(step.frames[index])
    return renderer.figure


def _check_writable(target: Path) -> None:
    """Refuse an unwritable destination before spending time on drawing (the write re-checks anyway)."""
    import os

    check_output_path(target, parameter="path")  # a device, FIFO or socket would be replaced
    folder = target.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent  # atomic_write_bytes creates the missing folders below this one
    if target.is_dir():
        raise IsADirectoryError(f"cannot write {str(target)!r}: it is a folder")
    if not folder.is_dir():
        raise NotADirectoryError(f"cannot write {str(target)!r}: {str(folder)!r} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write {str(target)!r}: folder {str(folder)!r} is not writable")
