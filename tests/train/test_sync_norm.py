"""DistributedBatchNorm over 2 gloo processes equals one BatchNorm over the whole batch (float64)."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from sepconv.train.sync_norm import DistributedBatchNorm, restore_batchnorm, use_distributed_batchnorm

WORLD = 2


def _reference_and_inputs():
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(8, 3, 5, 5, generator=generator, dtype=torch.float64)
    upstream = torch.randn(8, 3, 5, 5, generator=generator, dtype=torch.float64)  # d(loss)/d(output)
    norm = nn.BatchNorm2d(3).double()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5, generator=generator)
        norm.bias.uniform_(-1, 1, generator=generator)
    return norm, images, upstream


def _worker(rank: int, init_file: str, results: dict) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        reference, images, upstream = _reference_and_inputs()
        distributed = nn.BatchNorm2d(3).double()
        distributed.load_state_dict(reference.state_dict())
        assert use_distributed_batchnorm(distributed) == 1
        share = slice(rank * 4, rank * 4 + 4)
        local = images[share].clone().requires_grad_()
        output = distributed(local)
        output.backward(upstream[share])
        weight_grad = distributed.weight.grad.clone()
        dist.all_reduce(weight_grad)  # what DDP does with the local weight gradients (as a sum here)
        results[rank] = {
            "output": output.detach(),
            "input_grad": local.grad,
            "weight_grad": weight_grad,
            "running_mean": distributed.running_mean.clone(),
            "running_var": distributed.running_var.clone(),
        }
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # starts two processes: about 8 s
def test_two_processes_normalise_with_the_statistics_of_the_whole_batch(tmp_path):
    results = mp.Manager().dict()
    mp.spawn(_worker, args=(str(tmp_path / "init"), results), nprocs=WORLD)
    reference, images, upstream = _reference_and_inputs()
    whole = images.clone().requires_grad_()
    output = reference(whole)
    output.backward(upstream)
    # float64 throughout; the only differences are the order of ~100-term sums: ~1e-15, so 1e-12 is safe.
    tolerance = {"rtol": 1e-12, "atol": 1e-12}
    for rank in range(WORLD):
        share = slice(rank * 4, rank * 4 + 4)
        got = results[rank]
        torch.testing.assert_close(got["output"], output.detach()[share], **tolerance)
        torch.testing.assert_close(got["input_grad"], whole.grad[share], **tolerance)
        torch.testing.assert_close(got["weight_grad"], reference.weight.grad, **tolerance)
        # Running variance is the unbiased one over all 8 x 5 x 5 values, as plain BatchNorm's is.
        torch.testing.assert_close(got["running_mean"], reference.running_mean, **tolerance)
        torch.testing.assert_close(got["running_var"], reference.running_var, **tolerance)


def test_conversion_keeps_state_dict_and_eval_behaviour_and_can_be_undone():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.BatchNorm1d(2))
    keys = list(model.state_dict())
    assert use_distributed_batchnorm(model) == 2
    assert isinstance(model[1], DistributedBatchNorm) and isinstance(model[1], nn.BatchNorm2d)
    assert list(model.state_dict()) == keys
    # Without a process group it is plain BatchNorm, in training and in eval mode.
    images = torch.randn(4, 2, 3, 3)
    plain = nn.BatchNorm2d(2)
    torch.testing.assert_close(model[1](images), plain(images), rtol=0, atol=0)
    restore_batchnorm(model)
    assert type(model[1]) is nn.BatchNorm2d and type(model[2]) is nn.BatchNorm1d
