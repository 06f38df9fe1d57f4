"""Checkpoints that never unpickle code, written every N steps and/or epochs, and resume with fallback.

Lightning's own ``.ckpt`` files are pickles; we plug :class:`SafeCheckpointIO` into the Trainer instead.
A checkpoint named ``step-00000120-RUNID`` (``RUNID``: the run that wrote it, see
:mod:`sepconv.train.run_folder`) is two files written atomically:

* ``step-00000120-RUNID.safetensors`` — the model (weights + architecture recipe), loadable on its own with
  ``sepconv.load_model`` / ``sepconv evaluate``;
* ``step-00000120-RUNID.state`` — everything else Lightning keeps (optimizer, scheduler, loop counters, the
  data loader's position inside the epoch, callback states, RNG states), read back with
  ``torch.load(weights_only=True)``, plus the SHA-256 of the weights file. It is written last, so it
  marks the checkpoint complete.

:func:`find_resume_checkpoint` walks the checkpoints newest first and returns the first that loads
cleanly, so a checkpoint truncated by a crash (or damaged later) falls back to the one before it.
Only the checkpoints of one run (by the id in their names) are listed, pruned and resumed.

A first Ctrl-C (:class:`InterruptRequest`) makes :class:`PeriodicCheckpoint` write a checkpoint at the
end of the step in progress and stop the run with :class:`TrainingInterrupted`; nothing is half-written.
"""

from __future__ import annotations

import hashlib
import re
import signal
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.plugins.io.checkpoint_io import CheckpointIO
from lightning.pytorch.callbacks import Checkpoint
from torch import nn

from sepconv.convert.replay import load_model, save_model
from sepconv.io import CheckpointError
from sepconv.train.run_folder import STATE_SUFFIX, WEIGHTS_SUFFIX
from sepconv.train.state import load_training_state, save_training_state

__all__ = [
    "STATE_SUFFIX",
    "WEIGHTS_SUFFIX",
    "InterruptRequest",
    "PeriodicCheckpoint",
    "SafeCheckpointIO",
    "TrainingInterrupted",
    "checkpoint_files",
    "checkpoint_name",
    "find_resume_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
]

_NAME = re.compile(r"^step-(\d+)-([0-9a-f]+)\.state$")
_MODEL_PREFIX = "model."


def checkpoint_files(state_path: Path) -> tuple[Path, Path]:
    """``(weights file, state file)`` of the checkpoint whose state file is ``state_path``."""
    state_path = Path(state_path)
    return state_path.with_suffix(WEIGHTS_SUFFIX), state_path


def checkpoint_name(step: int, run_id: str) -> str:
    """File name of the state file of run ``run_id`` at optimizer step ``step``.

    >>> checkpoint_name(120, "0a1b2c3d4e5f")
    'step-00000120-0a1b2c3d4e5f.state'
    """
    return f"step-{step:08d}-{run_id}{STATE_SUFFIX}"


def checkpoint_run_id(state_path: str | Path) -> str | None:
    """The run id in a checkpoint's file name (None for a name sepconv did not write)."""
    match = _NAME.match(Path(state_path).name)
    return match[2] if match else None


