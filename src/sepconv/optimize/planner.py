"""Choose, per layer, keep or a rank: the plans that trade predicted latency against predicted loss.

The planner sees each site as a multiple choice (:class:`LayerChoices`): keep the layer (rank ``None``)
or replace it at one of its candidate ranks, each :class:`Option` with its measured time and its
predicted loss. A plan picks one option per site. Its loss is the sum of its options' losses (each
measured with only that layer converted, so the sum assumes the layers' losses add up; fine-tuning
recovers much of it anyway). Its latency is a :class:`LatencyModel`, ``fixed_ms + scale x (sum of the
options' ms)``: per-layer times miss what the rest of the model costs and what an engine fuses, so the
model is anchored on the measured original and refitted from measured plans.

:func:`pareto_front` finds every plan that no other beats on both latency and loss, exactly (a dynamic
programme over the sites), and :func:`choose_plan` picks the one that meets a budget, or raises
:class:`BudgetError` saying what the best reachable plan would be.

This module imports no torch: it works on numbers, so it can be tested against brute force.

>>> layers = [
...     LayerChoices("conv1", (Option(None, 4.0, 0.0), Option(1, 1.0, 0.8), Option(2, 2.0, 0.3))),
...     LayerChoices("conv2", (Option(None, 6.0, 0.0), Option(1, 2.0, 0.5))),
... ]
>>> latency = LatencyModel.from_reference(12.0, layers)  # the original measured 12 ms end to end
>>> latency.fixed_ms
2.0
>>> plan = choose_plan(layers, latency, max_ms=6.0)
>>> plan.ranks, plan.predicted_ms, plan.predicted_loss
({'conv1': 2, 'conv2': 1}, 6.0, 0.8)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sepconv.checks import check_float, check_int
from sepconv.errors import ParameterError

__all__ = [
    "DEFAULT_MAX_FRONT",
    "BudgetError",
    "LatencyModel",
    "LayerChoices",
    "Option",
    "Plan",
    "choose_plan",
    "keep_plan",
    "pareto_front",
    "plan_for",
]

# Partial plans kept per step of the dynamic programme at most; the work per site is this many times
# the site's options. Exact fronts stay far below it: on synthetic tables of realistic shape, 19 sites
# of 5 options (resnet18's size) give ~230 plans in 10 ms, 60 sites of 7 options ~3,400 in 2 s.
#: The most plans the planner keeps on its front before it thins it.
DEFAULT_MAX_FRONT = 20_000

# Budgets are compared with this relative slack, so that a plan whose summed loss or latency differs
# from the budget only by float rounding (0.1 + 0.2 against 0.3) counts as within it.
_RELATIVE_SLACK = 1e-9


@dataclass(frozen=True)
class Option:
    """One way to run a site: keep it (``rank=None``) or replace it at ``rank``.

    ``ms`` is the measured time of the layer in that form (on the engine, batch and threads planned
    for); ``loss`` its predicted cost in accuracy: accuracy points lost with only this layer converted,
    or its relative output error when no validation data was given (the caller decides the unit).
    """

    rank: int | None
    ms: float
    loss: float

    def __post_init__(self) -> None:
        # stored as Python numbers (numpy's are accepted too), so that plans write as JSON
        if self.rank is not None:
            object.__setattr__(self, "rank", check_int("rank", self.rank, minimum=1))
        object.__setattr__(self, "ms", check_float("ms", self.ms, minimum=0))
        object.__setattr__(self, "loss", check_float("loss", self.loss))

    @property
    def planned_loss(self) -> float:
        """The loss the planner counts, ``loss`` clamped at 0.

        Replacing a layer by an approximation of it does not make a model better; a negative measured
        accuracy drop is the noise of a finite validation set. Counted as a gain, it would let a lucky
        layer pay for another layer's real loss, and the plan would be chosen for its luck.
        """
        return max(self.loss, 0.0)


@dataclass(frozen=True)
class LayerChoices:
    """The options of one site (named as in ``model.named_modules()``): keep, and each candidate rank.

    Exactly one option keeps the layer (rank ``None``); ranks are distinct.
    """

    name: str
    options: tuple[Option, ...]

    def __post_init__(self) -> None:
        options = tuple(self.options)
        object.__setattr__(self, "options", options)
        ranks = [option.rank for option in options]
        if ranks.count(None) != 1:
            raise ParameterError(
                f"{self.name}: the options must include keeping the layer (rank None) exactly once, got ranks {ranks}",
                param="layers",
            )
        if len(set(ranks)) != len(ranks):
            raise ParameterError(f"{self.name}: the options repeat a rank: {ranks}", param="layers")

    @property
    def keep(self) -> Option:
        """The option that keeps the layer as it is."""
        return next(option for option in self.options if option.rank is None)


@dataclass(frozen=True)
class LatencyModel:
    """Predicted end-to-end latency of a plan: ``fixed_ms + scale x`` the sum of its options' ms.

    ``fixed_ms`` stands for what the sites' own times leave out (the other layers, the engine's call);
    ``scale`` for how the sum of separately timed layers relates to the same layers in one run (an
    engine fuses some, and caches warm differently). Build it with :meth:`from_reference`, refit it
    with :meth:`corrected` once plans have been measured end to end. ``scale`` must be positive, so a
    faster set of layers always predicts a faster model.
    """

    fixed_ms: float
    scale: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "fixed_ms", check_float("fixed_ms", self.fixed_ms))
        object.__setattr__(self, "scale", check_float("scale", self.scale, minimum=0, min_inclusive=False))

    def predict(self, layer_ms: float) -> float:
        """The predicted end-to-end ms of a plan whose options sum to ``layer_ms``."""
        return self.fixed_ms + self.scale * layer_ms

    @classmethod
    def from_reference(cls, measured_original_ms: float, layers: Sequence[LayerChoices]) -> LatencyModel:
        """The model that predicts the all-keep plan exactly: scale 1, ``fixed_ms`` = measured minus the
        keep options' ms (negative when the layers timed alone add up to more than the whole model: each
        separate timing pays a call of its own)."""
        measured = check_float("measured_original_ms", measured_original_ms, minimum=0, min_inclusive=False)
        return cls(measured - sum(layer.keep.ms for layer in layers), 1.0)

    def corrected(self, points: Iterable[tuple[float, float]]) -> LatencyModel:
        """The model refitted to measured plans: ``points`` are (sum of the plan's options' ms, measured ms).

        Pass the original (its keep options' sum and its measured latency) and each plan measured end
        to end since. Least squares of ``measured = fixed_ms + scale x sum``:

        - no point: this model, unchanged;
        - one point, or points whose sums are all equal: ``scale`` kept, ``fixed_ms`` moved so the
          (mean) measurement is predicted exactly;
        - two or more distinct sums: both refitted (with two, the line through both points), so a
          plan whose layers the engine fuses better or worse than their sum says is predicted right;
          when the fit's slope is not positive (noise, or plans too alike to tell apart), ``scale`` is
          kept and only ``fixed_ms`` is fitted, since a slower set of layers must never predict a
          faster model.
        """
        pairs = [(float(layer_ms), float(measured_ms)) for layer_ms, measured_ms in points]
        for layer_ms, measured_ms in pairs:
            if not (
                math.isfinite(layer_ms) and math.isfinite(measured_ms) and measured_ms > 0 and layer_ms >= 0
            ):
                raise ParameterError(
                    f"a measured point must be (sum of layer ms >= 0, measured ms > 0), got {(layer_ms, measured_ms)}",
                    param="points",
                )
        if not pairs:
            return self
        count = len(pairs)
        mean_sum = sum(layer_ms for layer_ms, _ in pairs) / count
        mean_measured = sum(measured_ms for _, measured_ms in pairs) / count
        spread = sum((layer_ms - mean_sum) ** 2 for layer_ms, _ in pairs)
        scale = self.scale
        if spread > (1e-12 * max(mean_sum, 1e-12)) ** 2:
            covariance = sum(
                (layer_ms - mean_sum) * (measured - mean_measured) for layer_ms, measured in pairs
            )
            fitted = covariance / spread
            if math.isfinite(fitted) and fitted > 0:
                scale = fitted
        return LatencyModel(mean_measured - scale * mean_sum, scale)

    def to_dict(self) -> dict[str, float]:
        """``{"fixed_ms", "scale"}``, as ``plan.json`` records each round."""
        return {"fixed_ms": self.fixed_ms, "scale": self.scale}


@dataclass(frozen=True)
class Plan:
    """One option per site: ``ranks[name]`` is the chosen rank (``None``: keep), in site order.

    ``predicted_ms`` is the latency model's prediction, ``predicted_loss`` the sum of the options'
    (clamped) losses, ``layer_ms`` the sum of the options' measured ms (the x of
    :meth:`LatencyModel.corrected` once the plan is measured).
    """

    ranks: dict[str, int | None] = field(hash=False)
    predicted_ms: float
    predicted_loss: float
    layer_ms: float = 0.0

    @property
    def converted(self) -> dict[str, int]:
        """The sites the plan converts, with their ranks (what ``to_separable``/``to_low_rank`` take)."""
        return {name: rank for name, rank in self.ranks.items() if rank is not None}

    def to_dict(self) -> dict[str, Any]:
        """``{"predicted_ms", "predicted_loss", "ranks"}``, as ``plan.json``'s Pareto front lists plans."""
        return {
            "predicted_ms": self.predicted_ms,
            "predicted_loss": self.predicted_loss,
            "ranks": dict(self.ranks),
        }


