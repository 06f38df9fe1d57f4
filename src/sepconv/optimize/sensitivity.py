"""What each candidate costs in accuracy on the user's data: the sensitivity table.

For each site and each candidate rank, two measures of what converting that layer alone loses:

- the *output error* of the layer, ``||y_r - y|| / ||y||`` on the input it sees when the original model
  runs the calibration images (:func:`sepconv.convert.layer_output_errors`): cheap, one forward pass
  for every site and rank, and a better guide than the weight error (on torchvision's resnet18,
  3-11% where the weight errors of the same layers are 21-29%);
- the *validation accuracy* of the model with only that layer converted, its BatchNorm statistics
  re-estimated on the recalibration images (:func:`sepconv.convert.recalibrate_batchnorm`): what the
  user cares about, one evaluation per candidate.

Both are cached in a :class:`SensitivityTable` under a key that names the model's weights (a checksum),
the data (name, split seed, image counts and a checksum of the images), the site and the rank, so a
second run measures nothing new and a retrained model or another split is measured afresh.

:func:`loss_options` turns the measurements and the cost table into the planner's input.
"""

from __future__ import annotations

import copy
import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sepconv.checks import check_float, check_int
from sepconv.errors import ParameterError
from sepconv.io.atomic import PathLike
from sepconv.optimize.cache import CacheFile, cache_folder
from sepconv.optimize.planner import LayerChoices, Option

if TYPE_CHECKING:
    import torch
    from torch import nn

    from sepconv.optimize.sites import Site

__all__ = [
    "FORMAT",
    "OUTPUT_ERROR_POINTS",
    "Sensitivity",
    "SensitivityTable",
    "default_sensitivity_table_path",
    "loss_options",
    "measure_sensitivity",
    "model_checksum",
]

#: The format written into sensitivity tables; a table of another format is measured again.
FORMAT = "sepconv-sensitivity/1"

#: Accuracy points a relative output error of 1 adds to a candidate's measured loss: the tie-break of
#: loss_options between candidates the validation images cannot tell apart.
OUTPUT_ERROR_POINTS = 0.01

# BatchNorm statistics are re-estimated in batches of this many images (recalibrate_batchnorm's own
# default); a different size gives slightly different statistics, so it is part of the key.
RECALIBRATION_BATCH_SIZE = 64


@dataclass(frozen=True)
class Sensitivity:
    """What converting only ``site`` at ``rank`` loses.

    ``output_error`` is the layer's relative output error on the calibration images; ``accuracy`` the
    validation accuracy in percent with only that layer converted (None without validation data);
    ``cached`` whether it came from the table rather than being measured now.
    """

    site: str
    rank: int
    output_error: float
    accuracy: float | None
    cached: bool = False

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of these fields, as ``plan.json`` and ``--json`` report each measured site."""
        return {
            "site": self.site,
            "rank": self.rank,
            "output_error": self.output_error,
            "accuracy": self.accuracy,
            "cached": self.cached,
        }


def default_sensitivity_table_path() -> Path:
    """The default sensitivity table: ``sensitivity.json`` in the cache folder, beside the cost table.

    The folder is :func:`~sepconv.optimize.cache.cache_folder`.
    """
    return cache_folder() / "sensitivity.json"


def _check_value(value: Any) -> None:
    """A record the table writes: a finite output error >= 0 and an accuracy in [0, 100] or null."""
    error, accuracy = value.get("output_error"), value.get("accuracy")
    if not _is_number(error) or error < 0:
        raise ValueError(f"output_error must be a finite number >= 0, got {error!r}")
    if accuracy is not None and not (_is_number(accuracy) and 0 <= accuracy <= 100):
        raise ValueError(f"accuracy must be a percentage or null, got {accuracy!r}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class SensitivityTable(CacheFile):
    """The sensitivity measurements, kept in a JSON file that a later run reuses.

    The file is ``path`` (default :func:`default_sensitivity_table_path`), kept with the rules of
    :class:`~sepconv.optimize.cache.CacheFile`: a record is reused only under the same model weights,
    data, split, image counts, site and rank; a corrupt or foreign file is named in a warning and
    measured again, never trusted.
    """

    def __init__(self, path: PathLike | None = None) -> None:
        super().__init__(
            default_sensitivity_table_path() if path is None else path, format=FORMAT, check=_check_value
        )


def model_checksum(model: nn.Module) -> str:
    """SHA-256 over the model's state (every parameter and buffer: name, dtype, shape and bytes).

    Two models with this checksum compute the same thing (for the same architecture): a retrained,
    fine-tuned or converted model has another one, so nothing measured on the old one is reused.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        _hash_tensor(digest, name, tensor)
    return digest.hexdigest()


