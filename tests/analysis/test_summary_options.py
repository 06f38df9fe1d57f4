"""summarize's ``dtype`` and ``device`` arguments, and activation bytes, against counts worked by hand."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sepconv.analysis import ModelInputError, summarize


def tiny_model() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2 * 4 * 4, 3)
    )


# On a (1, 1, 8, 8) input the five layers output, in elements:
#   conv 3x3 'same', 2 channels: 1*2*8*8 = 128; ReLU: 128; 2x2 max pool: 1*2*4*4 = 32;
#   flatten: 32; linear: 3.  In all 128 + 128 + 32 + 32 + 3 = 323 elements.
ELEMENTS_PER_ROW = [128, 128, 32, 32, 3]


@pytest.mark.parametrize(
    ("dtype", "element_size"), [(torch.float32, 4), (torch.float64, 8), (torch.bfloat16, 2)]
)
def test_activation_bytes_are_output_elements_times_the_element_size(dtype, element_size):
    model = tiny_model().to(dtype)
    summary = summarize(model, (1, 1, 8, 8))  # the input dtype follows the parameters
    assert [row.output_bytes for row in summary.layers] == [n * element_size for n in ELEMENTS_PER_ROW]
    assert summary.activation_bytes == 323 * element_size  # 1292, 2584 or 646 bytes
    # the dtype does not change what is counted
    assert summary.total_macs == 8 * 8 * 2 * 9 + 32 * 3  # conv 1,152 + linear 96
    assert summary.to_dict()["activation_bytes"] == 323 * element_size


def test_activation_bytes_count_every_call_of_a_shared_module():
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 3, 3, padding=1)
            self.mix = nn.Conv2d(3, 1, 1)

        def forward(self, x):
            return self.conv(self.mix(self.conv(x)))

    summary = summarize(Twice(), (2, 1, 5, 5))
    # conv: 2*3*5*5 = 150 elements, twice; mix: 2*1*5*5 = 50; float32: (150 + 50 + 150) * 4 = 1400
    assert [(row.name, row.call_index, row.output_bytes) for row in summary.layers] == [
        ("conv", 0, 600),
        ("mix", 0, 200),
        ("conv", 1, 600),
    ]
    assert summary.activation_bytes == 1400


def test_explicit_dtype_gives_the_input_that_dtype():
    model = tiny_model().double()
    explicit = summarize(model, (1, 1, 8, 8), dtype=torch.float64)
    assert explicit.activation_bytes == 323 * 8
    assert explicit.to_dict() == summarize(model, (1, 1, 8, 8)).to_dict()
    # a float32 model given a float64 input fails, and the error names the layer and the input
    with pytest.raises(ModelInputError, match=r"layer '0' \(Conv2d\) failed on input \(1, 1, 8, 8\)"):
        summarize(tiny_model(), (1, 1, 8, 8), dtype=torch.float64)


def test_explicit_cpu_device_changes_nothing():
    model = tiny_model()
    assert summarize(model, (1, 1, 8, 8), device="cpu").to_dict() == summarize(model, (1, 1, 8, 8)).to_dict()
    assert summarize(model, (1, 1, 8, 8), device=torch.device("cpu")).activation_bytes == 1292


class TiedHead(nn.Module):
    """A conv, batch norm, and an output layer that re-uses the first layer's weight (tied)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1)
        self.norm = nn.BatchNorm2d(2)
        self.head = nn.Conv2d(2, 2, 1)
        self.head.weight = self.conv.weight

    def forward(self, x):
        return self.head(self.norm(self.conv(x)))


def test_meta_device_counts_the_same_and_leaves_the_model_untouched():
    model = TiedHead()
    model.norm.running_mean.fill_(0.5)
    model.train()
    state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    on_meta = summarize(model, (1, 2, 6, 6), device="meta")
    on_cpu = summarize(model, (1, 2, 6, 6))
    assert on_meta.to_dict() == on_cpu.to_dict()
    # by hand: conv and head 2*2*36 MACs each; 4 + 2 (shared weight and conv bias) + 4 (norm) + 2 (head
    # bias) parameters; three outputs of 2*6*6 float32 elements
    assert (on_meta.total_macs, on_meta.total_params, on_meta.activation_bytes) == (288, 12, 3 * 72 * 4)
    # the model keeps its weights, device, mode and tying: moving it to meta would have discarded them
    assert model.training
    assert model.head.weight is model.conv.weight
    for name, tensor in model.state_dict().items():
        assert tensor.device.type == "cpu" and torch.equal(tensor, state[name]), name


def test_meta_device_on_a_model_built_on_meta():
    with torch.device("meta"):
        model = tiny_model()
    summary = summarize(model, (1, 1, 8, 8), device="meta")
    assert summary.total_macs == 1152 + 96 and summary.activation_bytes == 1292
    assert summary.layers[0].receptive_field == (3, 3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_device_counts_the_same_and_puts_the_model_back():
    model = TiedHead()
    state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    on_cuda = summarize(model, (1, 2, 6, 6), device="cuda")
    assert on_cuda.to_dict() == summarize(model, (1, 2, 6, 6)).to_dict()
    assert (on_cuda.total_macs, on_cuda.activation_bytes) == (288, 3 * 72 * 4)
    for name, tensor in model.state_dict().items():
        assert tensor.device.type == "cpu" and torch.equal(tensor, state[name]), name
    # bfloat16 on the GPU: 2-byte activations
    assert summarize(model.to(torch.bfloat16), (1, 2, 6, 6), device="cuda").activation_bytes == 3 * 72 * 2
