"""Shared by the tests that run ``sepconv train`` in a subprocess and stop it: the command, and a wait."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from sepconv.train.checkpoint import list_checkpoints


def synthetic_train_command(out_dir: Path, *extra: str) -> list[str]:
    """``sepconv train`` of a tiny separable CNN on the synthetic shapes, float32 NCHW, JSON output."""
    return [
        sys.executable,
        "-m",
        "sepconv",
        "train",
        "--dataset",
        "synthetic",
        "--model",
        "separable_cnn",
        "--model-arg",
        "widths=[4,8,8,16]",
        "--batch-size",
        "32",
        "--channels-last",
        "off",
        "--bf16",
        "off",
        "--no-tensorboard",
        "--json",
        "--out",
        str(out_dir),
        *extra,
    ]


def wait_for_a_checkpoint(process: subprocess.Popen, out_dir: Path, timeout_seconds: float = 120) -> None:
    """Return once ``process`` has written its first checkpoint (training is under way); fail if it never does."""
    deadline = time.monotonic() + timeout_seconds
    while not list_checkpoints(out_dir / "checkpoints") and process.poll() is None:
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"no checkpoint was written within {timeout_seconds} s")
        time.sleep(0.01)
