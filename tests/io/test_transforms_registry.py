"""The transform registry (sepconv.io.transforms): lazy registration, lookup messages, recording steps.

Every test that registers or empties the registry works on a copy (monkeypatch), so the process-wide
registry the other tests use is left exactly as it was.
"""

import re
import sys

import pytest
from torch import nn

from sepconv.io import transforms as transforms_module
from sepconv.io.transforms import (
    get_transform,
    list_transforms,
    model_transforms,
    record_transform,
    register_transform,
)

# The transforms sepconv itself ships (sepconv/convert/separable.py and fold.py), written out by hand.
SHIPPED = ["fold_batchnorm", "to_separable"]


@pytest.fixture
def fresh_interpreter(monkeypatch):
    """The registry as a new interpreter has it: empty, and sepconv.convert not imported yet.

    Re-importing sepconv.convert registers its transforms into the empty copy; afterwards monkeypatch
    puts back the original registry, modules and package attribute.
    """
    # Imported (so registered in the real registry) first, so that teardown restores a consistent state.
    import sepconv.convert

    monkeypatch.setattr(transforms_module, "_TRANSFORMS", {})
    for name in [
        name for name in sys.modules if name == "sepconv.convert" or name.startswith("sepconv.convert.")
    ]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.delattr(sepconv, "convert")
    return transforms_module._TRANSFORMS


def test_get_transform_imports_the_conversions_on_first_use(fresh_interpreter):
    transform = get_transform("to_separable")
    # The module that registered it is the freshly imported sepconv.convert.separable.
    assert transform is sys.modules["sepconv.convert.separable"].__dict__[transform.__name__]
    assert transform.__module__ == "sepconv.convert.separable"
    assert sorted(fresh_interpreter) == SHIPPED


def test_list_transforms_imports_the_conversions_and_is_sorted(fresh_interpreter):
    assert list_transforms() == SHIPPED


def test_unknown_transform_message_lists_the_registered_ones(fresh_interpreter):
    expected = (
        "unknown transform 'no_such_step' (registered: fold_batchnorm, to_separable); "
        "register it with register_transform"
    )
    with pytest.raises(ValueError, match="^" + re.escape(expected) + "$"):
        get_transform("no_such_step")


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


def test_registered_transform_is_returned_and_duplicates_are_refused(monkeypatch):
    monkeypatch.setattr(transforms_module, "_TRANSFORMS", dict(transforms_module._TRANSFORMS))

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


def test_record_transform_on_a_module_without_recipe():
    source, target = nn.Linear(2, 2), nn.Sequential()
    assert record_transform(target, source, "step", factor=2) is target
    assert not hasattr(target, "_sepconv_spec")
    assert model_transforms(target) == [{"name": "step", "kwargs": {"factor": 2}}]
    assert model_transforms(source) == []


def test_record_transform_keeps_every_step_in_order_and_copies_the_recipe():
    source = nn.Linear(2, 2)
    source._sepconv_spec = {"name": "made_up", "kwargs": {"width": 4}}
    first = record_transform(nn.Sequential(), source, "first", a=1)
    second = record_transform(nn.Sequential(), first, "second", b=2)
    assert model_transforms(second) == [
        {"name": "first", "kwargs": {"a": 1}},
        {"name": "second", "kwargs": {"b": 2}},
    ]
    assert model_transforms(first) == [{"name": "first", "kwargs": {"a": 1}}]
    assert second._sepconv_spec == {"name": "made_up", "kwargs": {"width": 4}}
    # Copies, not shared references: changing the source's recipe later leaves the copy alone.
    source._sepconv_spec["kwargs"]["width"] = 99
    assert second._sepconv_spec["kwargs"] == {"width": 4}


def test_model_transforms_returns_copies():
    model = record_transform(nn.Sequential(), nn.Sequential(), "step", a=1)
    model_transforms(model)[0]["name"] = "changed"
    assert model_transforms(model) == [{"name": "step", "kwargs": {"a": 1}}]
