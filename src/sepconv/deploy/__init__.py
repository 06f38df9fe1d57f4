"""Ship a model: verified ONNX export, int8 quantization, ONNX Runtime inference, speed across paths.

- :func:`export_onnx` — BatchNorm folded, dynamic batch, sepconv metadata, verified with ONNX Runtime;
- :func:`quantize_onnx` — static int8 (QDQ, per-channel weights) calibrated on real batches;
- :class:`OnnxModel` — an exported file as a callable model with ``predict`` on raw images;
- :mod:`sepconv.deploy.bench` — latency and throughput of one model across execution paths;
- :func:`compare_models` — two models side by side: MACs against measured speed, output agreement.

onnx and onnxruntime are imported when a function needs them, so ``import sepconv.deploy`` is light.
"""

from sepconv.deploy.compare import Agreement, Comparison, ModelMeasurement, compare_models
from sepconv.deploy.onnx_export import ExportError, ExportReport, export_onnx, verify_onnx
from sepconv.deploy.quantize import onnx_accuracy, quantize_onnx
from sepconv.deploy.runtime import OnnxModel

__all__ = [
    "Agreement",
    "Comparison",
    "ExportError",
    "ExportReport",
    "ModelMeasurement",
    "OnnxModel",
    "compare_models",
    "export_onnx",
    "onnx_accuracy",
    "quantize_onnx",
    "verify_onnx",
]
