"""compare, convert, export and rf use the data set of a model's run with one seed rule.

The split seed is the training run's when the data set is the one the model was trained on (named or
not), a given ``--seed`` wins, and any other data set uses 0 (``sepconv.train.run_folder.split_seed``).
Each command is stopped at its first data-set load, which reports the name and seed it was asked for.
"""

from __future__ import annotations

import json

import pytest
from tests.helpers.cli import run_sepconv

import sepconv.data
from sepconv import save_model
from sepconv.models import create_model

RUN_SEED = 5


class _LoadedError(Exception):
    """Raised instead of loading: the command's first data set, as (name, seed)."""


def _record_load(name, **kwargs):
    raise _LoadedError(name, kwargs.get("seed", 0))


@pytest.fixture
def run_model(tmp_path, monkeypatch):
    """A model file in a run folder whose config.json says: synthetic, split seed 5."""
    monkeypatch.setattr(sepconv.data, "load_dataset", _record_load)
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"dataset": "synthetic", "seed": RUN_SEED}))
    model = create_model("standard_cnn", in_channels=3, num_classes=6, widths=[4, 8, 8, 16])
    return str(save_model(model, folder / "model.safetensors"))


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ([], ("synthetic", RUN_SEED)),
        (["--calibration", "synthetic"], ("synthetic", RUN_SEED)),
        (["--calibration", "mnist5k"], ("mnist5k", 0)),
    ],
    ids=["from-run", "named-same", "named-other"],
)
def test_convert(run_model, tmp_path, capsys, extra, expected):
    with pytest.raises(_LoadedError) as loaded:
        run_sepconv(["convert", run_model, "--out", str(tmp_path / "c.safetensors"), *extra], capsys)
    assert loaded.value.args == expected


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ([], ("synthetic", RUN_SEED)),
        (["--dataset", "synthetic"], ("synthetic", RUN_SEED)),
        (["--dataset", "synthetic", "--seed", "2"], ("synthetic", 2)),
        (["--dataset", "mnist5k"], ("mnist5k", 0)),
        (["--seed", "7"], ("synthetic", 7)),
    ],
    ids=["from-run", "named-same", "seed-given", "named-other", "seed-given-from-run"],
)
def test_export(run_model, tmp_path, capsys, extra, expected):
    with pytest.raises(_LoadedError) as loaded:
        run_sepconv(["export", run_model, "--onnx", str(tmp_path / "m.onnx"), *extra], capsys)
    assert loaded.value.args == expected


def test_compare(run_model, capsys):
    with pytest.raises(_LoadedError) as loaded:
        run_sepconv(["compare", "standard_cnn", run_model, "--json"], capsys)
    assert loaded.value.args == ("synthetic", RUN_SEED)  # B's run, as A is a registered name


def test_rf(run_model, tmp_path, capsys):
    with pytest.raises(_LoadedError) as loaded:
        run_sepconv(["rf", run_model, "--layer", "features.1", "--out", str(tmp_path / "rf.png")], capsys)
    assert loaded.value.args == ("synthetic", RUN_SEED)
