"""Latency of one model across execution paths: eager, channels_last, BN-folded, bf16, compiled, ONNX.

:func:`benchmark_paths` answers "how fast does this model really run here, and which way of running it
is fastest?" in one process: every path is prepared and warmed up first, then timed *interleaved*
(each round runs every path once per batch size), so a change in the machine's load during the run
hits all paths alike instead of favouring whichever ran in a quiet moment. Each path's output on the
same fixed input is compared with eager float32, so a fast but wrong path shows in ``max_abs_diff``.

Paths that cannot run here (bf16 without native bf16 units, a model ``torch.compile`` or the ONNX
exporter cannot handle) are reported in ``skipped`` with the reason, never dropped silently. Adding a
path is adding a row to :data:`EXECUTION_PATHS`.

Timing uses ``time.perf_counter`` around blocks of calls rather than ``torch.utils.benchmark``: its
``blocked_autorange`` times one statement at a time and cannot interleave several.
"""

from __future__ import annotations

import copy
import math
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

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

# A forward (or training step) with its input already bound, in the form the path wants it.
BoundCall = Callable[[], Any]
# Turns the fixed float32 NCHW batch into a BoundCall; the conversion (layout, numpy) happens once here.
Bind = Callable[[torch.Tensor], BoundCall]

# Random calibration for the int8 path: its accuracy is not measured here, only its speed and output error.
_CALIBRATION_BATCHES = 4
_CALIBRATION_BATCH_SIZE = 8
# The default pause before each timed block, untimed: after a parallel region, OpenMP's worker threads
# spin for a while waiting for more work, and on a 2-core machine they slowed the next path's block
# (separable_cnn, batch 1: ONNX Runtime right after torch 0.46-0.86 ms, alone 0.23-0.25 ms, after a
# 20 ms pause 0.28-0.32 ms; a 5 ms pause was not enough).
SETTLE_SECONDS = 0.02
# Training steps use a small learning rate so that random labels do not drive the weights to inf/nan,
# which would change the arithmetic (and its speed) during the run.
_TRAIN_LEARNING_RATE = 1e-4


class PathUnavailableError(Exception):
    """An execution path that cannot run on this machine or for this model; the message says why."""


@dataclass(frozen=True)
class PathResult:
    """Timing of one path at one batch size: latency of one call (a forward, or a training step).

    ``min_ms`` and ``max_ms`` are over rounds; each round's value is the mean of one block of calls.
    ``speedup`` is eager's median over this median at the same batch size (eager is exactly 1).
    ``max_abs_diff`` is the largest absolute difference of the output from eager float32 on the same
    input, ``max_rel_diff`` that divided by the largest eager output; ``None`` for training steps.
    """

    path: str
    batch_size: int
    median_ms: float
    min_ms: float
    max_ms: float
    images_per_s: float
    speedup: float
    max_abs_diff: float | None = None
    max_rel_diff: float | None = None

    def to_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "path": self.path,
            "batch_size": self.batch_size,
            "latency_ms": {"median": self.median_ms, "min": self.min_ms, "max": self.max_ms},
            "images_per_s": self.images_per_s,
            "speedup": self.speedup,
        }
        if self.max_abs_diff is not None:
            document["max_abs_diff"] = self.max_abs_diff
        if self.max_rel_diff is not None:
            document["max_rel_diff"] = self.max_rel_diff
        return document


