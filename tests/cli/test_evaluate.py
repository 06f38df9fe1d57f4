"""``sepconv evaluate``: accuracy, per-class accuracy and confusion matrix agree with each other and the data."""

from __future__ import annotations

import json

import pytest
import torch
from tests.helpers.cli import run_sepconv as _run

from sepconv import load_model, save_model
from sepconv.cli.main import main
from sepconv.data import load_dataset
from sepconv.models import create_model
from sepconv.train import TrainConfig, fit

# Its tests run on one worker (pytest-xdist's --dist loadgroup), so the module fixture
# `trained` is computed once per run, not once on each worker.
pytestmark = pytest.mark.xdist_group("cli-evaluate")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("run")
    config = TrainConfig(
        model="separable_cnn",
        model_kwargs={"widths": [4, 8, 8, 16]},
        dataset="synthetic",
        epochs=1,
        batch_size=64,
        lr=1e-2,
        out_dir=str(out_dir),
        progress_bar=False,
        tensorboard=False,
        channels_last="off",
        bf16="off",
    )
    return fit(config)


@pytest.mark.slow  # the `trained` fixture trains for an epoch: over 10 s on a busy 2-core machine
def test_evaluate_json_is_self_consistent(trained, tmp_path, capsys):
    png = tmp_path / "confusion.png"
    code = main(
        ["evaluate", str(trained.model_path), "--dataset", "synthetic", "--json", "--confusion-png", str(png)]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    document = json.loads(captured.out)
    confusion = document["confusion_matrix"]
    test_count = len(load_dataset("synthetic").test)
    assert sum(map(sum, confusion)) == document["num_samples"] == test_count
    diagonal = sum(confusion[index][index] for index in range(len(confusion)))
    # Each accuracy is one float64 division of integer counts on both sides: exact up to an ulp, so
    # approx's default rel 1e-6 is far below one test image (1/240 = 4e-3).
    assert document["accuracy"] == pytest.approx(diagonal / test_count)
    assert document["accuracy"] == pytest.approx(trained.test_accuracy)  # what training reported
    for index, name in enumerate(document["class_names"]):
        assert document["per_class_accuracy"][name] == pytest.approx(
            confusion[index][index] / sum(confusion[index])
        )
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow  # uses the `trained` fixture
def test_evaluate_accepts_a_checkpoint_state_file(trained, tmp_path, capsys):
    png = tmp_path / "c.png"
    code = main(
        [
            "evaluate",
            str(trained.last_checkpoint),
            "--dataset",
            "synthetic",
            "--json",
            "--confusion-png",
            str(png),
        ]
    )
    assert code == 0
    # Same counts divided the same way (see above): approx's default rel 1e-6, far below one image.
    assert json.loads(capsys.readouterr().out)["accuracy"] == pytest.approx(trained.test_accuracy)


def test_missing_checkpoint_is_one_line_and_exit_code_2(tmp_path, capsys):
    code = main(["evaluate", str(tmp_path / "missing.safetensors"), "--dataset", "synthetic"])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.count("\n") == 1 and "missing.safetensors" in captured.err


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [
        ("--batch-size", "0", "a positive integer"),
        ("--batch-size", "-3", "a positive integer"),
        ("--batch-size", "nan", "a positive integer"),
        ("--batch-size", "inf", "a positive integer"),
        ("--seed", "-1", "an integer in [0, 4,294,967,295]"),  # numpy's range, as every --seed (issue 20)
        ("--seed", "1.5", "an integer in [0, 4,294,967,295]"),
    ],
)
def test_numeric_flags_are_refused_naming_flag_and_value(tmp_path, capsys, flag, value, expected):
    code, out, err = _run(["evaluate", str(tmp_path / "model.safetensors"), f"{flag}={value}"], capsys)
    assert code == 2
    assert out == ""
    assert err == (
        f"sepconv evaluate: error: argument {flag}: must be {expected}, got {value!r} "
        "(see 'sepconv evaluate --help')\n"
    )


def _model_file(tmp_path, name: str, **kwargs) -> str:
    model = create_model("separable_cnn", widths=[4, 8, 8, 16], **kwargs)
    return str(save_model(model, tmp_path / name))