def _data_checksum(*tensors: torch.Tensor | None) -> str:
    digest = hashlib.sha256()
    for index, tensor in enumerate(tensors):
        if tensor is not None:
            _hash_tensor(digest, str(index), tensor)
    return digest.hexdigest()


def _hash_tensor(digest: Any, label: str, tensor: torch.Tensor) -> None:
    """Feed ``label``, the tensor's dtype and shape, then its bytes (read in place, not copied) to ``digest``."""
    import torch

    digest.update(f"{label}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    if flat.dtype == torch.bool:
        flat = flat.to(torch.uint8)
    if flat.numel():
        # viewed as bytes: covers every dtype (bfloat16 included, which numpy has no name for)
        digest.update(flat.view(torch.uint8).numpy().data)


def measure_sensitivity(
    model: nn.Module,
    sites: Sequence[Site],
    *,
    calibration: torch.Tensor,
    recalibration: torch.Tensor | None = None,
    validation: tuple[torch.Tensor, torch.Tensor] | None = None,
    table: SensitivityTable | None,
    progress: Callable[[str, int, int], None] | None = None,
    dataset: str | None = None,
    split_seed: int | None = None,
    batch_size: int = 256,
) -> tuple[float | None, dict[str, dict[int, Sensitivity]]]:
    """The sensitivity of each site at each of its candidate ranks, and the base validation accuracy.

    Returns ``(base_accuracy, {site: {rank: Sensitivity}})``. Output errors come from
    :func:`sepconv.convert.layer_output_errors` on ``calibration`` (a batch of images, N x C x H x W).
    With ``validation`` (images, integer labels), each candidate is also applied alone (the layer
    replaced by what ``to_separable`` or ``to_low_rank`` would put there, from the SVD), its model's
    BatchNorm statistics re-estimated on ``recalibration`` (training images, at least 2; without them
    the statistics stay the original's), and evaluated in eval mode, ``batch_size`` images at a time:
    the accuracy in percent. ``base_accuracy`` is the original model's accuracy measured the same way
    (BatchNorm re-estimated on the same images), so that the difference isolates what the conversion
    loses, not what re-estimating costs. Without ``validation`` the accuracies and ``base_accuracy``
    are None, and the planner takes the output error as the loss (:func:`loss_options`).

    Each candidate costs a pass over the recalibration and the validation images: on the demo's
    trained ``standard_cnn`` (22 candidates, 512 + 500 mnist5k images) 112 s of CPU time, about a
    minute on two otherwise idle cores; the output errors take one pass over ``calibration``.

    ``table`` (None: nothing cached) supplies what was measured before under the same key and takes
    each new measurement, saved at once: an interrupted run keeps every candidate it finished. ``dataset`` and ``split_seed`` name the data in the key (the images' checksum is there
    too). ``progress(description, done, total)`` is called after each candidate measured. ``model`` is
    not changed (candidates are evaluated on one copy of it).
    """
    import sepconv.convert as convert
    from sepconv.timing import Progress

    images = _check_images("calibration", calibration, minimum=1)
    recalibration = (
        None if recalibration is None else _check_images("recalibration", recalibration, minimum=2)
    )
    if validation is not None:
        validation = _check_validation(validation)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    base_key: dict[str, Any] = {
        "model": model_checksum(model),
        "data": {
            "dataset": dataset,
            "split_seed": split_seed,
            "calibration_images": int(images.shape[0]),
            "recalibration_images": 0 if recalibration is None else int(recalibration.shape[0]),
            "validation_images": 0 if validation is None else int(validation[0].shape[0]),
            "checksum": _data_checksum(images, recalibration, *(validation or (None, None))),
        },
        "recalibration_batch_size": RECALIBRATION_BATCH_SIZE,
    }

    def key(site: str | None, rank: int | None) -> dict[str, Any]:
        return {**base_key, "site": site, "rank": rank}

    def cached(site: str | None, rank: int | None) -> dict[str, Any] | None:
        return None if table is None else table.get(key(site, rank))

    missing = {site.name: [rank for rank in site.ranks if cached(site.name, rank) is None] for site in sites}
    missing = {name: ranks for name, ranks in missing.items() if ranks}
    output_errors = convert.layer_output_errors(model, images, missing) if missing else {}
    evaluator = None if validation is None else _Evaluator(model, recalibration, validation, batch_size)

    base_accuracy: float | None = None
    if evaluator is not None:
        base_record = cached(None, None)
        if base_record is None:
            base_accuracy = evaluator.accuracy(None, None)
            if table is not None:
                table.put(key(None, None), {"output_error": 0.0, "accuracy": base_accuracy})
                table.save()
        else:
            base_accuracy = base_record["accuracy"]

    counter = Progress(progress, total=sum(len(ranks) for ranks in missing.values()))
    results: dict[str, dict[int, Sensitivity]] = {}
    for site in sites:
        results[site.name] = {}
        for rank in site.ranks:
            record = cached(site.name, rank)
            if record is not None:
                results[site.name][rank] = Sensitivity(
                    site.name, rank, record["output_error"], record["accuracy"], cached=True
                )
                continue
            accuracy = None if evaluator is None else evaluator.accuracy(site.name, rank)
            error = float(output_errors[site.name][rank])
            results[site.name][rank] = Sensitivity(site.name, rank, error, accuracy)
            if table is not None:
                # saved at once: a candidate costs a pass over the data, a save only a small file
                table.put(key(site.name, rank), {"output_error": error, "accuracy": accuracy})
                table.save()
            counter.advance(f"{site.name} at rank {rank}")
    return base_accuracy, results


class _Evaluator:
    """Validation accuracy of the model with at most one site converted, on one working copy of it.

    Each candidate replaces its layer in the copy (:func:`~sepconv.optimize.sites.build_candidate`
    from the SVD: what ``to_separable``/``to_low_rank`` put there, without copying the whole model
    and counting its MACs for every candidate), BatchNorm is re-estimated, the copy evaluated, and
    the original layer and BatchNorm statistics put back.
    """

    def __init__(
        self,
        model: nn.Module,
        recalibration: torch.Tensor | None,
        validation: tuple[torch.Tensor, torch.Tensor],
        batch_size: int,
    ) -> None:
        from torch.nn.modules.batchnorm import _BatchNorm

        self.model = copy.deepcopy(model).eval()
        self.batchnorms = [module for module in self.model.modules() if isinstance(module, _BatchNorm)]
        self.statistics = [copy.deepcopy(module.state_dict()) for module in self.batchnorms]
        self.recalibration = recalibration if self.batchnorms else None
        self.validation = validation
        self.batch_size = batch_size

    def accuracy(self, site: str | None, rank: int | None) -> float:
        """In percent, with ``site`` at ``rank`` (``None``: the original model), BatchNorm re-estimated."""
        from sepconv.optimize import sites

        if site is None:
            return self._measure()
        original = self.model.get_submodule(site)
        self.model.set_submodule(site, sites.build_candidate(original, rank))
        try:
            return self._measure()
        finally:
            self.model.set_submodule(site, original)

    def _measure(self) -> float:
        from sepconv.convert import recalibrate_batchnorm

        try:
            if self.recalibration is not None:
                recalibrate_batchnorm(self.model, self.recalibration, batch_size=RECALIBRATION_BATCH_SIZE)
            return _accuracy(self.model, self.validation, self.batch_size)
        finally:
            for module, statistics in zip(self.batchnorms, self.statistics, strict=True):
                module.load_state_dict(statistics)


def _accuracy(model: nn.Module, validation: tuple[torch.Tensor, torch.Tensor], batch_size: int) -> float:
    """Validation accuracy of ``model`` (in eval mode) in percent, ``batch_size`` images at a time."""
    import torch

    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    # images as the model's weights are (a half-precision model takes half-precision images)
    dtype = parameter.dtype if parameter is not None and parameter.is_floating_point() else None
    images, labels = validation
    correct = 0
    model.eval()
    with torch.no_grad():
        for start in range(0, images.shape[0], batch_size):
            batch = images[start : start + batch_size].to(device, dtype)
            predicted = model(batch).argmax(dim=1).cpu()
            correct += int((predicted == labels[start : start + batch_size]).sum())
    return 100.0 * correct / images.shape[0]


def _check_images(name: str, images: Any, *, minimum: int) -> torch.Tensor:
    import torch

    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[0] < minimum:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ParameterError(
            f"{name} must be a batch of at least {minimum} image{'s' if minimum > 1 else ''} (N, C, H, W), "
            f"got {shape}",
            param=name,
        )
    return images


def _check_validation(validation: Any) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    if not (isinstance(validation, tuple | list) and len(validation) == 2):
        raise ParameterError(
            f"validation must be (images, labels), got {type(validation).__name__}", param="validation"
        )
    images = _check_images("validation", validation[0], minimum=1)
    labels = validation[1]
    if (
        not isinstance(labels, torch.Tensor)
        or labels.dim() != 1
        or labels.shape[0] != images.shape[0]
        or labels.is_floating_point()
    ):
        shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise ParameterError(
            f"validation labels must be {images.shape[0]} integer class indices (one per image), got {shape}",
            param="validation",
        )
    return images, labels.cpu()


def loss_options(
    sites: Sequence[Site],
    costs: Mapping[str, Mapping[int | None, Any]],
    sensitivity: Mapping[str, Mapping[int, Sensitivity]],
    base_accuracy: float | None,
    *,
    error_points: float = OUTPUT_ERROR_POINTS,
) -> list[LayerChoices]:
    """The planner's input: per site, keep and each rank that has both a cost and a sensitivity.

    Keep costs the site's measured ms at loss 0; a rank costs its measured ms (``costs[site][rank].ms``,
    from :func:`~sepconv.optimize.costs.measure_costs`) and its loss.

    With ``base_accuracy``, the loss is in accuracy points: ``base_accuracy`` minus the accuracy with
    only that site converted, clamped at 0 (a gain is validation noise, see
    :attr:`~sepconv.optimize.planner.Option.planned_loss`), plus ``error_points`` x the output error.
    That last term is a tie-break: accuracy on N images moves in steps of 100/N points, so many
    candidates measure the same accuracy (often the base's), and without it the planner would take
    the fastest of those, however large its error, even where the latency budget allows a more
    faithful rank. At 0.01 points per unit of relative error it stays below what 10,000 validation
    images can resolve, so it never outweighs a measured difference.

    Without ``base_accuracy`` (no validation data), the loss is the output error itself: a proxy that
    orders a layer's ranks well but says less about what the whole model loses.

    A site whose keep cost is missing is refused (the planner could not price keeping it); a rank
    measured in one table and not the other is left out.
    """
    error_points = check_float("error_points", error_points, minimum=0)
    layers: list[LayerChoices] = []
    for site in sites:
        site_costs = costs.get(site.name, {})
        keep = site_costs.get(None)
        if keep is None:
            raise ParameterError(f"{site.name}: the cost table has no time for keeping it", param="costs")
        options = [Option(None, float(keep.ms), 0.0)]
        for rank, measured in sorted(sensitivity.get(site.name, {}).items()):
            cost = site_costs.get(rank)
            if cost is None:
                continue
            if base_accuracy is None:
                loss = measured.output_error
            elif measured.accuracy is None:
                raise ParameterError(
                    f"{site.name} at rank {rank} has no accuracy to compare with base_accuracy "
                    f"{base_accuracy}: measure every site with the same validation data",
                    param="sensitivity",
                )
            else:
                loss = max(base_accuracy - measured.accuracy, 0.0) + error_points * measured.output_error
            options.append(Option(rank, float(cost.ms), float(loss)))
        layers.append(LayerChoices(site.name, tuple(options)))
    return layers
