"""``sepconv optimize``'s pipeline: measure, plan, apply, re-measure, fine-tune, deploy, report.

:func:`optimize_model` runs the stages in order, each a function of its own so that each can be tested
(and read) alone:

1. **inputs** (:func:`load_inputs`): the model (a registered name, a model file, a training run's
   folder), its data set and split seed (the one seed rule of
   :func:`~sepconv.train.run_folder.split_seed`), the image size; the data is checked against the
   model before anything is measured;
2. **sites** (:func:`~sepconv.optimize.sites.find_sites`): the layers that may change;
3. **costs** (:func:`~sepconv.optimize.costs.measure_costs`): each candidate timed on the engine, cached;
4. **sensitivity** (:func:`~sepconv.optimize.sensitivity.measure_sensitivity`): what each candidate
   loses on the user's data (validation accuracy; without data, the relative output error), cached;
5. **plan and re-measure** (:func:`plan_rounds`): the planner's choice for the budget, applied
   (:func:`apply_plan`) and timed end to end as the engine runs it; when the measured latency misses
   the budget, the latency model is corrected with what was measured and the plan made again, a
   bounded number of rounds, each one reported;
6. **recover** (:func:`recover`): BatchNorm re-estimated on training images, then fine-tuned
   (:func:`sepconv.train.fit` from the converted model file);
7. **deliver** (:func:`deliver`): the model file, the engine's deployable file (exported and verified),
   accuracy before and after on the test split, ``plan.json`` (the result document that
   :mod:`sepconv.optimize.report` renders) and the HTML report.

Every check that can fail on the user's input runs before the output folder receives anything; a run
that fails before it writes its results gives the folder back (nothing half-written). The cost and
sensitivity tables are saved as they fill, so an interrupted run loses at most one layer's work and a
rerun resumes from them.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sepconv.checks import check_float, check_int
from sepconv.errors import ParameterError
from sepconv.optimize.result import DOCUMENT_FORMAT, Outcome, PlanRound, build_document, write_document

if TYPE_CHECKING:
    import torch
    from torch import nn

    from sepconv.data import DataSplits
    from sepconv.optimize.planner import LatencyModel, LayerChoices, Plan
    from sepconv.optimize.sites import Site
    from sepconv.timing import Timing, TimingPlan

__all__ = [
    "CALIBRATION_SEED",
    "DOCUMENT_FORMAT",
    "FINETUNE_LR",
    "PREDICTION_TOLERANCE",
    "OptimizeConfig",
    "OptimizeInputs",
    "PlanRound",
    "Progress",
    "apply_plan",
    "optimize_model",
]

# Fine-tuning uses the demo's recipe (AdamW, one-cycle to a peak of 4e-3): its warm-up keeps the first
# steps small, and measured on the demo's trained standard_cnn converted at r = 1 (stem kept), 2 epochs at
# a peak of 4e-3 reached 98.2% test accuracy (original 98.3%), at 1e-3 only 97.8%.
#: The peak learning rate of the fine-tuning after a plan is applied.
FINETUNE_LR = 4e-3
FINETUNE_BATCH_SIZE = 64
#: A measured plan within this fraction of its predicted latency ends the rounds; one further off is
#: refitted on, even when it met the budget.
PREDICTION_TOLERANCE = 0.2
#: The seed of the random images a model without a data set is calibrated on (output errors).
CALIBRATION_SEED = 0
LOSS_UNITS = {True: "accuracy points", False: "relative output error"}

#: ``progress(stage, description, completed, total)``; stage is ``costs``, ``sensitivity`` or ``measuring``.
Progress = Callable[[str, str, int, int], None]


@dataclass
class OptimizeConfig:
    """What one ``sepconv optimize`` run does; :meth:`validate` names the first bad field.

    ``model`` is a registered name (``torchvision:resnet18``), a sepconv model file (or a checkpoint's
    ``.state``) or a training run's folder. ``dataset`` defaults to the one the model was trained on; a
    model with no training run and no ``dataset`` is optimized on random normal images at
    ``input_size`` (its loss is then the relative output error, and there is no fine-tuning). The budget
    is ``speedup`` (end to end, over the original as the engine runs it) or ``latency_ms``, at most one
    of them, and optionally ``max_accuracy_drop`` (accuracy points); ``max_accuracy_drop`` alone asks
    for the fastest plan predicted to lose at most that much. ``rounds`` bounds the re-planning
    after a measured miss. ``threads`` defaults to the usable cores. ``cost_table`` /
    ``sensitivity_table`` default to the user's cache (see :func:`~sepconv.optimize.costs.default_cost_table_path`).
    ``timing_plan`` overrides how every latency is timed (tests pass a tiny one).
    """

    model: str
    out_dir: str
    engine: str = "ort"
    dataset: str | None = None
    speedup: float | None = None
    latency_ms: float | None = None
    max_accuracy_drop: float | None = None
    batch_size: int = 1
    threads: int | None = None
    epochs: int = 2
    lr: float = FINETUNE_LR
    rounds: int = 2
    input_size: tuple[int, ...] | None = None
    seed: int | None = None
    data_root: str | None = None
    cost_table: str | None = None
    sensitivity_table: str | None = None
    html: str | None = None
    overwrite: bool = False
    include_stem: bool = True
    calibration_images: int = 64
    recalibration_images: int = 512
    validation_images: int | None = None
    timing_plan: TimingPlan | None = field(default=None, repr=False)

    def validate(self) -> OptimizeConfig:
        """Raise a :class:`~sepconv.errors.ParameterError` naming the first invalid field; else return ``self``."""
        if self.speedup is not None and self.latency_ms is not None:
            raise ParameterError(
                "give one latency budget: speedup (times faster than the original) or latency_ms, not both",
                param="speedup",
                mentions=("speedup", "latency_ms"),
            )
        if self.speedup is None and self.latency_ms is None and self.max_accuracy_drop is None:
            raise ParameterError(
                "give a budget: speedup (times faster than the original) or latency_ms, and/or "
                "max_accuracy_drop (alone: the fastest plan within it)",
                param="speedup",
                mentions=("speedup", "latency_ms", "max_accuracy_drop"),
            )
        if self.speedup is not None:
            check_float("speedup", self.speedup, minimum=1, min_inclusive=False)
        if self.latency_ms is not None:
            check_float("latency_ms", self.latency_ms, minimum=0, min_inclusive=False)
        if self.max_accuracy_drop is not None:
            check_float("max_accuracy_drop", self.max_accuracy_drop, minimum=0, maximum=100)
        check_float("lr", self.lr, minimum=0, min_inclusive=False)
        for name in ("batch_size", "rounds", "calibration_images"):
            check_int(name, getattr(self, name), minimum=1 if name != "rounds" else 0)
        check_int("recalibration_images", self.recalibration_images, minimum=2)
        check_int("epochs", self.epochs, minimum=0)
        for name in ("threads", "validation_images", "seed"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name), minimum=0 if name == "seed" else 1)
        return self


@dataclass
class OptimizeInputs:
    """What the stages share: the model as given, its data (None: random images), the image size."""

    model: nn.Module
    data: DataSplits | None
    split_seed: int | None
    input_size: tuple[int, ...]
    calibration: torch.Tensor
    recalibration: torch.Tensor | None

    @property
    def dataset(self) -> str | None:
        """The data set's name, or None when the stages use random images."""
        return None if self.data is None else self.data.name


