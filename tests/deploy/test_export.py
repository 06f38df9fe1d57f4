"""``export_onnx``, ``verify_onnx`` and int8: the file computes what the model computes, or nothing is written.

Every round trip is checked here with ONNX Runtime called directly (not through sepconv's
``OnnxModel``) on images the exporter never saw, against the original eager model in eval mode.
Exports take 1-3 s each (the torch.export-based exporter is slow), so each exported file is made once
per module by a fixture and shared.
"""

from __future__ import annotations

import copy
import json
import re
import tempfile

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
import torchvision
from tests.helpers.trained import trained_separable_cnn
from torch import nn
from torch.utils.data import DataLoader

from sepconv.data import load_dataset
from sepconv.deploy import ExportError, export_onnx, onnx_accuracy, quantize_onnx, verify_onnx
from sepconv.models import create_model

# ONNX Runtime against PyTorch, both in float32: the folded weights are rounded once more than the
# model's (w * gamma / sqrt(var + eps)), and ORT's convolution kernels sum the C_in x k x k products in
# another order (blocked GEMM, other vector widths) than oneDNN. Each reassociation moves a sum by a
# few ulps of its terms (float32 ulp 1.2e-7 relative); through ~20 layers on logits of size 0.1-10 that
# stays below 1e-5 (measured: 1e-9 to 4e-7), while a wrong fold or a wrong op changes logits by 1e-2 or
# more. 1e-4 separates the two with two orders of magnitude on each side.
ROUND_TRIP_ATOL = 1e-4
BATCH_SIZES = (1, 7)


def randomize_batchnorm(model: nn.Module, seed: int = 1) -> nn.Module:
    """Give every BatchNorm running statistics and an affine map far from the identity, so folding matters."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                channels = module.num_features
                module.running_mean.copy_(0.5 * torch.randn(channels, generator=generator))
                module.running_var.copy_(0.5 + 1.5 * torch.rand(channels, generator=generator))
                module.weight.copy_(0.5 + torch.rand(channels, generator=generator))
                module.bias.copy_(0.2 * torch.randn(channels, generator=generator))
    return model.eval()


def encoder_decoder() -> nn.Sequential:
    """Grouped, depthwise and (grouped) transposed convolutions, each followed by BatchNorm."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=4),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1, groups=16),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.ConvTranspose2d(16, 8, 4, stride=2, padding=1, groups=2),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.ConvTranspose2d(8, 4, 3, padding=1),
        nn.BatchNorm2d(4),
    )


def run_onnxruntime(path, images: torch.Tensor) -> np.ndarray:
    """The file's output for ``images``, from a plain ONNX Runtime session (sepconv not involved)."""
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (name,) = [entry.name for entry in session.get_inputs()]
    return session.run(None, {name: images.numpy()})[0]


