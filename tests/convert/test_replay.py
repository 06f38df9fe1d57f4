"""The replay registry (sepconv.convert.replay): registration on import, lookup messages, the loader.

Every test that registers into the registry or starts it afresh puts back the process-wide registry
the other tests use exactly as it was.
"""

import importlib
import re
import sys

import pytest
import torch
from torch import nn

from sepconv.convert import replay
from sepconv.convert.replay import get_transform, list_transforms, register_transform

# The transforms sepconv itself ships (sepconv/convert/separable.py, low_rank.py and fold.py), written out by hand.
SHIPPED = ["fold_batchnorm", "to_low_rank", "to_separable"]


@pytest.fixture
def fresh_interpreter(monkeypatch):
    """sepconv.convert.replay as a new interpreter imports it (as sepconv.load_model does), afresh.

    The conversion modules are dropped from ``sys.modules`` and imported again, so their transforms
    register into a new, empty registry; afterwards monkeypatch puts back the original modules and
    package attribute (and with them the registry the other tests use).
    """
    # Imported (so registered in the real registry) first, so that teardown restores a consistent state.
    import sepconv.convert

    for name in [
        name for name in sys.modules if name == "sepconv.convert" or name.startswith("sepconv.convert.")
    ]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.delattr(sepconv, "convert")
    return importlib.import_module("sepconv.convert.replay")


@pytest.fixture
def registry_restored():
    """The process-wide registry, given back with exactly the transforms it held before the test."""
    saved = dict(replay._REGISTERED)
    yield replay._REGISTERED
    replay._REGISTERED.clear()
    replay._REGISTERED.update(saved)


def test_importing_the_replay_registers_the_shipped_conversions(fresh_interpreter):
    transform = fresh_interpreter.get_transform("to_separable")
    # The module that registered it is the freshly imported sepconv.convert.separable.
    assert transform is sys.modules["sepconv.convert.separable"].__dict__[transform.__name__]
    assert transform.__module__ == "sepconv.convert.separable"
    assert sorted(fresh_interpreter.TRANSFORMS) == SHIPPED


def test_list_transforms_is_sorted(fresh_interpreter):
    assert fresh_interpreter.list_transforms() == SHIPPED


def test_unknown_transform_message_lists_the_registered_ones(fresh_interpreter):
    expected = (
        "unknown transform 'no_such_step' (registered: fold_batchnorm, to_low_rank, to_separable); "
        "register it with register_transform"
    )
    with pytest.raises(ValueError, match="^" + re.escape(expected) + "$"):
        fresh_interpreter.get_transform("no_such_step")


def test_unknown_transform_message_in_the_shared_registry_is_sorted():
    # Other test modules may have registered their own transforms: the list is whatever is registered,
    # sorted, and must include the shipped ones.
    with pytest.raises(ValueError) as info:
        get_transform("no_such_step")
    found = re.fullmatch(
        r"unknown transform 'no_such_step' \(registered: (.+)\); register it with register_transform",
        str(info.value),
    )
    assert found is not None, str(info.value)
    names = found.group(1).split(", ")
    assert names == sorted(names) and set(SHIPPED) <= set(names)


def test_registered_transform_is_returned_and_duplicates_are_refused(registry_restored):
    def widen(model, **kwargs):
        return model

    assert register_transform("test_registry_widen")(widen) is widen
    assert get_transform("test_registry_widen") is widen
    assert "test_registry_widen" in list_transforms()

    def other(model, **kwargs):
        return model

    expected = f"a transform named 'test_registry_widen' is already registered ({__name__})"
    with pytest.raises(ValueError, match="^" + re.escape(expected) + "$"):
        register_transform("test_registry_widen")(other)
    assert get_transform("test_registry_widen") is widen
    assert replay.TRANSFORMS["test_registry_widen"] is widen  # the read-only view io is handed


def test_the_registry_is_read_only_for_its_readers():
    with pytest.raises(TypeError):
        replay.TRANSFORMS["to_separable"] = None  # type: ignore[index]


