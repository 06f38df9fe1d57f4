"""``OnnxModel``: an exported file as a callable model, and ``predict`` on raw images.

The reference is always the eager PyTorch model the file was exported from, and for ``predict`` the
normalization is done by hand here ((pixels / 255 - mean) / std), not by sepconv.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from sepconv.deploy import ExportError, OnnxModel, export_onnx

MEAN, STD = 0.1307, 0.3081
CLASS_NAMES = [f"digit {index}" for index in range(10)]

# float32 ONNX Runtime against float32 PyTorch on the same (folded) model: the two differ by
# reassociated sums, a few ulps of the logits (measured below 1e-6); 1e-4 is the export's own bound,
# and a wrong normalization or a wrong file moves the logits by 1e-1 or more.
LOGITS_ATOL = 1e-4


def digit_classifier() -> nn.Sequential:
    """A small CNN whose logits depend strongly on the image (a random separable_cnn's barely do)."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, stride=2),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, groups=8),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(16 * 6 * 6, 10),
    )


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The classifier with BatchNorm far from the identity, exported with mnist5k's normalization."""
    torch.manual_seed(0)
    model = digit_classifier().eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.copy_(0.3 * torch.randn(module.num_features, generator=generator))
                module.weight.copy_(1 + torch.rand(module.num_features, generator=generator))
    path = tmp_path_factory.mktemp("runtime") / "model.onnx"
    metadata = {"mean": [MEAN], "std": [STD], "class_names": CLASS_NAMES, "dataset": "mnist5k"}
    export_onnx(model, path, input_size=(1, 28, 28), metadata=metadata)
    return model, path


@pytest.fixture(scope="module")
def onnx_model(exported):
    return OnnxModel(exported[1], threads=1)