def eager(model: nn.Module, images: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model.eval()(images).numpy()


def fresh_images(batch_size: int, input_size, seed: int = 123) -> torch.Tensor:
    # Not the exporter's own verification images (seed 0): the file must generalise, not memorise.
    return torch.randn((batch_size, *input_size), generator=torch.Generator().manual_seed(seed))


def node_types(path) -> list[str]:
    return [node.op_type for node in onnx.load(str(path)).graph.node]


def stored_metadata(path) -> dict:
    props = {entry.key: entry.value for entry in onnx.load(str(path)).metadata_props}
    return json.loads(props["sepconv"])


@pytest.fixture(scope="module")
def exported_standard(tmp_path_factory):
    torch.manual_seed(0)
    model = randomize_batchnorm(create_model("standard_cnn"))
    path = tmp_path_factory.mktemp("standard") / "standard.onnx"
    metadata = {"mean": [0.1307], "std": [0.3081], "class_names": list("0123456789"), "dataset": "mnist5k"}
    report = export_onnx(model, path, metadata=metadata)
    return model, path, report


@pytest.fixture(scope="module")
def exported_separable(tmp_path_factory):
    torch.manual_seed(1)
    model = randomize_batchnorm(create_model("separable_cnn"))
    path = tmp_path_factory.mktemp("separable") / "separable.onnx"
    return model, path, export_onnx(model, path)


@pytest.fixture(scope="module")
def exported_encoder_decoder(tmp_path_factory):
    torch.manual_seed(2)
    model = randomize_batchnorm(encoder_decoder())
    path = tmp_path_factory.mktemp("encoder_decoder") / "encoder_decoder.onnx"
    return model, path, export_onnx(model, path, input_size=(3, 16, 16))


@pytest.fixture(scope="module")
def exported_mobilenet_v2(tmp_path_factory):
    torch.manual_seed(3)
    model = randomize_batchnorm(torchvision.models.mobilenet_v2())  # no weights: nothing downloaded
    path = tmp_path_factory.mktemp("mobilenet_v2") / "mobilenet_v2.onnx"
    # 96 x 96 instead of 224: the same 52 conv-BN pairs and graph, a fifth of the verification work.
    return model, path, export_onnx(model, path, input_size=(3, 96, 96))


@pytest.fixture
def scratch_folder(tmp_path_factory, monkeypatch):
    """Where tempfile puts temporary files during the test, to check none is left behind."""
    folder = tmp_path_factory.mktemp("tempdir")
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


ROUND_TRIP_MODELS = [
    "exported_standard",
    "exported_separable",
    "exported_encoder_decoder",
    pytest.param("exported_mobilenet_v2", marks=pytest.mark.slow),  # its export alone takes ~15 s
]


# --- the round trip -----------------------------------------------------------------------------------


@pytest.mark.parametrize("fixture", ROUND_TRIP_MODELS)
def test_onnx_runtime_reproduces_the_eager_model_at_batch_1_and_7(fixture, request):
    model, path, report = request.getfixturevalue(fixture)
    input_size = report.input_size
    for batch_size in BATCH_SIZES:  # one file, two batch sizes: the batch dimension is dynamic
        images = fresh_images(batch_size, input_size)
        expected = eager(model, images)
        actual = run_onnxruntime(path, images)
        assert actual.shape == expected.shape
        # The tolerance means something only for outputs of a real size (see ROUND_TRIP_ATOL).
        assert np.abs(expected).max() > 0.1
        assert np.abs(actual - expected).max() <= ROUND_TRIP_ATOL
    assert report.batch_sizes == BATCH_SIZES
    assert report.max_abs_diff <= ROUND_TRIP_ATOL


@pytest.mark.parametrize("fixture", ROUND_TRIP_MODELS)
def test_no_batchnorm_is_left_in_the_file(fixture, request):
    model, path, report = request.getfixturevalue(fixture)
    batchnorms = [name for name, module in model.named_modules() if isinstance(module, nn.BatchNorm2d)]
    # Every BatchNorm of these models follows a convolution, so every one is folded.
    assert sorted(report.folded_batchnorms) == sorted(batchnorms)
    assert "BatchNormalization" not in node_types(path)
    assert stored_metadata(path)["folded_batchnorms"] == len(batchnorms)


def test_the_batch_dimension_is_symbolic_and_the_image_size_fixed(exported_standard):
    _, path, _ = exported_standard
    graph = onnx.load(str(path)).graph
    (images,) = graph.input
    input_dims = images.type.tensor_type.shape.dim
    assert input_dims[0].dim_param and not input_dims[0].HasField("dim_value")
    assert [dim.dim_value for dim in input_dims[1:]] == [1, 28, 28]
    output_dims = graph.output[0].type.tensor_type.shape.dim
    assert output_dims[0].dim_param == input_dims[0].dim_param  # N logits for N images
    assert output_dims[1].dim_value == 10
    assert (images.name, graph.output[0].name) == ("images", "logits")


def test_the_file_describes_itself(exported_standard):
    _, path, report = exported_standard
    document = stored_metadata(path)
    assert document["spec"] == {"name": "standard_cnn", "kwargs": {}}
    assert document["input_size"] == [1, 28, 28]
    assert document["mean"] == [0.1307]
    assert document["std"] == [0.3081]
    assert document["class_names"] == list("0123456789")
    assert document["dataset"] == "mnist5k"
    assert document["precision"] == "float32"
    model_proto = onnx.load(str(path))
    (default_domain,) = [
        entry.version for entry in model_proto.opset_import if entry.domain in ("", "ai.onnx")
    ]
    assert report.opset == default_domain
    assert report.opset >= 18  # the torch.export-based exporter's lowest opset
    assert report.file_bytes == path.stat().st_size
    assert report.inputs == "random normal"


def test_the_file_passes_the_onnx_checker(exported_encoder_decoder):
    _, path, _ = exported_encoder_decoder
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)


def test_the_spatial_mean_of_the_head_becomes_global_average_pool(exported_separable):
    # separable_cnn ends with AdaptiveAvgPool2d(1): exported as ReduceMean over H, W, rewritten.
    ops = [node.op_type for node in onnx.load(str(exported_separable[1])).graph.node]
    assert "GlobalAveragePool" in ops and "ReduceMean" not in ops


