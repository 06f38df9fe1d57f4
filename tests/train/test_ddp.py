"""``sepconv train --devices 2`` on CPU computes what one process computes with the same global batch.

No verdict here rests on luck: each run gets a port reserved for it (``MASTER_PORT``, see
:func:`tests.helpers.training.reserved_port`) rather than one picked free and released, which another process
could take in between, and the launch variables of an enclosing job are cleared.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from tests.helpers.training import launch_environment, reserved_port

from sepconv import load_model

HANG_GUARD_SECONDS = 900  # only against a hang (a lost process): a run takes well under a minute


def _train(out_dir, devices: int, *extra: str) -> dict:
    command = [
        sys.executable,
        "-m",
        "sepconv",
        "train",
        "--dataset",
        "synthetic",
        "--model-arg",
        "widths=[8,16,16,32]",
        # No dropout, to isolate BatchNorm; test_ddp_equality.py trains with it (keyed dropout).
        "--model-arg",
        "dropout=0",
        "--batch-size",
        "32",
        "--optimizer",
        "sgd",
        "--momentum",
        "0",
        "--schedule",
        "constant",
        "--lr",
        "0.01",
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
        *extra,
    ]
    with reserved_port() as port:
        completed = subprocess.run(
            command, capture_output=True, text=True, env=launch_environment(port), timeout=HANG_GUARD_SECONDS
        )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout)


@pytest.mark.slow
def test_two_processes_take_the_same_steps_as_one(tmp_path):
    """Two optimizer steps with synchronised BatchNorm statistics and averaged gradients.

    Same initial weights (seeded, broadcast by DDP), same global batches (each process takes every
    other index of the same epoch order), same statistics (sepconv.train.sync_norm on CPU): the two runs
    differ only in the order of float32 sums and in BatchNorm statistics summed in float64. That moves
    a gradient by ~1e-6 of its size; after two steps of lr 0.01 on gradients below 1, weights agree to
    ~1e-8 (measured: 6e-8). 1e-6 leaves a wide margin, yet a run without synchronised statistics
    (half-batch statistics per process) already has a training loss 2e-3 off (measured). Over many steps the runs drift
    apart legitimately: max-pooling turns rounding-level differences into different winners.
    """
    single = _train(tmp_path / "single", 1, "--max-steps", "2", "--channels-last", "off")
    double = _train(tmp_path / "ddp", 2, "--max-steps", "2", "--channels-last", "off")
    assert [row["step"] for row in double["history"]] == [2] == [row["step"] for row in single["history"]]
    assert double["history"][0]["train_loss"] == pytest.approx(single["history"][0]["train_loss"], rel=1e-6)
    one = load_model(tmp_path / "single" / "model.safetensors").state_dict()
    two = load_model(tmp_path / "ddp" / "model.safetensors").state_dict()
    assert one.keys() == two.keys()
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=0, atol=1e-6, msg=key)


@pytest.mark.slow
def test_two_processes_share_one_memory_format_choice_and_finish_epochs(tmp_path):
    """The automatic channels_last choice is one rule, broadcast from rank 0: DDP never sees two formats."""
    result = _train(tmp_path / "auto", 2, "--epochs", "2", "--channels-last", "auto")
    assert [row["step"] for row in result["history"]] == [27, 54]  # 840 images, 32 per global step
    assert result["channels_last"] is True  # the rule: models with 2-D convolutions train channels_last
    assert "channels_last auto: 2-D convolutions" in result["precision_reason"]
    # Validation metrics are reduced over both processes' halves of the 120 validation images: they are
    # those of the final model on all of them, evaluated here in one process, plainly (NCHW float32).
    # The run validated in channels_last, which rounds its float32 sums differently (~1e-6 of a
    # logit): the mean loss agrees to far better than 1e-4, while one process's half alone is 3e-3
    # off (measured); an argmax could flip only on a near-tie, so the accuracy may differ by one
    # image at most.
    from sepconv.data import load_dataset

    validation = load_dataset("synthetic", seed=0).val
    images = torch.stack([validation[index][0] for index in range(len(validation))])
    labels = torch.tensor([validation[index][1] for index in range(len(validation))])
    model = load_model(tmp_path / "auto" / "model.safetensors").eval()
    with torch.no_grad():
        logits = model(images)
    loss = torch.nn.functional.cross_entropy(logits, labels, label_smoothing=0.05).item()
    accuracy = (logits.argmax(1) == labels).float().mean().item()
    assert len(validation) == 120
    assert result["history"][-1]["val_loss"] == pytest.approx(loss, rel=1e-4)
    assert result["history"][-1]["val_accuracy"] == pytest.approx(accuracy, abs=1 / 120 + 1e-12)
