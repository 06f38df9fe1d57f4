"""Export a model to ONNX and prove the file computes what the model computes.

:func:`export_onnx` folds BatchNorm into the convolutions (:func:`sepconv.convert.fold_batchnorm`),
exports with torch's ONNX exporter (``torch.export`` based, the default opset of the pinned torch)
with a dynamic batch dimension, stores sepconv's metadata in the file (recipe, input size,
normalization, class names), then runs ONNX Runtime and the *original* PyTorch model on the same
inputs at two batch sizes. Only a file that agrees within ``atol + rtol * |reference|`` everywhere is
moved into place; otherwise :class:`ExportError` says by how much it differs and nothing is left
behind. A verified file is therefore never a silently wrong one, whether the fault is in the fold,
the exporter or the runtime.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import json
import logging
import os
import re
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sepconv.checks import check_float, check_image_size, check_int_sequence

# the metadata this module writes, which the readers check; still importable from here, as before
from sepconv.deploy.metadata import (
    INPUT_NAME,
    MAX_METADATA_CHARS,
    METADATA_KEY,
    OUTPUT_NAME,
    ExportError,
    check_metadata,
    onnx_metadata,
    parse_metadata,
)
from sepconv.errors import ParameterError
from sepconv.io.atomic import atomic_write_bytes, check_output_path

__all__ = [
    "INPUT_NAME",
    "MAX_METADATA_CHARS",
    "METADATA_KEY",
    "OUTPUT_NAME",
    "ExportError",
    "ExportReport",
    "check_input_fits",
    "check_metadata",
    "export_layers",
    "export_onnx",
    "onnx_metadata",
    "parse_metadata",
    "verify_onnx",
    "verify_outputs",
]


@dataclass
class ExportReport:
    """What :func:`export_onnx` wrote and how closely ONNX Runtime reproduced PyTorch.

    ``max_abs_diff`` is the largest ``|onnx - torch|`` over every output element of every verified
    batch; ``max_rel_diff`` is that difference divided by the largest ``|torch|`` output (the output's
    scale), so it reads as a fraction of the logits' range.
    """

    path: Path
    opset: int
    input_size: tuple[int, int, int]
    batch_sizes: tuple[int, ...]
    max_abs_diff: float
    max_rel_diff: float
    atol: float
    rtol: float
    inputs: str
    folded_batchnorms: list[str] = field(default_factory=list)
    export_seconds: float = 0.0
    file_bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of these fields (paths as strings), as ``sepconv export --json`` prints them."""
        document = asdict(self)
        document["path"] = str(self.path)
        document["input_size"] = list(self.input_size)
        document["batch_sizes"] = list(self.batch_sizes)
        return document


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    input_size: Sequence[int] | None = None,
    inputs: torch.Tensor | None = None,
    batch_sizes: Sequence[int] = (1, 7),
    atol: float = 1e-4,
    rtol: float = 1e-3,
    fold_bn: bool = True,
    metadata: Mapping[str, Any] | None = None,
) -> ExportReport:
    """Export ``model`` to the ONNX file ``path`` (atomically), verified with ONNX Runtime.

    ``input_size`` is ``(channels, height, width)`` (default: the size the model was registered with,
    for models built by :func:`sepconv.models.create_model`). ``inputs`` are real images ``(N, C, H, W)``
    to verify on (a batch of the data set, normalized as in training); random normal images are used
    when none are given. The batch dimension is dynamic; verification runs at each of
    ``batch_sizes``. ``metadata`` (``mean``, ``std``, ``class_names``, ``dataset``) is stored in the
    file with the model's recipe, so :class:`sepconv.deploy.OnnxModel` can predict from raw images.
    Before the exporter runs, the model runs once on ``input_size`` (:func:`check_input_fits`: a size
    it cannot take is a ValueError naming ``input_size`` and the layer) and ``metadata`` is checked
    as OnnxModel checks it on loading (one finite mean and one std > 0 per input channel, one class
    name per output), so no file is written that would describe another model.

    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(3))
    >>> _ = model(torch.zeros(1, 1, 6, 6))
    >>> report = export_onnx(model, folder / "model.onnx", input_size=(1, 6, 6))
    >>> report.folded_batchnorms, report.max_abs_diff < 1e-4
    (['1'], True)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if inputs is not None and not isinstance(inputs, torch.Tensor):
        raise TypeError(
            f"inputs must be a torch.Tensor of images (N, C, H, W) or None, got {type(inputs).__name__} "
            f"{inputs!r:.80}"
        )
    target = Path(path)
    if target.suffix != ".onnx":
        raise ValueError(f"path must end in .onnx, got {str(target)!r}")
    if target.is_dir():
        raise ValueError(f"path {str(target)!r} is a folder; give a file name ending in .onnx")
    check_output_path(target, parameter="path")  # a device or FIFO is refused before the export work
    if not target.parent.is_dir():
        raise FileNotFoundError(f"cannot write {target}: folder {target.parent} does not exist")
    size = _input_size(model, input_size, inputs)
    sizes = _batch_sizes(batch_sizes)
    atol = check_float("atol", atol, minimum=0)
    rtol = check_float("rtol", rtol, minimum=0)

    started = time.perf_counter()
    # A model trained channels_last keeps channels_last weights; traced that way, the exporter turns
    # layout-dependent views (flatten after pooling) into index arithmetic (Range, Gather). The graph
    # itself is layout-free, so export from the plain layout.
    reference = copy.deepcopy(model).float().cpu().eval().to(memory_format=torch.contiguous_format)
    folded_names: list[str] = []
    if fold_bn:
        from sepconv.convert import fold_batchnorm_with_report

        exported, folded_names = fold_batchnorm_with_report(reference)
    else:
        exported = reference
    # The model must run on input_size before the exporter is asked: its failure would blame ONNX.
    num_classes = check_input_fits(reference, size)
    document = onnx_metadata(model, size, folded_names, metadata, num_classes=num_classes)

    with _scratch_file(target) as scratch:
        opset = _export(exported, size, scratch, document)
        export_seconds = time.perf_counter() - started
        batches = _verification_batches(inputs, size, sizes)
        max_abs, max_rel = verify_onnx(scratch, reference, batches, atol=atol, rtol=rtol)
        # Only a verified file reaches ``target``, and atomically: a reader never sees half of one.
        atomic_write_bytes(target, scratch.read_bytes())
    return ExportReport(
        path=target,
        opset=opset,
        input_size=size,
        batch_sizes=sizes,
        max_abs_diff=max_abs,
        max_rel_diff=max_rel,
        atol=float(atol),
        rtol=float(rtol),
        inputs="random normal" if inputs is None else "given images",
        folded_batchnorms=folded_names,
        export_seconds=export_seconds,
        file_bytes=target.stat().st_size,
    )


def check_input_fits(
    model: nn.Module, input_size: Sequence[int], *, parameter: str = "input_size"
) -> int | None:
    """Run ``model`` on one random image of ``input_size`` (C, H, W); return how many classes it outputs.

    A model that cannot take that size raises a :class:`~sepconv.errors.ParameterError` (a ValueError)
    naming ``parameter`` (also its ``.param``, which the command line turns into its flag), the size,
    the layer that failed and the model's own input size, so that a wrong size is not reported as the
    exporter's failure. A model that returns other than one tensor raises
    :class:`ExportError`; the count is None for an output that is not ``(batch, classes)``.
    """
    size = tuple(int(value) for value in input_size)
    default = _default_size(model)
    valid = f"; the model was built for {default}" if default and default != size else ""
    first_conv = next(
        (
            (name, module)
            for name, module in model.named_modules()
            if isinstance(module, nn.modules.conv._ConvNd)
        ),
        None,
    )
    if first_conv is not None and first_conv[1].in_channels != size[0]:
        name, conv = first_conv
        raise ParameterError(
            f"{parameter} {size} has {size[0]} channel{'s' if size[0] != 1 else ''}, but the model takes "
            f"{conv.in_channels} (layer '{name}'){valid}",
            param=parameter,
        )
    # The modules running when the model fails, outermost first: the last one is where it failed.
    running: list[tuple[str, nn.Module]] = []

    def entered(module: nn.Module, args: Any, name: str = "") -> None:
        running.append((name, module))

    def left(module: nn.Module, args: Any, output: Any) -> None:
        running.pop()  # a forward hook that returns something would replace the output

    handles = []
    for name, module in model.named_modules():
        handles.append(module.register_forward_pre_hook(functools.partial(entered, name=name)))
        handles.append(module.register_forward_hook(left))
    image = torch.randn((1, *size), generator=torch.Generator().manual_seed(0))
    was_training = model.training
    try:
        with torch.inference_mode():
            model.eval()
            output = model(image)
    except (RuntimeError, ValueError, IndexError) as error:
        where = (
            f" at layer '{running[-1][0]}' ({type(running[-1][1]).__name__})"
            if running and running[-1][0]
            else ""
        )
        raise ParameterError(
            f"{parameter} {size} does not fit the model: it fails{where} ({_first_line(error)}){valid}",
            param=parameter,
        ) from error
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    logits = _single_output(output)
    return int(logits.shape[1]) if logits.ndim == 2 else None


def _default_size(model: nn.Module) -> tuple[int, int, int] | None:
    from sepconv.models.registry import default_input_size

    try:
        return tuple(default_input_size(model))  # type: ignore[return-value]
    except (ValueError, TypeError):
        return None


def verify_onnx(
    path: str | os.PathLike[str],
    reference: nn.Module,
    batches: Sequence[torch.Tensor],
    *,
    atol: float,
    rtol: float,
) -> tuple[float, float]:
    """Run the ONNX file and ``reference`` on each batch; return (max abs diff, max diff / max abs reference).

    Raises :class:`ExportError` when any element differs by more than ``atol + rtol * |reference|``
    (the rule of ``numpy.allclose``), naming the batch size and the worst element, or (``rtol > 0``)
    when the largest difference exceeds ``rtol`` times the largest ``|reference|``: outputs far
    smaller than ``atol`` (an untrained network's) are then still compared, at their own scale.
    """
    from sepconv.deploy.runtime import OnnxModel

    return verify_outputs(OnnxModel(path), reference, batches, atol=atol, rtol=rtol, engine="ONNX Runtime")


def verify_outputs(
    run: Callable[[np.ndarray], np.ndarray],
    reference: nn.Module,
    batches: Sequence[torch.Tensor],
    *,
    atol: float,
    rtol: float,
    engine: str,
) -> tuple[float, float]:
    """:func:`verify_onnx` for any engine: ``run`` maps a float32 batch to the engine's logits.

    ``engine`` names it in the errors (``"ONNX Runtime"``, ``"OpenVINO"``).
    """
    max_abs = 0.0
    max_rel = 0.0
    with torch.inference_mode():
        for batch in batches:
            expected = _single_output(reference(batch)).numpy()
            actual = np.asarray(run(batch.numpy()))
            if actual.shape != expected.shape:
                raise ExportError(
                    f"the {engine} model's output has shape {actual.shape} but the model's has {expected.shape} "
                    f"at batch size {len(batch)}"
                )
            difference = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
            if not np.all(np.isfinite(actual)):
                raise ExportError(f"the {engine} model's output is not finite at batch size {len(batch)}")
            scale = float(np.abs(expected).max()) if expected.size else 0.0
            batch_abs = float(difference.max()) if difference.size else 0.0
            max_abs = max(max_abs, batch_abs)
            max_rel = max(max_rel, batch_abs / scale if scale > 0 else batch_abs)
            excess = difference - (atol + rtol * np.abs(expected))
            if excess.size and excess.max() > 0:
                worst = np.unravel_index(int(excess.argmax()), excess.shape)
                raise ExportError(
                    f"{engine}'s output differs from PyTorch's by {float(difference[worst]):.3g} at batch size "
                    f"{len(batch)} (element {tuple(int(i) for i in worst)}, reference "
                    f"{float(expected[worst]):.6g}), more than atol={atol:g} + rtol={rtol:g} x |reference|; "
                    f"max abs diff {batch_abs:.3g}"
                )
            if rtol > 0 and scale > 0 and batch_abs > rtol * scale:
                # An untrained network's logits can be ~1e-17, where atol alone accepts anything.
                raise ExportError(
                    f"{engine}'s output differs from PyTorch's by {batch_abs:.3g} at batch size {len(batch)}, "
                    f"{batch_abs / scale:.3g} of the output's largest value {scale:.3g}: more than rtol={rtol:g}"
                )
    return max_abs, max_rel


def export_layers(modules: Sequence[nn.Module], examples: Sequence[torch.Tensor]) -> list[Any]:
    """Each module of ``modules`` as its own ONNX graph (an ``onnx.ModelProto``), at its example's shape.

    The light export that timing layers one by one needs (:mod:`sepconv.deploy.engines`, the cost
    model of :mod:`sepconv.optimize`): the same exporter as :func:`export_onnx`, with the same graph
    optimisation, so each graph holds the ONNX operators the whole-model export gives that layer (a
    ``Conv`` node for an ``nn.Conv2d``, two for a separable one, ``Gemm`` for an ``nn.Linear``), but
    no BatchNorm folding, no verification, no metadata, and the example's static shape.

    Why one exporter run for all: tracing costs torch's exporter about a second per run whatever the
    layer's size, so the modules run side by side in one wrapper, exported once, and each module's
    graph is then cut out of the whole by its input and output names (six candidates of a 64-channel
    3x3 convolution: 1.3 s together, 5.8 s one by one). Each module is called once in PyTorch first:
    one that fails on its example or returns other than one tensor raises :class:`ExportError` naming
    its position, as does an exporter failure. The modules are used as given (put them in eval mode).
    """
    import onnx

    if len(modules) != len(examples):
        raise ValueError(f"give one example per module: {len(modules)} modules, {len(examples)} examples")
    if not modules:
        return []
    with torch.no_grad():
        for index, (module, example) in enumerate(zip(modules, examples, strict=True)):
            try:
                output = module(example)
            except (RuntimeError, ValueError, TypeError, IndexError) as error:
                raise ExportError(
                    f"module {index} ({type(module).__name__}) fails on its example of shape "
                    f"{tuple(example.shape)}: {_first_line(error)}"
                ) from error
            if not isinstance(output, torch.Tensor):
                raise ExportError(
                    f"module {index} ({type(module).__name__}) returns {type(output).__name__}; a layer is "
                    "exported alone only when it returns one tensor"
                )
    inputs = [f"input_{index}" for index in range(len(modules))]
    outputs = [f"output_{index}" for index in range(len(modules))]
    try:
        with _quiet():
            program = torch.onnx.export(
                _SideBySide(modules),
                # one tensor given twice would be traced as one input, and the graphs cut apart wrongly
                tuple(example.clone() for example in examples),
                dynamo=True,
                verbose=False,
                input_names=inputs,
                output_names=outputs,
                optimize=True,
            )
            if program is None:
                raise ExportError("the exporter returned nothing")
            whole = program.model_proto
    except Exception as error:  # the exporter raises many types; every one means "cannot export"
        names = ", ".join(sorted({type(module).__name__ for module in modules}))
        raise ExportError(f"ONNX cannot export {names}: {_export_failure(error)}") from error
    extractor = onnx.utils.Extractor(whole)
    return [extractor.extract_model([name], [output]) for name, output in zip(inputs, outputs, strict=True)]


class _SideBySide(nn.Module):
    """Several modules run on their own inputs in one call: one exporter run for all of them."""

    def __init__(self, modules: Sequence[nn.Module]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(modules)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(layer(value) for layer, value in zip(self.layers, inputs, strict=True))


# --- steps ----------------------------------------------------------------------------------------


def _input_size(
    model: nn.Module, input_size: Sequence[int] | None, inputs: torch.Tensor | None
) -> tuple[int, int, int]:
    if input_size is None and inputs is not None and inputs.ndim == 4:
        input_size = tuple(inputs.shape[1:])
    if input_size is None:
        from sepconv.models.registry import default_input_size

        try:
            input_size = default_input_size(model)
        except ValueError as error:
            raise ParameterError(f"input_size is needed: {error}", param="input_size") from None
    size = check_image_size("input_size", input_size)
    if inputs is not None and (inputs.ndim != 4 or tuple(inputs.shape[1:]) != size):
        raise ValueError(
            f"inputs must have shape (N, {size[0]}, {size[1]}, {size[2]}) to match input_size, got "
            f"{tuple(inputs.shape)}"
        )
    return size


def _batch_sizes(batch_sizes: Sequence[int]) -> tuple[int, ...]:
    sizes = check_int_sequence("batch_sizes", batch_sizes)
    if len(set(sizes)) < 2:
        # One size would not show whether the batch dimension really is dynamic.
        raise ParameterError(
            f"batch_sizes must hold at least two different sizes, got {batch_sizes!r}", param="batch_sizes"
        )
    return sizes


def _verification_batches(
    inputs: torch.Tensor | None, input_size: tuple[int, int, int], batch_sizes: tuple[int, ...]
) -> list[torch.Tensor]:
    if inputs is None:
        generator = torch.Generator().manual_seed(0)
        pool = torch.randn((max(batch_sizes), *input_size), generator=generator)
    else:
        if len(inputs) == 0:
            raise ValueError("inputs must hold at least one image")
        pool = inputs.detach().float().cpu()
        repeats = -(-max(batch_sizes) // len(pool))
        pool = pool.repeat(repeats, 1, 1, 1)
    return [pool[:size].contiguous() for size in batch_sizes]


def _export(
    model: nn.Module, input_size: tuple[int, int, int], path: Path, metadata: Mapping[str, Any]
) -> int:
    """torch.onnx.export (the torch.export-based exporter), dynamic batch, metadata; returns the opset."""
    # Batch 2: torch.export specialises sizes 0 and 1, which would pin the batch dimension to 1.
    example = torch.randn((2, *input_size), generator=torch.Generator().manual_seed(0))
    batch = torch.export.Dim("batch")
    try:
        with _quiet():
            program = torch.onnx.export(
                model,
                (example,),
                dynamo=True,
                verbose=False,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: batch},),
                optimize=True,
            )
    except Exception as error:  # the exporter raises many types; every one means "cannot export"
        raise ExportError(f"ONNX cannot export {type(model).__name__}: {_export_failure(error)}") from error
    if program is None:
        raise ExportError(f"ONNX cannot export {type(model).__name__}: the exporter returned nothing")
    import onnx

    program.model.metadata_props[METADATA_KEY] = json.dumps(metadata, sort_keys=True)
    program.model.doc_string = f"exported by sepconv {metadata['sepconv_version']}"
    with _quiet():
        proto = program.model_proto  # one file, weights included (no external data)
    _use_global_average_pool(proto)
    onnx.save(proto, str(path))
    return int(program.model.opset_imports.get("", 0))


def _use_global_average_pool(model: Any) -> int:
    """Rewrite ``ReduceMean`` over H and W of a 4-D tensor (kept dims) as ``GlobalAveragePool``.

    The exporter lowers ``adaptive_avg_pool2d(x, 1)`` (the head of most CNNs) to ``ReduceMean``, which
    ONNX Runtime runs only in NCHW: it must first reorder the last feature map out of its blocked
    NCHWc layout. ``GlobalAveragePool`` is the same arithmetic and runs in NCHWc directly (measured on
    the demo's separable twin, batch 64: the reorder was 4% of the run). Rewrites the ``ModelProto``
    ``model`` in place; returns the number of nodes rewritten.
    """
    import onnx
    from onnx import numpy_helper

    inferred = onnx.shape_inference.infer_shapes(model)
    ranks = {
        value.name: len(value.type.tensor_type.shape.dim)
        for value in [*inferred.graph.value_info, *inferred.graph.input]
        if value.type.tensor_type.HasField("shape")
    }
    constants = {tensor.name: numpy_helper.to_array(tensor) for tensor in model.graph.initializer}
    rewritten = 0
    for node in model.graph.node:
        if node.op_type != "ReduceMean" or len(node.input) != 2 or ranks.get(node.input[0]) != 4:
            continue
        attributes = {
            attribute.name: onnx.helper.get_attribute_value(attribute) for attribute in node.attribute
        }
        axes = constants.get(node.input[1])
        if (
            attributes.get("keepdims", 1) != 1
            or axes is None
            or sorted(int(a) % 4 for a in axes.ravel()) != [2, 3]
        ):
            continue
        node.op_type = "GlobalAveragePool"
        del node.input[1:]
        del node.attribute[:]
        rewritten += 1
    if rewritten:
        used = {name for node in model.graph.node for name in node.input}
        unused = [tensor for tensor in model.graph.initializer if tensor.name not in used]
        for tensor in unused:  # the axes constants; ONNX Runtime warns about unused initializers
            model.graph.initializer.remove(tensor)
    return rewritten


def _single_output(output: Any) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output.float()
    raise ExportError(
        f"the model must return one tensor (the logits) to be exported, got {type(output).__name__}"
    )


_TERMINAL_CODES = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in _TERMINAL_CODES.sub("", str(error)).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def _export_failure(error: BaseException) -> str:
    """Why the exporter failed, in one line: its own summary and the innermost cause, which says why."""
    cause = error
    while cause.__cause__ is not None:
        cause = cause.__cause__
    summary = _first_line(error)
    if cause is error:
        return summary
    return f"{summary} ({type(cause).__name__}: {_first_line(cause)})"


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Keep the exporter's progress lines, graph dumps and advisory warnings off the user's terminal.

    What went wrong reaches the user through the exception instead (see :func:`_export_failure`).
    """
    # A filter whose name matches no logger rejects every record; added for the duration only, so
    # no logger's level or handlers change.
    silence = logging.Filter("nothing")
    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    for logger in loggers:
        logger.addFilter(silence)
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger in loggers:
            logger.removeFilter(silence)


_NOISY_LOGGERS = ("torch.fx.experimental.symbolic_shapes", "torch.export", "torch._dynamo", "torch.onnx")


@contextlib.contextmanager
def _scratch_file(target: Path) -> Iterator[Path]:
    """A path in a private temporary folder, removed with the folder on exit (success or not)."""
    with tempfile.TemporaryDirectory(prefix="sepconv-export-") as folder:
        yield Path(folder) / target.name
