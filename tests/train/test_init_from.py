"""``TrainConfig.init_from``: a run starts from a model file's architecture and weights, and says so."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sepconv
from sepconv.convert import fold_batchnorm
from sepconv.io import CheckpointError, load_model, read_model_metadata, save_model
from sepconv.models import create_model
from sepconv.train import fit
from sepconv.train.checkpoint import checkpoint_files, list_checkpoints
from sepconv.train.trainer import build_model, resolve_init_from

WIDTHS = [4, 8, 8, 16]


def _random_state(model: nn.Module, seed: int) -> nn.Module:
    """``model`` with every float tensor (weights and BatchNorm statistics) drawn at random.

    Not the builder's initialisation, so a model that was rebuilt from scratch instead of loaded
    cannot match by chance; variances stay positive.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                values = torch.randn(tensor.shape, generator=generator) * 0.3
                tensor.copy_(values.abs() + 0.5 if name.endswith("running_var") else values)
    return model


def _standard_cnn(*, num_classes: int = 6, in_channels: int = 3, seed: int = 1) -> nn.Module:
    """A tiny standard CNN for the synthetic shapes, without dropout (training-mode forwards are exact)."""
    model = create_model(
        "standard_cnn", widths=WIDTHS, in_channels=in_channels, num_classes=num_classes, dropout=0.0
    )
    return _random_state(model, seed)


def _init_config(tiny_config, out_dir, init_from, **overrides):
    """``tiny_config`` with ``init_from`` and no model arguments (the file fixes the architecture)."""
    settings = dict(model_kwargs={}, init_from=str(init_from), fused="off", epochs=1, max_steps=1)
    settings.update(overrides)
    return tiny_config(out_dir, **settings)


def test_the_model_of_an_init_from_run_is_the_files_bit_for_bit(tmp_path, tiny_config):
    source = _standard_cnn()
    file = save_model(source, tmp_path / "start.safetensors")
    config = _init_config(tiny_config, tmp_path / "run", file)
    assert config.model == "separable_cnn"  # tiny_config's, which is TrainConfig's default
    resolved, initial = resolve_init_from(config)
    # Left at the default, the model name becomes the file's; the given config is not changed.
    assert resolved.model == "standard_cnn" and config.model == "separable_cnn"
    assert initial.sha256 == read_model_metadata(file)["sha256"]
    model = build_model(resolved, in_channels=1, num_classes=10)  # the data's sizes do not apply
    assert model.training
    assert repr(model) == repr(source)
    expected = source.state_dict()
    assert model.state_dict().keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(model.state_dict()[key], value), key


def test_a_checkpoint_state_path_means_the_weights_beside_it(tmp_path, tiny_config):
    file = save_model(_standard_cnn(), tmp_path / "step-00000004-0a1b2c3d4e5f.safetensors")
    config = _init_config(tiny_config, tmp_path / "run", file.with_suffix(".state"))
    resolved, initial = resolve_init_from(config)
    assert initial.path == file
    assert resolved.init_from == str(file.with_suffix(".state"))  # recorded as given


def test_a_model_name_other_than_the_files_is_refused_naming_both(tmp_path, tiny_config):
    file = save_model(_standard_cnn(), tmp_path / "start.safetensors")
    with pytest.raises(ValueError, match=r"model 'mobilenet_v2' differs .* \(standard_cnn\)"):
        resolve_init_from(_init_config(tiny_config, tmp_path / "run", file, model="mobilenet_v2"))
    # The file's own name is accepted as it is.
    resolved, _ = resolve_init_from(_init_config(tiny_config, tmp_path / "run", file, model="standard_cnn"))
    assert resolved.model == "standard_cnn"


def test_model_kwargs_with_init_from_are_refused(tmp_path, tiny_config):
    config = _init_config(
        tiny_config, tmp_path / "run", tmp_path / "start.safetensors", model_kwargs={"widths": WIDTHS}
    )
    with pytest.raises(ValueError, match=r"model_kwargs must be empty with init_from"):
        config.validate()


def test_missing_and_foreign_files_are_refused_before_a_run_folder_is_claimed(
    tmp_path, tiny_config, tiny_data
):
    with pytest.raises(FileNotFoundError, match="model file not found"):
        fit(_init_config(tiny_config, tmp_path / "run", tmp_path / "missing.safetensors"), data=tiny_data)
    foreign = tmp_path / "foreign.safetensors"
    from safetensors.torch import save_file

    save_file({"weight": torch.zeros(2)}, foreign)  # a safetensors file, but no sepconv recipe
    with pytest.raises(CheckpointError, match="is not a sepconv model file"):
        fit(_init_config(tiny_config, tmp_path / "run", foreign), data=tiny_data)
    assert not (tmp_path / "run").exists()


def test_a_model_for_other_classes_is_refused_before_training(tmp_path, tiny_config, tiny_data):
    file = save_model(_standard_cnn(num_classes=10), tmp_path / "ten.safetensors")
    with pytest.raises(ValueError, match=r"gives \(10,\) outputs per image, but data set .* has 6 classes"):
        fit(_init_config(tiny_config, tmp_path / "run", file), data=tiny_data)
    assert not (tmp_path / "run").exists()


