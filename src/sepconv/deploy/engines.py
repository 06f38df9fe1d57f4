"""The engines a model is deployed to and measured on: a registry, one row per engine.

An :class:`Engine` is what ``sepconv optimize --engine`` names and what the per-layer cost model
(:mod:`sepconv.optimize.costs`) times each candidate layer in: ONNX Runtime in float32 (``ort``) or
static int8 (``ort-int8``), or PyTorch eager in channels_last (``torch``). An engine knows its version
(part of the keys of measured costs, so that an upgrade re-measures), why it cannot run here (a
missing package), how to run one module on a bound input with a given number of threads
(:meth:`Engine.prepare`: the call the timer repeats), and how to write the deployable file of a whole
model (:meth:`Engine.deploy`). Adding an engine is adding a row to :data:`ENGINES`.

What :meth:`Engine.prepare` times is what the engine runs: for ONNX Runtime, each module's own ONNX
graph (:func:`sepconv.deploy.onnx_export.export_layers`, the same operators the whole-model export
gives that layer), quantized for int8 as :func:`sepconv.deploy.quantize_onnx` quantizes a model, in a
session with the settings of :class:`sepconv.deploy.OnnxModel` (idle threads parked). A layer timed
alone pays what the whole model pays once: a session call, and for int8 the quantization of its float
input and the dequantization of its output, which inside a quantized model happen only at its edges;
so summed per-layer times overstate a model's, most for small layers. The planner of
:mod:`sepconv.optimize` measures whole models end to end for that reason and corrects its sums.
"""

from __future__ import annotations

import copy
import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sepconv.checks import check_int, choice_error
from sepconv.deploy.execution_paths import ORT_SPIN_SECONDS, PathUnavailableError

__all__ = ["ENGINES", "Engine", "OnnxRuntimeEngine", "OpenVinoEngine", "TorchEngine", "get_engine"]

# A call without arguments that runs the bound module once (what the timer repeats).
BoundCall = Callable[[], object]

_ONNX_MODULES = ("onnx", "onnxruntime", "onnxscript")
# Random batches that fix the int8 scales of a layer timed alone: its speed, not its accuracy, matters.
_LAYER_CALIBRATION_BATCHES = 3


