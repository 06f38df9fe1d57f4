"""Run an exported model with OpenVINO on the CPU: the IR files ``sepconv export --openvino DIR`` writes.

:class:`OpenVinoModel` has the face of :class:`~sepconv.deploy.OnnxModel` (logits for a tensor or an
array, :meth:`~OpenVinoModel.predict` on raw images, ``metadata``), over an OpenVINO IR
(``model.xml`` + ``model.bin``) that carries sepconv's metadata in its runtime info. The IR is
untrusted input: that metadata is parsed within the same bounds and checked against the graph as
an ONNX file's is.

OpenVINO and NNCF are optional (``pip install openvino nncf``); without them this module still
imports, and :func:`openvino_unavailable_reason` says what to install. Both packages send usage
telemetry unless told not to, and sepconv sends nothing anywhere: :func:`import_openvino` and
:func:`import_nncf` turn it off before either package can start it.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib.util
import os
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from sepconv.checks import check_choice, describe_integer
from sepconv.deploy.metadata import METADATA_KEY, ExportError
from sepconv.deploy.runtime import DeployedModel, checked_metadata
from sepconv.errors import ParameterError

__all__ = [
    "OPENVINO_INSTALL",
    "OpenVinoModel",
    "import_nncf",
    "import_openvino",
    "openvino_unavailable_reason",
    "resolve_ir_path",
    "signal_stack_kept",
]

#: The command that installs what the OpenVINO engines need.
OPENVINO_INSTALL = "pip install openvino nncf"
#: The IR file names ``sepconv export --openvino DIR`` writes into DIR (float, then int8).
IR_FILES = ("model.xml", "model.int8.xml")
# Batch sizes a model compiles a static-shape copy for; OpenVINO runs a fixed shape 1.3-1.5x faster
# than the dynamic one (mobilenet_v2, 2 AVX2 cores: 26 against 40 ms at batch 1), and a deployment
# serves fixed batches. Others run on the dynamic compile.
_STATIC_COMPILES = 4
# OpenVINO's names for the float precision of the layers that are not int8.
_PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16"}


def openvino_unavailable_reason(*, int8: bool = False) -> str | None:
    """Why the OpenVINO engines cannot run here (openvino, or for ``int8`` nncf, missing), or None."""
    needed = ("openvino", "nncf") if int8 else ("openvino",)
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        return f"{', '.join(missing)} not installed ({OPENVINO_INSTALL})"
    return None


def _telemetry_off() -> None:
    """Keep OpenVINO's and NNCF's usage telemetry from starting.

    Both create one shared ``openvino_telemetry.Telemetry`` on import and send events unless a consent
    file in the user's home says no (NNCF creates it with ``enable_opt_in_dialog=False``, which counts
    a missing file as consent, and writes a client-id file there). The class is a singleton: an
    instance placed first, with consent off, is the one every later ``Telemetry(...)`` returns, so
    nothing is written or sent and the user's home is not touched.
    """
    try:
        from openvino_telemetry import Telemetry
    except ImportError:  # nothing to turn off
        return
    slot = "_SingletonMetaClass__single_instance"
    if getattr(Telemetry, slot, None) is None:
        silent = object.__new__(Telemetry)
        silent.consent = False
        setattr(Telemetry, slot, silent)
    else:
        getattr(Telemetry, slot).consent = False


class _SignalStack(ctypes.Structure):
    # Linux's stack_t (<signal.h>): base, flags, size.
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


_SS_ONSTACK, _SS_DISABLE = 1, 2


@functools.cache
def _sigaltstack() -> Callable[..., int] | None:
    """libc's ``sigaltstack``, or None where the plugin's behaviour below does not apply (not Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).sigaltstack
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.POINTER(_SignalStack), ctypes.POINTER(_SignalStack)]
    function.restype = ctypes.c_int
    return function


@contextlib.contextmanager
def signal_stack_kept() -> Iterator[None]:
    """Put the calling thread's alternate signal stack back after the OpenVINO calls in the block.

    Why: OpenVINO's CPU plugin (2025.x-2026.x) installs a small signal stack of its own on the thread
    that creates it and, when it is destroyed, puts back the one it found there, even when that one
    belonged to another plugin that was destroyed (and unmapped) in the meantime. Two compiled models
    from two ``Core`` objects, released in the order they were made, leave the thread's signal stack
    pointing at freed memory; the next signal Python handles on it (Ctrl-C, a DataLoader worker's exit)
    kills the process with SIGSEGV and no message. With the caller's stack put back after each call
    that may create a plugin (compiling, quantizing), no plugin finds its own stack installed when it
    is destroyed, so each only frees its own. A no-op outside Linux.
    """
    function = _sigaltstack()
    saved = _SignalStack()
    if function is None or function(None, ctypes.byref(saved)) != 0 or saved.ss_flags & _SS_ONSTACK:
        yield
        return
    try:
        yield
    finally:
        if saved.ss_flags & _SS_DISABLE:
            saved = _SignalStack(None, _SS_DISABLE, 0)
        function(ctypes.byref(saved), None)


