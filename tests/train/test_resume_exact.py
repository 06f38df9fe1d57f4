"""A run split at a step the test chooses and resumed is the uninterrupted run, bit for bit.

The split is made in-process, with no signal and no timing: :class:`~tests.helpers.training.StopAfterStep`
ends the first half right after the checkpoint of step ``k`` is written, and the second half resumes
from the run folder. Every step records its batch and the global RNG states as it starts
(:class:`~tests.helpers.training.StepRecorder`), so the test checks *where* the resumed run continues (the
batches of steps ``k+1...`` of the uninterrupted run, themselves checked against the sampler's
documented order computed here) and *with what randomness*, not only that the end agrees. On one
machine and thread count every kernel is deterministic, so "equal" means ``torch.equal``, no tolerance.
"""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from tests.helpers.training import (
    StepRecorder,
    StopAfterStep,
    StopRun,
    assert_identical,
    assert_steps_match,
    documented_batch,
    fit_with_callbacks,
)

from sepconv.train.checkpoint import list_checkpoints, load_checkpoint

TOTAL_STEPS = 12  # tiny_config: 2 epochs


@dataclasses.dataclass
class Run:
    steps: list  # StepRecord per step this process ran
    final: dict[str, Any]  # the last checkpoint, loaded
    history: list[dict[str, float]]
    csv_rows: list[dict[str, str]]
    model: torch.nn.Module


def _finished(result, steps) -> Run:
    with open(Path(result.out_dir) / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return Run(steps, load_checkpoint(result.last_checkpoint), result.history, rows, result.model)


@pytest.fixture(scope="module")
def uninterrupted(recorded_tiny_run) -> Run:
    result, steps = recorded_tiny_run
    return _finished(result, steps)


def test_the_uninterrupted_run_reads_each_epoch_in_the_samplers_documented_order(uninterrupted, tiny_data):
    assert [record.step for record in uninterrupted.steps] == list(range(1, TOTAL_STEPS + 1))
    for record in uninterrupted.steps:
        images, labels = documented_batch(tiny_data, record.step)
        assert torch.equal(record.images, images) and torch.equal(record.labels, labels), record.step
    # Dropout draws from the global generator every step: the RNG check below is not vacuous.
    assert not torch.equal(uninterrupted.steps[0].torch_rng, uninterrupted.steps[1].torch_rng)


@pytest.mark.parametrize("split", [4, 6, 8], ids=["mid-epoch-1", "epoch-end", "mid-epoch-2"])
def test_a_run_split_at_a_checkpoint_and_resumed_is_the_uninterrupted_run(
    tmp_path, tiny_data, tiny_config, uninterrupted, split
):
    config = tiny_config(tmp_path)  # a checkpoint every 4 steps (and at each epoch end)
    first_half = StepRecorder()
    with pytest.raises(StopRun):
        fit_with_callbacks(config, [first_half, StopAfterStep(split)], data=tiny_data)
    newest = list_checkpoints(tmp_path / "checkpoints")[-1]
    assert load_checkpoint(newest)["global_step"] == split
    assert not (tmp_path / "model.safetensors").exists()
    assert_steps_match(first_half.steps, uninterrupted.steps[:split])

    second_half = StepRecorder()
    result = fit_with_callbacks(config, [second_half], data=tiny_data, resume=tmp_path)
    assert result.resumed_from == newest
    # Where it continues and with what randomness: steps split+1... of the uninterrupted run.
    assert_steps_match(second_half.steps, uninterrupted.steps[split:])
    resumed = _finished(result, second_half.steps)
    for key, value in uninterrupted.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value), key
    for part in ("state_dict", "optimizer_states", "lr_schedulers", "global_step", "epoch", "loops"):
        assert_identical(resumed.final[part], uninterrupted.final[part], part)
    for part in ("rng", "partial_sums"):
        assert_identical(resumed.final["sepconv"][part], uninterrupted.final["sepconv"][part], part)
    assert_identical(resumed.history, uninterrupted.history, "history")
    assert_identical(resumed.csv_rows, uninterrupted.csv_rows, "metrics.csv")


class _CtrlCDuringStep(pl.Callback):
    """Does what the first Ctrl-C's signal handler does (sets the run's interrupt request), during ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if trainer.global_step + 1 == self.step:
            trainer.checkpoint_callback.interrupt.requested = True


def test_a_run_stopped_by_ctrl_c_between_checkpoints_resumes_as_the_uninterrupted_run(
    tmp_path, tiny_data, tiny_config, uninterrupted
):
    config = tiny_config(tmp_path)  # scheduled checkpoints at steps 4, 6, 8, 12: step 5 is none of them
    with pytest.raises(KeyboardInterrupt) as stopped:
        fit_with_callbacks(config, [_CtrlCDuringStep(5)], data=tiny_data)
    newest = list_checkpoints(tmp_path / "checkpoints")[-1]
    assert str(stopped.value) == (
        f"training stopped at step 5; last checkpoint: {newest}; resume the run in {tmp_path}"
    )
    assert load_checkpoint(newest)["global_step"] == 5
    recorder = StepRecorder()
    result = fit_with_callbacks(config, [recorder], data=tiny_data, resume=tmp_path)
    assert result.resumed_from == newest
    assert_steps_match(recorder.steps, uninterrupted.steps[5:])
    for key, value in uninterrupted.model.state_dict().items():
        assert torch.equal(result.model.state_dict()[key], value), key
    assert_identical(result.history, uninterrupted.history, "history")
