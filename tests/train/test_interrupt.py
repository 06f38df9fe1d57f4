"""Ctrl-C during ``sepconv train``: a checkpoint, the word "interrupted", the resume command, exit 130."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest
import torch
from tests.train.runs import synthetic_train_command, wait_for_a_checkpoint

from sepconv import load_model
from sepconv.train.checkpoint import list_checkpoints


def _command(out_dir, *extra):
    return synthetic_train_command(out_dir, "--epochs", "2", "--checkpoint-every", "5", *extra)


@pytest.mark.slow
def test_ctrl_c_writes_a_checkpoint_says_how_to_resume_and_resumes_exactly(tmp_path):
    environment = {**os.environ, "PYTHONHASHSEED": "0"}
    reference_dir, interrupted_dir = tmp_path / "reference", tmp_path / "interrupted"
    subprocess.run(_command(reference_dir), check=True, capture_output=True, env=environment, timeout=300)

    victim = subprocess.Popen(
        _command(interrupted_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment
    )
    wait_for_a_checkpoint(victim, interrupted_dir)  # training is under way: press Ctrl-C
    victim.send_signal(signal.SIGINT)
    stdout, stderr = victim.communicate(timeout=120)
    assert victim.returncode == 130, stderr[-2000:]
    assert stdout == ""
    last_line = stderr.strip().splitlines()[-1]
    assert last_line.startswith("sepconv train: interrupted: training stopped at step ")
    assert f"resume with the same command and --resume {interrupted_dir}" in last_line
    newest = list_checkpoints(interrupted_dir / "checkpoints")[-1]
    assert f"last checkpoint: {newest}" in last_line
    step = int(newest.stem.split("-")[1])
    assert f"stopped at step {step};" in last_line
    assert not (interrupted_dir / "model.safetensors").exists()
    assert not list(interrupted_dir.rglob("*.tmp"))  # nothing half-written

    subprocess.run(
        _command(interrupted_dir, "--resume", str(interrupted_dir)),
        check=True,
        capture_output=True,
        env=environment,
        timeout=300,
    )
    reference = load_model(reference_dir / "model.safetensors").state_dict()
    resumed = load_model(interrupted_dir / "model.safetensors").state_dict()
    for key in reference:
        # Same steps on the same data from a bit-exact checkpoint: only the kernels' run-to-run rounding
        # could differ, and on CPU they do not (same threads, same shapes); 1e-6 allows for that anyway.
        torch.testing.assert_close(resumed[key], reference[key], rtol=1e-5, atol=1e-6, msg=key)
