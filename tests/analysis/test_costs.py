"""MAC formulas on the calls the model tests do not make, and the summary's counts as JSON, by hand.

Each count is worked out from the shapes: a matrix product (rows x inner x out) per projection, and
for attention with L queries and S keys of E features Q K^T and A V at L*S*E each. The summary part
checks trainable parameters on the meta path and ``to_dict`` against a dict written out here.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from tests.helpers.costs import OperatorLog, mha_by_hand
from torch import nn
from torch.utils.flop_counter import flop_registry

from sepconv.analysis import summarize
from sepconv.analysis.costs import attention_macs, counts_macs, macs_of

aten = torch.ops.aten


def test_attention_macs_needs_one_key_length_per_query_length():
    with pytest.raises(ValueError):
        attention_macs([5], [5, 5], 8)
    with pytest.raises(ValueError):
        attention_macs([5, 5], [5], 8)
    # one query sequence of 3 tokens over 7 keys, E = 4: 3*16 + 2*7*16 + 2*3*7*4 + 3*16
    assert attention_macs([3], [7], 4) == 48 + 224 + 168 + 48 == mha_by_hand(1, 3, 7, 4)


def test_native_multi_head_attention_takes_queries_as_long_as_keys():
    # Why its formula may read L from the key (or S from the value): the fused kernel nn.MultiheadAttention
    # runs on its fast path refuses queries, keys and values of different shapes (cross-attention takes
    # the slow path, counted in test_attention_costs).
    embed, heads = 8, 2
    query, memory = torch.zeros(2, 3, embed), torch.zeros(2, 7, embed)
    weights = (
        torch.zeros(3 * embed, embed),
        torch.zeros(3 * embed),
        torch.zeros(embed, embed),
        torch.zeros(embed),
    )
    with pytest.raises(RuntimeError, match="shapes to match"):
        torch._native_multi_head_attention(query, memory, memory, embed, heads, *weights)


def test_cpu_attention_with_a_mask_and_is_causal():
    # (batch 2, heads 3, L 4, E 5) queries over S = 6 keys and values: Q K^T and A V 2*3*4*6*5 = 720 MACs
    # each. is_causal makes the kernel receive dropout_p and is_causal positionally.
    torch.manual_seed(0)
    query, key, value = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 6, 5), torch.randn(2, 3, 6, 5)
    mask = torch.zeros(4, 6)
    for call in (
        lambda: F.scaled_dot_product_attention(query, key, value, mask),
        lambda: F.scaled_dot_product_attention(query, key, value, None, 0.0, True),
    ):
        with OperatorLog() as log:
            call()
        assert log.operators["aten._scaled_dot_product_flash_attention_for_cpu"] == 1
        assert log.macs == 720 + 720
        assert isinstance(log.macs, int)


def test_fused_attention_overrideable_with_a_positional_bias():
    # The backend-neutral kernel takes its attn_bias as the fourth positional argument
    # (query, key, value, attn_bias, dropout_p, is_causal, ...): it must not be read as a fourth operand.
    query, key, value = torch.empty(1, 2, 3, 4), torch.empty(1, 2, 5, 4), torch.empty(1, 2, 5, 6)
    bias = torch.zeros(3, 5)
    packet = aten._scaled_dot_product_fused_attention_overrideable.default
    macs = macs_of(packet, (query, key, value, bias, 0.0, False), {}, None)
    assert macs == 1 * 2 * 3 * 5 * 4 + 1 * 2 * 3 * 5 * 6  # Q K^T 120, A V 180
    assert isinstance(macs, int)


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors:UserWarning")
@pytest.mark.parametrize("bias", [False, True])
def test_nested_linear_with_and_without_bias(bias):
    # A nested batch of 2 and 3 rows of 4 features into 6: (2 + 3) * 4 * 6 = 120 MACs (bias not counted).
    torch.manual_seed(0)
    rows = torch.nested.nested_tensor([torch.randn(2, 4), torch.randn(3, 4)])
    layer = nn.Linear(4, 6, bias=bias)
    with OperatorLog() as log, torch.no_grad():
        layer(rows)
    assert log.operators["aten.linear"] == 1
    assert log.macs == 120


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


def test_counts_macs_knows_torchs_formulas_sepconvs_own_and_neither():
    aten = torch.ops.aten
    # convolution has a formula in torch's registry only; the native attention only in sepconv's own
    assert aten.convolution in flop_registry and aten._native_multi_head_attention not in flop_registry
    assert counts_macs(aten.convolution)
    assert counts_macs(aten._native_multi_head_attention)
    assert not counts_macs(aten.relu)