def test_the_loader_replays_registered_steps_that_io_alone_refuses(tmp_path, registry_restored):
    from sepconv.io import CheckpointError
    from sepconv.io import load_model as load_without_replays
    from sepconv.io.transforms import record_transform
    from sepconv.models import create_model

    def widen_head(model, *, extra_classes):
        head = model.classifier[-1]
        model.classifier[-1] = nn.Linear(head.in_features, head.out_features + extra_classes)
        return record_transform(model, model, "test_replay_widen_head", extra_classes=extra_classes)

    register_transform("test_replay_widen_head")(widen_head)
    model = widen_head(create_model("separable_cnn", widths=(4, 4, 4, 4), num_classes=3), extra_classes=2)
    path = replay.save_model(model, tmp_path / "widened.safetensors")
    loaded = replay.load_model(path)
    assert loaded.classifier[-1].out_features == 5
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
    with pytest.raises(
        CheckpointError, match="unknown transform 'test_replay_widen_head' \\(no transforms given"
    ):
        load_without_replays(path)


TINY_SPEC = {"name": "separable_cnn", "kwargs": {"widths": [4, 4, 4, 4], "num_classes": 3}}


def _tiny_folded():
    from sepconv.convert import fold_batchnorm
    from sepconv.models import create_model

    return fold_batchnorm(create_model("separable_cnn", widths=(4, 4, 4, 4), num_classes=3))


def test_a_loaded_model_keeps_its_recipe_and_steps_so_it_saves_again(tmp_path):
    path = replay.save_model(_tiny_folded(), tmp_path / "folded.safetensors")
    loaded = replay.load_model(path)
    assert loaded._sepconv_spec == TINY_SPEC
    assert loaded._sepconv_transforms == [{"name": "fold_batchnorm", "kwargs": {}}]
    again = replay.load_model(replay.save_model(loaded, tmp_path / "again.safetensors"))
    assert again._sepconv_transforms == [{"name": "fold_batchnorm", "kwargs": {}}]
    for name, value in loaded.state_dict().items():
        assert torch.equal(again.state_dict()[name], value), name


def test_save_model_passes_the_spec_on(tmp_path):
    # A model built by hand has no recipe: the spec given here is the one the file stores.
    from sepconv.io import read_model_metadata
    from sepconv.models import create_model

    model = create_model("separable_cnn", widths=(4, 4, 4, 4), num_classes=3)
    del model._sepconv_spec
    path = replay.save_model(model, tmp_path / "given.safetensors", spec=TINY_SPEC)
    assert read_model_metadata(path)["spec"] == TINY_SPEC
    loaded = replay.load_model(path)
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name


def test_a_replayed_step_that_records_nothing_still_leaves_the_recipe_on_the_model(
    tmp_path, registry_restored
):
    # A registered transform need not call record_transform, and may return a new module: loading
    # itself puts the recipe and the steps on what it rebuilt, so the loaded model saves again.
    from sepconv.io.transforms import record_transform
    from sepconv.models import create_model

    def wrap(model):
        return nn.Sequential(model)

    register_transform("test_replay_wrap")(wrap)
    model = create_model("separable_cnn", widths=(4, 4, 4, 4), num_classes=3)
    wrapped = record_transform(nn.Sequential(model), model, "test_replay_wrap")
    loaded = replay.load_model(replay.save_model(wrapped, tmp_path / "wrapped.safetensors"))
    assert type(loaded) is nn.Sequential
    assert loaded._sepconv_spec == TINY_SPEC
    assert loaded._sepconv_transforms == [{"name": "test_replay_wrap", "kwargs": {}}]


def test_a_step_that_needs_real_values_is_replayed_in_the_fallback_build(tmp_path, registry_restored):
    # On the meta device copying a value out raises NotImplementedError; the expected tensors are then
    # built again with small tensors real, and that build must replay the step with the same registry.
    from sepconv.io.transforms import record_transform
    from sepconv.models import create_model

    def scale_head(model, *, factor):
        head = model.classifier[-1]
        head.weight.detach().cpu()  # needs real values: "Cannot copy out of meta tensor"
        with torch.no_grad():
            head.weight.mul_(factor)
        return record_transform(model, model, "test_replay_scale_head", factor=factor)

    register_transform("test_replay_scale_head")(scale_head)
    model = scale_head(create_model("separable_cnn", widths=(4, 4, 4, 4), num_classes=3), factor=2)
    loaded = replay.load_model(replay.save_model(model, tmp_path / "scaled.safetensors"))
    assert loaded._sepconv_transforms == [{"name": "test_replay_scale_head", "kwargs": {"factor": 2}}]
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
