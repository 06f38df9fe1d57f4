"""Model files: round trips, strict rebuilding, corruption, refusing pickled code, and untrusted recipes."""

import io
import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tests.helpers.attacks import malicious_pickle
from torch import nn

import sepconv
from sepconv.io import (
    CheckpointError,
    load_model,
    model_transforms,
    read_model_metadata,
    record_transform,
    save_model,
)
from sepconv.models import create_model, model_spec

ROUND_TRIPS = [
    ("mobilenet_v2", {"width_mult": 0.35, "num_classes": 5}, (2, 3, 32, 32)),
    ("mobilenet_v2", {"in_channels": 1, "num_classes": 10, "width_mult": 0.5}, (2, 1, 32, 32)),
    ("separable_cnn", {"in_channels": 3, "num_classes": 4, "widths": (8, 16, 16, 32)}, (2, 3, 28, 28)),
    ("standard_cnn", {}, (2, 1, 28, 28)),
    ("torchvision:resnet18", {"num_classes": 3}, (2, 3, 32, 32)),
]


def _trained_a_little(model: nn.Module, input_shape) -> nn.Module:
    """Perturb weights and batch-norm statistics away from their initial values, so a round trip must carry them."""
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.01)
        model.train()
        model(torch.randn(input_shape))
    return model


def _tiny_model() -> nn.Module:
    return create_model("separable_cnn", widths=(4, 4, 4, 4), num_classes=3)


@pytest.mark.parametrize(
    ("name", "kwargs", "input_shape"), ROUND_TRIPS, ids=[f"{n}-{i}" for i, (n, *_) in enumerate(ROUND_TRIPS)]
)
def test_round_trip_gives_identical_model(tmp_path, name, kwargs, input_shape):
    model = _trained_a_little(create_model(name, **kwargs), input_shape)
    path = save_model(model, tmp_path / "model.safetensors")
    loaded = load_model(path)
    assert not loaded.training
    original_state, loaded_state = model.state_dict(), loaded.state_dict()
    assert list(loaded_state) == list(original_state)
    for key, value in original_state.items():
        assert torch.equal(loaded_state[key], value), key
    inputs = torch.randn(input_shape)
    # Bit-identical weights (torch.equal above) through the same kernels on the same machine: exact.
    with torch.no_grad():
        torch.testing.assert_close(loaded(inputs), model.eval()(inputs), rtol=0, atol=0)
    assert model_spec(loaded)["name"] == name


def test_file_is_plain_safetensors_with_json_recipe(tmp_path):
    path = save_model(_tiny_model(), tmp_path / "tiny.safetensors")
    data = path.read_bytes()
    (header_size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_size])
    recipe = json.loads(header["__metadata__"]["sepconv"])
    assert recipe["format"] == "sepconv" and recipe["version"] == 1
    assert recipe["spec"] == {"name": "separable_cnn", "kwargs": {"widths": [4, 4, 4, 4], "num_classes": 3}}
    assert recipe["transforms"] == [] and len(recipe["sha256"]) == 64
    assert "features.0.norm.running_mean" in header or any("running_mean" in key for key in header)
    assert read_model_metadata(path)["spec"] == recipe["spec"]


def test_top_level_entry_points_and_cli_resolution(tmp_path):
    from sepconv.cli._common import resolve_model

    path = sepconv.save_model(_tiny_model(), tmp_path / "tiny.safetensors")
    assert isinstance(sepconv.load_model(path), nn.Module)
    assert model_spec(resolve_model(str(path)))["name"] == "separable_cnn"


def test_model_without_recipe_needs_create_model_or_spec(tmp_path):
    plain = nn.Sequential(nn.Conv2d(1, 2, 3))
    with pytest.raises(ValueError, match="create_model") as info:
        save_model(plain, tmp_path / "plain.safetensors")
    assert "spec=" in str(info.value) and not (tmp_path / "plain.safetensors").exists()
    model = _tiny_model()
    del model._sepconv_spec
    path = save_model(
        model,
        tmp_path / "given.safetensors",
        spec={"name": "separable_cnn", "kwargs": {"widths": [4] * 4, "num_classes": 3}},
    )
    assert model_spec(load_model(path))["kwargs"]["num_classes"] == 3


def test_recipe_that_is_not_json_is_refused_at_save(tmp_path):
    model = _tiny_model()
    model._sepconv_spec = {"name": "separable_cnn", "kwargs": {"act_layer": nn.ReLU}}
    with pytest.raises(ValueError, match="not plain JSON"):
        save_model(model, tmp_path / "bad.safetensors")


