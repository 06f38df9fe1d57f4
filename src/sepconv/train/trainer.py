"""``fit(config)``: train a registered model on a named data set with Lightning, end to end.

A run is a sequence of named stages, each a function of its own:

0. :func:`resolve_init_from` — with ``init_from``, the model file the run starts from, checked, and the
   run's model name taken from it;
1. :func:`find_resume_point` — the checkpoint a resumed run continues (newest good one of that run);
2. :func:`load_training_data` and :func:`check_data` — the splits, refused when unusable;
3. :func:`build_model` and :func:`check_model_fits_data` — the model (``create_model``, or the
   ``init_from`` file's architecture and weights), checked on one real image;
4. :func:`~sepconv.train.precision.choose_precision` — memory format and bf16 by a fixed rule;
5. :func:`check_resume_matches` — a resumed run changes nothing that changes the result, and
   :func:`check_not_finished` — a finished run is not resumed (it is left as it is);
6. :func:`~sepconv.train.run_folder.claim_run_folder` — the output folder, locked, for this run only;
7. :func:`make_trainer` — the Lightning ``Trainer`` with our module, checkpoints and loggers;
8. :func:`finish_run` — test accuracy, ``model.safetensors`` and ``result.json``.

Under DDP (``devices`` x ``num_nodes`` processes; gloo on CPU, NCCL on GPU) every process runs
:func:`fit`; BatchNorm statistics are synchronised so that N processes compute what one process does
with the same global batch, and only rank 0 claims the folder, writes files and evaluates.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sepconv.errors import ParameterError
from sepconv.train.config import TrainConfig, TrainResult, result_differences
from sepconv.train.precision import PrecisionChoice, choose_precision
from sepconv.train.run_folder import model_file_path

__all__ = [
    "InitialModel",
    "ResumePoint",
    "build_model",
    "check_data",
    "check_model_fits_data",
    "check_not_finished",
    "check_resume_matches",
    "data_fingerprint",
    "find_resume_point",
    "find_resume_run_folder",
    "finish_run",
    "fit",
    "load_training_data",
    "make_trainer",
    "read_initial_model",
    "resolve_init_from",
]

_QUIET_WARNINGS = (
    r".*does not have many workers.*",
    r".*The number of training batches .* is smaller than the logging interval.*",
    r".*GPU available but not used.*",
    r".*`isinstance\(treespec, LeafSpec\)` is deprecated.*",
    r".*Checkpoint directory .* exists and is not empty.*",
    # Epoch metrics are already reduced over the processes (ClassifierModule._reduce) before logging.
    r".*sync_dist=True.*",
)
_LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric", "lightning")


@dataclass
class ResumePoint:
    """A checkpoint to continue: its state file, its loaded contents, its run and the run's folder."""

    path: Path
    checkpoint: dict[str, Any]
    run_id: str
    folder: Path


@dataclass(frozen=True)
class InitialModel:
    """The model file a run starts from (``TrainConfig.init_from``): its path, what it holds, its checksum.

    ``sha256`` is the checksum stored in the file (over its recipe and weights); a resumed run must find
    the same one, so that it continues what it started from.
    """

    path: Path
    model_name: str
    transforms: tuple[str, ...]
    sha256: str

    def describe(self) -> str:
        """The model name followed by the transforms applied to it, e.g. ``standard_cnn + fold_batchnorm``."""
        return " + ".join((self.model_name, *self.transforms))


def read_initial_model(init_from: str | os.PathLike[str]) -> InitialModel:
    """What the model file ``init_from`` holds (model name, transforms, checksum), checked, no model built.

    A missing file is a ``FileNotFoundError``; a file that is not a sound sepconv model file is a
    :class:`~sepconv.io.CheckpointError`; both name the file.
    """
    from sepconv.convert.replay import TRANSFORMS
    from sepconv.io import CheckpointError, read_model_metadata
    from sepconv.io.recipe import check_recipe

    path = model_file_path(init_from)
    if not path.is_file():
        raise FileNotFoundError(f"init_from: model file not found: {path}")
    document = read_model_metadata(path)
    try:
        spec, transforms = check_recipe(document, registry=TRANSFORMS)
    except ValueError as error:
        raise CheckpointError(f"{path}: {error}") from None
    return InitialModel(path, spec["name"], tuple(step["name"] for step in transforms), document["sha256"])


