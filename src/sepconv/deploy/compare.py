"""Two models side by side: cost on paper (parameters, MACs, receptive field) against speed measured here.

:func:`compare_models` answers "how much of the theoretical saving became real?": it puts A's MACs over
B's (``mac_ratio``) next to A's measured latency over B's (``speedup``), for a forward pass (eval mode,
no gradients) and for a forward+backward pass (train mode, loss = sum of the outputs). Both models are
timed in one process, interleaved (A, B, A, B, ... after a warm-up) by :mod:`sepconv.timing`, so a
change in the machine's load hits both alike; each latency is the median over rounds.

When A and B come from the same architecture (the same ``sepconv.models.model_spec``: a model and its
``fold_batchnorm`` or its conversion), their outputs are compared on real images too: the relative
error of the logits and the fraction of images whose top-1 class agrees. Otherwise that comparison
is ``None`` and ``agreement_reason`` says why.

A speedup is only reported as one when it stands out of the noise: each latency also carries its
spread (the interquartile range of its rounds), and when the medians of A and B differ by no more
than the larger spread (:func:`within_noise`) the table says "within noise" instead.
"""

from __future__ import annotations

import copy
import math
import platform
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sepconv.checks import check_image_size, check_positive
from sepconv.data.splits import DataSplits
from sepconv.deploy.defaults import AGREEMENT_SAMPLES, DEFAULT_BATCH_SIZE, DEFAULT_REPEATS
from sepconv.errors import ParameterError
from sepconv.formatting import Table, format_ms, format_percent, format_ratio, ratio_of, short_count

# latency_spread_ms and within_noise are the timer's; compare re-exports them, where they were first.
from sepconv.timing import TimingPlan, latency_spread_ms, time_interleaved, within_noise

__all__ = [
    "AGREEMENT_SAMPLES",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_REPEATS",
    "Agreement",
    "Comparison",
    "ModelMeasurement",
    "agreement_images",
    "compare_models",
    "latency_spread_ms",
    "memory_estimate_bytes",
    "output_agreement",
    "within_noise",
]

DEFAULT_WARMUP_CALLS = 3
# A timed block repeats a fast call until it lasts this long, so a sub-millisecond forward is not
# timed at the resolution of one call (benchmark_paths' default block length).
MIN_BLOCK_SECONDS = 0.02
# The agreement images (AGREEMENT_SAMPLES of them by default) run in batches of this many.
AGREEMENT_BATCH = 32

Number = int | float


@dataclass(frozen=True)
class ModelMeasurement:
    """One side of a :class:`Comparison`: costs per image and median latencies at the batch size.

    The spreads are the interquartile ranges of the rounds (:func:`latency_spread_ms`), None when a
    single round measured none.
    """

    name: str
    params: int
    macs: int
    receptive_field: tuple[Number, ...] | None
    forward_ms: float
    forward_backward_ms: float
    forward_spread_ms: float | None = None
    forward_backward_spread_ms: float | None = None
    #: The forward pass deployed on :attr:`Comparison.engine` (None when no engine was asked for).
    deployed_ms: float | None = None
    deployed_spread_ms: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of these fields; the latencies grouped by pass (forward, forward + backward,
        and ``deployed`` when an engine was asked for)."""
        latency = {"forward": self.forward_ms, "forward_backward": self.forward_backward_ms}
        spread = {"forward": self.forward_spread_ms, "forward_backward": self.forward_backward_spread_ms}
        if self.deployed_ms is not None:
            latency["deployed"] = self.deployed_ms
            spread["deployed"] = self.deployed_spread_ms
        return {
            "name": self.name,
            "params": self.params,
            "macs": self.macs,
            "receptive_field": None if self.receptive_field is None else list(self.receptive_field),
            "latency_ms": latency,
            "latency_spread_ms": spread,
        }


@dataclass(frozen=True)
class Agreement:
    """How closely B's outputs follow A's on the same images (eval mode).

    ``relative_error`` is ``||b - a|| / ||a||`` (Frobenius, over the whole batch of outputs);
    ``top1_agreement`` the fraction of images whose argmax over classes is the same; ``inputs`` says
    what the images were (``"mnist5k test images"``, ``"random normal"``).
    """

    relative_error: float
    top1_agreement: float
    samples: int
    inputs: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of these fields, as ``sepconv compare --json`` prints them."""
        return {
            "relative_error": self.relative_error,
            "top1_agreement": self.top1_agreement,
            "samples": self.samples,
            "inputs": self.inputs,
        }


