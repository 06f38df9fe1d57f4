"""Receptive fields against published values and against an empirical measurement.

Published values: Araujo, Norris & Sim, "Computing Receptive Fields of Convolutional Neural Networks",
Distill 2019 (doi:10.23915/distill.00021), table of the google-research/receptive_field library
(TF-Slim models): receptive field / effective stride / effective padding
  alexnet_v2 195/32/64, vgg_16 212/32/90, inception_v3 1311/32/618, mobilenet_v1 315/32/126,
  resnet_v1_50 483/32/239.
Where torchvision's model differs from the Slim one, the difference is derived by hand in the test.

Empirical measurement: with all weights positive (nothing cancels) the gradient of one output unit
with respect to the input is non-zero exactly on that unit's receptive field.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sepconv.analysis import summarize
from sepconv.layers import Conv2d
from sepconv.models import create_model


def effective_padding(summary, layer_name):
    """Of the last call of ``layer_name`` (a ReLU module is called up to three times per block)."""
    row = next(row for row in reversed(summary.layers) if row.name == layer_name and row.receptive_field)
    return row.effective_padding


def test_vgg16_matches_distill():
    # torchvision's vgg16 has Slim's geometry: 13 3x3 convs (padding 1) and five 2x2 max pools.
    summary = summarize(create_model("torchvision:vgg16"), (1, 3, 64, 64))
    rows = {row.name: row for row in summary.layers}
    assert rows["features.30"].receptive_field == (212, 212)  # pool5
    assert rows["features.30"].effective_stride == (32, 32)
    assert rows["features.30"].effective_padding == (90, 90)
    assert rows["features.28"].receptive_field == (196, 196)  # last conv: 212 - 16
    assert rows["classifier.6"].sees_whole_input and rows["classifier.6"].receptive_field is None


def test_alexnet_matches_distill():
    summary = summarize(create_model("torchvision:alexnet"), (1, 3, 224, 224))
    rows = {row.name: row for row in summary.layers}
    assert rows["features.12"].receptive_field == (195, 195)  # pool5
    assert rows["features.12"].effective_stride == (32, 32)
    # Slim's alexnet_v2 has no padding in conv1 (effective padding 64); torchvision pads it by 2 pixels.
    assert rows["features.12"].effective_padding == (64 + 2, 64 + 2)


def resnet_v1_50_slim_geometry() -> nn.Module:
    """torchvision's ResNet-50 rearranged into Slim's resnet_v1_50: stride 2 in the *last* unit of
    blocks 1-3 (shortcut subsampled by a 1x1 max pool) and a 'SAME' stem pool (pads 0 before, 1 after)."""
    model = create_model("torchvision:resnet50")
    stages = [model.layer1, model.layer2, model.layer3, model.layer4]
    for stage in stages[1:]:
        stage[0].conv2.stride = (1, 1)
        stage[0].downsample[0].stride = (1, 1)
    for stage in stages[:3]:
        stage[-1].conv2.stride = (2, 2)
        stage[-1].downsample = nn.MaxPool2d(1, stride=2)
    model.maxpool = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.MaxPool2d(3, stride=2))
    return model


def test_resnet_v1_50_matches_distill():
    summary = summarize(resnet_v1_50_slim_geometry(), (1, 3, 224, 224))
    assert summary.receptive_field == (483, 483)
    assert summary.effective_stride == (32, 32)
    assert summary.receptive_field_layer == "layer4"
    assert effective_padding(summary, "layer4.2.relu") == (239, 239)
    assert not any("misaligned paths" in row.notes for row in summary.layers)


def test_torchvision_resnets_by_hand():
    # ResNet-18: conv1 7 (jump 2), max pool +2*2 = 11 (jump 4), then eight 3x3 convs per resolution
    # pair: 11 + 2*4*4 = 43; +8 = 51, +3*16 = 99; +16 = 115, +3*32 = 211; +32 = 243, +3*64 = 435.
    summary = summarize(create_model("torchvision:resnet18"), (1, 3, 64, 64))
    rows = {row.name: row for row in summary.layers}
    assert rows["layer4.1.conv2"].receptive_field == (435, 435)
    assert summary.receptive_field == (435, 435)
    # ResNet-50 v1.5 strides in the first unit's 3x3: 11 + 3*8 = 35; +8 +3*16 = 91; +16 +5*32 = 267;
    # +32 +2*64 = 427 (not Slim's 483, whose strides sit in the last unit of each block).
    assert summarize(create_model("torchvision:resnet50"), (1, 3, 64, 64)).receptive_field == (427, 427)


def mobilenet_v1_same_padding() -> nn.Module:
    """MobileNetV1's kernel/stride sequence with TF 'same' padding, one channel wide (the field does
    not depend on width): a 3x3 stride-2 stem, then 13 depthwise 3x3 (+ pointwise 1x1) steps."""
    strides = [2, 1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1]
    layers = []
    for index, stride in enumerate(strides):
        layers.append(Conv2d(1, 1, 3, stride=stride, padding="same"))
        if index:
            layers.append(Conv2d(1, 1, 1))
    return nn.Sequential(*layers)


def test_mobilenet_v1_matches_distill():
    summary = summarize(mobilenet_v1_same_padding(), (1, 1, 224, 224))
    last = summary.layers[-1]
    assert (last.receptive_field, last.effective_stride, last.effective_padding) == (
        (315,) * 2,
        (32,) * 2,
        (126,) * 2,
    )
    # sepconv's MobileNetV1 pads every 3x3 symmetrically by 1: the padding adds up to
    # 1 (stem) + 2+2+4+4+8+8+16*6+32 (depthwise, times the jump before each) = 157.
    ours = summarize(create_model("mobilenet_v1"), (1, 3, 64, 64))
    assert ours.receptive_field == (315, 315) and ours.effective_stride == (32, 32)
    assert effective_padding(ours, "features.13.pointwise.2") == (157, 157)


@pytest.mark.slow
def test_inception_v3_matches_distill():
    model = create_model("torchvision:inception_v3", init_weights=True)
    summary = summarize(model, (1, 3, 299, 299))
    assert summary.receptive_field == (1311, 1311)
    assert summary.effective_stride == (32, 32)
    assert summary.receptive_field_layer == "Mixed_7c"


# --- empirical measurement ---------------------------------------------------------------------------


def positive_copy(model: nn.Module) -> nn.Module:
    """Weights 1/fan-in (all positive, no overflow), biases 0, max pools turned into
    average pools of the same geometry (a max pool's gradient reaches one pixel per window only)."""
    model = model.eval()
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.MaxPool2d):
            parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
            pool = nn.AvgPool2d(module.kernel_size, module.stride, module.padding, module.ceil_mode)
            setattr(parent, name.rpartition(".")[2], pool)
    with torch.no_grad():
        for parameter_name, parameter in model.named_parameters():
            if parameter.dim() > 1:
                parameter.fill_(1.0 / parameter[0].numel())
            elif parameter_name.endswith("weight"):
                parameter.fill_(1.0)
            else:
                parameter.zero_()
    return model


