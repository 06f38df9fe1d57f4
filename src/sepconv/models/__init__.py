"""Model zoo: MobileNetV1/V2, the standard/separable twin CNNs, and a registry that also reaches torchvision."""

from sepconv.models.mobilenet_v1 import MobileNetV1, mobilenet_v1
from sepconv.models.mobilenet_v2 import MobileNetV2, mobilenet_v2
from sepconv.models.registry import create_model, default_input_size, list_models, model_spec, register_model
from sepconv.models.small_cnn import SmallCNN, separable_cnn, standard_cnn

__all__ = [
    "MobileNetV1",
    "MobileNetV2",
    "SmallCNN",
    "create_model",
    "default_input_size",
    "list_models",
    "mobilenet_v1",
    "mobilenet_v2",
    "model_spec",
    "register_model",
    "separable_cnn",
    "standard_cnn",
]
