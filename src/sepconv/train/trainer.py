"""``fit(config)``: train a registered model on a named data set with Lightning, end to end.

One function composes the pieces of this package: the data splits and resumable loaders, the
:class:`~sepconv.train.module.ClassifierModule`, safe checkpoints every N steps/epochs with resume
(falling back past a corrupt newest checkpoint), per-epoch CSV + TensorBoard (+ visdom) metrics,
early stopping, ``channels_last`` / bf16 when they help, and DDP over ``devices`` x ``num_nodes``
processes (gloo on CPU, NCCL on GPU; under ``torchrun`` the environment it sets up is used).
"""

from __future__ import annotations

import json
import logging
import math
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from sepconv.train.config import TrainConfig, TrainResult

__all__ = ["build_model", "fit", "resolve_resume"]

_QUIET_WARNINGS = (
    r".*does not have many workers.*",
    r".*The number of training batches .* is smaller than the logging interval.*",
    r".*GPU available but not used.*",
    r".*`isinstance\(treespec, LeafSpec\)` is deprecated.*",
    r".*Checkpoint directory .* exists and is not empty.*",
)


def build_model(config: TrainConfig, in_channels: int, num_classes: int) -> torch.nn.Module:
    """``create_model(config.model)`` sized for the data: input channels (sepconv models) and classes."""
    from sepconv.models.registry import TORCHVISION_PREFIX, create_model

    kwargs = {"num_classes": num_classes, **config.model_kwargs}
    if not config.model.startswith(TORCHVISION_PREFIX):
        kwargs.setdefault("in_channels", in_channels)
    return create_model(config.model, **kwargs)


def resolve_resume(resume: str | Path, warn: Callable[[str], None]) -> Path:
    """The checkpoint to resume from: a ``.state`` file as given, or the newest good one in a folder.

    A folder may be the checkpoints folder or the run's output folder (its ``checkpoints/`` is used).
    """
    from sepconv.train.checkpoint import find_resume_checkpoint

    path = Path(resume)
    if path.is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"--resume: no such checkpoint or folder: {path}")
    folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    found = find_resume_checkpoint(folder, warn=warn)
    if found is None:
        raise ValueError(f"--resume: no usable checkpoint in {folder}")
    return found