def resolve_init_from(config: TrainConfig) -> tuple[TrainConfig, InitialModel | None]:
    """``config`` with the model name of its ``init_from`` file, and that file; ``(config, None)`` without one.

    The file fixes the architecture, so ``config.model`` may only be left at its default (it becomes the
    file's model name, so that the run's records name the model it trains) or name the file's model
    already; any other name is a ``ValueError`` naming both. A dataclass cannot tell a default from the
    same value passed explicitly, so "left at its default" is "equal to the default": the one name that
    slips through unchecked is then replaced by the file's, which is the model trained either way.
    """
    if config.init_from is None:
        return config, None
    initial = read_initial_model(config.init_from)
    if config.model not in (TrainConfig.model, initial.model_name):
        raise ValueError(
            f"model {config.model!r} differs from the model in init_from {initial.path} "
            f"({initial.describe()}); leave model at its default or set it to {initial.model_name!r}"
        )
    resolved = dataclasses.replace(config, model=initial.model_name, init_from=os.fspath(config.init_from))
    return resolved, initial


def find_resume_run_folder(resume: str | Path) -> Path:
    """The run folder that ``resume`` (a ``.state`` file, a run folder or its ``checkpoints/``) belongs to."""
    from sepconv.train.run_folder import read_run_file

    path = Path(resume)
    if path.is_file():
        return path.parent.parent if path.parent.name == "checkpoints" else path.parent
    if not path.is_dir():
        raise ParameterError(f"resume: no such checkpoint or folder: {path}", param="resume")
    return path.parent if path.name == "checkpoints" and read_run_file(path) is None else path


def find_resume_point(resume: str | Path, warn: Callable[[str], None]) -> ResumePoint:
    """The checkpoint ``resume`` names: a ``.state`` file, or the newest good one of the run in a folder.

    A folder may be the run's output folder or its ``checkpoints/``. Only checkpoints of the run that
    owns the folder (the id in its ``run.json``) are considered.
    """
    from sepconv.train.checkpoint import checkpoint_run_id, find_resume_checkpoint, load_checkpoint
    from sepconv.train.run_folder import read_run_file

    path = Path(resume)
    folder = find_resume_run_folder(path)
    if path.is_file():
        run_id = checkpoint_run_id(path)
        if run_id is None:
            raise ParameterError(
                f"resume: {path} is not a sepconv checkpoint (step-N-RUNID.state)", param="resume"
            )
        return ResumePoint(path, load_checkpoint(path), run_id, folder)
    run = read_run_file(folder)
    if run is None:
        raise ParameterError(
            f"resume: {folder} is not a sepconv training run folder (it has no run.json)", param="resume"
        )
    found = find_resume_checkpoint(folder / "checkpoints", run["run_id"], warn=warn)
    if found is None:
        raise ParameterError(
            f"resume: no usable checkpoint of run {run['run_id']} in {folder / 'checkpoints'}", param="resume"
        )
    return ResumePoint(found, load_checkpoint(found), run["run_id"], folder)


def check_not_finished(point: ResumePoint) -> None:
    """Refuse to resume a run that finished at ``point`` (its ``result.json`` names that checkpoint).

    Lightning would load the checkpoint, find nothing left to train and rewrite ``model.safetensors``
    and ``result.json`` (with no checkpoint of its own); a finished run is left exactly as it is. A run
    whose last checkpoint is unusable, so that an earlier one is resumed, still continues.
    """
    from sepconv.train.run_folder import RESULT_FILE, RunFolderError, finished_run

    result = finished_run(point.folder, point.run_id)
    last = None if result is None else result.get("last_checkpoint")
    if last is not None and Path(str(last)).name == point.path.name:
        raise RunFolderError(
            f"resume: run {point.run_id} in {point.folder} has finished ({point.folder / RESULT_FILE}); "
            "nothing to resume and nothing was changed; start a new run in another folder, or overwrite this one",
            param="resume",
        )


