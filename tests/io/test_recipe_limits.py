"""Untrusted recipes stay cheap: every count that drives construction is bounded before or during the meta build.

A model file's recipe names a builder and its arguments; a few hundred bytes can ask for a billion
blocks (issue 20: ``torchvision:mobilenet_v2`` with ``inverted_residual_setting=[[1, 16, 10**9, 1]]``
grew to 3.4 GB on the meta device in a minute). Each attack here is built in the test and must be
refused with one line naming the argument (or the bound) and the limit.
"""

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from sepconv.io import CheckpointError, load_model
from sepconv.io.recipe import (
    MAX_RECIPE_DEPTH,
    MAX_RECIPE_ITEMS,
    MAX_RECIPE_MODULES,
    MAX_RECIPE_NUMBER,
    MAX_RECIPE_PARAMETERS,
    MAX_RECIPE_TRANSFORMS,
    RecipeLimitError,
    check_recipe,
    expected_tensors,
)


def _forged(path, spec, transforms=(), raw=None):
    """A model file with any recipe (or any raw metadata text) and no tensors, as an attacker writes it."""
    document = {
        "format": "sepconv",
        "version": 1,
        "spec": spec,
        "transforms": list(transforms),
        "sha256": "0" * 64,
    }
    save_file({}, path, metadata={"sepconv": raw if raw is not None else json.dumps(document)})
    return path


_ATTACK = """
import json, sys
from sepconv.io import CheckpointError, load_model
messages = []
for path in sys.argv[1:]:
    try:
        load_model(path)
        messages.append(None)
    except CheckpointError as error:
        messages.append(str(error))
# The peak of this process's own address space (VmHWM, kB): ru_maxrss would include the forked test
# worker's peak, which Linux carries across exec, and RUSAGE_CHILDREN every earlier child's.
status = open("/proc/self/status").read()
peak_kib = int(status.split("VmHWM:")[1].split()[0])
print(json.dumps([messages, peak_kib * 1024]))
"""

BILLION_BLOCKS = {
    "name": "torchvision:mobilenet_v2",
    "kwargs": {"inverted_residual_setting": [[1, 16, 10**9, 1]]},
}
# Within the bound on each number, but 100,000 blocks of ~11 modules each: only the build's count stops it.
MANY_BLOCKS = {
    "name": "torchvision:mobilenet_v2",
    "kwargs": {"inverted_residual_setting": [[1, 16, 100_000, 1]]},
}


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/status")
def test_hostile_block_counts_are_refused_within_bounded_time_and_memory(tmp_path):
    paths = [
        str(_forged(tmp_path / f"{name}.safetensors", spec))
        for name, spec in (("billion", BILLION_BLOCKS), ("many", MANY_BLOCKS))
    ]
    for path in paths:
        assert (tmp_path / path).stat().st_size < 400  # a few hundred bytes each
    # The timeout is a hang guard, not the measure: before the bounds, the first file alone ran for
    # minutes; refused, both take the imports plus a few seconds of meta build for 10,000 modules.
    result = subprocess.run(
        [sys.executable, "-c", _ATTACK, *paths], capture_output=True, text=True, check=True, timeout=60
    )
    (billion, many), peak_bytes = json.loads(result.stdout)
    assert billion == (
        f"{paths[0]}: its recipe's spec kwargs['inverted_residual_setting'][0][2] is 1000000000, beyond the "
        f"+-1,048,576 a recipe's numbers may be (MAX_RECIPE_NUMBER)"
    )
    assert many.startswith(f"{paths[1]}: its recipe (torchvision:mobilenet_v2(inverted_residual_setting=")
    assert many.endswith(
        f"builds more than {MAX_RECIPE_MODULES:,} modules, the most a model file may describe "
        f"(MAX_RECIPE_MODULES); torchvision's largest model has 1,409"
    )
    # torch + torchvision imports are ~0.8 GB; 10,000 meta modules ~40 MB; unbounded, 20,000 blocks
    # (~220,000 modules) took 1.4 GB on top and kept growing, so the bound separates the two widely.
    assert peak_bytes < 1.5e9, peak_bytes


def test_parameters_beyond_the_limit_stop_the_meta_build():
    # A valid number, but at width_mult=1000 the last 1x1 convolution alone (320,000 -> 1,280,000
    # channels) has 4.1e11 parameters, more than MAX_RECIPE_PARAMETERS (2**32).
    spec = {"name": "torchvision:mobilenet_v2", "kwargs": {"width_mult": 1000}}
    with pytest.raises(RecipeLimitError) as raised:
        expected_tensors(spec, [])
    assert str(raised.value).endswith(
        f"builds more than {MAX_RECIPE_PARAMETERS:,} parameters, the most a model file may describe "
        f"(MAX_RECIPE_PARAMETERS)"
    )
    # The counting hooks are gone with the build: this process may build what it likes afterwards.
    many = torch.nn.Sequential(*[torch.nn.Linear(1, 1) for _ in range(MAX_RECIPE_MODULES + 1)])
    assert len(many) == MAX_RECIPE_MODULES + 1


def test_the_largest_torchvision_model_fits_the_bounds():
    # efficientnet_v2_l has the most modules (1,409) of torchvision's models; a bound it does not meet
    # would refuse real files.
    state = expected_tensors({"name": "torchvision:efficientnet_v2_l", "kwargs": {}}, [])
    assert sum(1 for name in state if name.endswith(".weight")) > 400
    assert state["classifier.1.weight"] == ((1000, 1280), state["classifier.1.weight"][1])


