"""sepconv: efficient convolutions for PyTorch: layers, MobileNet models, cost analysis, conversion, training.

``import sepconv`` loads only torch and the layer/model code; training, export and plotting libraries
are imported by the modules that need them.
"""

from sepconv import arithmetic, layers, models
from sepconv.layers import DepthwiseConv2d, PointwiseConv2d, SeparableConv2d
from sepconv.models import create_model, list_models

__version__ = "0.1.0"

__all__ = [
    "DepthwiseConv2d",
    "PointwiseConv2d",
    "SeparableConv2d",
    "__version__",
    "arithmetic",
    "create_model",
    "layers",
    "list_models",
    "models",
]