def test_training_starts_from_the_files_weights(tmp_path, tiny_config, tiny_data):
    source = _standard_cnn()
    file = save_model(source, tmp_path / "start.safetensors")
    lr, weight_decay = 1e-5, 0.05
    config = _init_config(
        tiny_config,
        tmp_path / "run",
        file,
        schedule="constant",
        lr=lr,
        weight_decay=weight_decay,
        batch_size=32,
    )
    result = fit(config, data=tiny_data)
    assert [row["step"] for row in result.history] == [1]

    # The first (and only) step's batch: the sampler shuffles with torch.randperm seeded by seed + epoch
    # (PyTorch's DistributedSampler), here seed 0, epoch 0, one process.
    order = torch.randperm(len(tiny_data.train), generator=torch.Generator().manual_seed(0))[:32]
    images = torch.stack([tiny_data.train[int(index)][0] for index in order])
    labels = torch.tensor([tiny_data.train[int(index)][1] for index in order])
    reference = _standard_cnn().train()  # the file's weights, rebuilt by hand: same seed as `source`
    with torch.no_grad():
        expected = F.cross_entropy(reference(images), labels, label_smoothing=config.label_smoothing).item()
    # The same float32 operations on the same batch (fused kernels off, no dropout); the logged value is
    # loss * 32 / 32, exact (it was equal to the last bit here). 1e-6 relative leaves room only for a
    # different summation order inside oneDNN's convolutions (a few float32 ulps); the same architecture
    # with other random weights (seed 3) gave 1.84 against 2.11, a gap 10^5 times larger.
    assert result.history[0]["train_loss"] == pytest.approx(expected, rel=1e-6)

    # After one AdamW step each weight moved by at most lr * (1 + weight_decay * |w|): decoupled decay
    # scales w by (1 - lr * wd), and the first Adam step is lr * g / (|g| + eps), of size < lr. Each of
    # the two updates rounds once in float32 (2 ulps of |w| <= 2.4e-7 |w| together).
    trained = dict(load_model(result.model_path).named_parameters())
    for name, start in source.named_parameters():
        decay = weight_decay if start.ndim > 1 else 0.0  # biases and norm parameters are not decayed
        bound = lr * (1 + decay * start.abs()) + 2.4e-7 * start.abs()
        assert ((trained[name] - start).abs() <= bound).all(), name


def test_a_transformed_model_trains_and_keeps_its_recipe(tmp_path, tiny_config, tiny_data):
    source = fold_batchnorm(_standard_cnn())
    # The public save and load: they hand sepconv.convert's registry to sepconv.io, which replays it.
    file = sepconv.save_model(source, tmp_path / "folded.safetensors")
    result = fit(_init_config(tiny_config, tmp_path / "run", file), data=tiny_data)
    recipe = read_model_metadata(result.model_path)
    assert recipe["spec"] == read_model_metadata(file)["spec"]
    assert recipe["transforms"] == [{"name": "fold_batchnorm", "kwargs": {}}]
    trained = sepconv.load_model(result.model_path)
    assert repr(trained) == repr(source)
    assert not any(isinstance(module, nn.BatchNorm2d) for module in trained.modules())
    # The run's records name the file's model and the file, with its checksum.
    saved_config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (saved_config["model"], saved_config["init_from"]) == ("standard_cnn", str(file))
    saved_result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved_result["model"] == "standard_cnn"
    assert saved_result["init_from_sha256"] == read_model_metadata(file)["sha256"]


def test_resume_of_an_init_from_run_continues_from_the_checkpoint(tmp_path, tiny_config, tiny_data):
    file = save_model(_standard_cnn(), tmp_path / "start.safetensors")
    config = _init_config(
        tiny_config,
        tmp_path / "run",
        file,
        epochs=2,
        max_steps=None,
        checkpoint_every_steps=4,
        keep_checkpoints=5,
    )
    finished = fit(config, data=tiny_data)
    reference = load_model(finished.model_path).state_dict()
    # Forget the end of the run: the newest checkpoint left is step 8, in the middle of epoch 2.
    for path in checkpoint_files(list_checkpoints(tmp_path / "run" / "checkpoints")[-1]):
        path.unlink()
    (tmp_path / "run" / "model.safetensors").unlink()
    resumed = fit(config, data=tiny_data, resume=tmp_path / "run")
    assert resumed.resumed_from.name.startswith("step-00000008-")
    weights = load_model(resumed.model_path).state_dict()
    assert weights.keys() == reference.keys()
    # As in test_resume_kill: the same operations in the same order, so equal up to kernel choices
    # that may differ between a fresh and a continued process; steps 9-12 from the file's initial
    # weights instead of the checkpoint's would miss by the size of 8 training steps.
    for key, value in reference.items():
        torch.testing.assert_close(weights[key], value, rtol=1e-5, atol=1e-6, msg=key)


def test_resume_refuses_an_init_file_whose_contents_changed(tmp_path, tiny_config, tiny_data):
    file = save_model(_standard_cnn(seed=1), tmp_path / "start.safetensors")
    config = _init_config(tiny_config, tmp_path / "run", file)
    before = read_model_metadata(file)["sha256"]
    fit(config, data=tiny_data)
    save_model(_standard_cnn(seed=2), file)  # same path and architecture, other weights
    after = read_model_metadata(file)["sha256"]
    assert after != before
    with pytest.raises(ValueError, match=rf"init_from {file} contents \(sha256\) {before} -> {after}"):
        fit(config, data=tiny_data, resume=tmp_path / "run")
