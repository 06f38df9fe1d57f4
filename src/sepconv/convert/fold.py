"""Fold BatchNorm into the convolution before it, so an inference model runs one op where it ran two.

In eval mode a BatchNorm is a per-channel affine map, and a convolution's output channel is linear in
that channel's filters and bias, so the two compose into one convolution with rescaled filters and a
new bias. The maths is torch's (:mod:`torch.nn.utils.fusion`); this module finds the pairs it is
safe to fold and swaps the modules, keeping the user's model class and ``state_dict`` key names.
"""

from __future__ import annotations

import copy
from collections import Counter
from itertools import pairwise

import torch
from torch import fx, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd, _ConvTransposeNd
from torch.nn.utils import parametrize
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_conv_bn_weights

from sepconv.convert.replay import register_transform
from sepconv.errors import ArgumentTypeError
from sepconv.io.transforms import record_transform
from sepconv.layers.conv import Conv2d as SepconvConv2d

__all__ = ["fold_batchnorm", "fold_batchnorm_with_report"]

# Convolutions whose output is conv(x, weight) + bias, so rescaling weight and bias rescales the output.
# A subclass with its own forward (a weight-standardized conv, say) may transform its weight first,
# and folding into it would be wrong: such convs are left alone.
_LINEAR_CONV_FORWARDS = frozenset(
    cls.forward
    for cls in (
        nn.Conv1d,
        nn.Conv2d,
        nn.Conv3d,
        nn.ConvTranspose1d,
        nn.ConvTranspose2d,
        nn.ConvTranspose3d,
        SepconvConv2d,  # explicit 'same' padding, then nn.Conv2d's own _conv_forward
    )
)
_BATCHNORM_FORWARDS = frozenset({_BatchNorm.forward, nn.SyncBatchNorm.forward})


@register_transform("fold_batchnorm")
def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with each BatchNorm that follows a convolution folded into it.

    The folded convolution keeps its class (a ``DepthwiseConv2d`` stays one) and gains a bias; the
    BatchNorm becomes ``nn.Identity``, so ``state_dict`` keys stay the same except the BatchNorm's,
    which vanish. ``model`` itself is not changed. See :func:`fold_batchnorm_with_report` for which
    pairs are folded and which are left in place.

    >>> from sepconv.layers import ConvNormAct
    >>> block = ConvNormAct(3, 8, 3)
    >>> folded = fold_batchnorm(block)
    >>> type(folded).__name__, [type(layer).__name__ for layer in folded]
    ('ConvNormAct', ['Conv2d', 'Identity', 'ReLU'])
    >>> x = torch.randn(2, 3, 6, 6)
    >>> torch.allclose(folded(x), block.eval()(x), rtol=1e-5, atol=1e-6)
    True
    """
    return fold_batchnorm_with_report(model)[0]


def fold_batchnorm_with_report(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """Like :func:`fold_batchnorm`, also returning the qualified names of the BatchNorms it folded.

    Pairs are found by tracing ``model`` with :mod:`torch.fx`: a BatchNorm is folded when its input
    is the output of a convolution (``nn.Conv1d/2d/3d``, ``nn.ConvTranspose1d/2d/3d``, any groups,
    and sepconv's subclasses) that nothing else reads. When the model cannot be traced (control flow
    on tensor values), the structural rule applies instead: a convolution directly followed by a
    BatchNorm inside an ``nn.Sequential`` (sepconv's ``ConvNormAct`` and torchvision's
    ``Conv2dNormActivation`` are ones). Left in place either way: BatchNorms without running
    statistics (``track_running_stats=False`` normalizes with batch statistics even in eval mode),
    modules reachable under two names or called twice, and convolutions with a parametrized weight.
    A model carrying a sepconv recipe records the step, so ``save_model``/``load_model`` rebuild it.

    >>> from sepconv.layers import DepthwiseSeparableBlock
    >>> folded, names = fold_batchnorm_with_report(DepthwiseSeparableBlock(4, 8))
    >>> names
    ['depthwise.1', 'pointwise.1']
    """
    if not isinstance(model, nn.Module):
        raise ArgumentTypeError(f"fold_batchnorm expects an nn.Module for model, got {type(model).__name__}")
    folded = copy.deepcopy(model).eval()
    try:
        pairs = _traced_pairs(folded)
    except Exception:
        # FX raises many kinds of error on models it cannot trace (TraceError for control flow on a
        # Proxy, TypeError or AttributeError from code that inspects its input); any of them means
        # "use the structural rule", which needs no tracing.
        pairs = _sequential_pairs(folded)
    aliased = _aliased_modules(folded)
    folded_names = []
    for conv_name, norm_name in pairs:
        conv, norm = folded.get_submodule(conv_name), folded.get_submodule(norm_name)
        if not (isinstance(conv, _ConvNd) and isinstance(norm, _BatchNorm)):  # as both pair rules found
            continue
        if id(conv) in aliased or id(norm) in aliased or not _can_fold(conv, norm):
            continue
        folded.set_submodule(conv_name, _fold_pair(conv, norm))
        folded.set_submodule(norm_name, nn.Identity())
        folded_names.append(norm_name)
    if getattr(model, "_sepconv_spec", None) is not None:
        record_transform(folded, model, "fold_batchnorm")
    return folded, folded_names


class _ConvNormLeafTracer(fx.Tracer):
    # Convolutions and norms stay whole nodes (sepconv's subclasses would otherwise be traced into).
    def is_leaf_module(self, module: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(module, _ConvNd | _BatchNorm) or super().is_leaf_module(
            module, module_qualified_name
        )


def _traced_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(conv name, norm name) for each norm whose only input is a conv output read by nothing else."""
    graph = _ConvNormLeafTracer().trace(model)
    calls = Counter(node.target for node in graph.nodes if node.op == "call_module")
    pairs: list[tuple[str, str]] = []
    for node in graph.nodes:
        # a call_module node's target is the module's qualified name
        if node.op != "call_module" or not isinstance(node.target, str):
            continue
        if not isinstance(model.get_submodule(node.target), _BatchNorm):
            continue
        if len(node.args) != 1 or node.kwargs or not isinstance(node.args[0], fx.Node):
            continue
        source = node.args[0]
        if source.op != "call_module" or not isinstance(source.target, str):
            continue
        if not isinstance(model.get_submodule(source.target), _ConvNd):
            continue
        if len(source.users) == 1 and calls[source.target] == 1 and calls[node.target] == 1:
            pairs.append((source.target, node.target))
    return pairs