def logits(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(images)


def raw_digits(count: int) -> torch.Tensor:
    """uint8 images 0..255: mostly dark, with bright strokes, like MNIST."""
    generator = torch.Generator().manual_seed(5)
    return (torch.rand((count, 1, 28, 28), generator=generator) ** 4 * 255).to(torch.uint8)


def test_tensor_in_tensor_out_equal_to_the_eager_model(exported, onnx_model):
    model, _ = exported
    images = torch.randn(7, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    output = onnx_model(images)
    assert isinstance(output, torch.Tensor) and output.dtype == torch.float32
    expected = logits(model, images)
    assert expected.abs().max() > 0.1  # logits of a real size, so the tolerance means something
    torch.testing.assert_close(output, expected, atol=LOGITS_ATOL, rtol=0)


def test_numpy_in_numpy_out_equal_to_the_eager_model(exported, onnx_model):
    model, _ = exported
    images = np.random.default_rng(3).standard_normal((1, 1, 28, 28))  # float64: converted to float32
    output = onnx_model(images)
    assert isinstance(output, np.ndarray) and output.shape == (1, 10)
    expected = logits(model, torch.from_numpy(images).float()).numpy()
    np.testing.assert_allclose(output, expected, atol=LOGITS_ATOL, rtol=0)


def test_predict_normalizes_raw_images_with_the_stored_mean_and_std(exported, onnx_model):
    model, _ = exported
    pixels = raw_digits(8)
    by_hand = (pixels.float() / 255.0 - MEAN) / STD
    expected_probabilities = torch.softmax(logits(model, by_hand), dim=1)
    top_two = expected_probabilities.topk(2, dim=1).values
    # No near-tie: a 1e-4 change of the logits cannot swap the two most likely classes.
    assert (top_two[:, 0] - top_two[:, 1]).min() > 1e-3
    indices, probabilities = onnx_model.predict(pixels)
    assert torch.equal(indices, expected_probabilities.argmax(dim=1))
    assert len(set(indices.tolist())) > 1  # the images are told apart, not all given one class
    # A softmax probability moves by at most half the largest change of the logits: the bound carries over.
    torch.testing.assert_close(probabilities, expected_probabilities, atol=LOGITS_ATOL, rtol=0)
    torch.testing.assert_close(probabilities.sum(dim=1), torch.ones(8))
    # Without normalization the answer would be different: the stored mean/std are really applied.
    unnormalized = torch.softmax(logits(model, pixels.float() / 255.0), dim=1)
    assert (unnormalized - probabilities).abs().max() > 1e-2


def test_predict_takes_floats_in_0_1_and_numpy(exported, onnx_model):
    pixels = raw_digits(3)
    from_uint8 = onnx_model.predict(pixels)
    from_floats = onnx_model.predict(pixels.float() / 255.0)
    from_numpy = onnx_model.predict(pixels.numpy())
    for indices, probabilities in (from_floats, from_numpy):
        assert torch.equal(indices, from_uint8[0])
        # The same float32 images up to the rounding of x / 255 (half an ulp of values below 1).
        torch.testing.assert_close(probabilities, from_uint8[1], atol=1e-6, rtol=0)


def test_predict_on_one_image(exported, onnx_model):
    pixels = raw_digits(4)
    indices, probabilities = onnx_model.predict(pixels[2])  # (C, H, W): a batch of one
    batch_indices, batch_probabilities = onnx_model.predict(pixels)
    assert indices.shape == (1,) and probabilities.shape == (1, 10)
    assert int(indices[0]) == int(batch_indices[2])
    # The same image through the same file at batch 1 and batch 4: the same kernels up to blocking.
    torch.testing.assert_close(probabilities[0], batch_probabilities[2], atol=1e-6, rtol=0)


def test_stored_metadata_is_exposed(onnx_model, exported):
    assert onnx_model.input_size == (1, 28, 28)
    assert onnx_model.mean == [MEAN]
    assert onnx_model.std == [STD]
    assert onnx_model.class_names == CLASS_NAMES
    assert onnx_model.metadata["spec"] is None  # a plain nn.Sequential has no sepconv recipe
    assert onnx_model.metadata["folded_batchnorms"] == 2
    assert onnx_model.threads == 1
    assert repr(onnx_model) == f"OnnxModel({str(exported[1])!r}, threads=1)"


def test_as_module_runs_the_file(exported, onnx_model):
    model, _ = exported
    module = onnx_model.as_module()
    assert isinstance(module, nn.Module)
    images = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(4)).to(
        memory_format=torch.channels_last  # made contiguous before it reaches ONNX Runtime
    )
    torch.testing.assert_close(module(images), logits(model, images), atol=LOGITS_ATOL, rtol=0)


@pytest.mark.parametrize(
    "shape",
    [(1, 28, 28), (2, 1, 28, 27), (2, 3, 28, 28), (28, 28)],
)
def test_images_of_the_wrong_shape_are_refused(onnx_model, shape):
    with pytest.raises(ValueError, match=r"images must (be a batch|have shape)"):
        onnx_model(torch.zeros(shape))


def test_predict_refuses_the_wrong_image_size(onnx_model):
    with pytest.raises(ValueError, match=r"images must have shape \(N, 1, 28, 28\), got \(1, 1, 32, 32\)"):
        onnx_model.predict(torch.zeros(1, 32, 32, dtype=torch.uint8))


@pytest.mark.parametrize("threads", [0, -1, True, 1.5])
def test_threads_must_be_a_positive_integer(exported, threads):
    with pytest.raises(ValueError, match="threads must be a positive integer or None"):
        OnnxModel(exported[1], threads=threads)


def test_a_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="ONNX model file not found"):
        OnnxModel(tmp_path / "missing.onnx")


def test_a_file_that_is_not_onnx_is_an_export_error(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_text("this is not an ONNX model\n")
    with pytest.raises(ExportError, match="is not an ONNX model ONNX Runtime can load") as raised:
        OnnxModel(path)
    assert "\n" not in str(raised.value)


def test_a_file_without_sepconv_metadata_still_runs(exported, tmp_path):
    model, path = exported
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    plain = tmp_path / "plain.onnx"
    onnx.save(proto, str(plain))
    onnx_model = OnnxModel(plain)
    assert onnx_model.metadata == {}
    assert onnx_model.mean is None and onnx_model.class_names is None
    assert onnx_model.input_size == (1, 28, 28)  # read from the graph's input instead
    images = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(6))
    torch.testing.assert_close(onnx_model(images), logits(model, images), atol=LOGITS_ATOL, rtol=0)
    # No stored normalization: predict takes the images as they are (floats in [0, 1], no / 255).
    unit_images = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(6))
    _, probabilities = onnx_model.predict(unit_images)
    torch.testing.assert_close(
        probabilities, torch.softmax(logits(model, unit_images), 1), atol=LOGITS_ATOL, rtol=0
    )


