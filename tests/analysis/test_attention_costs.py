"""Attention MACs on every execution path: PyTorch's fused eval-mode fast path counts as the slow path.

In eval mode ``nn.MultiheadAttention`` runs ``aten._native_multi_head_attention`` (and a bare
``nn.TransformerEncoderLayer`` ``aten._transformer_encoder_layer_fwd``): one kernel whose matrix
products happen below the dispatcher. The slow path (fast path disabled) runs separate ``addmm`` /
``bmm`` / ``scaled_dot_product_attention`` calls. Both must give the same, hand-worked, total.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from tests.helpers.costs import OperatorLog, mha_by_hand
from torch import nn
from torchvision.models import VisionTransformer

from sepconv.analysis import summarize
from sepconv.analysis.costs import attention_macs


@contextlib.contextmanager
def slow_path():
    """PyTorch's attention fast path off inside the block, restored after it."""
    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(before)


def test_the_formula_matches_the_hand_count():
    # 2 sequences of 5 tokens, E = 8: 2 * (3*5*64 + 2*5*5*8 + 5*64) = 2 * (960 + 400 + 320)
    assert attention_macs([5, 5], [5, 5], 8) == mha_by_hand(2, 5, 5, 8) == 3360


@pytest.mark.parametrize("need_weights", [True, False])
@pytest.mark.parametrize("keys", [5, 7])  # self-attention, then 7 keys/values for 5 queries
def test_multihead_attention_counts_the_same_on_the_fast_and_the_slow_path(need_weights, keys):
    torch.manual_seed(0)
    attention = nn.MultiheadAttention(8, num_heads=2, batch_first=True).eval()
    query = torch.randn(2, 5, 8)
    memory = query if keys == 5 else torch.randn(2, keys, 8)
    inputs = (query, memory, memory, None, need_weights)
    with OperatorLog() as log, torch.no_grad():
        attention(*inputs)
    # the fast path really ran where PyTorch offers it: self-attention only
    assert log.operators["aten._native_multi_head_attention"] == (1 if memory is query else 0)
    expected = mha_by_hand(batch=2, queries=5, keys=keys, embed=8)
    assert summarize(attention, inputs=inputs).total_macs == expected
    with slow_path():
        assert summarize(attention, inputs=inputs).total_macs == expected


def encoder_by_hand(lengths: list[int], embed: int, feedforward: int, layers: int) -> int:
    """Per layer: attention over each sequence, then two linear layers of embed x feedforward per token."""
    return layers * (attention_macs(lengths, lengths, embed) + 2 * sum(lengths) * embed * feedforward)


def small_encoder() -> nn.TransformerEncoder:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, nhead=2, dim_feedforward=32, dropout=0.0, batch_first=True)
    return nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=True).eval()


def test_transformer_encoder_counts_the_same_on_the_fast_and_the_slow_path():
    encoder = small_encoder()
    tokens = torch.randn(2, 5, 16)
    expected = encoder_by_hand([5, 5], embed=16, feedforward=32, layers=2)
    assert summarize(encoder, inputs=tokens).total_macs == expected
    with slow_path():
        assert summarize(encoder, inputs=tokens).total_macs == expected


def test_fused_encoder_layer_kernel_is_counted():
    # Without hooks (summarize adds some, which turns this path off) a bare layer runs one fused kernel.
    layer = small_encoder().layers[0]
    tokens = torch.randn(2, 5, 16)
    with OperatorLog() as log, torch.no_grad():
        layer(tokens)
    assert log.operators["aten._transformer_encoder_layer_fwd"] == 1
    assert log.macs == encoder_by_hand([5, 5], embed=16, feedforward=32, layers=1)


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors")
def test_padded_batch_on_the_nested_fast_path_counts_the_tokens_computed():
    # With a padding mask in eval mode the encoder packs the batch into a nested tensor and skips the
    # padded positions: sequences of 5 and 3 tokens cost what they compute, not 2 x 5 tokens.
    encoder = small_encoder()
    tokens = torch.randn(2, 5, 16)
    padding = torch.tensor([[False] * 5, [False] * 3 + [True] * 2])
    summary = summarize(encoder, inputs=(tokens, None, padding))
    assert summary.total_macs == encoder_by_hand([5, 3], embed=16, feedforward=32, layers=2)


def vit_by_hand(image: int, patch: int, layers: int, hidden: int, mlp: int, classes: int) -> int:
    tokens = (image // patch) ** 2 + 1  # patches and the class token
    patch_embedding = (image // patch) ** 2 * hidden * 3 * patch * patch
    encoder = layers * (attention_macs([tokens], [tokens], hidden) + 2 * tokens * hidden * mlp)
    return patch_embedding + encoder + hidden * classes


def test_small_vit_counts_the_same_in_eval_mode_as_on_the_slow_path():
    torch.manual_seed(0)
    model = VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64
    )
    expected = vit_by_hand(image=32, patch=8, layers=2, hidden=32, mlp=64, classes=1000)
    assert expected == 445_824
    assert summarize(model.eval(), (1, 3, 32, 32)).total_macs == expected
    with slow_path():
        assert summarize(model.eval(), (1, 3, 32, 32)).total_macs == expected
    assert torch.backends.mha.get_fastpath_enabled()  # the context restored it


@pytest.mark.slow
def test_vit_b_16_matches_the_slow_path_and_torchvision():
    from sepconv.models import create_model

    model = create_model("torchvision:vit_b_16")
    fast = summarize(model, (1, 3, 224, 224)).total_macs
    with slow_path():
        slow = summarize(model, (1, 3, 224, 224)).total_macs
    assert fast == slow == vit_by_hand(image=224, patch=16, layers=12, hidden=768, mlp=3072, classes=1000)
    # torchvision's model table gives 17.56 GFLOPS (multiply-adds) for vit_b_16
    assert round(fast / 1e9, 2) == 17.56