def _sequential_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(conv name, norm name) for each conv immediately followed by a norm inside an nn.Sequential."""
    pairs = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Sequential):
            continue
        for (conv_name, conv), (norm_name, norm) in pairwise(module.named_children()):
            if isinstance(conv, _ConvNd) and isinstance(norm, _BatchNorm):
                prefix = f"{name}." if name else ""
                pairs.append((prefix + conv_name, prefix + norm_name))
    return pairs


def _aliased_modules(model: nn.Module) -> set[int]:
    """Ids of modules reachable under more than one name: replacing one name would leave the other."""
    counts = Counter(id(module) for _, module in model.named_modules(remove_duplicate=False))
    return {module_id for module_id, count in counts.items() if count > 1}


def _can_fold(conv: _ConvNd, norm: _BatchNorm) -> bool:
    return (
        type(conv).forward in _LINEAR_CONV_FORWARDS
        and not parametrize.is_parametrized(conv)
        and type(norm).forward in _BATCHNORM_FORWARDS
        and norm.running_mean is not None
        and norm.running_var is not None
        and norm.num_features == conv.out_channels
    )


def _fold_pair(conv: _ConvNd, norm: _BatchNorm) -> _ConvNd:
    """A copy of ``conv`` (same class) computing ``norm(conv(x))`` in eval mode."""
    fused: _ConvNd
    with torch.no_grad():
        if isinstance(conv, _ConvTransposeNd) and conv.groups > 1:
            fused = _fold_grouped_transposed(conv, norm)
        else:
            fused = fuse_conv_bn_eval(conv, norm, transpose=isinstance(conv, _ConvTransposeNd))
    # torch makes a new bias that does not require grad when the conv had none; keep it trainable
    # like the weight, so a folded model can still be fine-tuned.
    if fused.bias is not None:  # always, after folding
        fused.bias.requires_grad_(fused.weight.requires_grad)
    return fused


def _fold_grouped_transposed(conv: _ConvTransposeNd, norm: _BatchNorm) -> _ConvTransposeNd:
    # A transposed conv's weight is (in_channels, out_channels // groups, *kernel), and torch's
    # transpose=True scales dim 1 by all out_channels factors, which only fits groups == 1. Lay the
    # weight out as a regular conv's (out_channels, in_channels // groups, *kernel), one output
    # channel per row, let torch fold that, and lay it back.
    mean, variance = norm.running_mean, norm.running_var
    if mean is None or variance is None:  # _can_fold lets only norms with running statistics through
        raise ValueError(f"cannot fold {type(norm).__name__} without running statistics")
    groups, kernel = conv.groups, conv.weight.shape[2:]
    in_per_group, out_per_group = conv.in_channels // groups, conv.out_channels // groups
    by_group = conv.weight.reshape(groups, in_per_group, out_per_group, *kernel)
    as_regular = by_group.transpose(1, 2).reshape(conv.out_channels, in_per_group, *kernel)
    weight, bias = fuse_conv_bn_weights(
        as_regular,
        conv.bias,
        mean,
        variance,
        norm.eps,
        norm.weight,
        norm.bias,
        transpose=False,
    )
    regrouped = weight.reshape(groups, out_per_group, in_per_group, *kernel).transpose(1, 2)
    fused = copy.deepcopy(conv)
    fused.weight = nn.Parameter(regrouped.reshape(conv.weight.shape).contiguous(), conv.weight.requires_grad)
    fused.bias = bias
    return fused
