"""Every check that stands between a damaged, foreign or mismatched checkpoint and a resumed run.

A checkpoint is a weights file and a ``.state`` file that records the weights' SHA-256; weights are
checked finite before they are written; a resume is refused when the saved run used other settings
(recipe, number of processes) and fails with one clear line when no checkpoint of the run is usable.
Most tests copy one finished tiny run (checkpoints at steps 2, 4, ..., 12) and damage or edit the copy
the way the code reads it, so each check is reached on its own.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch
from tests.helpers.training import fit_with_callbacks

from sepconv.cli.main import main
from sepconv.io import CheckpointError, load_model
from sepconv.train import fit
from sepconv.train.checkpoint import checkpoint_files, checkpoint_name, list_checkpoints, load_checkpoint
from sepconv.train.run_folder import read_run_file
from sepconv.train.state import load_training_state, save_training_state

EVERY = dict(checkpoint_every_steps=2, keep_checkpoints=10)  # checkpoints at steps 2, 4, ..., 12, all kept
REFUSAL_TAIL = (
    "; resume with the settings of that run, or start a new one (in another folder, or overwriting this one)"
)


# Its tests run on one worker (pytest-xdist's --dist loadgroup), so the module fixture
# `finished_run` is computed once per run, not once on each worker.
pytestmark = pytest.mark.xdist_group("train-checkpoint_integrity")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_data, tiny_config) -> Path:
    folder = tmp_path_factory.mktemp("finished") / "run"
    fit(tiny_config(folder, **EVERY), data=tiny_data)
    return folder


@pytest.fixture
def run_copy(tmp_path, finished_run) -> Path:
    """A private copy of the finished run (its folder, run.json and checkpoints) to damage or edit."""
    return Path(shutil.copytree(finished_run, tmp_path / "run"))


def _state_at(folder: Path, step: int) -> Path:
    return folder / "checkpoints" / checkpoint_name(step, read_run_file(folder)["run_id"])


def _edit_saved_state(state_path: Path, edit) -> None:
    """Rewrite a checkpoint's training state through its own writer, so that only ``edit`` changes."""
    state = load_training_state(state_path)
    edit(state)
    save_training_state(state_path, state)


# Weights and state belong together: the state records the SHA-256 of its weights file.


def test_a_weights_file_of_another_checkpoint_is_refused_and_resume_falls_back(
    run_copy, tiny_data, tiny_config
):
    newest, older = _state_at(run_copy, 12), _state_at(run_copy, 4)
    newest_weights, _ = checkpoint_files(newest)
    # A sound, loadable model file, but the one of step 4: only the recorded checksum can tell.
    shutil.copyfile(checkpoint_files(older)[0], newest_weights)
    assert load_model(newest_weights) is not None
    with pytest.raises(CheckpointError) as refused:
        load_checkpoint(newest)
    assert str(refused.value) == f"{newest_weights} does not match the checksum recorded in {newest.name}"
    warnings: list[str] = []
    result = fit(tiny_config(run_copy, **EVERY), data=tiny_data, resume=run_copy, warn=warnings.append)
    assert result.resumed_from == _state_at(run_copy, 10)
    assert warnings == [
        f"skipping unusable checkpoint {newest.name}: {newest_weights} does not match the checksum "
        f"recorded in {newest.name}"
    ]


def test_a_training_state_without_the_weights_checksum_is_refused(run_copy):
    newest = _state_at(run_copy, 12)
    _edit_saved_state(newest, lambda state: state.pop("sepconv_weights_sha256"))
    with pytest.raises(CheckpointError) as refused:
        load_checkpoint(newest)
    weights = checkpoint_files(newest)[0]
    assert str(refused.value) == f"{newest.name} records no checksum of its weights file {weights.name}"


# Weights are finite in every checkpoint written, and a diverging run keeps its last good one.


def test_weights_that_turn_non_finite_are_never_checkpointed_and_the_last_good_checkpoint_stays(
    tmp_path, tiny_data, tiny_config
):
    import lightning.pytorch as pl

    class InfiniteGradient(pl.Callback):
        """One infinite gradient entry in step 4 (after the good checkpoint of step 2), with a finite
        loss: AdamW turns it into a NaN weight (inf / sqrt(inf)), the case the weights check is for."""

        def on_after_backward(self, trainer, module) -> None:
            if trainer.global_step + 1 == 4:
                next(module.model.parameters()).grad.view(-1)[0] = float("inf")

    config = tiny_config(tmp_path, checkpoint_every_steps=2, keep_checkpoints=1)
    with pytest.raises(RuntimeError) as stopped:
        fit_with_callbacks(config, [InfiniteGradient()], data=tiny_data)
    run_id = read_run_file(tmp_path)["run_id"]
    good = tmp_path / "checkpoints" / checkpoint_name(2, run_id)
    assert str(stopped.value) == f"weights are not finite at step 4; not checkpointing (last good: {good})"
    # keep_checkpoints=1: had a step-4 checkpoint been written, it would have pruned the good one.
    assert list_checkpoints(tmp_path / "checkpoints") == [good]
    assert sorted(path.name for path in (tmp_path / "checkpoints").iterdir()) == [
        good.with_suffix(".safetensors").name,
        good.name,
    ]
    weights = load_checkpoint(good)["state_dict"]
    assert all(torch.isfinite(value).all() for value in weights.values() if value.is_floating_point())


