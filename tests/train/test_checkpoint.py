"""Direct checks of ``sepconv.train.checkpoint`` pieces that a training run reaches only in rare cases:
checkpoints of several runs in one folder, files missing by hand, the Lightning I/O plug-in's preloaded
and non-preloaded paths, the Ctrl-C handler, the DDP vote, and the epoch-end hook's bookkeeping.

Written against the survivors of a mutation run (gaps C1-C12 in the mutation report). Checkpoints are
written with a tiny model through :class:`SafeCheckpointIO` itself, and the callbacks are driven with
small stand-ins for the Trainer and module, so no test trains.
"""

from __future__ import annotations

import hashlib
import shutil
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import TensorDataset

from sepconv.io import CheckpointError
from sepconv.models import create_model
from sepconv.train.checkpoint import (
    InterruptRequest,
    PeriodicCheckpoint,
    SafeCheckpointIO,
    TrainingInterrupted,
    checkpoint_files,
    checkpoint_name,
    checkpoint_run_id,
    find_resume_checkpoint,
    load_checkpoint,
)
from sepconv.train.data import make_loader
from sepconv.train.state import load_training_state

RUN_A, RUN_B = "0a0a0a0a0a0a", "0b0b0b0b0b0b"


def _tiny_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model("separable_cnn", widths=(4, 4, 4, 4), num_classes=3)


def _write_checkpoint(model: torch.nn.Module, path: Path, step: int) -> Path:
    """A checkpoint as Lightning hands it to the plug-in: weights in ``state_dict``, loop state beside."""
    checkpoint = {
        "global_step": step,
        "epoch": 0,
        "state_dict": {"model." + key: value for key, value in model.state_dict().items()},
        "hyper_parameters": {"lr": 0.01},
    }
    SafeCheckpointIO(model).save_checkpoint(checkpoint, path)
    return path


def _assert_same_weights(loaded: dict, model: torch.nn.Module) -> None:
    expected = {"model." + key: value for key, value in model.state_dict().items()}
    assert loaded["state_dict"].keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(loaded["state_dict"][key], value), key


# C1: run ids from file names.


def test_the_run_id_is_read_only_from_names_sepconv_writes():
    assert checkpoint_run_id(Path("ckpt") / "step-00000012-0a1b2c.state") == "0a1b2c"
    for name in ("model.state", "step-00000012-0A1B2C.state", "step-00000012-0a1b2c.ckpt", "last.ckpt"):
        assert checkpoint_run_id(name) is None, name


# The plug-in's writing side: a fresh nested folder, and only the loop state in the .state file.


def test_save_checkpoint_creates_nested_folders_and_keeps_weights_out_of_the_state(tmp_path):
    model = _tiny_model()
    state_path = _write_checkpoint(model, tmp_path / "a" / "b" / checkpoint_name(3, RUN_A), step=3)
    weights_path = state_path.with_suffix(".safetensors")
    state = load_training_state(state_path)
    # The weights live in the .safetensors file only; hyper-parameters are the recipe's business.
    assert state.keys() == {"global_step", "epoch", "sepconv_weights_sha256"}
    assert state["sepconv_weights_sha256"] == hashlib.sha256(weights_path.read_bytes()).hexdigest()


# C4: a checkpoint whose weights file is gone.


def test_a_state_whose_weights_file_is_missing_names_both(tmp_path):
    state_path = _write_checkpoint(_tiny_model(), tmp_path / checkpoint_name(3, RUN_A), step=3)
    weights_path = state_path.with_suffix(".safetensors")
    weights_path.unlink()
    with pytest.raises(CheckpointError) as refused:
        load_checkpoint(state_path)
    assert str(refused.value) == (
        f"{weights_path} is missing (its training state step-00000003-{RUN_A}.state refers to it)"
    )


# C2: resuming picks the newest checkpoint of the run asked for, not the newest in the folder.