class BudgetError(ParameterError):
    """No plan meets the budget. ``best`` is the plan that comes closest: the fastest one for a latency
    budget, the most accurate one within the latency budget when a loss budget refuses it;
    ``reference_ms`` is the all-keep plan's predicted latency (the original's)."""

    def __init__(self, message: str, *, param: str, best: Plan, reference_ms: float) -> None:
        super().__init__(message, param=param)
        self.best = best
        self.reference_ms = reference_ms

    def __reduce__(self) -> tuple[Any, ...]:
        # keep ``best`` and ``reference_ms`` across processes, as SepconvError keeps ``param``
        return (_rebuild_budget_error, (str(self), self.param, self.best, self.reference_ms), self.__dict__)


def _rebuild_budget_error(message: str, param: str, best: Plan, reference_ms: float) -> BudgetError:
    return BudgetError(message, param=param, best=best, reference_ms=reference_ms)


def keep_plan(layers: Sequence[LayerChoices], latency: LatencyModel) -> Plan:
    """The plan that keeps every layer: the original model, as the latency model predicts it."""
    return plan_for(layers, latency, {})


def plan_for(layers: Sequence[LayerChoices], latency: LatencyModel, ranks: Mapping[str, int | None]) -> Plan:
    """The plan with the given ranks (a site not named is kept), as the latency model predicts it.

    For plans chosen another way (every layer at r = 1, ``auto`` by weight error) that are to be set
    beside the planner's on the same scale. A rank that is not one of the site's options, or a name
    that is no site, is a :class:`~sepconv.errors.ParameterError`.
    """
    unknown = sorted(set(ranks) - {layer.name for layer in layers})
    if unknown:
        raise ParameterError(f"ranks names layers that are no sites: {', '.join(unknown)}", param="ranks")
    chosen: list[Option] = []
    for layer in layers:
        rank = ranks.get(layer.name)
        option = next((option for option in layer.options if option.rank == rank), None)
        if option is None:
            offered = [option.rank for option in layer.options]
            raise ParameterError(
                f"{layer.name}: rank {rank!r} is not one of its options {offered}", param="ranks"
            )
        chosen.append(option)
    layer_ms = sum(option.ms for option in chosen)
    return Plan(
        {layer.name: option.rank for layer, option in zip(layers, chosen, strict=True)},
        latency.predict(layer_ms),
        sum(option.planned_loss for option in chosen),
        layer_ms,
    )