class Engine:
    """One way to deploy and run a model on this CPU; see the module's docstring.

    ``name`` is the stable key (``--engine``), ``description`` says it in words, ``precision`` is
    ``"fp32"`` or ``"int8"`` (the width of weights and activations that bytes moved count).
    """

    name: str = ""
    description: str = ""
    precision: str = "fp32"
    #: Seconds the engine's idle threads spin after a deployed call (:meth:`prepare_deployed`), which a
    #: timer must wait out before timing anything else (``time_interleaved``'s ``settle_after``).
    spin_seconds: float = 0.0

    @property
    def bytes_per_element(self) -> int:
        """Bytes of one weight or activation at this engine's precision (4 for fp32, 1 for int8)."""
        return 1 if self.precision == "int8" else 4

    def version(self) -> str:
        """The version of the software that runs the model (a changed version re-measures costs)."""
        raise NotImplementedError

    def unavailable_reason(self) -> str | None:
        """Why this engine cannot run here (a missing package), or None when it can."""
        return None

    def describe(self) -> dict[str, str]:
        """``name``, ``description``, ``version`` and ``precision``, JSON-able (reports, ``plan.json``)."""
        return {
            "name": self.name,
            "description": self.description,
            "version": self.version(),
            "precision": self.precision,
        }

    def prepare(self, module: nn.Module, example: torch.Tensor, folder: Path, *, threads: int) -> BoundCall:
        """A call without arguments running the eval-mode ``module`` on ``example`` in this engine.

        ``threads`` intra-op threads; ``folder`` holds whatever files the engine needs (keep it until
        the call is no longer used). ``module`` is not changed (the engine runs a copy).
        :class:`~sepconv.deploy.PathUnavailableError` when the module cannot run in this engine.
        """
        return self.prepare_many([module], [example], folder, threads=threads)[0]

    def prepare_many(
        self,
        modules: Sequence[nn.Module],
        examples: Sequence[torch.Tensor],
        folder: Path,
        *,
        threads: int,
    ) -> list[BoundCall]:
        """:meth:`prepare` for several modules at once (ONNX Runtime exports them in one exporter run)."""
        raise NotImplementedError

    def deploy(
        self,
        model: nn.Module,
        input_size: Sequence[int],
        folder: Path,
        *,
        calibration: Sequence[torch.Tensor] | None = None,
    ) -> Path:
        """Write the file that deploys ``model`` (input ``(C, H, W)``) in this engine into ``folder``
        (created if missing).

        ``calibration``: batches of real, normalized images, for an engine that calibrates (int8); without
        them random batches stand in, which is enough to time the file but not to trust its accuracy.
        Returns the path written.
        """
        raise NotImplementedError

    def prepare_deployed(
        self,
        model: nn.Module,
        example: torch.Tensor,
        folder: Path,
        *,
        threads: int,
        calibration: Sequence[torch.Tensor] | None = None,
    ) -> BoundCall:
        """A call without arguments running the whole ``model`` on ``example`` as this engine deploys it.

        Unlike :meth:`prepare`, the model goes through :meth:`deploy` (for ONNX Runtime: the verified,
        BatchNorm-folded export, int8 where the engine is), so the call times what a user would run.
        """
        raise NotImplementedError

    def model_from_onnx(
        self,
        onnx_file: Path,
        input_size: Sequence[int],
        folder: Path,
        *,
        threads: int,
        calibration: Sequence[torch.Tensor] | None = None,
    ) -> Any:
        """The verified ONNX file ``onnx_file`` as this engine deploys it: a :class:`~sepconv.deploy.OnnxModel`
        or :class:`~sepconv.deploy.OpenVinoModel` with the deployment's settings, ``threads`` threads.

        For callers that export once and run the file on several engines (``sepconv bench``, the demo).
        Files the engine derives (an int8 file, an IR) go into ``folder``; int8 calibrates on
        ``calibration`` batches (real, normalized images), else on random ones, which is enough to time
        the file but not to trust its accuracy. ``input_size`` is the model's ``(C, H, W)``.
        """
        raise PathUnavailableError(f"engine {self.name} does not run ONNX files")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def _eval_copy(module: nn.Module) -> nn.Module:
    return copy.deepcopy(module).float().eval()


