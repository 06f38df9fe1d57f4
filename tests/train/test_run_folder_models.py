"""What a run folder says about the model files in it: the weights of a ``.state``, the data set and
split seed the model was trained on, and the one seed rule every command follows.

One real run (the tiny recipe, split seed 3) is trained for the module; its own ``config.json`` and
checkpoint files are what the functions must read.
"""

from __future__ import annotations

import json
import shutil

import pytest

from sepconv.train import fit
from sepconv.train.checkpoint import STATE_SUFFIX, list_checkpoints
from sepconv.train.run_folder import (
    data_for_model,
    model_file_path,
    split_seed,
    trained_on,
    training_config,
)

RUN_SEED = 3


# Its tests run on one worker (pytest-xdist's --dist loadgroup), so the module fixture
# `run` is computed once per run, not once on each worker.
pytestmark = pytest.mark.xdist_group("train-run_folder_models")


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_data, tiny_config):
    """A finished tiny run trained with split seed 3 (two checkpoints kept) and a stranger's copy of its
    model file, outside any run folder."""
    folder = tmp_path_factory.mktemp("run") / "tiny"
    result = fit(tiny_config(folder, seed=RUN_SEED), data=tiny_data)
    outside = tmp_path_factory.mktemp("elsewhere") / "copy.safetensors"
    shutil.copyfile(result.model_path, outside)
    return folder, result, outside


def test_a_state_file_stands_for_the_weights_beside_it(run):
    folder, _, _ = run
    states = sorted((folder / "checkpoints").glob(f"*{STATE_SUFFIX}"))
    assert len(states) == 2
    for state in states:
        weights = model_file_path(state)
        assert weights == state.with_name(state.name.removesuffix(".state") + ".safetensors")
        assert weights.is_file()
    assert model_file_path(folder / "model.safetensors") == folder / "model.safetensors"
    assert model_file_path("separable_cnn").name == "separable_cnn"  # a registered name passes through


def test_the_run_config_is_found_beside_the_model_and_above_its_checkpoints(run):
    folder, result, outside = run
    written = json.loads((folder / "config.json").read_text())
    assert (written["dataset"], written["seed"]) == ("synthetic", RUN_SEED)
    checkpoint_weights = [
        state.with_suffix(".safetensors") for state in list_checkpoints(folder / "checkpoints")
    ]
    assert len(checkpoint_weights) == 2 and all(weights.is_file() for weights in checkpoint_weights)
    for model_file in (result.model_path, *checkpoint_weights):
        assert training_config(model_file) == written
        assert trained_on(model_file) == ("synthetic", RUN_SEED)
    state = next((folder / "checkpoints").glob(f"*{STATE_SUFFIX}"))
    assert trained_on(state) == ("synthetic", RUN_SEED)
    # Not from a run: a registered name, a copy elsewhere, a missing file.
    for other in ("separable_cnn", outside, folder / "missing.safetensors"):
        assert training_config(other) is None and trained_on(other) is None


def test_an_unreadable_or_odd_config_says_nothing(tmp_path):
    model_file = tmp_path / "model.safetensors"
    model_file.write_bytes(b"weights")
    for text in ("{not json", "[1, 2]", json.dumps({"seed": 4})):
        (tmp_path / "config.json").write_text(text)
        assert trained_on(model_file) is None
    (tmp_path / "config.json").write_text(json.dumps({"dataset": "mnist5k"}))
    assert trained_on(model_file) == ("mnist5k", 0)  # a config without a seed was seed 0's


def test_one_seed_rule(run):
    _, result, outside = run
    model_file = result.model_path
    assert split_seed(model_file, "synthetic") == RUN_SEED  # its own data set: its run's split
    assert split_seed(model_file, "mnist5k") == 0  # another data set: the default
    assert split_seed(model_file, "synthetic", 7) == 7  # a given seed always wins
    assert split_seed(model_file, "mnist5k", 7) == 7
    assert split_seed(outside, "synthetic") == 0
    assert split_seed("separable_cnn", "synthetic") == 0


def test_the_data_set_to_use_with_a_model(run):
    _, result, outside = run
    model_file = result.model_path
    assert data_for_model(model_file) == ("synthetic", RUN_SEED)
    assert data_for_model(model_file, "synthetic") == ("synthetic", RUN_SEED)
    assert data_for_model(model_file, "mnist5k") == ("mnist5k", 0)
    assert data_for_model(model_file, seed=5) == ("synthetic", 5)
    assert data_for_model(outside) is None
    assert data_for_model(outside, "mnist5k") == ("mnist5k", 0)
    assert data_for_model("separable_cnn", "synthetic", 2) == ("synthetic", 2)
