"""Multiply-adds of one ATen operator call: ``torch.utils.flop_counter``'s formulas, plus fused attention.

PyTorch's formulas (the ones ``FlopCounterMode`` uses) cover convolutions, matrix products and the
CUDA attention kernels. They miss the kernels that an ``nn.MultiheadAttention`` or
``nn.TransformerEncoderLayer`` in eval mode runs on its fast path (``_native_multi_head_attention``,
``_transformer_encoder_layer_fwd``) and CPU's ``scaled_dot_product_attention``
(``_scaled_dot_product_flash_attention_for_cpu``): the work inside them happens below the dispatcher,
invisible to any ``TorchDispatchMode``. The formulas below count them as the slow path (separate
``linear`` and ``bmm`` calls) does, so a transformer costs the same in train and eval mode. One
exception, by design: given a padding mask in eval mode, ``nn.TransformerEncoder`` packs the batch
into a nested tensor and skips the padded positions; those are then not counted, because they are
not computed.

torch's global ``flop_registry`` is left untouched: the extra formulas live in a table of their own.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.flop_counter import flop_registry, sdpa_flop_count

__all__ = ["attention_macs", "counts_macs", "macs_of"]

aten = torch.ops.aten


def _sequence_lengths(tensor: torch.Tensor) -> list[int]:
    """Length of every sequence in a (..., length, features) batch; nested tensors give their own."""
    if tensor.is_nested:
        return [int(length) for length in tensor._nested_tensor_size()[:, 0].tolist()]
    return [tensor.shape[-2]] * math.prod(tensor.shape[:-2])


def attention_macs(query_lengths: list[int], key_lengths: list[int], embed_dim: int) -> int:
    """MACs of multi-head attention over sequences of ``embed_dim`` features (any number of heads).

    Per sequence with L queries and S keys/values, E = embed_dim: query, key and value projections
    L*E*E + 2*S*E*E, scores Q K^T L*S*E (summed over heads of E/heads features), weighted values A V
    L*S*E, output projection L*E*E.

    >>> attention_macs([5, 5], [5, 5], 8)  # two sequences of 5 tokens: 2 * (3*5*64 + 2*5*5*8 + 5*64)
    3360
    """
    return sum(
        length * embed_dim * embed_dim  # query projection
        + 2 * keys * embed_dim * embed_dim  # key and value projections
        + 2 * length * keys * embed_dim  # Q K^T and A V
        + length * embed_dim * embed_dim  # output projection
        for length, keys in zip(query_lengths, key_lengths, strict=True)
    )


def _native_multi_head_attention(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    # (query, key, value, embed_dim, num_head, qkv_weight, qkv_bias, proj_weight, proj_bias, ...)
    query, key, embed_dim = args[0], args[1], args[3]
    return attention_macs(_sequence_lengths(query), _sequence_lengths(key), embed_dim)


def _transformer_encoder_layer_fwd(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    # (src, embed_dim, num_heads, qkv_weight, qkv_bias, proj_weight, proj_bias, use_gelu, norm_first,
    #  eps, norm_weight_1, norm_bias_1, norm_weight_2, norm_bias_2, ffn_weight_1, ffn_bias_1, ...)
    source, ffn_weight = args[0], args[14]
    embed_dim: int = args[1]
    lengths = _sequence_lengths(source)
    feedforward: int = ffn_weight.shape[0]
    return attention_macs(lengths, lengths, embed_dim) + 2 * sum(lengths) * embed_dim * feedforward


def _linear(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    # Reaches the dispatcher whole only for nested tensors (dense ones arrive as addmm / mm).
    source, weight = args[0], args[1]
    macs: int = source.numel() * weight.shape[0]  # rows x in_features x out_features
    return macs


def _scaled_dot_product_attention(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    # (query, key, value, ...) of shape (batch, heads, length, features): Q K^T and A V.
    query, key, value = args[:3]
    flops: int = sdpa_flop_count(query.shape, key.shape, value.shape)  # type: ignore[no-untyped-call]  # untyped in torch
    return flops // 2


_Formula = Callable[[tuple[Any, ...], dict[str, Any]], int]
_EXTRA: dict[Any, _Formula] = {}
for _formula, _names in (
    (_native_multi_head_attention, ("_native_multi_head_attention",)),
    (_transformer_encoder_layer_fwd, ("_transformer_encoder_layer_fwd",)),
    (_linear, ("linear",)),
    (
        _scaled_dot_product_attention,
        ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_fused_attention_overrideable"),
    ),
):
    for _name in _names:
        if (_packet := getattr(aten, _name, None)) is not None and _packet not in flop_registry:
            _EXTRA[_packet] = _formula


def counts_macs(packet: Any) -> bool:
    """Whether calls of the overload packet ``packet`` have a MAC formula (so must not be decomposed)."""
    return packet in flop_registry or packet in _EXTRA


def macs_of(func: Any, args: Sequence[Any], kwargs: dict[str, Any], out: Any) -> int:
    """Multiply-adds of one call ``func(*args, **kwargs) -> out``; 0 for operators without a formula."""
    packet = func._overloadpacket
    if packet in _EXTRA:
        return _EXTRA[packet](tuple(args), kwargs)
    if packet in flop_registry:
        # torch's formulas count a multiply-add as two FLOPs and bias additions not at all
        flops: int = flop_registry[packet](*args, **kwargs, out_val=out)
        return flops // 2
    return 0
