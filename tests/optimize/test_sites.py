"""Sites: which layers an optimization may change, at which ranks, with MACs worked by hand."""

from __future__ import annotations

from torch import nn

from sepconv.arithmetic import conv_macs, separable_macs
from sepconv.optimize.sites import candidate_macs, find_sites


def _net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),  # stem: 3 input channels
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False),
        nn.Conv2d(32, 32, 1),  # 1x1: already pointwise
        nn.Flatten(),
        nn.Linear(32 * 8 * 8, 512),
        nn.Linear(512, 10),  # too small to split
    )


def test_sites_shapes_ranks_and_macs_against_the_formulas() -> None:
    sites, skipped = find_sites(_net(), (3, 16, 16))
    assert [site.name for site in sites] == ["0", "2", "5"]
    assert dict(skipped) == {"3": "1x1 kernel", "6": "512x10 linear layer: too small"}
    stem, conv, linear = sites
    assert stem.input_shape == (3, 16, 16) and stem.output_shape == (16, 16, 16)
    assert stem.macs == conv_macs(3, 16, 3, 16)
    # separable at r: 3 r 9 + 3 r 16 MACs per position, below 3 16 9 = 432 only for r = 1, 2, 4
    assert stem.ranks == (1, 2, 4)
    assert candidate_macs(stem, 4) == separable_macs(3, 16, 3, 16, depth_multiplier=4)
    assert conv.input_shape == (16, 16, 16) and conv.output_shape == (32, 8, 8)
    assert conv.max_rank == 9 and conv.ranks == (1, 2, 4)  # r = 8: 16 8 (9 + 32) > 16 32 9
    assert candidate_macs(conv, 2) == 64 * 16 * 2 * (9 + 32)
    # linear 2048 -> 512: r (2048 + 512) < 2048 512 for r < 409.6
    assert linear.ranks == (1, 2, 4, 8, 16, 32, 64, 128, 256)
    assert linear.macs == 2048 * 512 and candidate_macs(linear, 8) == 8 * (2048 + 512)


def test_a_layer_run_twice_is_no_site_and_the_stem_can_be_left_alone() -> None:
    conv = nn.Conv2d(8, 8, 3, padding=1)
    twice = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), conv, conv)
    sites, skipped = find_sites(twice, (3, 8, 8), include_stem=False)
    assert sites == []
    assert ("0", "the stem, left alone") in skipped
    assert any(reason.startswith("shared") or "2 times" in reason for name, reason in skipped if name == "1")
