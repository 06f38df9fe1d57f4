"""Accuracy, per-class accuracy and the confusion matrix of a classifier on a data set, and its plot."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

__all__ = ["Evaluation", "evaluate_model", "plot_confusion_matrix"]


@dataclass
class Evaluation:
    """``confusion[true, predicted]`` counts; accuracies are fractions in [0, 1]."""

    confusion: torch.Tensor
    class_names: list[str]

    @property
    def num_samples(self) -> int:
        return int(self.confusion.sum())

    @property
    def accuracy(self) -> float:
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
        return {
            "accuracy": self.accuracy,
            "num_samples": self.num_samples,
            "per_class_accuracy": self.per_class_accuracy,
            "class_names": self.class_names,
            "confusion_matrix": self.confusion.tolist(),
        }


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

    >>> from torch.utils.data import TensorDataset
    >>> data = TensorDataset(torch.eye(3), torch.tensor([0, 1, 1]))
    >>> result = evaluate_model(nn.Identity(), data, num_classes=3)
    >>> result.confusion.tolist(), round(result.accuracy, 3)
    ([[1, 0, 0], [0, 1, 1], [0, 0, 0]], 0.667)
    """
    if len(dataset) == 0:  # type: ignore[arg-type]
        raise ValueError("cannot evaluate on an empty data set")
    was_training = model.training
    model.eval()
    device = next(iter(model.parameters()), torch.empty(0)).device
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    for images, labels in DataLoader(dataset, batch_size=batch_size):
        images = images.to(device)
        if channels_last and images.ndim == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        predicted = model(images).argmax(1).cpu()
        labels = torch.as_tensor(labels)
        confusion += torch.bincount(labels * num_classes + predicted, minlength=num_classes**2).reshape(
            num_classes, num_classes
        )
    model.train(was_training)
    names = list(class_names) if class_names else [str(index) for index in range(num_classes)]
    return Evaluation(confusion, names)


def plot_confusion_matrix(evaluation: Evaluation, path: str | Path, *, title: str = "") -> Path:
    """Write the confusion matrix as a PNG heat map with the counts in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = evaluation.confusion.numpy()
    size = max(4.0, 0.45 * len(evaluation.class_names) + 2)
    figure, axes = plt.subplots(figsize=(size, size))
    axes.imshow(counts, cmap="Blues")
    ticks = range(len(evaluation.class_names))
    axes.set_xticks(ticks, evaluation.class_names, rotation=45, ha="right")
    axes.set_yticks(ticks, evaluation.class_names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title or f"accuracy {evaluation.accuracy:.2%} on {evaluation.num_samples} samples")
    threshold = counts.max() / 2 if counts.size else 0
    if len(evaluation.class_names) <= 30:
        for row in ticks:
            for column in ticks:
                color = "white" if counts[row, column] > threshold else "black"
                axes.text(
                    column, row, str(counts[row, column]), ha="center", va="center", fontsize=8, color=color
                )
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
