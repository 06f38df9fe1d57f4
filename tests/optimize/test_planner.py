"""The planner against brute force: every plan of small synthetic models, enumerated and compared."""

from __future__ import annotations

import itertools
import math
import pickle
import random
import subprocess
import sys

import numpy as np
import pytest

from sepconv.errors import ParameterError
from sepconv.optimize.planner import (
    BudgetError,
    LatencyModel,
    LayerChoices,
    Option,
    Plan,
    choose_plan,
    keep_plan,
    pareto_front,
    plan_for,
)

SEEDS = range(8)


def synthetic_layers(seed: int, count: int = 4) -> list[LayerChoices]:
    """``count`` sites, each keep + 1-4 ranks: faster than keep, lossier the smaller the rank (as in real
    tables), with now and then a slightly negative loss (validation noise)."""
    generator = random.Random(seed)
    layers = []
    for index in range(count):
        keep_ms = generator.uniform(1.0, 10.0)
        options = [Option(None, keep_ms, 0.0)]
        for rank in (1, 2, 4, 8)[: generator.randint(1, 4)]:
            ms = keep_ms * generator.uniform(0.1, 1.1)
            loss = generator.uniform(-0.05, 3.0) / rank
            options.append(Option(rank, ms, loss))
        layers.append(LayerChoices(f"layer{index}", tuple(options)))
    return layers


def every_plan(layers: list[LayerChoices], latency: LatencyModel) -> list[Plan]:
    """Brute force: each combination of options, its sums written out independently of the planner."""
    plans = []
    for combination in itertools.product(*(layer.options for layer in layers)):
        layer_ms = sum(option.ms for option in combination)
        loss = sum(max(option.loss, 0.0) for option in combination)
        ranks = {layer.name: option.rank for layer, option in zip(layers, combination, strict=True)}
        plans.append(Plan(ranks, latency.fixed_ms + latency.scale * layer_ms, loss, layer_ms))
    return plans


def latency_for(seed: int, layers: list[LayerChoices]) -> LatencyModel:
    generator = random.Random(1000 + seed)
    keep_ms = sum(layer.keep.ms for layer in layers)
    return LatencyModel(generator.uniform(0.5, 5.0), generator.uniform(0.6, 1.4)) if seed % 2 else (
        LatencyModel.from_reference(keep_ms + generator.uniform(1.0, 3.0), layers)
    )  # fmt: skip


def brute_min_loss(plans: list[Plan], max_ms: float) -> Plan | None:
    within = [plan for plan in plans if plan.predicted_ms <= max_ms]
    return min(within, key=lambda plan: (plan.predicted_loss, plan.predicted_ms), default=None)


def brute_fastest(plans: list[Plan], max_loss: float) -> Plan:
    return min(
        (plan for plan in plans if plan.predicted_loss <= max_loss),
        key=lambda plan: (plan.predicted_ms, plan.predicted_loss),
    )


def dominated(plan: Plan, plans: list[Plan]) -> bool:
    return any(
        other.predicted_ms <= plan.predicted_ms
        and other.predicted_loss <= plan.predicted_loss
        and (other.predicted_ms < plan.predicted_ms or other.predicted_loss < plan.predicted_loss)
        for other in plans
    )


@pytest.mark.parametrize("seed", SEEDS)
def test_the_front_is_every_non_dominated_plan(seed: int) -> None:
    layers = synthetic_layers(seed)
    latency = latency_for(seed, layers)
    plans = every_plan(layers, latency)
    expected = sorted(
        {(round(p.predicted_ms, 9), round(p.predicted_loss, 9)) for p in plans if not dominated(p, plans)}
    )
    front = pareto_front(layers, latency)
    assert [(round(p.predicted_ms, 9), round(p.predicted_loss, 9)) for p in front] == expected
    for plan in front:  # each plan's figures are those of its own ranks
        (same,) = [p for p in plans if p.ranks == plan.ranks]
        assert plan.predicted_ms == pytest.approx(same.predicted_ms, rel=1e-12)
        assert plan.predicted_loss == pytest.approx(same.predicted_loss, rel=1e-12, abs=1e-12)
        assert plan.layer_ms == pytest.approx(same.layer_ms, rel=1e-12)
        assert list(plan.ranks) == [layer.name for layer in layers]


