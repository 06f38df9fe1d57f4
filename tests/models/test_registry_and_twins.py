"""The model registry and the standard/separable twin pair."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sepconv import arithmetic
from sepconv.layers import DepthwiseConv2d, PointwiseConv2d
from sepconv.models import create_model, list_models, model_spec, register_model


def test_list_models_has_ours_and_torchvisions():
    names = list_models()
    for name in ("mobilenet_v1", "mobilenet_v2", "standard_cnn", "separable_cnn", "torchvision:resnet18"):
        assert name in names


def test_torchvision_models_are_built_without_weights_and_remember_their_recipe():
    model = create_model("torchvision:resnet18", num_classes=7)
    assert model.fc.out_features == 7
    assert model_spec(model) == {"name": "torchvision:resnet18", "kwargs": {"num_classes": 7}}
    with pytest.raises(ValueError, match="without downloading weights"):
        create_model("torchvision:resnet18", weights="DEFAULT")


def test_duplicate_registration_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        register_model("mobilenet_v2")(lambda: nn.Identity())


def test_twins_share_topology_and_differ_only_in_their_3x3_convolutions():
    standard = create_model("standard_cnn")
    separable = create_model("separable_cnn")
    std_convs = [m for m in standard.modules() if isinstance(m, nn.Conv2d)]
    sep_convs = [m for m in separable.modules() if isinstance(m, nn.Conv2d)]
    assert len(std_convs) == 6 and len(sep_convs) == 11  # stem + 5 convs vs stem + 5 x (dw + pw)
    assert type(std_convs[0]) is type(sep_convs[0])  # same stem
    assert sum(isinstance(m, DepthwiseConv2d) for m in sep_convs) == 5
    assert sum(isinstance(m, PointwiseConv2d) for m in sep_convs) == 5
    # Same (in, out) channel sequence of the 3x3 stages.
    std_pairs = [(m.in_channels, m.out_channels) for m in std_convs[1:]]
    sep_pairs = [(m.in_channels, m.out_channels) for m in sep_convs[1:] if isinstance(m, PointwiseConv2d)]
    assert std_pairs == sep_pairs


def test_twin_parameter_counts_by_hand():
    stem = arithmetic.conv_params(1, 32, 3, bias=False) + 2 * 32
    pairs = [(32, 64), (64, 64), (64, 128), (128, 128), (128, 256)]
    head = 256 * 10 + 10
    standard = stem + sum(arithmetic.conv_params(i, o, 3, bias=False) + 2 * o for i, o in pairs) + head
    separable = (
        stem + sum(arithmetic.separable_params(i, o, 3, bias=False) + 2 * i + 2 * o for i, o in pairs) + head
    )
    assert sum(p.numel() for p in create_model("standard_cnn").parameters()) == standard == 575_594
    assert sum(p.numel() for p in create_model("separable_cnn").parameters()) == separable == 72_266
    # Exact integer counts (575,594 / 72,266 = 7.96): 5 is the demo's promised floor, not a tolerance.
    assert standard / separable > 5


def test_twins_accept_other_inputs():
    model = create_model("separable_cnn", in_channels=3, num_classes=4).eval()
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 4)


@pytest.mark.parametrize(
    "name",
    [
        "lraspp_mobilenet_v3_large",
        "deeplabv3_mobilenet_v3_large",
        "fcn_resnet50",
        "ssdlite320_mobilenet_v3_large",
    ],
)
def test_torchvision_models_with_backbones_never_fetch_weights(name, monkeypatch):
    import torch.hub

    fetched = []
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", lambda url, *a, **k: fetched.append(url))
    model = create_model(f"torchvision:{name}")
    assert fetched == []
    import torchvision

    reference = torchvision.models.get_model(name, weights=None, weights_backbone=None)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in reference.parameters())
    with pytest.raises(
        ValueError, match="weights_backbone='DEFAULT': sepconv builds models without downloading"
    ):
        create_model(f"torchvision:{name}", weights_backbone="DEFAULT")
