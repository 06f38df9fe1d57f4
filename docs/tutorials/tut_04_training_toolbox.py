"""
The PyTorch training toolbox, step by step
==========================================

Every training script is made of the same six pieces: the **data** (a ``Dataset`` that serves one
sample at a time and a ``DataLoader`` that batches them), the **model** (an ``nn.Module``), the
**loss**, the **optimizer**, the **loop** that ties them together, and the **tools around it**:
evaluation, checkpoints and live plots. The course notebook *PyTorch toolbox*
(``notebook-pytorch-toolbox.txt`` in the course material) introduces each piece on its own, with
random tensors. Here we put them together on real data: 5,000 handwritten digits that ship with
sepconv's dependencies (the ``mnist5k`` data set, nothing is downloaded), and a small
depthwise-separable CNN.

At the end, the whole script collapses into one call, :func:`sepconv.train.fit`, the library face of
``sepconv train``, and we check that what it reports is what we compute ourselves.

To stay fast, we train on a class-balanced subset (500 training images) for two epochs. The first
training step on a machine compiles sepconv's C++ training kernels once (about a minute; a line says
so); later runs reuse them.
"""

# %%
# The data: a ``Dataset``, transforms, splits
# -------------------------------------------
#
# A ``Dataset`` answers two questions: how many samples (``__len__``) and what sample ``i`` is
# (``__getitem__``). It does not batch, shuffle or load in parallel: that is the ``DataLoader``'s
# job. A *transform* turns a raw sample into what the model eats; here a ``uint8`` image
# (0-255) becomes a float image in [0, 1], then is normalized with the data set's mean and standard
# deviation, so that the network sees values around zero.
#
# We write the ``Dataset`` ourselves, from the raw pixels, as the course does.

import math
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

import sepconv
from sepconv.data import load_dataset, stratified_split
from sepconv.data.mnist5k import MNIST_MEAN, MNIST_STD, mnist5k_arrays

pixels, labels = mnist5k_arrays()  # read-only uint8 (5000, 784) and int64 (5000,)
labels_tensor = torch.tensor(labels)
print("raw data:", pixels.shape, pixels.dtype, labels.shape)


class Digits(Dataset):
    """28x28 digits from rows of 784 pixels, each passed through ``transform``."""

    def __init__(self, pixels, labels, indices, transform):
        self.images = torch.from_numpy(pixels[indices.numpy()]).reshape(-1, 1, 28, 28)
        self.labels = torch.from_numpy(labels[indices.numpy()])
        self.transform = transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return self.transform(self.images[index]), int(self.labels[index])


to_model_input = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(MNIST_MEAN, MNIST_STD)])

# %%
# **Splits.** We keep three disjoint parts: *train* (the model learns from it), *validation* (we
# watch it during training to choose settings) and *test* (touched once, at the end, for the number
# we report). ``stratified_split`` cuts each class separately, so every split keeps the ten digits
# in equal shares; with 10% validation and 20% test, each digit's 500 images split into
# 350 / 50 / 100.

train_index, val_index, test_index = stratified_split(labels_tensor, [0.1, 0.2], seed=0)
print("split sizes:", len(train_index), len(val_index), len(test_index))
assert (len(train_index), len(val_index), len(test_index)) == (
    round(5000 * 0.7),
    round(5000 * 0.1),
    round(5000 * 0.2),
)

# %%
# This is exactly how sepconv's own loader splits ``mnist5k``, and our transform normalizes exactly
# as it does: the first test image is the same tensor both ways.

splits = load_dataset("mnist5k", seed=0)
ours = Digits(pixels, labels, test_index, to_model_input)
print("sepconv's split sizes:", splits.sizes())
assert splits.sizes() == {"train": 3500, "val": 500, "test": 1000}
assert torch.allclose(ours[0][0], splits.test[0][0]) and ours[0][1] == splits.test[0][1]

# %%
# To stay fast we take a class-balanced subset: 50 training images per digit and the first 500
# test images. A ``DataLoader`` then batches and shuffles. Its shuffling draws from the generator
# we give it, reseeded each epoch, so that the order of epoch ``e`` depends only on ``e``: that
# will make resuming exact.