@dataclass(frozen=True)
class BenchReport:
    """What :func:`benchmark_paths` measured: inference results, training results when asked, skips."""

    input_size: tuple[int, int, int]
    threads: int
    results: list[PathResult]
    skipped: list[tuple[str, str]]
    train_results: list[PathResult] | None = None
    train_skipped: list[tuple[str, str]] | None = None

    def to_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "input_size": list(self.input_size),
            "threads": self.threads,
            "results": [result.to_dict() for result in self.results],
        }
        if self.train_results is not None:
            document["train_results"] = [result.to_dict() for result in self.train_results]
        document["skipped"] = [{"path": path, "reason": reason} for path, reason in self.skipped]
        if self.train_skipped is not None:
            document["train_skipped"] = [
                {"path": path, "reason": reason} for path, reason in self.train_skipped
            ]
        return document

    def format_table(self) -> str:
        """Plain-text tables (inference, then training when measured) and the skipped paths."""
        sections = [_text_table(_table_rows(self.results, with_diff=True), with_diff=True)]
        if self.train_results is not None:
            sections.append("training step\n" + _text_table(_table_rows(self.train_results), with_diff=False))
        if self.skipped or self.train_skipped:
            sections.append(self._skipped_text())
        return "\n\n".join(sections) + "\n"

    def to_rich(self) -> list[Any]:
        """Rich renderables: the inference table, the training table when measured, the skipped paths."""
        from rich.table import Table
        from rich.text import Text

        renderables: list[Any] = []
        tables = [("inference", self.results, True)]
        if self.train_results is not None:
            tables.append(("training step", self.train_results, False))
        for title, results, with_diff in tables:
            table = Table(title=title)
            for index, header in enumerate(_headers(with_diff)):
                table.add_column(header, justify="left" if index == 0 else "right")
            for row in _table_rows(results, with_diff=with_diff):
                table.add_row(*row)
            renderables.append(table)
        if self.skipped or self.train_skipped:
            renderables.append(Text(self._skipped_text()))
        return renderables

    def _skipped_text(self) -> str:
        skipped = self.skipped + [(f"{path} (train)", reason) for path, reason in self.train_skipped or []]
        return "skipped:\n" + "\n".join(f"  {path}: {reason}" for path, reason in skipped)


def _headers(with_diff: bool) -> list[str]:
    headers = ["path", "batch", "median ms", "min ms", "max ms", "images/s", "speedup"]
    return [*headers, "max |diff|", "rel diff"] if with_diff else headers


def _table_rows(results: Sequence[PathResult], *, with_diff: bool = False) -> list[list[str]]:
    rows = []
    for result in results:
        row = [
            result.path,
            str(result.batch_size),
            f"{result.median_ms:.3f}",
            f"{result.min_ms:.3f}",
            f"{result.max_ms:.3f}",
            f"{result.images_per_s:,.1f}",
            f"{result.speedup:.2f}x",
        ]
        if with_diff:
            row.append("-" if result.max_abs_diff is None else f"{result.max_abs_diff:.2e}")
            row.append("-" if result.max_rel_diff is None else f"{result.max_rel_diff:.2e}")
        rows.append(row)
    return rows


def _text_table(rows: list[list[str]], *, with_diff: bool) -> str:
    lines = [_headers(with_diff), *rows]
    widths = [max(len(line[column]) for line in lines) for column in range(len(lines[0]))]
    return "\n".join(
        "  ".join(
            cell.ljust(width) if column == 0 else cell.rjust(width)
            for column, (cell, width) in enumerate(zip(line, widths))
        )
        for line in lines
    )


class _Workspace:
    """What the paths share: the eval-mode float32 copy of the model, the input size, a temporary folder.

    The ONNX float32 export is made once and shared by the ``onnx_fp32`` and ``onnx_int8`` paths.
    """

    def __init__(self, model: nn.Module, input_size: tuple[int, int, int], folder: Path) -> None:
        self.model = model
        self.input_size = input_size
        self.folder = folder
        self._onnx_fp32: Path | None = None

    def eval_copy(self) -> nn.Module:
        return copy.deepcopy(self.model)

    def onnx_fp32_file(self) -> Path:
        if self._onnx_fp32 is None:
            from sepconv.deploy import ExportError, export_onnx

            try:
                report = export_onnx(self.model, self.folder / "model.onnx", input_size=self.input_size)
            except ExportError as error:
                raise PathUnavailableError(f"ONNX export failed: {_one_line(error)}") from error
            self._onnx_fp32 = Path(report.path)
        return self._onnx_fp32