def list_checkpoints(folder: str | Path, run_id: str | None = None) -> list[Path]:
    """State files of the checkpoints in ``folder`` (of run ``run_id`` only, if given), oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [
        (int(match[1]), path)
        for path in folder.iterdir()
        if (match := _NAME.match(path.name)) and run_id in (None, match[2])
    ]
    return [path for _, path in sorted(found)]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_checkpoint(state_path: str | Path) -> dict[str, Any]:
    """The full Lightning checkpoint dict of one checkpoint; :class:`CheckpointError` names a bad file."""
    weights_path, state_path = checkpoint_files(Path(state_path))
    state = load_training_state(state_path)
    if not weights_path.is_file():
        raise CheckpointError(
            f"{weights_path} is missing (its training state {state_path.name} refers to it)"
        )
    expected = state.get("sepconv_weights_sha256")
    if expected is None:  # every state sepconv writes pairs itself with its weights; refuse any other
        raise CheckpointError(
            f"{state_path.name} records no checksum of its weights file {weights_path.name}"
        )
    if _sha256(weights_path) != expected:
        raise CheckpointError(f"{weights_path} does not match the checksum recorded in {state_path.name}")
    model = load_model(weights_path)
    state["state_dict"] = {_MODEL_PREFIX + key: value for key, value in model.state_dict().items()}
    return state


def find_resume_checkpoint(
    folder: str | Path, run_id: str | None = None, warn: Callable[[str], None] | None = None
) -> Path | None:
    """Newest checkpoint of run ``run_id`` in ``folder`` that loads cleanly; ``warn`` hears of each skipped."""
    for state_path in reversed(list_checkpoints(folder, run_id)):
        try:
            load_checkpoint(state_path)
        except (CheckpointError, OSError, RuntimeError) as error:
            message = f"skipping unusable checkpoint {state_path.name}: {' '.join(str(error).split())}"
            (warn or warnings.warn)(message)
            continue
        return state_path
    return None


class SafeCheckpointIO(CheckpointIO):
    """Lightning checkpoint I/O through safetensors + ``weights_only`` state; never unpickles code.

    ``model`` is the network being trained (the LightningModule's ``.model``): its file keeps the
    architecture recipe, which Lightning's ``state_dict`` alone does not have. ``preloaded`` maps a
    checkpoint path to its already loaded dict (the one ``fit`` read to check the resumed run), which
    is handed to Lightning once instead of reading and verifying the files again.
    """

    def __init__(self, model: nn.Module, preloaded: dict[Path, dict[str, Any]] | None = None) -> None:
        self.model = model
        self._preloaded = {Path(path).resolve(): state for path, state in (preloaded or {}).items()}

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        """Write the weights as safetensors and the rest of ``checkpoint`` as a separate state file.

        The state (optimizer, loop and random states) records the weights' SHA-256; loading the pair
        never unpickles code.
        """
        weights_path, state_path = checkpoint_files(Path(path))
        weights_path.parent.mkdir(parents=True, exist_ok=True)
        state = {
            key: value for key, value in checkpoint.items() if key not in ("state_dict", "hyper_parameters")
        }
        save_model(self.model, weights_path)
        state["sepconv_weights_sha256"] = _sha256(weights_path)
        save_training_state(state_path, state)

    def load_checkpoint(
        self, path: Any, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict:
        """Read back what :meth:`save_checkpoint` wrote at ``path`` (the other arguments are unused)."""
        preloaded = self._preloaded.pop(Path(path).resolve(), None)
        return preloaded if preloaded is not None else load_checkpoint(Path(path))

    def remove_checkpoint(self, path: Any) -> None:
        """Delete both files of the checkpoint at ``path`` (those missing are ignored)."""
        for file in checkpoint_files(Path(path)):
            file.unlink(missing_ok=True)


class TrainingInterrupted(Exception):  # noqa: N818 (a stop signal, not an error)
    """Raised at a step end after a Ctrl-C, once the checkpoint ``path`` of that step is written."""

    def __init__(self, path: Path | None) -> None:
        super().__init__(f"stopped after writing {path}")
        self.path = path


class InterruptRequest:
    """Ctrl-C while training: the first asks for a checkpoint and a clean stop at the next step end.

    Lightning turns a ``KeyboardInterrupt`` into ``sys.exit(1)`` with nothing said, so while
    :meth:`installed` is active the first SIGINT only sets a flag; a second one ends the process at once
    (exit code 130; every file is written atomically, so none is left half-written).
    """

    def __init__(self) -> None:
        self.requested = False

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested:
            import os
            import sys

            sys.stderr.write("\ninterrupted again: stopping now\n")
            sys.stderr.flush()
            os._exit(130)
        self.requested = True

    @contextmanager
    def installed(self) -> Iterator[InterruptRequest]:
        """Route SIGINT to this request for the duration (main thread only; elsewhere a no-op)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = signal.signal(signal.SIGINT, self._handle)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)

    def agreed(self, trainer: pl.Trainer) -> bool:
        """True on every process once any process was interrupted (a collective under DDP)."""
        if trainer.world_size > 1:
            return bool(trainer.strategy.reduce_boolean_decision(self.requested, all=False))
        return self.requested


