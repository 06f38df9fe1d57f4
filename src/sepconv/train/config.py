"""What a training run is made of: :class:`TrainConfig`, validated up front, and :class:`TrainResult`.

Kept free of Lightning so that the CLI can build and check a configuration (and ``--help`` can show the
defaults) without importing the training stack. Each field carries its command-line help in its
metadata: ``sepconv train``'s flags are derived from these fields, so the two cannot drift apart.
A field marked ``affects_result`` changes what a run computes; resuming a run with a different value is
refused (:func:`result_differences`).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sepconv.checks import (
    check_choice,
    check_finite_json,
    check_float,
    check_int,
    check_non_negative,
    check_positive,
)
from sepconv.errors import ParameterError

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "SWITCHES",
    "TrainConfig",
    "TrainResult",
    "parse_visdom_url",
    "result_differences",
]

#: The optimizers ``TrainConfig.optimizer`` may name.
OPTIMIZERS = ("adamw", "sgd")
#: The learning-rate schedules ``TrainConfig.schedule`` may name.
SCHEDULES = ("onecycle", "cosine", "constant")
#: The values of the on/off settings that may also be left to sepconv (``auto``).
SWITCHES = ("auto", "on", "off")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda")
# numpy (and so Lightning's seed_everything) accepts 32-bit seeds only.
MAX_SEED = 2**32 - 1


def _option(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    flag: str | None = None,
    affects_result: bool = False,
    cli: bool = True,
    default_factory: Any = dataclasses.MISSING,
    **argparse_kwargs: Any,
) -> Any:
    """A dataclass field with what the CLI needs to expose it (help, flag name, extra argparse kwargs)."""
    metadata = {
        "help": help,
        "flag": flag,
        "affects_result": affects_result,
        "cli": cli,
        "argparse": argparse_kwargs,
    }
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class TrainConfig:
    """Everything that defines a training run; ``validate()`` names the first bad field.

    ``batch_size`` is the *global* batch: with ``devices=N`` each process takes ``batch_size // N`` and
    BatchNorm statistics are synchronised, so the same command is the same computation on one process or
    many. ``channels_last`` / ``bf16`` (autocast): ``"auto"`` follows a fixed rule (see
    :func:`sepconv.train.precision.choose_precision`: the model, the device and its CPU features, never a
    timing), ``"on"`` / ``"off"`` force. The choice is stored with the run.

    ``init_from`` starts from a sepconv model file: the model (architecture and weights) is the file's,
    so ``model_kwargs`` must stay empty and ``model`` is the file's model name (left at its default,
    :func:`~sepconv.train.trainer.fit` sets it; another name is refused).

    >>> TrainConfig(epochs=0).validate()
    Traceback (most recent call last):
    ...
    sepconv.errors.ParameterError: epochs must be a positive integer, got 0
    """

    model: str = _option(
        "separable_cnn", "model name (see sepconv.models.list_models())", affects_result=True
    )
    model_kwargs: dict[str, Any] = _option(  # noqa: RUF009 (a field(), as the others)
        help="keyword argument of the model builder, VALUE as JSON (e.g. widths=[16,32,64,128]); repeatable",
        flag="--model-arg",
        affects_result=True,
        default_factory=dict,
        action="append",
        metavar="KEY=VALUE",
    )
    init_from: str | None = _option(
        None,
        "start from the weights of this sepconv model file (.safetensors, or a checkpoint's .state): its "
        "architecture too, so the model name is the file's and --model-arg is refused; new optimizer, "
        "schedule and step count",
        affects_result=True,
        metavar="FILE",
    )
    dataset: str = _option(
        "mnist5k",
        "mnist5k (embedded), synthetic, mnist, fashion_mnist, cifar10 or imagefolder:PATH",
        affects_result=True,
    )
    data_root: str | None = _option(None, "where torchvision data sets live (with --download)")
    download: bool = _option(False, "allow downloading torchvision data sets")
    augment: bool = _option(False, "light random augmentation of training images", affects_result=True)
    skip_bad_images: bool = _option(
        False, "skip unreadable images in an image folder (listed)", affects_result=True
    )
    epochs: int = _option(5, "epochs to train", affects_result=True)
    batch_size: int = _option(64, "global batch size (split between processes)", affects_result=True)
    lr: float = _option(4e-3, "peak learning rate", affects_result=True)
    optimizer: str = _option("adamw", "optimizer", affects_result=True, choices=OPTIMIZERS)
    momentum: float = _option(0.9, "SGD momentum (Nesterov)", affects_result=True)
    weight_decay: float = _option(0.05, "on conv/linear weights only", affects_result=True)
    schedule: str = _option("onecycle", "per-step lr schedule", affects_result=True, choices=SCHEDULES)
    label_smoothing: float = _option(0.05, "label smoothing of the cross-entropy", affects_result=True)
    seed: int = _option(0, "seed of the split, initialisation and order", affects_result=True)
    deterministic: bool = _option(False, "deterministic algorithms only (slower)")
    devices: int = _option(1, "processes (CPU) or GPUs on this node", affects_result=True)
    num_nodes: int = _option(1, "nodes taking part (see below)", affects_result=True)
    accelerator: str = _option("auto", "where to train", choices=ACCELERATORS)
    channels_last: str = _option(
        "auto",
        "channels_last memory format (auto: a fixed rule, see the training guide in the docs)",
        choices=SWITCHES,
    )
    bf16: str = _option(
        "auto", "bf16 autocast (auto: on where the hardware has bf16 units)", choices=SWITCHES
    )
    fused: str = _option(
        "auto", "fused BatchNorm+activation kernels (auto: on when training on the CPU)", choices=SWITCHES
    )
    out_dir: str = _option("runs/train", "output folder; it belongs to this run", flag="--out")
    overwrite: bool = _option(False, "clear --out first if it holds an earlier run's files")
    checkpoint_every_steps: int | None = _option(
        None, "also checkpoint every STEPS optimizer steps", flag="--checkpoint-every", metavar="STEPS"
    )
    checkpoint_every_epochs: int | None = _option(
        1, "checkpoint every EPOCHS epochs; 0 = only at the end", metavar="EPOCHS"
    )
    keep_checkpoints: int = _option(3, "checkpoints kept (newest)", metavar="K")
    early_stopping_patience: int | None = _option(
        None,
        "stop after EPOCHS without val gain",
        flag="--early-stopping",
        affects_result=True,
        metavar="EPOCHS",
    )
    progress_bar: bool = _option(True, cli=False)
    tensorboard: bool = _option(True, "write TensorBoard logs", flag="--no-tensorboard")
    visdom: str | None = _option(
        None,
        "also plot to a visdom server (default URL http://localhost:8097); never stops training",
        nargs="?",
        const="http://localhost:8097",
        metavar="URL",
    )
    num_workers: int = _option(0, "data loader worker processes")
    max_steps: int | None = _option(None, "stop after this many optimizer steps", affects_result=True)

    def validate(self) -> TrainConfig:
        """Raise a :class:`~sepconv.errors.ParameterError` naming the first invalid field; else return ``self``.

        Numbers are checked by :mod:`sepconv.checks` and stored back as plain Python numbers (a numpy
        integer becomes an ``int``), so that the config stays JSON.
        """
        for name in ("epochs", "batch_size", "devices", "num_nodes", "keep_checkpoints"):
            setattr(self, name, check_positive(name, getattr(self, name)))
        for name in ("checkpoint_every_steps", "early_stopping_patience", "max_steps"):
            if getattr(self, name) is not None:
                setattr(self, name, check_positive(name, getattr(self, name)))
        if self.checkpoint_every_epochs is not None:
            self.checkpoint_every_epochs = check_non_negative(
                "checkpoint_every_epochs", self.checkpoint_every_epochs
            )
        self.num_workers = check_non_negative("num_workers", self.num_workers)
        self.seed = check_int("seed", self.seed, minimum=0, maximum=MAX_SEED)
        float_bounds: tuple[tuple[str, dict[str, Any]], ...] = (
            ("lr", {"minimum": 0, "min_inclusive": False}),
            ("weight_decay", {"minimum": 0}),
            ("label_smoothing", {"minimum": 0, "maximum": 1, "max_inclusive": False}),
            ("momentum", {"minimum": 0, "maximum": 1, "max_inclusive": False}),
        )
        for name, bounds in float_bounds:
            value = check_float(name, getattr(self, name), **bounds)
            if not isinstance(getattr(self, name), int | float):
                setattr(self, name, value)  # a numpy float32 is no JSON; a Python int stays as given
        for name, choices in (
            ("optimizer", OPTIMIZERS),
            ("schedule", SCHEDULES),
            ("channels_last", SWITCHES),
            ("bf16", SWITCHES),
            ("fused", SWITCHES),
            ("accelerator", ACCELERATORS),
        ):
            check_choice(name, getattr(self, name), choices)
        for name in ("model", "dataset"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name).strip():
                raise ParameterError(
                    f"{name} must be a non-empty name, got {getattr(self, name)!r}", param=name
                )
        if not isinstance(self.model_kwargs, dict) or not all(
            isinstance(key, str) for key in self.model_kwargs
        ):
            raise ParameterError(
                f"model_kwargs must be a dict with string keys, got {self.model_kwargs!r}",
                param="model_kwargs",
            )
        check_finite_json("model_kwargs", self.model_kwargs)
        if self.init_from is not None:
            if not isinstance(self.init_from, str | os.PathLike) or not os.fspath(self.init_from).strip():
                raise ParameterError(
                    f"init_from must be the path of a sepconv model file (.safetensors), got {self.init_from!r}",
                    param="init_from",
                )
            if self.model_kwargs:
                raise ParameterError(
                    f"model_kwargs must be empty with init_from (the model file {os.fspath(self.init_from)} "
                    f"fixes the architecture), got {self.model_kwargs!r}",
                    param="model_kwargs",
                )
        if self.visdom is not None:
            parse_visdom_url(self.visdom)  # a typo is refused here, before the run claims its folder
        if self.batch_size % (self.devices * self.num_nodes):
            raise ParameterError(
                f"batch_size ({self.batch_size}) is the global batch and must be divisible by devices x num_nodes "
                f"({self.devices * self.num_nodes})",
                param="batch_size",
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dictionary of the fields (stored in checkpoints and ``config.json``)."""
        return dataclasses.asdict(self)