def test_weights_that_do_not_fit_the_recipe_are_named(tmp_path):
    model = _tiny_model()
    model._sepconv_spec = {"name": "separable_cnn", "kwargs": {"widths": [4, 4, 4, 8], "num_classes": 3}}
    path = save_model(model, tmp_path / "mismatch.safetensors")
    # The recipe's model has more values than the file holds: refused on the totals, before any detail.
    with pytest.raises(
        CheckpointError,
        match=r"mismatch\.safetensors.*builds a model with 68 tensors of [\d,]+ values, but the file holds 68",
    ):
        load_model(path)


# --- transforms ---------------------------------------------------------------------------------


def _widen_head(model: nn.Module, *, extra_classes: int) -> nn.Module:
    head = model.classifier[-1]
    model.classifier[-1] = nn.Linear(head.in_features, head.out_features + extra_classes)
    return record_transform(model, model, "test_widen_head", extra_classes=extra_classes)


# The transforms these tests' files may name: io replays what its caller hands it, nothing else.
REGISTRY = {"test_widen_head": _widen_head}


def test_transforms_are_replayed_on_load(tmp_path):
    model = _widen_head(_tiny_model(), extra_classes=2)
    assert model_transforms(model) == [{"name": "test_widen_head", "kwargs": {"extra_classes": 2}}]
    path = save_model(model, tmp_path / "widened.safetensors", registry=REGISTRY)
    loaded = load_model(path, registry=REGISTRY)
    assert loaded.classifier[-1].out_features == 5
    inputs = torch.randn(2, 1, 28, 28)
    # The replayed model holds the saved bytes and runs the same kernels on the same machine: exact.
    with torch.no_grad():
        torch.testing.assert_close(loaded(inputs), model.eval()(inputs), rtol=0, atol=0)
    assert model_transforms(loaded) == model_transforms(model)


def test_a_step_the_registry_lacks_is_refused_on_save_and_load(tmp_path):
    model = _tiny_model()
    model._sepconv_transforms = [{"name": "no_such_transform", "kwargs": {}}]
    with pytest.raises(ValueError, match="unknown transform 'no_such_transform'"):
        save_model(model, tmp_path / "x.safetensors", registry=REGISTRY)
    # A file with steps loads only where its steps can be replayed: io alone replays nothing.
    path = save_model(
        _widen_head(_tiny_model(), extra_classes=2), tmp_path / "w.safetensors", registry=REGISTRY
    )
    expected = (
        f"{path}: unknown transform 'test_widen_head' (no transforms given to replay; sepconv.load_model "
        "replays sepconv.convert's)"
    )
    with pytest.raises(CheckpointError, match="^" + re.escape(expected) + "$"):
        load_model(path)


# --- corruption ---------------------------------------------------------------------------------


@pytest.fixture
def saved_tiny(tmp_path):
    return save_model(_tiny_model(), tmp_path / "tiny.safetensors")


@pytest.mark.parametrize(
    "keep", [0, 5, 8, 100, -1], ids=["empty", "5-bytes", "8-bytes", "100-bytes", "minus-1"]
)
def test_truncated_model_file_is_named(saved_tiny, keep):
    data = saved_tiny.read_bytes()
    saved_tiny.write_bytes(data[:keep])
    with pytest.raises(CheckpointError, match=r"tiny\.safetensors"):
        load_model(saved_tiny)


def test_every_single_byte_flip_is_detected(saved_tiny):
    data = saved_tiny.read_bytes()
    for position in range(0, len(data), 7):
        damaged = bytearray(data)
        damaged[position] ^= 0xFF
        saved_tiny.write_bytes(bytes(damaged))
        with pytest.raises(CheckpointError, match=r"tiny\.safetensors"):
            load_model(saved_tiny)


def test_garbage_and_foreign_files_are_refused(tmp_path):
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError, match=r"garbage\.safetensors"):
        load_model(garbage)
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.ones(2)}, foreign)
    with pytest.raises(CheckpointError, match=r"foreign\.safetensors.*no sepconv recipe"):
        load_model(foreign)
    with pytest.raises(FileNotFoundError, match=r"missing\.safetensors"):
        load_model(tmp_path / "missing.safetensors")