class PeriodicCheckpoint(Checkpoint):
    """Write a checkpoint every ``every_steps`` optimizer steps and/or every ``every_epochs`` epochs.

    (A ``Checkpoint`` subclass, so Lightning runs its epoch-end hook after the module's and the
    metric loggers'.)

    Files are named after the module's ``run_id``; keeps the newest ``keep`` checkpoints of that run. A checkpoint is written only when every weight is finite, so a
    run that diverges keeps its last good one. ``last_path`` is the newest written.
    """

    def __init__(
        self,
        folder: Path,
        *,
        every_steps: int | None,
        every_epochs: int | None,
        keep: int,
        interrupt: InterruptRequest | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.every_steps = every_steps
        self.every_epochs = every_epochs
        self.keep = keep
        self.interrupt = interrupt
        self.last_path: Path | None = None
        self._last_saved_step = -1

    def _save(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        step = trainer.global_step
        if step == self._last_saved_step:
            return
        if not all(bool(torch.isfinite(parameter).all()) for parameter in module.parameters()):
            raise RuntimeError(
                f"weights are not finite at step {step}; not checkpointing (last good: {self.last_path})"
            )
        run_id = str(module.run_id)  # ClassifierModule's (a hook sees any LightningModule)
        path = self.folder / checkpoint_name(step, run_id)
        trainer.save_checkpoint(path)
        self._last_saved_step = step
        self.last_path = path
        if trainer.is_global_zero:
            for old in list_checkpoints(self.folder, run_id)[: -self.keep]:
                for file in checkpoint_files(old):
                    file.unlink(missing_ok=True)

    def on_train_batch_end(
        self, trainer: pl.Trainer, module: pl.LightningModule, outputs, batch, batch_idx
    ) -> None:
        """Lightning hook: record the loader's position, then save every ``every_steps`` steps.

        After a Ctrl-C (``interrupt``) it saves once more and stops the run with
        :class:`TrainingInterrupted`, so the same command resumes from that step.
        """
        loader = trainer.train_dataloader
        if loader is not None and hasattr(loader, "batches_done"):
            loader.batches_done = batch_idx + 1
        if self.every_steps and trainer.global_step % self.every_steps == 0:
            self._save(trainer, module)
        if self.interrupt is not None and self.interrupt.agreed(trainer):
            self._save(trainer, module)
            raise TrainingInterrupted(self.last_path)

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        """Lightning hook: save every ``every_epochs`` epochs, and always at the end of the run.

        The loader is first rewound to the next epoch's start, so a resume begins there.
        """
        loader = trainer.train_dataloader
        epoch = trainer.current_epoch
        if loader is not None and hasattr(loader, "batches_done"):
            # The epoch is complete: a resume from here starts the next one from its first batch.
            loader.sampler.set_epoch(epoch + 1)
            loader.batches_done = 0
        # Lightning does not set should_stop when max_steps ends the run, possibly mid-epoch.
        reached_max_steps = (trainer.max_steps or -1) > 0 and trainer.global_step >= trainer.max_steps
        is_last = epoch + 1 >= (trainer.max_epochs or 0) or trainer.should_stop or reached_max_steps
        if (self.every_epochs and (epoch + 1) % self.every_epochs == 0) or is_last:
            self._save(trainer, module)