@dataclass(frozen=True)
class Comparison:
    """What :func:`compare_models` measured; ``speedup`` and ``mac_ratio`` are A's value over B's."""

    a: ModelMeasurement
    b: ModelMeasurement
    agreement: Agreement | None
    agreement_reason: str | None
    input_size: tuple[int, int, int]
    batch_size: int
    repeats: int
    threads: int
    #: The deployment engine both models were also timed on (its ``describe()``), or None.
    engine: dict[str, str] | None = None

    @property
    def speedup(self) -> dict[str, float]:
        """A's median latency over B's, per phase (above 1, B is faster)."""
        speedup = {
            "forward": self.a.forward_ms / self.b.forward_ms,
            "forward_backward": self.a.forward_backward_ms / self.b.forward_backward_ms,
        }
        if self.a.deployed_ms is not None and self.b.deployed_ms is not None:
            speedup["deployed"] = self.a.deployed_ms / self.b.deployed_ms
        return speedup

    @property
    def speedup_within_noise(self) -> dict[str, bool | None]:
        """Per phase, whether A and B differ by no more than their spread (None when it was not measured)."""
        a, b = self.a, self.b
        return {
            "forward": within_noise(a.forward_ms, a.forward_spread_ms, b.forward_ms, b.forward_spread_ms),
            "forward_backward": within_noise(
                a.forward_backward_ms,
                a.forward_backward_spread_ms,
                b.forward_backward_ms,
                b.forward_backward_spread_ms,
            ),
            **(
                {
                    "deployed": within_noise(
                        a.deployed_ms, a.deployed_spread_ms, b.deployed_ms, b.deployed_spread_ms
                    )
                }
                if a.deployed_ms is not None and b.deployed_ms is not None
                else {}
            ),
        }

    @property
    def mac_ratio(self) -> float | None:
        """A's MACs over B's, the speedup the MAC count promises (None when B counts no MACs)."""
        return self.a.macs / self.b.macs if self.b.macs else None

    def to_dict(self) -> dict[str, Any]:
        """The JSON document ``sepconv compare --json`` prints: both models, the speed-up, the agreement."""
        return {
            "a": self.a.to_dict(),
            "b": self.b.to_dict(),
            "speedup": self.speedup,
            "speedup_within_noise": self.speedup_within_noise,
            "mac_ratio": self.mac_ratio,
            "agreement": None if self.agreement is None else self.agreement.to_dict(),
            "agreement_reason": self.agreement_reason,
            "input_size": list(self.input_size),
            "batch_size": self.batch_size,
            "repeats": self.repeats,
            "threads": self.threads,
            "engine": self.engine,
        }

    def timing_note(self) -> str:
        """One line: where and how the latencies were measured."""
        return (
            f"measured on this machine ({platform.machine() or 'unknown CPU'}, {self.threads} torch threads), "
            f"input {'x'.join(map(str, self.input_size))}, batch {self.batch_size}: latencies are medians of "
            f"{self.repeats} interleaved rounds (A, B, A, B, ...) after warm-up; A / B of a latency is the "
            "realized speedup, of MACs the promised one; "
            + (
                "'within noise': the medians differ by no more than the larger interquartile range of the rounds"
                if self.repeats > 1
                else "one round measures no spread, so these speedups are not tested against noise"
            )
        )

    def agreement_line(self) -> str:
        """One line: the output agreement, or why there is none."""
        if self.agreement is None:
            return f"output agreement: not measured ({self.agreement_reason})"
        agreement = self.agreement
        return (
            f"output agreement on {agreement.samples} {agreement.inputs}: logits relative error "
            f"{agreement.relative_error:.2e}, top-1 agreement {format_percent(agreement.top1_agreement)}"
        )

    def table_rows(self) -> list[list[str]]:
        """Header and rows of the side-by-side table: quantity, A, B, A / B."""
        a, b = self.a, self.b
        speedup, noise = self.speedup, self.speedup_within_noise
        deployed = []
        if a.deployed_ms is not None and b.deployed_ms is not None and self.engine is not None:
            deployed = [
                [
                    f"deployed ms ({self.engine['name']})",
                    format_ms(a.deployed_ms),
                    format_ms(b.deployed_ms),
                    _speedup(speedup, noise, "deployed"),
                ]
            ]
        return [
            ["", f"A: {a.name}", f"B: {b.name}", "A / B"],
            ["parameters", short_count(a.params), short_count(b.params), ratio_of(a.params, b.params)],
            ["MACs per image", short_count(a.macs), short_count(b.macs), ratio_of(a.macs, b.macs)],
            ["receptive field (px)", _field(a.receptive_field), _field(b.receptive_field), ""],
            [
                "forward ms",
                format_ms(a.forward_ms),
                format_ms(b.forward_ms),
                _speedup(speedup, noise, "forward"),
            ],
            [
                "forward+backward ms",
                format_ms(a.forward_backward_ms),
                format_ms(b.forward_backward_ms),
                _speedup(speedup, noise, "forward_backward"),
            ],
            *deployed,
        ]

    def table(self) -> Table:
        """The side-by-side table (:meth:`table_rows`), as every report's table is drawn."""
        header, *rows = self.table_rows()
        return Table(header, rows)

    def format_table(self) -> str:
        """The plain-text report: aligned table, agreement line, timing note."""
        return "\n".join([self.table().to_text(), "", self.agreement_line(), self.timing_note()]) + "\n"

    def to_rich(self) -> list[Any]:
        """Rich renderables for a terminal: the table, then the agreement line and the timing note."""
        from rich.text import Text

        return [self.table().to_rich(), Text(self.agreement_line()), Text(self.timing_note(), style="dim")]