def _data_module(data: Any, config: TrainConfig) -> Any:
    """A LightningDataModule that builds the per-process loaders once Lightning knows this process's rank."""
    import lightning.pytorch as pl

    from sepconv.train.data import make_loader

    class SplitsDataModule(pl.LightningDataModule):
        def train_dataloader(self) -> Any:
            world = self.trainer.world_size
            return make_loader(
                data.train,
                batch_size=config.batch_size // world,
                seed=config.seed,
                shuffle=True,
                rank=self.trainer.global_rank,
                world_size=world,
                num_workers=config.num_workers,
            )

        def val_dataloader(self) -> Any:
            world = self.trainer.world_size
            return make_loader(
                data.val,
                batch_size=max(256 // world, 1),
                seed=config.seed,
                shuffle=False,
                rank=self.trainer.global_rank,
                world_size=world,
            )

    return SplitsDataModule()


_MUST_MATCH_ON_RESUME = (
    "model",
    "model_kwargs",
    "epochs",
    "max_steps",
    "batch_size",
    "lr",
    "optimizer",
    "schedule",
)


def _check_resumable(saved: dict[str, Any], config: TrainConfig, path: Path) -> None:
    """A resumed run continues the saved optimizer and schedule, so their settings must not change."""
    for key in _MUST_MATCH_ON_RESUME:
        if key in saved and saved[key] != getattr(config, key):
            raise ValueError(
                f"--resume: {path} was written by a run with {key}={saved[key]!r}, this run has "
                f"{key}={getattr(config, key)!r}; resume with the same settings (start a new run to change them)"
            )
    saved_world = saved.get("devices", 1) * saved.get("num_nodes", 1)
    if saved_world != config.devices * config.num_nodes:
        raise ValueError(
            f"--resume: {path} was written by {saved_world} process(es), this run has "
            f"{config.devices * config.num_nodes}; resume with the same --devices and --num-nodes"
        )


def _use_bf16(
    config: TrainConfig,
    on_gpu: bool,
    model: torch.nn.Module,
    probe_shape: tuple[int, ...],
    num_classes: int,
    channels_last: bool,
) -> bool:
    """bf16 autocast: forced by ``config.bf16``, or on "auto" on GPUs that have it, else if measured faster."""
    if config.bf16 != "auto":
        return config.bf16 == "on"
    if on_gpu:
        return torch.cuda.is_bf16_supported()
    from sepconv.train.speed import faster_with_bf16

    return faster_with_bf16(model, probe_shape, num_classes, channels_last=channels_last)


def fit(
    config: TrainConfig,
    *,
    data: Any = None,
    resume: str | Path | None = None,
    warn: Callable[[str], None] | None = None,
    evaluate_test: bool = True,
) -> TrainResult:
    """Train ``config.model`` on ``config.dataset`` (or on ``data``, a :class:`~sepconv.data.DataSplits`).

    Writes into ``config.out_dir``: ``config.json``, ``metrics.csv`` (one row per epoch),
    ``checkpoints/step-*.{safetensors,state}``, ``tensorboard/``, and at the end ``model.safetensors``
    and ``result.json``. ``resume`` is a checkpoint or a folder holding them (see :func:`resolve_resume`).
    Under DDP every process runs this; only rank 0 writes files and evaluates on the test split.
    """
    config.validate()
    warn = warn or (lambda message: warnings.warn(message, stacklevel=2))
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import EarlyStopping

    from sepconv.serialization import save_model
    from sepconv.train.checkpoint import PeriodicCheckpoint, SafeCheckpointIO, load_checkpoint
    from sepconv.train.evaluation import evaluate_model
    from sepconv.train.loggers import MetricsHistory, VisdomReporter
    from sepconv.train.module import ClassifierModule
    from sepconv.train.speed import faster_memory_format

    for pattern in _QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)

    out_dir = Path(config.out_dir)
    resume_path = resolve_resume(resume, warn) if resume is not None else None
    saved_state: dict[str, Any] = {}
    resumed_checkpoint: dict[str, Any] | None = None
    if resume_path is not None:
        resumed_checkpoint = load_checkpoint(resume_path)
        saved_state = resumed_checkpoint.get("sepconv", {})
        _check_resumable(saved_state.get("config", {}), config, resume_path)

    pl.seed_everything(config.seed, workers=True, verbose=False)
    if data is None:
        from sepconv.data import load_dataset

        data = load_dataset(
            config.dataset,
            root=config.data_root,
            seed=config.seed,
            augment=config.augment,
            download=config.download,
            skip_bad_images=config.skip_bad_images,
        )
    if len(data.train) == 0:
        raise ValueError(f"data set {data.name!r} has no training samples")
    if data.skipped:
        warn(f"skipped {len(data.skipped)} unreadable image(s), e.g. {data.skipped[0]}")

    start = time.perf_counter()
    model = build_model(config, data.in_channels, data.num_classes)
    on_gpu = config.accelerator in ("gpu", "cuda") or (
        config.accelerator == "auto" and torch.cuda.is_available()
    )
    probe_shape = (
        min(config.batch_size // (config.devices * config.num_nodes), 64),
        data.in_channels,
        *data.image_size,
    )
    if "channels_last" in saved_state:  # a resumed run keeps the choices of the run it continues
        channels_last = bool(saved_state["channels_last"])
    elif config.channels_last == "auto":
        probe_model = model.cuda() if on_gpu else model
        channels_last = faster_memory_format(probe_model, probe_shape, data.num_classes)
        model.cpu()
    else:
        channels_last = config.channels_last == "on"
    if "bf16" in saved_state:
        bf16 = bool(saved_state["bf16"])
    else:
        bf16 = _use_bf16(config, on_gpu, model, probe_shape, data.num_classes, channels_last)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)

    world_size = config.devices * config.num_nodes
    batches_per_epoch = math.ceil(math.ceil(len(data.train) / world_size) / (config.batch_size // world_size))
    total_steps = config.epochs * batches_per_epoch
    if config.max_steps:
        total_steps = min(total_steps, config.max_steps)
    module = ClassifierModule(model, config, channels_last=channels_last, total_steps=total_steps)
    module.extra_state.update(channels_last=channels_last, bf16=bf16)
    history = MetricsHistory(out_dir / "metrics.csv")
    if config.visdom:
        history.listeners.append(VisdomReporter(config.visdom, warn=warn))
    checkpointer = PeriodicCheckpoint(
        out_dir / "checkpoints",
        every_steps=config.checkpoint_every_steps,
        every_epochs=config.checkpoint_every_epochs,
        keep=config.keep_checkpoints,
    )
    callbacks: list[Any] = [history, checkpointer]
    if config.early_stopping_patience and len(data.val):
        callbacks.append(
            EarlyStopping(monitor="val_loss", patience=config.early_stopping_patience, mode="min")
        )
    loggers: list[Any] = []
    if config.tensorboard:
        from lightning.pytorch.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(save_dir=str(out_dir), name="tensorboard", version=""))

    strategy: Any = "auto"
    if world_size > 1:
        from lightning.pytorch.strategies import DDPStrategy

        strategy = DDPStrategy(process_group_backend="nccl" if on_gpu else "gloo")
    trainer = pl.Trainer(
        accelerator="gpu" if on_gpu else "cpu",
        devices=config.devices,
        num_nodes=config.num_nodes,
        strategy=strategy,
        precision="bf16-mixed" if bf16 else "32-true",
        max_epochs=config.epochs,
        max_steps=config.max_steps or -1,
        logger=loggers or False,
        callbacks=callbacks,
        enable_checkpointing=True,  # PeriodicCheckpoint is the only checkpoint callback
        enable_progress_bar=config.progress_bar,
        enable_model_summary=False,
        deterministic=config.deterministic,
        use_distributed_sampler=False,
        num_sanity_val_steps=0,
        limit_val_batches=1.0 if len(data.val) else 0,
        plugins=[
            SafeCheckpointIO(model, preloaded={resume_path: resumed_checkpoint} if resume_path else None)
        ],
        default_root_dir=str(out_dir),
        log_every_n_steps=50,
    )
    if trainer.is_global_zero:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    trainer.fit(module, datamodule=_data_module(data, config), ckpt_path=resume_path)
    train_seconds = time.perf_counter() - start

    model = module.model
    result = TrainResult(
        model=model,
        history=history.rows,
        test_accuracy=None,
        train_seconds=train_seconds,
        out_dir=out_dir,
        last_checkpoint=checkpointer.last_path,
        model_path=None,
        stopped_early=trainer.should_stop and trainer.current_epoch < config.epochs,
        channels_last=channels_last,
        bf16=bf16,
        skipped_images=len(data.skipped),
        resumed_from=resume_path,
        rank=trainer.global_rank,
    )
    if not trainer.is_global_zero:
        return result
    if evaluate_test and len(data.test):
        result.test_accuracy = evaluate_model(
            model, data.test, num_classes=data.num_classes, channels_last=channels_last
        ).accuracy
    result.model_path = save_model(model.cpu(), out_dir / "model.safetensors")
    (out_dir / "result.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    return result