class OnnxRuntimeEngine(Engine):
    """ONNX Runtime on the CPU, float32 or static int8 (QDQ, per-channel weights)."""

    def __init__(self, *, int8: bool) -> None:
        self.int8 = int8
        self.name = "ort-int8" if int8 else "ort"
        self.precision = "int8" if int8 else "fp32"
        self.description = (
            "ONNX Runtime, static int8 (QDQ, per-channel weights)" if int8 else "ONNX Runtime, float32"
        )
        self.spin_seconds = ORT_SPIN_SECONDS

    def version(self) -> str:
        """The installed onnxruntime's version."""
        import onnxruntime

        return str(onnxruntime.__version__)

    def unavailable_reason(self) -> str | None:
        """Which of onnx, onnxruntime, onnxscript is missing (with the pip command), or None."""
        missing = [name for name in _ONNX_MODULES if importlib.util.find_spec(name) is None]
        if missing:
            return f"{', '.join(missing)} not installed (pip install onnx onnxruntime onnxscript)"
        return None

    def prepare_many(
        self,
        modules: Sequence[nn.Module],
        examples: Sequence[torch.Tensor],
        folder: Path,
        *,
        threads: int,
    ) -> list[BoundCall]:
        """Export ``modules`` in one exporter run (quantized when int8) and bind each to its example.

        The ``.onnx`` files go into ``folder``; ``threads`` is ONNX Runtime's intra-op thread count.
        """
        import onnx

        from sepconv.deploy.onnx_export import export_layers
        from sepconv.deploy.quantize import random_calibration
        from sepconv.deploy.runtime import OnnxModel

        check_int("threads", threads, minimum=1)
        self._require()
        graphs = export_layers([_eval_copy(module) for module in modules], examples)
        calls = []
        for index, (graph, example) in enumerate(zip(graphs, examples, strict=True)):
            path = folder / f"layer-{index}.onnx"
            onnx.save(graph, str(path))
            if self.int8:
                batches = random_calibration(tuple(example.shape), batches=_LAYER_CALIBRATION_BATCHES)
                path = self._quantize(path, folder / f"layer-{index}-int8.onnx", batches)
            calls.append(OnnxModel(path, threads=threads).bind(example))
        return calls

    def deploy(
        self,
        model: nn.Module,
        input_size: Sequence[int],
        folder: Path,
        *,
        calibration: Sequence[torch.Tensor] | None = None,
    ) -> Path:
        """Export ``model`` to ``folder/model.onnx``; when int8, quantize it into ``model.int8.onnx`` too.

        The int8 calibration uses ``calibration`` batches, or random images without them. Returns the
        file to deploy.
        """
        from sepconv.deploy.onnx_export import export_onnx
        from sepconv.deploy.quantize import random_calibration

        self._require()
        folder.mkdir(parents=True, exist_ok=True)
        fp32 = Path(export_onnx(model, folder / "model.onnx", input_size=input_size).path)
        if not self.int8:
            return fp32
        batches = calibration if calibration is not None else random_calibration((8, *input_size))
        return self._quantize(fp32, folder / "model.int8.onnx", batches)

    def prepare_deployed(
        self,
        model: nn.Module,
        example: torch.Tensor,
        folder: Path,
        *,
        threads: int,
        calibration: Sequence[torch.Tensor] | None = None,
    ) -> BoundCall:
        """Deploy ``model`` as :meth:`deploy` does and bind the ONNX Runtime session to ``example``, with
        ONNX Runtime's default settings (idle threads spin for :attr:`spin_seconds` after each call)."""
        from sepconv.deploy.runtime import OnnxModel

        check_int("threads", threads, minimum=1)
        path = self.deploy(model, tuple(example.shape[1:]), folder, calibration=calibration)
        return OnnxModel(path, threads=threads, spin_wait=True).bind(example)

    def model_from_onnx(
        self,
        onnx_file: Path,
        input_size: Sequence[int],
        folder: Path,
        *,
        threads: int,
        calibration: Sequence[torch.Tensor] | None = None,
    ) -> Any:
        """An ONNX Runtime session with its default settings (idle threads spin), int8-quantized first
        for ``ort-int8`` (into ``folder/model.int8.onnx``); see :meth:`Engine.model_from_onnx`."""
        from sepconv.deploy.quantize import random_calibration
        from sepconv.deploy.runtime import OnnxModel

        self._require()
        path = onnx_file
        if self.int8:
            batches = calibration if calibration is not None else random_calibration((8, *input_size))
            folder.mkdir(parents=True, exist_ok=True)
            path = self._quantize(onnx_file, folder / "model.int8.onnx", batches)
        return OnnxModel(path, threads=threads, spin_wait=True)

    def _require(self) -> None:
        reason = self.unavailable_reason()
        if reason is not None:
            raise PathUnavailableError(f"engine {self.name} cannot run here: {reason}")

    @staticmethod
    def _quantize(fp32: Path, int8: Path, batches: Sequence[torch.Tensor]) -> Path:
        from sepconv.deploy.quantize import quantize_onnx

        try:
            return quantize_onnx(fp32, int8, batches)
        except ValueError as error:
            raise PathUnavailableError(f"int8 quantization failed: {error}") from error


class TorchEngine(Engine):
    """PyTorch eager, channels_last (NHWC) weights and input, under ``torch.no_grad``."""

    name = "torch"
    description = "PyTorch eager, channels_last, float32"
    precision = "fp32"

    def version(self) -> str:
        """The installed torch's version."""
        return str(torch.__version__)

    def prepare_many(
        self,
        modules: Sequence[nn.Module],
        examples: Sequence[torch.Tensor],
        folder: Path,
        *,
        threads: int,
    ) -> list[BoundCall]:
        """Bind each module (a channels_last eval copy) to its example: one call per module.

        Raises:
            ValueError: ``modules`` and ``examples`` differ in length.
        """
        check_int("threads", threads, minimum=1)
        if len(modules) != len(examples):
            raise ValueError(f"give one example per module: {len(modules)} modules, {len(examples)} examples")
        return [_channels_last_call(module, example, threads) for module, example in zip(modules, examples)]

    def deploy(
        self,
        model: nn.Module,
        input_size: Sequence[int],
        folder: Path,
        *,
        calibration: Sequence[torch.Tensor] | None = None,
    ) -> Path:
        """Save ``model`` as ``folder/model.safetensors`` (weights and recipe), the file PyTorch deploys."""
        from sepconv.convert.replay import save_model

        return save_model(model, folder / "model.safetensors")

    def prepare_deployed(
        self,
        model: nn.Module,
        example: torch.Tensor,
        folder: Path,
        *,
        threads: int,
        calibration: Sequence[torch.Tensor] | None = None,
    ) -> BoundCall:
        """Bind ``model`` itself (a channels_last eval copy) to ``example``; the file saved has these weights."""
        # The file a deployment loads holds these very weights; running the module itself spares a
        # model without a recipe (built by hand, not by create_model) the file it could not write.
        check_int("threads", threads, minimum=1)
        return _channels_last_call(model, example, threads)


