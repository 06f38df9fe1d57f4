"""Encoding drawn frames (RGB ``uint8`` arrays) into the bytes of an animated GIF or an MP4.

GIF by Pillow, with a small adaptive palette per frame; MP4 (H.264) by ``ffmpeg`` through pipes, so
nothing touches the disk until the caller writes the bytes atomically. Frames of different sizes (the
depthwise and pointwise steps of a separable animation) are centred on one canvas first: a GIF draws
each frame over the previous one, so a smaller frame would leave the larger one's edges showing.
"""

from __future__ import annotations

import io
import shutil
import subprocess
from collections.abc import Sequence
from typing import Any

__all__ = ["ANIMATION_FORMATS", "encode_gif", "encode_mp4", "ffmpeg_executable", "same_size"]

#: The file formats an animation can be written in.
ANIMATION_FORMATS = ("gif", "mp4")


def same_size(images: Sequence[Any]) -> list[Any]:
    """The frames (H x W x 3 ``uint8`` arrays) centred on a canvas as large as the largest, each frame's
    border filled with its own background colour (that of its top-left pixel)."""
    import numpy as np

    height = max(image.shape[0] for image in images)
    width = max(image.shape[1] for image in images)
    framed = []
    for image in images:
        if image.shape[:2] == (height, width):
            framed.append(image)
            continue
        canvas = np.empty((height, width, image.shape[2]), dtype=image.dtype)
        canvas[...] = image[0, 0]
        top, left = (height - image.shape[0]) // 2, (width - image.shape[1]) // 2
        canvas[top : top + image.shape[0], left : left + image.shape[1]] = image
        framed.append(canvas)
    return framed


def encode_gif(images: Sequence[Any], fps: float) -> bytes:
    """An animated GIF of ``images`` (RGB ``uint8`` arrays) at ``fps`` frames per second, looping."""
    from PIL import Image

    # An adaptive palette per frame: the pictures use a handful of flat colours, so 32 keep them exact
    # and the file small.
    frames = [
        Image.fromarray(image).quantize(colors=32, method=Image.Quantize.FASTOCTREE)
        for image in same_size(images)
    ]
    buffer = io.BytesIO()
    frames[0].save(
        buffer,
        format="GIF",
        save_all=True,
        append_images=frames[1:],
        duration=round(1000 / fps),
        loop=0,
        optimize=True,
    )
    return buffer.getvalue()


def ffmpeg_executable() -> str | None:
    """The ffmpeg to encode MP4 with: the one on PATH, else imageio-ffmpeg's bundled binary, else None."""
    found = shutil.which("ffmpeg")
    if found is not None:
        return found
    try:
        import imageio_ffmpeg
    except ImportError:
        return None
    try:
        return imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError:  # the package is installed without a binary for this platform
        return None


def encode_mp4(images: Sequence[Any], fps: float, ffmpeg: str) -> bytes:
    """An H.264 MP4 of ``images`` (RGB ``uint8`` arrays) at ``fps``, encoded by the ``ffmpeg`` executable.

    Frames of different sizes are centred on one canvas (:func:`same_size`); an odd size loses its last
    row or column (H.264 wants even sizes).

    Raises:
        OSError: ffmpeg failed; the message is its last line of errors.
    """
    images = same_size(images)
    height, width = images[0].shape[:2]
    # H.264 wants even sizes; a fragmented MP4 can be written to a pipe, so the bytes go through
    # atomic_write_bytes like every other file.
    even = [image[: height - height % 2, : width - width % 2] for image in images]
    command = [
        ffmpeg, "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
        "-s", f"{even[0].shape[1]}x{even[0].shape[0]}", "-r", f"{fps}", "-i", "pipe:0",
        "-pix_fmt", "yuv420p", "-movflags", "frag_keyframe+empty_moov", "-f", "mp4", "pipe:1",
    ]  # fmt: skip
    result = subprocess.run(
        command, input=b"".join(image.tobytes() for image in even), capture_output=True, check=False
    )
    if result.returncode != 0:
        message = result.stderr.decode(errors="replace").strip().splitlines()
        raise OSError(f"ffmpeg failed: {message[-1] if message else result.returncode}")
    return result.stdout