per_class = 50
subset = torch.cat([train_index[labels_tensor[train_index] == digit][:per_class] for digit in range(10)])
train_set = Digits(pixels, labels, subset, to_model_input)
val_set = Digits(pixels, labels, val_index, to_model_input)
test_set = Digits(pixels, labels, test_index[:500], to_model_input)
print("train / val / test images:", len(train_set), len(val_set), len(test_set))

batch_size = 20
order = torch.Generator()
train_loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, generator=order)
val_loader = DataLoader(val_set, batch_size=250)
test_loader = DataLoader(test_set, batch_size=250)
images, targets = next(iter(train_loader))
print("one batch:", tuple(images.shape), tuple(targets.shape))

figure, axes = plt.subplots(1, 8, figsize=(8, 1.4))
for axis, image, target in zip(axes, images, targets):
    axis.imshow(image[0], cmap="gray")
    axis.set_title(int(target))
    axis.axis("off")
figure.suptitle("a training batch (normalized images, with their labels)")

# %%
# The model, the loss, the optimizer
# ----------------------------------
#
# The model is sepconv's ``separable_cnn`` (a 3x3 stem, then depthwise-separable blocks), narrowed
# to keep the tutorial quick. It is an ordinary ``nn.Module``: ``print(model)`` shows its layers,
# ``named_parameters()`` its weights.

torch.manual_seed(0)
model = sepconv.create_model("separable_cnn", widths=[16, 32, 64, 128])
parameter_count = sum(parameter.numel() for parameter in model.parameters())
print(model.features[1])
print(f"{parameter_count:,} parameters")
assert parameter_count == sepconv.analysis.summarize(model, (1, 1, 28, 28)).total_params

# %%
# The **loss** scores the model's raw outputs (logits, one per class) against the labels.
# Cross-entropy is ``-log`` of the probability the softmax gives the right class. A model that
# knows nothing gives every class the same probability, 1/10, so its loss is ``log(10) = 2.303``:
# a number worth knowing, because it is where every training curve of a 10-class problem starts.

criterion = nn.CrossEntropyLoss()
know_nothing = criterion(torch.zeros(4, 10), torch.tensor([0, 3, 5, 9]))
print(f"loss of uniform guesses: {know_nothing.item():.4f}, log(10) = {math.log(10):.4f}")
assert math.isclose(know_nothing.item(), math.log(10), rel_tol=1e-6)

# %%
# The **optimizer** holds the parameters and updates them from their gradients. Each step is the
# same three lines: clear the old gradients (PyTorch adds new ones to them otherwise), compute the
# gradients of the loss (``backward``), and move the weights (``step``).

optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)

# %%
# The loop, written out, with TensorBoard logging
# ------------------------------------------------
#
# An *epoch* is one pass over the training set. After each one we measure accuracy on the
# validation set, in ``eval`` mode (BatchNorm uses its running statistics, dropout is off) and
# without gradients. Every step's loss and every epoch's validation accuracy go to TensorBoard
# through ``SummaryWriter``, which appends them to an event file in a folder of our choice (here a
# temporary one); ``tensorboard --logdir FOLDER`` would plot them live in a browser.

from torch.utils.tensorboard import SummaryWriter

work = Path(tempfile.mkdtemp(prefix="sepconv-tut04-"))
writer = SummaryWriter(log_dir=str(work / "tensorboard"))


def accuracy(model, loader):
    """Fraction of the loader's images whose highest logit is the right class."""
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for images, targets in loader:
            correct += int((model(images).argmax(dim=1) == targets).sum())
            total += len(targets)
    return correct / total