class OpenVinoEngine(Engine):
    """OpenVINO on the CPU: float32, bf16 (only where the CPU has native bf16) or int8 through NNCF.

    Models go through the verified ONNX export and OpenVINO's ONNX front end
    (:func:`sepconv.deploy.export_openvino`) and are compiled for latency, one stream, at the batch
    size of the input they are bound to (as a deployment serving that batch compiles them).
    """

    def __init__(self, precision: str) -> None:
        self.precision = precision
        self.name = "openvino" if precision == "fp32" else f"openvino-{precision}"
        self.description = {
            "fp32": "OpenVINO, float32",
            "bf16": "OpenVINO, bf16 inference (native bf16 CPUs only)",
            "int8": "OpenVINO, int8 (NNCF post-training quantization)",
        }[precision]

    @property
    def bytes_per_element(self) -> int:
        """Bytes of one weight or activation at this engine's precision (2 for bf16)."""
        return {"fp32": 4, "bf16": 2, "int8": 1}[self.precision]

    def version(self) -> str:
        """The installed OpenVINO's version (and NNCF's, for int8)."""
        from sepconv.deploy.openvino_runtime import import_nncf, import_openvino

        version = str(import_openvino().get_version()).split("-")[0]
        if self.precision == "int8":
            version += f"+nncf-{import_nncf().__version__}"
        return version

    def unavailable_reason(self) -> str | None:
        """A missing package (with the pip command), or for bf16 a CPU without native bf16; None else."""
        from sepconv.deploy.openvino_runtime import openvino_unavailable_reason

        reason = openvino_unavailable_reason(int8=self.precision == "int8")
        if reason is None and self.precision == "bf16":
            from sepconv.machine import cpu_has_native_bf16

            if not cpu_has_native_bf16():
                reason = "this CPU has no native bf16 (no AVX512-BF16 or AMX); OpenVINO would run float32"
        return reason

    def prepare_many(
        self,
        modules: Sequence[nn.Module],
        examples: Sequence[torch.Tensor],
        folder: Path,
        *,
        threads: int,
    ) -> list[BoundCall]:
        """Export ``modules`` in one exporter run, convert each to an IR (int8: random calibration) and
        bind it to its example."""
        import onnx

        from sepconv.deploy.onnx_export import export_layers
        from sepconv.deploy.quantize import random_calibration

        check_int("threads", threads, minimum=1)
        self._require()
        graphs = export_layers([_eval_copy(module) for module in modules], examples)
        calls = []
        for index, (graph, example) in enumerate(zip(graphs, examples, strict=True)):
            onnx_file = folder / f"layer-{index}.onnx"
            onnx.save(graph, str(onnx_file))
            batches = None
            if self.precision == "int8":
                batches = random_calibration(tuple(example.shape), batches=_LAYER_CALIBRATION_BATCHES)
            xml = self._ir(onnx_file, folder / f"layer-{index}", batches)
            calls.append(self._model(xml, threads).bind(example))
        return calls

    def deploy(
        self,
        model: nn.Module,
        input_size: Sequence[int],
        folder: Path,
        *,
        calibration: Sequence[torch.Tensor] | None = None,
    ) -> Path:
        """Export ``model`` as ``folder/model.xml``, verified (and checked in bf16 for the bf16 engine);
        for int8 also ``model.int8.xml``, calibrated on ``calibration`` (random images without).

        Returns the IR to deploy.
        """
        from sepconv.deploy.openvino_export import export_openvino
        from sepconv.deploy.quantize import random_calibration

        self._require()
        int8_batches = None
        if self.precision == "int8":
            int8_batches = calibration if calibration is not None else random_calibration((8, *input_size))
        report = export_openvino(
            model,
            folder,
            input_size=input_size,
            bf16=self.precision == "bf16",
            int8_calibration=int8_batches,
        )
        return Path(report.int8["path"]) if report.int8 else report.path

    def prepare_deployed(
        self,
        model: nn.Module,
        example: torch.Tensor,
        folder: Path,
        *,
        threads: int,
        calibration: Sequence[torch.Tensor] | None = None,
    ) -> BoundCall:
        """Deploy ``model`` as :meth:`deploy` does and bind the compiled IR to ``example``."""
        check_int("threads", threads, minimum=1)
        path = self.deploy(model, tuple(example.shape[1:]), folder, calibration=calibration)
        call: BoundCall = self._model(path, threads).bind(example)
        return call

    def model_from_onnx(
        self,
        onnx_file: Path,
        input_size: Sequence[int],
        folder: Path,
        *,
        threads: int,
        calibration: Sequence[torch.Tensor] | None = None,
    ) -> Any:
        """The IR of ``onnx_file`` (``folder/model.xml``; ``model.int8.xml`` for int8) compiled for latency;
        see :meth:`Engine.model_from_onnx`."""
        from sepconv.deploy.openvino_export import openvino_model_from_onnx

        self._require()
        try:
            return openvino_model_from_onnx(
                onnx_file,
                input_size,
                folder,
                precision=self.precision,
                threads=threads,
                calibration=calibration,
                calibration_batches=_LAYER_CALIBRATION_BATCHES,
            )
        except (ValueError, RuntimeError) as error:  # NNCF's and OpenVINO's refusals
            raise PathUnavailableError(f"engine {self.name} failed: {error}") from error

    def _model(self, xml: Path, threads: int) -> Any:
        from sepconv.deploy.openvino_runtime import OpenVinoModel

        return OpenVinoModel(xml, threads=threads, precision="bf16" if self.precision == "bf16" else "fp32")

    @staticmethod
    def _ir(onnx_file: Path, stem: Path, calibration: Sequence[torch.Tensor] | None) -> Path:
        """The IR of ``onnx_file`` at ``stem.xml``, quantized to int8 when ``calibration`` is given."""
        from sepconv.deploy.openvino_export import ir_from_onnx, quantize_ir

        xml = ir_from_onnx(onnx_file, stem.with_suffix(".xml"))
        if calibration is None:
            return xml
        try:
            return quantize_ir(xml, stem.with_name(stem.name + ".int8.xml"), calibration)
        except (ValueError, RuntimeError) as error:
            raise PathUnavailableError(f"int8 quantization failed: {error}") from error

    def _require(self) -> None:
        reason = self.unavailable_reason()
        if reason is not None:
            raise PathUnavailableError(f"engine {self.name} cannot run here: {reason}")


