"""Fast paths for training: C++ custom operators registered with ``torch.library``, exact against autograd.

In a separable network the memory-bound steps (BatchNorm and activation, forward and backward) take
more time than the convolutions: :func:`batch_norm_act` does each pair in one forward and one backward
pass, :func:`depthwise_conv2d` pairs oneDNN's depthwise forward with a C++ backward that measured
up to twice as fast on large stride-1 maps, and :func:`depthwise_batch_norm_act` runs the depthwise
convolution, its BatchNorm and activation as one operator (four passes over memory forward, six
backward, against five and eight). The MobileNet blocks (``ConvNormAct``, ``DepthwiseSeparableBlock``,
``InvertedResidual``) and ``DepthwiseConv2d`` use them by themselves when training on the CPU;
:func:`set_fused` switches them per model. Parameters, buffers, ``state_dict`` keys, eval mode and export are those of the plain
modules, and wherever a kernel cannot run (GPU, no compiler, tracing) the plain modules do.
"""

from sepconv.kernels._build import KernelBuildWarning, load_kernels
from sepconv.kernels.bn_act import ACTIVATION_CODES, batch_norm_act, can_fuse, kernels_available
from sepconv.kernels.depthwise import depthwise_batch_norm_act, depthwise_conv2d
from sepconv.kernels.switch import count_fusable, set_fused

__all__ = [
    "ACTIVATION_CODES",
    "KernelBuildWarning",
    "batch_norm_act",
    "can_fuse",
    "count_fusable",
    "depthwise_batch_norm_act",
    "depthwise_conv2d",
    "kernels_available",
    "load_kernels",
    "set_fused",
]
