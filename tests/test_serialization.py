"""Model files and training state: round trips, strict rebuilding, corruption, and refusing pickled code."""

import io
import json
import os
import re
import struct

import pytest
import torch
from torch import nn

import sepconv
from sepconv.models import create_model, model_spec
from sepconv.serialization import (
    CheckpointError,
    atomic_write_bytes,
    capture_rng_state,
    load_model,
    load_training_state,
    model_transforms,
    read_model_metadata,
    record_transform,
    register_transform,
    restore_rng_state,
    save_model,
    save_training_state,
)

ROUND_TRIPS = [
    ("mobilenet_v2", {"width_mult": 0.35, "num_classes": 5}, (2, 3, 32, 32)),
    ("mobilenet_v2", {"in_channels": 1, "num_classes": 10, "width_mult": 0.5}, (2, 1, 32, 32)),
    ("separable_cnn", {"in_channels": 3, "num_classes": 4, "widths": (8, 16, 16, 32)}, (2, 3, 28, 28)),
    ("standard_cnn", {}, (2, 1, 28, 28)),
    ("torchvision:resnet18", {"num_classes": 3}, (2, 3, 32, 32)),
]


def _trained_a_little(model: nn.Module, input_shape) -> nn.Module:
    """Perturb weights and batch-norm statistics away from their initial values, so a round trip must carry them."""
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.01)
        model.train()
        model(torch.randn(input_shape))
    return model


def _tiny_model() -> nn.Module:
    return create_model("separable_cnn", widths=(4, 4, 4, 4), num_classes=3)


@pytest.mark.parametrize(
    ("name", "kwargs", "input_shape"), ROUND_TRIPS, ids=[f"{n}-{i}" for i, (n, *_) in enumerate(ROUND_TRIPS)]
)
def test_round_trip_gives_identical_model(tmp_path, name, kwargs, input_shape):
    model = _trained_a_little(create_model(name, **kwargs), input_shape)
    path = save_model(model, tmp_path / "model.safetensors")
    loaded = load_model(path)
    assert not loaded.training
    original_state, loaded_state = model.state_dict(), loaded.state_dict()
    assert list(loaded_state) == list(original_state)
    for key, value in original_state.items():
        assert torch.equal(loaded_state[key], value), key
    inputs = torch.randn(input_shape)
    with torch.no_grad():
        torch.testing.assert_close(loaded(inputs), model.eval()(inputs), rtol=0, atol=0)
    assert model_spec(loaded)["name"] == name


def test_file_is_plain_safetensors_with_json_recipe(tmp_path):
    path = save_model(_tiny_model(), tmp_path / "tiny.safetensors")
    data = path.read_bytes()
    (header_size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_size])
    recipe = json.loads(header["__metadata__"]["sepconv"])
    assert recipe["format"] == "sepconv" and recipe["version"] == 1
    assert recipe["spec"] == {"name": "separable_cnn", "kwargs": {"widths": [4, 4, 4, 4], "num_classes": 3}}
    assert recipe["transforms"] == [] and len(recipe["sha256"]) == 64
    assert "features.0.norm.running_mean" in header or any("running_mean" in key for key in header)
    assert read_model_metadata(path)["spec"] == recipe["spec"]


def test_top_level_entry_points_and_cli_resolution(tmp_path):
    from sepconv.cli._common import resolve_model

    path = sepconv.save_model(_tiny_model(), tmp_path / "tiny.safetensors")
    assert isinstance(sepconv.load_model(path), nn.Module)
    assert model_spec(resolve_model(str(path)))["name"] == "separable_cnn"


def test_model_without_recipe_needs_create_model_or_spec(tmp_path):
    plain = nn.Sequential(nn.Conv2d(1, 2, 3))
    with pytest.raises(ValueError, match="create_model") as info:
        save_model(plain, tmp_path / "plain.safetensors")
    assert "spec=" in str(info.value) and not (tmp_path / "plain.safetensors").exists()
    model = _tiny_model()
    del model._sepconv_spec
    path = save_model(
        model,
        tmp_path / "given.safetensors",
        spec={"name": "separable_cnn", "kwargs": {"widths": [4] * 4, "num_classes": 3}},
    )
    assert model_spec(load_model(path))["kwargs"]["num_classes"] == 3


