"""layer_output_errors against the error worked by hand, and to_separable's ``auto`` by output error."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sepconv.convert import ConversionWarning, layer_output_errors, to_separable
from sepconv.convert.low_rank import low_rank_like
from sepconv.convert.separable import separable_like
from sepconv.convert.svd import channel_svd
from sepconv.errors import ParameterError


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 24, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(24 * 4 * 4, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )


def _by_hand(model: nn.Module, x: torch.Tensor, name: str, rank: int) -> float:
    """Run the original model, take layer ``name``'s input with a hook, apply the replacement, compare."""
    layer = model.get_submodule(name)
    seen = {}
    handle = layer.register_forward_hook(lambda module, args, output: seen.update(x=args[0], y=output))
    model.eval()
    with torch.no_grad():
        model(x)
        handle.remove()
        if isinstance(layer, nn.Conv2d):
            replacement = separable_like(layer, rank, channel_svd(layer))
        else:
            replacement = low_rank_like(layer, rank)
        approx = replacement(seen["x"]).double()
    reference = seen["y"].double()
    return float((approx - reference).norm() / reference.norm())


def test_errors_of_convolutions_and_linear_layers_match_the_hand_computed_ones() -> None:
    model = _net()
    x = torch.randn(6, 3, 8, 8)
    ranks = {"0": [1, 4, 9], "3": [2, 9], "6": [1, 8, 64], "8": [10]}
    model.train()
    errors = layer_output_errors(model, x, ranks)
    assert model.training and model[1].training  # modes put back
    assert {name: sorted(by_rank) for name, by_rank in errors.items()} == ranks
    for name, wanted in ranks.items():
        for rank in wanted:
            assert errors[name][rank] == pytest.approx(_by_hand(_net(), x, name, rank), rel=1e-5, abs=1e-7)
    assert errors["0"][9] < 1e-5 and errors["6"][64] < 1e-5 and errors["8"][10] < 1e-5  # exact ranks
    assert errors["0"][1] > errors["0"][4] > errors["0"][9]


def test_a_layer_called_twice_is_measured_over_both_calls() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 4, 3, padding=1)

    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = conv

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(torch.relu(self.conv(x)))

    x = torch.randn(2, 4, 6, 6)
    errors = layer_output_errors(Twice(), x, {"conv": [1]})
    replacement = separable_like(conv, 1, channel_svd(conv))
    with torch.no_grad():
        first = conv(x)
        second = conv(torch.relu(first))
        difference = (replacement(x) - first).square().sum() + (
            replacement(torch.relu(first)) - second
        ).square().sum()
        reference = first.square().sum() + second.square().sum()
    assert errors["conv"][1] == pytest.approx(float((difference / reference).sqrt()), rel=1e-5)


@pytest.mark.parametrize(
    ("ranks", "message"),
    [
        ({"2": [1]}, r"ranks names layer '2', which has no replacement: no nn\.Conv2d or nn\.Linear"),
        ({"3": [10]}, r"ranks\['3'\] must hold integers in \[1, 9\]"),
        ({"6": [0]}, r"ranks\['6'\] must hold integers in \[1, 64\]"),
        ({"6": 4}, r"ranks\['6'\] must be a sequence of ranks"),
    ],
)
def test_bad_names_and_ranks_are_refused(ranks, message) -> None:
    with pytest.raises(ParameterError, match=message) as error:
        layer_output_errors(_net(), torch.randn(2, 3, 8, 8), ranks)
    assert error.value.param == "ranks"


