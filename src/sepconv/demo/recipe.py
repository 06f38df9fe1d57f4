"""The demo's recipe and its up-front checks: the twins, the shared training settings, the data they need.

Both twins train with the same recipe (:func:`demo_config`); only the model, and so its output folder,
differs. :func:`check_demo_inputs` refuses, before any folder is claimed, data the twins could not use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sepconv.train.config import TrainConfig

__all__ = [
    "DEMO_BATCH_SIZE",
    "DEMO_EPOCHS",
    "DEMO_LR",
    "DEMO_MODELS",
    "DemoDataError",
    "check_demo_inputs",
    "demo_config",
]

#: The demo's twins: the registered model trained for each role.
DEMO_MODELS = {"standard": "standard_cnn", "separable": "separable_cnn"}
#: Epochs each twin trains for in ``sepconv demo``.
DEMO_EPOCHS = 5
#: The demo's training batch size.
DEMO_BATCH_SIZE = 64
#: The demo's peak learning rate (one-cycle schedule).
DEMO_LR = 4e-3


class DemoDataError(ValueError):
    """The data set cannot give a demo (an empty split, one class, images the twins do not take).

    ``dataset`` is the name given; the message names it, and the reason.
    """

    def __init__(self, dataset: str, reason: str) -> None:
        super().__init__(f"dataset {dataset!r} cannot be used for the demo: {reason}")
        self.dataset = dataset
        self.reason = reason


def check_demo_inputs(data: Any, configs: list[TrainConfig]) -> None:
    """Everything the twins' runs would refuse, checked before anything is claimed or trained.

    Each twin is trained on the train split and measured on the test split (accuracy, the exported
    ONNX file's verification and latency), so both must hold images; a classifier needs two classes;
    each twin must take the images (channels, a size its pooling allows). Raises :class:`DemoDataError`.
    """
    from sepconv.train.trainer import build_model, check_data, check_model_fits_data

    try:
        for config in configs:
            config.validate()
        check_data(data, warn=lambda message: None)  # each twin's run says what was skipped
        if len(data.test) == 0:
            raise ValueError(
                f"its test split is empty ({len(data.train)} train, {len(data.val)} validation images): "
                "the demo measures each twin on test images; give it more images per class"
            )
        for config in configs:
            model = build_model(config, data.in_channels, data.num_classes)
            check_model_fits_data(model, data, config.model)
    except DemoDataError:
        raise
    except ValueError as error:
        raise DemoDataError(data.name, str(error)) from None


def demo_config(
    model: str,
    out_dir: Path,
    *,
    dataset: str,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    progress: bool,
    fused: str = "auto",
) -> TrainConfig:
    """The shared recipe; only ``model`` (and so the output folder) differs between the twins."""
    return TrainConfig(
        model=model,
        dataset=dataset,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        optimizer="adamw",
        schedule="onecycle",
        weight_decay=0.05,
        label_smoothing=0.05,
        seed=seed,
        fused=fused,
        out_dir=str(out_dir / model),
        checkpoint_every_epochs=0,  # the final checkpoint and model.safetensors are still written
        keep_checkpoints=1,
        progress_bar=progress,
        tensorboard=False,  # its first write costs seconds; metrics.csv has the same numbers
    )