class ChannelMean(nn.Module):
    def forward(self, x):
        return x.mean(dim=1, keepdim=True) + x.mean(dim=(2, 3), keepdim=True)[:, :1]


def test_a_mean_over_other_axes_stays_reduce_mean(tmp_path):
    # A channel mean is not a global average pool; the spatial one next to it is.
    report = export_onnx(ChannelMean(), tmp_path / "mean.onnx", input_size=(3, 4, 4))
    ops = [node.op_type for node in onnx.load(str(report.path)).graph.node]
    assert ops.count("ReduceMean") == 1 and ops.count("GlobalAveragePool") == 1


def test_a_channels_last_model_exports_the_same_plain_graph(exported_separable, tmp_path):
    # A model trained channels_last holds channels_last weights; flatten after pooling must still be a
    # Reshape, not index arithmetic (Range/Gather) derived from the strides.
    model = copy.deepcopy(exported_separable[0]).to(memory_format=torch.channels_last)
    report = export_onnx(model, tmp_path / "channels_last.onnx")
    ops = [node.op_type for node in onnx.load(str(report.path)).graph.node]
    plain = [node.op_type for node in onnx.load(str(exported_separable[1])).graph.node]
    assert ops == plain and "Gather" not in ops


def test_torch_folds_conv_batchnorm_itself_without_fold_bn_but_a_leading_batchnorm_stays(tmp_path):
    # A BatchNorm with no convolution before it cannot be folded by anyone; the conv-BN pair can.
    model = randomize_batchnorm(
        nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten())
    )
    folded = export_onnx(model, tmp_path / "folded.onnx", input_size=(3, 6, 6))
    unfolded = export_onnx(model, tmp_path / "unfolded.onnx", input_size=(3, 6, 6), fold_bn=False)
    assert folded.folded_batchnorms == ["2"]
    assert unfolded.folded_batchnorms == []
    assert stored_metadata(tmp_path / "unfolded.onnx")["folded_batchnorms"] == 0
    # What is true with the pinned torch: its ONNX optimizer folds the conv-BN pair on its own, so both
    # files hold the same ops, and the leading BatchNorm survives in both.
    assert node_types(tmp_path / "folded.onnx") == ["BatchNormalization", "Conv", "Reshape"]
    assert node_types(tmp_path / "unfolded.onnx") == ["BatchNormalization", "Conv", "Reshape"]
    images = fresh_images(7, (3, 6, 6))
    for name in ("folded.onnx", "unfolded.onnx"):
        assert (
            np.abs(run_onnxruntime(tmp_path / name, images) - eager(model, images)).max() <= ROUND_TRIP_ATOL
        )


def test_given_images_are_the_ones_verified(exported_separable, tmp_path):
    model, _, _ = exported_separable
    images = fresh_images(3, (1, 28, 28), seed=7)
    report = export_onnx(model, tmp_path / "given.onnx", inputs=images)
    assert report.inputs == "given images"
    assert report.input_size == (1, 28, 28)
    # The report's figure is ONNX Runtime against the model on those images, repeated up to batch 7.
    batches = [images[:1], torch.cat([images, images, images[:1]])]
    expected_max = max(
        np.abs(run_onnxruntime(tmp_path / "given.onnx", batch) - eager(model, batch)).max()
        for batch in batches
    )
    # Same inputs, same float32 computations on both sides: equal up to ORT thread scheduling, which
    # can move a sum by a few ulps of logits of size ~1 (1e-6 covers ten of them).
    assert report.max_abs_diff == pytest.approx(expected_max, abs=1e-6)


# --- verification failures ----------------------------------------------------------------------------


def test_verify_onnx_returns_the_differences_it_measured(exported_encoder_decoder):
    model, path, _ = exported_encoder_decoder
    batches = [fresh_images(size, (3, 16, 16)) for size in BATCH_SIZES]
    max_abs, max_rel = verify_onnx(path, model, batches, atol=ROUND_TRIP_ATOL, rtol=0)
    differences = [np.abs(run_onnxruntime(path, batch) - eager(model, batch)).max() for batch in batches]
    scales = [np.abs(eager(model, batch)).max() for batch in batches]
    # As above: the same float32 computations, up to a few ulps of ORT's thread scheduling.
    assert max_abs == pytest.approx(max(differences), abs=1e-6)
    assert max_rel == pytest.approx(max(d / s for d, s in zip(differences, scales)), abs=1e-6)