def test_a_model_with_another_class_count_is_refused(tmp_path, capsys):
    model_file = _model_file(tmp_path, "ten.safetensors", in_channels=3, num_classes=10)
    png = tmp_path / "c.png"
    code, out, err = _run(
        ["evaluate", model_file, "--dataset", "synthetic", "--confusion-png", str(png)], capsys
    )
    assert (code, out) == (2, "")
    assert err == (
        f"sepconv evaluate: error: {model_file} does not fit data set synthetic: "
        "the model outputs 10 classes but the data set has 6\n"
    )
    assert not png.exists()


def test_a_model_with_another_channel_count_is_refused(tmp_path, capsys):
    model_file = _model_file(tmp_path, "gray.safetensors", num_classes=6)  # 1 input channel
    code, out, err = _run(["evaluate", model_file, "--dataset", "synthetic"], capsys)
    assert (code, out) == (2, "")
    assert err == (
        f"sepconv evaluate: error: {model_file} does not fit data set synthetic: the model takes 1 input "
        "channels (layer 'features.0.0') but the data set's images have 3 (image shape (3, 32, 32))\n"
    )


def _by_hand(model, split, batch_size: int) -> tuple[float, list[list[int]]]:
    """Accuracy and confusion matrix (rows: true class) of ``model`` on a split's stored uint8 images.

    The synthetic set's normalization is written out here: x / 255, then (x - 0.5) / 0.25 per channel
    (a power-of-two divisor, so the float32 result is the same whatever the order of the operations).
    The batches are the same as the command's, so each logit comes from the same kernel call.
    """
    images = (split.images.to(torch.float32) / 255 - 0.5) / 0.25
    with torch.no_grad():
        predicted = torch.cat([model(chunk).argmax(dim=1) for chunk in images.split(batch_size)])
    confusion = [[0] * 6 for _ in range(6)]
    for true, guess in zip(split.labels.tolist(), predicted.tolist(), strict=True):
        confusion[true][guess] += 1
    return sum(confusion[k][k] for k in range(6)) / len(split), confusion


@pytest.fixture(scope="module")
def untrained_model_file(tmp_path_factory):
    """A model whose predictions vary from image to image, without a training run.

    Freshly initialised, the network predicts one class for every image (1/6 on each stratified split,
    which could not tell the splits apart), so its head is set in closed form to a nearest-class-mean
    rule on its random features of the seed-0 training images: logit_k = (m_k - c).(f - c) - |m_k - c|^2/2.
    """
    torch.manual_seed(5)
    model = create_model("separable_cnn", widths=[4, 8, 8, 16], in_channels=3, num_classes=6).eval()
    train = load_dataset("synthetic", seed=0).train
    with torch.no_grad():
        features = model.pool(model.features((train.images.float() / 255 - 0.5) / 0.25)).flatten(1)
        center = features.mean(0)
        offsets = torch.stack([features[train.labels == k].mean(0) for k in range(6)]) - center
        model.classifier[1].weight.copy_(offsets)
        model.classifier[1].bias.copy_(-offsets @ center - 0.5 * offsets.square().sum(1))
    return save_model(model, tmp_path_factory.mktemp("model") / "model.safetensors")


@pytest.fixture(scope="module")
def recounts(untrained_model_file):
    """Split name -> (size, accuracy, confusion matrix) recounted by hand for seed 3, batches of 64."""
    splits = load_dataset("synthetic", seed=3)
    model = load_model(untrained_model_file)
    return {
        name: (len(getattr(splits, name)), *_by_hand(model, getattr(splits, name), batch_size=64))
        for name in ("train", "val", "test")
    }


def test_the_recounts_tell_the_splits_apart(recounts):
    assert [size for size, _, _ in recounts.values()] == [840, 120, 240]
    assert len({str(confusion) for _, _, confusion in recounts.values()}) == 3
    assert len({accuracy for _, accuracy, _ in recounts.values()}) == 3


@pytest.mark.parametrize("split_name", ["train", "val", "test"])
def test_split_accuracy_equals_a_recount_by_hand(
    untrained_model_file, recounts, tmp_path, capsys, split_name
):
    png = tmp_path / "c.png"
    arguments = ["--dataset", "synthetic", "--seed", "3", "--split", split_name, "--batch-size", "64"]
    code, out, err = _run(
        ["evaluate", str(untrained_model_file), *arguments, "--json", "--confusion-png", str(png)], capsys
    )
    assert code == 0, err
    document = json.loads(out)
    size, accuracy, confusion = recounts[split_name]
    assert (document["split"], document["num_samples"]) == (split_name, size)
    assert document["confusion_matrix"] == confusion
    assert document["accuracy"] == accuracy  # the same integer count over the same N: exactly equal