def _speedup(speedup: dict[str, float], noise: dict[str, bool | None], phase: str) -> str:
    ratio = format_ratio(speedup[phase])
    return f"within noise ({ratio})" if noise[phase] else ratio


def _field(receptive_field: tuple[Number, ...] | None) -> str:
    if receptive_field is None:
        return "unknown"
    return "x".join(str(size) for size in receptive_field)


def compare_models(
    model_a: nn.Module,
    model_b: nn.Module,
    *,
    names: Sequence[str] | None = None,
    input_size: Sequence[int] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    repeats: int = DEFAULT_REPEATS,
    warmup_calls: int = DEFAULT_WARMUP_CALLS,
    dataset: DataSplits | None = None,
    images: torch.Tensor | None = None,
    samples: int = AGREEMENT_SAMPLES,
    engine: str | None = None,
) -> Comparison:
    """Parameters, MACs and receptive field of A and B, their latencies measured interleaved, and agreement.

    ``input_size`` is one image's (channels, height, width); by default the data set's image size when
    ``dataset`` is given, else the models' registered size (they must agree). The agreement images are
    ``images`` when given, else up to ``samples`` test images of ``dataset``, else of the embedded
    mnist5k for 1x28x28 inputs, else random normal ones (see :func:`agreement_images`). Both models run
    on the CPU in float32, on copies: the models given are not changed. Before any image is made, a
    lower bound of the memory needed (:func:`memory_estimate_bytes`) is checked against the memory
    available: beyond it a :class:`~sepconv.machine.MemoryLimitError` (a ValueError) names
    ``input_size``, ``samples`` or ``batch_size``. ``engine`` (a name of :data:`sepconv.deploy.ENGINES`)
    also times each model's forward pass deployed on that engine, as ``sepconv export`` writes it and
    the engine runs it, in the same rounds.

    >>> from sepconv.models import create_model
    >>> from sepconv.convert import fold_batchnorm
    >>> model = create_model("standard_cnn", widths=(8, 8, 16, 16))
    >>> result = compare_models(model, fold_batchnorm(model), repeats=1, warmup_calls=1, samples=8)
    >>> result.agreement.top1_agreement, result.agreement.inputs
    (1.0, 'mnist5k test images')
    """
    label_a, label_b = _names(model_a, model_b, names)
    deployment = None
    if engine is not None:
        from sepconv.deploy.engines import get_engine

        deployment = get_engine(engine)
        reason = deployment.unavailable_reason()
        if reason is not None:
            raise ParameterError(f"engine {engine} cannot run here: {reason}", param="engine")
    for name, value in (("batch_size", batch_size), ("repeats", repeats), ("warmup_calls", warmup_calls)):
        check_positive(name, value)
    check_positive("samples", samples)
    if images is not None and dataset is not None:
        raise ValueError("give images or dataset for the agreement, not both")
    size = _input_size(model_a, model_b, (label_a, label_b), input_size, dataset)
    if images is not None and (images.ndim != 4 or tuple(images.shape[1:]) != size):
        raise ValueError(
            f"images must be a batch of {_size_text(size)} images (N, C, H, W), got {tuple(images.shape)}"
        )
    reference_a = copy.deepcopy(model_a).cpu().float().eval()
    reference_b = copy.deepcopy(model_b).cpu().float().eval()
    random_images = samples if images is None and dataset is None and size != (1, 28, 28) else 0
    _require_memory((reference_a, reference_b), size, batch_size, random_images)
    summary_a = _summary(reference_a, size, label_a)
    summary_b = _summary(reference_b, size, label_b)

    reason = _origin_mismatch(model_a, model_b)
    agreement = None
    if reason is None:
        if images is None:
            images, description = agreement_images(size, dataset=dataset, samples=samples)
        else:
            description = "given images"
        agreement, reason = output_agreement(reference_a, reference_b, images, inputs=description)

    with tempfile.TemporaryDirectory(prefix="sepconv-compare-") as folder:
        latencies = _measure_latencies(
            {"a": reference_a, "b": reference_b},
            size,
            batch_size,
            repeats,
            warmup_calls,
            deployment,
            Path(folder),
        )
    measurements = [
        ModelMeasurement(
            name=label,
            params=summary.total_params,
            macs=summary.total_macs,
            receptive_field=summary.receptive_field,
            forward_ms=latencies[key, "forward"][0],
            forward_backward_ms=latencies[key, "forward_backward"][0],
            forward_spread_ms=latencies[key, "forward"][1],
            forward_backward_spread_ms=latencies[key, "forward_backward"][1],
            deployed_ms=latencies[key, "deployed"][0] if deployment is not None else None,
            deployed_spread_ms=latencies[key, "deployed"][1] if deployment is not None else None,
        )
        for key, label, summary in (("a", label_a, summary_a), ("b", label_b, summary_b))
    ]
    return Comparison(
        a=measurements[0],
        b=measurements[1],
        agreement=agreement,
        agreement_reason=reason,
        input_size=size,
        batch_size=batch_size,
        repeats=repeats,
        threads=torch.get_num_threads(),
        engine=None if deployment is None else deployment.describe(),
    )


