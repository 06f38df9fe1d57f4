"""What a training run is made of: :class:`TrainConfig`, validated up front, and :class:`TrainResult`.

Kept free of Lightning so that the CLI can build and check a configuration (and ``--help`` can show the
defaults) without importing the training stack.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["OPTIMIZERS", "SCHEDULES", "TrainConfig", "TrainResult"]

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("onecycle", "cosine", "constant")
_SWITCHES = ("auto", "on", "off")


@dataclass
class TrainConfig:
    """Everything that defines a training run; ``validate()`` names the first bad field.

    ``batch_size`` is the *global* batch: with ``devices=N`` each process takes ``batch_size // N``, so
    the same command gives the same optimisation recipe on one process or many.
    ``channels_last`` / ``bf16`` (autocast): ``"auto"`` times a few training steps with and without and
    keeps the faster (bf16 only if at least 10% faster; on GPUs, bf16 wherever supported); ``"on"`` /
    ``"off"`` force. A resumed run keeps the choices of the run it continues.

    >>> TrainConfig(epochs=0).validate()
    Traceback (most recent call last):
    ...
    ValueError: epochs must be a positive integer, got 0
    """

    model: str = "separable_cnn"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    dataset: str = "mnist5k"
    data_root: str | None = None
    download: bool = False
    augment: bool = False
    skip_bad_images: bool = False
    epochs: int = 5
    batch_size: int = 64
    lr: float = 4e-3
    optimizer: str = "adamw"
    momentum: float = 0.9
    weight_decay: float = 0.05
    schedule: str = "onecycle"
    label_smoothing: float = 0.05
    seed: int = 0
    deterministic: bool = False
    devices: int = 1
    num_nodes: int = 1
    accelerator: str = "auto"
    channels_last: str = "auto"
    bf16: str = "auto"
    out_dir: str = "runs/train"
    checkpoint_every_steps: int | None = None
    checkpoint_every_epochs: int | None = 1
    keep_checkpoints: int = 3
    early_stopping_patience: int | None = None
    progress_bar: bool = True
    tensorboard: bool = True
    visdom: str | None = None
    num_workers: int = 0
    max_steps: int | None = None

    def validate(self) -> TrainConfig:
        """Raise ``ValueError`` naming the first invalid field; return ``self`` when all are valid."""
        positive = ["epochs", "batch_size", "devices", "num_nodes", "keep_checkpoints"]
        optional_positive = [
            "checkpoint_every_steps",
            "checkpoint_every_epochs",
            "early_stopping_patience",
            "max_steps",
        ]
        for name in positive:
            _check_int(name, getattr(self, name), minimum=1)
        for name in optional_positive:
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), minimum=1)
        _check_int("num_workers", self.num_workers, minimum=0)
        _check_int("seed", self.seed, minimum=0)
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum!r}")
        for name, choices in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES)):
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {', '.join(choices)}; got {getattr(self, name)!r}")
        for name in ("channels_last", "bf16"):
            if getattr(self, name) not in _SWITCHES:
                raise ValueError(f"{name} must be one of {', '.join(_SWITCHES)}; got {getattr(self, name)!r}")
        if self.accelerator not in ("auto", "cpu", "gpu", "cuda"):
            raise ValueError(f"accelerator must be auto, cpu, gpu or cuda; got {self.accelerator!r}")
        if self.batch_size % (self.devices * self.num_nodes):
            raise ValueError(
                f"batch_size ({self.batch_size}) is the global batch and must be divisible by devices x num_nodes "
                f"({self.devices * self.num_nodes})"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dictionary of the fields (stored in checkpoints and ``config.json``)."""
        return dataclasses.asdict(self)


def _check_int(name: str, value: Any, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {kind}, got {value!r}")


@dataclass
class TrainResult:
    """What a finished (or stopped) run produced; ``history`` holds one dict per completed epoch."""

    model: Any
    history: list[dict[str, float]]
    test_accuracy: float | None
    train_seconds: float
    out_dir: Path
    last_checkpoint: Path | None
    model_path: Path | None
    stopped_early: bool = False
    channels_last: bool = False
    bf16: bool = False
    skipped_images: int = 0
    resumed_from: Path | None = None
    rank: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (no model)."""
        return {
            "history": self.history,
            "test_accuracy": self.test_accuracy,
            "train_seconds": self.train_seconds,
            "out_dir": str(self.out_dir),
            "last_checkpoint": None if self.last_checkpoint is None else str(self.last_checkpoint),
            "model_path": None if self.model_path is None else str(self.model_path),
            "stopped_early": self.stopped_early,
            "channels_last": self.channels_last,
            "bf16": self.bf16,
            "skipped_images": self.skipped_images,
            "resumed_from": None if self.resumed_from is None else str(self.resumed_from),
        }