def result_differences(saved: dict[str, Any], config: TrainConfig) -> list[str]:
    """``"name saved -> now"`` for every field that changes the result and differs from ``saved``.

    >>> result_differences(TrainConfig(seed=1).to_dict(), TrainConfig(seed=5, out_dir="elsewhere"))
    ['seed 1 -> 5']
    """
    differences = []
    for item in dataclasses.fields(TrainConfig):
        if not item.metadata.get("affects_result") or item.name not in saved:
            continue
        before, now = saved[item.name], getattr(config, item.name)
        if before != now:
            differences.append(f"{item.name} {before!r} -> {now!r}")
    return differences


def parse_visdom_url(url: str) -> tuple[str, int]:
    """``"http://host:port"`` (or ``host:port``, or ``host``) to ``("http://host", port)``; port 8097 by default.

    A URL that cannot reach a server (another scheme, no host, a port outside 1-65535, a path, query
    or fragment, which visdom would ignore) is a ValueError naming it: visdom never stops a run that
    has started, so a typo must be caught before (``TrainConfig.validate``).

    >>> parse_visdom_url("localhost:9000")
    ('http://localhost', 9000)
    >>> parse_visdom_url("http://10.0.0.5")
    ('http://10.0.0.5', 8097)
    >>> parse_visdom_url("http://localhost:80a")
    Traceback (most recent call last):
    sepconv.errors.ParameterError: visdom must be a URL like http://host:port (port 1-65535), got 'http://localhost:80a'
    """
    message = f"visdom must be a URL like http://host:port (port 1-65535), got {url!r}"
    if not isinstance(url, str):
        raise ParameterError(message, param="visdom")
    parts = urlsplit(url if "://" in url else f"http://{url}")
    try:
        port = parts.port
    except ValueError:  # not a number, or outside 0-65535
        raise ParameterError(message, param="visdom") from None
    host = parts.hostname or ""
    if (
        parts.scheme not in ("http", "https")
        or not host
        or any(character.isspace() for character in host)
        or port == 0
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
    ):
        raise ParameterError(message, param="visdom")
    return f"{parts.scheme}://{host}", port or 8097


