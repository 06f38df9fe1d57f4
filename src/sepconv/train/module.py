"""The LightningModule that trains any sepconv classifier: loss, accuracy, optimizer, schedule, RNG state.

Per-epoch metrics are summed as tensors on each process and reduced once at the end of the epoch, which
costs nothing per step (no ``torchmetrics``, no per-step ``self.log``). A loss that is NaN or infinite
stops the run with :class:`NonFiniteLossError` before the bad gradient reaches the weights, on every
process at once under DDP.
"""

from __future__ import annotations

import random
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch import nn

from sepconv.train.config import TrainConfig
from sepconv.train.optim import build_optimizer, build_scheduler

__all__ = ["ClassifierModule", "NonFiniteLossError", "capture_rng_state", "restore_rng_state"]


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the last good checkpoint is kept."""


def capture_rng_state() -> dict[str, Any]:
    """Every RNG training draws from, as tensors/lists that ``torch.load(weights_only=True)`` accepts."""
    numpy_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": list(random.getstate()[1]),
        "python_version": random.getstate()[0],
        "numpy": torch.from_numpy(np.asarray(numpy_state[1], dtype=np.int64)),
        "numpy_pos": int(numpy_state[2]),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    torch.set_rng_state(state["torch"])
    random.setstate((state["python_version"], tuple(state["python"]), None))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class ClassifierModule(pl.LightningModule):
    """Cross-entropy (with label smoothing) training of ``model``; metrics per epoch in ``epoch_metrics``."""

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig,
        channels_last: bool = False,
        total_steps: int | None = None,
    ) -> None:
        super().__init__()
        self.total_steps = total_steps
        self.model = model
        self.config = config
        self.channels_last = channels_last
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        self.epoch_metrics: dict[str, float] = {}
        self._sums: dict[str, torch.Tensor] = {}
        self.extra_state: dict[str, Any] = {}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.model(images)

    def _accumulate(self, stage: str, logits: torch.Tensor, labels: torch.Tensor, loss: torch.Tensor) -> None:
        count = labels.numel()
        values = torch.stack(
            [
                loss.detach().float() * count,
                (logits.argmax(1) == labels).sum().float(),
                torch.tensor(float(count)),
            ]
        )
        self._sums[stage] = values if stage not in self._sums else self._sums[stage] + values

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, labels = batch
        logits = self(images)
        loss = self.loss_fn(logits.float(), labels)
        finite = bool(torch.isfinite(loss))
        if self.trainer.world_size > 1:
            finite = self.trainer.strategy.reduce_boolean_decision(finite, all=True)
        if not finite:
            raise NonFiniteLossError(
                f"training loss became {loss.item()} at epoch {self.current_epoch}, step {self.global_step} "
                "(try a lower --lr); the checkpoints written before this step are kept"
            )
        self._accumulate("train", logits, labels, loss)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        images, labels = batch
        logits = self(images)
        self._accumulate("val", logits, labels, self.loss_fn(logits.float(), labels))

    def _reduce(self, stage: str) -> dict[str, float]:
        sums = self._sums.pop(stage, None)
        if sums is None:
            return {}
        sums = self.trainer.strategy.reduce(sums.to(self.device), reduce_op="sum")
        loss_sum, correct, count = (float(value) for value in sums)
        return {f"{stage}_loss": loss_sum / count, f"{stage}_accuracy": correct / count}

    def on_validation_epoch_end(self) -> None:
        metrics = self._reduce("val")
        self.epoch_metrics.update(metrics)
        if metrics and not self.trainer.sanity_checking:
            # EarlyStopping and the TensorBoard logger read these.
            self.log_dict(metrics, logger=bool(self.trainer.loggers), prog_bar=True)

    def collect_epoch_metrics(self) -> dict[str, float]:
        """This epoch's reduced metrics (train and val loss and accuracy, lr); a collective under DDP.

        Callbacks run their ``on_train_epoch_end`` before the module's, so the first caller reduces.
        """
        if "train" in self._sums:
            self.epoch_metrics.update(self._reduce("train"))
            self.epoch_metrics["lr"] = self.trainer.optimizers[0].param_groups[0]["lr"]
        return dict(self.epoch_metrics)

    def on_train_epoch_end(self) -> None:
        metrics = self.collect_epoch_metrics()
        train_metrics = {key: value for key, value in metrics.items() if not key.startswith("val_")}
        self.log_dict(train_metrics, logger=bool(self.trainer.loggers))

    def on_train_epoch_start(self) -> None:
        self.epoch_metrics = {}

    def configure_optimizers(self) -> Any:
        optimizer = build_optimizer(self.model, self.config)
        # Not trainer.estimated_stepping_batches: it builds the train loader before a checkpoint's loader
        # position is restored, which would silently restart a resumed epoch from its first batch.
        total_steps = self.total_steps or int(self.trainer.estimated_stepping_batches)
        scheduler = build_scheduler(optimizer, self.config, total_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["sepconv"] = {
            "rng": capture_rng_state(),
            "config": self.config.to_dict(),
            # Sums of the epoch in progress, so a mid-epoch resume reports the same epoch metrics.
            "partial_sums": {stage: sums.cpu() for stage, sums in self._sums.items()},
            **self.extra_state,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get("sepconv", {})
        if "rng" in saved:
            restore_rng_state(saved["rng"])
        self._sums = {stage: sums.to(self.device) for stage, sums in saved.get("partial_sums", {}).items()}
        self.extra_state = {
            key: value for key, value in saved.items() if key not in ("rng", "config", "partial_sums")
        }
