"""A run checks everything before it claims its folder, gives the folder back when it fails before
training, refuses --overwrite beside --resume, and leaves a finished run exactly as it is (issue 20)."""

from __future__ import annotations

from pathlib import Path

import pytest
from torch.utils.data import Subset

from sepconv.data import DataSplits
from sepconv.train import fit
from sepconv.train.run_folder import RunFolderError


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``folder``: its bytes and modification time (ns), to show that nothing changed."""
    return {
        str(path.relative_to(folder)): (path.read_bytes(), path.stat().st_mtime_ns)
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def test_a_model_that_does_not_fit_the_data_is_refused_before_the_folder_is_claimed(
    tmp_path, tiny_data, tiny_config
):
    config = tiny_config(tmp_path / "run", model_kwargs={"widths": [4, 8, 8, 16], "in_channels": 1})
    with pytest.raises(
        ValueError, match=r"does not accept the images of data set 'synthetic-tiny' \(3 channel"
    ):
        fit(config, data=tiny_data)
    assert list(tmp_path.iterdir()) == []


def test_an_empty_training_split_is_refused_before_the_folder_is_claimed(tmp_path, tiny_data, tiny_config):
    empty = DataSplits(
        **{**vars(tiny_data), "train": Subset(tiny_data.train, [])}  # the other splits as they are
    )
    with pytest.raises(ValueError, match="has no training samples"):
        fit(tiny_config(tmp_path / "run"), data=empty)
    assert list(tmp_path.iterdir()) == []


def test_a_run_that_fails_before_training_gives_its_folder_back(
    tmp_path, tiny_data, tiny_config, monkeypatch
):
    import sepconv.train.trainer as trainer

    def trainer_that_cannot_start(*args, **kwargs):
        raise RuntimeError("the trainer could not start")  # as a process group or a logger that fails

    config = tiny_config(tmp_path / "run", max_steps=2, checkpoint_every_steps=None)
    with monkeypatch.context() as patched:
        patched.setattr(trainer, "make_trainer", trainer_that_cannot_start)
        with pytest.raises(RuntimeError, match="could not start"):
            fit(config, data=tiny_data)
    assert list(tmp_path.iterdir()) == []  # run.json and the folder were this run's: both gone
    result = fit(config, data=tiny_data)  # the same command again, no overwrite
    assert result.history[-1]["step"] == 2 and (tmp_path / "run" / "result.json").is_file()


def test_a_run_that_fails_after_training_started_keeps_its_folder(tmp_path, tiny_data, tiny_config):
    import lightning.pytorch as pl
    from tests.helpers.training import fit_with_callbacks

    class FailAtStep3(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
            if trainer.global_step == 3:
                raise RuntimeError("failed at step 3")

    config = tiny_config(tmp_path / "run", checkpoint_every_steps=2)
    with pytest.raises(RuntimeError, match="failed at step 3"):
        fit_with_callbacks(config, [FailAtStep3()], data=tiny_data)
    checkpoints = sorted(path.name for path in (tmp_path / "run" / "checkpoints").iterdir())
    assert [name[:13] for name in checkpoints] == ["step-00000002"] * 2  # kept, to resume from


def test_overwrite_beside_resume_is_refused_and_changes_nothing(tmp_path, tiny_data, tiny_config):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="overwrite clears the output folder and resume continues the run"):
        fit(tiny_config(tmp_path / "run", overwrite=True), data=tiny_data, resume=tmp_path / "run")
    assert snapshot(tmp_path / "run").keys() == {"notes.txt"}


@pytest.mark.parametrize("resume_from", ["folder", "last checkpoint"])
def test_resuming_a_finished_run_says_so_and_changes_nothing(tmp_path, tiny_data, tiny_config, resume_from):
    config = tiny_config(tmp_path / "run", max_steps=4, checkpoint_every_steps=2)
    finished = fit(config, data=tiny_data)
    before = snapshot(tmp_path / "run")
    resume = tmp_path / "run" if resume_from == "folder" else finished.last_checkpoint
    with pytest.raises(RunFolderError) as refused:
        fit(config, data=tiny_data, resume=resume)
    assert str(refused.value) == (
        f"resume: run {finished.run_id} in {tmp_path / 'run'} has finished ({tmp_path / 'run' / 'result.json'}); "
        "nothing to resume and nothing was changed; start a new run in another folder, or overwrite this one"
    )
    assert snapshot(tmp_path / "run") == before  # bytes and modification times
