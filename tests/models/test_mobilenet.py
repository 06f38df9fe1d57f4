"""MobileNetV1/V2 against torchvision and the published parameter and mult-add counts."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch.utils.flop_counter import FlopCounterMode

from sepconv.analysis import summarize
from sepconv.models import create_model, mobilenet_v1, mobilenet_v2


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _macs(model: torch.nn.Module, size: int = 224) -> int:
    # PyTorch's operator-level counter is the independent reference; it reports FLOPs = 2 x MACs.
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.eval()(torch.zeros(1, 3, size, size))
    return counter.get_total_flops() // 2


@pytest.mark.parametrize(
    ("width_mult", "round_nearest", "num_classes"),
    [(1.0, 8, 1000), (0.5, 8, 10), (0.75, 4, 100), (1.4, 8, 7)],
)
def test_mobilenet_v2_state_dict_exchanges_with_torchvision(width_mult, round_nearest, num_classes):
    ours = mobilenet_v2(width_mult=width_mult, round_nearest=round_nearest, num_classes=num_classes).eval()
    theirs = torchvision.models.mobilenet_v2(
        width_mult=width_mult, round_nearest=round_nearest, num_classes=num_classes
    ).eval()
    our_state, their_state = ours.state_dict(), theirs.state_dict()
    assert list(our_state) == list(their_state)
    assert [v.shape for v in our_state.values()] == [v.shape for v in their_state.values()]

    x = torch.randn(2, 3, 96, 96)
    # The same operators and weights in the same order as torchvision (eval-mode batch norm): at most
    # reordered float32 sums, each well under 1e-6 relative, in O(1) logits: 1e-5 has margin.
    theirs.load_state_dict(our_state, strict=True)
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)
    fresh = torchvision.models.mobilenet_v2(
        width_mult=width_mult, round_nearest=round_nearest, num_classes=num_classes
    ).eval()
    ours.load_state_dict(fresh.state_dict(), strict=True)
    torch.testing.assert_close(ours(x), fresh(x), rtol=1e-5, atol=1e-5)


def test_mobilenet_v2_published_numbers():
    model = mobilenet_v2()
    assert _params(model) == 3_504_872  # torchvision's documented count for mobilenet_v2
    macs = _macs(model)
    # Paper, Table 4: 300M multiply-adds, a round figure: ours is 300.77M (pinned exactly in the zoo
    # test), 0.26% above, so "300" is not good to three digits; 1% is within two-digit rounding (1.7%).
    assert macs == pytest.approx(300e6, rel=0.01)


# Howard et al. 2017, Table 1, written out again here: (output channels, stride) of every 3x3 layer
# after the stem, each a depthwise 3x3 (padding 1) then a pointwise 1x1 with BatchNorm after each.
_TABLE_1 = (
    [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]
)


def _worked_counts(alpha: float, resolution: int = 224, classes: int = 1000) -> tuple[int, int]:
    """(parameters, MACs) of MobileNetV1 summed from per-layer formulas.

    A 3x3 convolution of c_in -> c_out channels on an h x h output costs h*h*9*c_in*c_out MACs and
    9*c_in*c_out weights; depthwise: h*h*9*c and 9*c; pointwise: h*h*c_in*c_out and c_in*c_out; each
    BatchNorm holds 2 parameters per channel and costs no MAC (the papers' convention); the classifier
    c*classes MACs and c*classes + classes parameters. Widths are int(channels * alpha), as sepconv
    and TF-slim's reference implementation truncate (slim also floors them at 8: no difference for
    alpha >= 0.25).
    """
    channels = int(32 * alpha)
    size = (resolution + 2 - 3) // 2 + 1  # the stem: 3x3, stride 2, padding 1
    params, macs = 9 * 3 * channels + 2 * channels, size * size * 9 * 3 * channels
    for width, stride in _TABLE_1:
        out_channels = int(width * alpha)
        size = (size + 2 - 3) // stride + 1
        params += 9 * channels + 2 * channels + channels * out_channels + 2 * out_channels
        macs += size * size * (9 * channels + channels * out_channels)
        channels = out_channels
    return params + channels * classes + classes, macs + channels * classes


# Howard et al. 2017, Table 6 (width multiplier at 224): millions of parameters, millions of mult-adds.
_PUBLISHED = {1.0: (4.2, 569), 0.75: (2.6, 325), 0.5: (1.3, 149), 0.25: (0.47, 41)}


# summarize() runs the model once: at 224 that is seconds on a busy 2-core machine for the wide models,
# so they are counted at 96 (every layer's size still differs: 48, 48, 24, ..., 3) and 0.25 at 224.
@pytest.mark.parametrize(("alpha", "resolution"), [(1.0, 96), (0.75, 96), (0.5, 96), (0.25, 224)])
def test_mobilenet_v1_counts_match_the_worked_formula_and_the_paper(alpha, resolution):
    model = mobilenet_v1(width_mult=alpha)
    summary = summarize(model, (1, 3, resolution, resolution))
    assert summary.total_params == _params(model) == _worked_counts(alpha, resolution)[0]  # exact integers
    assert summary.total_macs == _worked_counts(alpha, resolution)[1]
    params, macs = _worked_counts(alpha)  # at 224, the paper's resolution
    # The paper's figures, compared at the paper's own rounding (0.1M, or 0.01M for 0.47M; 1M
    # mult-adds). The worked counts include BatchNorm's 2 parameters per channel (10,944 at 0.5): with
    # or without them each rounds to the published figure. 0.5 is the closest call: 149.497M -> 149.
    published_params, published_macs = _PUBLISHED[alpha]
    digits = 2 if published_params < 1 else 1
    assert round(params / 1e6, digits) == published_params
    assert round(macs / 1e6) == published_macs


def test_mobilenet_v1_has_28_layers_of_the_table_widths():
    model = mobilenet_v1(width_mult=0.75)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert len(convs) + len(linears) == 28  # stem + 13 x (dw + pw) + fc
    # 0.75 x Table 1: every width is a whole number, so no rounding rule is involved.
    depthwise = convs[1::2]
    pointwise = convs[2::2]
    assert [conv.groups == conv.in_channels == conv.out_channels for conv in depthwise] == [True] * 13
    assert [conv.out_channels for conv in pointwise] == [int(width * 0.75) for width, _ in _TABLE_1]
    assert [conv.stride for conv in depthwise] == [(stride, stride) for _, stride in _TABLE_1]
    assert convs[0].out_channels == 24 and linears[0].in_features == 768


def test_in_channels_and_num_classes():
    model = create_model("mobilenet_v2", in_channels=1, num_classes=5, width_mult=0.35).eval()
    assert model(torch.randn(1, 1, 64, 64)).shape == (1, 5)
    assert model.features[0][0].in_channels == 1