def load_training_data(config: TrainConfig) -> Any:
    """The :class:`~sepconv.data.DataSplits` that ``config`` names (split by ``config.seed``)."""
    from sepconv.data import load_dataset

    return load_dataset(
        config.dataset,
        root=config.data_root,
        seed=config.seed,
        augment=config.augment,
        download=config.download,
        skip_bad_images=config.skip_bad_images,
    )


def check_data(data: Any, warn: Callable[[str], None]) -> None:
    """Refuse data a classifier cannot learn from; say what was skipped."""
    if len(data.train) == 0:
        raise ValueError(f"data set {data.name!r} has no training samples")
    if data.num_classes < 2:
        raise ValueError(
            f"data set {data.name!r} has {data.num_classes} class(es); a classifier needs at least 2"
        )
    if data.skipped:
        listed = ", ".join(str(item) for item in data.skipped[:3])
        more = f" and {len(data.skipped) - 3} more" if len(data.skipped) > 3 else ""
        warn(f"skipped {len(data.skipped)} file(s): {listed}{more}")


def data_fingerprint(data: Any) -> dict[str, Any]:
    """What a resumed run must find again in its data: classes, image shape and split sizes."""
    return {
        "name": data.name,
        "num_classes": int(data.num_classes),
        "in_channels": int(data.in_channels),
        "image_size": [int(size) for size in data.image_size],
        "split_sizes": [len(data.train), len(data.val), len(data.test)],
        "class_names": [str(name) for name in data.class_names],
    }


def build_model(config: TrainConfig, in_channels: int, num_classes: int) -> torch.nn.Module:
    """``create_model(config.model)`` sized for the data: input channels (sepconv models) and classes.

    With ``config.init_from``, the model saved in that file instead (its recipe rebuilt, transforms
    included, and its weights), in training mode; its channels and classes are the file's, for
    :func:`check_model_fits_data` to compare with the data.
    """
    from sepconv.models.registry import TORCHVISION_PREFIX, create_model

    if config.init_from is not None:
        from sepconv.convert.replay import load_model

        return load_model(model_file_path(config.init_from)).train()

    kwargs = {"num_classes": num_classes, **config.model_kwargs}
    if not config.model.startswith(TORCHVISION_PREFIX):
        kwargs.setdefault("in_channels", in_channels)
    return create_model(config.model, **kwargs)


def check_model_fits_data(
    model: torch.nn.Module, data: Any, model_name: str, *, classes_hint: str | None = None
) -> None:
    """Run one training image through ``model`` (eval mode, no state changes) and check its class count.

    Catches a model built for other images (channels, a size too small for its pooling) or for another
    number of classes before any training, with both numbers in the message. ``classes_hint`` replaces
    the advice given for a wrong class count (``set num_classes=N``), for a model that cannot be rebuilt.
    """
    image = data.train[0][0].unsqueeze(0)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = model(image)
    except (RuntimeError, ValueError) as error:  # torch's shape errors; sepconv layers' channel checks
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(
            f"model {model_name} does not accept the images of data set {data.name!r} "
            f"({data.in_channels} channel(s), {'x'.join(map(str, data.image_size))}): {reason}"
        ) from None
    finally:
        model.train(was_training)
    if logits.ndim != 2 or logits.shape[1] != data.num_classes:
        hint = classes_hint or f"set num_classes={data.num_classes} (or leave it out)"
        raise ValueError(
            f"model {model_name} gives {tuple(logits.shape[1:])} outputs per image, but data set "
            f"{data.name!r} has {data.num_classes} classes; {hint}"
        )