def measured_field(model: nn.Module, layer: str, input_shape, unit_offset: int = 0):
    """Extent and centre, per spatial axis, of the input pixels that reach one unit of ``layer``'s output
    (the central unit, moved by ``unit_offset`` along both axes), and that unit's index."""
    captured = {}
    handle = model.get_submodule(layer).register_forward_hook(lambda m, i, o: captured.update(out=o))
    image = torch.ones(input_shape, dtype=torch.float32, requires_grad=True)
    model(image)
    handle.remove()
    out = captured["out"]
    unit = [size // 2 + unit_offset for size in out.shape[2:]]
    out[(0, 0, *unit)].backward()
    # Exact: with positive weights (positive_copy) and an all-ones input no contributions cancel, so a
    # pixel inside the field has a gradient > 0 and one outside has exactly 0.
    support = image.grad[0].abs().sum(0) > 0
    extents, centres = [], []
    for axis in range(2):
        hits = support.any(dim=1 - axis).nonzero().flatten()
        first, last = int(hits[0]), int(hits[-1])
        assert first > 0 and last < input_shape[2 + axis] - 1, (
            "field clipped by the border: use a larger input"
        )
        extents.append(last - first + 1)
        centres.append((first + last) / 2)
    return tuple(extents), tuple(centres), unit


def check_against_measurement(model: nn.Module, layer: str, input_shape):
    model = positive_copy(model)
    image = torch.ones(input_shape, dtype=torch.float32)
    summary = summarize(model, inputs=image, depth=layer.count(".") + 1)  # folded: containers get a row
    row = next(row for row in summary.layers if row.name == layer)
    extents, centres, unit = measured_field(model, layer, input_shape)
    assert row.receptive_field == extents
    assert (
        tuple(start + index * stride for start, index, stride in zip(row.start, unit, row.effective_stride))
        == centres
    )
    _, next_centres, _ = measured_field(model, layer, input_shape, unit_offset=1)
    assert tuple(b - a for a, b in zip(centres, next_centres)) == row.effective_stride
    return row


def test_dilated_stack_matches_measurement():
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=2, dilation=2),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, stride=2, padding=4, dilation=4),
        nn.Conv2d(4, 2, (3, 5), dilation=(1, 3)),
    )
    row = check_against_measurement(model, "5", (1, 1, 48, 48))
    # 3, then +2*2 = 7, then +(4*2)*1 = 15 (jump 2), then (3, 5) dilated by (1, 3): +2*2 = 19, +12*2 = 39
    assert row.receptive_field == (19, 39)


def test_residual_network_matches_measurement():
    resnet = create_model("torchvision:resnet18")
    trunk = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool, resnet.layer1, resnet.layer2)
    row = check_against_measurement(trunk, "5", (1, 3, 128, 128))
    assert row.receptive_field == (99, 99)


