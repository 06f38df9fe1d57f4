"""What Lightning costs in the demo: ``sepconv.train.fit`` vs a plain PyTorch loop, same recipe and data.

Run: ``python benchmarks/bench_demo.py [--model separable_cnn] [--epochs 5]``. Prints the import time of
Lightning, the wall and CPU seconds of both training runs, and the ratio. Both use the demo recipe (AdamW
with decay on weights only, one-cycle, label smoothing 0.05, batch 64, channels_last, validation every
epoch) on mnist5k; the plain loop has no checkpoints, no CSV and no progress bar.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from torch import nn
from torch.utils.data import DataLoader

from sepconv.data import load_dataset
from sepconv.models import create_model
from sepconv.train import TrainConfig
from sepconv.train.optim import build_optimizer, build_scheduler


def _plain_loop(config: TrainConfig, data) -> float:
    torch.manual_seed(config.seed)
    model = create_model(config.model, in_channels=data.in_channels, num_classes=data.num_classes)
    model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, config)
    steps = config.epochs * math.ceil(len(data.train) / config.batch_size)
    scheduler = build_scheduler(optimizer, config, steps)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    train = DataLoader(data.train, batch_size=config.batch_size, shuffle=True)
    val = DataLoader(data.val, batch_size=256)
    for _ in range(config.epochs):
        model.train()
        for images, labels in train:
            loss = loss_fn(model(images.contiguous(memory_format=torch.channels_last)), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        model.eval()
        correct = 0
        with torch.no_grad():
            for images, labels in val:
                correct += int((model(images).argmax(1) == labels).sum())
    return correct / len(data.val)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="separable_cnn")
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()

    start = time.perf_counter()
    import lightning.pytorch  # noqa: F401

    print(f"import lightning.pytorch: {time.perf_counter() - start:.2f} s")
    data = load_dataset("mnist5k")
    config = TrainConfig(
        model=args.model,
        epochs=args.epochs,
        out_dir="runs/bench_demo",
        channels_last="on",
        progress_bar=False,
        tensorboard=False,
        checkpoint_every_epochs=None,
    )
    from sepconv.train.trainer import fit

    timings = {}
    for name, run in (
        ("plain loop", lambda: _plain_loop(config, data)),
        ("sepconv fit", lambda: fit(config, data=data)),
    ):
        wall, cpu = time.perf_counter(), time.process_time()
        run()
        timings[name] = (time.perf_counter() - wall, time.process_time() - cpu)
        print(f"{name:>12}: {timings[name][0]:6.1f} s wall, {timings[name][1]:6.1f} s CPU")
    ratio = timings["sepconv fit"][0] / timings["plain loop"][0]
    print(
        f"fit / plain loop: {ratio:.2f}x wall ({args.model}, {args.epochs} epochs, {torch.get_num_threads()} threads)"
    )


if __name__ == "__main__":
    main()