@pytest.mark.parametrize("seed", SEEDS)
def test_the_front_is_sorted_and_holds_the_fastest_and_the_all_keep_plan(seed: int) -> None:
    layers = synthetic_layers(seed)
    latency = latency_for(seed, layers)
    plans = every_plan(layers, latency)
    front = pareto_front(layers, latency)
    assert all(a.predicted_ms < b.predicted_ms for a, b in itertools.pairwise(front))
    assert all(a.predicted_loss > b.predicted_loss for a, b in itertools.pairwise(front))
    assert not any(dominated(plan, plans) for plan in front)
    fastest = min(plans, key=lambda plan: (plan.predicted_ms, plan.predicted_loss))
    assert front[0].ranks == fastest.ranks
    # every conversion in these tables loses something or saves nothing, so keeping all is on the front
    if all(option.loss > 0 or option.ms >= layer.keep.ms for layer in layers for option in layer.options[1:]):
        assert front[-1].ranks == keep_plan(layers, latency).ranks
        assert front[-1].predicted_loss == 0.0


@pytest.mark.parametrize("seed", SEEDS)
def test_choose_plan_matches_brute_force_for_every_budget(seed: int) -> None:
    layers = synthetic_layers(seed)
    latency = latency_for(seed, layers)
    plans = every_plan(layers, latency)
    slowest = max(plan.predicted_ms for plan in plans)
    fastest = min(plan.predicted_ms for plan in plans)
    generator = random.Random(seed)
    for _ in range(40):
        max_ms = generator.uniform(fastest, slowest * 1.05)
        expected = brute_min_loss(plans, max_ms)
        assert expected is not None
        chosen = choose_plan(layers, latency, max_ms=max_ms)
        assert (chosen.predicted_loss, chosen.predicted_ms) == pytest.approx(
            (expected.predicted_loss, expected.predicted_ms), rel=1e-12, abs=1e-12
        )
        max_loss = generator.uniform(0.0, max(plan.predicted_loss for plan in plans))
        expected = brute_fastest(plans, max_loss)
        chosen = choose_plan(layers, latency, max_loss=max_loss)
        assert (chosen.predicted_ms, chosen.predicted_loss) == pytest.approx(
            (expected.predicted_ms, expected.predicted_loss), rel=1e-12, abs=1e-12
        )
        # both: the smallest loss within the latency, refused above the loss budget
        best = brute_min_loss(plans, max_ms)
        assert best is not None
        if best.predicted_loss <= max_loss:
            chosen = choose_plan(layers, latency, max_ms=max_ms, max_loss=max_loss)
            assert chosen.predicted_loss == pytest.approx(best.predicted_loss, rel=1e-12, abs=1e-12)
        else:
            with pytest.raises(BudgetError) as refused:
                choose_plan(layers, latency, max_ms=max_ms, max_loss=max_loss)
            assert refused.value.param == "max_loss"
            assert refused.value.best.predicted_loss == pytest.approx(best.predicted_loss, rel=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_a_looser_budget_never_gives_a_worse_plan(seed: int) -> None:
    layers = synthetic_layers(seed)
    latency = latency_for(seed, layers)
    front = pareto_front(layers, latency)
    budgets_ms = np.linspace(front[0].predicted_ms, front[-1].predicted_ms * 1.1, 60)
    losses = [choose_plan(layers, latency, max_ms=float(budget)).predicted_loss for budget in budgets_ms]
    assert all(looser <= tighter for tighter, looser in itertools.pairwise(losses))
    budgets_loss = np.linspace(0.0, front[0].predicted_loss * 1.1, 60)
    latencies = [choose_plan(layers, latency, max_loss=float(budget)).predicted_ms for budget in budgets_loss]
    assert all(looser <= tighter for tighter, looser in itertools.pairwise(latencies))


def test_an_impossible_latency_names_the_fastest_plan_its_speedup_and_loss() -> None:
    layers = [
        LayerChoices("conv1", (Option(None, 4.0, 0.0), Option(1, 1.0, 0.75))),
        LayerChoices("conv2", (Option(None, 6.0, 0.0), Option(2, 2.0, 0.5))),
    ]
    latency = LatencyModel.from_reference(12.0, layers)  # fixed 2 ms: the fastest plan predicts 5 ms
    with pytest.raises(BudgetError) as refused:
        choose_plan(layers, latency, max_ms=4.0, loss_unit="accuracy points")
    error = refused.value
    assert isinstance(error, ParameterError) and error.param == "max_ms"
    assert error.best.ranks == {"conv1": 1, "conv2": 2}
    assert error.reference_ms == 12.0
    assert str(error) == (
        "no plan is predicted to run in 4 ms or less: the fastest plan predicts 5 ms (2.40x the original's "
        "12 ms) at a loss of 1.25 accuracy points"
    )
    again = pickle.loads(pickle.dumps(error))  # a worker process can hand it back whole
    assert (again.param, again.best, str(again)) == ("max_ms", error.best, str(error))
    with pytest.raises(BudgetError) as refused:  # within 8 ms: conv2 alone, at rank 2
        choose_plan(layers, latency, max_ms=8.0, max_loss=0.1, loss_unit="accuracy points")
    assert (refused.value.param, refused.value.best.ranks) == ("max_loss", {"conv1": None, "conv2": 2})
    assert str(refused.value) == (
        "no plan within 8 ms loses at most 0.1 accuracy points: the most accurate one predicts 8 ms (1.50x "
        "the original's 12 ms) at a loss of 0.5 accuracy points"
    )


def test_a_negative_loss_counts_as_zero_and_a_free_conversion_beats_keeping() -> None:
    layers = [
        LayerChoices("a", (Option(None, 5.0, 0.0), Option(1, 2.0, -0.3))),
        LayerChoices("b", (Option(None, 5.0, 0.0), Option(1, 1.0, 0.4))),
    ]
    latency = LatencyModel(0.0)
    front = pareto_front(layers, latency)
    # "a" at rank 1 is faster and (clamped) free: no plan keeps it, and its noise does not pay for "b"
    assert [plan.ranks for plan in front] == [{"a": 1, "b": 1}, {"a": 1, "b": None}]
    assert [plan.predicted_loss for plan in front] == [0.4, 0.0]
    assert choose_plan(layers, latency, max_loss=0.0).ranks == {"a": 1, "b": None}


def test_from_reference_predicts_the_original_exactly() -> None:
    layers = synthetic_layers(3, count=6)
    latency = LatencyModel.from_reference(40.0, layers)
    assert latency.scale == 1.0
    assert keep_plan(layers, latency).predicted_ms == pytest.approx(40.0, rel=1e-12)


def test_corrected_with_one_point_moves_the_offset_only() -> None:
    latency = LatencyModel(2.0, 1.5).corrected([(10.0, 20.0)])
    assert (latency.scale, latency.fixed_ms) == (1.5, 5.0)
    assert latency.predict(10.0) == 20.0
    assert LatencyModel(2.0, 1.5).corrected([]) == LatencyModel(2.0, 1.5)
    # equal sums carry no slope: their mean is predicted
    same = LatencyModel(0.0, 2.0).corrected([(4.0, 9.0), (4.0, 11.0)])
    assert (same.scale, same.fixed_ms) == (2.0, 2.0)


def test_corrected_with_two_points_passes_through_both() -> None:
    latency = LatencyModel(0.0).corrected([(30.0, 32.0), (10.0, 18.0)])
    assert latency.predict(30.0) == pytest.approx(32.0) and latency.predict(10.0) == pytest.approx(18.0)
    assert (latency.scale, latency.fixed_ms) == pytest.approx((0.7, 11.0))


def test_corrected_with_more_points_is_the_least_squares_line() -> None:
    generator = np.random.default_rng(5)
    sums = generator.uniform(5.0, 50.0, 7)
    measured = 3.0 + 0.8 * sums + generator.normal(0.0, 0.5, 7)
    slope, intercept = np.polyfit(sums, measured, 1)
    latency = LatencyModel(0.0).corrected(zip(sums.tolist(), measured.tolist(), strict=True))
    assert (latency.scale, latency.fixed_ms) == pytest.approx((slope, intercept), rel=1e-9)


def test_corrected_keeps_the_scale_when_the_fit_slopes_down() -> None:
    # a slower set of layers measured faster: noise, not a reason to predict backwards
    latency = LatencyModel(1.0, 1.2).corrected([(10.0, 20.0), (20.0, 18.0)])
    assert latency.scale == 1.2
    assert latency.fixed_ms == pytest.approx(19.0 - 1.2 * 15.0)


def test_a_bounded_front_keeps_its_ends_and_real_plans() -> None:
    layers = synthetic_layers(11, count=8)
    latency = LatencyModel(1.0)
    exact = pareto_front(layers, latency)
    assert len(exact) > 12
    thinned = pareto_front(layers, latency, max_plans=6)
    assert len(thinned) <= 6
    assert thinned[0].predicted_ms == pytest.approx(exact[0].predicted_ms)
    assert thinned[-1].predicted_loss == pytest.approx(exact[-1].predicted_loss)
    options = {layer.name: {option.rank: option for option in layer.options} for layer in layers}
    for plan in thinned:
        assert plan.layer_ms == pytest.approx(
            sum(options[name][rank].ms for name, rank in plan.ranks.items())
        )
        assert plan.predicted_loss == pytest.approx(
            sum(options[name][rank].planned_loss for name, rank in plan.ranks.items())
        )


@pytest.mark.parametrize("seed", SEEDS)
def test_plan_for_prices_any_plan_as_brute_force_does(seed: int) -> None:
    layers = synthetic_layers(seed)
    latency = latency_for(seed, layers)
    for plan in every_plan(layers, latency):
        priced = plan_for(
            layers, latency, {name: rank for name, rank in plan.ranks.items() if rank is not None}
        )
        assert priced.ranks == plan.ranks
        assert (priced.predicted_ms, priced.predicted_loss, priced.layer_ms) == pytest.approx(
            (plan.predicted_ms, plan.predicted_loss, plan.layer_ms), rel=1e-12, abs=1e-12
        )
    with pytest.raises(ParameterError, match=r"^ranks names layers that are no sites: conv9$"):
        plan_for(layers, latency, {"conv9": 1})
    with pytest.raises(ParameterError, match=r"^layer0: rank 3 is not one of its options \[None, 1"):
        plan_for(layers, latency, {"layer0": 3})


def test_plan_lists_its_conversions_and_describes_itself() -> None:
    plan = Plan({"a": None, "b": 2}, 3.0, 0.5, 2.0)
    assert plan.converted == {"b": 2}
    assert plan.to_dict() == {"predicted_ms": 3.0, "predicted_loss": 0.5, "ranks": {"a": None, "b": 2}}
    assert LatencyModel(1.5, 0.5).to_dict() == {"fixed_ms": 1.5, "scale": 0.5}


@pytest.mark.parametrize(
    ("build", "param"),
    [
        (lambda: Option(0, 1.0, 0.0), "rank"),
        (lambda: Option(True, 1.0, 0.0), "rank"),
        (lambda: Option(None, math.nan, 0.0), "ms"),
        (lambda: Option(None, -1.0, 0.0), "ms"),
        (lambda: Option(1, 1.0, math.inf), "loss"),
        (lambda: LayerChoices("x", (Option(1, 1.0, 0.0),)), "layers"),
        (
            lambda: LayerChoices("x", (Option(None, 1.0, 0.0), Option(1, 1.0, 0.0), Option(1, 2.0, 0.0))),
            "layers",
        ),
        (lambda: LatencyModel(1.0, 0.0), "scale"),
        (lambda: LatencyModel(math.inf), "fixed_ms"),
        (lambda: LatencyModel.from_reference(0.0, []), "measured_original_ms"),
        (lambda: LatencyModel(1.0).corrected([(1.0, -2.0)]), "points"),
        (lambda: choose_plan([], LatencyModel(1.0)), "max_ms"),
        (lambda: choose_plan([], LatencyModel(1.0), max_ms=-1.0), "max_ms"),
        (lambda: choose_plan([], LatencyModel(1.0), max_loss=math.nan), "max_loss"),
        (lambda: pareto_front([], LatencyModel(1.0), max_plans=1), "max_plans"),
        (lambda: pareto_front(synthetic_layers(0, 1) * 2, LatencyModel(1.0)), "layers"),
    ],
)
def test_bad_arguments_name_the_parameter(build: object, param: str) -> None:
    with pytest.raises(ParameterError) as refused:
        build()  # type: ignore[operator]
    assert refused.value.param == param


def test_the_planner_imports_no_torch() -> None:
    # it plans on numbers: the command can plan (and refuse a budget) before torch has loaded
    code = "import sys, sepconv.optimize.planner; print('torch' in sys.modules, 'numpy' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]
