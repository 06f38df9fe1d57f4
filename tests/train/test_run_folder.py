"""An output folder belongs to one run: claims, locks, refusals, overwrite, and unsafe folders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sepconv.train.run_folder import RUN_FILE, RunFolderError, check_out_dir, claim_run_folder


def test_a_new_run_writes_its_id_and_a_second_new_run_is_refused(tmp_path):
    folder = tmp_path / "run"
    with claim_run_folder(folder, kind="train") as first:
        assert json.loads((folder / RUN_FILE).read_text())["run_id"] == first.run_id
        assert len(first.run_id) == 12 and int(first.run_id, 16) >= 0
    (folder / "metrics.csv").write_text("epoch\n")
    with pytest.raises(
        RunFolderError, match=rf"already holds train run {first.run_id}.*overwrite it to clear it first"
    ):
        claim_run_folder(folder, kind="train")


def test_overwrite_clears_an_earlier_run_and_gives_a_new_id(tmp_path):
    folder = tmp_path / "run"
    first = claim_run_folder(folder, kind="demo")
    first.release()
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / "step-00000004-aaaaaaaaaaaa.state").write_bytes(b"old")
    with claim_run_folder(folder, kind="demo", overwrite=True) as second:
        assert second.run_id != first.run_id
        assert sorted(path.name for path in folder.iterdir() if path.name != ".sepconv.lock") == [RUN_FILE]


def test_overwrite_refuses_a_folder_that_is_not_a_run(tmp_path):
    (tmp_path / "thesis.tex").write_text("years of work")
    with pytest.raises(RunFolderError, match=r"not a sepconv run \(thesis.tex"):
        claim_run_folder(tmp_path, kind="train", overwrite=True)
    assert (tmp_path / "thesis.tex").read_text() == "years of work"


def test_resume_needs_the_folder_of_that_run(tmp_path):
    with claim_run_folder(tmp_path / "run", kind="train") as claimed:
        run_id = claimed.run_id
    with claim_run_folder(tmp_path / "run", kind="train", resume_run_id=run_id) as resumed:
        assert resumed.resumed and resumed.run_id == run_id
    with pytest.raises(RunFolderError, match="does not hold the run being resumed"):
        claim_run_folder(tmp_path / "run", kind="train", resume_run_id="0123456789ab")


def test_a_second_process_is_refused_while_the_first_holds_the_folder(tmp_path):
    folder = tmp_path / "run"
    with claim_run_folder(folder, kind="train"):
        script = textwrap.dedent(
            f"""
            from sepconv.train.run_folder import RunFolderError, claim_run_folder
            try:
                claim_run_folder({str(folder)!r}, kind="train", overwrite=True)
            except RunFolderError as error:
                print(error)
            """
        )
        completed = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
        )
    assert "in use by another sepconv run" in completed.stdout, completed.stderr
    # The lock died with its holder: the folder can be claimed (and cleared) again.
    with claim_run_folder(folder, kind="train", overwrite=True):
        pass


@pytest.mark.parametrize("text", ["", "  ", ".", "..", "~", "/"])
def test_empty_or_unsafe_folders_are_refused(text, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RunFolderError, match=r"^out_dir ") as refused:
        check_out_dir(text)
    assert refused.value.param == "out_dir"  # the command line names its flag for it


def test_an_existing_file_is_not_a_folder(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunFolderError, match="is an existing file"):
        check_out_dir(tmp_path / "file")
    assert check_out_dir(tmp_path / "new" / "run") == Path(tmp_path / "new" / "run")
    assert os.fspath(check_out_dir("runs/x")) == "runs/x"


# --- a run that fails before training gives its folder back; finished runs (issue 20) -----------


def _names(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


def test_abandon_removes_what_the_claim_made_and_the_folder_can_be_claimed_again(tmp_path):
    folder = tmp_path / "runs" / "new" / "run"  # "runs" and "new" do not exist yet
    claimed = claim_run_folder(folder, kind="train")
    (folder / "config.json").write_text("{}")
    (folder / "tensorboard").mkdir()
    (folder / "tensorboard" / "events").write_bytes(b"x")
    assert claimed.created == tmp_path / "runs" and not claimed.holds_only_its_claim()
    claimed.abandon()
    assert list(tmp_path.iterdir()) == []  # as it was before the claim
    with claim_run_folder(folder, kind="train") as again:  # no --overwrite needed
        assert again.run_id != claimed.run_id


def test_abandon_keeps_a_folder_that_existed_and_empties_it(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    claimed = claim_run_folder(folder, kind="demo")
    assert claimed.created is None and claimed.holds_only_its_claim()
    (folder / "standard_cnn").mkdir()
    claimed.abandon()
    assert folder.is_dir() and _names(folder) in ([], [".sepconv.lock"])
    claim_run_folder(folder, kind="demo").release()


def test_abandon_of_a_resumed_run_only_releases_its_lock(tmp_path):
    with claim_run_folder(tmp_path / "run", kind="train") as first:
        (tmp_path / "run" / "metrics.csv").write_text("epoch\n1\n")
    before = _names(tmp_path / "run")
    resumed = claim_run_folder(tmp_path / "run", kind="train", resume_run_id=first.run_id)
    resumed.abandon()
    assert _names(tmp_path / "run") == before
    assert (tmp_path / "run" / "metrics.csv").read_text() == "epoch\n1\n"
    claim_run_folder(tmp_path / "run", kind="train", resume_run_id=first.run_id).release()  # lock free


def test_an_out_that_is_a_fifo_is_refused_naming_what_it_is(tmp_path):
    import stat

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(RunFolderError) as refused:
        claim_run_folder(fifo, kind="train")
    assert str(refused.value) == (
        f"out_dir {str(fifo)!r} is a FIFO (named pipe), not a folder; give a folder (new or empty)"
    )
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_finished_run_reads_the_result_of_that_run_only(tmp_path):
    from sepconv.train.run_folder import finished_run

    assert finished_run(tmp_path, "0123456789ab") is None
    (tmp_path / "result.json").write_text(json.dumps({"run_id": "0123456789ab", "last_checkpoint": "c"}))
    assert finished_run(tmp_path, "0123456789ab") == {"run_id": "0123456789ab", "last_checkpoint": "c"}
    assert finished_run(tmp_path, "ba9876543210") is None  # another run's result
    (tmp_path / "result.json").write_text("{trunc")
    assert finished_run(tmp_path, "0123456789ab") is None
