"""Ctrl-C during ``sepconv train``: a checkpoint, the word "interrupted", the resume command, exit 130.

The run presses its own Ctrl-C (SIGINT to itself) right after the checkpoint of step ``PRESSED_AFTER``
is written, so where the interruption lands is chosen by the test, not by the machine's speed.
"""

from __future__ import annotations

import os
import subprocess

import pytest
import torch
from tests.helpers.training import signal_after_checkpoint, synthetic_train_command

from sepconv import load_model
from sepconv.train.checkpoint import list_checkpoints

PRESSED_AFTER = 10  # a checkpoint every 5 steps; 27 steps per epoch, so mid-epoch 1
HANG_GUARD_SECONDS = 900  # only against a hang: a run takes well under a minute


def _command(out_dir, *extra):
    return synthetic_train_command(out_dir, "--epochs", "2", "--checkpoint-every", "5", *extra)


@pytest.mark.slow
def test_ctrl_c_writes_a_checkpoint_says_how_to_resume_and_resumes_exactly(tmp_path):
    environment = {**os.environ, "PYTHONHASHSEED": "0"}
    reference_dir, interrupted_dir = tmp_path / "reference", tmp_path / "interrupted"
    subprocess.run(
        _command(reference_dir), check=True, capture_output=True, env=environment, timeout=HANG_GUARD_SECONDS
    )

    victim = subprocess.run(
        signal_after_checkpoint(tmp_path, "SIGINT", PRESSED_AFTER, _command(interrupted_dir)),
        capture_output=True,
        text=True,
        env=environment,
        timeout=HANG_GUARD_SECONDS,
    )
    stdout, stderr = victim.stdout, victim.stderr
    assert victim.returncode == 130, stderr[-2000:]
    assert stdout == ""
    last_line = stderr.strip().splitlines()[-1]
    assert last_line.startswith("sepconv train: interrupted: training stopped at step ")
    assert (
        f"resume the run in {interrupted_dir} (the same command with --resume {interrupted_dir})" in last_line
    )
    newest = list_checkpoints(interrupted_dir / "checkpoints")[-1]
    assert f"last checkpoint: {newest}" in last_line
    # The first Ctrl-C only sets a flag, which the checkpoint callback reads at the end of each step;
    # it read it before the press in step PRESSED_AFTER, so the run stops after the next step.
    assert int(newest.stem.split("-")[1]) == PRESSED_AFTER + 1
    assert f"stopped at step {PRESSED_AFTER + 1};" in last_line
    assert not (interrupted_dir / "model.safetensors").exists()
    assert not list(interrupted_dir.rglob("*.tmp"))  # nothing half-written

    subprocess.run(
        _command(interrupted_dir, "--resume", str(interrupted_dir)),
        check=True,
        capture_output=True,
        env=environment,
        timeout=HANG_GUARD_SECONDS,
    )
    reference = load_model(reference_dir / "model.safetensors").state_dict()
    resumed = load_model(interrupted_dir / "model.safetensors").state_dict()
    assert reference.keys() == resumed.keys()
    for key in reference:
        # Same steps on the same data from a bit-exact checkpoint, same machine and threads: same bits.
        assert torch.equal(resumed[key], reference[key]), key
