"""Shared by the training tests: ``sepconv train`` in a subprocess, and in-process runs that a test
records step by step and stops at a step of its choosing (:func:`fit_with_callbacks`), the sampler's
documented batch order and bit-for-bit step comparisons for the resume tests, and the DDP driver script
(:data:`DDP_DRIVER`)."""

from __future__ import annotations

import math
import os
import random
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Checkpoint

from sepconv.train.checkpoint import checkpoint_name

DDP_DRIVER = Path(__file__).with_name("ddp_driver.py")  # run as a script: DDP launchers re-run it

# What a launcher (Lightning's, torchrun, SLURM, sepconv's own) sets to tell a process how it was started:
# a test's own multi-process run must not inherit them from the process running the tests.
_LAUNCH_VARIABLES = (
    "MASTER_ADDR",
    "MASTER_PORT",
    "LOCAL_RANK",
    "RANK",
    "NODE_RANK",
    "GROUP_RANK",
    "WORLD_SIZE",
)
_LAUNCH_PREFIXES = ("TORCHELASTIC_", "SLURM_", "SEPCONV_LAUNCHER")


def launch_environment(port: int | None = None) -> dict[str, str]:
    """This process's environment without any launcher's variables; with ``port``, a rendezvous on it."""
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in _LAUNCH_VARIABLES and not key.startswith(_LAUNCH_PREFIXES)
    }
    if port is not None:
        environment.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    return environment


def synthetic_train_command(out_dir: Path, *extra: str) -> list[str]:
    """``sepconv train`` of a tiny separable CNN on the synthetic shapes, float32 NCHW, JSON output."""
    return [
        sys.executable,
        "-m",
        "sepconv",
        "train",
        "--dataset",
        "synthetic",
        "--model",
        "separable_cnn",
        "--model-arg",
        "widths=[4,8,8,16]",
        "--batch-size",
        "32",
        "--channels-last",
        "off",
        "--bf16",
        "off",
        "--no-tensorboard",
        "--json",
        "--out",
        str(out_dir),
        *extra,
    ]


@contextmanager
def reserved_port() -> Iterator[int]:
    """A TCP port that no other process is handed while the block runs, for a DDP run's ``MASTER_PORT``.

    Picking a free port and closing it (what Lightning does when ``MASTER_PORT`` is unset) leaves a
    window in which another process can take it. Here the port stays bound, with ``SO_REUSEADDR`` and
    never listening: the kernel then hands it to no ``bind(port 0)``, while the run's TCP store, which
    binds with ``SO_REUSEADDR`` too, can still listen on it.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("", 0))
        yield holder.getsockname()[1]


_SIGNAL_DRIVER = '''\
"""`sepconv train` ARGS..., sent signal SIGNAL by itself right after the checkpoint of step STEP is written."""
import os
import signal
import sys

from lightning.pytorch.callbacks import Checkpoint

from sepconv.cli.main import main
from sepconv.train import trainer as trainer_module
from sepconv.train.checkpoint import checkpoint_name


SIGNAL, STEP = getattr(signal, sys.argv[1]), int(sys.argv[2])


class SignalAfterCheckpoint(Checkpoint):
    # A Checkpoint appended behind the run's PeriodicCheckpoint: Lightning runs this hook after that one's.
    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        written = trainer.checkpoint_callback.last_path
        if written is not None and written.name == checkpoint_name(STEP, module.run_id):
            os.kill(os.getpid(), SIGNAL)


original = trainer_module.make_trainer


def make_trainer(*args, **kwargs):
    parts = original(*args, **kwargs)
    parts.trainer.callbacks.append(SignalAfterCheckpoint())
    return parts


trainer_module.make_trainer = make_trainer
sys.exit(main(sys.argv[3:]))
'''


def signal_after_checkpoint(folder: Path, signal_name: str, step: int, command: list[str]) -> list[str]:
    """``command`` (a :func:`synthetic_train_command`) run so that it sends itself ``signal_name`` right
    after writing the checkpoint of ``step``: where the signal lands is the test's choice, not the
    machine's timing. The driver script is written into ``folder``."""
    driver = folder / "signal_after_checkpoint.py"
    driver.write_text(_SIGNAL_DRIVER)
    return [sys.executable, str(driver), signal_name, str(step), *command[3:]]  # after `python -m sepconv`


# In-process runs with callbacks the test adds: how a test splits a run at a step of its choosing, and
# records what each step saw, without a signal, a sleep or a subprocess.


class StepRecord(NamedTuple):
    """What optimizer step ``step`` (1-based) started from: its batch and every global RNG's state."""

    step: int
    images: torch.Tensor
    labels: torch.Tensor
    torch_rng: torch.Tensor
    numpy_rng: tuple
    python_rng: tuple


