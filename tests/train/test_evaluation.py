"""``evaluate_model`` counts what plain PyTorch counts, and refuses a model that does not fit the data."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from sepconv.models import create_model
from sepconv.train.evaluation import ModelDataMismatchError, evaluate_model

WIDTHS = [4, 8, 8, 16]


@pytest.fixture
def synthetic(tiny_data):
    return tiny_data  # 60 test images of the synthetic shapes: 6 classes, 3 x 32 x 32


class _CountingDataset(Dataset):
    """Wraps a data set and counts the items read, to see how much was evaluated before an error."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self.reads = 0

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int):
        self.reads += 1
        return self.dataset[index]


def test_confusion_matrix_equals_plain_pytorch(synthetic):
    model = create_model("separable_cnn", widths=WIDTHS, in_channels=3, num_classes=6)
    evaluation = evaluate_model(
        model, synthetic.test, num_classes=6, class_names=synthetic.class_names, batch_size=64
    )
    images = torch.stack([image for image, _ in synthetic.test])
    labels = torch.tensor([label for _, label in synthetic.test])
    model.eval()
    with torch.no_grad():
        # The same batches of 64 through the same eval-mode model: identical arithmetic, so exact equality.
        predicted = torch.cat([model(chunk).argmax(1) for chunk in torch.split(images, 64)])
    expected = torch.zeros(6, 6, dtype=torch.int64)
    for true, guess in zip(labels.tolist(), predicted.tolist()):
        expected[true, guess] += 1
    assert torch.equal(evaluation.confusion, expected)
    assert evaluation.num_samples == len(synthetic.test)
    assert evaluation.accuracy == float((predicted == labels).sum()) / len(labels)
    assert evaluation.class_names == synthetic.class_names


@pytest.mark.parametrize("model_classes", [10, 4])
def test_a_model_with_another_class_count_is_refused(synthetic, model_classes):
    # 10 > 6 used to crash inside bincount; 4 < 6 used to report an accuracy over the wrong classes.
    model = create_model("separable_cnn", widths=WIDTHS, in_channels=3, num_classes=model_classes)
    with pytest.raises(ModelDataMismatchError) as raised:
        evaluate_model(model, synthetic.test, num_classes=6)
    assert isinstance(raised.value, ValueError)
    assert str(raised.value) == f"the model outputs {model_classes} classes but the data set has 6"


def test_a_model_with_another_channel_count_is_refused(synthetic):
    model = create_model("separable_cnn", widths=WIDTHS, num_classes=6)  # 1 input channel
    with pytest.raises(ModelDataMismatchError) as raised:
        evaluate_model(model, synthetic.test, num_classes=6)
    assert str(raised.value) == (
        "the model takes 1 input channels (layer 'features.0.0') but the data set's images have 3 "
        "(image shape (3, 32, 32))"
    )


def test_a_plain_torch_model_with_another_channel_count_is_refused(synthetic):
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 6))
    with pytest.raises(ModelDataMismatchError, match=r"takes 1 input channels \(layer '0'\) but .* have 3"):
        evaluate_model(model, synthetic.test, num_classes=6)


def test_a_model_for_another_image_size_is_refused(synthetic):
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 28 * 28, 6))
    with pytest.raises(ModelDataMismatchError) as raised:
        evaluate_model(model, synthetic.test, num_classes=6)
    message = str(raised.value)
    assert message.startswith("the model failed on the data set's images of shape (3, 32, 32): ")
    assert "3072" in message and "2352" in message  # torch's own numbers: 3*32*32 given, 3*28*28 wanted


def test_the_mismatch_is_found_on_the_first_batch(synthetic):
    data = _CountingDataset(synthetic.test)
    model = create_model("separable_cnn", widths=WIDTHS, in_channels=3, num_classes=10)
    model.train()
    with pytest.raises(ModelDataMismatchError):
        evaluate_model(model, data, num_classes=6, batch_size=8)
    assert data.reads == 8  # one batch of the 60 samples
    assert model.training  # the caller's mode is restored after the error too


def test_a_model_returning_other_than_logits_is_refused():
    data = TensorDataset(torch.eye(3), torch.tensor([0, 1, 2]))
    with pytest.raises(
        ModelDataMismatchError, match=r"logits of shape \(batch, num_classes\), got \(3, 3, 1\)"
    ):
        evaluate_model(nn.Unflatten(1, (3, 1)), data, num_classes=3)


@pytest.mark.parametrize("bad_label", [3, -1])
def test_labels_outside_the_class_range_are_refused(bad_label):
    data = TensorDataset(torch.eye(3), torch.tensor([0, 1, bad_label]))
    with pytest.raises(ValueError, match=rf"^label {bad_label} is outside \[0, 3\)"):
        evaluate_model(nn.Identity(), data, num_classes=3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_classes": 0}, "num_classes must be a positive integer, got 0"),
        ({"num_classes": 3, "batch_size": 0}, "batch_size must be a positive integer, got 0"),
        ({"num_classes": 3, "class_names": ["a", "b"]}, "class_names must name num_classes=3 classes, got 2"),
    ],
)
def test_arguments_are_checked(kwargs, message):
    data = TensorDataset(torch.eye(3), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        evaluate_model(nn.Identity(), data, **kwargs)


def test_confusion_matrix_counts_and_accuracy_agree():
    torch.manual_seed(0)
    images = torch.randn(40, 5)
    labels = torch.randint(0, 5, (40,))
    dataset = torch.utils.data.TensorDataset(images, labels)
    evaluation = evaluate_model(nn.Identity(), dataset, num_classes=5, batch_size=7)
    predicted = images.argmax(1)
    assert evaluation.num_samples == 40
    # The reference is a float32 mean of 40 zeros and ones (k/40 rounded to 6e-8 relative); approx's
    # default rel 1e-6 covers that and is far below one sample (1/40).
    assert evaluation.accuracy == pytest.approx(float((predicted == labels).float().mean()))
    for true in range(5):
        for guess in range(5):
            assert int(evaluation.confusion[true, guess]) == int(
                ((labels == true) & (predicted == guess)).sum()
            )