# A partial plan of the dynamic programme: (sum of ms, sum of losses, option index, the partial plan it
# extends). Chains of parents share their prefixes, so a step costs one tuple per new partial plan.
_Partial = tuple[float, float, int, "_Partial | None"]


def pareto_front(
    layers: Sequence[LayerChoices], latency: LatencyModel, *, max_plans: int = DEFAULT_MAX_FRONT
) -> list[Plan]:
    """Every plan that no other plan beats on both predicted latency and predicted loss, fastest first.

    A dynamic programme over the sites in order: the partial plans of the first k sites that no other
    partial plan beats on both (sum of ms, sum of loss) are extended by each option of site k+1, and
    the beaten ones dropped; a plan beaten on its first k sites stays beaten whatever follows, so the
    result is exact. Since ``scale > 0``, ordering by summed ms is ordering by predicted latency.
    Plans that tie on both keep the one met first (sites in order, each site's options in order).

    The front is sorted by ``predicted_ms`` ascending with ``predicted_loss`` strictly descending: it
    starts with the fastest plan and ends with the most accurate one, the all-keep plan unless some
    conversion is both faster and free (its clamped loss 0), which then beats it.

    ``max_plans`` bounds the partial plans kept per step (time and memory grow with it). Below the
    bound the front is exact; when a step's front grows past it, it is thinned to ``max_plans`` plans
    evenly spaced along it (its fastest and its most accurate end always kept), and from then on a
    plan between two kept ones may be missed: the result is then a subset of near-optimal plans, each
    still a real plan with its true predicted latency and loss.
    """
    max_plans = check_int("max_plans", max_plans, minimum=2)
    layers = list(layers)
    names = [layer.name for layer in layers]
    if len(set(names)) != len(names):
        raise ParameterError(f"the layers repeat a name: {names}", param="layers")
    front: list[_Partial] = [(0.0, 0.0, -1, None)]
    for layer in layers:
        extended: list[_Partial] = [
            (partial[0] + option.ms, partial[1] + option.planned_loss, index, partial)
            for partial in front
            for index, option in enumerate(layer.options)
        ]
        front = _thin(_non_dominated(extended), max_plans)
    return [_plan(layers, partial, latency) for partial in front]