@dataclass(frozen=True)
class ExecutionPath:
    """One way of running the model: a stable name, what it does, and how to prepare it.

    ``prepare_inference(workspace)`` returns a :data:`Bind` for forward passes (run under
    ``torch.inference_mode``); ``prepare_training(workspace)``, where a path can train, returns a
    :data:`Bind` for training steps. Both raise :class:`PathUnavailableError` with the reason when the
    path cannot run.
    """

    name: str
    description: str
    prepare_inference: Callable[[_Workspace], Bind]
    prepare_training: Callable[[_Workspace], Bind] | None = None


def _one_line(error: BaseException) -> str:
    """An exception as one short line: its type and the first line of its message."""
    lines = str(error).strip().splitlines()
    first = lines[0].strip() if lines else ""
    text = f"{type(error).__name__}: {first}" if first else type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _check_native_bf16() -> None:
    from sepconv.machine import cpu_has_native_bf16

    if not cpu_has_native_bf16():
        raise PathUnavailableError(
            "this CPU has no native bf16 (no AVX512-BF16 or AMX); emulated bf16 is slower than float32"
        )


def _channels_last(images: torch.Tensor) -> torch.Tensor:
    return images.contiguous(memory_format=torch.channels_last)


def _forward(
    model: nn.Module, convert: Callable[[torch.Tensor], torch.Tensor] = lambda images: images
) -> Bind:
    def bind(images: torch.Tensor) -> BoundCall:
        converted = convert(images)
        return lambda: model(converted)

    return bind


# Inference paths.


def _eager(workspace: _Workspace) -> Bind:
    return _forward(workspace.eval_copy())


def _channels_last_inference(workspace: _Workspace) -> Bind:
    return _forward(workspace.eval_copy().to(memory_format=torch.channels_last), _channels_last)


def _folded_channels_last(workspace: _Workspace) -> Bind:
    from sepconv.convert import fold_batchnorm

    folded = fold_batchnorm(workspace.model)  # a folded copy; the model is not changed
    return _forward(folded.to(memory_format=torch.channels_last), _channels_last)


def _bf16_inference(workspace: _Workspace) -> Bind:
    _check_native_bf16()
    model = workspace.eval_copy().to(memory_format=torch.channels_last)

    def bind(images: torch.Tensor) -> BoundCall:
        converted = _channels_last(images)

        def forward() -> torch.Tensor:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return model(converted)

        return forward

    return bind


def _compiled_inference(workspace: _Workspace) -> Bind:
    from sepconv.train.speed import _import_benchmark

    # Inductor imports torch.utils.cpp_extension, whose import logs a CUDA_HOME warning on machines
    # without CUDA; importing it once, quietly, first keeps that line out of the output.
    _import_benchmark()
    # One compiled graph per batch size (dynamic=False): static shapes are what inference serves.
    compiled = torch.compile(workspace.eval_copy(), dynamic=False)

    def bind(images: torch.Tensor) -> BoundCall:
        # Compilation happens on the first call; freezing (weights folded in as constants) is an
        # Inductor setting read at compile time, so it is patched around that call only.
        try:
            with torch._inductor.config.patch(freezing=True):
                compiled(images)
        # Compiler failures come as many exception types (backend, lowering, C++ build): for this
        # benchmark each means "this path cannot run here", reported with its reason.
        except Exception as error:
            raise PathUnavailableError(f"torch.compile failed: {_one_line(error)}") from error
        return lambda: compiled(images)

    return bind


_ONNX_MODULES = ("onnx", "onnxruntime", "onnxscript")


def _needs_onnx(prepare: Callable[[_Workspace], Bind]) -> Callable[[_Workspace], Bind]:
    """``prepare``, reporting a missing ONNX package as the reason the path cannot run."""

    def prepare_with_onnx(workspace: _Workspace) -> Bind:
        try:
            return prepare(workspace)
        except ModuleNotFoundError as error:
            if error.name not in _ONNX_MODULES:
                raise
            raise PathUnavailableError(
                f"{error.name} is not installed (pip install onnx onnxruntime onnxscript)"
            ) from error

    return prepare_with_onnx


