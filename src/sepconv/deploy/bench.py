"""Latency of one model across execution paths: eager, channels_last, BN-folded, bf16, compiled, ONNX.

:func:`benchmark_paths` answers "how fast does this model really run here, and which way of running it
is fastest?" in one process: every path is prepared and warmed up first, then timed *interleaved*
(each round runs every path once per batch size), so a change in the machine's load during the run
hits all paths alike instead of favouring whichever ran in a quiet moment. Each path's output on the
same fixed input is compared with eager float32, so a fast but wrong path shows in ``max_abs_diff``.

Paths that cannot run here (bf16 without native bf16 units, a model ``torch.compile`` or the ONNX
exporter cannot handle) are reported in ``skipped`` with the reason, never dropped silently. The paths
themselves are a registry in :mod:`sepconv.deploy.execution_paths` (adding a path is adding a row to
:data:`EXECUTION_PATHS`); the report types are in :mod:`sepconv.deploy.bench_report`. Both are
re-exported here.

The rounds are those of :func:`sepconv.timing.time_interleaved`, the one timer of sepconv.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sepconv.checks import check_image_size, check_int_sequence, check_positive
from sepconv.deploy.bench_report import BenchReport, PathResult
from sepconv.deploy.execution_paths import (
    EXECUTION_PATHS,
    TRAIN_PATHS,
    Bind,
    BoundCall,
    ExecutionPath,
    PathUnavailableError,
    Workspace,
    path_runtime,
)
from sepconv.machine import cpu_summary
from sepconv.timing import SETTLE_SECONDS, Progress, Timing, TimingPlan, time_interleaved

__all__ = [
    "EXECUTION_PATHS",
    "SETTLE_SECONDS",
    "TRAIN_PATHS",
    "BenchReport",
    "ExecutionPath",
    "PathResult",
    "PathUnavailableError",
    "benchmark_paths",
    "memory_estimate_bytes",
]


def benchmark_paths(
    model: nn.Module,
    *,
    input_size: Sequence[int] | None = None,
    batch_sizes: Sequence[int] = (1, 16),
    paths: Iterable[str] | None = None,
    train: bool = False,
    warmup_calls: int = 3,
    min_rounds: int = 5,
    min_run_seconds: float = 3.0,
    min_block_seconds: float = 0.02,
    settle_seconds: float = SETTLE_SECONDS,
    extra_paths: Sequence[ExecutionPath] = (),
    progress: Callable[[str, int, int], None] | None = None,
) -> BenchReport:
    """Time ``model`` on the CPU along each execution path in ``paths`` (default: all), interleaved.

    Each path is prepared and warmed up with ``warmup_calls`` calls per batch size, then timed in
    rounds: a round runs one block of calls of every path at every batch size, a block being enough
    calls for ``min_block_seconds``. Rounds repeat until ``min_run_seconds`` have passed, at least
    ``min_rounds`` times. Before each block the benchmark pauses ``settle_seconds`` (untimed), so the
    previous path's idle threads stop spinning before this one is timed. ``eager`` always runs: it is
    the baseline of ``speedup`` and ``max_abs_diff``. ``train=True`` then times training steps for the
    paths of :data:`TRAIN_PATHS` among ``paths``, interleaved the same way. ``input_size`` is
    (channels, height, width), default the model's registered one. ``progress(description, completed,
    total)`` is called as work advances. ``extra_paths`` are timed in the same rounds after ``paths``
    (a baseline of the caller's: another model, another runtime); their bind gets the same inputs.

    Before any input is made, a lower bound of the memory the inputs and activations need
    (:func:`memory_estimate_bytes`) is checked against the memory available: beyond it a
    :class:`~sepconv.machine.MemoryLimitError` (a ValueError) names ``input_size`` or ``batch_sizes``.
    The model is not changed: every path works on its own copy.
    """
    from sepconv.models import default_input_size

    size = check_image_size("input_size", default_input_size(model) if input_size is None else input_size)
    batches = _check_batch_sizes(batch_sizes)
    names = _check_paths(paths)
    table = dict(EXECUTION_PATHS)
    for extra in extra_paths:
        if not isinstance(extra, ExecutionPath) or extra.name in table:
            raise ValueError(f"extra_paths must be ExecutionPaths with new names, got {extra!r}")
        table[extra.name] = extra
        names.append(extra.name)
    warmup_calls = check_positive("warmup_calls", warmup_calls)
    # Each path is warmed up as it is prepared (its warm-up output is the one compared with eager's),
    # so the timer itself warms up nothing. The plan checks its own numbers.
    plan = TimingPlan(
        warmup_calls=0,
        min_rounds=min_rounds,
        min_run_seconds=min_run_seconds,
        min_block_seconds=min_block_seconds,
        settle_seconds=settle_seconds,
    )
    train_names = [name for name in names if table[name].prepare_training is not None] if train else []
    reference = copy.deepcopy(model).cpu().float().eval()
    _require_memory(reference, size, batches, names)

    threads = torch.get_num_threads()
    generator = torch.Generator().manual_seed(0)
    inputs = {batch: torch.randn(batch, *size, generator=generator) for batch in batches}
    counter = Progress(progress, len(names) + len(train_names) + plan.min_rounds * (1 + bool(train_names)))

    with tempfile.TemporaryDirectory(prefix="sepconv-bench-") as folder:
        workspace = Workspace(reference, size, Path(folder))
        with torch.inference_mode():
            calls, outputs, skipped = _prepare(
                [table[name] for name in names],
                workspace,
                inputs,
                lambda path: path.prepare_inference,
                warmup_calls,
                counter,
            )
            spinning = {key: table[key[0]].spin_seconds for key in calls if table[key[0]].spin_seconds}
            timings = time_interleaved(
                calls, plan, progress=counter, label="timing inference", settle_after=spinning
            )
        results = _results(timings, names, batches, outputs)
        runtimes = {
            name: path_runtime(name, threads) if name in EXECUTION_PATHS else _extra_runtime(table[name])
            for name in dict.fromkeys(result.path for result in results)
        }
        cpu = cpu_summary()
        report = BenchReport(
            input_size=size, threads=threads, results=results, skipped=skipped, cpu=cpu, runtimes=runtimes
        )
        if not train_names:
            return report
        train_calls, _, train_skipped = _prepare(
            [table[name] for name in train_names],
            workspace,
            inputs,
            lambda path: path.prepare_training,
            warmup_calls,
            counter,
        )
        train_timings = time_interleaved(train_calls, plan, progress=counter, label="timing training")
    train_results = _results(train_timings, train_names, batches, outputs=None)
    return BenchReport(
        input_size=size,
        threads=threads,
        results=results,
        skipped=skipped,
        train_results=train_results,
        train_skipped=train_skipped,
        cpu=cpu,
        runtimes=runtimes,
    )


def memory_estimate_bytes(
    model: nn.Module, input_size: Sequence[int], batch_sizes: Sequence[int], paths: Sequence[str] = ("eager",)
) -> int:
    """A lower bound, in bytes, of the memory :func:`benchmark_paths` needs for these batch sizes and paths.

    It counts the float32 input batches, all alive for the whole run (one per batch size), their
    channels_last copies (bound by the ``channels_last`` and ``folded_channels_last`` paths when the
    layout differs, i.e. more than one channel and pixel; all alive once the last of those paths runs),
    and the largest module call at the largest batch, its arguments and new outputs
    (:func:`sepconv.analysis.memory.largest_call_bytes`). Weights, the
    other activations, training's saved tensors and the ONNX Runtime copies are left out.
    """
    from sepconv.analysis.memory import largest_call_bytes

    channels, height, width = input_size
    copies = 1
    if channels > 1 and height * width > 1:
        copies += sum(name in ("channels_last", "folded_channels_last") for name in paths)
    inputs = 4 * channels * height * width * sum(batch_sizes) * copies
    return inputs + largest_call_bytes(model, (max(batch_sizes), *input_size), dtype=torch.float32)


def _require_memory(model: nn.Module, size: tuple[int, ...], batches: list[int], names: list[str]) -> None:
    """Refuse, before any input is made, an input size or batch sizes that cannot fit in memory."""
    from sepconv.machine import require_memory

    # One image first: when even that cannot fit, the input size is to blame, not the batch sizes.
    single = memory_estimate_bytes(model, size, [1], names)
    require_memory(
        "input_size",
        ",".join(map(str, size)),
        single,
        what="one input image and the activations of the largest layer",
    )
    if batches != [1]:
        needed = memory_estimate_bytes(model, size, batches, names)
        require_memory(
            "batch_sizes",
            ",".join(map(str, batches)),
            needed,
            what="the input batches and the activations of the largest layer",
        )


def _extra_runtime(path: ExecutionPath) -> dict[str, str]:
    """What a caller's extra path says of itself: its description (sepconv cannot know its engine)."""
    return {"engine": "the caller's path", "precision": "as described", "settings": path.description}


def _check_batch_sizes(batch_sizes: Sequence[int]) -> list[int]:
    return list(dict.fromkeys(check_int_sequence("batch_sizes", batch_sizes)))


def _check_paths(paths: Iterable[str] | None) -> list[str]:
    """The requested path names in table order, with eager (the baseline) always first."""
    if paths is None:
        return list(EXECUTION_PATHS)
    requested = list(paths)
    unknown = [name for name in requested if name not in EXECUTION_PATHS]
    if unknown:
        raise ValueError(
            f"paths has unknown name(s) {', '.join(map(repr, unknown))}; valid: {', '.join(EXECUTION_PATHS)}"
        )
    return [name for name in EXECUTION_PATHS if name == "eager" or name in requested]


def _prepare(
    paths: list[ExecutionPath],
    workspace: Workspace,
    inputs: dict[int, torch.Tensor],
    preparer: Callable[[ExecutionPath], Callable[[Workspace], Bind] | None],
    warmup_calls: int,
    counter: Progress,
) -> tuple[dict[tuple[str, int], BoundCall], dict[tuple[str, int], Any], list[tuple[str, str]]]:
    """Bind and warm up every path at every batch size; a path that cannot run is skipped whole."""
    calls: dict[tuple[str, int], BoundCall] = {}
    outputs: dict[tuple[str, int], Any] = {}
    skipped: list[tuple[str, str]] = []
    names = [path.name for path in paths]
    for path in paths:
        name = path.name
        counter.report(f"preparing {name}")
        prepare = preparer(path)
        if prepare is None:  # the caller passes only the paths that run in this phase
            raise ValueError(f"execution path {name!r} cannot run in this phase")
        try:
            bind = prepare(workspace)
            bound = {batch: bind(images) for batch, images in inputs.items()}
            for batch, call in bound.items():
                for _ in range(warmup_calls):
                    outputs[name, batch] = call()
        except PathUnavailableError as reason:
            if name == "eager":
                # Without the baseline there is no speedup or difference to report for any path.
                counter.advance("eager skipped", steps=len(names))
                return {}, {}, [(other, f"the eager baseline cannot run: {reason}") for other in names]
            skipped.append((name, str(reason)))
        else:
            calls.update({(name, batch): call for batch, call in bound.items()})
        counter.advance(f"prepared {name}")
    # Rounds visit batch sizes in the outer loop and paths in the inner one, as the docstring says.
    ordered = dict(sorted(calls.items(), key=lambda item: list(inputs).index(item[0][1])))
    return ordered, outputs, skipped


def _results(
    timings: dict[tuple[str, int], Timing],
    names: list[str],
    batches: list[int],
    outputs: dict[tuple[str, int], Any] | None,
) -> list[PathResult]:
    """One result per timed (path, batch size), in table order: paths as listed, then batch sizes."""
    results = []
    for name in names:
        for batch in batches:
            if (name, batch) not in timings:
                continue
            median_ms = timings[name, batch].median_ms
            max_abs_diff = max_rel_diff = None
            if outputs is not None:
                max_abs_diff = _max_abs_diff(outputs[name, batch], outputs["eager", batch], name)
                # Relative to the largest eager output: an untrained network's logits can be ~1e-9,
                # where any absolute difference looks small.
                scale = float(torch.as_tensor(outputs["eager", batch]).float().abs().max())
                max_rel_diff = max_abs_diff / scale if scale > 0 else max_abs_diff
            results.append(
                PathResult(
                    path=name,
                    batch_size=batch,
                    median_ms=median_ms,
                    min_ms=timings[name, batch].min_ms,
                    max_ms=timings[name, batch].max_ms,
                    images_per_s=batch * 1000.0 / median_ms,
                    speedup=timings["eager", batch].median_ms / median_ms,
                    max_abs_diff=max_abs_diff,
                    max_rel_diff=max_rel_diff,
                )
            )
    return results


def _max_abs_diff(output: Any, reference: torch.Tensor, name: str) -> float:
    """Largest absolute difference of a path's output (tensor or numpy array) from eager float32."""
    values = torch.as_tensor(output).float()
    if values.shape != reference.shape:
        raise ValueError(
            f"path {name!r} returned shape {tuple(values.shape)}, eager returned {tuple(reference.shape)}"
        )
    return float((values - reference.float()).abs().max())
