"""MAC formulas of ``sepconv.analysis.costs`` on the calls the model tests do not make, by hand.

Each count is worked out from the shapes: a matrix product (rows x inner x out) per projection, and
for attention with L queries and S keys of E features Q K^T and A V at L*S*E each.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tests.helpers.costs import OperatorLog, mha_by_hand
from torch import nn
from torch.utils.flop_counter import flop_registry

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


def test_counts_macs_knows_torchs_formulas_sepconvs_own_and_neither():
    aten = torch.ops.aten
    # convolution has a formula in torch's registry only; the native attention only in sepconv's own
    assert aten.convolution in flop_registry and aten._native_multi_head_attention not in flop_registry
    assert counts_macs(aten.convolution)
    assert counts_macs(aten._native_multi_head_attention)
    assert not counts_macs(aten.relu)