@dataclass
class TrainResult:
    """What a finished (or stopped) run produced; ``history`` holds one dict per completed epoch.

    ``init_from_sha256`` is the checksum of the model file the run started from (``init_from``), if any.
    """

    model: Any
    history: list[dict[str, float]]
    test_accuracy: float | None
    train_seconds: float
    out_dir: Path
    last_checkpoint: Path | None
    model_path: Path | None
    run_id: str = ""
    model_name: str = ""
    stopped_early: bool = False
    channels_last: bool = False
    bf16: bool = False
    precision_reason: str = ""
    fused: bool = False
    skipped_images: int = 0
    resumed_from: Path | None = None
    rank: int = 0
    init_from_sha256: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (no model)."""
        return {
            "run_id": self.run_id,
            "model": self.model_name,
            "history": self.history,
            "test_accuracy": self.test_accuracy,
            "train_seconds": self.train_seconds,
            "out_dir": str(self.out_dir),
            "last_checkpoint": None if self.last_checkpoint is None else str(self.last_checkpoint),
            "model_path": None if self.model_path is None else str(self.model_path),
            "stopped_early": self.stopped_early,
            "channels_last": self.channels_last,
            "bf16": self.bf16,
            "fused": self.fused,
            "precision_reason": self.precision_reason,
            "skipped_images": self.skipped_images,
            "resumed_from": None if self.resumed_from is None else str(self.resumed_from),
            "init_from_sha256": self.init_from_sha256,
        }
