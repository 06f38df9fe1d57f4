"""Which rows ``summarize`` reports and every field of them, on a model built so each rule shows once.

The model has a shared container called twice, a container whose own forward does MACs with a
buffer and no parameters, one with a parameter and no MACs, a module with no tensor input, one that
returns no tensor, a frozen parameter and a submodule that forward never calls. Every expected
value below is worked by hand from the layer shapes; the JSON keys are the documented schema, so a
renamed key is a break for every consumer of ``summary --json``.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sepconv.analysis import summarize


class Mixer(nn.Module):
    """A 3x3 conv child, then the container's own 1x1 conv with a fixed buffer (no parameters)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1, bias=False)
        self.register_buffer("mix", torch.eye(2).reshape(2, 2, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(self.conv(x), self.mix)


class Scaled(nn.Module):
    """A ReLU child, then the container's own multiply by a parameter (parameters, no MACs)."""

    def __init__(self) -> None:
        super().__init__()
        self.act = nn.ReLU()
        self.scale = nn.Parameter(torch.ones(1, 2, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x) * self.scale


class Const(nn.Module):
    """Called with an int, not a tensor: no input shape, and an output no input pixel reaches."""

    def forward(self, size: int) -> torch.Tensor:
        return torch.ones(1, 1, size, size)


class Probe(nn.Module):
    """Returns nothing: no output shape and no field."""

    def forward(self, x: torch.Tensor) -> None:
        return None


class Net(nn.Module):
    def __init__(self, with_const: bool = True) -> None:
        super().__init__()
        self.with_const = with_const
        self.stem = nn.Conv2d(1, 2, 3, stride=2, padding=1)
        self.mixer = Mixer()
        self.scaled = Scaled()
        self.probe = Probe()
        self.head = nn.Conv2d(2, 3, 1)
        self.unused = nn.Sequential(nn.Linear(4, 5))
        self.unused[0].bias.requires_grad_(False)
        self.offset = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.mixer(x)
        x = self.mixer(x)
        x = self.scaled(x)
        self.probe(x)
        x = self.head(x) + self.offset
        if self.with_const:
            x = x + self.const(4)
        return x


def build(with_const: bool = True) -> Net:
    model = Net(with_const)
    if with_const:
        model.const = Const()
    return model


F32 = 4  # bytes per element
C2 = 1 * 2 * 4 * 4  # elements of a (1, 2, 4, 4) map
C3 = 1 * 3 * 4 * 4
MAP2, MAP3 = [1, 2, 4, 4], [1, 3, 4, 4]


def row(name, type_, depth, in_shape, out_shape, params, macs, out_bytes, field, *, trainable=None,
        call_index=0, notes=()):  # fmt: skip
    """One expected layer dict. field: (size, stride, start) per axis, both axes equal, or None."""
    size, stride, start = field if field else (None, None, None)
    return {
        "name": name,
        "type": type_,
        "call_index": call_index,
        "depth": depth,
        "input_shape": in_shape,
        "output_shape": out_shape,
        "params": params,
        "trainable_params": params if trainable is None else trainable,
        "macs": macs,
        "flops": 2 * macs,
        "output_bytes": out_bytes,
        "receptive_field": None if field is None else [size, size],
        "effective_stride": None if field is None else [stride, stride],
        "start": None if field is None else [start, start],
        # Distill's effective padding (size - 1) / 2 - start, worked per case below
        "effective_padding": None if field is None else [(size - 1) // 2 - start] * 2,
        "sees_whole_input": False,
        "notes": list(notes),
    }


# Receptive fields (size, stride, start): stem 3x3 stride 2 padding 1 -> (3, 2, 0); each 3x3 conv
# after it adds (3 - 1) * 2 = 4 -> (7, 2, 0) then (11, 2, 0); 1x1 convs, ReLU and the multiply keep it.
RF3, RF7, RF11 = (3, 2, 0), (7, 2, 0), (11, 2, 0)

# MACs: stem 2 out x 16 px x 9 taps = 288; mixer.conv 2 x 16 x (2 x 9) = 576; the mixer's own 1x1
# conv 2 x 16 x 2 = 64; head 3 x 16 x 2 = 96.  Parameters: stem 2 x 9 + 2 = 20; mixer.conv 2 x 2 x 9
# = 36; scale 2; head 3 x 2 + 3 = 9; offset 3; unused Linear(4, 5) 20 + 5 = 25, of which the
# frozen bias's 5 are not trainable.
FULL_ROWS = [
    row("", "Net", 0, [1, 1, 8, 8], MAP3, 3, 0, C3 * F32, RF11, notes=["own ops"]),
    row("stem", "Conv2d", 1, [1, 1, 8, 8], MAP2, 20, 288, C2 * F32, RF3),
    row("mixer", "Mixer", 1, MAP2, MAP2, 0, 64, C2 * F32, RF7, notes=["own ops"]),
    row("mixer.conv", "Conv2d", 2, MAP2, MAP2, 36, 576, C2 * F32, RF7),
    row("mixer", "Mixer", 1, MAP2, MAP2, 0, 64, C2 * F32, RF11, call_index=1, notes=["own ops", "shared"]),
    row("mixer.conv", "Conv2d", 2, MAP2, MAP2, 0, 576, C2 * F32, RF11, call_index=1, notes=["shared"]),
    row("scaled", "Scaled", 1, MAP2, MAP2, 2, 0, C2 * F32, RF11, notes=["own ops"]),
    row("scaled.act", "ReLU", 2, MAP2, MAP2, 0, 0, C2 * F32, RF11),
    row("probe", "Probe", 1, MAP2, None, 0, 0, 0, None),
    row("head", "Conv2d", 1, MAP2, MAP3, 9, 96, C3 * F32, RF11),
    row("const", "Const", 1, None, [1, 1, 4, 4], 0, 0, 16 * F32, None),
    row("unused.0", "Linear", 2, None, None, 25, 0, 0, None, trainable=20, notes=["not called"]),
]

UNITS = {
    "macs": "multiply-accumulates (one multiply + one add)",
    "flops": "2 x macs",
    "output_bytes": "bytes",
    "receptive_field": "input pixels per spatial axis",
}


def expected_summary(rows: list[dict], depth: int | None) -> dict:
    total_macs = 288 + 2 * (576 + 64) + 96  # 1,664: the shared mixer's work counts at both calls
    return {
        "model": "Net",
        "input_shapes": [[1, 1, 8, 8]],
        "output_shapes": [MAP3],
        "units": UNITS,
        "total_params": 3 + 20 + 36 + 2 + 9 + 25,  # 95
        "trainable_params": 95 - 5,
        "total_macs": total_macs,
        "total_flops": 2 * total_macs,
        "activation_bytes": sum(r["output_bytes"] for r in rows),
        "receptive_field": [11, 11],
        "effective_stride": [2, 2],
        # the root and the head both end with the 11-pixel field; the root finishes last
        "receptive_field_layer": "(model)",
        "receptive_field_lost_at": None,
        "depth": depth,
        "layers": rows,
    }


def test_every_row_and_field_of_the_summary_matches_the_hand_count():
    summary = summarize(build(), (1, 1, 8, 8))
    expected = expected_summary(FULL_ROWS, None)
    assert expected["activation_bytes"] == 192 * 2 + 128 * 7 + 64  # 1,344 bytes, counted by hand
    got = summary.to_dict()
    for got_row, want_row in zip(got["layers"], expected["layers"], strict=True):
        assert got_row == want_row, want_row["name"]
    assert got == expected


def test_depth_one_folds_children_and_groups_uncalled_modules_under_their_ancestor():
    folded = [
        FULL_ROWS[0],
        FULL_ROWS[1],
        # a folded container: its own work plus its children's, all its parameters, no "own ops"
        row("mixer", "Mixer", 1, MAP2, MAP2, 36, 576 + 64, C2 * F32, RF7),
        row("mixer", "Mixer", 1, MAP2, MAP2, 0, 576 + 64, C2 * F32, RF11, call_index=1, notes=["shared"]),
        row("scaled", "Scaled", 1, MAP2, MAP2, 2, 0, C2 * F32, RF11),
        FULL_ROWS[8],
        FULL_ROWS[9],
        FULL_ROWS[10],
        # the uncalled Linear inside `unused` is reported as `unused`, at depth 1 like every other row
        row("unused", "Sequential", 1, None, None, 25, 0, 0, None, trainable=20, notes=["not called"]),
    ]
    summary = summarize(build(), (1, 1, 8, 8), depth=1)
    expected = expected_summary(folded, 1)
    assert (
        expected["activation_bytes"] == 192 * 2 + 128 * 4 + 64
    )  # 960 bytes: root, head; stem, 2 mixers, scaled; const
    assert summary.to_dict() == expected
    assert [layer.display_name for layer in summary.layers][:4] == [
        "(model)",
        "stem",
        "mixer",
        "mixer (call 2)",
    ]


def test_a_container_with_exactly_one_own_mac_and_no_parameters_gets_a_row():
    class Dot(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = nn.Identity()
            self.register_buffer("weight", torch.full((1, 1), 2.0))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x) @ self.weight  # (1, 1) @ (1, 1): one multiply-accumulate

    summary = summarize(Dot(), (1, 1))
    assert [(layer.name, layer.macs, layer.params, layer.notes) for layer in summary.layers] == [
        ("", 1, 0, ("own ops",)),
        ("inner", 0, 0, ()),
    ]


def test_a_meta_run_keeps_frozen_parameters_frozen():
    model = build(with_const=False)  # Const makes a CPU tensor, which a meta run cannot add
    on_cpu = summarize(model, (1, 1, 8, 8)).to_dict()
    on_meta = summarize(model, (1, 1, 8, 8), device="meta").to_dict()
    assert (
        on_meta["trainable_params"] == on_cpu["trainable_params"] == 90
    )  # the 5-element frozen bias stays frozen
    assert on_meta == on_cpu


# --- inputs, depth and device: what summarize accepts, and what it leaves alone ----------------------


def test_given_inputs_are_moved_to_the_meta_device_with_the_model():
    model = build(with_const=False)
    on_cpu = summarize(model, inputs=torch.ones(1, 1, 8, 8)).to_dict()
    assert summarize(model, inputs=torch.ones(1, 1, 8, 8), device="meta").to_dict() == on_cpu
    assert on_cpu["total_macs"] == 1664


def test_the_made_up_input_is_a_seed_zero_normal_and_the_global_rng_is_untouched():
    seen = []

    class Record(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(x.clone())
            return x

    torch.manual_seed(123)
    before = torch.get_rng_state()
    summarize(Record(), (2, 3, 4))
    summarize(Record(), (2, 3, 4))
    assert torch.equal(torch.get_rng_state(), before)
    expected = torch.randn((2, 3, 4), generator=torch.Generator().manual_seed(0))
    assert torch.equal(seen[0], expected) and torch.equal(seen[1], expected)


def test_a_model_without_parameters_gets_an_input_of_the_default_dtype():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        summary = summarize(nn.Sequential(nn.ReLU()), (1, 2, 3, 3))
    finally:
        torch.set_default_dtype(previous)
    assert summary.layers[0].output_bytes == 18 * 8  # 18 float64 elements


@pytest.mark.parametrize("input_size", [(), (1, 0, 4, 4), (1, 3, 2.5, 4), (1, "3", 4, 4), (1, True, 4, 4)])
def test_an_input_size_that_is_not_positive_integers_is_refused_by_name(input_size):
    with pytest.raises(ValueError) as refused:
        summarize(build(), input_size)
    assert str(refused.value) == (
        f"input_size must be positive integers, batch included (1, 3, 224, 224); got {input_size!r}"
    )


def test_exactly_one_of_input_size_and_inputs():
    for arguments in ({}, {"input_size": (1, 1, 8, 8), "inputs": torch.ones(1, 1, 8, 8)}):
        with pytest.raises(ValueError) as refused:
            summarize(build(), **arguments)
        assert str(refused.value) == "give exactly one of input_size (e.g. (1, 3, 224, 224)) and inputs"


@pytest.mark.parametrize("depth", [-1, True, 1.5, "1"])
def test_a_depth_that_is_not_a_non_negative_integer_is_refused_by_name(depth):
    with pytest.raises(ValueError) as refused:
        summarize(build(), (1, 1, 8, 8), depth=depth)
    assert str(refused.value) == f"depth must be a non-negative integer or None, got {depth!r}"


def test_depth_zero_is_one_row_for_the_whole_model():
    summary = summarize(build(), (1, 1, 8, 8), depth=0)
    assert [(row.name, row.params, row.macs, row.notes) for row in summary.layers] == [("", 95, 1664, ())]


def test_uncalled_modules_sharing_a_weight_count_it_once_and_fold_to_their_ancestor():
    model = build()
    model.unused.append(nn.Sequential(nn.Linear(4, 5)))  # unused.1.0, never called
    model.unused[1][0].weight = model.unused[0].weight  # tied: 20 weights, stored once
    full = {
        row.name: row.params for row in summarize(model, (1, 1, 8, 8)).layers if "not called" in row.notes
    }
    assert full == {"unused.0": 25, "unused.1.0": 5}  # the tied weight is counted at its first module
    at_two = {
        row.name: (row.params, row.depth)
        for row in summarize(model, (1, 1, 8, 8), depth=2).layers
        if "not called" in row.notes
    }
    assert at_two == {"unused.0": (25, 2), "unused.1": (5, 2)}


# --- exact integer totals ----------------------------------------------------------------------------


def test_summary_totals_are_exact_integers():
    # self-attention through scaled_dot_product_attention and a linear layer: every total an int
    class Attend(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(4, 4)

        def forward(self, x):
            x = self.proj(x)
            return F.scaled_dot_product_attention(x, x, x)

    summary = summarize(Attend(), (2, 5, 4))
    # linear 2*5*4*4 = 160; Q K^T and A V 2*5*5*4 = 200 each
    assert summary.total_macs == 160 + 400
    assert all(isinstance(value, int) for value in (summary.total_macs, summary.total_flops))
    assert all(isinstance(layer.macs, int) for layer in summary.layers)


# --- summary: trainable parameters on the meta path, to_dict --------------------------------------


def frozen_conv_model() -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3, stride=2, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 3)
    )
    model[0].requires_grad_(False)  # a frozen stem: 2*9 + 2 = 20 parameters not trained
    return model


def test_meta_copy_keeps_frozen_parameters_frozen():
    model = frozen_conv_model()
    on_meta = summarize(model, (1, 1, 8, 8), device="meta")
    on_cpu = summarize(model, (1, 1, 8, 8))
    # 20 in the conv (frozen) + 2*3 + 3 = 9 in the linear layer
    assert (on_meta.total_params, on_meta.trainable_params) == (29, 9)
    assert [(row.params, row.trainable_params) for row in on_meta.layers] == [(20, 0), (0, 0), (0, 0), (9, 9)]
    assert on_meta.to_dict() == on_cpu.to_dict()
    assert not any(p.requires_grad for p in model[0].parameters())  # the caller's model untouched


def whole_row(name, kind, input_shape, output_shape, output_bytes, params=0, macs=0):
    return {
        "name": name, "type": kind, "call_index": 0, "depth": 1,
        "input_shape": input_shape, "output_shape": output_shape,
        "params": params, "trainable_params": params, "macs": macs, "flops": 2 * macs,
        "output_bytes": output_bytes,
        "receptive_field": None, "effective_stride": None, "start": None, "effective_padding": None,
        "sees_whole_input": True, "notes": [],
    }  # fmt: skip


def test_to_dict_of_a_tiny_model_by_hand():
    summary = summarize(frozen_conv_model(), (1, 1, 8, 8))
    # conv 3x3 stride 2 padding 1 on 8x8: 4x4 outputs, 2*4*4*9 = 288 MACs, 32 float32 = 128 bytes;
    # field 3, jump 2, unit 0 centred at pixel 0 (effective padding (3 - 1)/2 - 0 = 1).
    # Global pooling and what follows see the whole input. Linear 2 -> 3: 6 MACs.
    conv = {
        "name": "0", "type": "Conv2d", "call_index": 0, "depth": 1,
        "input_shape": [1, 1, 8, 8], "output_shape": [1, 2, 4, 4],
        "params": 20, "trainable_params": 0, "macs": 288, "flops": 576, "output_bytes": 128,
        "receptive_field": [3, 3], "effective_stride": [2, 2], "start": [0, 0], "effective_padding": [1, 1],
        "sees_whole_input": False, "notes": [],
    }  # fmt: skip
    expected = {
        "model": "Sequential",
        "input_shapes": [[1, 1, 8, 8]],
        "output_shapes": [[1, 3]],
        "units": {
            "macs": "multiply-accumulates (one multiply + one add)",
            "flops": "2 x macs",
            "output_bytes": "bytes",
            "receptive_field": "input pixels per spatial axis",
        },
        "total_params": 29,
        "trainable_params": 9,
        "total_macs": 294,
        "total_flops": 588,
        "activation_bytes": 128 + 8 + 8 + 12,
        "receptive_field": [3, 3],
        "effective_stride": [2, 2],
        "receptive_field_layer": "0",
        "receptive_field_lost_at": None,
        "depth": None,
        "layers": [
            conv,
            whole_row("1", "AdaptiveAvgPool2d", [1, 2, 4, 4], [1, 2, 1, 1], 8),
            whole_row("2", "Flatten", [1, 2, 1, 1], [1, 2], 8),
            whole_row("3", "Linear", [1, 2], [1, 3], 12, params=9, macs=6),
        ],
    }
    document = summary.to_dict()
    assert document == expected
    assert json.loads(json.dumps(document)) == expected  # JSON-ready: survives a round trip unchanged
    assert summary.layers[0].to_dict() == conv
