"""Tied and aliased tensors in model files: kept as the recipe builds them, refused where they would break.

safetensors stores each ``state_dict`` name's values on their own, so a tie (one tensor under two
names) cannot be written as such; it comes back on load because the rebuilt model ties the same
names. The tests register a small model that ties a decoder's weight to its encoder's (weight tying)
and can alias a buffer to that weight, and check the loaded model against the original by value, by
identity, and through a training step.
"""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from sepconv.io import CheckpointError, load_model, save_model
from sepconv.models import create_model, registry


class TiedAutoencoder(nn.Module):
    """``decode.weight`` is ``encode.weight`` (when ``tie``); ``mirror`` is a buffer viewing it (``alias``)."""

    def __init__(self, tie: bool = True, alias: bool = False) -> None:
        super().__init__()
        self.encode = nn.Linear(4, 4)
        self.decode = nn.Linear(4, 4)
        if tie:
            self.decode.weight = self.encode.weight
        if alias:
            self.register_buffer("mirror", self.encode.weight.detach())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(torch.tanh(self.encode(x)))


@pytest.fixture(autouse=True)
def tied_model_registered(monkeypatch):
    # Registered for the test only: the registry's dicts are restored afterwards.
    monkeypatch.setitem(registry._REGISTRY, "tied_autoencoder", TiedAutoencoder)
    monkeypatch.setitem(registry._INPUT_SIZES, "tied_autoencoder", (1, 1, 4))


def _built(**kwargs) -> nn.Module:
    torch.manual_seed(0)
    return create_model("tied_autoencoder", **kwargs)


def _sgd_step(model: nn.Module, x: torch.Tensor) -> None:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model(x).square().sum().backward()
    optimizer.step()


def test_weight_tying_survives_a_round_trip_and_a_training_step(tmp_path):
    model = _built()
    path = save_model(model, tmp_path / "tied.safetensors")
    with safe_open(path, framework="pt") as handle:  # both names stored, with the one tensor's values
        assert sorted(handle.keys()) == ["decode.bias", "decode.weight", "encode.bias", "encode.weight"]
        assert torch.equal(handle.get_tensor("decode.weight"), model.encode.weight.detach())
        assert torch.equal(handle.get_tensor("encode.weight"), model.encode.weight.detach())
    loaded = load_model(path)
    assert loaded.decode.weight is loaded.encode.weight  # one Parameter again, not two copies
    assert len(list(loaded.parameters())) == 3  # nn.Module.parameters() lists a shared one once
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(loaded(x), model.eval()(x))
    # The same SGD step on the original and on the loaded model: the reference is the original, whose
    # tie torch itself made. Same operations on the same values: bit-identical.
    _sgd_step(model, x)
    _sgd_step(loaded, x)
    assert loaded.decode.weight is loaded.encode.weight
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name


def test_a_buffer_aliasing_a_parameter_still_aliases_it_after_loading(tmp_path):
    model = _built(tie=False, alias=True)
    with torch.no_grad():
        model.encode.weight.mul_(3)  # trained-like values, seen through the alias
    loaded = load_model(save_model(model, tmp_path / "alias.safetensors"))
    assert torch.equal(loaded.mirror, model.encode.weight.detach())
    assert loaded.mirror.untyped_storage().data_ptr() == loaded.encode.weight.untyped_storage().data_ptr()
    with torch.no_grad():
        loaded.encode.weight.add_(1)
    assert torch.equal(loaded.mirror, loaded.encode.weight.detach())  # one memory, as built
    assert not torch.equal(loaded.decode.weight, loaded.encode.weight)  # and no tie the recipe lacks


def test_a_tie_made_after_create_model_is_refused_by_name(tmp_path):
    # The recipe (tie=False) rebuilds two weights: loading would silently untie them.
    model = _built(tie=False)
    model.decode.weight = model.encode.weight
    target = tmp_path / "tied_later.safetensors"
    with pytest.raises(ValueError) as raised:
        save_model(model, target)
    assert str(raised.value) == (
        f"cannot save TiedAutoencoder to {target}: a model file keeps only the ties (shared tensors) its "
        "recipe (tied_autoencoder(tie=False)) builds; tied here but not by the recipe: "
        "decode.weight = encode.weight"
    )
    assert list(tmp_path.iterdir()) == []


def test_a_tie_undone_after_create_model_is_refused_by_name(tmp_path):
    # The recipe ties the weights: loading would put one of the two different weights into both.
    model = _built()
    model.decode.weight = nn.Parameter(torch.zeros(4, 4))
    target = tmp_path / "untied_later.safetensors"
    with pytest.raises(
        ValueError, match=r"tied by the recipe but not here: decode\.weight = encode\.weight$"
    ):
        save_model(model, target)
    assert list(tmp_path.iterdir()) == []


def _written_with_checksum(path, spec, tensors) -> None:
    """A model file written without sepconv: the checksum worked out again from the format's description
    (SHA-256 of the sorted JSON recipe, then per sorted name: JSON [name, dtype, shape] and the bytes)."""
    recipe = {"spec": spec, "transforms": []}
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode())
    for name in sorted(tensors):
        tensor = tensors[name].contiguous()
        digest.update(json.dumps([name, str(tensor.dtype), list(tensor.shape)]).encode())
        digest.update(tensor.numpy().tobytes())
    document = {"format": "sepconv", "version": 1, **recipe, "sha256": digest.hexdigest()}
    save_file(tensors, path, metadata={"sepconv": json.dumps(document)})


def test_a_file_with_different_values_for_tied_names_is_refused(tmp_path):
    tensors = {name: value.clone() for name, value in _built().state_dict().items()}
    spec = {"name": "tied_autoencoder", "kwargs": {}}
    consistent = tmp_path / "consistent.safetensors"
    _written_with_checksum(consistent, spec, tensors)
    loaded = load_model(consistent)  # the hand-written checksum is right: the file loads, tied
    assert loaded.decode.weight is loaded.encode.weight
    tensors["decode.weight"] = tensors["decode.weight"] + 1
    forged = tmp_path / "forged.safetensors"
    _written_with_checksum(forged, spec, tensors)
    with pytest.raises(CheckpointError) as raised:
        load_model(forged)
    assert str(raised.value) == (
        f"{forged}: the model ties decode.weight, encode.weight (one shared tensor), but the file holds "
        "different values for decode.weight and encode.weight"
    )


def test_ties_added_and_undone_together_are_all_named(tmp_path):
    model = _built()  # the recipe ties decode.weight to encode.weight
    model.decode.weight = nn.Parameter(torch.zeros(4, 4))  # undone
    model.decode.bias = model.encode.bias  # two ties the recipe does not make
    model.extra = nn.Linear(4, 4)
    model.extra.weight = model.decode.weight
    target = tmp_path / "both.safetensors"
    with pytest.raises(ValueError) as raised:
        save_model(model, target)
    assert str(raised.value) == (
        f"cannot save TiedAutoencoder to {target}: a model file keeps only the ties (shared tensors) its "
        "recipe (tied_autoencoder()) builds; tied here but not by the recipe: decode.bias = encode.bias, "
        "decode.weight = extra.weight; tied by the recipe but not here: decode.weight = encode.weight"
    )
    assert list(tmp_path.iterdir()) == []