@pytest.mark.parametrize("text", ["{not json", json.dumps([1, 2])])
def test_broken_sepconv_metadata_is_an_export_error(exported, tmp_path, text):
    proto = onnx.load(str(exported[1]))
    del proto.metadata_props[:]
    proto.metadata_props.add(key="sepconv", value=text)
    broken = tmp_path / "broken.onnx"
    onnx.save(proto, str(broken))
    with pytest.raises(ExportError, match="sepconv metadata"):
        OnnxModel(broken)


# --- untrusted input: what predict takes, and the metadata a file may carry (issue 20) -----------


def test_predict_refuses_nan(onnx_model):
    images = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(7))
    images[1, 0, 3, 4] = float("nan")
    with pytest.raises(ValueError) as raised:
        onnx_model.predict(images)
    assert str(raised.value) == (
        "images hold NaN or infinite values; predict takes uint8 in 0..255 or floats in [0, 1]"
    )


def test_predict_refuses_floats_of_0_to_255(onnx_model):
    # The case: 0-255 pixels as floats were taken as 0-1 and scored 0%.
    images = raw_digits(2).float()
    with pytest.raises(ValueError) as raised:
        onnx_model.predict(images)
    assert str(raised.value) == (
        f"images are floats in [0, {float(images.max()):g}]; predict takes floats in [0, 1] or uint8 in "
        f"0..255 (divide 0-255 floats by 255; call the model itself on images already normalized)"
    )
    # The same pixels divided by 255 are what uint8 input gives.
    from_floats, _ = onnx_model.predict(images / 255)
    from_bytes, _ = onnx_model.predict(raw_digits(2))
    assert torch.equal(from_floats, from_bytes)


def test_predict_refuses_integers_other_than_uint8(onnx_model):
    with pytest.raises(
        ValueError, match=r"^images have dtype int64; predict takes uint8 in 0\.\.255 or floats"
    ):
        onnx_model.predict(raw_digits(1).long())


def test_as_module_feeds_the_file_its_own_normalization(exported, onnx_model):
    # A data set normalized otherwise (mean 0.5, std 0.25): the module undoes it and applies the file's,
    # so it scores what predict scores on the raw images.
    raw = raw_digits(8)
    dataset_normalized = (raw.float() / 255 - 0.5) / 0.25
    module = onnx_model.as_module(input_mean=[0.5], input_std=[0.25])
    with torch.no_grad():
        through_module = torch.softmax(module(dataset_normalized), 1)
    _, by_predict = onnx_model.predict(raw)
    by_hand = torch.softmax(logits(exported[0], (raw.float() / 255 - MEAN) / STD), 1)
    # Undoing and redoing a normalization moves each pixel by a few float32 ulps: far below LOGITS_ATOL.
    torch.testing.assert_close(through_module, by_predict, atol=LOGITS_ATOL, rtol=0)
    torch.testing.assert_close(through_module, by_hand, atol=LOGITS_ATOL, rtol=0)
    # ... where the images as given would be read under the wrong normalization.
    with torch.no_grad():
        as_given = torch.softmax(onnx_model.as_module()(dataset_normalized), 1)
    assert (as_given - by_hand).abs().max() > 0.1


def _with_metadata(exported, tmp_path, document_or_text) -> Path:
    proto = onnx.load(str(exported[1]))
    del proto.metadata_props[:]
    text = document_or_text if isinstance(document_or_text, str) else json.dumps(document_or_text)
    proto.metadata_props.add(key="sepconv", value=text)
    path = tmp_path / "edited.onnx"
    onnx.save(proto, str(path))
    return path


def _stored(exported) -> dict:
    proto = onnx.load(str(exported[1]))
    return json.loads({entry.key: entry.value for entry in proto.metadata_props}["sepconv"])


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"mean": [float("nan")]}, "mean is [nan]; it must be 1 finite number, one per input channel"),
        (
            {"mean": [0.1, 0.2, 0.3]},
            "mean is [0.1, 0.2, 0.3]; it must be 1 finite number, one per input channel",
        ),
        ({"std": [-0.3]}, "std is [-0.3]; it must be 1 finite number, one per input channel, each > 0"),
        ({"std": [0]}, "std is [0]; it must be 1 finite number, one per input channel, each > 0"),
        (
            {"class_names": ["a", "b"]},
            "class_names holds 2 names; it must be 10 strings, one per model output",
        ),
        (
            {"class_names": [1] * 10},
            "class_names[0] is 1; class names must be strings of at most 1,024 characters",
        ),
        (
            {"input_size": [3, 28, 28]},
            "input_size is [3, 28, 28], but the model's graph takes images of [1, 28, 28] (channels, height, width)",
        ),
        (
            {"input_size": [1, 10**9, 28]},
            "input_size is [1, 1000000000, 28]; it must be [channels, height, width], three integers in [1, 65,536]",
        ),
    ],
    ids=[
        "nan-mean",
        "mean-count",
        "negative-std",
        "zero-std",
        "class-count",
        "class-type",
        "size-graph",
        "size-huge",
    ],
)
def test_metadata_that_does_not_fit_the_graph_is_refused(exported, tmp_path, edit, message):
    path = _with_metadata(exported, tmp_path, {**_stored(exported), **edit})
    with pytest.raises(ExportError) as raised:
        OnnxModel(path)
    assert str(raised.value) == f"{path}: its sepconv metadata's {message}"


