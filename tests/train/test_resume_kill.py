"""A run killed with SIGKILL mid-epoch and resumed ends exactly where an uninterrupted run ends."""

from __future__ import annotations

import csv
import os
import signal
import subprocess

import pytest
import torch
from tests.train.runs import synthetic_train_command, wait_for_a_checkpoint

from sepconv.io import load_model
from sepconv.train.checkpoint import list_checkpoints

STEPS_PER_EPOCH = 27  # 840 synthetic training images, batch 32


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
    subprocess.run(_command(reference_dir), check=True, capture_output=True, env=environment, timeout=300)

    victim = subprocess.Popen(
        _command(killed_dir), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=environment
    )
    wait_for_a_checkpoint(victim, killed_dir)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    assert victim.returncode == -signal.SIGKILL
    newest = list_checkpoints(killed_dir / "checkpoints")[-1]
    step = int(newest.stem.split("-")[1])
    assert step % STEPS_PER_EPOCH != 0, f"the kill came at an epoch boundary ({newest.name}); not mid-epoch"
    assert not (killed_dir / "model.safetensors").exists()

    subprocess.run(
        _command(killed_dir, "--resume", str(killed_dir)),
        check=True,
        capture_output=True,
        env=environment,
        timeout=300,
    )
    reference = load_model(reference_dir / "model.safetensors").state_dict()
    resumed = load_model(killed_dir / "model.safetensors").state_dict()
    assert reference.keys() == resumed.keys()
    for key in reference:
        torch.testing.assert_close(resumed[key], reference[key], rtol=1e-5, atol=1e-6, msg=key)
    for expected, got in zip(_rows(reference_dir), _rows(killed_dir), strict=True):
        for key in ("epoch", "step", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr"):
            assert float(got[key]) == pytest.approx(float(expected[key]), rel=1e-5), key