def memory_estimate_bytes(
    models: Sequence[nn.Module], input_size: Sequence[int], batch_size: int, random_images: int = 0
) -> int:
    """A lower bound, in bytes, of the memory :func:`compare_models` needs at this input and batch size.

    It counts the float32 timing batch and the ``random_images`` agreement images (both alive while
    the models are timed), and the largest module call of either model at ``batch_size``
    (:func:`sepconv.analysis.memory.largest_call_bytes`). Weights, the other activations and the
    tensors a backward pass keeps are left out.
    """
    from sepconv.analysis.memory import largest_call_bytes

    image_bytes = 4 * math.prod(input_size)
    largest = max(
        largest_call_bytes(model, (batch_size, *input_size), dtype=torch.float32) for model in models
    )
    return image_bytes * (batch_size + random_images) + largest


def _require_memory(
    models: Sequence[nn.Module], size: tuple[int, ...], batch_size: int, random_images: int
) -> None:
    """Refuse, before any image is made, an input size, sample count or batch size that cannot fit."""
    from sepconv.machine import require_memory

    text = ",".join(map(str, size))
    # Smallest first, so that the line names the value to blame: one image, then the samples, then the batch.
    what = "the images and the activations of the largest layer"
    require_memory("input_size", text, memory_estimate_bytes(models, size, 1), what=what)
    require_memory("samples", random_images, memory_estimate_bytes(models, size, 1, random_images), what=what)
    needed = memory_estimate_bytes(models, size, batch_size, random_images)
    require_memory("batch_size", batch_size, needed, what=what)


def _names(model_a: nn.Module, model_b: nn.Module, names: Sequence[str] | None) -> tuple[str, str]:
    if names is None:
        return _default_name(model_a), _default_name(model_b)
    if isinstance(names, str) or len(names) != 2 or not all(isinstance(name, str) for name in names):
        raise ValueError(f"names must be two strings (for A and B), got {names!r}")
    return names[0], names[1]