def import_openvino() -> ModuleType:
    """The ``openvino`` module, telemetry off; a ModuleNotFoundError with the install command without it."""
    reason = openvino_unavailable_reason()
    if reason is not None:
        raise ModuleNotFoundError(f"OpenVINO cannot run here: {reason}", name="openvino")
    _telemetry_off()
    import openvino

    return openvino


def import_nncf() -> ModuleType:
    """The ``nncf`` module (int8 quantization for OpenVINO), quiet and telemetry off."""
    import logging

    reason = openvino_unavailable_reason(int8=True)
    if reason is not None:
        raise ModuleNotFoundError(f"OpenVINO int8 cannot run here: {reason}", name="nncf")
    _telemetry_off()
    from sepconv.deploy._quiet import import_cpp_extension_quietly

    # NNCF imports torch.utils.cpp_extension, which logs a CUDA_HOME warning on machines without CUDA.
    import_cpp_extension_quietly()
    import nncf

    nncf.set_log_level(logging.ERROR)  # its progress bars and INFO lines are not sepconv's output
    return nncf


def resolve_ir_path(path: str | os.PathLike[str]) -> Path:
    """The ``.xml`` of an IR given as the file or as the folder ``sepconv export --openvino`` wrote.

    A folder resolves to its ``model.xml``, or its ``model.int8.xml`` when it holds only that. Raises
    FileNotFoundError naming what is missing.
    """
    file = Path(path)
    if file.is_dir():
        for name in IR_FILES:
            if (file / name).is_file():
                return file / name
        raise FileNotFoundError(f"no OpenVINO IR in folder {file}: expected {' or '.join(IR_FILES)}")
    if file.suffix != ".xml":
        raise FileNotFoundError(f"not an OpenVINO IR: {file} (give its .xml file or the folder holding it)")
    if not file.is_file():
        raise FileNotFoundError(f"OpenVINO IR file not found: {file}")
    if not file.with_suffix(".bin").is_file():
        raise FileNotFoundError(
            f"OpenVINO IR {file} has no weights file {file.with_suffix('.bin').name} beside it"
        )
    return file


