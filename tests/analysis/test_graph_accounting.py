"""Models that are not nn.Sequential: functional calls, residual adds, concatenation, re-used modules."""

import pytest
import torch
import torch.nn.functional as F
from tests.helpers.costs import macs_from_layer_formulas
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from sepconv.analysis import ModelInputError, summarize


class Tangle(nn.Module):
    """A functional conv, a module used twice, a residual add, a concat, interpolation and a matmul."""

    def __init__(self) -> None:
        super().__init__()
        self.stem_weight = nn.Parameter(torch.rand(4, 3, 3, 3))  # used through F.conv2d in forward
        self.shared = nn.Conv2d(4, 4, 3, padding=1, bias=False)  # called twice
        self.branch = nn.Conv2d(4, 4, 1, bias=False)
        self.head = nn.Linear(8, 5)
        self.projection = nn.Parameter(torch.rand(5, 2))  # used through torch.matmul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(F.conv2d(x, self.stem_weight, padding=1))  # 16x16
        y = self.shared(self.shared(x)) + x  # residual around two calls of one module
        upsampled = F.interpolate(F.max_pool2d(x, 2), scale_factor=2, mode="nearest")
        z = torch.cat([y, self.branch(upsampled)], 1)
        z = F.interpolate(z, scale_factor=0.5, mode="nearest")  # 8x8
        pooled = z.mean((2, 3))
        return torch.matmul(self.head(pooled), self.projection)


def expected_macs() -> dict[str, int]:
    return {
        "": 16 * 16 * 4 * 27 + 5 * 2,  # F.conv2d at 16x16 with 4 filters of 3x3x3; matmul (1x5)@(5x2)
        "shared": 16 * 16 * 4 * 36,  # each call: 4 filters of 3x3x4 over 16x16
        "branch": 16 * 16 * 4 * 4,
        "head": 8 * 5,
    }


def test_every_op_is_attributed_to_one_row_and_totals_are_exact():
    model = Tangle()
    summary = summarize(model, (1, 3, 16, 16))
    macs = expected_macs()
    assert summary.total_macs == macs[""] + 2 * macs["shared"] + macs["branch"] + macs["head"]
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.randn(1, 3, 16, 16))
    assert 2 * summary.total_macs == counter.get_total_flops()
    rows = [(row.name, row.call_index, row.macs, row.params) for row in summary.layers]
    assert ("", 0, macs[""], 4 * 27 + 10) in rows  # the model's own forward: its ops and parameters
    assert ("shared", 0, macs["shared"], 144) in rows
    assert ("shared", 1, macs["shared"], 0) in rows  # second call: parameters already counted
    assert sum(row.params for row in summary.layers) == summary.total_params
    assert summary.total_params == sum(p.numel() for p in model.parameters())


def test_receptive_field_follows_the_residual_and_the_concat():
    summary = summarize(Tangle(), (1, 3, 16, 16))
    rows = {(row.name, row.call_index): row for row in summary.layers}
    assert rows[("shared", 0)].receptive_field == (5, 5)  # stem 3x3, then 3x3
    assert rows[("shared", 1)].receptive_field == (7, 7)
    # branch: stem (3) + 2x2 max pool (4, jump 2), nearest 2x upsampling keeps the field: 4, jump 1
    assert rows[("branch", 0)].receptive_field == (4, 4)
    assert rows[("branch", 0)].effective_stride == (1, 1)
    assert rows[("head", 0)].sees_whole_input
    assert rows[("branch", 0)].start == (0.5, 0.5)  # the 2x2 window of unit 0 covers pixels 0 and 1
    # the concat keeps the larger field (7 px, from the residual path); nearest 0.5x resizing keeps it
    assert summary.receptive_field == (7, 7)


def test_paths_out_of_alignment_are_flagged():
    class Misaligned(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.centred = nn.Conv2d(1, 1, 3, padding=1)
            self.shifted = nn.Conv2d(1, 1, 2)
            self.act = nn.ReLU()

        def forward(self, x):
            return self.act(self.centred(x) + self.shifted(F.pad(x, [0, 1, 0, 1])))

    rows = {row.name: row for row in summarize(Misaligned(), (1, 1, 8, 8)).layers}
    assert rows["centred"].start == (0, 0) and rows["shifted"].start == (0.5, 0.5)
    assert rows["act"].receptive_field == (3, 3)  # the larger of the two paths, as in the paper
    assert "misaligned paths" in rows["act"].notes
    assert "misaligned paths" not in rows["centred"].notes


def test_depth_folds_children_and_keeps_totals():
    from sepconv.models import create_model

    model = create_model("torchvision:resnet18")
    full = summarize(model, (1, 3, 64, 64))
    folded = summarize(model, (1, 3, 64, 64), depth=1)
    assert [row.name for row in folded.layers] == [
        "conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc",
    ]  # fmt: skip
    assert sum(row.macs for row in folded.layers) == full.total_macs == folded.total_macs
    assert sum(row.params for row in folded.layers) == full.total_params
    layer3 = next(row for row in folded.layers if row.name == "layer3")
    assert layer3.macs == sum(row.macs for row in full.layers if row.name.startswith("layer3."))
    assert layer3.output_shape == (1, 256, 4, 4)
    # independent of summarize: per-layer formulas over the whole model, and over layer3 alone on its
    # input (layer2's output at 64 px: 128 channels at 8x8)
    assert full.total_macs == macs_from_layer_formulas(model, (1, 3, 64, 64))
    assert layer3.macs == macs_from_layer_formulas(model.layer3, (1, 128, 8, 8))


def test_parameters_of_modules_not_called_are_listed():
    class WithSpareHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Conv2d(3, 4, 1)
            self.spare = nn.Linear(4, 4)

        def forward(self, x):
            return self.body(x)

    summary = summarize(WithSpareHead(), (1, 3, 4, 4))
    spare = next(row for row in summary.layers if row.name == "spare")
    assert spare.notes == ("not called",) and spare.params == 20
    assert sum(row.params for row in summary.layers) == summary.total_params == 16 + 20


def test_failure_names_the_layer_and_the_shapes():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Sequential(nn.ReLU(), nn.Conv2d(4, 8, 3)))
    with pytest.raises(ModelInputError, match=r"layer '1\.1' \(Conv2d\) failed on input \(1, 8, 6, 6\)"):
        summarize(model, (1, 3, 8, 8))


def test_failure_in_a_functional_op_names_the_enclosing_module():
    class Broken(nn.Module):
        def forward(self, x):
            return x @ torch.ones(5, 5)

    with pytest.raises(
        ValueError, match=r"the model's own forward \(Broken\) failed on input \(1, 3, 4, 4\)"
    ):
        summarize(Broken(), (1, 3, 4, 4))


def test_arguments_are_checked():
    layer = nn.Conv2d(3, 3, 1)
    with pytest.raises(ValueError, match="exactly one of input_size"):
        summarize(layer)
    with pytest.raises(ValueError, match="exactly one of input_size"):
        summarize(layer, (1, 3, 4, 4), inputs=torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match="input_size must be positive integers"):
        summarize(layer, (1, 3, 0, 4))
    with pytest.raises(ValueError, match="depth must be"):
        summarize(layer, (1, 3, 4, 4), depth=-1)


def test_model_mode_and_inputs_are_respected():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Dropout())
    model.train()
    summary = summarize(model, inputs=(torch.zeros(2, 3, 5, 5),))
    assert model.training and all(module.training for module in model.modules())
    assert summary.input_shapes == ((2, 3, 5, 5),)
    assert summary.total_macs == 2 * 4 * 25 * 3
