"""Training state files and RNG state: round trips, refusing unsafe or damaged files, exact RNG resumption.

Also direct calls into ``sepconv.train.state`` for what a run reaches only in rare cases (gaps S1, S2, S4
of a mutation run): safe loading that an environment variable cannot turn off, each refusal's exact
message, and the CUDA branch of the RNG state (reached here without a GPU).
"""

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


# --- direct calls: loading that the environment cannot make unsafe, exact refusals, CUDA RNG ----------

# PyTorch >= 2.6 lets this variable turn every torch.load that does not pass weights_only=True into an
# unpickling load: the safety of a training state must not depend on the environment.
UNSAFE_DEFAULT = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"


def _forged(path, payload: bytes):
    """A file with the state header and a correct SHA-256 of ``payload``: only the payload can be refused."""
    path.write_bytes(_STATE_MAGIC + hashlib.sha256(payload).digest() + payload)
    return path


def _torch_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _torch_refusal(payload: bytes) -> str:
    """torch's own reason for refusing ``payload`` under weights_only, whitespace runs made one space."""
    with pytest.raises(Exception) as refused:  # torch raises UnpicklingError or others
        torch.load(io.BytesIO(payload), weights_only=True)
    return re.sub(r"\s+", " ", str(refused.value)).strip()


# S2: weights_only=True is passed explicitly, so the environment cannot switch unpickling back on.


def test_the_malicious_pickle_is_refused_even_when_the_environment_asks_for_unsafe_loading(
    tmp_path, monkeypatch
):
    marker = tmp_path / "pwned"
    payload = malicious_pickle(marker)
    forged = _forged(tmp_path / "forged.state", payload)
    monkeypatch.setenv(UNSAFE_DEFAULT, "1")
    with pytest.raises(CheckpointError, match=r"forged\.state: refused to load"):
        load_training_state(forged)
    assert not marker.exists()
    # The variable is live: a torch.load that leaves weights_only unset runs the payload under it.
    with pytest.warns(UserWarning, match="forcing weights_only=False"):
        torch.load(io.BytesIO(payload))
    assert marker.exists()


def test_an_unsafe_state_is_refused_at_save_even_when_the_environment_asks_for_unsafe_loading(
    tmp_path, monkeypatch
):
    marker = tmp_path / "pwned"
    monkeypatch.setenv(UNSAFE_DEFAULT, "1")
    with pytest.raises(ValueError, match="safe loading refuses"):
        save_training_state(tmp_path / "x.state", {"callback": Payload(marker)})
    # The save-time check unpickles nothing either, and no file is left to resume from.
    assert not marker.exists() and not (tmp_path / "x.state").exists()


# S4: each refusal says what is wrong, naming the file; torch's reason is quoted, cut at 300 characters.


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError) as refused:
        load_training_state(tmp_path / "nowhere.state")
    assert str(refused.value) == f"training state file not found: {tmp_path / 'nowhere.state'}"


def test_an_empty_file_and_a_foreign_file_are_told_apart(tmp_path):
    empty = tmp_path / "empty.state"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError) as refused:
        load_training_state(empty)
    assert str(refused.value) == f"{empty} is empty"
    foreign = tmp_path / "foreign.state"
    foreign.write_bytes(_torch_bytes({"epoch": 1}))  # a plain torch.save file: no header
    with pytest.raises(CheckpointError) as refused:
        load_training_state(foreign)
    assert str(refused.value) == f"{foreign} is not a sepconv training state (written by save_training_state)"


def test_truncated_states_are_named_down_to_an_empty_payload(tmp_path):
    whole = tmp_path / "whole.state"
    save_training_state(whole, {"epoch": 1})
    data = whole.read_bytes()
    header = len(_STATE_MAGIC) + 32  # the magic, then a SHA-256 digest of the payload
    # cut inside the digest, right after it, and one byte short of the end
    for keep in (header - 1, header, len(data) - 1):
        cut = tmp_path / f"cut{keep}.state"
        cut.write_bytes(data[:keep])
        with pytest.raises(CheckpointError) as refused:
            load_training_state(cut)
        assert (
            str(refused.value) == f"{cut} is corrupt or truncated: its contents do not match their checksum"
        )
    # A header whose digest is that of zero bytes, and no payload: still truncated, not "refused".
    empty = _forged(tmp_path / "empty-payload.state", b"")
    with pytest.raises(CheckpointError) as refused:
        load_training_state(empty)
    assert str(refused.value) == f"{empty} is corrupt or truncated: its contents do not match their checksum"


