"""Stand-ins for the timed stages of ``sepconv optimize``, so that its pipeline can be tested without a clock.

Nothing timed may decide a test, so the tests of :mod:`sepconv.optimize.run` replace the two measuring
calls with a *MAC clock*: a layer or a model "takes" a time proportional to its MACs, exactly. The real
planner, sensitivity table, conversion, fine-tuning and export run; what the stand-ins fix is only the
milliseconds, so a test can work out by hand which plan the planner must choose and how the latency
model must be corrected.

- :func:`mac_costs` replaces :func:`sepconv.optimize.costs.measure_costs`: each candidate takes
  ``candidate_macs / MACS_PER_MS`` ms (and is never cached);
- :func:`mac_clock` replaces :func:`sepconv.optimize.run.time_end_to_end`: a whole model takes
  ``FIXED_MS + ENGINE_SCALE x`` its MACs ``/ MACS_PER_MS``: the engine runs the layers in 0.8 of the
  time their separate timings add up to (as a real engine fuses what separate calls cannot), so a plan
  saves less than its summed layers promise, the first plan is predicted too fast, and the correction
  round has something to learn (two measured points fit the line exactly).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from torch import nn

from sepconv.optimize.costs import CandidateCost, candidate_bytes
from sepconv.optimize.sites import Site, candidate_macs
from sepconv.timing import Timing

__all__ = [
    "ENGINE_SCALE",
    "FIXED_MS",
    "MACS_PER_MS",
    "install_mac_clock",
    "mac_clock",
    "mac_costs",
    "model_ms",
]

MACS_PER_MS = 1e6
FIXED_MS = 0.05
ENGINE_SCALE = 0.8


def mac_costs(
    model: nn.Module, sites: Sequence[Site], engine: Any, *, batch_size: int, **_: Any
) -> dict[str, dict[int | None, CandidateCost]]:
    """What measure_costs returns, with each candidate's ms its MACs (of the whole batch) / MACS_PER_MS."""
    costs: dict[str, dict[int | None, CandidateCost]] = {}
    for site in sites:
        costs[site.name] = {}
        for rank in (None, *site.ranks):
            macs = candidate_macs(site, rank)
            moved = candidate_bytes(
                site, rank, batch_size=batch_size, bytes_per_element=engine.bytes_per_element
            )
            costs[site.name][rank] = CandidateCost(
                site=site.name,
                rank=rank,
                ms=batch_size * macs / MACS_PER_MS,
                spread_ms=None,
                macs=macs,
                bytes=moved,
                intensity=batch_size * macs / moved,
                cached=False,
                batch_size=batch_size,
            )
    return costs


def model_ms(model: nn.Module, input_size: Sequence[int], batch_size: int) -> float:
    """The MAC clock's end-to-end time of ``model``: FIXED_MS + ENGINE_SCALE x its MACs / MACS_PER_MS."""
    from sepconv.analysis import summarize

    macs = summarize(model, (1, *input_size)).total_macs
    return FIXED_MS + ENGINE_SCALE * batch_size * macs / MACS_PER_MS


def mac_clock(models: Mapping[str, nn.Module], inputs: Any, engine: Any, config: Any) -> dict[str, Timing]:
    """A stand-in for ``time_end_to_end`` that times each model by :func:`model_ms` (one sample, no spread)."""
    return {
        name: Timing(
            seconds=(model_ms(model, inputs.input_size, config.batch_size) / 1000.0,), calls_per_block=1
        )
        for name, model in models.items()
    }


def install_mac_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Replace both measuring calls of the pipeline by the MAC clock."""
    import sepconv.optimize.costs as costs
    import sepconv.optimize.run as run

    monkeypatch.setattr(costs, "measure_costs", mac_costs)
    monkeypatch.setattr(run, "time_end_to_end", mac_clock)