def test_an_unknown_split_is_one_line_and_exit_2(tmp_path, capsys):
    code, out, err = _run(["evaluate", str(tmp_path / "model.safetensors"), "--split", "holdout"], capsys)
    assert (code, out) == (2, "")
    assert err == (
        "sepconv evaluate: error: argument --split: invalid choice: 'holdout' (choose from 'test', 'val', "
        "'train') (see 'sepconv evaluate --help')\n"
    )


# --- an .onnx file is evaluated under its own stored normalization, as OnnxModel.predict runs it ----


def _random_digit_classifier() -> torch.nn.Module:
    """A small CNN with BatchNorm far from the identity, so its predictions follow the input's scale."""
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, stride=2),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(16 * 6 * 6, 10),
    ).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.copy_(0.3 * torch.randn(module.num_features, generator=generator))
    return model


def _confusion(predicted: torch.Tensor, labels: torch.Tensor, classes: int) -> torch.Tensor:
    return torch.bincount(labels * classes + predicted, minlength=classes**2).reshape(classes, classes)


@pytest.mark.slow  # exports a model and evaluates 1,000 images twice
def test_evaluate_of_an_onnx_file_agrees_with_predict(tmp_path, capsys):
    from sepconv.deploy import OnnxModel, export_onnx

    # Stored normalization (0.5, 0.2) unlike mnist5k's own (0.1307, 0.3081): evaluate must use the file's.
    data = load_dataset("mnist5k", seed=0)
    path = tmp_path / "digits.onnx"
    model = _random_digit_classifier()
    export_onnx(
        model,
        path,
        input_size=(1, 28, 28),
        metadata={"mean": [0.5], "std": [0.2], "class_names": list(data.class_names)},
    )
    code, out, err = _run(
        ["evaluate", str(path), "--dataset", "mnist5k", "--json", "--confusion-png", str(tmp_path / "c.png")],
        capsys,
    )
    assert code == 0, err
    evaluated = torch.tensor(json.loads(out)["confusion_matrix"])
    raw_images, labels = data.test.images, torch.as_tensor(data.test.labels)
    predicted, _ = OnnxModel(path).predict(raw_images)  # uint8: / 255, then the stored mean and std
    by_predict = _confusion(predicted, labels, 10)
    # evaluate undoes the data set's normalization and applies the file's: each pixel moves by a few
    # float32 ulps against predict's, so at most a near-tie flips (one image moves two cells).
    assert int(evaluated.sum()) == len(labels) == 1000
    assert int((evaluated - by_predict).abs().sum()) <= 2
    # The data set's own normalization, which evaluate used before, predicts otherwise on a quarter of
    # the images (240 of 1,000 here): the agreement above is not the two normalizations agreeing.
    with torch.no_grad():
        as_before = model((raw_images.float() / 255 - 0.1307) / 0.3081).argmax(1)
    assert int((as_before != predicted).sum()) > 100


def test_evaluate_of_an_onnx_file_with_broken_metadata_is_one_line(tmp_path, capsys):
    import onnx

    from sepconv.deploy import export_onnx

    path = tmp_path / "digits.onnx"
    export_onnx(
        _random_digit_classifier(), path, input_size=(1, 28, 28), metadata={"mean": [0.5], "std": [0.2]}
    )
    proto = onnx.load(str(path))
    document = json.loads({entry.key: entry.value for entry in proto.metadata_props}["sepconv"])
    del proto.metadata_props[:]
    proto.metadata_props.add(key="sepconv", value=json.dumps({**document, "std": [-0.2]}))
    onnx.save(proto, str(path))
    png = tmp_path / "c.png"
    code, out, err = _run(
        ["evaluate", str(path), "--dataset", "mnist5k", "--confusion-png", str(png)], capsys
    )
    assert (code, out) == (2, "")
    assert err == (
        f"sepconv evaluate: error: {path}: its sepconv metadata's std is [-0.2]; it must be 1 finite number, "
        f"one per input channel, each > 0\n"
    )
    assert not png.exists()