def test_recipe_that_is_not_json_is_refused_at_save(tmp_path):
    model = _tiny_model()
    model._sepconv_spec = {"name": "separable_cnn", "kwargs": {"act_layer": nn.ReLU}}
    with pytest.raises(ValueError, match="not plain JSON"):
        save_model(model, tmp_path / "bad.safetensors")


def test_weights_that_do_not_fit_the_recipe_are_named(tmp_path):
    model = _tiny_model()
    model._sepconv_spec = {"name": "separable_cnn", "kwargs": {"widths": [4, 4, 4, 8], "num_classes": 3}}
    path = save_model(model, tmp_path / "mismatch.safetensors")
    with pytest.raises(CheckpointError, match=r"mismatch\.safetensors.*shape mismatch"):
        load_model(path)


# --- transforms ---------------------------------------------------------------------------------


@register_transform("test_widen_head")
def _widen_head(model: nn.Module, *, extra_classes: int) -> nn.Module:
    head = model.classifier[-1]
    model.classifier[-1] = nn.Linear(head.in_features, head.out_features + extra_classes)
    return record_transform(model, model, "test_widen_head", extra_classes=extra_classes)


def test_transforms_are_replayed_on_load(tmp_path):
    model = _widen_head(_tiny_model(), extra_classes=2)
    assert model_transforms(model) == [{"name": "test_widen_head", "kwargs": {"extra_classes": 2}}]
    path = save_model(model, tmp_path / "widened.safetensors")
    loaded = load_model(path)
    assert loaded.classifier[-1].out_features == 5
    inputs = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(loaded(inputs), model.eval()(inputs), rtol=0, atol=0)
    assert model_transforms(loaded) == model_transforms(model)


def test_unknown_transform_and_duplicate_registration(tmp_path):
    model = _tiny_model()
    model._sepconv_transforms = [{"name": "no_such_transform", "kwargs": {}}]
    with pytest.raises(ValueError, match="unknown transform 'no_such_transform'"):
        save_model(model, tmp_path / "x.safetensors")
    with pytest.raises(ValueError, match="already registered"):
        register_transform("test_widen_head")(_widen_head)


# --- corruption ---------------------------------------------------------------------------------


@pytest.fixture
def saved_tiny(tmp_path):
    return save_model(_tiny_model(), tmp_path / "tiny.safetensors")


@pytest.mark.parametrize(
    "keep", [0, 5, 8, 100, -1], ids=["empty", "5-bytes", "8-bytes", "100-bytes", "minus-1"]
)
def test_truncated_model_file_is_named(saved_tiny, keep):
    data = saved_tiny.read_bytes()
    saved_tiny.write_bytes(data[:keep])
    with pytest.raises(CheckpointError, match=r"tiny\.safetensors"):
        load_model(saved_tiny)


def test_every_single_byte_flip_is_detected(saved_tiny):
    data = saved_tiny.read_bytes()
    for position in range(0, len(data), 7):
        damaged = bytearray(data)
        damaged[position] ^= 0xFF
        saved_tiny.write_bytes(bytes(damaged))
        with pytest.raises(CheckpointError, match=r"tiny\.safetensors"):
            load_model(saved_tiny)


def test_garbage_and_foreign_files_are_refused(tmp_path):
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError, match=r"garbage\.safetensors"):
        load_model(garbage)
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.ones(2)}, foreign)
    with pytest.raises(CheckpointError, match=r"foreign\.safetensors.*no sepconv recipe"):
        load_model(foreign)
    with pytest.raises(FileNotFoundError, match=r"missing\.safetensors"):
        load_model(tmp_path / "missing.safetensors")


