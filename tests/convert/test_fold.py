"""fold_batchnorm against the unfolded model in eval mode, with BatchNorm statistics made non-trivial."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torchvision
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from sepconv import load_model, save_model
from sepconv.convert import fold_batchnorm, fold_batchnorm_with_report
from sepconv.io import model_transforms
from sepconv.layers import Conv2d, DepthwiseConv2d, PointwiseConv2d
from sepconv.models import create_model


def _randomize_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    # Statistics and affine parameters far from the (0, 1, 1, 0) defaults, each channel different,
    # so a fold that drops or misplaces any of them changes the output.
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for norm in model.modules():
            if not isinstance(norm, _BatchNorm):
                continue
            size = norm.num_features
            if norm.running_mean is not None:
                norm.running_mean.copy_(torch.rand(size, generator=generator) * 2 - 1)
                norm.running_var.copy_(torch.rand(size, generator=generator) * 3 + 0.25)
            if norm.weight is not None:
                norm.weight.copy_((torch.rand(size, generator=generator) + 0.5) * _signs(size, generator))
                norm.bias.copy_(torch.rand(size, generator=generator) - 0.5)
    return model


def _signs(size: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randint(0, 2, (size,), generator=generator).float() * 2 - 1


def _assert_same_outputs(folded: nn.Module, reference: nn.Module, x: torch.Tensor) -> None:
    # float32 throughout; folding reorders a few roundings per output (scale applied to the weights
    # before the sums instead of after), and each output sums at most a few hundred products here,
    # so the difference is a few float32 ulps of the output's scale (~1e-7 each): 1e-5 relative,
    # measured against the largest output, leaves a wide margin and still catches any wrong channel.
    expected = reference.eval()(x)
    actual = folded(x)
    scale = expected.abs().max().item()
    assert scale > 1e-3  # the comparison is not trivially satisfied by tiny outputs
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5 * scale)


def _norm_names(model: nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if isinstance(module, _BatchNorm)]


# (conv factory, norm class, input shape); every conv has 4 input and 6 output channels unless noted.
CONV_KINDS: dict[str, tuple[Callable[[bool], nn.Module], type[nn.Module], tuple[int, ...]]] = {
    "standard": (lambda bias: nn.Conv2d(4, 6, 3, padding=1, bias=bias), nn.BatchNorm2d, (2, 4, 9, 9)),
    "grouped": (lambda bias: nn.Conv2d(4, 6, 3, groups=2, bias=bias), nn.BatchNorm2d, (2, 4, 9, 9)),
    "depthwise": (
        lambda bias: DepthwiseConv2d(4, 3, padding=1, depth_multiplier=2, bias=bias),
        nn.BatchNorm2d,
        (2, 4, 9, 9),
    ),
    "pointwise": (lambda bias: PointwiseConv2d(4, 6, bias=bias), nn.BatchNorm2d, (2, 4, 9, 9)),
    "grouped pointwise": (
        lambda bias: PointwiseConv2d(4, 6, groups=2, bias=bias),
        nn.BatchNorm2d,
        (2, 4, 9, 9),
    ),
    "sepconv same padding, stride 2": (
        lambda bias: Conv2d(4, 6, 3, stride=2, padding="same", bias=bias),
        nn.BatchNorm2d,
        (2, 4, 9, 9),
    ),
    "conv1d": (lambda bias: nn.Conv1d(4, 6, 3, bias=bias), nn.BatchNorm1d, (2, 4, 11)),
    "conv3d": (lambda bias: nn.Conv3d(4, 6, 3, bias=bias), nn.BatchNorm3d, (2, 4, 5, 5, 5)),
    "transposed": (
        lambda bias: nn.ConvTranspose2d(4, 6, 3, stride=2, bias=bias),
        nn.BatchNorm2d,
        (2, 4, 5, 5),
    ),
    "grouped transposed": (
        lambda bias: nn.ConvTranspose2d(4, 6, 3, stride=2, groups=2, bias=bias),
        nn.BatchNorm2d,
        (2, 4, 5, 5),
    ),
    # one output channel per group: torch's own transpose=True fold broadcasts to a wrong weight shape
    "depthwise transposed": (
        lambda bias: nn.ConvTranspose2d(4, 4, 3, groups=4, bias=bias),
        nn.BatchNorm2d,
        (2, 4, 5, 5),
    ),
    "grouped transposed 1d": (
        lambda bias: nn.ConvTranspose1d(4, 6, 3, groups=2, bias=bias),
        nn.BatchNorm1d,
        (2, 4, 7),
    ),
    "transposed 3d": (lambda bias: nn.ConvTranspose3d(4, 6, 3, bias=bias), nn.BatchNorm3d, (2, 4, 3, 3, 3)),
}


@pytest.mark.parametrize("bias", [False, True], ids=["no conv bias", "conv bias"])
@pytest.mark.parametrize("kind", list(CONV_KINDS))
def test_each_conv_kind_folds_exactly(kind: str, bias: bool):
    make_conv, norm_class, input_shape = CONV_KINDS[kind]
    torch.manual_seed(0)
    conv = make_conv(bias)
    model = _randomize_norms(nn.Sequential(conv, norm_class(conv.out_channels), nn.ReLU()))
    folded, names = fold_batchnorm_with_report(model)
    assert names == ["1"]
    assert _norm_names(folded) == []
    assert type(folded[0]) is type(conv)  # a DepthwiseConv2d stays a DepthwiseConv2d
    assert folded[0].weight.shape == conv.weight.shape
    assert isinstance(folded[1], nn.Identity)
    _assert_same_outputs(folded, model, torch.randn(input_shape))


def test_sync_batchnorm_and_affine_free_batchnorm_fold():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3),
        nn.SyncBatchNorm(6),
        nn.ReLU(),
        nn.Conv2d(6, 4, 1),
        nn.BatchNorm2d(4, affine=False),
    )
    _randomize_norms(model)
    folded, names = fold_batchnorm_with_report(model)
    assert names == ["1", "4"]
    assert _norm_names(folded) == []
    _assert_same_outputs(folded, model, torch.randn(2, 3, 8, 8))


def test_torchvision_mobilenet_v2_folds_every_batchnorm():
    torch.manual_seed(0)
    model = _randomize_norms(torchvision.models.mobilenet_v2())
    norms = _norm_names(model)
    folded, names = fold_batchnorm_with_report(model)
    assert len(norms) == 52
    assert names == norms
    assert _norm_names(folded) == []
    assert type(folded) is torchvision.models.MobileNetV2
    _assert_same_outputs(folded, model, torch.randn(2, 3, 64, 64))


@pytest.mark.parametrize(
    ("name", "kwargs", "input_shape"),
    [("mobilenet_v2", {"width_mult": 0.5}, (2, 3, 64, 64)), ("separable_cnn", {}, (2, 1, 28, 28))],
)
def test_sepconv_models_fold_every_batchnorm(name: str, kwargs: dict, input_shape: tuple[int, ...]):
    torch.manual_seed(0)
    model = _randomize_norms(create_model(name, **kwargs))
    norms = _norm_names(model)
    folded, names = fold_batchnorm_with_report(model)
    assert norms and names == norms
    assert _norm_names(folded) == []
    # Same keys except the BatchNorms', which vanish, and the new biases of their convolutions.
    original_keys = set(model.state_dict())
    norm_keys = {key for key in original_keys if key.rsplit(".", 1)[0] in norms}
    new_biases = set(folded.state_dict()) - original_keys
    assert set(folded.state_dict()) == (original_keys - norm_keys) | new_biases
    assert all(key.endswith(".bias") for key in new_biases) and len(new_biases) == len(norms)
    _assert_same_outputs(folded, model, torch.randn(input_shape))


class _ConvOutputReusedElsewhere(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.norm = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.conv(x)
        return self.norm(features) + features  # folding would change the second term


def test_batchnorm_is_kept_when_the_conv_output_has_another_user():
    torch.manual_seed(0)
    model = _randomize_norms(_ConvOutputReusedElsewhere())
    folded, names = fold_batchnorm_with_report(model)
    assert names == []
    assert isinstance(folded.norm, nn.BatchNorm2d)
    torch.testing.assert_close(folded.conv.weight, model.conv.weight, rtol=0, atol=0)
    _assert_same_outputs(folded, model, torch.randn(2, 3, 8, 8))


def test_batchnorm_without_running_stats_or_without_a_conv_before_it_stays():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.BatchNorm2d(3),  # at the input
        nn.Conv2d(3, 4, 3),
        nn.BatchNorm2d(4, track_running_stats=False),  # batch statistics even in eval mode
        nn.Conv2d(4, 5, 3),
        nn.BatchNorm2d(5),  # the only foldable one
        nn.Flatten(),
        nn.Linear(5 * 4 * 4, 6),
        nn.BatchNorm1d(6),  # after a Linear
    )
    _randomize_norms(model)
    folded, names = fold_batchnorm_with_report(model)
    assert names == ["4"]
    assert _norm_names(folded) == ["0", "2", "7"]
    _assert_same_outputs(folded, model, torch.randn(3, 3, 8, 8))


class _StandardizedConv2d(nn.Conv2d):
    # Normalizes its filters on every call: rescaling the weight would be undone, so it must not fold.
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight - self.weight.mean(dim=(1, 2, 3), keepdim=True)
        return self._conv_forward(x, weight / weight.std(dim=(1, 2, 3), keepdim=True), self.bias)


def test_conv_that_transforms_its_weight_is_not_folded_into():
    torch.manual_seed(0)
    model = _randomize_norms(nn.Sequential(_StandardizedConv2d(3, 4, 3), nn.BatchNorm2d(4)))
    folded, names = fold_batchnorm_with_report(model)
    assert names == []
    _assert_same_outputs(folded, model, torch.randn(2, 3, 8, 8))


def test_input_model_is_unchanged():
    torch.manual_seed(0)
    model = _randomize_norms(create_model("separable_cnn", widths=(4, 8, 8, 8))).train()
    before = {key: value.clone() for key, value in model.state_dict().items()}
    folded = fold_batchnorm(model)
    assert folded is not model and not folded.training
    assert all(module.training for module in model.modules())
    after = model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[key], before[key]) for key in before)


def test_folded_model_survives_save_and_load(tmp_path):
    torch.manual_seed(0)
    model = _randomize_norms(create_model("separable_cnn"))
    folded = fold_batchnorm(model)
    assert model_transforms(folded) == [{"name": "fold_batchnorm", "kwargs": {}}]
    path = save_model(folded, tmp_path / "folded.safetensors")
    loaded = load_model(path)
    assert _norm_names(loaded) == []
    assert model_transforms(loaded) == model_transforms(folded)
    x = torch.randn(3, 1, 28, 28)
    # Same weights, same modules, same kernels on the same machine: bit-for-bit equal.
    torch.testing.assert_close(loaded(x), folded(x), rtol=0, atol=0)
    _assert_same_outputs(loaded, model, x)


class _DataDependentBranch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), DepthwiseConv2d(4, 3), nn.BatchNorm2d(4)
        )
        self.conv = nn.Conv2d(3, 4, 3)
        self.norm = nn.BatchNorm2d(4)  # follows a conv, but not inside a Sequential

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # control flow on a tensor value: torch.fx cannot trace this
            return self.features(x)
        return self.norm(self.conv(x))


def test_untraceable_model_folds_the_sequential_pairs():
    torch.manual_seed(0)
    model = _randomize_norms(_DataDependentBranch())
    with pytest.raises(torch.fx.proxy.TraceError):
        torch.fx.symbolic_trace(model)
    folded, names = fold_batchnorm_with_report(model)
    assert names == ["features.1", "features.4"]
    assert _norm_names(folded) == ["norm"]
    positive = torch.rand(2, 3, 8, 8)
    _assert_same_outputs(folded, model, positive)
    _assert_same_outputs(folded, model, -positive)


def test_non_module_argument_is_a_type_error():
    with pytest.raises(TypeError, match=r"fold_batchnorm expects an nn.Module for model, got str"):
        fold_batchnorm("model.safetensors")
