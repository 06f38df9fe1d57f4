"""The result document of ``sepconv optimize`` (``plan.json``): what a run measured, chose and delivered.

:func:`build_document` turns an :class:`Outcome` (everything the stages of
:func:`~sepconv.optimize.run.optimize_model` found) into a plain dict of JSON values, format
:data:`DOCUMENT_FORMAT`; :mod:`sepconv.optimize.report` renders that dict (terminal, Markdown, HTML), and
nothing else: a report needs no model, no torch, only the document. Latencies are in ms per batch,
accuracies in percent and their drops in accuracy points, MACs per sample.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from sepconv.optimize.costs import CandidateCost
    from sepconv.optimize.planner import LatencyModel, Plan
    from sepconv.optimize.sensitivity import Sensitivity
    from sepconv.optimize.sites import Site

__all__ = ["DOCUMENT_FORMAT", "STAGES", "Outcome", "PlanRound", "build_document", "write_document"]

#: The format written into ``plan.json``.
DOCUMENT_FORMAT = "sepconv-optimize/1"
#: The stages ``timings_s`` times, in the order they run (and "total", the whole run).
STAGES = ("sites", "costs", "sensitivity", "planning", "measuring", "fine_tuning", "total")


@dataclass
class PlanRound:
    """One plan applied and measured end to end: what the latency model predicted, what the engine took."""

    round: int
    plan: Plan
    model: nn.Module
    predicted_ms: float
    measured_ms: float
    original_ms: float
    spread_ms: dict[str, float | None]
    latency: LatencyModel
    # the latency the plan was chosen for, and the budget as this round judged it (a speedup against the
    # original timed in the same round)
    plan_budget_ms: float | None = None
    budget_ms: float | None = None
    # True when the latency model found the budget out of reach and the round measured its closest plan
    closest: bool = False

    @property
    def speedup(self) -> float:
        """How many times faster the round's model measured than the original (original_ms / measured_ms)."""
        return self.original_ms / self.measured_ms

    @property
    def relative_error(self) -> float:
        """How far the latency model was from the engine, signed, as (predicted - measured) / measured."""
        return (self.predicted_ms - self.measured_ms) / self.measured_ms

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of these fields, with the latency model the round used."""
        return {
            "round": self.round,
            "predicted_ms": self.predicted_ms,
            "measured_ms": self.measured_ms,
            "relative_error": self.relative_error,
            "latency_model": self.latency.to_dict(),
            "budget_ms": self.budget_ms,
            "plan_budget_ms": self.plan_budget_ms,
            "closest": self.closest,
        }


@dataclass
class Outcome:
    """Everything a run found, as the stages left it: what :func:`build_document` describes.

    ``engine`` is the engine's description with the batch size and threads it ran at; ``original`` the
    model as given and ``input_size`` one image's (C, H, W); ``reference_ms`` the original's end-to-end
    latency the first plan was made from (each round's ``budget_ms`` is what its plan was chosen for); ``front`` the
    Pareto front as the chosen round's latency model predicts it; ``chosen`` the round delivered.
    """

    model: str
    dataset: str | None
    engine: dict[str, Any]
    budget: dict[str, float | None]
    loss_unit: str
    original: nn.Module
    input_size: tuple[int, ...]
    sites: Sequence[Site]
    skipped: Sequence[tuple[str, str]]
    costs: Mapping[str, Mapping[int | None, CandidateCost]]
    sensitivities: Mapping[str, Mapping[int, Sensitivity]]
    base_accuracy: float | None
    reference_ms: float
    front: Sequence[Plan]
    rounds: Sequence[PlanRound]
    chosen: PlanRound
    accuracy: dict[str, Any] | None
    files: dict[str, str]
    timings: dict[str, float]
    notes: list[str]


def build_document(outcome: Outcome) -> dict[str, Any]:
    """The result document (``plan.json``, format :data:`DOCUMENT_FORMAT`) of a finished run."""
    from sepconv.machine import cpu_features, cpu_model_name

    chosen = outcome.chosen
    return {
        "format": DOCUMENT_FORMAT,
        "model": outcome.model,
        "dataset": outcome.dataset,
        "engine": {
            **outcome.engine,
            "cpu": {"model": cpu_model_name(), "features": cpu_features().to_dict()},
        },
        "budget": dict(outcome.budget),
        "loss_unit": outcome.loss_unit,
        "layers": _layers(outcome),
        "skipped": [[name, reason] for name, reason in outcome.skipped],
        "pareto": [
            {**plan.to_dict(), "chosen": dict(plan.ranks) == dict(chosen.plan.ranks)}
            for plan in outcome.front
        ],
        "rounds": [measured.to_dict() for measured in outcome.rounds],
        "latency": {
            "original_ms": chosen.original_ms,
            "optimized_ms": chosen.measured_ms,
            "predicted_ms": chosen.predicted_ms,
            "speedup": chosen.speedup,
            "spread_ms": dict(chosen.spread_ms),
            "reference_ms": outcome.reference_ms,
            "budget_ms": chosen.budget_ms,
        },
        "accuracy": outcome.accuracy,
        "macs": {
            "before": _total_macs(outcome.original, outcome.input_size),
            "after": _total_macs(chosen.model, outcome.input_size),
        },
        "params": {"before": _params(outcome.original), "after": _params(chosen.model)},
        "files": dict(outcome.files),
        "timings_s": {name: outcome.timings.get(name, 0.0) for name in STAGES},
        "cached": {
            "costs": _cache_counts(outcome.costs.values()),
            "sensitivity": _cache_counts(outcome.sensitivities.values()),
        },
        "notes": list(outcome.notes),
    }


def _layers(outcome: Outcome) -> list[dict[str, Any]]:
    """Per site: the chosen rank, and the layer before and after (MACs, bytes, intensity, ms, loss)."""
    from sepconv.optimize.sites import candidate_macs

    ranks = outcome.chosen.plan.ranks
    layers = []
    for site in outcome.sites:
        rank = ranks.get(site.name)
        costs = outcome.costs[site.name]
        before, after = costs[None], costs[rank]
        measured = outcome.sensitivities.get(site.name, {}).get(rank) if rank is not None else None
        drop = None
        if measured is not None and outcome.base_accuracy is not None and measured.accuracy is not None:
            drop = outcome.base_accuracy - measured.accuracy
        layers.append(
            {
                "name": site.name,
                "kind": site.kind,
                "geometry": dict(site.geometry),
                "input_shape": list(site.input_shape),
                "rank": rank,
                "max_rank": site.max_rank,
                "macs_before": site.macs,
                "macs_after": candidate_macs(site, rank),
                "bytes_before": before.bytes,
                "bytes_after": after.bytes,
                "intensity_before": before.intensity,
                "intensity_after": after.intensity,
                "ms_before": before.ms,
                "ms_after": after.ms,
                "output_error": None if measured is None else measured.output_error,
                "accuracy_drop": drop,
            }
        )
    return layers


def _total_macs(model: nn.Module, input_size: tuple[int, ...]) -> int:
    from sepconv.analysis import summarize

    return int(summarize(model, (1, *input_size)).total_macs)


def _params(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def _cache_counts(per_site: Any) -> dict[str, int]:
    """How many entries were measured now and how many came from the table (their ``cached`` flag)."""
    entries = [entry for ranks in per_site for entry in ranks.values()]
    reused = sum(1 for entry in entries if getattr(entry, "cached", False))
    return {"measured": len(entries) - reused, "reused": reused}


def write_document(document: dict[str, Any]) -> None:
    """``plan.json`` and the HTML report where the document's ``files`` say, each written atomically."""
    from sepconv.io.atomic import atomic_write_bytes
    from sepconv.optimize.report import write_html

    atomic_write_bytes(Path(document["files"]["plan"]), (json.dumps(document, indent=2) + "\n").encode())
    write_html(document, Path(document["files"]["html"]))
