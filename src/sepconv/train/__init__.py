"""Training of sepconv models: ``fit(TrainConfig(...))`` on Lightning, safe checkpoints, resume, logs, DDP.

``import sepconv.train`` is light (the configuration only); Lightning is imported when :func:`fit`
runs. See :mod:`sepconv.train.trainer` for what a run writes and :mod:`sepconv.train.checkpoint` for
the checkpoint format.
"""

from __future__ import annotations

from typing import Any

from sepconv.train.config import OPTIMIZERS, SCHEDULES, TrainConfig, TrainResult

__all__ = ["OPTIMIZERS", "SCHEDULES", "TrainConfig", "TrainResult", "fit"]


def fit(config: TrainConfig, **kwargs: Any) -> TrainResult:
    """Train as ``config`` says; see :func:`sepconv.train.trainer.fit` for ``kwargs`` and outputs."""
    from sepconv.train.trainer import fit as _fit

    return _fit(config, **kwargs)