# --- stage 1: inputs ------------------------------------------------------------------------------


def resolve_model_file(spec: str) -> Path | None:
    """The sepconv model file ``spec`` names (a file, a checkpoint's ``.state``, a run folder), else None.

    A training run's folder stands for its final ``model.safetensors``; None means ``spec`` is a
    registered model name.
    """
    from sepconv.train.run_folder import WEIGHTS_SUFFIX, model_file_path

    path = Path(spec)
    if path.is_dir():
        file = path / f"model{WEIGHTS_SUFFIX}"
        if not file.is_file():
            raise ParameterError(
                f"{spec} is a folder without a model{WEIGHTS_SUFFIX}: give a training run's folder, a model "
                "file or a registered model name",
                param="model",
            )
        return file
    file = model_file_path(spec)
    if file.suffix == WEIGHTS_SUFFIX or file.is_file():
        if not file.is_file():
            raise ParameterError(f"model file not found: {file}", param="model")
        return file
    return None


def load_inputs(config: OptimizeConfig) -> OptimizeInputs:
    """The model, its data and image size, checked against each other before anything is measured.

    The data set is ``config.dataset``, else the one the model was trained on; its split seed follows
    :func:`~sepconv.train.run_folder.split_seed`, so the test split holds images the model never saw.
    A registered name given a data set is built for it (its classes and channels). Data the model does
    not take (channels, image size, classes) is a ValueError naming both.
    """
    import torch

    from sepconv import load_model
    from sepconv.models import create_model, default_input_size, model_spec
    from sepconv.train.run_folder import data_for_model

    file = resolve_model_file(config.model)
    found = data_for_model(file if file is not None else config.model, config.dataset, config.seed)
    data = None if found is None else _load_data(found, config)
    if file is not None:
        model = load_model(file)
    elif data is not None:
        kwargs: dict[str, Any] = {"num_classes": data.num_classes}
        if not config.model.startswith("torchvision:"):
            kwargs["in_channels"] = data.in_channels
        model = create_model(config.model, **kwargs)
    else:
        model = create_model(config.model)
    model.eval()
    if data is not None:
        from sepconv.train.trainer import check_model_fits_data

        size: tuple[int, ...] = (data.in_channels, *data.image_size)
        if config.input_size is not None and tuple(config.input_size) != size:
            raise ParameterError(
                f"input_size {tuple(config.input_size)} does not match the {data.name} images, {size}",
                param="input_size",
            )
        check_model_fits_data(model, data, config.model)
        calibration = _images(data.train, config.calibration_images, seed=found[1] if found else 0)
        recalibration = _images(data.train, config.recalibration_images, seed=1)
    else:
        if config.max_accuracy_drop is not None:
            raise ParameterError(
                f"max_accuracy_drop needs a data set to measure accuracy on, and {config.model} has no training "
                "run to take one from; name a data set, or leave the accuracy budget out",
                param="max_accuracy_drop",
                mentions=("dataset",),
            )
        if config.input_size is not None:
            size = tuple(config.input_size)
        elif model_spec(model) is not None:
            size = default_input_size(model)
        else:
            raise ParameterError(
                f"the input size of {config.model} is not known; give input_size", param="input_size"
            )
        from sepconv.deploy.onnx_export import check_input_fits

        check_input_fits(model, size)
        generator = torch.Generator().manual_seed(CALIBRATION_SEED)
        calibration = torch.randn(config.calibration_images, *size, generator=generator)
        recalibration = None
    return OptimizeInputs(model, data, None if found is None else found[1], size, calibration, recalibration)


