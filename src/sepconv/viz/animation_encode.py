"""Encoding drawn frames (RGB ``uint8`` arrays) into the bytes of an animated GIF or an MP4.

GIF by Pillow, with a small adaptive palette per frame; MP4 (H.264) by ``ffmpeg`` through pipes, so
nothing touches the disk until the caller writes the bytes atomically.
"""

from __future__ import annotations

import io
import shutil
import subprocess
from collections.abc import Sequence
from typing import Any

__all__ = ["ANIMATION_FORMATS", "encode_gif", "encode_mp4", "ffmpeg_executable"]

ANIMATION_FORMATS = ("gif", "mp4")


def encode_gif(images: Sequence[Any], fps: float) -> bytes:
    from PIL import Image

    # An adaptive palette per frame: the pictures use a handful of flat colours, so 32 keep them exact
    # and the file small.
    frames = [
        Image.fromarray(image).quantize(colors=32, method=Image.Quantize.FASTOCTREE) for image in images
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