class StepRecorder(pl.Callback):
    """Records each training step's batch and the global generators' states as the step starts."""

    def __init__(self) -> None:
        self.steps: list[StepRecord] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        images, labels = batch
        numpy_state = np.random.get_state()
        self.steps.append(
            StepRecord(
                trainer.global_step + 1,
                images.detach().clone(),
                labels.detach().clone(),
                torch.get_rng_state(),
                (numpy_state[0], numpy_state[1].copy(), *numpy_state[2:]),
                random.getstate(),
            )
        )


class StopRun(Exception):  # noqa: N818 (the test's stop signal, not an error)
    """Raised by :class:`StopAfterStep` to end a run in the middle."""


class StopAfterStep(Checkpoint):
    """Ends the run with :class:`StopRun` as soon as the checkpoint of optimizer step ``step`` is written:
    at the end of that step, or at the end of its epoch for an epoch-end checkpoint. A ``Checkpoint``
    appended behind the run's ``PeriodicCheckpoint`` (see :func:`fit_with_callbacks`), so that Lightning
    runs each of its hooks after that one's, the epoch-end hook included."""

    def __init__(self, step: int) -> None:
        self.step = step

    def _stop_if_written(self, trainer, module) -> None:
        written = trainer.checkpoint_callback.last_path
        if written is not None and written.name == checkpoint_name(self.step, module.run_id):
            raise StopRun(f"stopped by the test after the checkpoint of step {self.step}")

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self._stop_if_written(trainer, module)

    def on_train_epoch_end(self, trainer, module) -> None:
        self._stop_if_written(trainer, module)


def fit_with_callbacks(config, callbacks, **fit_kwargs):
    """``sepconv.train.fit(config, **fit_kwargs)`` with ``callbacks`` appended to the Trainer's own.

    ``fit`` takes no callbacks, so :func:`sepconv.train.trainer.make_trainer` is wrapped for the
    duration: the callbacks go after every callback of the run (Lightning reorders callbacks only when
    the Trainer is built), so in a step's hooks they run after ``PeriodicCheckpoint`` has written its
    checkpoint.
    """
    from sepconv.train import trainer as trainer_module

    original = trainer_module.make_trainer

    def make_trainer(*args, **kwargs):
        parts = original(*args, **kwargs)
        parts.trainer.callbacks.extend(callbacks)
        return parts

    trainer_module.make_trainer = make_trainer
    try:
        return trainer_module.fit(config, **fit_kwargs)
    finally:
        trainer_module.make_trainer = original


# What a resumed run must repeat exactly: the batches, the RNG states, every recorded number but timings.

TIMINGS = ("epoch_seconds", "step_seconds")


def documented_batch(
    data, step: int, seed: int = 0, batch_size: int = 32
) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch of optimizer step ``step`` (1-based) as PyTorch's ``DistributedSampler`` orders an epoch
    (one process: ``randperm(n)`` from a generator seeded ``seed + epoch``), built here from the data set."""
    steps_per_epoch = math.ceil(len(data.train) / batch_size)  # the last batch of an epoch may be short
    epoch, index = divmod(step - 1, steps_per_epoch)
    order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(seed + epoch)).tolist()
    samples = [data.train[i] for i in order[index * batch_size : (index + 1) * batch_size]]
    return torch.stack([image for image, _ in samples]), torch.tensor([label for _, label in samples])


def assert_identical(got: Any, expected: Any, where: str = "") -> None:
    """Same structure, same values; tensors by ``torch.equal`` (bit for bit), timings skipped."""
    if isinstance(expected, torch.Tensor):
        assert isinstance(got, torch.Tensor) and got.dtype == expected.dtype, where
        assert torch.equal(got, expected), f"{where} differs"
    elif isinstance(expected, dict):
        assert isinstance(got, dict) and got.keys() == expected.keys(), (
            f"{where}: {got.keys()} != {expected.keys()}"
        )
        for key in expected:
            if key not in TIMINGS:
                assert_identical(got[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list | tuple):
        assert isinstance(got, list | tuple) and len(got) == len(expected), where
        for position, (one, other) in enumerate(zip(got, expected, strict=True)):
            assert_identical(one, other, f"{where}[{position}]")
    elif isinstance(expected, np.ndarray):
        assert np.array_equal(got, expected), where
    else:
        assert got == expected, f"{where}: {got!r} != {expected!r}"


def assert_steps_match(got_steps, expected_steps) -> None:
    """Step by step: the same step numbers, batches and RNG states as the step starts."""
    assert [record.step for record in got_steps] == [record.step for record in expected_steps]
    for got, expected in zip(got_steps, expected_steps, strict=True):
        assert torch.equal(got.images, expected.images), f"step {got.step}: another batch of images"
        assert torch.equal(got.labels, expected.labels), f"step {got.step}: other labels"
        assert torch.equal(got.torch_rng, expected.torch_rng), f"step {got.step}: torch RNG differs"
        assert_identical(got.numpy_rng, expected.numpy_rng, f"step {got.step}: numpy RNG")
        assert got.python_rng == expected.python_rng, f"step {got.step}: Python RNG differs"
