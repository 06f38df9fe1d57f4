"""Keyed dropout: each rank's share of the global batch gets exactly the rows of one process's mask."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional

from sepconv.train.keyed_dropout import KeyedDropout, keyed_dropout, restore_dropout, use_keyed_dropout

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _generator_state(device: str) -> torch.Tensor:
    return torch.cuda.get_rng_state() if device == "cuda" else torch.get_rng_state()


def _set_generator_state(device: str, state: torch.Tensor) -> None:
    if device == "cuda":
        torch.cuda.set_rng_state(state)
    else:
        torch.set_rng_state(state)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_each_rank_gets_the_rows_of_the_one_process_mask_and_the_generator_moves_alike(
    device, dtype, world_size
):
    """One process: F.dropout of the global batch (what nn.Dropout runs). Rank r of N: rows r::N of it,
    bit for bit, with the generator left where one process leaves it."""
    generator = torch.Generator(device="cpu").manual_seed(3)
    whole = torch.randn(6 * world_size, 10, generator=generator).to(device=device, dtype=dtype)
    start = _generator_state(device)
    expected = functional.dropout(whole, 0.3, training=True)
    after_one_process = _generator_state(device)
    for rank in range(world_size):
        _set_generator_state(device, start)
        share = whole[rank::world_size].clone()
        got = keyed_dropout(share, 0.3, rank=rank, world_size=world_size)
        assert got.dtype == dtype
        assert torch.equal(got, expected[rank::world_size]), rank
        assert torch.equal(_generator_state(device), after_one_process)
    assert 0 < int((expected == 0).sum()) < expected.numel()  # some dropped, some kept


def test_gradients_are_the_rows_of_the_one_process_gradients():
    whole = torch.randn(8, 5, generator=torch.Generator().manual_seed(1), requires_grad=True)
    start = torch.get_rng_state()
    functional.dropout(whole, 0.5, training=True).sum().backward()
    torch.set_rng_state(start)
    share = whole.detach()[1::2].clone().requires_grad_()
    keyed_dropout(share, 0.5, rank=1, world_size=2).sum().backward()
    assert torch.equal(share.grad, whole.grad[1::2])
    assert set(share.grad.unique().tolist()) == {0.0, 2.0}  # dropped, or kept and scaled by 1 / (1 - p)


def test_edge_probabilities_follow_pytorch():
    images = torch.randn(4, 3)
    assert keyed_dropout(images, 0.0, rank=0, world_size=2) is images  # nothing drawn, as F.dropout
    assert torch.equal(keyed_dropout(images, 1.0, rank=1, world_size=2), torch.zeros(4, 3))


def test_conversion_swaps_plain_dropout_only_and_is_plain_without_a_process_group():
    model = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.2), nn.Dropout2d(0.2))
    keys = list(model.state_dict())
    assert use_keyed_dropout(model) == 1
    assert type(model[1]) is KeyedDropout and type(model[2]) is nn.Dropout2d
    assert list(model.state_dict()) == keys
    images = torch.randn(4, 3)
    start = torch.get_rng_state()
    plain = functional.dropout(images, 0.2, training=True)
    torch.set_rng_state(start)
    assert torch.equal(model[1](images), plain)
    restore_dropout(model)
    assert type(model[1]) is nn.Dropout