def test_verify_onnx_refuses_a_file_that_differs_from_the_reference(exported_encoder_decoder):
    model, path, _ = exported_encoder_decoder
    changed = copy.deepcopy(model)
    with torch.no_grad():
        changed[-1].bias[0] += 0.5  # the last BatchNorm's shift of output channel 0, after the file was made
    images = fresh_images(1, (3, 16, 16))
    with pytest.raises(ExportError, match=r"differs from PyTorch's by .* at batch size 1") as raised:
        verify_onnx(path, changed, [images], atol=ROUND_TRIP_ATOL, rtol=1e-3)
    # Channel 0 of every pixel moved by exactly 0.5 (up to the float32 rounding of the sum).
    reported = float(re.search(r"max abs diff ([0-9.e+-]+)", str(raised.value)).group(1))
    assert reported == pytest.approx(0.5, rel=1e-2)  # the message rounds to 3 significant digits
    assert "\n" not in str(raised.value)


class Tiny(nn.Module):
    """Logits of ~1e-12, as an untrained deep network gives: far below any useful atol."""

    def __init__(self, scale: float = 1e-12) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3)
        self.scale = scale

    def forward(self, x):
        return self.conv(x).mean(dim=(2, 3)) * self.scale


def test_verify_onnx_compares_tiny_outputs_at_their_own_scale(tmp_path):
    torch.manual_seed(0)
    model = Tiny().eval()
    report = export_onnx(model, tmp_path / "tiny.onnx", input_size=(1, 8, 8))
    # float32 rounding relative to the output's scale: well under rtol=1e-3.
    assert report.max_rel_diff < 1e-5
    wrong = copy.deepcopy(model)
    wrong.scale = 1.1e-12  # every logit 10% off, yet ~1e-13 in absolute terms: far below atol=1e-4
    images = fresh_images(2, (1, 8, 8))
    with torch.inference_mode():
        assert float((wrong(images) - model(images)).abs().max()) < 1e-4
    with pytest.raises(ExportError, match=r"of the output's largest value .* more than rtol=0.001"):
        verify_onnx(report.path, wrong, [images], atol=1e-4, rtol=1e-3)
    # rtol=0 asks for the absolute tolerance alone.
    verify_onnx(report.path, wrong, [images], atol=1e-4, rtol=0)


def test_verify_onnx_refuses_an_output_of_another_shape(exported_encoder_decoder):
    _, path, _ = exported_encoder_decoder
    other = nn.Conv2d(3, 4, 1, stride=2)  # 8 x 8 maps where the file's are 16 x 16
    with pytest.raises(ExportError, match=r"shape \(1, 4, 16, 16\) but the model's has \(1, 4, 8, 8\)"):
        verify_onnx(path, other, [fresh_images(1, (3, 16, 16))], atol=1e-4, rtol=0)


def test_impossible_tolerance_fails_and_leaves_nothing(exported_standard, tmp_path, scratch_folder):
    model, _, report = exported_standard
    # The precondition: on the exporter's verification images ONNX Runtime differs from PyTorch by
    # rounding (a few ulps, but not zero), so atol=0, rtol=0 cannot be met.
    assert report.max_abs_diff > 0
    (tmp_path / "keep.txt").write_text("unrelated\n")
    before = sorted(path.name for path in tmp_path.iterdir())
    with pytest.raises(ExportError, match=r"more than atol=0 \+ rtol=0"):
        export_onnx(model, tmp_path / "model.onnx", atol=0, rtol=0)
    assert not (tmp_path / "model.onnx").exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == before
    assert list(scratch_folder.iterdir()) == []  # the private scratch folder went too


def test_a_failed_export_keeps_the_earlier_file(exported_encoder_decoder, tmp_path):
    model, _, report = exported_encoder_decoder
    assert report.max_abs_diff > 0  # so atol=0, rtol=0 fails (see above)
    target = tmp_path / "model.onnx"
    target.write_bytes(b"the earlier, good file")
    with pytest.raises(ExportError):
        export_onnx(model, target, input_size=(3, 16, 16), atol=0, rtol=0)
    assert target.read_bytes() == b"the earlier, good file"


# --- models ONNX cannot export -------------------------------------------------------------------------


