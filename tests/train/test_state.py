"""Training state files and RNG state: round trips, refusing unsafe or damaged files, exact RNG resumption."""

import hashlib
import io
import os
import random
import re

import numpy as np
import pytest
import torch
from tests.helpers.attacks import Payload, malicious_pickle

from sepconv.io import CheckpointError
from sepconv.models import create_model
from sepconv.train.state import (
    _STATE_MAGIC,  # to forge a header whose checksum is right
    capture_rng_state,
    load_training_state,
    restore_rng_state,
    save_training_state,
)


def _tiny_model() -> torch.nn.Module:
    return create_model("separable_cnn", widths=(4, 4, 4, 4), num_classes=3)


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
        save_training_state(tmp_path / "x.state", {"callback": Payload(tmp_path / "never")})
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


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    payload = malicious_pickle(marker)
    for name in ("evil.pt", "evil.ckpt", "evil.state"):
        (tmp_path / name).write_bytes(payload)
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


def test_rng_state_survives_a_saved_training_state(tmp_path):
    # Leave a cached Gaussian in Python's and NumPy's generators (both draw normals in pairs), so the
    # restored state must carry the caches too, not only the Mersenne Twister words.
    random.gauss(0.0, 1.0)
    np.random.standard_normal()
    path = save_training_state(tmp_path / "rng.state", {"rng": capture_rng_state()})
    expected = (
        random.gauss(0.0, 1.0),
        np.random.standard_normal(),
        random.random(),
        np.random.rand(),
        torch.rand(3),
    )
    restore_rng_state(load_training_state(path)["rng"])
    again = (
        random.gauss(0.0, 1.0),
        np.random.standard_normal(),
        random.random(),
        np.random.rand(),
        torch.rand(3),
    )
    assert again[:4] == expected[:4] and torch.equal(again[4], expected[4])