def _default_name(model: nn.Module) -> str:
    from sepconv.models import model_spec

    spec = model_spec(model)
    return spec["name"] if spec is not None else type(model).__name__


def _input_size(
    model_a: nn.Module,
    model_b: nn.Module,
    names: tuple[str, str],
    input_size: Sequence[int] | None,
    dataset: DataSplits | None,
) -> tuple[int, int, int]:
    """The one image size both models run on: given, the data set's, or the models' common default."""
    if input_size is not None:
        return check_image_size("input_size", input_size)
    if dataset is not None:
        return (dataset.in_channels, *dataset.image_size)
    size_a, size_b = _default_image_size(model_a, names[0]), _default_image_size(model_b, names[1])
    if size_a != size_b:
        raise ValueError(
            f"A ({names[0]}) takes {_size_text(size_a)} images and B ({names[1]}) takes "
            f"{_size_text(size_b)} by default; give an input size that fits both"
        )
    return size_a


def _default_image_size(model: nn.Module, name: str) -> tuple[int, int, int]:
    """The model's registered (channels, height, width), or a ValueError naming ``name``."""
    from sepconv.models import default_input_size, model_spec

    if model_spec(model) is None:
        raise ValueError(f"{name} was not built by sepconv.models.create_model: give input_size explicitly")
    return default_input_size(model)


def _size_text(size: Sequence[int]) -> str:
    return "x".join(map(str, size))


def _summary(model: nn.Module, size: tuple[int, int, int], name: str) -> Any:
    from sepconv.analysis import ModelInputError, summarize

    try:
        return summarize(model, (1, *size))
    except ModelInputError as error:
        raise ValueError(f"{name} cannot run on {_size_text(size)} inputs: {error}") from error


def _origin_mismatch(model_a: nn.Module, model_b: nn.Module) -> str | None:
    """Why A and B do not share an architecture origin (same model_spec name and kwargs); None if they do."""
    from sepconv.models import model_spec

    spec_a, spec_b = model_spec(model_a), model_spec(model_b)
    if spec_a is None or spec_b is None:
        which = "A" if spec_a is None else "B"
        return f"{which} was not built by sepconv.models.create_model, so its origin is unknown"
    if (spec_a["name"], spec_a["kwargs"]) != (spec_b["name"], spec_b["kwargs"]):
        return f"different architectures: A is {_spec_text(spec_a)}, B is {_spec_text(spec_b)}"
    return None


def _spec_text(spec: dict[str, Any]) -> str:
    arguments = ", ".join(f"{key}={value!r}" for key, value in sorted(spec["kwargs"].items()))
    return f"{spec['name']}({arguments})"


def agreement_images(
    input_size: Sequence[int], *, dataset: DataSplits | None = None, samples: int = AGREEMENT_SAMPLES
) -> tuple[torch.Tensor, str]:
    """Up to ``samples`` images to compare outputs on, and what they are.

    The test split of ``dataset`` when given (its images must have ``input_size``), else the embedded
    mnist5k test split for 1x28x28 inputs (no download), else standard normal noise from a fixed seed.
    """
    size = tuple(input_size)
    if dataset is None and size == (1, 28, 28):
        from sepconv.data import load_dataset

        dataset = load_dataset("mnist5k")
    if dataset is not None:
        data_size = (dataset.in_channels, *dataset.image_size)
        if data_size != size:
            raise ValueError(
                f"data set {dataset.name}'s images are {_size_text(data_size)}, the input size is {_size_text(size)}"
            )
        split = dataset.test if len(dataset.test) else dataset.val  # type: ignore[arg-type]
        count = min(samples, len(split))  # type: ignore[arg-type]
        if count == 0:
            raise ValueError(f"data set {dataset.name} has no test or validation images")
        return torch.stack([split[index][0] for index in range(count)]), f"{dataset.name} test images"
    generator = torch.Generator().manual_seed(0)
    return torch.randn(samples, *size, generator=generator), "random normal"


