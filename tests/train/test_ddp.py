"""``sepconv train --devices 2`` on CPU: two gloo processes train to the single-process accuracy."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def _train(out_dir, devices: int) -> dict:
    command = [
        sys.executable,
        "-m",
        "sepconv",
        "train",
        "--dataset",
        "synthetic",
        "--model-arg",
        "widths=[8,16,16,32]",
        "--epochs",
        "3",
        "--batch-size",
        "32",
        "--lr",
        "0.01",
        "--channels-last",
        "off",
        "--bf16",
        "off",
        "--accelerator",
        "cpu",
        "--devices",
        str(devices),
        "--no-tensorboard",
        "--json",
        "--out",
        str(out_dir),
    ]
    environment = {
        key: value for key, value in os.environ.items() if key not in ("MASTER_PORT", "LOCAL_RANK")
    }
    completed = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout)


@pytest.mark.slow
def test_two_cpu_processes_reach_the_single_process_accuracy(tmp_path):
    single = _train(tmp_path / "single", devices=1)
    double = _train(tmp_path / "ddp", devices=2)
    # The same global batch: 27 optimizer steps per epoch either way (840 images, 32 per step).
    assert [row["step"] for row in double["history"]] == [27, 54, 81]
    assert [row["step"] for row in single["history"]] == [27, 54, 81]
    # Validation metrics are reduced over both processes' halves of the 120 validation images.
    assert double["history"][-1]["val_accuracy"] >= 0.9
    assert abs(double["test_accuracy"] - single["test_accuracy"]) <= 0.01
    assert (tmp_path / "ddp" / "model.safetensors").is_file()
