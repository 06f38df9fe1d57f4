"""Epoch metrics to a CSV file (always) and to a visdom server (optional, never fatal, never noisy).

:class:`MetricsHistory` keeps one row per completed epoch, stores the rows in checkpoints (so a resumed
run's CSV is whole) and rewrites ``metrics.csv`` atomically after every epoch.

:class:`VisdomReporter` draws the same rows as live line plots. Visdom is optional: if the package is
missing, the server unreachable, or it stops answering mid-run, you get exactly one warning and training
goes on (the CSV still has everything). Requests use a short timeout and visdom's incoming socket is
off, so a dead server costs at most one timeout, not visdom's retry loops.
"""

from __future__ import annotations

import csv
import io
import logging
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl

from sepconv.io import atomic_write_bytes
from sepconv.train.config import parse_visdom_url  # defined there so TrainConfig.validate can check URLs

__all__ = ["CSV_COLUMNS", "MetricsHistory", "VisdomReporter", "parse_visdom_url"]

#: The columns of ``metrics.csv``, one row per epoch.
CSV_COLUMNS = (
    "epoch",
    "step",
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "lr",
    "epoch_seconds",
    "step_seconds",
)


class MetricsHistory(pl.Callback):
    """One row per epoch (``CSV_COLUMNS``) in ``rows`` and in ``csv_path``; ``listeners`` get each new row."""

    def __init__(
        self, csv_path: Path | None, listeners: list[Callable[[dict[str, float]], None]] | None = None
    ):
        self.csv_path = csv_path
        self.rows: list[dict[str, float]] = []
        self.listeners = listeners or []
        self._epoch_start = time.perf_counter()
        self._step_start = 0.0
        self._step_seconds = 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        """Lightning hook: start the epoch's clocks (wall time and time inside the steps)."""
        self._epoch_start = time.perf_counter()
        self._step_seconds = 0.0

    # The training steps alone (forward, backward, optimizer: no data loading, validation or
    # checkpoints): the figure that compares how fast two models train, free of fixed costs.
    def on_train_batch_start(
        self, trainer: pl.Trainer, module: pl.LightningModule, batch: Any, index: int
    ) -> None:
        """Lightning hook: start timing this step."""
        self._step_start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: pl.Trainer, module: pl.LightningModule, outputs: Any, batch: Any, index: int
    ) -> None:
        """Lightning hook: add this step's time to the epoch's step time."""
        self._step_seconds += time.perf_counter() - self._step_start

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        """Lightning hook: append the epoch's row of metrics and times.

        On rank 0 it also rewrites the CSV file and passes the row to each listener (live plots).
        """
        metrics = module.collect_epoch_metrics()  # type: ignore[operator]
        row: dict[str, float] = {"epoch": trainer.current_epoch + 1, "step": trainer.global_step}
        row.update({key: metrics[key] for key in CSV_COLUMNS if key in metrics})
        row["epoch_seconds"] = time.perf_counter() - self._epoch_start
        row["step_seconds"] = self._step_seconds
        self.rows.append(row)
        if trainer.is_global_zero:
            self.write_csv()
            for listener in self.listeners:
                listener(row)

    def teardown(self, trainer: pl.Trainer, module: pl.LightningModule, stage: str) -> None:
        """Lightning hook, however the run ends: close every listener that has a ``close``."""
        # Lightning calls this when fit ends, however it ends: let listeners release what they hold.
        for listener in self.listeners:
            getattr(listener, "close", lambda: None)()

    def write_csv(self) -> None:
        """Rewrite the whole CSV (atomically) from ``rows``."""
        if self.csv_path is None:
            return
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_bytes(self.csv_path, buffer.getvalue().encode())

    def state_dict(self) -> dict[str, Any]:
        """The rows so far, saved in each checkpoint so that a resumed run keeps its history."""
        return {"rows": [dict(row) for row in self.rows]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the rows saved by :meth:`state_dict`."""
        self.rows = [dict(row) for row in state_dict.get("rows", [])]


class VisdomReporter:
    """Send each epoch row to visdom as line plots (loss, accuracy, lr); ``warn`` is called at most once.

    Use it as a :class:`MetricsHistory` listener. ``timeout_s`` bounds every request.
    """

    def __init__(
        self, url: str, *, env: str = "sepconv", warn: Callable[[str], None], timeout_s: float = 2.0
    ) -> None:
        self.server, self.port = parse_visdom_url(url)
        self.env = env
        self.timeout_s = timeout_s
        self._warn = warn
        self._client: Any = None
        self._failed = False
        self._connect()

    def _disable(self, reason: str) -> None:
        if not self._failed:
            self._failed = True
            self._warn(f"visdom at {self.server}:{self.port}: {reason}; metrics go to the CSV only")

    def _connect(self) -> None:
        try:
            import visdom
        except ImportError:
            self._disable("the visdom package is not installed (see the README for its install command)")
            return
        timeout_s = self.timeout_s

        class _BoundedVisdom(visdom.Visdom):  # every request gets a timeout; no retry loop
            def _handle_post(self, url: str, data: Any = None) -> str:
                # visdom's stub leaves out its session property
                return self.session.post(url, data=data or {}, timeout=timeout_s).text  # type: ignore[attr-defined]

        # visdom logs a warning per session and option: hide them from this reporter's client only.
        logging.getLogger("visdom").addFilter(self._quiet)
        try:
            # The constructor posts the environment once: refused or timed out means unreachable.
            with warnings.catch_warnings():  # it also warns about its own deprecated logger calls
                warnings.simplefilter("ignore")
                self._client = _BoundedVisdom(
                    server=self.server,
                    port=self.port,
                    env=self.env,
                    raise_exceptions=True,
                    use_incoming_socket=False,
                )
        except Exception as error:
            self._disable(f"unreachable ({type(error).__name__})")

    @staticmethod
    def _quiet(record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR

    def close(self) -> None:
        """Stop reporting and take back the log filter installed for the client."""
        logging.getLogger("visdom").removeFilter(self._quiet)
        self._client = None

    def __call__(self, row: dict[str, float]) -> None:
        if self._client is None:
            return
        try:
            for window, keys in (
                ("loss", ("train_loss", "val_loss")),
                ("accuracy", ("train_accuracy", "val_accuracy")),
                ("lr", ("lr",)),
            ):
                for key in keys:
                    if key not in row:
                        continue
                    self._client.line(
                        Y=[row[key]],
                        X=[row["epoch"]],
                        win=window,
                        name=key,
                        update="append" if row["epoch"] > 1 or key != keys[0] else None,
                        opts={"title": window, "xlabel": "epoch", "showlegend": True},
                    )
        except Exception as error:
            self._client = None
            self._disable(f"stopped answering ({type(error).__name__})")
