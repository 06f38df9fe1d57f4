"""The LightningModule that trains any sepconv classifier: loss, accuracy, optimizer, schedule, RNG state.

Per-epoch metrics are summed as tensors on each process and reduced once at the end of the epoch, which
costs nothing per step (no ``torchmetrics``, no per-step ``self.log``). A loss that is NaN or infinite
stops the run with :class:`NonFiniteLossError` before the bad gradient reaches the weights, on every
process at once under DDP.

The memory format and bf16 autocast are applied here (not through Lightning's precision plugin), so
that :meth:`ClassifierModule.setup` can adopt rank 0's choice on every process before DDP wraps the
model: the processes of one run can never train in different formats.

Under DDP, :meth:`ClassifierModule.setup` also makes the run draw what one process would: BatchNorm
statistics over the global batch (:mod:`sepconv.train.sync_norm`), dropout masks of the global batch
(:mod:`sepconv.train.keyed_dropout`), and the generators put back to where they stood when the module
was built (Lightning's DDP setup reseeds them, which one process never does: without this, N processes
would start their dropout stream at another point than one process).
"""

from __future__ import annotations

import random
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch import nn

from sepconv.errors import SepconvError
from sepconv.train.config import TrainConfig
from sepconv.train.optim import build_optimizer, build_scheduler
from sepconv.train.precision import PrecisionChoice
from sepconv.train.state import capture_rng_state, restore_rng_state

__all__ = ["ClassifierModule", "NonFiniteLossError"]


class NonFiniteLossError(SepconvError, RuntimeError):
    """The training loss became NaN or infinite; the last good checkpoint is kept."""


class ClassifierModule(pl.LightningModule):
    """Cross-entropy (with label smoothing) training of ``model``; metrics per epoch in ``epoch_metrics``."""

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig,
        *,
        precision: PrecisionChoice,
        run_id: str,
        total_steps: int | None = None,
        run_record: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.total_steps = total_steps
        self.model = model
        self.config = config
        self.precision_choice = precision
        self.run_id = run_id
        # Stored in every checkpoint so that a resume can check what it continues (model, data, split).
        self.run_record = dict(run_record or {})
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        self.epoch_metrics: dict[str, float] = {}
        self._sums: dict[str, torch.Tensor] = {}
        # Where the CPU, NumPy and Python generators stand once the model is built (the same on every
        # process: each seeds alike and builds the same model). CUDA's are left alone: reading them
        # here would start a CUDA context on every GPU in the launching process.
        self._start_rng = (torch.get_rng_state(), np.random.get_state(), random.getstate())

    def setup(self, stage: str) -> None:
        """Lightning hook, before training: apply the precision choice (channels_last, fused kernels).

        Under DDP, every process first adopts rank 0's choices, and BatchNorm and dropout become global.
        """
        if self.trainer.world_size > 1:
            # Every process adopts rank 0's choices before DDP wraps the model.
            self.precision_choice, self.run_id = self.trainer.strategy.broadcast(
                (self.precision_choice, self.run_id), src=0
            )
            if self.device.type == "cpu":  # on GPUs, the Trainer's sync_batchnorm does it
                from sepconv.train.sync_norm import use_distributed_batchnorm

                use_distributed_batchnorm(self.model)
            from sepconv.train.keyed_dropout import use_keyed_dropout

            use_keyed_dropout(self.model)
            # Lightning's DDP setup reseeded every generator; one process trains on from the state
            # after building the model. (A resumed run then restores the checkpoint's states.)
            torch.set_rng_state(self._start_rng[0])
            np.random.set_state(self._start_rng[1])
            random.setstate(self._start_rng[2])
        if self.precision_choice.channels_last:
            self.model.to(memory_format=torch.channels_last)
        from sepconv.kernels import set_fused

        set_fused(self.model, self.precision_choice.fused)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The model's logits for ``images``, in the chosen memory format and precision (bf16 or not)."""
        if self.precision_choice.channels_last and images.ndim == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision_choice.bf16):
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
        """The loss of one batch, with the epoch's sums updated for the metrics.

        Raises:
            NonFiniteLossError: the loss is NaN or infinite (on any process); try a lower ``lr``.
        """
        images, labels = batch
        logits = self(images)
        loss = self.loss_fn(logits.float(), labels)
        finite = bool(torch.isfinite(loss))
        if self.trainer.world_size > 1:
            finite = self.trainer.strategy.reduce_boolean_decision(finite, all=True)
        if not finite:
            raise NonFiniteLossError(
                f"training loss became {loss.item()} at epoch {self.current_epoch}, step {self.global_step} "
                "(try a lower lr); the checkpoints written before this step are kept",
                param="lr",
            )
        self._accumulate("train", logits, labels, loss)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        """Add one validation batch's loss and predictions to the epoch's sums."""
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
        """Lightning hook: reduce the validation sums to metrics and log them (early stopping reads them)."""
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
        """Lightning hook: log the epoch's training metrics."""
        metrics = self.collect_epoch_metrics()
        train_metrics = {key: value for key, value in metrics.items() if not key.startswith("val_")}
        self.log_dict(train_metrics, logger=bool(self.trainer.loggers))

    def on_train_epoch_start(self) -> None:
        """Lightning hook: forget the previous epoch's metrics."""
        self.epoch_metrics = {}

    def configure_optimizers(self) -> Any:
        """The optimizer and its per-step learning-rate schedule, as the run's config asks."""
        optimizer = build_optimizer(self.model, self.config)
        # Not trainer.estimated_stepping_batches: it builds the train loader before a checkpoint's loader
        # position is restored, which would silently restart a resumed epoch from its first batch.
        total_steps = self.total_steps or int(self.trainer.estimated_stepping_batches)
        scheduler = build_scheduler(optimizer, self.config, total_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Lightning hook: store what an exact resume needs beside the weights.

        That is the random states, the config, the run id, the precision choice and the sums of the
        epoch in progress.
        """
        checkpoint["sepconv"] = {
            "rng": capture_rng_state(),
            "config": self.config.to_dict(),
            "run_id": self.run_id,
            "precision": self.precision_choice.to_dict(),
            **self.run_record,
            # Sums of the epoch in progress, so a mid-epoch resume reports the same epoch metrics.
            "partial_sums": {stage: sums.cpu() for stage, sums in self._sums.items()},
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Lightning hook: restore the random states and sums that :meth:`on_save_checkpoint` saved."""
        saved = checkpoint.get("sepconv", {})
        if "rng" in saved:
            restore_rng_state(saved["rng"])
        self._sums = {stage: sums.to(self.device) for stage, sums in saved.get("partial_sums", {}).items()}
