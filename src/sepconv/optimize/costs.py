"""What each candidate of each site costs on an engine, measured on this machine and kept in a table.

For every site (:mod:`sepconv.optimize.sites`) and every candidate rank (``None``: keep the layer),
:func:`measure_costs` builds the replacement, runs it in the target engine
(:mod:`sepconv.deploy.engines`) at the site's real input shape with the batch size and thread count
the model will run at, and times all the candidates of one site together with the one interleaved
timer (:func:`sepconv.timing.time_interleaved`), so a change in the machine's load hits them alike.
Beside the time: the MACs, the bytes the layer moves (:func:`candidate_bytes`) and their ratio, the
arithmetic intensity, which says why a layer with few MACs can still be slow (a depthwise
convolution reads and writes as much as it computes).

Measurements are kept in a :class:`CostTable`, a JSON file (:func:`default_cost_table_path`), keyed by
everything that changes a measurement: the layer's geometry and input shape, the rank, the engine's
name, version and precision, the batch size, the threads, the CPU (its model name and instruction
sets, :mod:`sepconv.machine`) and torch's version. A second run on the same machine measures nothing
new; a run on another CPU, engine version, thread count or batch size reuses nothing. The table is
saved (atomically) after every site, so an interrupted run loses at most the site it was timing. A
file that is not a cost table, or one whose entries have the wrong shape, is named in a warning and
measured anew, never trusted.

:func:`time_models` times whole models end to end, deployed as the engine deploys them, in one
interleaved call: what the planner's per-layer sums must be checked against (an engine fuses layers,
and the sum misses what it saves).
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sepconv.checks import check_image_size, check_int
from sepconv.errors import ParameterError
from sepconv.io.atomic import PathLike
from sepconv.optimize.cache import CacheFile, cache_folder, key_digest
from sepconv.optimize.sites import Site, build_candidate, candidate_macs
from sepconv.timing import Progress, Timing, TimingPlan, time_interleaved

if TYPE_CHECKING:
    import torch
    from torch import nn

    from sepconv.analysis.summary import LayerSummary, ModelSummary
    from sepconv.deploy.engines import Engine

__all__ = [
    "COST_TABLE_FORMAT",
    "LAYER_TIMING",
    "MODEL_TIMING",
    "CandidateCost",
    "CostTable",
    "candidate_bytes",
    "candidate_weights",
    "default_cost_table_path",
    "measure_costs",
    "measure_summary",
    "measurement_context",
    "time_models",
]

#: The format written into cost tables; a table of another format is measured again.
COST_TABLE_FORMAT = "sepconv-costs/1"
# How one site's candidates are timed: short (a table of ~100 candidates fills in about a minute on 2
# cores), interleaved, seven rounds at least so that the median and spread mean something.
#: How one layer's candidates are timed: short, interleaved, seven rounds at least.
LAYER_TIMING = TimingPlan(warmup_calls=2, min_rounds=7, min_run_seconds=0.4, min_block_seconds=0.01)
# How whole models are timed end to end: longer, and rotated so that no model always follows another.
#: How whole models are timed: longer, and rotated so that no model always follows another.
MODEL_TIMING = TimingPlan(warmup_calls=3, min_rounds=7, min_run_seconds=2.0, rotate=True)
# Candidates of consecutive sites are prepared (exported) together up to this many weights, 64 MB in
# fp32: each run of torch's exporter costs 1-2 s whatever it holds, but all of it is in memory at once.
_BATCH_WEIGHTS = 16_000_000
# The seed of the random inputs layers are timed on (values do not change a dense layer's speed).
_INPUT_SEED = 0

# (description, done, total), as sepconv.timing.Progress reports
ProgressCallback = Callable[[str, int, int], None]


def default_cost_table_path() -> Path:
    """``costs.json`` in :func:`~sepconv.optimize.cache.cache_folder`: ``$SEPCONV_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/sepconv``, else ``~/.cache/sepconv``."""
    return cache_folder() / "costs.json"


@dataclass(frozen=True)
class CachedTiming:
    """One measurement kept in a :class:`CostTable`: the median and spread over rounds, in ms."""

    ms: float
    spread_ms: float | None


class CostTable(CacheFile):
    """The look-up table of measured costs: one JSON file with the rules of
    :class:`~sepconv.optimize.cache.CacheFile` (whole-key reuse; a corrupt or foreign file named in a
    :class:`~sepconv.optimize.cache.CacheWarning` and measured again; atomic saves).

    ``CostTable(path)`` reads ``path`` if it exists (None: :func:`default_cost_table_path`). Keys are
    :func:`measurement_context` plus what identifies the layer, its input shape and the rank.
    """

    def __init__(self, path: PathLike | None = None) -> None:
        where = path if path is not None else default_cost_table_path()
        super().__init__(where, format=COST_TABLE_FORMAT, check=_check_timing)

    def lookup(self, key: Mapping[str, Any]) -> CachedTiming | None:
        """The measurement stored under ``key``, or None."""
        value = self.get(key)
        return None if value is None else CachedTiming(float(value["ms"]), value["spread_ms"])

    def record(self, key: Mapping[str, Any], ms: float, spread_ms: float | None) -> None:
        """Keep a measurement under ``key`` (in memory until :meth:`save`)."""
        self.put(key, {"ms": float(ms), "spread_ms": None if spread_ms is None else float(spread_ms)})

    def __repr__(self) -> str:
        return f"CostTable({str(self.path)!r}, {len(self)} entries)"


def _check_timing(value: Any) -> None:
    """A cost-table value: ``{"ms": number >= 0, "spread_ms": number >= 0 or null}``; ValueError else."""
    if not (
        isinstance(value, dict)
        and _is_time(value.get("ms"))
        and (value.get("spread_ms") is None or _is_time(value.get("spread_ms")))
    ):
        raise ValueError(
            "not a measurement ({'ms': number >= 0, 'spread_ms': number >= 0 or null}): "
            f"{json.dumps(value)[:120]}"
        )


def _is_time(value: Any) -> bool:
    return (
        isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
    )


def measurement_context(engine: Engine, *, batch_size: int, threads: int) -> dict[str, Any]:
    """What besides the layer decides a measurement, as JSON: engine, batch, threads, CPU, torch.

    Part of every cost-table key, and what reports say a measurement was made on.
    """
    import torch

    from sepconv import machine

    return {
        "engine": {"name": engine.name, "version": engine.version(), "precision": engine.precision},
        "batch_size": batch_size,
        "threads": threads,
        "cpu": {"model": machine.cpu_model_name(), "features": machine.cpu_features().to_dict()},
        "torch": str(torch.__version__),
    }


def _site_key(site: Site, rank: int | None, context: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "layer": {"kind": site.kind, **site.geometry},
        "input_shape": list(site.input_shape),
        "rank": rank,
        **context,
    }


@dataclass(frozen=True)
class CandidateCost:
    """One candidate of one site, measured: a rank (None: the original layer) and what it costs.

    ``ms`` is the median time of one call on a batch of ``batch_size`` and ``spread_ms`` the
    interquartile range over rounds (None below 2 rounds). ``macs`` counts *one sample*, as
    :attr:`Site.macs` does; ``bytes`` is what one call moves (:func:`candidate_bytes`: the batch's input
    and output, the weights, a separable layer's intermediate map) and ``intensity`` the MACs of that
    call per byte moved. ``cached``: taken from the cost table, not measured in this run.
    """

    site: str
    rank: int | None
    ms: float
    spread_ms: float | None
    macs: int
    bytes: int
    intensity: float
    cached: bool
    batch_size: int = 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-able fields (reports, ``plan.json``)."""
        return {
            "site": self.site,
            "rank": self.rank,
            "ms": self.ms,
            "spread_ms": self.spread_ms,
            "macs": self.macs,
            "bytes": self.bytes,
            "intensity": self.intensity,
            "cached": self.cached,
            "batch_size": self.batch_size,
        }


def candidate_weights(site: Site, rank: int | None) -> int:
    """Weights (bias included) of the site's layer at ``rank`` (None: the original layer).

    A separable convolution: C_in r k_h k_w (depthwise, no bias) + C_in r C_out (pointwise) + C_out;
    a low-rank linear pair: in r + r out + out (each bias only where the original has one).
    """
    geometry = site.geometry
    bias = bool(geometry["bias"])
    if site.kind == "conv":
        in_channels, out_channels = int(geometry["in_channels"]), int(geometry["out_channels"])
        kernel = int(math.prod(geometry["kernel_size"]))
        if rank is None:
            weights = out_channels * in_channels * kernel
        else:
            weights = in_channels * rank * kernel + in_channels * rank * out_channels
        return weights + (out_channels if bias else 0)
    in_features, out_features = int(geometry["in_features"]), int(geometry["out_features"])
    weights = in_features * out_features if rank is None else rank * (in_features + out_features)
    return weights + (out_features if bias else 0)


def candidate_bytes(site: Site, rank: int | None, *, batch_size: int, bytes_per_element: int) -> int:
    """Bytes one call of the site's layer at ``rank`` moves, at least: read and written once each.

    The batch's input and output activations, the weights, and for a replacement the intermediate
    map between its two layers (a separable convolution's depthwise output, C_in r per output
    position; a low-rank pair's r features per row), which is written and then read: counted twice.
    Every element is ``bytes_per_element`` wide (4 for fp32, 1 for int8).
    """
    activations = batch_size * (math.prod(site.input_shape) + math.prod(site.output_shape))
    intermediate = 0
    if rank is not None:
        if site.kind == "conv":
            positions = math.prod(site.output_shape[1:])
            intermediate = 2 * batch_size * site.geometry["in_channels"] * rank * positions
        else:
            intermediate = 2 * batch_size * math.prod(site.input_shape[:-1]) * rank
    return bytes_per_element * (activations + candidate_weights(site, rank) + intermediate)


def _candidate_cost(
    site: Site,
    rank: int | None,
    timing: CachedTiming,
    *,
    cached: bool,
    batch_size: int,
    bytes_per_element: int,
) -> CandidateCost:
    macs = candidate_macs(site, rank)
    moved = candidate_bytes(site, rank, batch_size=batch_size, bytes_per_element=bytes_per_element)
    return CandidateCost(
        site=site.name,
        rank=rank,
        ms=timing.ms,
        spread_ms=timing.spread_ms,
        macs=macs,
        bytes=moved,
        intensity=batch_size * macs / moved,
        cached=cached,
        batch_size=batch_size,
    )


def _check_measuring(engine: Engine, batch_size: int, threads: int) -> None:
    check_int("batch_size", batch_size, minimum=1)
    check_int("threads", threads, minimum=1)
    reason = engine.unavailable_reason()
    if reason is not None:
        raise ParameterError(f"engine {engine.name} cannot run here: {reason}", param="engine")


def measure_costs(
    model: nn.Module,
    sites: Sequence[Site],
    engine: Engine,
    *,
    batch_size: int,
    threads: int,
    table: CostTable,
    progress: ProgressCallback | None = None,
    timing_plan: TimingPlan | None = None,
) -> dict[str, dict[int | None, CandidateCost]]:
    """Per site name, per candidate rank (None: keep the layer), what it costs in ``engine``.

    Candidates found in ``table`` are not measured again, nor twice in one run (a repeated block's
    sites share one geometry and input). The others are built
    (:func:`~sepconv.optimize.sites.build_candidate` with random weights: speed does not depend on the
    values) and prepared in ``engine`` on a random batch of ``batch_size`` at their site's input shape
    with ``threads`` threads, the candidates of consecutive sites together (one exporter run for ONNX
    Runtime, up to :data:`_BATCH_WEIGHTS` weights); each site's are then timed together in one
    interleaved call (``timing_plan``, default :data:`LAYER_TIMING`), recorded and the table saved
    before the next site. ``progress`` is called
    as ``progress(description, sites_done, sites_total)`` before the first site and after each one,
    once it is saved: an exception it raises (Ctrl-C) leaves a table holding every finished site.
    ``model`` is not changed.
    """
    _check_measuring(engine, batch_size, threads)
    plan = timing_plan if timing_plan is not None else LAYER_TIMING
    context = measurement_context(engine, batch_size=batch_size, threads=threads)
    keys = {
        site.name: {rank: _site_key(site, rank, context) for rank in (None, *site.ranks)} for site in sites
    }
    to_measure = _not_in_table(sites, keys, table)
    report = Progress(progress, total=len(sites))
    report.report("costs: measuring")
    costs: dict[str, dict[int | None, CandidateCost]] = {}
    calls: dict[tuple[str, int | None], Callable[[], object]] = {}
    with tempfile.TemporaryDirectory(prefix="sepconv-costs-") as folder:
        for position, site in enumerate(sites):
            missing = to_measure[site.name]
            if missing and (site.name, missing[0]) not in calls:
                calls.clear()  # the previous batch's sessions and files go before the next is built
                batch_folder = Path(folder) / "batch"
                shutil.rmtree(batch_folder, ignore_errors=True)
                calls = _prepare_batch(
                    model, sites[position:], to_measure, engine, batch_size, threads, batch_folder
                )
            if missing:
                timings = time_interleaved(
                    {rank: calls[(site.name, rank)] for rank in missing}, plan, label=site.name
                )
                for rank, timing in timings.items():
                    table.record(keys[site.name][rank], timing.median_ms, timing.spread_ms)
                table.save()
            costs[site.name] = {}
            for rank, key in keys[site.name].items():
                stored = table.lookup(key)
                if stored is None:  # recorded by this run or found before: never missing here
                    raise RuntimeError(f"{site.name} at rank {rank}: no measurement after measuring")
                costs[site.name][rank] = _candidate_cost(
                    site,
                    rank,
                    stored,
                    cached=rank not in missing,
                    batch_size=batch_size,
                    bytes_per_element=engine.bytes_per_element,
                )
            report.advance(f"costs: {site.name}")
    return costs


def _not_in_table(
    sites: Sequence[Site], keys: Mapping[str, Mapping[int | None, dict[str, Any]]], table: CostTable
) -> dict[str, list[int | None]]:
    """Per site, the ranks to measure: not in the table, nor measured by an earlier site of this run.

    A repeated block (resnet's) has sites of one geometry and input: the first measures, the others
    read its measurement from the table.
    """
    scheduled: set[str] = set()
    to_measure: dict[str, list[int | None]] = {}
    for site in sites:
        to_measure[site.name] = []
        for rank, key in keys[site.name].items():
            digest = key_digest(key)
            if digest not in scheduled and table.lookup(key) is None:
                scheduled.add(digest)
                to_measure[site.name].append(rank)
    return to_measure


def _prepare_batch(
    model: nn.Module,
    upcoming: Sequence[Site],
    to_measure: Mapping[str, Sequence[int | None]],
    engine: Engine,
    batch_size: int,
    threads: int,
    folder: Path,
) -> dict[tuple[str, int | None], Callable[[], object]]:
    """The engine's calls for the candidates of the first upcoming sites, prepared in one engine call.

    Whole sites are taken in order while their candidates' weights stay within :data:`_BATCH_WEIGHTS`
    (the first always): torch's exporter costs about as much for one small layer as for dozens, and
    memory bounds how many large ones it should hold at once.
    """
    import torch

    from sepconv.deploy.execution_paths import PathUnavailableError

    members: list[tuple[Site, int | None]] = []
    weights = 0
    for site in upcoming:
        ranks = to_measure[site.name]
        site_weights = sum(candidate_weights(site, rank) for rank in ranks)
        if members and ranks and weights + site_weights > _BATCH_WEIGHTS:
            break
        weights += site_weights
        members.extend((site, rank) for rank in ranks)
    modules, examples = [], []
    for site, rank in members:
        modules.append(build_candidate(model.get_submodule(site.name), rank, init="random"))
        generator = torch.Generator().manual_seed(_INPUT_SEED)
        examples.append(torch.randn((batch_size, *site.input_shape), generator=generator))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        calls = engine.prepare_many(modules, examples, folder, threads=threads)
    except PathUnavailableError as error:
        names = ", ".join(dict.fromkeys(site.name for site, _ in members))
        raise ParameterError(
            f"{names} cannot run in engine {engine.name}: {error}", param="engine"
        ) from error
    return {(site.name, rank): call for (site, rank), call in zip(members, calls, strict=True)}


def time_models(
    models: Mapping[str, nn.Module],
    input_size: Sequence[int],
    engine: Engine,
    *,
    batch_size: int,
    threads: int,
    timing_plan: TimingPlan | None = None,
    calibration: Sequence[torch.Tensor] | None = None,
    progress: Progress | None = None,
) -> dict[str, Timing]:
    """Each model end to end, deployed as ``engine`` deploys it, timed in one interleaved call.

    ``input_size`` is ``(C, H, W)``; every model runs on the same random batch of ``batch_size`` with
    ``threads`` threads (ONNX Runtime: the verified export of :meth:`Engine.deploy`, int8 calibrated on
    ``calibration`` or random batches; torch: channels_last eager). ``timing_plan`` defaults to
    :data:`MODEL_TIMING`; ``progress`` counts its rounds (see :class:`sepconv.timing.Progress`).
    Returns one :class:`~sepconv.timing.Timing` per name, in the order given.
    """
    import torch

    _check_measuring(engine, batch_size, threads)
    size = check_image_size("input_size", input_size)
    plan = timing_plan if timing_plan is not None else MODEL_TIMING
    generator = torch.Generator().manual_seed(_INPUT_SEED)
    example = torch.randn((batch_size, *size), generator=generator)
    with tempfile.TemporaryDirectory(prefix="sepconv-models-") as folder:
        calls: dict[str, Callable[[], object]] = {}
        for index, (name, model) in enumerate(models.items()):
            place = Path(folder) / f"model-{index}"
            place.mkdir()
            calls[name] = engine.prepare_deployed(
                model, example, place, threads=threads, calibration=calibration
            )
        spinning = dict.fromkeys(calls, engine.spin_seconds) if engine.spin_seconds else None
        timings = time_interleaved(calls, plan, progress=progress, label="end to end", settle_after=spinning)
    return {name: timings[name] for name in models}


def measure_summary(
    model: nn.Module,
    summary: ModelSummary,
    engine: Engine,
    *,
    threads: int,
    table: CostTable,
    progress: ProgressCallback | None = None,
    timing_plan: TimingPlan | None = None,
) -> ModelSummary:
    """``summary`` (of ``model``, by :func:`sepconv.analysis.summarize`) with each row's layer timed alone.

    Each row's module runs in ``engine`` on a random input of the row's input shape (the summary's
    batch included) with ``threads`` threads, timed with ``timing_plan`` (default
    :data:`LAYER_TIMING`), recorded in ``table`` and the table saved after each row; rows measured
    before are read from it. Each row gets a :class:`~sepconv.analysis.summary.MeasuredCost`: the
    time, the bytes it moves (its input, output and weights at the engine's precision) and its MACs
    per byte. A row that cannot run alone (a container's own operations, a layer never called, one
    that takes more than one input or returns more than one tensor, one the engine cannot run) gets
    ``ms`` None and the reason. ``progress(description, rows_done, rows_to_time)`` as in
    :func:`measure_costs`. ``model`` is not changed.
    """
    import dataclasses

    from sepconv.analysis.summary import MeasuredCost

    batch_size = summary.input_shapes[0][0] if summary.input_shapes and summary.input_shapes[0] else 1
    _check_measuring(engine, batch_size, threads)
    plan = timing_plan if timing_plan is not None else LAYER_TIMING
    context = measurement_context(engine, batch_size=batch_size, threads=threads)
    modules = dict(model.named_modules())
    timings: dict[int, tuple[CachedTiming | None, bool, str | None]] = {}
    runnable: dict[int, tuple[nn.Module, torch.Tensor, dict[str, Any]]] = {}
    for index, row in enumerate(summary.layers):
        reason = _why_not_alone(row, modules)
        if reason is not None:
            timings[index] = (None, False, reason)
            continue
        module = modules[row.name]
        key = _layer_key(module, row.input_shape or (), context)
        stored = table.lookup(key)
        if stored is not None:
            timings[index] = (stored, True, None)
        else:
            runnable[index] = (module, _random_input(row.input_shape or ()), key)
    report = Progress(progress, total=len(runnable))
    report.report("costs: measuring layers")
    with tempfile.TemporaryDirectory(prefix="sepconv-layers-") as folder:
        calls, failures = _prepare_rows(engine, runnable, Path(folder), threads)
        timings.update({index: (None, False, reason) for index, reason in failures.items()})
        for index, call in calls.items():
            timing = time_interleaved({index: call}, plan, label=summary.layers[index].display_name)[index]
            measured = CachedTiming(timing.median_ms, timing.spread_ms)
            table.record(runnable[index][2], measured.ms, measured.spread_ms)
            table.save()
            timings[index] = (measured, False, None)
            report.advance(f"costs: {summary.layers[index].display_name}")
    rows = []
    for index, row in enumerate(summary.layers):
        stored, cached, reason = timings[index]
        moved = _row_bytes(row, modules.get(row.name), engine.bytes_per_element)
        cost = MeasuredCost(
            ms=None if stored is None else stored.ms,
            spread_ms=None if stored is None else stored.spread_ms,
            bytes=moved,
            intensity=row.macs / moved if moved else None,
            cached=cached,
            reason=reason,
        )
        rows.append(dataclasses.replace(row, measured=cost))
    return dataclasses.replace(
        summary, layers=tuple(rows), measurement={**context, "engine": engine.describe()}
    )


def _why_not_alone(row: LayerSummary, modules: Mapping[str, nn.Module]) -> str | None:
    """Why a summary row cannot be timed as a module run alone, or None when it can."""
    if "not called" in row.notes or row.input_shape is None:
        return "not called in the forward pass"
    if "own ops" in row.notes:
        return "a container's own operations: they run only inside its forward"
    if row.name not in modules:
        return "no module of that name"
    return None


def _layer_key(module: nn.Module, input_shape: Sequence[int], context: Mapping[str, Any]) -> dict[str, Any]:
    """A summary row's key: the module as it prints and its parameters' shapes, its input, the context."""
    parameters = [[name, list(parameter.shape)] for name, parameter in module.named_parameters()]
    return {
        "layer": {"module": repr(module), "parameters": parameters},
        "input_shape": list(input_shape[1:]),
        "rank": None,
        **context,
    }


def _random_input(shape: Sequence[int]) -> torch.Tensor:
    import torch

    return torch.randn(tuple(shape), generator=torch.Generator().manual_seed(_INPUT_SEED))


def _prepare_rows(
    engine: Engine,
    rows: Mapping[int, tuple[nn.Module, torch.Tensor, dict[str, Any]]],
    folder: Path,
    threads: int,
) -> tuple[dict[int, Callable[[], object]], dict[int, str]]:
    """The engine's call for each row that runs alone, and the reason for each that does not.

    Every module runs once in PyTorch first (an eval copy): one that fails on its input, or returns
    other than one tensor, is not handed to the engine. The others are prepared together (one
    exporter run for ONNX Runtime); when that fails, one by one, to tell which cannot run.
    """
    import copy

    import torch

    from sepconv.deploy.execution_paths import PathUnavailableError
    from sepconv.deploy.metadata import ExportError

    failures: dict[int, str] = {}
    ready: dict[int, tuple[nn.Module, torch.Tensor]] = {}
    for index, (module, example, _) in rows.items():
        try:
            with torch.no_grad():
                output = copy.deepcopy(module).eval()(example)
        except (RuntimeError, ValueError, TypeError, IndexError) as error:
            failures[index] = f"cannot run alone on one input of its shape ({_first_line(error)})"
            continue
        if not isinstance(output, torch.Tensor):
            failures[index] = f"returns {type(output).__name__}, not one tensor"
            continue
        ready[index] = (module, example)

    def prepare(indices: list[int]) -> list[Callable[[], object]]:
        return engine.prepare_many(
            [ready[index][0] for index in indices],
            [ready[index][1] for index in indices],
            Path(tempfile.mkdtemp(dir=folder)),
            threads=threads,
        )

    indices = list(ready)
    if not indices:
        return {}, failures
    try:
        return dict(zip(indices, prepare(indices), strict=True)), failures
    except (ExportError, PathUnavailableError):
        pass  # some layer cannot run in the engine: find which, one by one
    calls: dict[int, Callable[[], object]] = {}
    for index in indices:
        try:
            (calls[index],) = prepare([index])
        except (ExportError, PathUnavailableError) as error:
            failures[index] = f"{engine.name} cannot run it alone ({_first_line(error)})"
    return calls, failures


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[0] if lines else type(error).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _row_bytes(row: LayerSummary, module: nn.Module | None, bytes_per_element: int) -> int:
    """Input + output + weights of a summary row, in elements of ``bytes_per_element`` bytes."""
    elements = sum(math.prod(shape) for shape in (row.input_shape, row.output_shape) if shape is not None)
    if module is not None and row.input_shape is not None:
        elements += sum(parameter.numel() for parameter in module.parameters())
    return bytes_per_element * elements