def test_find_resume_checkpoint_keeps_to_the_run_asked_for(tmp_path):
    own = _write_checkpoint(_tiny_model(), tmp_path / checkpoint_name(5, RUN_A), step=5)
    other = tmp_path / checkpoint_name(99, RUN_B)  # newer and loadable, but of another run
    for source, target in zip(checkpoint_files(own), checkpoint_files(other), strict=True):
        shutil.copyfile(source, target)
    heard: list[str] = []
    assert find_resume_checkpoint(tmp_path, run_id=RUN_A, warn=heard.append) == own
    assert find_resume_checkpoint(tmp_path, run_id=RUN_B, warn=heard.append) == other
    assert find_resume_checkpoint(tmp_path, warn=heard.append) == other  # no run given: the newest
    assert find_resume_checkpoint(tmp_path, run_id="0c0c", warn=heard.append) is None
    assert heard == []


# C5: the plug-in hands a preloaded checkpoint over once, then reads the files.


def test_a_preloaded_checkpoint_is_handed_over_once_then_read_from_its_files(tmp_path):
    model = _tiny_model()
    state_path = _write_checkpoint(model, tmp_path / checkpoint_name(3, RUN_A), step=3)
    preloaded = {"global_step": 3, "marker": "the dict fit already read"}
    # Asked for by another spelling of the same file (as Lightning may pass it): resolved paths compare.
    (tmp_path / "sub").mkdir()
    plugin = SafeCheckpointIO(model, {state_path: preloaded})
    assert plugin.load_checkpoint(str(tmp_path / "sub" / ".." / state_path.name)) is preloaded
    again = plugin.load_checkpoint(state_path)  # the entry was used up: now from the files
    assert "marker" not in again and again["global_step"] == 3
    _assert_same_weights(again, model)


def test_without_a_preloaded_entry_the_plugin_reads_and_checks_the_files(tmp_path):
    model = _tiny_model()
    state_path = _write_checkpoint(model, tmp_path / checkpoint_name(3, RUN_A), step=3)
    loaded = SafeCheckpointIO(_tiny_model(seed=1)).load_checkpoint(str(state_path))
    assert loaded["global_step"] == 3 and loaded["epoch"] == 0
    _assert_same_weights(loaded, model)
    state_path.with_suffix(".safetensors").write_bytes(b"damaged")
    with pytest.raises(CheckpointError, match="does not match the checksum"):
        SafeCheckpointIO(model).load_checkpoint(state_path)


# C6: removing a checkpoint removes both of its files; a half-gone one is fine.


def test_remove_checkpoint_removes_both_files_and_tolerates_a_missing_one(tmp_path):
    model = _tiny_model()
    first = _write_checkpoint(model, tmp_path / checkpoint_name(1, RUN_A), step=1)
    second = _write_checkpoint(model, tmp_path / checkpoint_name(2, RUN_A), step=2)
    plugin = SafeCheckpointIO(model)
    plugin.remove_checkpoint(first)
    second.with_suffix(".safetensors").unlink()
    plugin.remove_checkpoint(second)
    assert list(tmp_path.iterdir()) == []


# C7, C8, C9: the Ctrl-C machinery.


def test_training_interrupted_names_the_checkpoint_written():
    path = Path("run") / "checkpoints" / checkpoint_name(5, RUN_A)
    stopped = TrainingInterrupted(path)
    assert str(stopped) == f"stopped after writing {path}"
    assert stopped.path is path


class _Exited(Exception):  # noqa: N818 (the stand-in's stop signal, not an error)
    """Raised by the stand-in for ``os._exit``, carrying its code."""


def test_the_first_ctrl_c_asks_and_the_second_ends_the_process_with_130(monkeypatch, capsys):
    def fake_exit(code):
        raise _Exited(code)

    monkeypatch.setattr("os._exit", fake_exit)
    request = InterruptRequest()
    assert request.requested is False
    request._handle(signal.SIGINT, None)
    assert request.requested is True
    assert capsys.readouterr().err == ""
    with pytest.raises(_Exited) as exited:
        request._handle(signal.SIGINT, None)
    assert exited.value.args == (130,)
    assert capsys.readouterr().err == "\ninterrupted again: stopping now\n"