def check_resume_matches(
    point: ResumePoint,
    config: TrainConfig,
    precision: PrecisionChoice,
    fingerprint: dict[str, Any],
    *,
    init_sha256: str | None = None,
) -> None:
    """Refuse a resume whose settings differ from the saved run in anything that changes the result.

    Names every difference (model and arguments, data set and its contents, split seed, recipe, number
    of processes, memory format and precision, the contents of the ``init_from`` file: ``init_sha256``)
    in one line.
    """
    saved = point.checkpoint.get("sepconv", {})
    differences = result_differences(saved.get("config", {}), config)
    saved_sha256 = saved.get("init_from_sha256")
    # The same init_from path with other contents (a changed path is already named above).
    if saved_sha256 != init_sha256 and not any(item.startswith("init_from ") for item in differences):
        differences.append(f"init_from {config.init_from} contents (sha256) {saved_sha256} -> {init_sha256}")
    saved_precision = saved.get("precision", {})
    for key in ("channels_last", "bf16", "fused"):
        if key in saved_precision and bool(saved_precision[key]) != getattr(precision, key):
            differences.append(f"{key} (resolved) {bool(saved_precision[key])} -> {getattr(precision, key)}")
    saved_data = saved.get("data", {})
    for key, now in fingerprint.items():
        if key in saved_data and saved_data[key] != now:
            differences.append(f"data {key} {saved_data[key]!r} -> {now!r}")
    if differences:
        raise ParameterError(
            f"resume: {point.path} was written with other settings: {'; '.join(differences)}; resume with the "
            "settings of that run, or start a new one (in another folder, or overwriting this one)",
            param="resume",
        )
    if Path(config.out_dir).resolve() != point.folder.resolve():
        raise ParameterError(
            f"resume: {point.path} belongs to the run in {point.folder}, but the output folder is "
            f"{config.out_dir}; resume into {point.folder}",
            param="resume",
        )


def _is_launch_rank_zero() -> bool:
    """Whether this process is rank 0 as the launcher (torchrun, Lightning's) set it up; True if none ran."""
    return all(int(os.environ.get(name, 0)) == 0 for name in ("RANK", "NODE_RANK", "LOCAL_RANK"))


def _on_gpu(config: TrainConfig) -> bool:
    """Whether the run trains on GPUs; refuses ``accelerator="gpu"`` where none is visible."""
    if config.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"accelerator {config.accelerator!r}: no CUDA GPU is visible to PyTorch here; use cpu or auto"
        )
    return config.accelerator in ("gpu", "cuda") or (
        config.accelerator == "auto" and torch.cuda.is_available()
    )


