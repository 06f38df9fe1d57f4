"""Recipe steps (sepconv.io.transforms): recorded on models as data, looked up only in a table given.

io replays no conversion of its own and imports none (sepconv.convert, above it, holds the registry).
"""

import re
import subprocess
import sys

import pytest
from torch import nn

from sepconv.io.transforms import NO_TRANSFORMS, find_transform, model_transforms, record_transform


def test_a_name_is_found_in_the_table_given():
    def widen(model, **kwargs):
        return model

    assert find_transform({"widen": widen}, "widen") is widen


def test_a_missing_name_lists_the_table_sorted():
    expected = "unknown transform 'c' (registered: a, b); register it with register_transform"
    with pytest.raises(ValueError, match="^" + re.escape(expected) + "$"):
        find_transform({"b": nn.Identity, "a": nn.Identity}, "c")


def test_without_a_table_the_message_names_the_loader_that_replays():
    expected = (
        "unknown transform 'to_separable' (no transforms given to replay; sepconv.load_model replays "
        "sepconv.convert's)"
    )
    with pytest.raises(ValueError, match="^" + re.escape(expected) + "$"):
        find_transform(NO_TRANSFORMS, "to_separable")


def test_io_saves_and_loads_without_importing_the_conversions(tmp_path):
    # A new interpreter: nothing else has imported sepconv.convert there.
    script = (
        "import sys\n"
        "from sepconv.io import load_model, save_model\n"
        "from sepconv.models import create_model\n"
        "path = save_model(create_model('separable_cnn', widths=(4, 4, 4, 4)), sys.argv[1])\n"
        "load_model(path)\n"
        "print(sorted(name for name in sys.modules if name.startswith('sepconv.convert')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "m.safetensors")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "[]\n"


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
