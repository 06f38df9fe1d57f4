"""Accuracy, per-class accuracy and the confusion matrix of a classifier on a data set.

Its plot is drawn by :func:`sepconv.viz.confusion.plot_confusion_matrix`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from sepconv.checks import check_positive

__all__ = ["Evaluation", "ModelDataMismatchError", "evaluate_model"]


@dataclass
class Evaluation:
    """``confusion[true, predicted]`` counts; accuracies are fractions in [0, 1]."""

    confusion: torch.Tensor
    class_names: list[str]

    @property
    def num_samples(self) -> int:
        """How many samples were evaluated (the confusion matrix's total)."""
        return int(self.confusion.sum())

    @property
    def accuracy(self) -> float:
        """The fraction of samples predicted right, from 0 to 1 (0 when there were none)."""
        return float(self.confusion.diagonal().sum()) / max(self.num_samples, 1)

    @property
    def per_class_accuracy(self) -> dict[str, float | None]:
        """Recall of each class (``None`` for a class absent from the data)."""
        totals = self.confusion.sum(1)
        return {
            name: (float(self.confusion[index, index]) / float(totals[index]) if totals[index] else None)
            for index, name in enumerate(self.class_names)
        }

    def to_dict(self) -> dict[str, Any]:
        """The JSON document ``sepconv evaluate --json`` prints: accuracies, class names, confusion matrix."""
        return {
            "accuracy": self.accuracy,
            "num_samples": self.num_samples,
            "per_class_accuracy": self.per_class_accuracy,
            "class_names": self.class_names,
            "confusion_matrix": self.confusion.tolist(),
        }


class ModelDataMismatchError(ValueError):
    """A model that does not fit a data set: other input channels or image size, other class count."""


@torch.inference_mode()
def evaluate_model(
    model: nn.Module,
    dataset: Dataset,
    *,
    num_classes: int,
    class_names: list[str] | None = None,
    batch_size: int = 256,
    channels_last: bool = False,
) -> Evaluation:
    """Run ``model`` (eval mode) over ``dataset`` and count ``(true, predicted)`` pairs.

    The first batch checks that the model fits the data before the rest is evaluated: a model that
    fails on the images (another channel count or image size) or that outputs another number of classes
    than ``num_classes`` raises :class:`ModelDataMismatchError`; a label outside ``[0, num_classes)``
    raises ``ValueError``. Either would otherwise give a wrong accuracy or a confusing error.

    >>> from torch.utils.data import TensorDataset
    >>> data = TensorDataset(torch.eye(3), torch.tensor([0, 1, 1]))
    >>> result = evaluate_model(nn.Identity(), data, num_classes=3)
    >>> result.confusion.tolist(), round(result.accuracy, 3)
    ([[1, 0, 0], [0, 1, 1], [0, 0, 0]], 0.667)
    >>> evaluate_model(nn.Identity(), data, num_classes=4)
    Traceback (most recent call last):
    sepconv.train.evaluation.ModelDataMismatchError: the model outputs 3 classes but the data set has 4
    """
    num_classes = check_positive("num_classes", num_classes)
    batch_size = check_positive("batch_size", batch_size)
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(
            f"class_names must name num_classes={num_classes} classes, got {len(class_names)} names"
        )
    if len(dataset) == 0:  # type: ignore[arg-type]
        raise ValueError("cannot evaluate on an empty data set")
    was_training = model.training
    model.eval()
    device = next(iter(model.parameters()), torch.empty(0)).device
    num_classes = int(num_classes)
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    try:
        for batch_index, (images, labels) in enumerate(DataLoader(dataset, batch_size=batch_size)):
            labels = torch.as_tensor(labels)
            _check_labels(labels, num_classes)
            images = images.to(device)
            if channels_last and images.ndim == 4:
                images = images.contiguous(memory_format=torch.channels_last)
            if batch_index == 0:
                logits = _first_forward(model, images)
                _check_logits(logits, num_classes)
            else:
                logits = model(images)
            predicted = logits.argmax(1).cpu()
            confusion += torch.bincount(labels * num_classes + predicted, minlength=num_classes**2).reshape(
                num_classes, num_classes
            )
    finally:
        model.train(was_training)
    names = list(class_names) if class_names else [str(index) for index in range(num_classes)]
    return Evaluation(confusion, names)


def _check_labels(labels: torch.Tensor, num_classes: int) -> None:
    outside = labels[(labels < 0) | (labels >= num_classes)]
    if outside.numel():
        raise ValueError(
            f"label {int(outside[0])} is outside [0, {num_classes}): the data set has more classes than "
            f"num_classes={num_classes}, or labels that are not class indices"
        )


def _first_conv(model: nn.Module) -> tuple[str, nn.Module] | None:
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            return name, module
    return None


def _first_forward(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    # A model that cannot take these images fails with a RuntimeError about weights and sizes (torch's
    # layers) or a ValueError naming the layer (sepconv's); say what differs between model and data.
    try:
        return model(images)
    except (RuntimeError, ValueError) as error:
        shape = tuple(images.shape[1:])
        first_conv = _first_conv(model)
        if first_conv is not None and images.ndim >= 2 and first_conv[1].in_channels != images.shape[1]:
            name, conv = first_conv
            raise ModelDataMismatchError(
                f"the model takes {conv.in_channels} input channels (layer '{name}') but the data set's "
                f"images have {images.shape[1]} (image shape {shape})"
            ) from error
        detail = " ".join(str(error).split())
        raise ModelDataMismatchError(
            f"the model failed on the data set's images of shape {shape}: {detail}"
        ) from error


def _check_logits(logits: object, num_classes: int) -> None:
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ModelDataMismatchError(
            f"the model must return logits of shape (batch, num_classes), got {shape}"
        )
    if logits.shape[1] != num_classes:
        raise ModelDataMismatchError(
            f"the model outputs {logits.shape[1]} classes but the data set has {num_classes}"
        )
