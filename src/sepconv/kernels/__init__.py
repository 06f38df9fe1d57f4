"""Fast paths for training: fused BatchNorm + activation as a ``torch.library`` custom operator (C++).

In a separable network the memory-bound steps (BatchNorm and activation, forward and backward) take
more time than the convolutions; :func:`batch_norm_act` does each pair in one forward and one backward
pass. The MobileNet blocks (:class:`~sepconv.layers.ConvNormAct`, :class:`~sepconv.layers.InvertedResidual`)
use it by themselves when training on the CPU; :func:`set_fused` switches it per model. Parameters,
buffers, ``state_dict`` keys, eval mode and export are those of the plain modules.
"""

from sepconv.kernels._build import KernelBuildWarning, load_library
from sepconv.kernels.bn_act import ACTIVATION_CODES, batch_norm_act, can_fuse, kernels_available
from sepconv.kernels.switch import count_fusable, set_fused

__all__ = [
    "ACTIVATION_CODES",
    "KernelBuildWarning",
    "batch_norm_act",
    "can_fuse",
    "count_fusable",
    "kernels_available",
    "load_library",
    "set_fused",
]
