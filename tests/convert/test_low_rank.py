"""to_low_rank and low_rank_like against torch.linalg.svd and plain nn.Linear: exactness, errors, costs, files."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sepconv import load_model, save_model
from sepconv.convert import ConversionWarning, to_low_rank, to_separable
from sepconv.convert.low_rank import MIN_LINEAR_WEIGHTS, low_rank_like
from sepconv.convert.select import eligible_linears
from sepconv.errors import ParameterError
from sepconv.io import model_transforms
from sepconv.layers import LowRankLinear, SeparableConv2d
from sepconv.models import create_model


def _product(layer: LowRankLinear) -> torch.Tensor:
    """The out x in matrix the pair computes, from its two weights."""
    return layer.second.weight.detach().double() @ layer.first.weight.detach().double()


def _truncated(weight: torch.Tensor, rank: int) -> tuple[torch.Tensor, float]:
    """The best rank-r approximation of ``weight`` by torch.linalg.svd, and its relative error."""
    u, s, vh = torch.linalg.svd(weight.detach().double(), full_matrices=False)
    approx = u[:, :rank] @ torch.diag(s[:rank]) @ vh[:rank]
    return approx, float(s[rank:].square().sum().sqrt() / s.square().sum().sqrt())


def _relative(approx: torch.Tensor, reference: torch.Tensor) -> float:
    approx, reference = approx.detach().double(), reference.detach().double()
    return float((approx - reference).norm() / reference.norm())


@pytest.mark.parametrize(("in_features", "out_features"), [(24, 10), (10, 24), (16, 16)])
def test_low_rank_like_is_the_truncated_svd_and_exact_at_full_rank(in_features, out_features) -> None:
    torch.manual_seed(0)
    linear = nn.Linear(in_features, out_features)
    x = torch.randn(5, in_features)
    exact = min(in_features, out_features)
    for rank in (1, 3, exact):
        pair = low_rank_like(linear, rank)
        approx, _ = _truncated(linear.weight, rank)
        # Eckart-Young: with distinct singular values the best rank-r approximation is unique
        assert _relative(_product(pair), approx) < 1e-5
        assert torch.equal(pair.second.bias, linear.bias)
    pair = low_rank_like(linear, exact)
    assert _relative(pair(x), linear(x)) < 1e-5


def test_low_rank_like_keeps_dtype_mode_grad_and_a_missing_bias() -> None:
    linear = nn.Linear(8, 6, bias=False, dtype=torch.float64).eval().requires_grad_(False)
    pair = low_rank_like(linear, 2, init="random")
    assert pair.second.bias is None and not pair.training
    assert {p.dtype for p in pair.parameters()} == {torch.float64}
    assert not any(p.requires_grad for p in pair.parameters())


@pytest.mark.parametrize("rank", [0, 7, True, 2.0])
def test_low_rank_like_refuses_a_rank_outside_one_to_exact(rank) -> None:
    with pytest.raises(ParameterError, match=r"rank must be an integer in \[1, 6\] for a 8x6 linear layer"):
        low_rank_like(nn.Linear(8, 6), rank)


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(512, 256),  # 131,072 weights: chosen by default
        nn.ReLU(),
        nn.Linear(256, 128),  # 32,768 weights: too small by default
        nn.ReLU(),
        nn.Linear(128, 10),
    )


def test_default_choice_rank_report_and_output() -> None:
    model = _mlp()
    x = torch.randn(16, 512)
    converted, report = to_low_rank(model, rank=32, calibration=x)
    assert isinstance(converted[0], LowRankLinear) and converted[0].rank == 32
    assert isinstance(model[0], nn.Linear)  # the original is left alone
    assert dict(report.skipped) == {
        "2": "256x128 linear layer: too small",
        "4": "128x10 linear layer: too small",
    }
    (layer,) = report.layers
    _, weight_error = _truncated(model[0].weight, 32)
    assert layer.weight_error == pytest.approx(weight_error, rel=1e-6)
    assert (layer.params_before, layer.params_after) == (512 * 256 + 256, 32 * (512 + 256) + 256)
    assert (layer.macs_before, layer.macs_after) == (512 * 256, 32 * (512 + 256))
    with torch.no_grad():
        expected = _relative(converted[0](x), model[0](x))
    assert layer.output_error == pytest.approx(expected, rel=1e-6)
    assert report.total_macs_before - report.total_macs_after == 512 * 256 - 32 * (512 + 256)
    assert report.total_params_after == sum(p.numel() for p in converted.parameters())
    document = report.to_dict()
    assert document["layers"][0]["rank"] == 32 and document["calibration_samples"] == 16
    assert document["totals"]["macs_before"] == report.total_macs_before
    table = report.format_table()
    assert "weight err" in table and "left as they were: 2 (256x128 linear layer: too small)" in table


def test_rows_of_a_token_input_count_in_the_macs() -> None:
    model = nn.Sequential(nn.Linear(300, 300))
    _, report = to_low_rank(model, rank=8, input_size=(7, 300))
    assert (report.layers[0].macs_before, report.layers[0].macs_after) == (7 * 300 * 300, 7 * 8 * 600)


def test_min_weights_include_exclude_and_a_pattern_matching_nothing() -> None:
    model = _mlp()
    _, report = to_low_rank(model, rank=4, min_weights=0, input_size=(512,))
    assert [layer.name for layer in report.layers] == ["0", "2", "4"]
    _, report = to_low_rank(model, rank=4, min_weights=0, exclude="0", input_size=(512,))
    assert [layer.name for layer in report.layers] == ["2", "4"] and (
        "0",
        "excluded by '0'",
    ) in report.skipped
    with (
        pytest.warns(ConversionWarning, match=r"include pattern 'head\.\*' matches no layer of Sequential"),
        pytest.raises(ValueError, match="Sequential has no linear layer to split"),
    ):
        to_low_rank(model, rank=4, include="head.*")
    assert MIN_LINEAR_WEIGHTS == 65_536


def test_a_mapping_names_layers_of_any_size_and_refuses_the_rest() -> None:
    model = _mlp()
    converted, report = to_low_rank(model, rank={"2": 16, "4": 10}, input_size=(512,))
    assert [(layer.name, layer.rank) for layer in report.layers] == [("2", 16), ("4", 10)]
    assert isinstance(converted[0], nn.Linear)
    with pytest.raises(ParameterError, match=r"rank\['4'\]=11 is above that layer's exact rank 10") as error:
        to_low_rank(model, rank={"4": 11})
    assert error.value.param == "rank"
    with pytest.raises(
        ParameterError, match=r"rank names layer '1', which cannot be converted: no nn\.Linear"
    ):
        to_low_rank(model, rank={"1": 2})
    with pytest.raises(ParameterError, match="rank must map layer names to positive integers"):
        to_low_rank(model, rank={"0": 0})


def test_one_rank_above_some_layers_is_capped_and_above_all_refused() -> None:
    model = _mlp()
    with pytest.warns(
        ConversionWarning, match=r"rank=64 is above the exact rank of 1 layer\(s\).*: 4 \(10\)"
    ):
        _, report = to_low_rank(model, rank=64, min_weights=0, input_size=(512,))
    assert [layer.rank for layer in report.layers] == [64, 64, 10]
    with pytest.raises(ParameterError, match="rank=300 is above the exact rank of every layer to convert"):
        to_low_rank(model, rank=300, min_weights=0)


def test_auto_by_weight_error_picks_the_smallest_rank_within_it() -> None:
    model = _mlp()
    energy = torch.linalg.svdvals(model[0].weight.detach().double()).square()
    errors = [float((energy[rank:].sum() / energy.sum()).sqrt()) for rank in range(257)]
    _, report = to_low_rank(model, rank="auto", max_relative_error=0.6, input_size=(512,))
    expected = next(rank for rank, error in enumerate(errors) if error <= 0.6)
    assert report.layers[0].rank == expected and errors[expected - 1] > 0.6


def test_auto_by_output_error_matches_layer_output_errors() -> None:
    from sepconv.convert import layer_output_errors

    model = _mlp()
    x = torch.randn(32, 512)
    candidates = [*range(1, 17), 32, 64, 128, 256]  # every rank up to 16, then powers of two
    errors = layer_output_errors(model, x, {"0": candidates})["0"]
    limit = 0.7
    _, report = to_low_rank(model, rank="auto", max_output_error=limit, calibration=x)
    expected = next(rank for rank in candidates if errors[rank] <= limit)
    assert report.layers[0].rank == expected
    assert report.layers[0].output_error == pytest.approx(errors[expected], rel=1e-6)
    # both limits: both must hold, so the rank is at least the weight error's
    _, both = to_low_rank(model, rank="auto", max_output_error=limit, max_relative_error=0.8, calibration=x)
    assert both.layers[0].rank >= expected and both.layers[0].weight_error <= 0.8


def test_auto_leaves_a_layer_whose_pair_would_be_larger() -> None:
    model = _mlp()
    with pytest.warns(ConversionWarning, match=r"rank='auto' left 1 layer\(s\) as they were \(0\)"):
        converted, report = to_low_rank(model, rank="auto", max_relative_error=0.0, input_size=(512,))
    assert report.layers == () and isinstance(converted[0], nn.Linear)
    assert report.skipped[-1] == ("0", f"auto rank 256 has more parameters, {256 * 768:,} > {512 * 256:,}")
    _, report = to_low_rank(model, rank="auto", max_relative_error=0.0, min_weights=0, input_size=(512,))
    assert all(reason.startswith("auto rank") for name, reason in report.skipped)


@pytest.mark.parametrize(
    ("kwargs", "param", "message"),
    [
        ({"rank": "auto"}, "max_relative_error", "rank='auto' needs max_relative_error"),
        ({"rank": "auto", "max_output_error": 0.1}, "calibration", "max_output_error needs calibration"),
        (
            {"rank": 4, "max_output_error": 0.1},
            "max_output_error",
            "max_output_error applies with rank='auto'",
        ),
        ({"rank": "auto", "max_relative_error": 0.1, "init": "random"}, "init", "so init must be 'svd'"),
        ({"rank": 0}, "rank", "rank must be a positive integer, 'auto' or a"),
        ({"rank": 4, "min_weights": -1}, "min_weights", "min_weights must be a non-negative integer"),
    ],
)
def test_bad_options_are_refused_with_the_parameter(kwargs, param, message) -> None:
    with pytest.raises(ParameterError, match=message) as error:
        to_low_rank(_mlp(), **kwargs)
    assert error.value.param == param


def test_skips_pairs_already_split_attention_projections_and_shared_layers() -> None:
    shared = nn.Linear(300, 300)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attention = nn.MultiheadAttention(256, 4)
            self.pair = LowRankLinear(1024, 1024, 128)
            self.a, self.b = shared, shared

    _, skipped = eligible_linears(Net(), 0, [], [])
    reasons = dict(skipped)
    assert reasons["attention.out_proj"].startswith("its weights are read by nn.MultiheadAttention")
    assert reasons["pair.first"] == reasons["pair.second"] == "already low-rank"
    assert reasons["a"] == "shared: reachable under more than one name"


def _small_model() -> nn.Module:
    torch.manual_seed(0)
    return create_model("standard_cnn", widths=(4, 8, 8, 16), num_classes=12)


@pytest.mark.parametrize("order", ["low_rank_first", "separable_first"])
def test_a_model_converted_both_ways_reloads_with_identical_outputs(tmp_path, order) -> None:
    model = _small_model()
    steps = [
        lambda m: to_low_rank(m, rank={"classifier.1": 4})[0],
        lambda m: to_separable(m, depth_multiplier=2)[0],
    ]
    for step in steps if order == "low_rank_first" else reversed(steps):
        model = step(model)
    names = [step["name"] for step in model_transforms(model)]
    assert sorted(names) == ["to_low_rank", "to_separable"]
    assert model_transforms(model)[names.index("to_low_rank")]["kwargs"] == {"rank": {"classifier.1": 4}}
    path = save_model(model, tmp_path / "both.safetensors")
    loaded = load_model(path).eval()
    assert isinstance(loaded.classifier[1], LowRankLinear) and loaded.classifier[1].rank == 4
    assert isinstance(loaded.features[1][0], SeparableConv2d)
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))


def test_replay_refuses_a_recorded_step_that_names_no_linear_layer() -> None:
    from sepconv.convert import get_transform

    replay = get_transform("to_low_rank")
    with pytest.raises(ParameterError, match=r"rank names layer 'features\.0\.0', which cannot be converted"):
        replay(_small_model(), rank={"features.0.0": 2})
    assert replay(_small_model(), rank={"classifier.1": 3}).classifier[1].rank == 3