# A resume with other settings than the saved run's is refused, naming every difference.


def test_a_changed_recipe_is_refused_naming_each_change(run_copy, tiny_data, tiny_config):
    changed = tiny_config(run_copy, **EVERY, lr=0.02, schedule="cosine", seed=3)
    with pytest.raises(ValueError) as refused:
        fit(changed, data=tiny_data, resume=run_copy)
    assert str(refused.value) == (
        f"resume: {_state_at(run_copy, 12)} was written with other settings: "
        "lr 0.01 -> 0.02; schedule 'onecycle' -> 'cosine'; seed 0 -> 3" + REFUSAL_TAIL
    )


@pytest.mark.parametrize("field", ["devices", "num_nodes"])
def test_a_run_saved_with_another_number_of_processes_is_refused(run_copy, tiny_data, tiny_config, field):
    # As a run of 2 processes would have saved it (one process cannot run DDP in a fast test).
    newest = _state_at(run_copy, 12)
    _edit_saved_state(newest, lambda state: state["sepconv"]["config"].update({field: 2}))
    with pytest.raises(ValueError) as refused:
        fit(tiny_config(run_copy, **EVERY), data=tiny_data, resume=newest)
    assert str(refused.value) == (
        f"resume: {newest} was written with other settings: {field} 2 -> 1" + REFUSAL_TAIL
    )


def test_a_run_saved_with_another_precision_or_other_data_is_refused(run_copy, tiny_data, tiny_config):
    newest = _state_at(run_copy, 12)

    def edit(state):
        state["sepconv"]["precision"]["channels_last"] = True
        state["sepconv"]["data"]["split_sizes"] = [191, 48, 60]

    _edit_saved_state(newest, edit)
    with pytest.raises(ValueError) as refused:
        fit(tiny_config(run_copy, **EVERY), data=tiny_data, resume=newest)
    assert str(refused.value) == (
        f"resume: {newest} was written with other settings: channels_last (resolved) True -> False; "
        "data split_sizes [191, 48, 60] -> [192, 48, 60]" + REFUSAL_TAIL
    )


# `sepconv train --resume FILE.state`, and a run left with no usable checkpoint.

CLI_RUN = [
    "train",
    "--dataset",
    "synthetic",
    "--model-arg",
    "widths=[4,8,8,16]",
    "--epochs",
    "2",
    "--batch-size",
    "32",
    "--lr",
    "0.01",
    "--channels-last",
    "off",
    "--bf16",
    "off",
    "--no-tensorboard",
    "--checkpoint-every",
    "2",
    "--keep-checkpoints",
    "10",
    "--json",
]


@pytest.fixture
def tiny_data_for_the_cli(monkeypatch, tiny_data):
    """``sepconv train --dataset synthetic`` trains on the tiny cut of it (same name in the saved run)."""
    monkeypatch.setattr("sepconv.train.trainer.load_training_data", lambda config: tiny_data)


def test_cli_resume_from_one_state_file_continues_from_that_step(
    run_copy, finished_run, tiny_data_for_the_cli, capsys
):
    import json

    older = _state_at(run_copy, 4)  # not the newest: --resume FILE takes that file, not the newest good one
    code = main([*CLI_RUN, "--resume", str(older)])  # no --out: the run folder of the file
    captured = capsys.readouterr()
    assert code == 0, captured.err
    document = json.loads(captured.out)
    assert document["resumed_from"] == str(older)
    assert document["out_dir"] == str(run_copy)
    assert [row["step"] for row in document["history"]] == [6, 12]
    # Steps 5..12 again from the state of step 4: the finished run's model, bit for bit.
    again = load_model(run_copy / "model.safetensors").state_dict()
    for key, value in load_model(finished_run / "model.safetensors").state_dict().items():
        assert torch.equal(again[key], value), key


@pytest.mark.parametrize("damage", ["corrupt", "missing"])
def test_a_run_with_no_usable_checkpoint_is_one_clear_error(run_copy, tiny_data_for_the_cli, capsys, damage):
    run_id = read_run_file(run_copy)["run_id"]
    states = list_checkpoints(run_copy / "checkpoints")
    for state in states:
        weights, _ = checkpoint_files(state)
        if damage == "corrupt":
            weights.write_bytes(weights.read_bytes()[:100])  # truncated, as by a crash
        else:
            weights.unlink()
            state.unlink()
    before = {path: path.read_bytes() for path in run_copy.rglob("*") if path.is_file()}
    code = main([*CLI_RUN, "--resume", str(run_copy)])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    lines = captured.err.strip().splitlines()
    error = (
        f"sepconv train: error: --resume: no usable checkpoint of run {run_id} in {run_copy / 'checkpoints'}"
    )
    assert lines[-1] == error
    # Before it, one warning per checkpoint skipped (newest first), and nothing else.
    skipped = [] if damage == "missing" else [state.name for state in reversed(states)]
    assert len(lines) == len(skipped) + 1
    for line, name in zip(lines, skipped, strict=False):
        assert re.match(rf"sepconv train: warning: skipping unusable checkpoint {re.escape(name)}: ", line), (
            line
        )
    # Refused before the folder was claimed: every file as it was (the finished run's model included).
    assert {path: path.read_bytes() for path in run_copy.rglob("*") if path.is_file()} == before
