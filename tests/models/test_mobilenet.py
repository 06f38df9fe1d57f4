"""MobileNetV1/V2 against torchvision and the published parameter and mult-add counts."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch.utils.flop_counter import FlopCounterMode

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


def test_mobilenet_v1_published_numbers():
    model = mobilenet_v1()
    # Paper, Table 4: 1.0 MobileNet-224 has 4.2M parameters and 569M mult-adds. The tolerances are the
    # paper's rounding: 0.05M of 4.2M is 1.2% (ours 4.23M, 0.8% off); 0.5M of 569M is 0.09% (ours
    # 568.74M), so 0.1%: the former 0.5% (2.8M) let a missing 7x7 depthwise layer (0.45M) pass.
    assert _params(model) == pytest.approx(4.2e6, rel=0.01)
    assert _macs(model) == pytest.approx(569e6, rel=0.001)


def test_mobilenet_v1_has_28_layers_and_width_multiplier():
    model = mobilenet_v1()
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert len(convs) + len(linears) == 28  # stem + 13 x (dw + pw) + fc
    half = mobilenet_v1(width_mult=0.5)
    # Paper, Table 6: 0.5 MobileNet-224 has 1.3M parameters and 149M mult-adds. Tolerances from the
    # paper's rounding: 0.05M of 1.3M is 3.8% (ours 1.33M, 2.4% off); 0.5M of 149M is 0.34% (ours
    # 149.50M, 0.33% off), so 0.4%.
    assert _params(half) == pytest.approx(1.3e6, rel=0.03)
    assert _macs(half) == pytest.approx(149e6, rel=0.004)


def test_in_channels_and_num_classes():
    model = create_model("mobilenet_v2", in_channels=1, num_classes=5, width_mult=0.35).eval()
    assert model(torch.randn(1, 1, 64, 64)).shape == (1, 5)
    assert model.features[0][0].in_channels == 1
