"""``fit`` of a few images of the synthetic shapes, as a script: what the DDP tests launch.

``python tests/helpers/ddp_driver.py SETTINGS_JSON`` trains ``TrainConfig(**settings)`` (less the keys
below) on the first ``train_size`` training images (and ``val_size`` validation images) of the
synthetic shapes, taken evenly spaced so that every class is there, and prints the result as one JSON
document from rank 0. A script, not a pytest process, because DDP's launchers (Lightning's, torchrun)
start the processes by running the command again.
"""

from __future__ import annotations

import json
import sys

from torch.utils.data import Subset

from sepconv.data import DataSplits, load_dataset
from sepconv.train import TrainConfig, fit


def _spread(split, count: int) -> Subset:
    return Subset(split, [index * len(split) // count for index in range(count)])


def main(argv: list[str]) -> int:
    settings = json.loads(argv[0])
    train_size, val_size = settings.pop("train_size"), settings.pop("val_size")
    full = load_dataset("synthetic", seed=0)
    data = DataSplits(
        train=_spread(full.train, train_size),
        val=_spread(full.val, val_size),
        test=_spread(full.test, 1),
        num_classes=full.num_classes,
        in_channels=full.in_channels,
        image_size=full.image_size,
        class_names=full.class_names,
        name="synthetic-few",
    )
    result = fit(TrainConfig(**settings), data=data, evaluate_test=False)
    if result.rank == 0:
        print(json.dumps(result.to_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