# --- pickled code is never run ------------------------------------------------------------------


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    payload = malicious_pickle(marker)
    for name in ("evil.pt", "evil.ckpt", "evil.safetensors"):
        (tmp_path / name).write_bytes(payload)
        with pytest.raises(CheckpointError, match=re.escape(name)):
            load_model(tmp_path / name)
    assert not marker.exists()
    # The payload is live: unsafe loading would have run it.
    torch.load(io.BytesIO(payload), weights_only=False)
    assert marker.exists()


# --- untrusted recipes --------------------------------------------------------------------------


def _forged_file(path, spec, tensors=None, transforms=()) -> Path:
    """A model file as an attacker would write it: any recipe, any tensors, a plausible checksum field."""
    from safetensors.torch import save_file

    document = {
        "format": "sepconv",
        "version": 1,
        "spec": spec,
        "transforms": list(transforms),
        "sha256": "0" * 64,
    }
    save_file(tensors if tensors is not None else {}, path, metadata={"sepconv": json.dumps(document)})
    return path


_MEMORY_PROBE = """
import json, sys
import torch, torchvision.models
from sepconv.io import CheckpointError, load_model
from sepconv.models import list_models

def peak_mb():
    # VmHWM: this address space's own peak (ru_maxrss keeps the forked test worker's across exec)
    return int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) / 1024

list_models()
try:  # warm up: import whatever the loading path imports lazily, so only the attacks are measured
    load_model(sys.argv[1])
except CheckpointError:
    pass
before = peak_mb()
messages = []
for path in sys.argv[2:]:
    try:
        load_model(path)
        messages.append(None)
    except CheckpointError as error:
        messages.append(str(error))
print(json.dumps({"growth_mb": peak_mb() - before, "messages": messages}))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/status")
def test_tiny_file_asking_for_a_huge_model_is_refused_cheaply(tmp_path):
    # Each recipe is within the model builders' own argument bounds, so only the check against the
    # file's header stands between it and a real build of 0.9 to 1.8 GB of float32 weights.
    attacks = {
        "wide_mobilenet.safetensors": ({"name": "mobilenet_v2", "kwargs": {"width_mult": 10}}, 1),
        "wide_cnn.safetensors": ({"name": "separable_cnn", "kwargs": {"widths": [8192] * 4}}, 0),
        # A torchvision RegNet: its builder reads tensor values, so it cannot be built fully on meta.
        "wide_regnet.safetensors": (
            {"name": "torchvision:regnet_y_400mf", "kwargs": {"num_classes": 1_000_000}},
            1,
        ),
    }
    paths = []
    for name, (spec, tensor_count) in attacks.items():
        tensors = {"classifier.weight": torch.zeros(1)} if tensor_count else {}
        paths.append(str(_forged_file(tmp_path / name, spec, tensors)))
        # The attack is tiny: 280 to 356 bytes (a JSON header, at most one 4-byte tensor); 400 = "a few
        # hundred bytes" with room for a longer recipe name.
        assert (tmp_path / name).stat().st_size < 400
    warm_up = str(_forged_file(tmp_path / "warm_up.safetensors", {"name": "standard_cnn", "kwargs": {}}))
    result = subprocess.run(
        [sys.executable, "-c", _MEMORY_PROBE, warm_up, *paths],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    report = json.loads(result.stdout)
    for path, message in zip(paths, report["messages"]):
        assert message is not None, f"{path} was loaded"
        assert "\n" not in message
        assert (
            message.startswith(path) and "builds a model with" in message and "but the file holds" in message
        )
    assert "226,601,372 values, but the file holds 1 tensors of 1 values" in report["messages"][0]
    # Each refusal costs a header read and a meta build: module objects and shapes, a few MB (the
    # warm-up has already paid for imports). Building the smallest of these models for real would take
    # 0.9 GB, so a 200 MB bound cannot be met by a real build and leaves room for allocator noise.
    assert report["growth_mb"] < 200, report


def test_recipe_asking_for_impossible_sizes_is_refused(tmp_path):
    path = _forged_file(
        tmp_path / "overflow.safetensors", {"name": "separable_cnn", "kwargs": {"widths": [2**62] * 4}}
    )
    # Refused by the bound on a recipe's numbers, before the builder sees the width.
    with pytest.raises(
        CheckpointError,
        match=r"overflow\.safetensors: its recipe's spec kwargs\['widths'\]\[0\] is 4611686018427387904, "
        r"beyond the \+-1,048,576 a recipe's numbers may be \(MAX_RECIPE_NUMBER\)$",
    ):
        load_model(path)


@pytest.mark.parametrize(
    ("spec", "transforms", "message"),
    [
        (
            {"name": "mobilenet_v2", "kwargs": {"width_mult": float("inf")}},
            [],
            r"width_mult'\] holds inf; numbers must be finite",
        ),
        (
            {"name": "mobilenet_v2", "kwargs": {"width_mult": float("nan")}},
            [],
            r"holds nan; numbers must be finite",
        ),
        (
            {"name": "no_such_model", "kwargs": {}},
            [],
            r"names the model 'no_such_model', which is not a registered",
        ),
        ({"name": "mobilenet_v2"}, [], r"spec must be \{'name': str, 'kwargs': dict\}"),
        ({"name": "mobilenet_v2", "kwargs": []}, [], r"spec kwargs must be a dict, got \[\]"),
        (
            {"name": "mobilenet_v2", "kwargs": {}},
            [{"name": "no_such_step", "kwargs": {}}],
            r"unknown transform 'no_such_step'",
        ),
        (
            {"name": "mobilenet_v2", "kwargs": {}},
            [{"name": "test_widen_head", "kwargs": {"x": [1, float("-inf")]}}],
            r"transforms\[0\] kwargs\['x'\]\[1\] holds -inf",
        ),
    ],
    ids=[
        "inf",
        "nan",
        "unknown-model",
        "no-kwargs",
        "kwargs-not-dict",
        "unknown-transform",
        "inf-in-transform",
    ],
)
def test_insane_recipes_are_refused_before_building(tmp_path, spec, transforms, message):
    path = _forged_file(tmp_path / "insane.safetensors", spec, transforms=transforms)
    with pytest.raises(CheckpointError, match=r"insane\.safetensors: .*" + message):
        load_model(path)


def _rewritten(source: Path, target: Path, edit) -> Path:
    """``source``'s recipe with its tensors changed by ``edit`` (checksum left stale, as an attacker would)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(source, framework="pt") as handle:
        metadata = handle.metadata()
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    save_file(edit(tensors), target, metadata=metadata)
    return target