def _load_data(found: tuple[str, int], config: OptimizeConfig) -> DataSplits:
    from sepconv.data import load_dataset

    name, seed = found
    data = load_dataset(name, root=config.data_root, seed=seed)
    for split in ("train", "val", "test"):
        if len(getattr(data, split)) == 0:
            raise ParameterError(
                f"dataset {name!r} has no {split} images: optimizing needs training images (calibration, "
                "fine-tuning), validation images (sensitivity) and test images (accuracy)",
                param="dataset",
            )
    return data


def _images(dataset: Any, count: int, *, seed: int) -> torch.Tensor:
    """``count`` images of ``dataset`` (all when it has fewer), drawn without replacement by ``seed``."""
    import torch

    size = len(dataset)
    order = torch.randperm(size, generator=torch.Generator().manual_seed(seed))[: min(count, size)]
    return torch.stack([dataset[int(index)][0] for index in order])


def find_model_sites(
    inputs: OptimizeInputs, config: OptimizeConfig
) -> tuple[list[Site], list[tuple[str, str]]]:
    """The sites of the model; none is a ParameterError naming the model, with why each layer is not one."""
    from sepconv.optimize.sites import find_sites

    sites, skipped = find_sites(inputs.model, inputs.input_size, include_stem=config.include_stem)
    if not sites:
        reasons = "; ".join(f"{name}: {reason}" for name, reason in skipped[:3]) or "it has none"
        if len(skipped) > 3:
            reasons += f"; and {len(skipped) - 3} more"
        raise ParameterError(
            f"{config.model} has no convolution or linear layer that can be made separable or low-rank "
            f"({reasons})",
            param="model",
        )
    return sites, skipped


# --- stages 3 and 4: costs and sensitivity --------------------------------------------------------


def _stage_progress(progress: Progress | None, stage: str) -> Callable[[str, int, int], None] | None:
    if progress is None:
        return None
    return lambda description, completed, total: progress(stage, description, completed, total)