def _onnx_session(path: Path) -> Any:
    """The file as users load it, with idle threads parked (``OnnxModel``'s default ``spin_wait=False``).

    Spinning ONNX Runtime threads sharing 2 cores with PyTorch slowed every torch path of this benchmark
    while a session existed (separable_cnn, batch 1: 3.4 ms alone and 7.0 ms interleaved with ONNX
    Runtime, against 2.2 ms for both with parked threads); parking costs ONNX Runtime itself about 6%.
    """
    from sepconv.deploy import OnnxModel

    return OnnxModel(path, threads=torch.get_num_threads()).session


def _onnx_bind(session: Any) -> Bind:
    input_name = session.get_inputs()[0].name

    def bind(images: torch.Tensor) -> BoundCall:
        feed = {input_name: images.contiguous().numpy()}
        return lambda: session.run(None, feed)[0]

    return bind


def _onnx_fp32(workspace: _Workspace) -> Bind:
    return _onnx_bind(_onnx_session(workspace.onnx_fp32_file()))


def _onnx_int8(workspace: _Workspace) -> Bind:
    from sepconv.deploy import quantize_onnx

    fp32_file = workspace.onnx_fp32_file()
    generator = torch.Generator().manual_seed(1)
    calibration = [
        torch.randn(_CALIBRATION_BATCH_SIZE, *workspace.input_size, generator=generator)
        for _ in range(_CALIBRATION_BATCHES)
    ]
    try:
        int8_file = quantize_onnx(fp32_file, workspace.folder / "model-int8.onnx", calibration)
    except ValueError as error:
        raise PathUnavailableError(f"int8 quantization failed: {_one_line(error)}") from error
    return _onnx_bind(_onnx_session(Path(int8_file)))


# Training paths: a copy of the model in train mode, SGD, cross-entropy on fixed random labels.


def _training_step(
    model: nn.Module,
    *,
    bf16: bool = False,
    convert: Callable[[torch.Tensor], torch.Tensor] = lambda images: images,
) -> Bind:
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=_TRAIN_LEARNING_RATE, momentum=0.9)

    def bind(images: torch.Tensor) -> BoundCall:
        converted = convert(images)
        labels: torch.Tensor | None = None

        def step() -> None:
            nonlocal labels
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                outputs = model(converted)
                if labels is None:
                    labels = _random_labels(outputs)
                loss = F.cross_entropy(outputs, labels)
            loss.backward()
            optimizer.step()

        try:
            step()  # the first step sets the labels, and shows a model that cannot train at this batch size
        except ValueError as error:  # e.g. BatchNorm over a single value per channel at batch 1
            raise PathUnavailableError(
                f"a training step at batch {images.shape[0]} fails: {_one_line(error)}"
            ) from error
        return step

    return bind


def _random_labels(outputs: torch.Tensor) -> torch.Tensor:
    """Class indices for cross-entropy on ``outputs`` (N, classes, ...), from a fixed seed."""
    if not isinstance(outputs, torch.Tensor) or outputs.ndim < 2:
        raise PathUnavailableError(
            "a training step needs a tensor output of shape (N, classes, ...), got "
            f"{tuple(outputs.shape) if isinstance(outputs, torch.Tensor) else type(outputs).__name__}"
        )
    generator = torch.Generator().manual_seed(2)
    shape = (outputs.shape[0], *outputs.shape[2:])
    return torch.randint(0, outputs.shape[1], shape, generator=generator)


def _eager_training(workspace: _Workspace) -> Bind:
    return _training_step(workspace.eval_copy())


def _channels_last_training(workspace: _Workspace) -> Bind:
    model = workspace.eval_copy().to(memory_format=torch.channels_last)
    return _training_step(model, convert=_channels_last)


def _bf16_training(workspace: _Workspace) -> Bind:
    _check_native_bf16()
    model = workspace.eval_copy().to(memory_format=torch.channels_last)
    return _training_step(model, bf16=True, convert=_channels_last)


def _compiled_training(workspace: _Workspace) -> Bind:
    from sepconv.train.speed import _import_benchmark

    _import_benchmark()  # see _compiled_inference
    model = workspace.eval_copy().train()
    bind_step = _training_step(torch.compile(model, dynamic=False))

    def bind(images: torch.Tensor) -> BoundCall:
        try:
            return bind_step(images)  # its first step compiles forward and backward for this batch size
        except PathUnavailableError:
            raise
        # Compiler failures come as many exception types (backend, lowering, C++ build): for this
        # benchmark each means "this path cannot run here", reported with its reason.
        except Exception as error:
            raise PathUnavailableError(f"torch.compile failed: {_one_line(error)}") from error

    return bind