def _channels_last_call(module: nn.Module, example: torch.Tensor, threads: int) -> BoundCall:
    """``module`` (a channels_last eval copy) on ``example``, with ``threads`` torch threads for the call."""
    model = _eval_copy(module).to(memory_format=torch.channels_last)
    images = example.float()
    if images.ndim == 4:
        images = images.contiguous(memory_format=torch.channels_last)

    def call() -> Any:
        previous = torch.get_num_threads()
        if previous != threads:
            torch.set_num_threads(threads)
        try:
            with torch.no_grad():
                return model(images)
        finally:
            if previous != threads:
                torch.set_num_threads(previous)

    return call


#: Every engine by name (``ort``, ``ort-int8``, ``torch``, ``openvino``, ``openvino-bf16``, ``openvino-int8``): what ``--engine`` and ``--measure`` choose from.
ENGINES: dict[str, Engine] = {
    engine.name: engine
    for engine in (
        OnnxRuntimeEngine(int8=False),
        OnnxRuntimeEngine(int8=True),
        TorchEngine(),
        OpenVinoEngine("fp32"),
        OpenVinoEngine("bf16"),
        OpenVinoEngine("int8"),
    )
}


def get_engine(name: str) -> Engine:
    """The engine registered as ``name``; a :class:`~sepconv.errors.ParameterError` listing the names else.

    >>> get_engine("ort").precision
    'fp32'
    """
    engine = ENGINES.get(name) if isinstance(name, str) else None
    if engine is None:
        raise choice_error("engine", name, tuple(ENGINES))
    return engine
