"""DistributedBatchNorm over 2 gloo processes equals one BatchNorm over the whole batch: float64 to
summation-order rounding, and bf16 input (what autocast feeds it) to one bf16 rounding."""

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


def _bf16_reference_and_inputs():
    """float32 parameters and buffers, bf16 input and upstream gradient: BatchNorm under bf16 autocast."""
    norm, images, upstream = _reference_and_inputs()
    return norm.float(), images.bfloat16(), upstream.bfloat16()


def _run_share(rank: int, reference: nn.Module, images: torch.Tensor, upstream: torch.Tensor) -> dict:
    distributed = nn.BatchNorm2d(3).to(reference.weight.dtype)
    distributed.load_state_dict(reference.state_dict())
    assert use_distributed_batchnorm(distributed) == 1
    share = slice(rank * 4, rank * 4 + 4)
    local = images[share].clone().requires_grad_()
    output = distributed(local)
    output.backward(upstream[share])
    weight_grad = distributed.weight.grad.clone()
    dist.all_reduce(weight_grad)  # what DDP does with the local weight gradients (as a sum here)
    return {
        "output": output.detach(),
        "input_grad": local.grad,
        "weight_grad": weight_grad,
        "running_mean": distributed.running_mean.clone(),
        "running_var": distributed.running_var.clone(),
    }


def _worker(rank: int, init_file: str, results: dict) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        results[rank] = {
            "float64": _run_share(rank, *_reference_and_inputs()),
            "bf16": _run_share(rank, *_bf16_reference_and_inputs()),
        }
    finally:
        dist.destroy_process_group()


# Its tests run on one worker (pytest-xdist's --dist loadgroup), so the module fixture
# `two_process_results` is computed once per run, not once on each worker.
pytestmark = pytest.mark.xdist_group("train-sync_norm")


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory) -> dict:
    """Each rank's output, gradients and running statistics for its half of the batch, both dtypes."""
    results = mp.Manager().dict()
    mp.spawn(_worker, args=(str(tmp_path_factory.mktemp("sync_norm") / "init"), results), nprocs=WORLD)
    return dict(results)


@pytest.mark.slow  # starts two processes: about 8 s
def test_two_processes_normalise_with_the_statistics_of_the_whole_batch(two_process_results):
    results = {rank: value["float64"] for rank, value in two_process_results.items()}
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


@pytest.mark.slow
def test_two_processes_under_bf16_match_one_batchnorm_to_bf16_rounding(two_process_results):
    """bf16 input, float32 parameters and buffers (autocast): what crashed with a bf16 running-stat update.

    PyTorch's BatchNorm computes in float32 and rounds the output once to bf16; the distributed one
    computes the statistics in float64, so a value may round to the neighbouring bf16 number: one bf16
    step is 2**-7 of the value at most (8 significant bits). The running statistics and the weight
    gradient are float32 sums of the same bf16 values in another order and precision: ~1e-6 relative.
    """
    reference, images, upstream = _bf16_reference_and_inputs()
    whole = images.clone().requires_grad_()
    output = reference(whole)
    output.backward(upstream)
    assert output.dtype == torch.bfloat16 and reference.running_mean.dtype == torch.float32
    one_bf16_step = {"rtol": 2**-7, "atol": 1e-6}
    for rank in range(WORLD):
        share = slice(rank * 4, rank * 4 + 4)
        got = two_process_results[rank]["bf16"]
        assert got["output"].dtype == got["input_grad"].dtype == torch.bfloat16
        assert got["running_mean"].dtype == got["running_var"].dtype == torch.float32
        torch.testing.assert_close(got["output"], output.detach()[share], **one_bf16_step)
        torch.testing.assert_close(got["input_grad"], whole.grad[share], **one_bf16_step)
        torch.testing.assert_close(got["weight_grad"], reference.weight.grad, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got["running_mean"], reference.running_mean, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(got["running_var"], reference.running_var, rtol=1e-6, atol=1e-6)


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
