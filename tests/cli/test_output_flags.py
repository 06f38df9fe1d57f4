"""Every output flag of every command: its suffix, and never a folder, device, FIFO or socket (issue 20).

An atomic write renames a new file over the path: as root, ``sepconv evaluate M --confusion-png
/dev/full`` turned the system's /dev/full into a regular file. Every output flag now refuses, at parse
time (before anything is loaded, built or trained), a wrong suffix and an existing path that is not a
regular file, in one line naming the flag, the value and what would be valid. The targets here are
FIFOs and folders made in tmp_path (never real /dev nodes).
"""

from __future__ import annotations

import os
import stat

import pytest
from tests.helpers.cli import run_sepconv

# (command line before the output flag, the flag, the suffixes it accepts)
OUTPUT_FLAGS = [
    (["evaluate", "model.safetensors"], "--confusion-png", (".png",)),
    (["export", "separable_cnn"], "--onnx", (".onnx",)),
    (["convert", "standard_cnn"], "--out", (".safetensors",)),
    (["diagram", "depthwise"], "--out", (".png", ".svg")),
    (["rf", "separable_cnn", "--layer", "features.0"], "--out", (".png", ".svg")),
    (["animate"], "--out", (".gif", ".mp4")),
    (["summary", "separable_cnn"], "--html", (".html", ".htm")),
    (["summary", "separable_cnn", "--measure", "torch"], "--cost-table", (".json",)),
    (["compare", "standard_cnn", "separable_cnn"], "--html", (".html", ".htm")),
    (["demo"], "--html", (".html", ".htm")),
]
IDS = [f"{words[0]} {flag}" for words, flag, _ in OUTPUT_FLAGS]


def assert_one_line(
    code: int, out: str, err: str, command: str, message: str, *, parsing: bool = True
) -> None:
    """Exit code 2, nothing on stdout, ``message`` as the one line on stderr (argparse adds where to get help)."""
    assert code == 2, err
    assert out == ""
    hint = f" (see 'sepconv {command} --help')" if parsing else ""
    assert err == f"sepconv {command}: error: {message}{hint}\n"


def refusal(flag: str, path: os.PathLike[str], kind: str) -> str:
    return (
        f"{flag} {str(path)!r} is {kind}, not a regular file; sepconv writes only regular files (an "
        "existing one is replaced): choose a file path"
    )


@pytest.mark.parametrize(("words", "flag", "suffixes"), OUTPUT_FLAGS, ids=IDS)
def test_a_fifo_is_refused_before_any_work_and_stays_a_fifo(
    words, flag, suffixes, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # demo's default --out (runs/demo) must not be created either
    fifo = tmp_path / f"pipe{suffixes[0]}"
    os.mkfifo(fifo)
    code, out, err = run_sepconv([*words, flag, str(fifo)], capsys)
    assert_one_line(code, out, err, words[0], refusal(flag, fifo, "a FIFO (named pipe)"))
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert sorted(path.name for path in tmp_path.iterdir()) == [fifo.name]


@pytest.mark.parametrize(("words", "flag", "suffixes"), OUTPUT_FLAGS, ids=IDS)
def test_a_folder_is_refused_and_kept(words, flag, suffixes, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / f"folder{suffixes[0]}"
    folder.mkdir()
    (folder / "kept.txt").write_text("mine")
    code, out, err = run_sepconv([*words, flag, str(folder)], capsys)
    assert_one_line(code, out, err, words[0], refusal(flag, folder, "a folder"))
    assert (folder / "kept.txt").read_text() == "mine"
    assert sorted(path.name for path in tmp_path.iterdir()) == [folder.name]


@pytest.mark.parametrize(("words", "flag", "suffixes"), OUTPUT_FLAGS, ids=IDS)
def test_a_wrong_suffix_is_refused_naming_the_valid_ones(
    words, flag, suffixes, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    wrong = tmp_path / "out.txt"
    code, out, err = run_sepconv([*words, flag, str(wrong)], capsys)
    message = f"{flag} must end in {' or '.join(suffixes)}, got {str(wrong)!r}"
    assert_one_line(code, out, err, words[0], message)
    assert list(tmp_path.iterdir()) == []


def test_the_valid_suffixes_are_listed():
    from sepconv.cli._common import UsageError, check_output_file

    with pytest.raises(UsageError, match=r"^--out must end in \.gif or \.mp4, got 'a\.png'$"):
        check_output_file("--out", "a.png", (".gif", ".mp4"))
    with pytest.raises(UsageError, match=r"^--html must end in \.html or \.htm, got 'page'$"):
        check_output_file("--html", "page", (".html", ".htm"))


def test_a_path_below_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    target = tmp_path / "notes.txt" / "d.png"
    code, out, err = run_sepconv(["diagram", "depthwise", "--out", str(target)], capsys)
    assert_one_line(
        code,
        out,
        err,
        "diagram",
        f"--out {str(target)!r}: {str(tmp_path / 'notes.txt')!r} is not a folder",
    )
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_a_link_to_a_regular_file_is_written_through(tmp_path, capsys):
    real = tmp_path / "real.svg"
    real.write_text("old")
    link = tmp_path / "latest.svg"
    link.symlink_to(real)
    code, _, err = run_sepconv(["diagram", "depthwise", "--out", str(link)], capsys)
    assert code == 0, err
    assert link.is_symlink() and real.read_text().startswith("<?xml")


def test_a_link_to_a_fifo_is_refused(tmp_path, capsys):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    link = tmp_path / "picture.png"
    link.symlink_to(fifo)
    code, _, err = run_sepconv(["diagram", "depthwise", "--out", str(link)], capsys)
    assert code == 2 and err.count("\n") == 1
    assert f"--out {str(link)!r} (a symbolic link to {str(fifo)!r}) is a FIFO (named pipe)" in err
    assert link.is_symlink() and stat.S_ISFIFO(os.stat(link).st_mode)


def test_evaluate_refuses_a_fifo_at_its_default_png_before_loading_anything(tmp_path, capsys):
    from sepconv import save_model
    from sepconv.models import create_model

    model_file = save_model(create_model("separable_cnn", widths=[4, 8, 8, 16]), tmp_path / "m.safetensors")
    fifo = tmp_path / "m-confusion.png"
    os.mkfifo(fifo)
    # An unknown data set would be the next error: the PNG is refused before the data set is looked up.
    code, out, err = run_sepconv(["evaluate", str(model_file), "--dataset", "no_such_data"], capsys)
    assert_one_line(
        code, out, err, "evaluate", refusal("--confusion-png", fifo, "a FIFO (named pipe)"), parsing=False
    )
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_export_refuses_a_fifo_at_its_int8_twin(tmp_path, capsys):
    fifo = tmp_path / "m.int8.onnx"
    os.mkfifo(fifo)
    code, out, err = run_sepconv(
        [
            "export",
            "separable_cnn",
            "--onnx",
            str(tmp_path / "m.onnx"),
            "--int8",
            "--calibration",
            "synthetic",
        ],
        capsys,
    )
    assert_one_line(code, out, err, "export", refusal("--onnx", fifo, "a FIFO (named pipe)"), parsing=False)
    assert sorted(path.name for path in tmp_path.iterdir()) == [fifo.name]


def test_animate_refuses_a_fifo_at_its_default_out(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.mkfifo("conv.gif")
    code, out, err = run_sepconv(["animate"], capsys)
    assert_one_line(
        code, out, err, "animate", refusal("--out", "conv.gif", "a FIFO (named pipe)"), parsing=False
    )
    assert stat.S_ISFIFO(os.lstat("conv.gif").st_mode)