def _nested(depth):
    value = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("spec", "transforms", "message"),
    [
        (
            {"name": "mobilenet_v2", "kwargs": {"inverted_residual_setting": _nested(MAX_RECIPE_DEPTH + 1)}},
            [],
            f"its recipe's spec kwargs['inverted_residual_setting']{'[0]' * (MAX_RECIPE_DEPTH - 1)} nests lists "
            f"or objects more than {MAX_RECIPE_DEPTH} deep (MAX_RECIPE_DEPTH)",
        ),
        (
            {
                "name": "mobilenet_v2",
                "kwargs": {"inverted_residual_setting": [[1, 16, 1, 1]] * (MAX_RECIPE_ITEMS + 1)},
            },
            [],
            f"its recipe's spec kwargs['inverted_residual_setting'] holds {MAX_RECIPE_ITEMS + 1:,} items, more "
            f"than the {MAX_RECIPE_ITEMS:,} a recipe's lists and objects may hold (MAX_RECIPE_ITEMS)",
        ),
        (
            {"name": "mobilenet_v2", "kwargs": {"width_mult": -1e9}},
            [],
            "its recipe's spec kwargs['width_mult'] is -1000000000.0, beyond the +-1,048,576 a recipe's "
            "numbers may be (MAX_RECIPE_NUMBER)",
        ),
        (
            {"name": "mobilenet_v2", "kwargs": {}},
            [{"name": "fold_batchnorm", "kwargs": {}}] * (MAX_RECIPE_TRANSFORMS + 1),
            f"its recipe's transforms hold {MAX_RECIPE_TRANSFORMS + 1} steps, more than the "
            f"{MAX_RECIPE_TRANSFORMS} a model file may replay (MAX_RECIPE_TRANSFORMS)",
        ),
        (
            {"name": "mobilenet_v2", "kwargs": {}},
            [{"name": "to_separable", "kwargs": {"depth_multiplier": {"features.1.conv.0.0": 2**40}}}],
            "its recipe's transforms[0] kwargs['depth_multiplier']['features.1.conv.0.0'] is 1099511627776, "
            "beyond the +-1,048,576 a recipe's numbers may be (MAX_RECIPE_NUMBER)",
        ),
    ],
    ids=["depth", "items", "number", "transform-steps", "rank"],
)
def test_counts_in_a_recipe_are_bounded_before_building(tmp_path, spec, transforms, message):
    # check_recipe alone refuses it: nothing is built.
    with pytest.raises(RecipeLimitError, match="^" + __import__("re").escape(message) + "$"):
        check_recipe({"spec": spec, "transforms": transforms})
    path = _forged(tmp_path / "hostile.safetensors", spec, transforms)
    with pytest.raises(CheckpointError) as raised:
        load_model(path)
    assert str(raised.value) == f"{path}: {message}"


def test_deeply_nested_recipe_text_is_refused_without_a_recursion_error(tmp_path):
    # 100,000 brackets fit in the 65,536-character bound's double; 30,000 fit in the bound itself and
    # are far beyond Python's recursion limit, which json.loads would hit (RecursionError, a traceback).
    raw = "[" * 30_000 + "]" * 30_000
    path = _forged(tmp_path / "deep.safetensors", None, raw=raw)
    with pytest.raises(CheckpointError) as raised:
        load_model(path)
    assert str(raised.value) == f"{path}: its sepconv recipe nests 30000 levels deep, more than the 16 it may"


def test_each_bound_itself_is_allowed():
    # The limits are "at most": a recipe at exactly MAX_RECIPE_NUMBER, MAX_RECIPE_ITEMS and
    # MAX_RECIPE_TRANSFORMS is checked and returned; one more is refused (the cases above).
    from sepconv.convert.replay import TRANSFORMS

    assert MAX_RECIPE_NUMBER == 1_048_576
    steps = [{"name": "fold_batchnorm", "kwargs": {}}] * MAX_RECIPE_TRANSFORMS
    at_the_bounds = {
        "name": "mobilenet_v2",
        "kwargs": {"num_classes": 1_048_576, "widths": [1] * MAX_RECIPE_ITEMS, "scale": -1_048_576.0},
    }
    spec, transforms = check_recipe({"spec": at_the_bounds, "transforms": steps}, registry=TRANSFORMS)
    assert spec == at_the_bounds and len(transforms) == 16
    with pytest.raises(
        RecipeLimitError, match=r"kwargs\['num_classes'\] is 1048577, beyond the \+-1,048,576"
    ):
        check_recipe(
            {"spec": {"name": "mobilenet_v2", "kwargs": {"num_classes": 1_048_577}}, "transforms": []}
        )


def test_a_build_beyond_the_parameter_limit_names_the_file(tmp_path):
    # The same width_mult=1000 recipe as above, read from a file: the refusal says which file.
    spec = {"name": "torchvision:mobilenet_v2", "kwargs": {"width_mult": 1000}}
    path = _forged(tmp_path / "wide.safetensors", spec)
    with pytest.raises(CheckpointError) as raised:
        load_model(path)
    assert str(raised.value) == (
        f"{path}: its recipe (torchvision:mobilenet_v2(width_mult=1000)) builds more than 4,294,967,296 "
        "parameters, the most a model file may describe (MAX_RECIPE_PARAMETERS)"
    )