class DataDependentBranch(nn.Module):
    """A forward whose control flow depends on the values: torch.export cannot trace one graph for it."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.sum() > 0:
            return images * 2
        return images - 1


class ReturnsText(nn.Module):
    def forward(self, images: torch.Tensor) -> str:
        return "not a tensor"


class ReturnsDict(nn.Module):
    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": images.flatten(1)}


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (DataDependentBranch(), "ONNX cannot export DataDependentBranch"),
        # Found by the run on input_size, before the exporter is asked.
        (ReturnsText(), "must return one tensor"),
        (ReturnsDict(), "must return one tensor"),
    ],
)
def test_a_model_onnx_cannot_export_gives_export_error_and_no_file(model, message, tmp_path, scratch_folder):
    (tmp_path / "keep.txt").write_text("unrelated\n")
    with pytest.raises(ExportError, match=message) as raised:
        export_onnx(model, tmp_path / "model.onnx", input_size=(1, 4, 4))
    assert "\n" not in str(raised.value)
    assert [path.name for path in tmp_path.iterdir()] == ["keep.txt"]
    assert list(scratch_folder.iterdir()) == []


def test_the_cannot_export_message_is_plain_text(tmp_path):
    with pytest.raises(ExportError) as raised:
        export_onnx(DataDependentBranch(), tmp_path / "model.onnx", input_size=(1, 4, 4))
    assert "\x1b" not in str(raised.value)


def test_the_cannot_export_message_says_why(tmp_path):
    with pytest.raises(ExportError) as raised:
        export_onnx(DataDependentBranch(), tmp_path / "model.onnx", input_size=(1, 4, 4))
    assert "data-dependent" in str(raised.value)


# --- bad arguments: refused before anything is exported -------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"path": "model.txt"}, ValueError, "path must end in .onnx"),
        ({"path": "missing/model.onnx"}, FileNotFoundError, "folder .*missing does not exist"),
        ({"input_size": (28, 28)}, ValueError, "input_size must be"),
        (
            {"input_size": (1, 0, 28)},
            ValueError,
            r"input_size must be 3 positive integers \(channels, height, width\), got 0 in \(1, 0, 28\)",
        ),
        ({"batch_sizes": (1,)}, ValueError, "batch_sizes must hold at least two different sizes"),
        ({"batch_sizes": (4, 4)}, ValueError, "batch_sizes must hold at least two"),
        (
            {"batch_sizes": (0, 7)},
            ValueError,
            r"batch_sizes must be one or more positive integers, got 0 in \(0, 7\)",
        ),
        ({"atol": -1e-4}, ValueError, "atol must be a finite number >= 0"),
        ({"rtol": float("nan")}, ValueError, "rtol must be a finite number >= 0"),
        (
            {"inputs": torch.zeros(2, 3, 28, 28), "input_size": (1, 28, 28)},
            ValueError,
            "inputs must have shape",
        ),
        ({"inputs": torch.zeros(0, 1, 28, 28)}, ValueError, "inputs must hold at least one image"),
        (
            {"metadata": {"mean": [0.5, 0.5, 0.5]}},
            ValueError,
            r"^metadata\['mean'\] is \[0.5, 0.5, 0.5\]; it must be 1 finite number, one per input channel$",
        ),
        (
            {"metadata": {"std": [0.0]}},
            ValueError,
            r"^metadata\['std'\] is \[0.0\]; it must be 1 finite number, one per input channel, each > 0$",
        ),
        ({"metadata": {"labels": ["a"]}}, ValueError, r"metadata keys .* got \['labels'\]"),
    ],
)
def test_bad_arguments_name_the_parameter_and_write_nothing(arguments, error, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths above land here
    arguments = {"path": "model.onnx", **arguments}
    with pytest.raises(error, match=message):
        export_onnx(create_model("separable_cnn"), **arguments)
    assert list(tmp_path.iterdir()) == []


def test_a_model_that_is_not_a_module_is_a_type_error(tmp_path):
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module, got function"):
        export_onnx(lambda images: images, tmp_path / "model.onnx", input_size=(1, 4, 4))


def test_an_unregistered_model_needs_input_size(tmp_path):
    with pytest.raises(ValueError, match="input_size is needed"):
        export_onnx(encoder_decoder(), tmp_path / "model.onnx")
    assert list(tmp_path.iterdir()) == []


def test_inputs_without_a_batch_dimension_name_the_parameter(tmp_path):
    with pytest.raises(ValueError, match="inputs must have shape"):
        export_onnx(create_model("separable_cnn"), tmp_path / "model.onnx", inputs=torch.zeros(5, 28, 28))


# --- int8 ---------------------------------------------------------------------------------------------


def test_quantize_refuses_bad_paths(exported_standard, tmp_path):
    _, fp32, _ = exported_standard
    with pytest.raises(FileNotFoundError, match="ONNX model file not found"):
        quantize_onnx(tmp_path / "missing.onnx", tmp_path / "int8.onnx", [])
    with pytest.raises(ValueError, match=r"int8_path must end in \.onnx"):
        quantize_onnx(fp32, tmp_path / "int8.txt", [])
    with pytest.raises(ValueError, match="int8_path must differ from fp32_path"):
        quantize_onnx(fp32, fp32, [])
    assert list(tmp_path.iterdir()) == []


def test_quantize_refuses_an_empty_calibration_naming_it(exported_standard, tmp_path):
    _, fp32, _ = exported_standard
    with pytest.raises(ValueError, match="calibration"):
        quantize_onnx(fp32, tmp_path / "int8.onnx", [])
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def mnist5k():
    return load_dataset("mnist5k", seed=0)  # the split the trained model was trained with


@pytest.fixture(scope="module")
def int8_pair(request, tmp_path_factory, mnist5k):
    trained = trained_separable_cnn(request, tmp_path_factory)
    folder = tmp_path_factory.mktemp("int8")
    fp32, int8 = folder / "model.onnx", folder / "model.int8.onnx"
    metadata = {
        "mean": mnist5k.mean,
        "std": mnist5k.std,
        "class_names": mnist5k.class_names,
        "dataset": mnist5k.name,
    }
    test_images = torch.stack([mnist5k.test[index][0] for index in range(16)])
    export_onnx(trained.model, fp32, inputs=test_images, metadata=metadata)
    loader = DataLoader(mnist5k.train, batch_size=32)
    calibration = (images for index, (images, _) in enumerate(loader) if index < 8)
    quantize_onnx(fp32, int8, calibration)
    return trained, fp32, int8


@pytest.mark.xdist_group("trained_separable_cnn")  # one worker trains it, once
@pytest.mark.slow  # trains the demo model (~40 s on 2 idle cores), once for this module and the CLI's
def test_int8_keeps_top1_within_one_point(int8_pair, mnist5k):
    trained, fp32, int8 = int8_pair
    fp32_accuracy = onnx_accuracy(fp32, mnist5k.test)
    int8_accuracy = onnx_accuracy(int8, mnist5k.test)
    assert len(mnist5k.test) == 1000
    # The model really learned (chance is 0.1), so int8 has accuracy to lose.
    assert fp32_accuracy > 0.9
    # fp32 ONNX and the eager model agree up to an image whose top two logits tie within 1e-4.
    assert fp32_accuracy == pytest.approx(trained.test_accuracy, abs=1 / 1000)
    # onnx_accuracy counted by hand: argmax of ONNX Runtime's logits against the labels.
    images = torch.stack([image for image, _ in mnist5k.test])
    labels = np.array([label for _, label in mnist5k.test])
    by_hand = float((run_onnxruntime(int8, images).argmax(axis=1) == labels).mean())
    assert int8_accuracy == pytest.approx(by_hand, abs=1e-12)  # the same counts of the same 1000 images
    # Issue 8: int8 may cost at most one point of top-1; on 1000 test images that is 10 images.
    assert abs(fp32_accuracy - int8_accuracy) <= 0.01


@pytest.mark.xdist_group("trained_separable_cnn")  # one worker trains it, once
@pytest.mark.slow  # uses the trained model
def test_the_int8_file_is_quantized_smaller_and_keeps_the_metadata(int8_pair, mnist5k):
    _, fp32, int8 = int8_pair
    types = node_types(int8)
    assert "QuantizeLinear" in types and "DequantizeLinear" in types
    assert types.count("Conv") == node_types(fp32).count("Conv")  # every conv kept, now fed int8
    document = stored_metadata(int8)
    assert document["precision"] == "int8"
    assert document["quantization"]["format"] == "QDQ"
    assert document["quantization"]["calibration_batches"] == 8
    assert document["mean"] == list(mnist5k.mean)
    assert document["std"] == list(mnist5k.std)
    assert document["class_names"] == mnist5k.class_names
    assert document["spec"] == stored_metadata(fp32)["spec"]
    assert document["spec"]["name"] == "separable_cnn"
    # Weights are one byte instead of four; scales and zero points add a little.
    assert int8.stat().st_size < 0.5 * fp32.stat().st_size