def test_tensor_names_shapes_and_dtypes_are_checked_against_the_recipe(tmp_path, saved_tiny):
    def renamed(tensors):
        tensors["features.0.renamed"] = tensors.pop("features.0.1.running_mean")
        return tensors

    def transposed(tensors):
        tensors["classifier.1.weight"] = tensors["classifier.1.weight"].t().contiguous()
        return tensors

    def integer(tensors):
        tensors["classifier.1.bias"] = tensors["classifier.1.bias"].long()
        return tensors

    cases = [
        (renamed, r"missing \(1\): features\.0\.1\.running_mean; unexpected \(1\): features\.0\.renamed"),
        (transposed, r"shape mismatch \(1\): classifier\.1\.weight: file \(4, 3\) vs model \(3, 4\)"),
        (integer, r"shape mismatch \(1\): classifier\.1\.bias: file I64 vs model float32"),
    ]
    for edit, message in cases:
        path = _rewritten(saved_tiny, tmp_path / f"{edit.__name__}.safetensors", edit)
        with pytest.raises(CheckpointError, match=re.escape(path.name) + r": weights do not fit.*" + message):
            load_model(path)


def test_half_precision_file_loads_into_the_float32_build(tmp_path):
    # Only the dtype's kind (float, integer, bool) must match: a model saved in half precision loads,
    # upcast exactly (every float16 value is a float32 value).
    model = _tiny_model().half()
    loaded = load_model(save_model(model, tmp_path / "half.safetensors"))
    for name, value in model.state_dict().items():
        expected = value.float() if value.is_floating_point() else value
        assert torch.equal(loaded.state_dict()[name], expected), name


@pytest.mark.parametrize("name", ["torchvision:resnet18", "torchvision:regnet_y_400mf"])
def test_meta_build_predicts_the_real_state_dict_of_torchvision_models(name):
    from sepconv.io.recipe import expected_tensors

    # resnet18 builds entirely on meta; RegNet reads tensor values while it builds (the fallback path).
    predicted = expected_tensors({"name": name, "kwargs": {"num_classes": 7}}, [])
    real = create_model(name, num_classes=7).state_dict()
    assert predicted == {key: (tuple(value.shape), value.dtype) for key, value in real.items()}