def test_deeply_nested_metadata_is_refused_without_a_recursion_error(exported, tmp_path):
    path = _with_metadata(exported, tmp_path, "[" * 100_000 + "]" * 100_000)
    with pytest.raises(ExportError) as raised:
        OnnxModel(path)
    assert (
        str(raised.value) == f"{path}: its sepconv metadata nests 100000 levels deep, more than the 12 it may"
    )


def test_oversized_metadata_is_refused(exported, tmp_path):
    from sepconv.deploy.metadata import MAX_METADATA_CHARS

    # The 200 MB of class names, scaled down to just over the bound: refused on its length
    # before it is parsed.
    names = ["x" * 1000] * (MAX_METADATA_CHARS // 1000)
    text = json.dumps({**_stored(exported), "class_names": names})
    path = _with_metadata(exported, tmp_path, text)
    with pytest.raises(ExportError) as raised:
        OnnxModel(path)
    assert str(raised.value) == (
        f"{path}: its sepconv metadata is {len(text):,} characters long, more than the {MAX_METADATA_CHARS:,} "
        f"it may be"
    )


# --- export refuses what OnnxModel would refuse, before exporting -------------------------------


def _exporter_must_not_run(monkeypatch):
    import sepconv.deploy.onnx_export as onnx_export

    def fail(*args, **kwargs):
        raise AssertionError("the exporter ran")

    monkeypatch.setattr(onnx_export, "_export", fail)


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({"mean": [float("nan")], "std": [STD]}, "metadata['mean'] is [nan]; it must be 1 finite number"),
        (
            {"mean": [MEAN], "std": [-1.0]},
            "metadata['std'] is [-1.0]; it must be 1 finite number, one per input",
        ),
        (
            {"class_names": ["a", "b", "c"]},
            "metadata['class_names'] holds 3 names; it must be 10 strings, one per",
        ),
    ],
    ids=["nan-mean", "negative-std", "class-count"],
)
def test_export_refuses_metadata_that_does_not_fit_before_exporting(tmp_path, monkeypatch, metadata, message):
    _exporter_must_not_run(monkeypatch)
    target = tmp_path / "model.onnx"
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        export_onnx(digit_classifier(), target, input_size=(1, 28, 28), metadata=metadata)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("input_size", "message"),
    [
        (
            (3, 28, 28),
            "input_size (3, 28, 28) has 3 channels, but the model takes 1 (layer '0')",
        ),
        (
            (1, 4, 4),
            "input_size (1, 4, 4) does not fit the model: it fails at layer '3' (Conv2d) (Calculated padded input "
            "size per channel: (1 x 1). Kernel size: (3 x 3). Kernel size can't be greater than actual input size)",
        ),
    ],
    ids=["channels", "too-small"],
)
def test_export_names_an_input_size_the_model_cannot_take_before_exporting(
    tmp_path, monkeypatch, input_size, message
):
    _exporter_must_not_run(monkeypatch)
    with pytest.raises(ValueError) as raised:
        export_onnx(digit_classifier(), tmp_path / "model.onnx", input_size=input_size)
    assert str(raised.value) == message
    assert list(tmp_path.iterdir()) == []


def test_export_inputs_must_be_a_tensor(tmp_path):
    with pytest.raises(TypeError) as raised:
        export_onnx(digit_classifier(), tmp_path / "model.onnx", inputs=[1, 2])
    assert (
        str(raised.value) == "inputs must be a torch.Tensor of images (N, C, H, W) or None, got list [1, 2]"
    )
