"""The sensitivity table: each candidate's accuracy against the same computed by hand, and its cache."""

from __future__ import annotations

import copy
import dataclasses
import json
import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import sepconv.convert
from sepconv.convert import recalibrate_batchnorm, to_low_rank, to_separable
from sepconv.errors import ParameterError
from sepconv.optimize import sites
from sepconv.optimize.cache import CacheWarning
from sepconv.optimize.planner import LayerChoices, Option
from sepconv.optimize.sensitivity import (
    Sensitivity,
    SensitivityTable,
    default_sensitivity_table_path,
    loss_options,
    measure_sensitivity,
    model_checksum,
)
from sepconv.optimize.sites import build_candidate, find_sites

IMAGE = (2, 8, 8)


def tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(2, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Conv2d(6, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    ).eval()


def tiny_data(model: nn.Module) -> dict[str, Any]:
    """Calibration and recalibration images, and validation images labelled by the model itself with a
    quarter of the labels moved on: base accuracy near 75%, and conversions change it."""
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(120, *IMAGE, generator=generator)
    with torch.no_grad():
        labels = model(images[:80]).argmax(dim=1)
    labels[::4] = (labels[::4] + 1) % 4
    return {"calibration": images[80:96], "recalibration": images[96:], "validation": (images[:80], labels)}


def output_errors_by_hand(
    model: nn.Module, calibration: torch.Tensor, ranks: Mapping[str, Sequence[int]]
) -> dict[str, dict[int, float]]:
    """||y_r - y|| / ||y|| of each layer alone, on the input it sees in the original model (eval mode)."""
    model = copy.deepcopy(model).eval()
    inputs: dict[str, torch.Tensor] = {}
    handles = [
        model.get_submodule(name).register_forward_hook(
            lambda module, args, output, name=name: inputs.__setitem__(name, args[0])
        )
        for name in ranks
    ]
    with torch.no_grad():
        model(calibration)
        for handle in handles:
            handle.remove()
        errors = {}
        for name, layer_ranks in ranks.items():
            layer = model.get_submodule(name)
            reference = layer(inputs[name])
            errors[name] = {
                rank: float(
                    (build_candidate(layer, rank)(inputs[name]) - reference).norm() / reference.norm()
                )
                for rank in layer_ranks
            }
    return errors


def accuracy_by_hand(model: nn.Module, name: str, rank: int, data: dict[str, Any]) -> float:
    converted, _ = to_separable(model, depth_multiplier={name: rank})
    recalibrate_batchnorm(converted, data["recalibration"])
    images, labels = data["validation"]
    with torch.no_grad():
        correct = (converted.eval()(images).argmax(dim=1) == labels).sum().item()
    return 100.0 * correct / len(labels)


class Counting:
    """Counts the candidates built and the output-error passes that measure_sensitivity asks for."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.conversions: list[tuple[str, int]] = []
        self.output_error_layers: list[dict[str, list[int]]] = []
        real_build = sites.build_candidate
        real_errors = sepconv.convert.layer_output_errors

        def counting_build(layer: nn.Module, rank: int | None, **options: Any) -> nn.Module:
            # candidates are built from a working copy's layers: name them by their input channels
            self.conversions.append(({2: "0", 6: "3"}[layer.in_channels], rank))
            return real_build(layer, rank, **options)

        def counting_errors(model: nn.Module, calibration: torch.Tensor, ranks: Any) -> Any:
            self.output_error_layers.append({name: list(values) for name, values in ranks.items()})
            return real_errors(model, calibration, ranks)

        monkeypatch.setattr(sites, "build_candidate", counting_build)
        monkeypatch.setattr(sepconv.convert, "layer_output_errors", counting_errors)


@pytest.fixture
def setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> types.SimpleNamespace:
    model = tiny_model()
    sites, _ = find_sites(model, IMAGE)
    return types.SimpleNamespace(
        model=model,
        sites=sites,
        data=tiny_data(model),
        counting=Counting(monkeypatch),
        path=tmp_path / "sensitivity.json",
    )


def measure(
    setting: types.SimpleNamespace, **changes: Any
) -> tuple[float | None, dict[str, dict[int, Sensitivity]]]:
    model = changes.pop("model", setting.model)
    arguments = {
        **setting.data,
        "table": SensitivityTable(setting.path),
        "dataset": "tiny",
        "split_seed": 0,
        **changes,
    }
    return measure_sensitivity(model, setting.sites, **arguments)


def test_each_candidate_is_measured_alone_as_by_hand(setting: types.SimpleNamespace) -> None:
    assert [(site.name, site.ranks) for site in setting.sites] == [("0", (1, 2)), ("3", (1, 2, 4))]
    before = copy.deepcopy(setting.model.state_dict())
    setting.model.train()
    base, results = measure(setting)
    # the original, measured the same way: BatchNorm re-estimated on the recalibration images
    reference = recalibrate_batchnorm(copy.deepcopy(setting.model), setting.data["recalibration"]).eval()
    images, labels = setting.data["validation"]
    with torch.no_grad():
        assert base == 100.0 * (reference(images).argmax(dim=1) == labels).sum().item() / len(labels)
    expected_errors = output_errors_by_hand(
        setting.model.eval(), setting.data["calibration"], {"0": [1, 2], "3": [1, 2, 4]}
    )
    for site in setting.sites:
        assert sorted(results[site.name]) == list(site.ranks)
        for rank, measured in results[site.name].items():
            assert (measured.site, measured.rank, measured.cached) == (site.name, rank, False)
            assert measured.accuracy == accuracy_by_hand(setting.model, site.name, rank, setting.data)
            assert measured.output_error == pytest.approx(expected_errors[site.name][rank], rel=1e-5)
    assert len({measured.accuracy for ranks in results.values() for measured in ranks.values()}) > 1
    assert results["3"][1].output_error > 0 and results["3"][4].output_error < results["3"][1].output_error
    # the caller's model is as it was: weights, BatchNorm statistics, train mode
    assert all(torch.equal(value, setting.model.state_dict()[name]) for name, value in before.items())


def test_a_linear_site_is_measured_as_to_low_rank_converts_it() -> None:
    torch.manual_seed(2)
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(256, 256),
        nn.BatchNorm1d(256),
        nn.ReLU(),
        nn.Linear(256, 4),
    ).eval()
    sites, _ = find_sites(model, IMAGE)
    linear = next(site for site in sites if site.kind == "linear")
    assert linear.name == "4" and linear.ranks[:4] == (1, 2, 4, 8)
    linear = dataclasses.replace(linear, ranks=(1, 8))  # two of its seven ranks are enough here
    data = tiny_data(model)
    _, results = measure_sensitivity(model, [linear], **data, table=None)
    images, labels = data["validation"]
    expected_errors = output_errors_by_hand(model, data["calibration"], {"4": [1, 8]})
    for rank, measured in results["4"].items():
        converted, _ = to_low_rank(model, rank={"4": rank})
        recalibrate_batchnorm(converted, data["recalibration"])
        with torch.no_grad():
            correct = (converted.eval()(images).argmax(dim=1) == labels).sum().item()
        assert measured.accuracy == 100.0 * correct / len(labels)
        assert measured.output_error == pytest.approx(expected_errors["4"][rank], rel=1e-5)
    assert results["4"][8].output_error < results["4"][1].output_error


def test_a_bfloat16_model_is_evaluated_on_images_of_its_own_precision(setting: types.SimpleNamespace) -> None:
    model = setting.model.to(torch.bfloat16)
    base, _ = measure_sensitivity(model, [], **setting.data, table=None)
    reference = recalibrate_batchnorm(copy.deepcopy(model), setting.data["recalibration"]).eval()
    images, labels = setting.data["validation"]
    with torch.no_grad():
        predicted = reference(images.to(torch.bfloat16)).argmax(dim=1)
    assert base == 100.0 * (predicted == labels).sum().item() / len(labels)


def test_a_second_run_measures_nothing_and_returns_the_same(setting: types.SimpleNamespace) -> None:
    base, results = measure(setting)
    counted = (len(setting.counting.conversions), len(setting.counting.output_error_layers))
    assert counted == (5, 1)  # one output-error pass for every site and rank
    again_base, again = measure(setting)
    assert (len(setting.counting.conversions), len(setting.counting.output_error_layers)) == counted
    assert again_base == base
    for name, ranks in results.items():
        for rank, measured in ranks.items():
            assert again[name][rank] == Sensitivity(
                name, rank, measured.output_error, measured.accuracy, cached=True
            )


@pytest.mark.parametrize(
    "change",
    ["weights", "dataset", "split_seed", "validation_images", "recalibration_images", "calibration_images"],
)
def test_a_changed_model_or_data_is_measured_again(setting: types.SimpleNamespace, change: str) -> None:
    measure(setting)
    setting.counting.conversions.clear()
    data = setting.data
    changes: dict[str, Any] = {
        "weights": {"model": _nudged(setting.model)},
        "dataset": {"dataset": "other"},
        "split_seed": {"split_seed": 1},
        "validation_images": {"validation": (data["validation"][0][:60], data["validation"][1][:60])},
        "recalibration_images": {"recalibration": data["recalibration"][:10]},
        "calibration_images": {"calibration": data["calibration"][:8]},
    }[change]
    measure(setting, **changes)
    assert len(setting.counting.conversions) == 5


def _nudged(model: nn.Module) -> nn.Module:
    changed = copy.deepcopy(model)
    with torch.no_grad():
        changed[3].weight[0, 0, 0, 0] += 1e-3
    assert model_checksum(changed) != model_checksum(model)
    return changed


def test_the_model_checksum_covers_weights_buffers_and_names() -> None:
    model = tiny_model()
    same = tiny_model()
    assert model_checksum(model) == model_checksum(same)
    with torch.no_grad():
        same[1].running_mean[0] += 1e-6  # BatchNorm statistics decide outputs as weights do
    assert model_checksum(same) != model_checksum(model)
    renamed = nn.Sequential(*tiny_model(), nn.Identity())
    assert model_checksum(nn.Sequential(nn.Identity(), *tiny_model())) != model_checksum(renamed)


def test_an_interrupted_run_keeps_what_it_finished(setting: types.SimpleNamespace) -> None:
    def interrupt(description: str, done: int, total: int) -> None:
        if done == 3:  # Ctrl-C once the first rank of the second site is measured
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        measure(setting, progress=interrupt)
    assert setting.counting.conversions == [("0", 1), ("0", 2), ("3", 1)]
    setting.counting.conversions.clear()
    reports: list[tuple[str, int, int]] = []
    _, results = measure(setting, progress=lambda *report: reports.append(report))
    assert setting.counting.conversions == [("3", 2), ("3", 4)]
    assert [measured.cached for measured in results["0"].values()] == [True, True]
    assert [measured.cached for measured in results["3"].values()] == [True, False, False]
    assert reports == [("3 at rank 2", 1, 2), ("3 at rank 4", 2, 2)]


def test_a_corrupt_table_is_named_and_measured_again(setting: types.SimpleNamespace) -> None:
    measure(setting)
    document = json.loads(setting.path.read_text())
    record = next(iter(document["records"].values()))
    record["value"]["accuracy"] = 250.0
    setting.path.write_text(json.dumps(document))
    setting.counting.conversions.clear()
    with pytest.warns(CacheWarning, match=rf"^{setting.path}: record \w+: accuracy must be a percentage"):
        measure(setting)
    assert len(setting.counting.conversions) == 5
    SensitivityTable(setting.path)  # rewritten whole: trusted again, no warning (the suite errors on one)


def test_without_validation_only_output_errors_are_measured(setting: types.SimpleNamespace) -> None:
    base, results = measure(setting, validation=None, recalibration=None, table=None)
    assert base is None and setting.counting.conversions == []
    assert all(
        measured.accuracy is None and measured.output_error > 0
        for ranks in results.values()
        for measured in ranks.values()
    )


def test_bad_data_names_the_argument(setting: types.SimpleNamespace) -> None:
    images, labels = setting.data["validation"]
    for changes, param in [
        ({"calibration": images[0]}, "calibration"),
        ({"recalibration": images[:1]}, "recalibration"),
        ({"validation": images}, "validation"),
        ({"validation": (images, labels[:-1])}, "validation"),
        ({"validation": (images, labels.float())}, "validation"),
        ({"batch_size": 0}, "batch_size"),
    ]:
        with pytest.raises(ParameterError) as refused:
            measure(setting, **changes)
        assert refused.value.param == param


def test_the_default_table_lives_beside_the_cost_table(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SEPCONV_CACHE_DIR", str(tmp_path))
    assert default_sensitivity_table_path() == tmp_path / "sensitivity.json"


def test_loss_options_join_costs_and_sensitivity(setting: types.SimpleNamespace) -> None:
    def cost(ms: float) -> types.SimpleNamespace:
        return types.SimpleNamespace(ms=ms)

    costs = {
        "0": {None: cost(1.0), 1: cost(1.2), 2: cost(1.4)},
        "3": {None: cost(3.0), 1: cost(1.0), 4: cost(2.0)},
    }
    sensitivity = {
        "0": {1: Sensitivity("0", 1, 0.3, 90.0), 2: Sensitivity("0", 2, 0.1, 96.5)},
        "3": {
            1: Sensitivity("3", 1, 0.2, 92.0),
            2: Sensitivity("3", 2, 0.1, 95.0),
            4: Sensitivity("3", 4, 0.05, 97.5),
        },
    }
    assert loss_options(setting.sites, costs, sensitivity, 97.0, error_points=0.0) == [
        LayerChoices("0", (Option(None, 1.0, 0.0), Option(1, 1.2, 7.0), Option(2, 1.4, 0.5))),
        # rank 2 has no cost: left out; rank 4 gained accuracy: noise, no loss
        LayerChoices("3", (Option(None, 3.0, 0.0), Option(1, 1.0, 5.0), Option(4, 2.0, 0.0))),
    ]
    # by default the output error breaks ties, at 0.01 points per unit of error
    default = loss_options(setting.sites, costs, sensitivity, 97.0)
    assert [option.loss for option in default[1].options] == pytest.approx([0.0, 5.002, 0.0005], abs=1e-12)
    by_error = loss_options(setting.sites, costs, sensitivity, None)
    assert [option.loss for option in by_error[1].options] == [0.0, 0.2, 0.05]
    with pytest.raises(ParameterError, match=r"^3: the cost table has no time for keeping it$"):
        loss_options(setting.sites, {**costs, "3": {1: cost(1.0)}}, sensitivity, 97.0)
    with pytest.raises(ParameterError, match=r"^error_points must be a finite number >= 0, got -1"):
        loss_options(setting.sites, costs, sensitivity, 97.0, error_points=-1)
    unmeasured = {**sensitivity, "0": {1: Sensitivity("0", 1, 0.3, None)}}
    with pytest.raises(ParameterError, match=r"^0 at rank 1 has no accuracy"):
        loss_options(setting.sites, costs, unmeasured, 97.0)
