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
    with pytest.raises(RunFolderError, match=rf"already holds train run {first.run_id}.*--overwrite"):
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
    with pytest.raises(RunFolderError, match="--out"):
        check_out_dir(text)


def test_an_existing_file_is_not_a_folder(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunFolderError, match="is an existing file"):
        check_out_dir(tmp_path / "file")
    assert check_out_dir(tmp_path / "new" / "run") == Path(tmp_path / "new" / "run")
    assert os.fspath(check_out_dir("runs/x")) == "runs/x"
