"""A run killed with SIGKILL mid-epoch and resumed ends exactly where an uninterrupted run ends.

The victim kills itself, at a step the test chooses: a small driver runs ``sepconv train`` with one
extra callback that sends SIGKILL to its own process right after the checkpoint of step
``KILLED_AFTER`` is written (a checkpoint every 2 steps; step 38 is the 11th step of epoch 2). No sleep,
no polling: where the kill lands is part of the test, not of the machine's load.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess

import pytest
import torch
from tests.helpers.training import signal_after_checkpoint, synthetic_train_command

from sepconv.io import load_model
from sepconv.train.checkpoint import list_checkpoints

STEPS_PER_EPOCH = 27  # 840 synthetic training images, batch 32
KILLED_AFTER = 38
HANG_GUARD_SECONDS = 900  # only against a hang: a normal run takes well under a minute


def _command(out_dir, *extra):
    return synthetic_train_command(
        out_dir,
        "--epochs",
        "2",
        "--checkpoint-every",
        "2",
        "--keep-checkpoints",
        "50",
        "--deterministic",
        *extra,
    )


def _rows(out_dir):
    with open(out_dir / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_gives_the_uninterrupted_weights(tmp_path):
    environment = {**os.environ, "PYTHONHASHSEED": "0"}
    reference_dir, killed_dir = tmp_path / "reference", tmp_path / "killed"
    subprocess.run(
        _command(reference_dir), check=True, capture_output=True, env=environment, timeout=HANG_GUARD_SECONDS
    )

    victim_command = signal_after_checkpoint(tmp_path, "SIGKILL", KILLED_AFTER, _command(killed_dir))
    victim = subprocess.run(
        victim_command, capture_output=True, text=True, env=environment, timeout=HANG_GUARD_SECONDS
    )
    assert victim.returncode == -signal.SIGKILL, victim.stderr[-3000:]
    written = list_checkpoints(killed_dir / "checkpoints")
    assert [int(path.stem.split("-")[1]) for path in written] == [*range(2, 28, 2), 27, *range(28, 39, 2)]
    assert KILLED_AFTER % STEPS_PER_EPOCH != 0  # mid-epoch, by construction
    assert not (killed_dir / "model.safetensors").exists()

    subprocess.run(
        _command(killed_dir, "--resume", str(killed_dir)),
        check=True,
        capture_output=True,
        env=environment,
        timeout=HANG_GUARD_SECONDS,
    )
    # Same machine, same threads, the same steps from a bit-exact checkpoint: the same bits.
    reference = load_model(reference_dir / "model.safetensors").state_dict()
    resumed = load_model(killed_dir / "model.safetensors").state_dict()
    assert reference.keys() == resumed.keys()
    for key in reference:
        assert torch.equal(resumed[key], reference[key]), key
    timings = ("epoch_seconds", "step_seconds")
    expected = [
        {key: value for key, value in row.items() if key not in timings} for row in _rows(reference_dir)
    ]
    assert [
        {key: value for key, value in row.items() if key not in timings} for row in _rows(killed_dir)
    ] == (expected)