class OpenVinoModel(DeployedModel):
    """An OpenVINO IR (``model.xml`` + ``.bin``, or the folder holding them), ready to run on the CPU.

    The same face as :class:`~sepconv.deploy.OnnxModel`: ``model(images)`` returns the logits (a
    tensor for a tensor, an array for an array), ``model.predict(images)`` normalizes raw images with
    the stored mean/std and returns class indices and probabilities, ``model.metadata`` is what
    ``sepconv export`` stored. ``threads`` (default: torch's thread count) is OpenVINO's
    ``INFERENCE_NUM_THREADS``; the model is compiled for latency (one stream), as a process serving
    one request at a time runs it. ``precision`` is the precision of the layers that are not int8:
    ``"fp32"``, or ``"bf16"``, which OpenVINO runs natively only on CPUs with AVX512-BF16 or AMX
    (elsewhere it runs fp32: :attr:`inference_precision` says what it chose).
    """

    def __init__(
        self, path: str | os.PathLike[str], *, threads: int | None = None, precision: str = "fp32"
    ) -> None:
        file = resolve_ir_path(path)
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ParameterError(
                f"threads must be {describe_integer(1)} or None, got {threads!r}", param="threads"
            )
        self.precision = check_choice("precision", precision, tuple(_PRECISION_HINTS))
        _check_ir_header(file)
        openvino = import_openvino()
        self._core = openvino.Core()
        try:
            self._model = self._core.read_model(str(file))
        except Exception as error:  # OpenVINO raises its own RuntimeError kinds for a file it cannot read
            detail = " ".join(str(error).split())
            raise ExportError(
                f"{file} is not an OpenVINO IR that OpenVINO can read: {detail[:300]}"
            ) from None
        if len(self._model.inputs) != 1 or len(self._model.outputs) < 1:
            raise ExportError(
                f"{file} has {len(self._model.inputs)} inputs; sepconv runs models with one image input"
            )
        self.path = file
        self.threads = threads or torch.get_num_threads()
        self.metadata: dict[str, Any] = _read_metadata(self._model, file)
        self._compiled = self._compile(self._model)
        self._static: dict[int, Any] = {}

    @property
    def inference_precision(self) -> str:
        """The float precision OpenVINO actually runs (``"fp32"`` or ``"bf16"``), which may differ from
        the requested :attr:`precision` where the CPU has no native bf16."""
        hint = str(self._compiled.get_property("INFERENCE_PRECISION_HINT"))
        return "bf16" if "bf16" in hint or "bfloat16" in hint else "fp32"

    def _compile(self, model: Any) -> Any:
        config = {
            "INFERENCE_NUM_THREADS": self.threads,
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": _PRECISION_HINTS[self.precision],
        }
        try:
            with signal_stack_kept():
                return self._core.compile_model(model, "CPU", config)
        except Exception as error:
            detail = " ".join(str(error).split())
            raise ExportError(f"OpenVINO cannot compile {self.path}: {detail[:300]}") from None

    def _compiled_for(self, shape: tuple[int, ...]) -> Any:
        """A compile for this exact input shape (a fixed batch runs faster), or the dynamic one."""
        batch = shape[0]
        if batch in self._static:
            return self._static[batch]
        if len(self._static) >= _STATIC_COMPILES or not self._model.inputs[0].get_partial_shape().is_dynamic:
            return self._compiled
        static = self._model.clone()
        static.reshape({0: list(shape)})
        self._static[batch] = self._compile(static)
        return self._static[batch]

    def _graph_input_size(self) -> tuple[int, ...] | None:
        shape = self._model.inputs[0].get_partial_shape()
        if shape.rank.is_dynamic or len(shape) != 4 or any(dim.is_dynamic for dim in list(shape)[1:]):
            return None
        return tuple(int(dim.get_length()) for dim in list(shape)[1:])

    def _run(self, array: np.ndarray) -> np.ndarray:
        compiled = self._compiled_for(array.shape)
        return np.array(compiled(array)[compiled.outputs[0]], dtype=np.float32, copy=True)

    def bind(self, images: torch.Tensor | np.ndarray) -> Callable[[], Any]:
        """A call without arguments that runs the model on ``images`` and returns its first output.

        The images are converted (float32, contiguous, numpy) once, here, and the model is compiled for
        their exact shape, as a deployment serving that batch size would; what is left in the call is
        OpenVINO's own inference, which is what timing it must measure.
        """
        if isinstance(images, torch.Tensor):
            array = images.detach().cpu().float().contiguous().numpy()
        else:
            array = np.ascontiguousarray(images, dtype=np.float32)
        request = self._compiled_for(array.shape).create_infer_request()
        request.set_input_tensor(0, _tensor(array))

        def call() -> np.ndarray:
            request.infer()
            return request.get_output_tensor(0).data

        return call

    def __repr__(self) -> str:
        return f"OpenVinoModel({str(self.path)!r}, threads={self.threads}, precision={self.precision!r})"


def _check_ir_header(file: Path) -> None:
    """Refuse a file that is not IR XML before OpenVINO tries every front end on it (TensorFlow's
    prints parse errors straight to stderr)."""
    with open(file, "rb") as stream:
        head = stream.read(4096)
    if re.search(rb"<net\s[^>]*\bversion=", head) is None:
        raise ExportError(f"{file} is not an OpenVINO IR: it has no <net version=...> element")


def _tensor(array: np.ndarray) -> Any:
    """An OpenVINO tensor sharing ``array``'s memory (no copy per call)."""
    openvino = import_openvino()
    return openvino.Tensor(array, shared_memory=True)


def _read_metadata(model: Any, file: Path) -> dict[str, Any]:
    """The IR's sepconv metadata, bounded and checked against its graph; ``{}`` for an IR from elsewhere."""
    text = model.get_rt_info([METADATA_KEY]).astype(str) if model.has_rt_info([METADATA_KEY]) else None
    return checked_metadata(text, file, _dims(model.inputs[0]), _dims(model.outputs[0]))


def _dims(port: Any) -> list[int | None]:
    """A port's shape, None for each dynamic dimension ([] for a dynamic rank)."""
    shape = port.get_partial_shape()
    if shape.rank.is_dynamic:
        return []
    return [None if dim.is_dynamic else int(dim.get_length()) for dim in list(shape)]
