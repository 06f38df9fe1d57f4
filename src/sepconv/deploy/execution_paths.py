"""The execution paths ``sepconv bench`` times: a registry of ways to run one model on the CPU.

Each path is an :class:`ExecutionPath`: a stable name, what it does, and how to prepare it for
inference (eager, channels_last, BN-folded, bf16, torch.compile, ONNX Runtime float32 and int8) and,
where it can train, for training steps. Preparing binds the model to a fixed input once, so that only
the call itself is timed. A path that cannot run here (bf16 without native bf16 units, a model
``torch.compile`` or the ONNX exporter cannot handle, a missing package) raises
:class:`PathUnavailableError` with the reason. Adding a path is adding a row to :data:`EXECUTION_PATHS`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn
from torch.nn import functional as F

from sepconv.deploy._quiet import import_cpp_extension_quietly

__all__ = [
    "EXECUTION_PATHS",
    "TRAIN_PATHS",
    "Bind",
    "BoundCall",
    "ExecutionPath",
    "PathUnavailableError",
    "Workspace",
]

#: How long ONNX Runtime's idle threads spin after a run with its default settings, rounded up: one
#: thread stayed busy for 50-60 ms after each run (process CPU time sampled every 10 ms, separable_cnn,
#: 2 threads, onnxruntime 1.32); a path timed within that window ran up to 2x slower.
ORT_SPIN_SECONDS = 0.1

#: A forward pass (or training step) with its input already bound: call it with no arguments.
BoundCall = Callable[[], Any]
#: Turns the float32 NCHW batch into a :data:`BoundCall`, converting it (layout, numpy) once.
Bind = Callable[[torch.Tensor], BoundCall]

# Random calibration for the int8 path: its accuracy is not measured here, only its speed and output error.
_CALIBRATION_BATCHES = 4
_CALIBRATION_BATCH_SIZE = 8
# Training steps use a small learning rate so that random labels do not drive the weights to inf/nan,
# which would change the arithmetic (and its speed) during the run.
_TRAIN_LEARNING_RATE = 1e-4


class PathUnavailableError(Exception):
    """An execution path that cannot run on this machine or for this model; the message says why."""


class Workspace:
    """What the paths share: the eval-mode float32 copy of the model, the input size, a temporary folder.

    The ONNX float32 export is made once and shared by the ``onnx_fp32`` and ``onnx_int8`` paths.
    """

    def __init__(self, model: nn.Module, input_size: tuple[int, int, int], folder: Path) -> None:
        self.model = model
        self.input_size = input_size
        self.folder = folder
        self._onnx_fp32: Path | None = None

    def eval_copy(self) -> nn.Module:
        """A fresh copy of the model, which a path may change (fuse, convert) without touching the others."""
        return copy.deepcopy(self.model)

    def onnx_fp32_file(self) -> Path:
        """The float32 ONNX file of the model, exported on first use and shared by the ONNX paths.

        Raises:
            PathUnavailableError: the export failed (the paths that need it are skipped with the reason).
        """
        if self._onnx_fp32 is None:
            from sepconv.deploy.onnx_export import ExportError, export_onnx

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
    prepare_inference: Callable[[Workspace], Bind]
    prepare_training: Callable[[Workspace], Bind] | None = None
    #: Seconds the path's idle threads keep spinning after a call, which the timer waits out before
    #: timing the next path (ONNX Runtime's default settings spin; PyTorch's and OpenVINO's threads
    #: sleep within the timer's usual pause).
    spin_seconds: float = 0.0


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


def _eager(workspace: Workspace) -> Bind:
    return _forward(workspace.eval_copy())


def _channels_last_inference(workspace: Workspace) -> Bind:
    return _forward(workspace.eval_copy().to(memory_format=torch.channels_last), _channels_last)


def _folded_channels_last(workspace: Workspace) -> Bind:
    from sepconv.convert import fold_batchnorm

    folded = fold_batchnorm(workspace.model)  # a folded copy; the model is not changed
    return _forward(folded.to(memory_format=torch.channels_last), _channels_last)


def _bf16_inference(workspace: Workspace) -> Bind:
    _check_native_bf16()
    model = workspace.eval_copy().to(memory_format=torch.channels_last)

    def bind(images: torch.Tensor) -> BoundCall:
        converted = _channels_last(images)

        def forward() -> torch.Tensor:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return model(converted)

        return forward

    return bind


def _compiled_inference(workspace: Workspace) -> Bind:
    # Inductor imports torch.utils.cpp_extension, whose import logs a CUDA_HOME warning on machines
    # without CUDA; importing it once, quietly, first keeps that line out of the output.
    import_cpp_extension_quietly()
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


def _needs_onnx(prepare: Callable[[Workspace], Bind]) -> Callable[[Workspace], Bind]:
    """``prepare``, reporting a missing ONNX package as the reason the path cannot run."""

    def prepare_with_onnx(workspace: Workspace) -> Bind:
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
    """The file as a deployment runs it: ONNX Runtime's default settings, idle threads spinning.

    Spinning threads would steal the cores of the path timed next, so the benchmark waits
    :data:`ORT_SPIN_SECONDS` after each ONNX Runtime block until they sleep again; parking them instead
    (``OnnxModel``'s ``spin_wait=False``) spares that wait but costs ONNX Runtime itself up to 1.7x at
    batch 1.
    """
    from sepconv.deploy import OnnxModel

    return OnnxModel(path, threads=torch.get_num_threads(), spin_wait=True)


def _onnx_bind(model: Any) -> Bind:
    return lambda images: model.bind(images)


def _onnx_fp32(workspace: Workspace) -> Bind:
    return _onnx_bind(_onnx_session(workspace.onnx_fp32_file()))


def _onnx_int8(workspace: Workspace) -> Bind:
    from sepconv.deploy.quantize import quantize_onnx, random_calibration

    fp32_file = workspace.onnx_fp32_file()
    calibration = random_calibration(
        (_CALIBRATION_BATCH_SIZE, *workspace.input_size), batches=_CALIBRATION_BATCHES
    )
    try:
        int8_file = quantize_onnx(fp32_file, workspace.folder / "model-int8.onnx", calibration)
    except ValueError as error:
        raise PathUnavailableError(f"int8 quantization failed: {_one_line(error)}") from error
    return _onnx_bind(_onnx_session(Path(int8_file)))


def _openvino(precision: str) -> Callable[[Workspace], Bind]:
    """An OpenVINO path: the shared verified ONNX export as the ``openvino*`` engine deploys it."""

    def prepare(workspace: Workspace) -> Bind:
        from sepconv.deploy.openvino_export import openvino_model_from_onnx
        from sepconv.deploy.openvino_runtime import openvino_unavailable_reason

        reason = openvino_unavailable_reason(int8=precision == "int8")
        if reason is not None:
            raise PathUnavailableError(reason)
        if precision == "bf16":
            _check_native_bf16()
        try:
            model = openvino_model_from_onnx(
                workspace.onnx_fp32_file(),
                workspace.input_size,
                workspace.folder / f"openvino-{precision}",
                precision=precision,
                threads=torch.get_num_threads(),
            )
        except (ValueError, RuntimeError) as error:  # NNCF's and OpenVINO's refusals
            raise PathUnavailableError(f"OpenVINO {precision} failed: {_one_line(error)}") from error
        return lambda images: model.bind(images)

    return prepare


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


def _eager_training(workspace: Workspace) -> Bind:
    return _training_step(workspace.eval_copy())


def _channels_last_training(workspace: Workspace) -> Bind:
    model = workspace.eval_copy().to(memory_format=torch.channels_last)
    return _training_step(model, convert=_channels_last)


def _bf16_training(workspace: Workspace) -> Bind:
    _check_native_bf16()
    model = workspace.eval_copy().to(memory_format=torch.channels_last)
    return _training_step(model, bf16=True, convert=_channels_last)


def _compiled_training(workspace: Workspace) -> Bind:
    import_cpp_extension_quietly()  # see _compiled_inference
    model = workspace.eval_copy().train()
    # compiling a Module gives a Module (an OptimizedModule), though torch.compile's stub says callable
    bind_step = _training_step(cast(nn.Module, torch.compile(model, dynamic=False)))

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


#: Every execution path ``sepconv bench`` can time, by name.
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
            "onnx_fp32",
            "ONNX Runtime, float32 (BatchNorm folded at export)",
            _needs_onnx(_onnx_fp32),
            spin_seconds=ORT_SPIN_SECONDS,
        ),
        ExecutionPath(
            "onnx_int8",
            "ONNX Runtime, static int8 (QDQ, per-channel weights, random calibration)",
            _needs_onnx(_onnx_int8),
            spin_seconds=ORT_SPIN_SECONDS,
        ),
        ExecutionPath(
            "openvino_fp32", "OpenVINO, float32, compiled for latency at each batch size", _openvino("fp32")
        ),
        ExecutionPath(
            "openvino_bf16",
            "OpenVINO, bf16 inference (only where the CPU has native bf16)",
            _openvino("bf16"),
        ),
        ExecutionPath(
            "openvino_int8",
            "OpenVINO, int8 (NNCF post-training quantization, random calibration)",
            _openvino("int8"),
        ),
    )
}


def path_runtime(name: str, threads: int) -> dict[str, str]:
    """What runs the path ``name``, its version, precision and settings: stated beside every figure.

    Each engine is timed with the settings a deployment of it uses, and these are they.
    """
    if name.startswith("onnx"):
        import onnxruntime

        return {
            "engine": f"ONNX Runtime {onnxruntime.__version__}",
            "precision": "int8" if name.endswith("int8") else "fp32",
            "settings": f"{threads} intra-op threads, 1 inter-op, graph optimizations all, idle threads spin "
            "(ONNX Runtime's default)",
        }
    if name.startswith("openvino"):
        from sepconv.deploy.openvino_runtime import openvino_unavailable_reason

        version = "(not installed)"
        if openvino_unavailable_reason() is None:
            from sepconv.deploy.openvino_runtime import import_openvino

            version = str(import_openvino().get_version()).split("-")[0]
        return {
            "engine": f"OpenVINO {version}",
            "precision": name.removeprefix("openvino_"),
            "settings": f"{threads} inference threads, latency hint (1 stream), compiled for each batch size",
        }
    return {
        "engine": f"PyTorch {torch.__version__}",
        "precision": "bf16 autocast" if name == "bf16" else "fp32",
        "settings": f"{threads} intra-op threads"
        + (", Inductor with freezing" if name == "compiled" else ""),
    }


#: The names of the paths that can also time training steps.
TRAIN_PATHS = tuple(name for name, path in EXECUTION_PATHS.items() if path.prepare_training is not None)