# --- stage 5: plan, apply, re-measure ------------------------------------------------------------


def apply_plan(
    model: nn.Module, ranks: Mapping[str, int | None], *, input_size: Sequence[int] | None = None
) -> nn.Module:
    """A copy of ``model`` with the plan applied: each convolution of ``ranks`` separable at its rank, each
    linear layer a low-rank pair, both initialised from the SVD of the layer's weights.

    Convolutions go through :func:`~sepconv.convert.to_separable` with ``{name: rank}``, linear layers
    through :func:`~sepconv.convert.to_low_rank`, so a model built by ``create_model`` records both and
    :func:`sepconv.load_model` rebuilds the result. A rank of None keeps the layer; a plan that keeps
    every layer gives an unchanged copy. ``input_size`` (C, H, W) is the image the conversion reports
    count MACs at (default: the registered model's own).

    >>> from torch import nn
    >>> model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3))
    >>> converted = apply_plan(model, {"0": None, "1": 2}, input_size=(3, 8, 8))
    >>> type(converted[0]).__name__, type(converted[1]).__name__, converted[1].depthwise.out_channels
    ('Conv2d', 'SeparableConv2d', 16)
    """
    import copy

    from torch import nn

    from sepconv.convert import to_separable

    convs: dict[str, int] = {}
    linears: dict[str, int] = {}
    for name, rank in ranks.items():
        if rank is None:
            continue
        layer = model.get_submodule(name)
        if isinstance(layer, nn.Conv2d):
            convs[name] = int(rank)
        elif isinstance(layer, nn.Linear):
            linears[name] = int(rank)
        else:
            raise ParameterError(
                f"ranks names {name!r}, a {type(layer).__name__}: a plan changes nn.Conv2d and nn.Linear layers",
                param="ranks",
            )
    converted = copy.deepcopy(model)
    with warnings.catch_warnings():
        # the plan chose these ranks knowing their size; the conversion's advice is for hand-picked ones
        warnings.simplefilter("ignore")
        if convs:
            converted, _ = to_separable(model, depth_multiplier=convs, input_size=input_size)
        if linears:
            from sepconv.convert import to_low_rank

            converted, _ = to_low_rank(converted, rank=linears)
    return converted.train(model.training)


def budget_ms(config: OptimizeConfig, original_ms: float) -> float | None:
    """The end-to-end latency the plan must reach: original / speedup, or latency_ms; None for an
    accuracy-only budget (the fastest plan within max_accuracy_drop)."""
    if config.speedup is not None:
        return original_ms / config.speedup
    return config.latency_ms


def meets_budget(config: OptimizeConfig, measured: PlanRound) -> bool:
    """Whether a measured plan is within the budget: its speedup over the original timed beside it, or its ms."""
    if config.speedup is not None:
        return measured.speedup >= config.speedup
    if config.latency_ms is not None:
        return measured.measured_ms <= config.latency_ms
    return True  # an accuracy-only budget: the plan was chosen within it