class _Reducer:
    """``strategy.reduce_boolean_decision`` of a DDP run: records its calls, answers ``answer``."""

    def __init__(self, answer) -> None:
        self.answer = answer
        self.calls: list[tuple[tuple, dict]] = []

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        return self.answer


@pytest.mark.parametrize("requested", [False, True])
@pytest.mark.parametrize("answer", [0, 1])
def test_under_ddp_the_request_is_put_to_a_vote_that_any_process_carries(requested, answer):
    reducer = _Reducer(answer)
    trainer = SimpleNamespace(world_size=2, strategy=SimpleNamespace(reduce_boolean_decision=reducer))
    request = InterruptRequest()
    request.requested = requested
    agreed = request.agreed(trainer)
    assert agreed is bool(answer)  # the vote's answer, as a bool, whatever this process asked
    assert reducer.calls == [((requested,), {"all": False})]  # all=False: any one process suffices


@pytest.mark.parametrize("requested", [False, True])
def test_a_single_process_decides_alone(requested):
    reducer = _Reducer(answer=not requested)
    trainer = SimpleNamespace(world_size=1, strategy=SimpleNamespace(reduce_boolean_decision=reducer))
    request = InterruptRequest()
    request.requested = requested
    assert request.agreed(trainer) is requested
    assert reducer.calls == []


# C3: PeriodicCheckpoint._save, driven with a Trainer stand-in that writes empty checkpoint files.


class _Trainer(SimpleNamespace):
    """What ``PeriodicCheckpoint`` reads of a Trainer; ``save_checkpoint`` writes two empty files."""

    def __init__(self, **fields) -> None:
        settings = dict(global_step=0, is_global_zero=True, current_epoch=0, max_epochs=2, max_steps=-1)
        settings.update(should_stop=False, train_dataloader=None)
        super().__init__(**{**settings, **fields})
        self.saved: list[str] = []

    def save_checkpoint(self, path) -> None:
        for file in checkpoint_files(Path(path)):
            file.write_bytes(b"")
        self.saved.append(Path(path).name)


def _module(run_id: str = RUN_A) -> SimpleNamespace:
    return SimpleNamespace(run_id=run_id, parameters=lambda: [torch.zeros(2)])