def test_inverted_residuals_with_same_padding_match_measurement():
    model = create_model("mobilenet_v2").features[:4]  # blocks 1-3, the last one residual
    row = check_against_measurement(model, "3", (1, 3, 40, 40))
    assert row.receptive_field == (19, 19)


def test_separable_twin_cnn_matches_measurement():
    check_against_measurement(create_model("separable_cnn").features, "6", (1, 1, 64, 64))


def test_asymmetric_same_padding_matches_measurement():
    model = nn.Sequential(Conv2d(1, 2, 4, padding="same"), Conv2d(2, 2, 3, stride=2, padding="same"))
    check_against_measurement(model, "1", (1, 1, 30, 30))


def test_transposed_convolution_matches_measurement():
    model = nn.Sequential(nn.Conv2d(1, 2, 3, stride=2), nn.ConvTranspose2d(2, 2, 3, stride=2, padding=1))
    model = positive_copy(model)
    row = summarize(model, (1, 1, 33, 33)).layers[-1]
    # a unit of the output gathers 1 or 2 input units depending on its parity: the field is the larger
    extents = {measured_field(model, "1", (1, 1, 33, 33), offset)[0] for offset in (0, 1)}
    assert row.receptive_field == max(extents) == (5, 5)
    assert row.effective_stride == (1, 1)


def test_global_pooling_and_linear_layers_see_the_whole_input():
    summary = summarize(create_model("torchvision:mobilenet_v3_small"), (1, 3, 64, 64))
    rows = {row.name: row for row in summary.layers}
    assert rows["avgpool"].sees_whole_input and rows["avgpool"].receptive_field is None
    assert rows["classifier.3"].sees_whole_input
    # squeeze-and-excitation multiplies local maps by a global summary: local field, flagged
    assert (
        "global context" in rows["features.1.block.1.fc2"].notes
        or "global context" in rows["features.1.block.2.0"].notes
    )


def test_interpolation_moves_the_jump():
    class Upsampler(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.down = nn.Conv2d(1, 1, 2, stride=2)
            self.out = nn.Conv2d(1, 1, 1)

        def forward(self, x):
            return self.out(F.interpolate(self.down(x), scale_factor=2, mode="bilinear"))

    row = summarize(Upsampler(), (1, 1, 16, 16)).layers[-1]
    assert row.effective_stride == (1, 1)  # jump 2 halved
    assert row.receptive_field == (4, 4)  # bilinear blends two units 2 px apart: 2 + 2


# --- tracking lost: the headline says unknown -------------------------------------------------------


class ChannelsLastMixer(nn.Module):
    """conv 3x3, then a Linear over channels in channels-last layout (ConvNeXt's pattern), then conv 3x3.

    Stem alone: 3 px; the whole model: 5 px. We have no rule for moving the spatial axes, so the
    model's field must be reported unknown, never the stem's 3 px.
    """

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.mix = nn.Linear(4, 4)
        self.head = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        x = self.mix(self.stem(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.head(x)


class Rolled(nn.Module):
    """conv 3x3, then ``torch.roll`` (moves values between positions; no rule), then conv 3x3."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.head = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        return self.head(torch.roll(self.stem(x), shifts=2, dims=-1))


@pytest.mark.parametrize(
    ("model", "operator"),
    [(ChannelsLastMixer(), "aten.permute in '(model)'"), (Rolled(), "aten.roll in '(model)'")],
)
def test_receptive_field_is_unknown_when_tracking_is_lost(model, operator):
    summary = summarize(model, (1, 1, 16, 16))
    rows = {row.name: row for row in summary.layers}
    assert rows["stem"].receptive_field == (3, 3)  # tracked up to the loss
    assert rows["head"].receptive_field is None and "unknown" in rows["head"].notes
    assert summary.receptive_field is None and summary.effective_stride is None
    assert summary.receptive_field_layer is None
    assert summary.receptive_field_lost_at == operator
    assert summary.to_dict()["receptive_field"] is None
    assert f"Receptive field: unknown (tracking lost at {operator})" in str(summary)
    assert "Receptive field: unknown" in summary.to_markdown()


def test_vision_transformer_field_is_unknown_not_its_patch_size():
    from torchvision.models import VisionTransformer

    model = VisionTransformer(
        image_size=32, patch_size=8, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32
    )
    summary = summarize(model, (1, 3, 32, 32))
    assert next(row for row in summary.layers if row.name == "conv_proj").receptive_field == (8, 8)
    # the patches are folded into a sequence (a view of the spatial axes): tracking stops there
    assert summary.receptive_field is None
    assert summary.receptive_field_lost_at == "aten.view in '(model)'"


def test_flattening_into_a_linear_head_keeps_the_field():
    # A classifier on flattened features sees the whole input: not a loss of tracking.
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Conv2d(2, 2, 3), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    summary = summarize(model, (1, 1, 8, 8))
    assert summary.receptive_field == (5, 5) and summary.receptive_field_lost_at is None
    assert summary.layers[-1].sees_whole_input