EXECUTION_PATHS: dict[str, ExecutionPath] = {
    path.name: path
    for path in (
        ExecutionPath("eager", "eager PyTorch, NCHW float32 (the baseline)", _eager, _eager_training),
        ExecutionPath(
            "channels_last",
            "eager PyTorch, channels_last (NHWC) weights and input",
            _channels_last_inference,
            _channels_last_training,
        ),
        ExecutionPath(
            "folded_channels_last",
            "BatchNorm folded into the convolutions (sepconv.convert.fold_batchnorm), channels_last",
            _folded_channels_last,
        ),
        ExecutionPath(
            "bf16",
            "channels_last with CPU bf16 autocast (only where the CPU has native bf16)",
            _bf16_inference,
            _bf16_training,
        ),
        ExecutionPath(
            "compiled",
            "torch.compile (Inductor, default mode); inference with freezing",
            _compiled_inference,
            _compiled_training,
        ),
        ExecutionPath(
            "onnx_fp32", "ONNX Runtime, float32 (BatchNorm folded at export)", _needs_onnx(_onnx_fp32)
        ),
        ExecutionPath(
            "onnx_int8",
            "ONNX Runtime, static int8 (QDQ, per-channel weights, random calibration)",
            _needs_onnx(_onnx_int8),
        ),
    )
}
TRAIN_PATHS = tuple(name for name, path in EXECUTION_PATHS.items() if path.prepare_training is not None)


