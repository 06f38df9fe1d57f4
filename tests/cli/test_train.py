"""``sepconv train``: a JSON run end to end, and bad input as one line with exit code 2."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from tests.helpers.cli import override

from sepconv.cli.main import main

TINY = [
    "--dataset",
    "synthetic",
    "--model-arg",
    "widths=[4,8,8,16]",
    "--channels-last",
    "off",
    "--bf16",
    "off",
    "--no-tensorboard",
]


@pytest.mark.slow  # a two-epoch CLI training run: about 6 s
def test_train_json_prints_one_document_matching_the_csv(tmp_path, capsys):
    code = main(["train", *TINY, "--epochs", "2", "--batch-size", "64", "--out", str(tmp_path), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    document = json.loads(captured.out)  # the whole of stdout is one JSON document
    assert [row["epoch"] for row in document["history"]] == [1, 2]
    with open(tmp_path / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    # CSV (str(float)) and JSON (repr) both write the shortest text of the same float64: exact, so
    # approx's default rel 1e-6 is a formality far below any real difference between two losses.
    assert [float(row["train_loss"]) for row in rows] == pytest.approx(
        [row["train_loss"] for row in document["history"]]
    )
    assert 0 <= document["test_accuracy"] <= 1
    assert (tmp_path / "model.safetensors").is_file()
    assert json.loads((tmp_path / "config.json").read_text())["model_kwargs"] == {"widths": [4, 8, 8, 16]}


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--epochs", "0"], "--epochs must be a positive integer, got 0"),
        (["--lr", "nan"], "--lr must be a finite number > 0, got nan"),
        (["--lr", "inf"], "--lr must be a finite number > 0, got inf"),
        (["--weight-decay", "-1"], "--weight-decay must be a finite number >= 0"),
        (["--label-smoothing", "1"], "--label-smoothing must be a finite number in [0, 1)"),
        (["--seed", "-1"], "--seed must be an integer in [0, 4,294,967,295], got -1"),
        (["--keep-checkpoints", "0"], "--keep-checkpoints must be a positive integer"),
        (["--model-arg", "width_mult=Infinity"], "--model-arg: model_kwargs['width_mult'] must hold finite"),
        (
            ["--model-arg", "num_classes=3"],
            "gives (3,) outputs per image, but data set 'synthetic' has 6 classes",
        ),
        (
            ["--model-arg", "in_channels=1"],
            "does not accept the images of data set 'synthetic' (3 channel(s), 32x32)",
        ),
        (["--out", ""], "--out must name a folder, got ''"),
        (["--out", "."], "the current folder"),
        (["--model", "no_such_model"], "unknown model name 'no_such_model'"),
        (["--batch-size", "33", "--devices", "2"], "divisible"),
        (["--model-arg", "widths"], "--model-arg must be KEY=VALUE"),
        (["--resume", "/nonexistent/run"], "no such checkpoint or folder"),
        (["--dataset", "no_such_set"], "no_such_set"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, capsys, monkeypatch, arguments, message):
    monkeypatch.chdir(tmp_path)
    code = main(["train", *override([*TINY, "--out", str(tmp_path / "run"), "--json"], arguments)])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sepconv train: error:"), captured.err
    assert message in lines[0]
    assert not (tmp_path / "run").exists()  # refused before --out was claimed (issue 20)


def test_empty_image_folder_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "images" / "cats").mkdir(parents=True)
    code = main(
        ["train", "--dataset", f"imagefolder:{tmp_path / 'images'}", "--out", str(tmp_path / "run"), "--json"]
    )
    captured = capsys.readouterr()
    assert code == 2
    assert len(captured.err.strip().splitlines()) == 1


def test_help_documents_multi_node_use(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    assert "torchrun" in text and "--num-nodes" in text


def _train(out_dir, *extra, capsys):
    base = [*TINY, "--epochs", "1", "--batch-size", "64", "--out", str(out_dir), "--json"]
    code = main(["train", *override(base, list(extra))])
    captured = capsys.readouterr()
    return code, captured


def test_a_folder_holding_another_run_is_refused_unless_overwritten(tmp_path, capsys):
    code, captured = _train(tmp_path, capsys=capsys)
    assert code == 0, captured.err
    first = json.loads(captured.out)
    code, captured = _train(tmp_path, capsys=capsys)
    assert code == 2
    assert f"already holds train run {first['run_id']}" in captured.err
    assert "resume it to continue, overwrite it to clear it first" in captured.err
    code, captured = _train(tmp_path, "--overwrite", capsys=capsys)
    assert code == 0, captured.err
    second = json.loads(captured.out)
    assert second["run_id"] != first["run_id"]
    names = sorted(path.name for path in (tmp_path / "checkpoints").iterdir())
    # Only the new run's checkpoint is left, and result.json names a file that exists.
    assert names == [
        f"step-00000014-{second['run_id']}.safetensors",
        f"step-00000014-{second['run_id']}.state",
    ]
    assert (tmp_path / "checkpoints" / Path(second["last_checkpoint"]).name).is_file()


def test_resume_names_each_setting_that_would_change_the_result(tmp_path, capsys):
    code, captured = _train(tmp_path, capsys=capsys)
    assert code == 0, captured.err
    code, captured = _train(tmp_path, "--resume", str(tmp_path), "--seed", "5", "--lr", "0.1", capsys=capsys)
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1
    assert "lr 0.004 -> 0.1; seed 0 -> 5" in lines[0]
    code, captured = _train(tmp_path, "--resume", str(tmp_path), "--dataset", "mnist5k", capsys=capsys)
    assert code == 2
    assert "dataset 'synthetic' -> 'mnist5k'" in captured.err
    assert "data num_classes 6 -> 10" in captured.err and "data in_channels 3 -> 1" in captured.err


@pytest.mark.slow  # CLI training runs: about 9 s
def test_resume_ignores_checkpoints_of_another_run(tmp_path, capsys):
    code, captured = _train(tmp_path / "a", "--checkpoint-every", "4", capsys=capsys)
    assert code == 0, captured.err
    run_a = json.loads(captured.out)["run_id"]
    code, captured = _train(tmp_path / "b", "--epochs", "2", capsys=capsys)
    assert code == 0, captured.err
    # A newer checkpoint of run b copied into run a's folder is never resumed (nor pruned).
    foreign = sorted((tmp_path / "b" / "checkpoints").iterdir())
    for path in foreign:
        shutil.copy(path, tmp_path / "a" / "checkpoints" / path.name)
    # As a run stopped after its last checkpoint, before result.json: a finished run is not resumed.
    (tmp_path / "a" / "result.json").unlink()
    code, captured = _train(
        tmp_path / "a", "--checkpoint-every", "4", "--resume", str(tmp_path / "a"), capsys=capsys
    )
    assert code == 0, captured.err
    resumed = json.loads(captured.out)
    assert Path(resumed["resumed_from"]).name == f"step-00000014-{run_a}.state"
    assert all((tmp_path / "a" / "checkpoints" / path.name).is_file() for path in foreign)


def test_a_short_one_cycle_run_trains(tmp_path, capsys):
    # 4 steps x 25 % warm-up was a one-step warm-up, which OneCycleLR divided by zero.
    code, captured = _train(tmp_path, "--max-steps", "4", capsys=capsys)
    assert code == 0, captured.err
    assert [row["step"] for row in json.loads(captured.out)["history"]] == [4]


@pytest.mark.slow  # CLI training runs: about 13 s
def test_the_same_seed_gives_the_same_numbers(tmp_path, capsys):
    runs = []
    for name in ("first", "second"):
        code, captured = _train(
            tmp_path / name, "--epochs", "2", "--channels-last", "auto", "--bf16", "auto", capsys=capsys
        )
        assert code == 0, captured.err
        runs.append(json.loads(captured.out))
    first, second = runs
    timings = ("epoch_seconds", "step_seconds")
    strip = [{key: value for key, value in row.items() if key not in timings} for row in first["history"]]
    assert strip == [
        {key: value for key, value in row.items() if key not in timings} for row in second["history"]
    ]
    assert first["test_accuracy"] == second["test_accuracy"]
    assert (first["channels_last"], first["bf16"], first["fused"]) == (
        second["channels_last"],
        second["bf16"],
        second["fused"],
    )
    assert first["precision_reason"].startswith("channels_last auto: 2-D convolutions; bf16 auto: CPU")


def test_every_config_field_is_a_flag_with_the_config_default(capsys):
    import dataclasses

    from sepconv.cli.main import build_parser
    from sepconv.train import TrainConfig

    args = build_parser().parse_args(["train"])
    defaults = TrainConfig()
    for item in dataclasses.fields(TrainConfig):
        if item.name in ("progress_bar",):  # follows --json
            continue
        expected = {"model_kwargs": [], "out_dir": None}.get(item.name, getattr(defaults, item.name))
        assert getattr(args, item.name) == expected, item.name
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for flag in (
        "--checkpoint-every",
        "--early-stopping",
        "--no-tensorboard",
        "--overwrite",
        "--out",
        "--model-arg",
    ):
        assert flag in text


def _files(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(path.relative_to(folder)): (path.read_bytes(), path.stat().st_mtime_ns)
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def test_overwrite_beside_resume_is_refused_in_one_line(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    code, captured = _train(tmp_path, "--resume", str(tmp_path), "--overwrite", capsys=capsys)
    assert (code, captured.out) == (2, "")
    assert captured.err == (
        "sepconv train: error: --overwrite clears --out and --resume continues the run in it: give one of "
        "them, not both\n"
    )
    assert _files(tmp_path).keys() == {"notes.txt"}


def test_resume_of_a_finished_run_says_so_and_changes_nothing(tmp_path, capsys):
    code, captured = _train(tmp_path, "--max-steps", "2", capsys=capsys)
    assert code == 0, captured.err
    run_id = json.loads(captured.out)["run_id"]
    before = _files(tmp_path)
    code, captured = _train(tmp_path, "--max-steps", "2", "--resume", str(tmp_path), capsys=capsys)
    assert (code, captured.out) == (2, "")
    assert captured.err == (
        f"sepconv train: error: --resume: run {run_id} in {tmp_path} has finished ({tmp_path / 'result.json'}); "
        "nothing to resume and nothing was changed; start a new run in another folder, or overwrite this one\n"
    )
    assert _files(tmp_path) == before  # result.json, model.safetensors, checkpoints: bytes and mtimes
    assert json.loads((tmp_path / "result.json").read_text())["last_checkpoint"] is not None


def test_an_out_that_is_a_fifo_is_refused_and_stays_a_fifo(tmp_path, capsys):
    import os
    import stat

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    code, captured = _train(fifo, capsys=capsys)
    assert (code, captured.out) == (2, "")
    assert captured.err == (
        f"sepconv train: error: --out {str(fifo)!r} is a FIFO (named pipe), not a folder; give a folder "
        "(new or empty)\n"
    )
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and [path.name for path in tmp_path.iterdir()] == ["pipe"]