# --- pickled code is never run ------------------------------------------------------------------


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _malicious_pickle(marker) -> bytes:
    buffer = io.BytesIO()
    torch.save({"model": _Payload(marker)}, buffer)
    return buffer.getvalue()


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    import hashlib

    from sepconv.serialization import _STATE_MAGIC  # to forge a header whose checksum is right

    marker = tmp_path / "pwned"
    payload = _malicious_pickle(marker)
    for name in ("evil.pt", "evil.ckpt", "evil.safetensors"):
        (tmp_path / name).write_bytes(payload)
        with pytest.raises(CheckpointError, match=re.escape(name)):
            load_model(tmp_path / name)
        with pytest.raises(CheckpointError, match=re.escape(name)):
            load_training_state(tmp_path / name)
    forged = tmp_path / "forged.state"
    forged.write_bytes(_STATE_MAGIC + hashlib.sha256(payload).digest() + payload)
    with pytest.raises(CheckpointError, match=r"forged\.state.*refused"):
        load_training_state(forged)
    assert not marker.exists()

    # The payload is live: unsafe loading would have run it.
    torch.load(io.BytesIO(payload), weights_only=False)
    assert marker.exists()


# --- training state -----------------------------------------------------------------------------


def test_training_state_round_trip(tmp_path):
    model = _tiny_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    model(torch.randn(2, 1, 28, 28)).sum().backward()
    optimizer.step()
    scheduler.step()
    state = {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "epoch": 3,
        "step": 120,
        "torch_rng": torch.get_rng_state(),
        "best": {"val_accuracy": 0.875, "path": "epoch2.safetensors"},
    }
    path = save_training_state(tmp_path / "state" / "last.state", state)
    loaded = load_training_state(path)
    assert loaded["epoch"] == 3 and loaded["step"] == 120 and loaded["best"] == state["best"]
    assert torch.equal(loaded["torch_rng"], state["torch_rng"])
    restored = torch.optim.AdamW(_tiny_model().parameters(), lr=1.0)
    restored.load_state_dict(loaded["optimizer"])
    assert restored.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"] == 5e-4
    first = next(iter(optimizer.state.values()))
    assert torch.equal(next(iter(restored.state.values()))["exp_avg"], first["exp_avg"])


def test_unsafe_training_state_is_refused_at_save(tmp_path):
    with pytest.raises(ValueError, match="safe loading refuses"):
        save_training_state(tmp_path / "x.state", {"callback": _Payload(tmp_path / "never")})
    assert not (tmp_path / "x.state").exists() and not (tmp_path / "never").exists()


@pytest.mark.parametrize("damage", ["empty", "truncated", "flipped", "garbage"])
def test_damaged_training_state_is_named(tmp_path, damage):
    path = save_training_state(tmp_path / "last.state", {"epoch": 1, "weights": torch.arange(100.0)})
    data = bytearray(path.read_bytes())
    if damage == "empty":
        data = bytearray()
    elif damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "flipped":
        data[len(data) // 2] ^= 0x01
    else:
        data = bytearray(os.urandom(len(data)))
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"last\.state"):
        load_training_state(path)


# --- atomic writes ------------------------------------------------------------------------------


def test_atomic_write_replaces_and_leaves_no_temporary_files(tmp_path):
    target = tmp_path / "nested" / "file.bin"
    atomic_write_bytes(target, b"first")
    atomic_write_bytes(target, b"second")
    assert target.read_bytes() == b"second"
    assert [path.name for path in target.parent.iterdir()] == ["file.bin"]


def test_failed_atomic_write_keeps_the_old_file(tmp_path):
    target = atomic_write_bytes(tmp_path / "file.bin", b"good")
    with pytest.raises(TypeError):
        atomic_write_bytes(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_bytes() == b"good"
    assert [path.name for path in tmp_path.iterdir()] == ["file.bin"]


def test_rng_state_survives_a_saved_training_state(tmp_path):
    import random

    import numpy as np

    path = save_training_state(tmp_path / "rng.state", {"rng": capture_rng_state()})
    expected = (random.random(), np.random.rand(), torch.rand(3))
    restore_rng_state(load_training_state(path)["rng"])
    again = (random.random(), np.random.rand(), torch.rand(3))
    assert again[:2] == expected[:2] and torch.equal(again[2], expected[2])