def train_one_epoch(model, optimizer, epoch, writer=None):
    """One pass over the training set; the shuffling order depends only on ``epoch``."""
    model.train()
    order.manual_seed(epoch)
    for batch, (images, targets) in enumerate(train_loader):
        loss = criterion(model(images), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if writer is not None:
            writer.add_scalar("train/loss", loss.item(), global_step=epoch * len(train_loader) + batch)
    val_accuracy = accuracy(model, val_loader)
    if writer is not None:
        writer.add_scalar("val/accuracy", val_accuracy, global_step=epoch)
    return val_accuracy


print(f"before training: validation accuracy {accuracy(model, val_loader):.1%}")
val_accuracy = train_one_epoch(model, optimizer, epoch=0, writer=writer)
print(f"epoch 1: validation accuracy {val_accuracy:.1%}")

# %%
# Checkpoints: save safely, resume exactly
# ----------------------------------------
#
# A checkpoint holds everything the next epoch depends on: the weights, the optimizer's state
# (AdamW keeps two running averages per weight) and the random generators' state (dropout draws from
# them). How it is stored matters: ``torch.save`` of a whole model is a pickle, and loading a pickle
# can run any code the file contains. sepconv never does that:
#
# - :func:`sepconv.save_model` writes the weights as **safetensors** (raw tensors behind a JSON
#   header) with a JSON description of the architecture; :func:`sepconv.load_model` rebuilds the
#   model from that description and fills in the tensors. Nothing in the file is executed.
# - the optimizer and generator states are plain tensors and numbers, written by
#   ``save_training_state`` and read back with ``torch.load(weights_only=True)``, which refuses
#   anything but tensors and plain containers. Both writes are atomic (a temporary file renamed into
#   place), so a crash mid-write never leaves half a checkpoint.

from safetensors import safe_open

from sepconv.train.state import (
    capture_rng_state,
    load_training_state,
    restore_rng_state,
    save_training_state,
)

model_file = sepconv.save_model(model, work / "epoch-1.safetensors")
save_training_state(work / "epoch-1.state", {"optimizer": optimizer.state_dict(), "rng": capture_rng_state()})
with safe_open(str(model_file), framework="pt") as stored:
    names = list(stored.keys())
    recipe = stored.metadata()
print(f"{model_file.name}: {len(names)} tensors, e.g. {names[0]}; metadata keys {sorted(recipe)}")

# %%
# Now train epoch 2 without stopping, then *resume* from the checkpoint into a fresh model and
# optimizer and train epoch 2 again. Same weights, same optimizer state, same generator states and
# the same batch order give the same result, bit for bit: a resumed run is the run that was not
# interrupted.

train_one_epoch(model, optimizer, epoch=1, writer=writer)
writer.close()

resumed = sepconv.load_model(model_file)
resumed_optimizer = torch.optim.AdamW(resumed.parameters(), lr=3e-3, weight_decay=0.01)
state = load_training_state(work / "epoch-1.state")
resumed_optimizer.load_state_dict(state["optimizer"])
restore_rng_state(state["rng"])
train_one_epoch(resumed, resumed_optimizer, epoch=1)  # not logged: the curve is the uninterrupted run's

identical = all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), resumed.state_dict().values()))
print("resumed weights identical to the uninterrupted run:", identical)
assert identical

# %%
# Evaluation on the test set
# --------------------------
#
# Only now, once, the test images. Our ``accuracy`` loop and sepconv's
# :func:`~sepconv.train.evaluation.evaluate_model` (which also counts the confusion matrix) agree.

from sepconv.train.evaluation import evaluate_model

test_accuracy = accuracy(model, test_loader)
evaluation = evaluate_model(model, test_set, num_classes=10)
print(f"test accuracy after 2 epochs: {test_accuracy:.1%} ({evaluation.num_samples} images)")
assert evaluation.accuracy == test_accuracy

# %%
# Live plots: TensorBoard and visdom
# ----------------------------------
#
# TensorBoard reads the event file that ``SummaryWriter`` wrote. We can read it too, with
# TensorBoard's own ``EventAccumulator``, and draw the logged curves with matplotlib: what you see
# below is what was logged, read back from the file.

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

events = EventAccumulator(str(work / "tensorboard"))
events.Reload()
logged_loss = events.Scalars("train/loss")
logged_accuracy = events.Scalars("val/accuracy")
print(f"{len(logged_loss)} loss values and {len(logged_accuracy)} accuracies logged")
assert len(logged_loss) == 2 * len(train_loader) and len(logged_accuracy) == 2

figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
left.plot([event.step for event in logged_loss], [event.value for event in logged_loss])
left.axhline(math.log(10), color="gray", linestyle="--", label="log(10): uniform guess")
left.set(xlabel="step", ylabel="training loss", title="train/loss, read back from the event file")
left.legend()
right.plot([event.step + 1 for event in logged_accuracy], [event.value for event in logged_accuracy], "o-")
right.set(xlabel="epoch", ylabel="accuracy", title="val/accuracy", xticks=[1, 2])
figure.tight_layout()

# %%
# The course plots live with **visdom**, a small plotting server (``python -m visdom.server``,
# then open ``http://localhost:8097``). A client appends one point per call to a named window:
#
# .. code-block:: python
#
#     import visdom
#
#     board = visdom.Visdom(env="tutorial")          # connects to localhost:8097
#     for epoch, value in enumerate(val_accuracies, start=1):
#         board.line(X=[epoch], Y=[value], win="val accuracy",
#                    update="append" if epoch > 1 else None, opts={"title": "val accuracy"})
#
# No visdom server runs while this page is built, so that code is shown, not run.
# ``sepconv train --visdom [URL]`` does the same for you: after every epoch it appends the training
# and validation loss, accuracy and learning rate to three windows (``loss``, ``accuracy``, ``lr``).
# A server that is down or stops answering costs one warning, never the run: the same numbers are
# always in ``metrics.csv`` (and in TensorBoard, unless ``--no-tensorboard``).

# %%
# The same in one call: ``fit(TrainConfig(...))``
# ------------------------------------------------
#
# Everything above (splits, loader, model, AdamW, the loop, validation, checkpoints, logs, test
# accuracy) is what ``sepconv train`` does, with a learning-rate schedule, label smoothing and the
# fast training kernels on top. Its library face is :func:`sepconv.train.fit`; the fields of
# :class:`~sepconv.train.TrainConfig` are the command's flags. We hand it the same subset as a
# :class:`~sepconv.data.DataSplits` (``data=``): sepconv's own splits of ``mnist5k``, cut down to the
# very images we used (``splits.train`` holds the training images in the order of ``train_index``).
# Without ``data``, ``fit`` loads ``config.dataset`` itself. The equivalent command (on the full data
# set) is::
#
#     sepconv train --model separable_cnn --model-arg widths=[16,32,64,128] --epochs 2 \
#         --batch-size 20 --out runs/tutorial

import dataclasses
import json

from sepconv.train import TrainConfig, fit

small = dataclasses.replace(
    splits,
    train=splits.train.subset(torch.searchsorted(train_index, subset)),
    test=splits.test.subset(torch.arange(500)),
)
config = TrainConfig(
    model="separable_cnn",
    model_kwargs={"widths": [16, 32, 64, 128]},
    epochs=2,
    batch_size=20,
    lr=3e-3,
    out_dir=str(work / "run"),
    progress_bar=False,
    tensorboard=False,
)
result = fit(config, data=small)
print(f"fit: {len(result.history)} epochs, test accuracy {result.test_accuracy:.1%}")
print("the run folder:", sorted(path.name for path in result.out_dir.iterdir()))

# %%
# ``fit`` wrote the trained model as ``model.safetensors``. Loading it back and evaluating it on the
# same test images must give exactly the accuracy ``fit`` reported, and the last row of
# ``metrics.csv`` must be the last epoch of its history.

reloaded = sepconv.load_model(result.model_path)
recomputed = evaluate_model(reloaded, small.test, num_classes=10).accuracy
print(f"re-evaluated from {result.model_path.name}: {recomputed:.1%}")
assert recomputed == result.test_accuracy
saved_result = json.loads((result.out_dir / "result.json").read_text())
assert saved_result["test_accuracy"] == result.test_accuracy

epochs = [row["epoch"] for row in result.history]
figure, axis = plt.subplots(figsize=(5, 3))
axis.plot(epochs, [row["train_loss"] for row in result.history], "o-", label="train loss")
axis.plot(epochs, [row["val_loss"] for row in result.history], "o-", label="val loss")
axis.set(xlabel="epoch", ylabel="loss", title="fit(): history", xticks=epochs)
axis.legend()
figure.tight_layout()

# %%
# Next: :doc:`tut_05_standard_vs_separable` trains a standard CNN and its separable twin this way
# and asks where the time goes.