def test_a_layer_that_never_runs_and_a_batch_that_does_not_fit_are_errors() -> None:
    class OneOfTwo(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used, self.unused = nn.Conv2d(3, 8, 3), nn.Conv2d(3, 8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.used(x)

    with pytest.raises(ValueError, match=r"layer\(s\) 'unused' did not run when OneOfTwo ran"):
        layer_output_errors(OneOfTwo(), torch.randn(2, 3, 8, 8), {"unused": [1]})
    with pytest.raises(
        ValueError, match="calibration: OneOfTwo cannot run on the calibration batch of shape"
    ):
        layer_output_errors(OneOfTwo(), torch.randn(2, 5, 8, 8), {"used": [1]})


def test_auto_by_output_error_picks_the_smallest_candidate_within_it() -> None:
    model = _net()
    x = torch.randn(16, 3, 8, 8)
    candidates = list(range(1, 10))  # every rank of a 3x3 convolution with 24 outputs
    errors = layer_output_errors(model, x, {"3": candidates})["3"]
    limit = (errors[2] + errors[4]) / 2  # between two candidates: r = 4 is the smallest within it
    converted, report = to_separable(
        model, depth_multiplier="auto", max_output_error=limit, calibration=x, include="3"
    )
    (layer,) = report.layers
    assert layer.depth_multiplier == next(rank for rank in candidates if errors[rank] <= limit)
    assert layer.output_error == pytest.approx(errors[layer.depth_multiplier], rel=1e-6)
    assert converted[3].depth_multiplier == layer.depth_multiplier


def test_auto_with_both_limits_needs_both_and_the_options_are_checked() -> None:
    model = _net()
    x = torch.randn(16, 3, 8, 8)
    _, by_output = to_separable(
        model, depth_multiplier="auto", max_output_error=1.0, calibration=x, include="3"
    )
    assert by_output.layers[0].depth_multiplier == 1  # any error is within 100%
    _, both = to_separable(
        model,
        depth_multiplier="auto",
        max_output_error=1.0,
        max_relative_error=0.9,
        calibration=x,
        include="3",
    )
    _, by_weight = to_separable(
        model, depth_multiplier="auto", max_relative_error=0.9, include="3", calibration=x
    )
    assert both.layers[0].depth_multiplier >= by_weight.layers[0].depth_multiplier
    assert both.layers[0].weight_error <= 0.9
    with pytest.raises(ParameterError, match="max_output_error needs calibration") as error:
        to_separable(model, depth_multiplier="auto", max_output_error=0.1)
    assert error.value.param == "calibration"
    with pytest.raises(ParameterError, match="max_output_error applies with depth_multiplier='auto' only"):
        to_separable(model, depth_multiplier=2, max_output_error=0.1, calibration=x)
    with pytest.raises(
        ParameterError, match=r"depth_multiplier='auto' needs max_relative_error .* or max_output_error"
    ):
        to_separable(model, depth_multiplier="auto")


def test_auto_by_output_error_leaves_a_stem_whose_needed_rank_is_larger() -> None:
    model = _net()
    x = torch.randn(8, 3, 8, 8)
    with pytest.warns(
        ConversionWarning, match=r"at the rank max_output_error=0\.0 needs, .* larger max_output_error"
    ):
        _, report = to_separable(model, depth_multiplier="auto", max_output_error=0.0, calibration=x)
    # 3 9 r (depthwise) + 3 r 16 (pointwise) + 16 at r = 9, against 3 16 9 + 16
    assert ("0", "auto rank 9 has more parameters, 691 > 448") in report.skipped


@pytest.mark.slow
def test_on_a_trained_cnn_output_error_picks_smaller_ranks_than_weight_error(tmp_path) -> None:
    """The issue's case at demo size: a trained standard_cnn's layers lose far less on real images than
    their weight errors say, so ``auto`` by output error converts more, at smaller ranks."""
    import dataclasses

    from sepconv import load_model
    from sepconv.data import load_dataset
    from sepconv.demo import DEMO_BATCH_SIZE, DEMO_LR, demo_config
    from sepconv.train.trainer import fit

    config = demo_config(
        "standard_cnn",
        tmp_path,
        dataset="mnist5k",
        epochs=1,
        batch_size=DEMO_BATCH_SIZE,
        lr=DEMO_LR,
        seed=0,
        progress=False,
    )
    fit(dataclasses.replace(config, model_kwargs={"widths": [16, 32, 64, 128]}))  # a quarter of the demo's
    model = load_model(tmp_path / "standard_cnn" / "model.safetensors")
    data = load_dataset("mnist5k", seed=0)
    images = torch.stack([data.test[index][0] for index in range(32)])
    with pytest.warns(ConversionWarning):  # the stem is left alone by both
        _, by_weight = to_separable(
            model, depth_multiplier="auto", max_relative_error=0.3, calibration=images
        )
        _, by_output = to_separable(model, depth_multiplier="auto", max_output_error=0.3, calibration=images)
    weight_ranks = {layer.name: layer.depth_multiplier for layer in by_weight.layers}
    output_ranks = {layer.name: layer.depth_multiplier for layer in by_output.layers}
    # what the layers lose on images is well below what their weights lose
    assert all(layer.output_error < layer.weight_error for layer in by_weight.layers)
    assert all(layer.output_error <= 0.3 for layer in by_output.layers)
    assert set(weight_ranks) <= set(output_ranks)
    assert all(output_ranks[name] < rank for name, rank in weight_ranks.items())
    assert by_output.total_macs_after < by_weight.total_macs_after