def test_a_refused_payload_quotes_torchs_reason_cut_at_300_characters(tmp_path):
    payload = malicious_pickle(tmp_path / "pwned")
    reason = _torch_refusal(payload)
    assert len(reason) > 300  # so the cut is exercised (torch's text is ~560 characters)
    forged = _forged(tmp_path / "forged.state", payload)
    with pytest.raises(CheckpointError) as refused:
        load_training_state(forged)
    assert str(refused.value) == (
        f"{forged}: refused to load (it holds objects that could run code): {reason[:300]}"
    )


def test_a_payload_that_is_not_a_dict_is_refused_by_type(tmp_path):
    forged = _forged(tmp_path / "list.state", _torch_bytes([1, 2]))
    with pytest.raises(CheckpointError) as refused:
        load_training_state(forged)
    assert str(refused.value) == f"{forged}: expected a dict of training state, got list"


def test_saving_something_other_than_a_dict_is_a_type_error(tmp_path):
    with pytest.raises(TypeError) as refused:
        save_training_state(tmp_path / "x.state", [1])
    assert str(refused.value) == "state must be a dict, got list"
    assert not (tmp_path / "x.state").exists()


def test_an_unsafe_state_at_save_quotes_torchs_reason(tmp_path):
    unsafe = {"callback": Payload(tmp_path / "never")}
    reason = _torch_refusal(_torch_bytes(unsafe))
    path = tmp_path / "x.state"
    with pytest.raises(ValueError) as refused:
        save_training_state(path, unsafe)
    assert str(refused.value) == (
        f"cannot save training state to {path}: it holds objects that safe loading refuses "
        f"({reason[:300]}); store plain tensors, numbers, strings, lists and dicts"
    )


# S1: the CUDA generators. Without a GPU, torch.cuda is replaced by recorders for the duration.


class _FakeCuda:
    """``torch.cuda.is_available`` / ``get_rng_state_all`` / ``set_rng_state_all``, recording the sets."""

    def __init__(self, monkeypatch, available: bool) -> None:
        self.states = [torch.tensor([1, 2, 3], dtype=torch.uint8), torch.tensor([4, 5], dtype=torch.uint8)]
        self.set_calls: list[list[torch.Tensor]] = []
        monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
        monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: list(self.states))
        monkeypatch.setattr(torch.cuda, "set_rng_state_all", self.set_calls.append)


def test_capture_records_every_cuda_generator_when_cuda_is_available(monkeypatch):
    _FakeCuda(monkeypatch, available=True)
    captured = capture_rng_state()
    assert [state.tolist() for state in captured["cuda"]] == [[1, 2, 3], [4, 5]]


def test_capture_records_no_cuda_generator_without_cuda(monkeypatch):
    _FakeCuda(monkeypatch, available=False)
    assert capture_rng_state()["cuda"] == []


@pytest.mark.parametrize(
    ("available", "saved", "expected_calls"),
    [
        (True, "some", 1),  # the saved states go back to the GPUs
        (True, "none", 0),  # saved on a machine without CUDA: the GPUs keep their own states
        (False, "some", 0),  # saved with CUDA, restored without: nothing to set
    ],
)
def test_restore_sets_the_cuda_generators_only_when_both_sides_have_them(
    monkeypatch, available, saved, expected_calls
):
    fake = _FakeCuda(monkeypatch, available=available)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    state = capture_rng_state()  # the CPU generators, as captured on this machine
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    cuda_states = [torch.tensor([7, 8], dtype=torch.uint8)] if saved == "some" else []
    restore_rng_state({**state, "cuda": cuda_states})
    assert len(fake.set_calls) == expected_calls
    if expected_calls:
        assert [tensor.tolist() for tensor in fake.set_calls[0]] == [[7, 8]]