def plan_rounds(
    config: OptimizeConfig,
    inputs: OptimizeInputs,
    layers: Sequence[LayerChoices],
    latency: LatencyModel,
    engine: Any,
    *,
    original_ms: float,
    progress: Progress | None = None,
) -> list[PlanRound]:
    """Plan, apply and measure end to end; while the budget is missed, correct the latency model and re-plan.

    At most ``1 + config.rounds`` plans are measured. Each round times the plan beside the original,
    so the latency model is refitted (:meth:`~sepconv.optimize.planner.LatencyModel.corrected`) on
    pairs measured together: the original (the sum of the keep options) and the plan, of every round
    so far, with the original's first measurement; a speedup budget is re-read against the latest
    measurement of the original. The rounds end when a plan meets the budget as predicted (within
    :data:`PREDICTION_TOLERANCE`), or when a re-plan gives a plan already measured (measuring it again
    would teach the model nothing). A plan that meets the budget much faster than predicted is refitted
    on too: the corrected model may find a plan that loses less and still meets it.

    A budget the latency model finds out of reach is not taken on its word while rounds remain: the
    layers timed alone can misjudge what the engine saves end to end, so the plan that comes closest
    (the planner's best) is measured instead, and the corrected model asked again. Only a budget still
    out of reach once that plan has been measured is a :class:`~sepconv.optimize.planner.BudgetError`,
    naming the best reachable speedup and loss, and what the closest plan measured (nothing has been
    written yet).
    """
    from sepconv.optimize.planner import BudgetError, keep_plan

    keep_ms = keep_plan(layers, latency).layer_ms
    points = [(keep_ms, original_ms)]
    rounds: list[PlanRound] = []
    while True:
        closest = False
        try:
            plan = choose_budget_plan(
                config, layers, latency, original_ms=original_ms, loss_unit=_loss_unit(inputs)
            )
        except BudgetError as error:
            measured = next((done for done in rounds if done.plan.ranks == error.best.ranks), None)
            if measured is not None or len(rounds) > config.rounds:
                raise _measured_refusal(error, measured) from None
            plan = error.best  # measure the closest plan: the engine may save more than the table says
            closest = True
        if any(done.plan.ranks == plan.ranks for done in rounds):
            break
        measured = measure_plan(config, inputs, plan, latency, engine, len(rounds) + 1, progress)
        measured.plan_budget_ms = budget_ms(config, original_ms)
        measured.closest = closest
        # judged against the original timed in the same round, as meets_budget judges a speedup
        measured.budget_ms = budget_ms(config, measured.original_ms)
        rounds.append(measured)
        if len(rounds) > config.rounds:
            break
        if meets_budget(config, measured) and abs(measured.relative_error) <= PREDICTION_TOLERANCE:
            break  # met, and as predicted: a corrected model would choose the same plan
        points += [(keep_ms, measured.original_ms), (plan.layer_ms, measured.measured_ms)]
        latency = latency.corrected(points)
        original_ms = measured.original_ms
    return rounds


def _measured_refusal(error: Any, measured: PlanRound | None) -> Any:
    """The planner's refusal, with what its closest plan measured end to end when it was measured."""
    if measured is None:
        return error
    return type(error)(
        f"{error}; measured, that plan ran {measured.measured_ms:.4g} ms, {measured.speedup:.2f}x the "
        f"original's {measured.original_ms:.4g} ms",
        param=error.param,
        best=error.best,
        reference_ms=error.reference_ms,
    )


def choose_budget_plan(
    config: OptimizeConfig,
    layers: Sequence[LayerChoices],
    latency: LatencyModel,
    *,
    original_ms: float,
    loss_unit: str,
) -> Plan:
    """The planner's choice for the budget; an impossible one is a BudgetError in the budget's own terms.

    The planner words its refusal in ms (``max_ms``); the user gave a speedup or a latency and an
    accuracy drop, so the error names those: the best speedup reachable, and what it would lose.
    """
    from sepconv.optimize.planner import BudgetError, choose_plan

    limit_ms = budget_ms(config, original_ms)
    try:
        return choose_plan(
            layers, latency, max_ms=limit_ms, max_loss=config.max_accuracy_drop, loss_unit=loss_unit
        )
    except BudgetError as error:
        best = error.best
        speedup = error.reference_ms / best.predicted_ms if best.predicted_ms > 0 else math.inf
        reach = (
            f"the fastest plan is predicted at {best.predicted_ms:.4g} ms, {speedup:.2f}x the original's "
            f"{error.reference_ms:.4g} ms, losing {best.predicted_loss:.3g} {loss_unit}"
        )
        if error.param == "max_loss":
            message = (
                f"max_accuracy_drop {config.max_accuracy_drop:g} cannot be kept at this speed: the most "
                f"accurate plan within it is predicted at {best.predicted_ms:.4g} ms ({speedup:.2f}x), "
                f"losing {best.predicted_loss:.3g} {loss_unit}; allow a larger drop or ask for less speed"
            )
            param = "max_accuracy_drop"
        elif config.speedup is not None:
            message = f"speedup {config.speedup:g} is out of reach on this engine: {reach}"
            param = "speedup"
        else:
            message = f"latency_ms {config.latency_ms:g} is out of reach on this engine: {reach}"
            param = "latency_ms"
        raise BudgetError(message, param=param, best=best, reference_ms=error.reference_ms) from None


def _loss_unit(inputs: OptimizeInputs) -> str:
    return LOSS_UNITS[inputs.data is not None]