def _names(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def test_pruning_keeps_the_newest_of_its_own_run_and_leaves_other_runs_alone(tmp_path):
    other = _Trainer()
    for step in (1, 2, 3):  # another run's checkpoints in the same folder
        other.save_checkpoint(tmp_path / checkpoint_name(step, RUN_B))
    callback = PeriodicCheckpoint(tmp_path, every_steps=1, every_epochs=0, keep=2)
    trainer = _Trainer()
    for step in (1, 2, 3, 4):
        trainer.global_step = step
        callback._save(trainer, _module(RUN_A))
    assert callback.last_path == tmp_path / checkpoint_name(4, RUN_A)
    expected = [
        checkpoint_name(step, run) for run, steps in ((RUN_A, (3, 4)), (RUN_B, (1, 2, 3))) for step in steps
    ]
    expected += [name.replace(".state", ".safetensors") for name in expected]
    assert _names(tmp_path) == sorted(expected)


def test_pruning_a_checkpoint_whose_weights_file_is_already_gone(tmp_path):
    callback = PeriodicCheckpoint(tmp_path, every_steps=1, every_epochs=0, keep=1)
    trainer = _Trainer(global_step=1)
    callback._save(trainer, _module())
    (tmp_path / checkpoint_name(1, RUN_A)).with_suffix(".safetensors").unlink()  # lost by hand
    trainer.global_step = 2
    callback._save(trainer, _module())
    newest = tmp_path / checkpoint_name(2, RUN_A)
    assert _names(tmp_path) == sorted([newest.name, newest.with_suffix(".safetensors").name])


def test_a_step_asked_for_twice_is_written_once(tmp_path):
    # Step 6 is both a multiple of every_steps and an epoch end: the epoch-end hook must not write it again.
    callback = PeriodicCheckpoint(tmp_path, every_steps=3, every_epochs=1, keep=5)
    trainer = _Trainer(global_step=6)
    callback._save(trainer, _module())
    callback._save(trainer, _module())
    trainer.global_step = 7
    callback._save(trainer, _module())
    assert trainer.saved == [checkpoint_name(6, RUN_A), checkpoint_name(7, RUN_A)]


# C11, C12: the epoch-end hook. The loader is a real resumable loader, so what it will store in the
# checkpoint (its state_dict) is what is checked.


def _loader():
    images = torch.zeros(12, 1)
    return make_loader(TensorDataset(images), batch_size=4, seed=0, shuffle=True)


@pytest.mark.parametrize("epoch", [0, 3])
def test_at_an_epoch_end_the_loader_records_the_start_of_the_next_epoch(tmp_path, epoch):
    loader = _loader()
    loader.sampler.set_epoch(epoch)
    loader.batches_done = 3  # the whole epoch of 12 images in batches of 4, as the batch-end hook left it
    trainer = _Trainer(train_dataloader=loader, current_epoch=epoch, max_epochs=10, global_step=3)
    callback = PeriodicCheckpoint(tmp_path, every_steps=0, every_epochs=1, keep=5)
    callback.on_train_epoch_end(trainer, _module())
    assert loader.state_dict() == {"epoch": epoch + 1, "batches_done": 0}
    assert trainer.saved == [checkpoint_name(3, RUN_A)]


@pytest.mark.parametrize(
    ("trainer_fields", "written"),
    [
        (dict(current_epoch=0, max_epochs=2), False),  # epoch 1 of 2: not the last
        (dict(current_epoch=1, max_epochs=2), True),  # epoch 2 of 2: the run's end
        (dict(current_epoch=0, max_epochs=2, should_stop=True), True),  # early stopping
        (dict(current_epoch=0, max_epochs=3, max_steps=5), True),  # max_steps reached (step 5)
        (dict(current_epoch=0, max_epochs=3, max_steps=6), False),  # max_steps still ahead
        (dict(current_epoch=0, max_epochs=3, max_steps=-1), False),  # Lightning's "no max_steps"
    ],
)
def test_with_no_epoch_checkpoints_only_the_runs_last_epoch_end_is_written(tmp_path, trainer_fields, written):
    # every_steps=4 does not divide step 5: only the end-of-run rule can write it.
    trainer = _Trainer(train_dataloader=_loader(), global_step=5, **trainer_fields)
    callback = PeriodicCheckpoint(tmp_path, every_steps=4, every_epochs=0, keep=5)
    callback.on_train_epoch_end(trainer, _module())
    assert trainer.saved == ([checkpoint_name(5, RUN_A)] if written else [])


# Epochs are counted from 0, three steps each: every 2nd epoch ends at current_epoch 1 and 3 (steps 6
# and 12); every 3rd at current_epoch 2 and 5 (steps 9 and 18).
@pytest.mark.parametrize(
    ("every_epochs", "epochs_run", "written_steps"), [(2, 5, [6, 12]), (3, 6, [9, 18])], ids=["2nd", "3rd"]
)
def test_every_nth_epoch_is_written(tmp_path, every_epochs, epochs_run, written_steps):
    callback = PeriodicCheckpoint(tmp_path, every_steps=0, every_epochs=every_epochs, keep=5)
    trainer = _Trainer(train_dataloader=_loader(), max_epochs=10)
    for epoch in range(epochs_run):
        trainer.current_epoch, trainer.global_step = epoch, 3 * (epoch + 1)
        callback.on_train_epoch_end(trainer, _module())
    assert trainer.saved == [checkpoint_name(step, RUN_A) for step in written_steps]


def test_a_one_step_run_is_written_at_its_end(tmp_path):
    # max_steps=1 ends the run mid-epoch after step 1, which every_steps=4 does not write.
    trainer = _Trainer(train_dataloader=_loader(), global_step=1, max_epochs=3, max_steps=1)
    callback = PeriodicCheckpoint(tmp_path, every_steps=4, every_epochs=0, keep=5)
    callback.on_train_epoch_end(trainer, _module())
    assert trainer.saved == [checkpoint_name(1, RUN_A)]