def _total_steps(config: TrainConfig, train_size: int) -> int:
    world_size = config.devices * config.num_nodes
    batches_per_epoch = math.ceil(math.ceil(train_size / world_size) / (config.batch_size // world_size))
    total = config.epochs * batches_per_epoch
    return min(total, config.max_steps) if config.max_steps else total


def _data_module(data: Any, config: TrainConfig) -> Any:
    """A LightningDataModule that builds the per-process loaders once Lightning knows this process's rank."""
    import lightning.pytorch as pl

    from sepconv.train.data import make_loader

    class SplitsDataModule(pl.LightningDataModule):
        def _loader(self, dataset: Any, batch_size: int, shuffle: bool, workers: int) -> Any:
            trainer = self.trainer
            if trainer is None:  # Lightning asks for loaders only once the module is attached
                raise RuntimeError("SplitsDataModule's loaders need the Trainer it is attached to")
            world = trainer.world_size
            return make_loader(
                dataset,
                batch_size=max(batch_size // world, 1),
                seed=config.seed,
                shuffle=shuffle,
                rank=trainer.global_rank,
                world_size=world,
                num_workers=workers,
            )

        def train_dataloader(self) -> Any:
            return self._loader(data.train, config.batch_size, True, config.num_workers)

        def val_dataloader(self) -> Any:
            return self._loader(data.val, 256, False, 0)

    return SplitsDataModule()


@dataclass
class _RunParts:
    trainer: Any
    module: Any
    history: Any
    checkpointer: Any


def make_trainer(
    config: TrainConfig,
    model: torch.nn.Module,
    data: Any,
    *,
    precision: PrecisionChoice,
    run_id: str,
    run_record: dict[str, Any],
    resume: ResumePoint | None,
    interrupt: Any,
    warn: Callable[[str], None],
) -> _RunParts:
    """The Lightning ``Trainer`` and the callbacks of one run (nothing runs yet)."""
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import EarlyStopping

    from sepconv.train.checkpoint import PeriodicCheckpoint, SafeCheckpointIO
    from sepconv.train.loggers import MetricsHistory, VisdomReporter
    from sepconv.train.module import ClassifierModule

    out_dir = Path(config.out_dir)
    world_size = config.devices * config.num_nodes
    module = ClassifierModule(
        model,
        config,
        precision=precision,
        run_id=run_id,
        total_steps=_total_steps(config, len(data.train)),
        run_record=run_record,
    )
    history = MetricsHistory(out_dir / "metrics.csv")
    if config.visdom:
        history.listeners.append(VisdomReporter(config.visdom, warn=warn))
    checkpointer = PeriodicCheckpoint(
        out_dir / "checkpoints",
        every_steps=config.checkpoint_every_steps,
        every_epochs=config.checkpoint_every_epochs or None,
        keep=config.keep_checkpoints,
        interrupt=interrupt,
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
    on_gpu = _on_gpu(config)
    strategy: Any = "auto"
    if world_size > 1:
        from lightning.pytorch.strategies import DDPStrategy

        strategy = DDPStrategy(process_group_backend="nccl" if on_gpu else "gloo")
    preloaded = {resume.path: resume.checkpoint} if resume is not None else None
    trainer = pl.Trainer(
        accelerator="gpu" if on_gpu else "cpu",
        devices=config.devices,
        num_nodes=config.num_nodes,
        strategy=strategy,
        # One global batch, one set of BatchNorm statistics: on GPUs nn.SyncBatchNorm; on CPU, where DDP
        # refuses it, ClassifierModule.setup installs sepconv.train.sync_norm instead.
        sync_batchnorm=world_size > 1 and on_gpu,
        precision="32-true",  # bf16 autocast is applied by the module (see ClassifierModule.setup)
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
        plugins=[SafeCheckpointIO(model, preloaded=preloaded)],
        default_root_dir=str(out_dir),
        log_every_n_steps=50,
    )
    return _RunParts(trainer, module, history, checkpointer)


@contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Hide Lightning's chatter for the duration of a run, leaving global settings as they were."""

    class _WarningsAndAbove(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return record.levelno >= logging.WARNING

    quiet = _WarningsAndAbove()
    handlers = [handler for name in _LIGHTNING_LOGGERS for handler in logging.getLogger(name).handlers]
    for handler in handlers:
        handler.addFilter(quiet)
    try:
        with warnings.catch_warnings():
            for pattern in _QUIET_WARNINGS:
                warnings.filterwarnings("ignore", message=pattern)
            yield
    finally:
        for handler in handlers:
            handler.removeFilter(quiet)


def finish_run(
    config: TrainConfig,
    parts: _RunParts,
    data: Any,
    *,
    evaluate_test: bool,
    started: float,
    resumed_from: Path | None,
    init_from_sha256: str | None = None,
) -> TrainResult:
    """Evaluate on the test split and write ``model.safetensors`` and ``result.json`` (rank 0 only)."""
    from sepconv.convert.replay import save_model
    from sepconv.io import atomic_write_bytes
    from sepconv.train.evaluation import evaluate_model
    from sepconv.train.keyed_dropout import restore_dropout
    from sepconv.train.sync_norm import restore_batchnorm

    trainer, module, checkpointer = parts.trainer, parts.module, parts.checkpointer
    out_dir = Path(config.out_dir)
    model = module.model
    restore_batchnorm(model)
    restore_dropout(model)
    precision: PrecisionChoice = module.precision_choice
    result = TrainResult(
        model=model,
        history=parts.history.rows,
        test_accuracy=None,
        train_seconds=time.perf_counter() - started,
        out_dir=out_dir,
        last_checkpoint=checkpointer.last_path,
        model_path=None,
        run_id=module.run_id,
        model_name=config.model,
        stopped_early=trainer.should_stop and trainer.current_epoch < config.epochs,
        channels_last=precision.channels_last,
        bf16=precision.bf16,
        fused=precision.fused,
        precision_reason=precision.reason,
        skipped_images=len(data.skipped),
        resumed_from=resumed_from,
        rank=trainer.global_rank,
        init_from_sha256=init_from_sha256,
    )
    if not trainer.is_global_zero:
        return result
    if evaluate_test and len(data.test):
        result.test_accuracy = evaluate_model(
            model, data.test, num_classes=data.num_classes, channels_last=precision.channels_last
        ).accuracy
    result.model_path = save_model(model.cpu(), out_dir / "model.safetensors")
    atomic_write_bytes(out_dir / "result.json", (json.dumps(result.to_dict(), indent=2) + "\n").encode())
    return result


def _warn(message: str) -> None:
    warnings.warn(message, stacklevel=3)


def fit(
    config: TrainConfig,
    *,
    data: Any = None,
    resume: str | Path | None = None,
    warn: Callable[[str], None] | None = None,
    evaluate_test: bool = True,
) -> TrainResult:
    """Train ``config.model`` on ``config.dataset`` (or on ``data``, a :class:`~sepconv.data.DataSplits`).

    With ``config.init_from``, training starts from the weights (and architecture) of that model file,
    with a new optimizer and schedule from step 0 (see :func:`resolve_init_from` for the model name).

    Writes into ``config.out_dir`` (which this run locks and owns; see
    :mod:`sepconv.train.run_folder`): ``run.json``, ``config.json``, ``metrics.csv`` (one row per epoch),
    ``checkpoints/step-N-RUNID.{safetensors,state}``, ``tensorboard/``, and at the end
    ``model.safetensors`` and ``result.json``. ``resume`` is a checkpoint or a run folder (see
    :func:`find_resume_point`). A first Ctrl-C writes a checkpoint and raises ``KeyboardInterrupt``
    whose message says where it is and how to resume.

    While Lightning trains, freed tensor memory stays in the process for the next step instead of being
    mapped and zeroed again by the kernel (:func:`sepconv.train.heap.kept_heap`; glibc only), and is
    given back when training ends.

    Everything is checked before the folder is claimed (settings, folder, data, model against data,
    a resume against its run); a new run that still fails before its first training step gives the
    folder back (:meth:`~sepconv.train.run_folder.RunFolder.abandon`). ``overwrite`` with ``resume``
    is refused, and so is resuming a finished run (its ``result.json``), which changes nothing.
    """
    from sepconv.io import atomic_write_bytes
    from sepconv.train import processes
    from sepconv.train.heap import kept_heap
    from sepconv.train.run_folder import check_out_dir, claim_run_folder

    processes.die_with_launcher()  # a process Lightning started for this run ends with its launcher
    config.validate()
    if config.overwrite and resume is not None:
        raise ValueError(
            "overwrite clears the output folder and resume continues the run in it: give one of them, not both"
        )
    check_out_dir(config.out_dir)
    processes.check_process_count(config.devices, on_gpu=_on_gpu(config))
    # Lightning (seconds to import) only after the checks that need none of it: a refusal is quick.
    import lightning.pytorch as pl

    from sepconv.train.checkpoint import InterruptRequest, TrainingInterrupted

    warn = warn or _warn
    config, initial = resolve_init_from(config)
    init_sha256 = None if initial is None else initial.sha256
    point = find_resume_point(resume, warn) if resume is not None else None

    pl.seed_everything(config.seed, workers=True, verbose=False)
    data = load_training_data(config) if data is None else data
    check_data(data, warn)
    model = build_model(config, data.in_channels, data.num_classes)
    if initial is None:
        check_model_fits_data(model, data, config.model)
    else:
        check_model_fits_data(
            model,
            data,
            f"{initial.describe()} from {initial.path}",
            classes_hint=f"the file fixes the classes: start from a model built for {data.num_classes}",
        )
    if config.devices > 1 and _is_launch_rank_zero():
        # Before any other process starts. On GPUs, the gradients, optimizer state and activations
        # live in GPU memory: only the runtime and the weights count against this machine's memory.
        on_gpu = _on_gpu(config)
        optimizer_states = 2 if config.optimizer == "adamw" else int(config.momentum > 0)
        estimate = processes.process_memory_estimate(
            model,
            data.train[0][0],
            batch_share=0 if on_gpu else config.batch_size // (config.devices * config.num_nodes),
            weight_copies=1 if on_gpu else 2 + optimizer_states,  # weights, gradients, optimizer state
        )
        processes.check_process_memory(config.devices, estimate)
    if config.fused != "off" and not _on_gpu(config):
        from sepconv.kernels import kernels_available

        # After the checks, which must not wait for it; the one-time compile is not training time.
        kernels_available()
    started = time.perf_counter()
    precision = choose_precision(
        model,
        on_gpu=_on_gpu(config),
        channels_last=config.channels_last,
        bf16=config.bf16,
        fused=config.fused,
    )
    fingerprint = data_fingerprint(data)
    if point is not None:
        check_resume_matches(point, config, precision, fingerprint, init_sha256=init_sha256)
        check_not_finished(point)

    is_rank_zero = _is_launch_rank_zero()
    folder = None
    if is_rank_zero:
        folder = claim_run_folder(
            config.out_dir,
            kind="train",
            overwrite=config.overwrite,
            resume_run_id=None if point is None else point.run_id,
        )
    run_id = point.run_id if point is not None else folder.run_id if folder is not None else ""
    interrupt = InterruptRequest()
    parts = None
    try:
        with _quiet_lightning(), interrupt.installed():
            parts = make_trainer(
                config,
                model,
                data,
                precision=precision,
                run_id=run_id,
                run_record={"data": fingerprint, "init_from_sha256": init_sha256},
                resume=point,
                interrupt=interrupt,
                warn=warn,
            )
            if is_rank_zero:
                atomic_write_bytes(
                    Path(config.out_dir) / "config.json",
                    (json.dumps(config.to_dict(), indent=2) + "\n").encode(),
                )
            try:
                with processes.launched_children(config.devices * config.num_nodes), kept_heap():
                    parts.trainer.fit(
                        parts.module,
                        datamodule=_data_module(data, config),
                        ckpt_path=None if point is None else point.path,
                    )
            except TrainingInterrupted as stop:
                raise KeyboardInterrupt(
                    f"training stopped at step {parts.trainer.global_step}; last checkpoint: {stop.path}; "
                    f"resume the run in {config.out_dir}"
                ) from None
            return finish_run(
                config,
                parts,
                data,
                evaluate_test=evaluate_test,
                started=started,
                resumed_from=None if point is None else point.path,
                init_from_sha256=init_sha256,
            )
    except BaseException:
        if folder is not None and not _training_started(parts, Path(config.out_dir)):
            folder.abandon()  # nothing to resume: the corrected command may use the folder again
        raise
    finally:
        if folder is not None:
            folder.release()


def _training_started(parts: _RunParts | None, out_dir: Path) -> bool:
    """Whether a run got as far as a training step or a checkpoint (then its folder is kept)."""
    if parts is not None and parts.trainer.global_step > 0:
        return True
    checkpoints = out_dir / "checkpoints"
    return checkpoints.is_dir() and any(checkpoints.iterdir())