def measure_plan(
    config: OptimizeConfig,
    inputs: OptimizeInputs,
    plan: Plan,
    latency: LatencyModel,
    engine: Any,
    number: int,
    progress: Progress | None,
) -> PlanRound:
    """Apply ``plan`` and time it end to end beside the original, deployed as the engine deploys them."""
    converted = apply_plan(inputs.model, plan.ranks, input_size=inputs.input_size)
    if progress is not None:
        progress("measuring", f"round {number}: timing the plan end to end", number - 1, number)
    timings = time_end_to_end({"original": inputs.model, "optimized": converted}, inputs, engine, config)
    if progress is not None:
        progress("measuring", f"round {number}: timed", number, number)
    return PlanRound(
        round=number,
        plan=plan,
        model=converted,
        predicted_ms=latency.predict(plan.layer_ms),
        measured_ms=timings["optimized"].median_ms,
        original_ms=timings["original"].median_ms,
        spread_ms={"original": timings["original"].spread_ms, "optimized": timings["optimized"].spread_ms},
        latency=latency,
    )


def time_end_to_end(
    models: Mapping[str, nn.Module], inputs: OptimizeInputs, engine: Any, config: OptimizeConfig
) -> dict[str, Timing]:
    """Each model timed end to end on the engine, interleaved, at the run's batch size and threads."""
    from sepconv.optimize.costs import time_models

    return time_models(
        models,
        inputs.input_size,
        engine,
        batch_size=config.batch_size,
        threads=_threads(config),
        timing_plan=config.timing_plan,
        calibration=calibration_batches(inputs),
    )


def calibration_batches(inputs: OptimizeInputs) -> list[torch.Tensor] | None:
    """Batches of training images that fix an int8 engine's scales; None without a data set (random ones)."""
    if inputs.data is None:
        return None
    import torch

    return list(torch.split(inputs.calibration, 16))


def _threads(config: OptimizeConfig) -> int:
    from sepconv.machine import usable_cpu_count

    return config.threads if config.threads is not None else usable_cpu_count()


def best_round(config: OptimizeConfig, rounds: Sequence[PlanRound]) -> PlanRound:
    """The round to deliver: of those that met the budget, the plan predicted to lose least (then the
    faster); when none did, the fastest measured (with a note)."""
    met = [measured for measured in rounds if meets_budget(config, measured)]
    if met:
        return min(met, key=lambda measured: (measured.plan.predicted_loss, measured.measured_ms))
    return max(rounds, key=lambda measured: measured.speedup)


# --- stage 6: recover (BatchNorm, fine-tuning) ------------------------------------------------------