class _ProgressCounter:
    """Reports (description, completed, total) to the caller's callback; the total grows once planned."""

    def __init__(self, callback: Callable[[str, int, int], None] | None, total: int) -> None:
        self.callback = callback
        self.completed = 0
        self.total = total

    def advance(self, description: str, *, steps: int = 1) -> None:
        self.completed += steps
        self.report(description)

    def report(self, description: str) -> None:
        if self.callback is not None:
            self.callback(description, self.completed, self.total)


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

    size = tuple(default_input_size(model) if input_size is None else input_size)
    if len(size) != 3 or any(
        isinstance(value, bool) or not isinstance(value, int) or value < 1 for value in size
    ):
        raise ValueError(
            f"input_size must be 3 positive integers (channels, height, width), got {input_size!r}"
        )
    batches = _check_batch_sizes(batch_sizes)
    names = _check_paths(paths)
    table = dict(EXECUTION_PATHS)
    for extra in extra_paths:
        if not isinstance(extra, ExecutionPath) or extra.name in table:
            raise ValueError(f"extra_paths must be ExecutionPaths with new names, got {extra!r}")
        table[extra.name] = extra
        names.append(extra.name)
    for name, value in (("warmup_calls", warmup_calls), ("min_rounds", min_rounds)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    for name, value in (
        ("min_run_seconds", min_run_seconds),
        ("min_block_seconds", min_block_seconds),
        ("settle_seconds", settle_seconds),
    ):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    train_names = [name for name in names if table[name].prepare_training is not None] if train else []
    reference = copy.deepcopy(model).cpu().float().eval()
    _require_memory(reference, size, batches, names)

    threads = torch.get_num_threads()
    generator = torch.Generator().manual_seed(0)
    inputs = {batch: torch.randn(batch, *size, generator=generator) for batch in batches}
    counter = _ProgressCounter(progress, len(names) + len(train_names) + min_rounds * (1 + bool(train_names)))
    timing = _TimingPlan(warmup_calls, min_rounds, min_run_seconds, min_block_seconds, settle_seconds)

    with tempfile.TemporaryDirectory(prefix="sepconv-bench-") as folder:
        workspace = _Workspace(reference, size, Path(folder))
        with torch.inference_mode():
            calls, outputs, skipped = _prepare(
                [table[name] for name in names],
                workspace,
                inputs,
                lambda path: path.prepare_inference,
                timing,
                counter,
            )
            samples = _time_interleaved(calls, timing, counter, "inference")
        results = _results(samples, names, batches, outputs)
        report = BenchReport(input_size=size, threads=threads, results=results, skipped=skipped)
        if not train_names:
            return report
        train_calls, _, train_skipped = _prepare(
            [table[name] for name in train_names],
            workspace,
            inputs,
            lambda path: path.prepare_training,
            timing,
            counter,
        )
        train_samples = _time_interleaved(train_calls, timing, counter, "training")
    train_results = _results(train_samples, train_names, batches, outputs=None)
    return BenchReport(
        input_size=size,
        threads=threads,
        results=results,
        skipped=skipped,
        train_results=train_results,
        train_skipped=train_skipped,
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


def _check_batch_sizes(batch_sizes: Sequence[int]) -> list[int]:
    batches = list(batch_sizes)
    if not batches or any(
        isinstance(size, bool) or not isinstance(size, int) or size < 1 for size in batches
    ):
        raise ValueError(f"batch_sizes must be one or more positive integers, got {batch_sizes!r}")
    return list(dict.fromkeys(batches))


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


@dataclass(frozen=True)
class _TimingPlan:
    warmup_calls: int
    min_rounds: int
    min_run_seconds: float
    min_block_seconds: float
    settle_seconds: float


def _prepare(
    paths: list[ExecutionPath],
    workspace: _Workspace,
    inputs: dict[int, torch.Tensor],
    preparer: Callable[[ExecutionPath], Callable[[_Workspace], Bind] | None],
    timing: _TimingPlan,
    counter: _ProgressCounter,
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
        try:
            bind = prepare(workspace)
            bound = {batch: bind(images) for batch, images in inputs.items()}
            for batch, call in bound.items():
                for _ in range(timing.warmup_calls):
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


def _time_interleaved(
    calls: dict[tuple[str, int], BoundCall], timing: _TimingPlan, counter: _ProgressCounter, phase: str
) -> dict[tuple[str, int], list[float]]:
    """Seconds per call of each bound call, one sample per round, the calls interleaved in every round."""
    if not calls:  # every path of this phase was skipped
        counter.total -= timing.min_rounds  # the total counted min_rounds for this phase
        counter.report(f"timing {phase}: nothing to time")
        return {}
    calls_per_block: dict[tuple[str, int], int] = {}
    round_seconds = 0.0
    for key, call in calls.items():
        start = time.perf_counter()
        call()
        seconds = max(time.perf_counter() - start, 1e-9)
        calls_per_block[key] = max(1, math.ceil(timing.min_block_seconds / seconds))
        round_seconds += calls_per_block[key] * seconds
    rounds = max(timing.min_rounds, math.ceil(timing.min_run_seconds / max(round_seconds, 1e-9)))
    counter.total += rounds - timing.min_rounds  # the total counted min_rounds until now
    samples: dict[tuple[str, int], list[float]] = {key: [] for key in calls}
    for round_index in range(rounds):
        for key, call in calls.items():
            block = calls_per_block[key]
            time.sleep(timing.settle_seconds)
            start = time.perf_counter()
            for _ in range(block):
                call()
            samples[key].append((time.perf_counter() - start) / block)
        counter.advance(f"timing {phase}: round {round_index + 1}/{rounds}")
    return samples


def _results(
    samples: dict[tuple[str, int], list[float]],
    names: list[str],
    batches: list[int],
    outputs: dict[tuple[str, int], Any] | None,
) -> list[PathResult]:
    """One result per timed (path, batch size), in table order: paths as listed, then batch sizes."""
    medians_ms = {key: 1000.0 * statistics.median(values) for key, values in samples.items()}
    results = []
    for name in names:
        for batch in batches:
            if (name, batch) not in samples:
                continue
            median_ms = medians_ms[name, batch]
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
                    min_ms=1000.0 * min(samples[name, batch]),
                    max_ms=1000.0 * max(samples[name, batch]),
                    images_per_s=batch * 1000.0 / median_ms,
                    speedup=medians_ms["eager", batch] / median_ms,
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