def output_agreement(
    model_a: nn.Module, model_b: nn.Module, images: torch.Tensor, *, inputs: str = "given images"
) -> tuple[Agreement | None, str | None]:
    """Relative error and top-1 agreement of B's outputs against A's on ``images`` (eval, no gradients).

    Returns ``(Agreement, None)``, or ``(None, reason)`` when the outputs cannot be compared (not one
    tensor, different shapes). The models are put in eval mode.
    """
    model_a.eval()
    model_b.eval()
    with torch.no_grad():
        outputs_a, outputs_b = [], []
        for batch in torch.split(images.float(), AGREEMENT_BATCH):
            outputs_a.append(model_a(batch))
            outputs_b.append(model_b(batch))
    if not all(isinstance(output, torch.Tensor) for output in outputs_a + outputs_b):
        return None, "the models' outputs are not single tensors"
    logits_a, logits_b = torch.cat(outputs_a).float(), torch.cat(outputs_b).float()
    if logits_a.shape != logits_b.shape:
        return None, f"output shapes differ: A {tuple(logits_a.shape)}, B {tuple(logits_b.shape)}"
    if logits_a.ndim < 2:
        return None, f"outputs of shape {tuple(logits_a.shape)} have no class axis (N, classes, ...)"
    norm_a = float(torch.linalg.vector_norm(logits_a))
    if norm_a == 0:
        return None, "A's outputs are all zero, so a relative error is undefined"
    relative_error = float(torch.linalg.vector_norm(logits_b - logits_a)) / norm_a
    top1 = float((logits_a.argmax(dim=1) == logits_b.argmax(dim=1)).float().mean())
    return Agreement(relative_error, top1, samples=len(images), inputs=inputs), None


def _measure_latencies(
    models: dict[str, nn.Module],
    size: tuple[int, int, int],
    batch_size: int,
    repeats: int,
    warmup_calls: int,
    engine: Any = None,
    folder: Path | None = None,
) -> dict[tuple[str, str], tuple[float, float | None]]:
    """(median, spread) in ms per call of each model's forward and forward+backward, and with ``engine``
    its deployed forward (files in ``folder``), interleaved per round."""
    images = torch.randn(batch_size, *size, generator=torch.Generator().manual_seed(1))
    calls = {}
    for key, model in models.items():
        calls[key, "forward"] = _forward_call(model, images)
    for key, model in models.items():
        calls[key, "forward_backward"] = _forward_backward_call(model, images, key)
    if engine is not None and folder is not None:
        for key, model in models.items():
            calls[key, "deployed"] = engine.prepare_deployed(
                model, images, folder / key, threads=torch.get_num_threads()
            )
    # min_run_seconds=0: exactly `repeats` rounds, each running every call for at least one block.
    plan = TimingPlan(
        warmup_calls=warmup_calls,
        min_rounds=repeats,
        min_run_seconds=0.0,
        min_block_seconds=MIN_BLOCK_SECONDS,
    )
    spinning = None
    if engine is not None and engine.spin_seconds:
        spinning = {key: engine.spin_seconds for key in calls if key[1] == "deployed"}
    timings = time_interleaved(calls, plan, label="timing compare", settle_after=spinning)
    return {key: (timing.median_ms, timing.spread_ms) for key, timing in timings.items()}


def _forward_call(model: nn.Module, images: torch.Tensor) -> Any:
    model.eval()

    def forward() -> Any:
        with torch.no_grad():
            return model(images)

    return forward


def _forward_backward_call(model: nn.Module, images: torch.Tensor, key: str) -> Any:
    trained = copy.deepcopy(model).train()  # its BatchNorm statistics move: keep the eval copy as it was

    def forward_backward() -> None:
        trained.zero_grad(set_to_none=True)
        _output_sum(trained(images)).backward()

    try:
        forward_backward()  # shows a model that cannot train at this batch size before timing starts
    except ValueError as error:  # e.g. BatchNorm over one value per channel
        raise ValueError(
            f"{key.upper()} cannot run forward+backward at batch size {images.shape[0]}: {error}"
        ) from error
    return forward_backward


def _output_sum(output: Any) -> torch.Tensor:
    """The sum of every tensor in a model's output (a tensor, or a tuple/dict of them: aux heads)."""
    if isinstance(output, torch.Tensor):
        return output.sum()
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, (tuple, list)):
        tensors = [
            _output_sum(item) for item in output if isinstance(item, (torch.Tensor, tuple, list, dict))
        ]
        if tensors:
            return torch.stack(tensors).sum()
    raise ValueError(f"forward+backward needs tensor outputs, got {type(output).__name__}")