def _non_dominated(partials: list[_Partial]) -> list[_Partial]:
    """The partial plans no other beats on both sums, by ms ascending (a stable sort keeps the first of
    equal plans)."""
    ordered = sorted(partials, key=lambda partial: (partial[0], partial[1]))
    kept: list[_Partial] = []
    for partial in ordered:
        if not kept or partial[1] < kept[-1][1]:
            kept.append(partial)
    return kept


def _thin(front: list[_Partial], max_plans: int) -> list[_Partial]:
    if len(front) <= max_plans:
        return front
    last = len(front) - 1
    picks = sorted({round(index * last / (max_plans - 1)) for index in range(max_plans)})
    return [front[index] for index in picks]


def _plan(layers: list[LayerChoices], partial: _Partial, latency: LatencyModel) -> Plan:
    layer_ms, loss = partial[0], partial[1]
    indices: list[int] = []
    node: _Partial | None = partial
    while node is not None and node[2] >= 0:
        indices.append(node[2])
        node = node[3]
    indices.reverse()
    ranks = {layer.name: layer.options[index].rank for layer, index in zip(layers, indices, strict=True)}
    return Plan(ranks, latency.predict(layer_ms), loss, layer_ms)


def choose_plan(
    layers: Sequence[LayerChoices],
    latency: LatencyModel,
    *,
    max_ms: float | None = None,
    max_loss: float | None = None,
    loss_unit: str = "loss",
    max_plans: int = DEFAULT_MAX_FRONT,
) -> Plan:
    """The plan that meets the budget, from :func:`pareto_front`.

    - ``max_ms`` alone: the smallest predicted loss whose predicted latency is <= ``max_ms`` (ties: the
      faster plan);
    - ``max_loss`` alone: the lowest predicted latency whose predicted loss is <= ``max_loss`` (ties:
      the smaller loss);
    - both: the smallest loss within ``max_ms``, refused when that loss is above ``max_loss``.

    A budget no plan meets raises :class:`BudgetError` naming the best reachable latency, its speedup
    over the all-keep plan and the loss it costs (in ``loss_unit``, e.g. ``"accuracy points"``).
    Budgets allow float rounding (a relative 1e-9).
    """
    if max_ms is None and max_loss is None:
        raise ParameterError("choose_plan needs a budget: max_ms, max_loss or both", param="max_ms")
    max_ms = None if max_ms is None else check_float("max_ms", max_ms, minimum=0)
    max_loss = None if max_loss is None else check_float("max_loss", max_loss, minimum=0)
    front = pareto_front(layers, latency, max_plans=max_plans)
    reference_ms = keep_plan(layers, latency).predicted_ms
    if max_ms is None:
        assert max_loss is not None
        # the front's losses descend: the first plan within the loss budget is the fastest such plan
        return next(plan for plan in front if _within(plan.predicted_loss, max_loss))
    within = [plan for plan in front if _within(plan.predicted_ms, max_ms)]
    if not within:
        fastest = front[0]
        raise BudgetError(
            f"no plan is predicted to run in {max_ms:.4g} ms or less: the fastest plan predicts "
            f"{_describe(fastest, reference_ms, loss_unit)}",
            param="max_ms",
            best=fastest,
            reference_ms=reference_ms,
        )
    chosen = within[-1]
    if max_loss is not None and not _within(chosen.predicted_loss, max_loss):
        raise BudgetError(
            f"no plan within {max_ms:.4g} ms loses at most {max_loss:.4g} {loss_unit}: the most accurate one "
            f"predicts {_describe(chosen, reference_ms, loss_unit)}",
            param="max_loss",
            best=chosen,
            reference_ms=reference_ms,
        )
    return chosen


def _within(value: float, budget: float) -> bool:
    return value <= budget + _RELATIVE_SLACK * max(abs(budget), 1.0)


def _describe(plan: Plan, reference_ms: float, loss_unit: str) -> str:
    speedup = reference_ms / plan.predicted_ms if plan.predicted_ms > 0 else math.inf
    return (
        f"{plan.predicted_ms:.4g} ms ({speedup:.2f}x the original's {reference_ms:.4g} ms) "
        f"at a loss of {plan.predicted_loss:.4g} {loss_unit}"
    )