def recover(
    config: OptimizeConfig, inputs: OptimizeInputs, converted: nn.Module, folder: Path, *, show_progress: bool
) -> tuple[nn.Module, nn.Module, float]:
    """(converted with BatchNorm re-estimated, fine-tuned, fine-tuning seconds).

    BatchNorm statistics are re-estimated on training images; with a data set and ``epochs > 0`` the
    model is then fine-tuned by :func:`sepconv.train.fit`, starting from the converted model file
    (``init_from``), on the same split (the split seed) in ``folder/finetune``. Without, the second
    model is the first.
    """
    from sepconv.convert import recalibrate_batchnorm
    from sepconv.convert.replay import save_model

    if inputs.recalibration is not None:
        recalibrate_batchnorm(converted, inputs.recalibration)
    converted.eval()
    if inputs.data is None or config.epochs == 0:
        return converted, converted, 0.0
    from sepconv.train.config import TrainConfig
    from sepconv.train.trainer import fit

    started = time.perf_counter()
    initial = save_model(converted, folder / "converted.safetensors")
    train_config = TrainConfig(
        init_from=str(initial),
        dataset=inputs.data.name,
        data_root=config.data_root,
        seed=inputs.split_seed or 0,
        epochs=config.epochs,
        batch_size=FINETUNE_BATCH_SIZE,
        lr=config.lr,
        out_dir=str(folder / "finetune"),
        checkpoint_every_epochs=0,
        keep_checkpoints=1,
        progress_bar=show_progress,
        tensorboard=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's advice on workers and logging intervals
        result = fit(train_config, data=inputs.data, evaluate_test=False, warn=lambda message: None)
    return converted, result.model.eval(), time.perf_counter() - started


def accuracy_percent(model: nn.Module, data: DataSplits) -> float:
    """Accuracy in percent on the test split, in eval mode."""
    from sepconv.train.evaluation import evaluate_model

    return 100.0 * evaluate_model(model, data.test, num_classes=data.num_classes).accuracy


# --- stage 7: deliver ----------------------------------------------------------------------------


def deliver(model: nn.Module, inputs: OptimizeInputs, engine: Any, folder: Path) -> tuple[Path, Path]:
    """Write the model file and the engine's deployable file (exported and verified); their paths."""
    from sepconv.convert.replay import save_model

    written = save_model(model, folder / "model.safetensors")
    deployable = engine.deploy(model, inputs.input_size, folder, calibration=calibration_batches(inputs))
    return written, Path(deployable)


# --- the whole run ------------------------------------------------------------------------------


@contextmanager
def _stopwatch(timings: dict[str, float], name: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - started


def optimize_model(
    config: OptimizeConfig, *, progress: Progress | None = None, show_progress: bool = False
) -> dict[str, Any]:
    """Run the whole pipeline (see the module's docstring) and return the result document (``plan.json``).

    Writes into ``config.out_dir`` (claimed as a run folder, see
    :func:`~sepconv.train.run_folder.claim_run_folder`): ``model.safetensors``, the engine's deployable
    file, ``plan.json``, ``report.html`` (or ``config.html``), ``converted.safetensors`` and
    ``finetune/`` (when fine-tuned). ``progress(stage, description, completed, total)`` follows the
    measuring stages; ``show_progress`` lets fine-tuning draw its own bar.

    Refused before the folder receives anything (a :class:`~sepconv.errors.ParameterError` or
    ``ValueError`` naming the cause): bad settings, an unknown or unavailable engine, a model without
    sites, data the model does not take, and a budget no plan meets
    (:class:`~sepconv.optimize.planner.BudgetError`, naming the best achievable speedup and loss).
    """
    from sepconv.deploy.engines import get_engine
    from sepconv.train.run_folder import check_out_dir, claim_run_folder

    started = time.perf_counter()
    timings: dict[str, float] = {}
    config.validate()
    check_out_dir(config.out_dir)
    engine = get_engine(config.engine)
    unavailable = engine.unavailable_reason()
    if unavailable is not None:
        raise ParameterError(f"engine {engine.name!r} cannot run here: {unavailable}", param="engine")
    with _stopwatch(timings, "sites"):
        inputs = load_inputs(config)
        sites, skipped = find_model_sites(inputs, config)
    folder = claim_run_folder(config.out_dir, kind="optimize", overwrite=config.overwrite)
    try:
        outcome = _run(config, inputs, engine, sites, skipped, folder.path, timings, progress, show_progress)
        timings["total"] = time.perf_counter() - started
        document = build_document(outcome)
        write_document(document)
    except BaseException:
        if folder.holds_only_its_claim():
            folder.abandon()  # nothing of this run to keep: the corrected command may use the folder
        raise
    finally:
        folder.release()
    return document


def _run(
    config: OptimizeConfig,
    inputs: OptimizeInputs,
    engine: Any,
    sites: list[Site],
    skipped: list[tuple[str, str]],
    folder: Path,
    timings: dict[str, float],
    progress: Progress | None,
    show_progress: bool,
) -> Outcome:
    from sepconv.optimize.costs import CostTable, default_cost_table_path, measure_costs
    from sepconv.optimize.planner import LatencyModel, pareto_front
    from sepconv.optimize.sensitivity import (
        SensitivityTable,
        default_sensitivity_table_path,
        loss_options,
        measure_sensitivity,
    )

    threads = _threads(config)
    with _stopwatch(timings, "costs"):
        cost_table = CostTable(Path(config.cost_table) if config.cost_table else default_cost_table_path())
        costs = measure_costs(
            inputs.model,
            sites,
            engine,
            batch_size=config.batch_size,
            threads=threads,
            table=cost_table,
            progress=_stage_progress(progress, "costs"),
            timing_plan=config.timing_plan,
        )
    with _stopwatch(timings, "sensitivity"):
        sensitivity_table = SensitivityTable(
            Path(config.sensitivity_table) if config.sensitivity_table else default_sensitivity_table_path()
        )
        base_accuracy, sensitivities = measure_sensitivity(
            inputs.model,
            sites,
            calibration=inputs.calibration,
            recalibration=inputs.recalibration,
            validation=_validation(inputs, config),
            table=sensitivity_table,
            progress=_stage_progress(progress, "sensitivity"),
            dataset=inputs.dataset,
            split_seed=inputs.split_seed,
        )
    with _stopwatch(timings, "measuring"):
        original = time_end_to_end({"original": inputs.model}, inputs, engine, config)["original"]
    with _stopwatch(timings, "planning"):
        layers = loss_options(sites, costs, sensitivities, base_accuracy)
        latency = LatencyModel.from_reference(original.median_ms, layers)
    with _stopwatch(timings, "measuring"):
        rounds = plan_rounds(
            config, inputs, layers, latency, engine, original_ms=original.median_ms, progress=progress
        )
    chosen = best_round(config, rounds)
    with _stopwatch(timings, "planning"):
        front = pareto_front(layers, chosen.latency)  # the front as the model that chose the plan sees it
    notes = _notes(config, inputs, chosen, rounds)
    with _stopwatch(timings, "fine_tuning"):
        converted, fine_tuned, _ = recover(config, inputs, chosen.model, folder, show_progress=show_progress)
    accuracy = _accuracy(inputs, converted, fine_tuned)
    model_file, deployable = deliver(fine_tuned, inputs, engine, folder)
    html = Path(config.html) if config.html else folder / "report.html"
    return Outcome(
        model=config.model,
        dataset=inputs.dataset,
        engine={**engine.describe(), "batch_size": config.batch_size, "threads": threads},
        budget={
            "speedup": config.speedup,
            "latency_ms": config.latency_ms,
            "max_accuracy_drop": config.max_accuracy_drop,
        },
        loss_unit=_loss_unit(inputs),
        original=inputs.model,
        input_size=inputs.input_size,
        sites=sites,
        skipped=skipped,
        costs=costs,
        sensitivities=sensitivities,
        base_accuracy=base_accuracy,
        reference_ms=original.median_ms,
        front=front,
        rounds=rounds,
        chosen=chosen,
        accuracy=accuracy,
        files={
            "model": str(model_file),
            "deployable": str(deployable),
            "plan": str(folder / "plan.json"),
            "html": str(html),
        },
        timings=timings,
        notes=notes,
    )


def _validation(inputs: OptimizeInputs, config: OptimizeConfig) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The validation images and labels the sensitivity is measured on (the first ``validation_images``)."""
    if inputs.data is None:
        return None
    import torch

    count = inputs.data.sizes()["val"]
    if config.validation_images is not None:
        count = min(count, config.validation_images)
    items = [inputs.data.val[index] for index in range(count)]
    return torch.stack([image for image, _ in items]), torch.tensor([int(label) for _, label in items])


def _accuracy(inputs: OptimizeInputs, converted: nn.Module, fine_tuned: nn.Module) -> dict[str, Any] | None:
    if inputs.data is None:
        return None
    original = accuracy_percent(inputs.model, inputs.data)
    after_conversion = accuracy_percent(converted, inputs.data)
    after_fine_tuning = accuracy_percent(fine_tuned, inputs.data)
    return {
        "split": "test",
        "images": inputs.data.sizes()["test"],
        "original": original,
        "converted": after_conversion,
        "fine_tuned": after_fine_tuning,
        "drop": original - after_fine_tuning,
    }


def _notes(
    config: OptimizeConfig, inputs: OptimizeInputs, chosen: PlanRound, rounds: Sequence[PlanRound]
) -> list[str]:
    notes = []
    if inputs.data is None:
        notes.append(
            f"no data set: the loss is each layer's relative output error on {inputs.calibration.shape[0]} "
            "random normal images; no fine-tuning and no accuracy"
        )
    elif config.epochs == 0:
        notes.append("epochs 0: BatchNorm re-estimated, not fine-tuned")
    if not meets_budget(config, chosen):
        target = f"{config.speedup:g}x" if config.speedup is not None else f"{config.latency_ms:g} ms"
        notes.append(
            f"the budget ({target}) was missed after {len(rounds)} measured plan(s): delivering the fastest, "
            f"{chosen.measured_ms:.3f} ms, {chosen.speedup:.2f}x the original"
        )
    return notes
