"""Ship a model: verified ONNX and OpenVINO export, int8 quantization, inference, speed across engines.

- :func:`export_onnx` — BatchNorm folded, dynamic batch, sepconv metadata, verified with ONNX Runtime;
- :func:`quantize_onnx` — static int8 (QDQ, per-channel weights) calibrated on real batches;
- :class:`OnnxModel` — an exported file as a callable model with ``predict`` on raw images;
- :func:`export_openvino` / :class:`OpenVinoModel` — the same for OpenVINO: an IR verified in float32
  (and bf16 on CPUs with native bf16), int8 through NNCF (:func:`quantize_ir`), run by OpenVINO;
- :data:`ENGINES` / :func:`get_engine` — the engines a model is deployed to and measured on (ONNX
  Runtime fp32 and int8, PyTorch channels_last, OpenVINO fp32, bf16 and int8;
  :mod:`sepconv.deploy.engines`);
- :func:`benchmark_paths` — latency and throughput of one model across execution paths
  (:mod:`sepconv.deploy.bench`; the paths are a registry, :data:`EXECUTION_PATHS`);
- :func:`compare_models` — two models side by side: MACs against measured speed, output agreement.

onnx, onnxruntime, openvino and nncf are imported when a function needs them, and torch when a name below is first used,
so ``import sepconv.deploy`` is light.
"""

from typing import TYPE_CHECKING

from sepconv._lazy import lazy_exports

if TYPE_CHECKING:  # what static type checkers see; at run time these come from __getattr__
    from sepconv.deploy.bench import benchmark_paths
    from sepconv.deploy.bench_report import BenchReport, PathResult
    from sepconv.deploy.compare import Agreement, Comparison, ModelMeasurement, compare_models
    from sepconv.deploy.engines import ENGINES, Engine, get_engine
    from sepconv.deploy.execution_paths import (
        EXECUTION_PATHS,
        TRAIN_PATHS,
        ExecutionPath,
        PathUnavailableError,
    )
    from sepconv.deploy.onnx_export import ExportError, ExportReport, export_onnx, verify_onnx
    from sepconv.deploy.openvino_export import (
        OpenVinoExportReport,
        export_openvino,
        openvino_accuracy,
        quantize_ir,
    )
    from sepconv.deploy.openvino_runtime import OpenVinoModel
    from sepconv.deploy.quantize import onnx_accuracy, quantize_onnx
    from sepconv.deploy.runtime import DeployedModel, OnnxModel

# Imported on first use: the comparison and the benchmark import torch, and `sepconv compare --help`
# must not.
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "benchmark_paths": "sepconv.deploy.bench",
        "BenchReport": "sepconv.deploy.bench_report",
        "PathResult": "sepconv.deploy.bench_report",
        "Agreement": "sepconv.deploy.compare",
        "Comparison": "sepconv.deploy.compare",
        "ModelMeasurement": "sepconv.deploy.compare",
        "compare_models": "sepconv.deploy.compare",
        "ENGINES": "sepconv.deploy.engines",
        "Engine": "sepconv.deploy.engines",
        "get_engine": "sepconv.deploy.engines",
        "EXECUTION_PATHS": "sepconv.deploy.execution_paths",
        "TRAIN_PATHS": "sepconv.deploy.execution_paths",
        "ExecutionPath": "sepconv.deploy.execution_paths",
        "PathUnavailableError": "sepconv.deploy.execution_paths",
        "ExportError": "sepconv.deploy.onnx_export",
        "ExportReport": "sepconv.deploy.onnx_export",
        "export_onnx": "sepconv.deploy.onnx_export",
        "verify_onnx": "sepconv.deploy.onnx_export",
        "onnx_accuracy": "sepconv.deploy.quantize",
        "quantize_onnx": "sepconv.deploy.quantize",
        "OnnxModel": "sepconv.deploy.runtime",
        "DeployedModel": "sepconv.deploy.runtime",
        "OpenVinoModel": "sepconv.deploy.openvino_runtime",
        "OpenVinoExportReport": "sepconv.deploy.openvino_export",
        "export_openvino": "sepconv.deploy.openvino_export",
        "openvino_accuracy": "sepconv.deploy.openvino_export",
        "quantize_ir": "sepconv.deploy.openvino_export",
    },
)

__all__ = [
    "ENGINES",
    "EXECUTION_PATHS",
    "TRAIN_PATHS",
    "Agreement",
    "BenchReport",
    "Comparison",
    "DeployedModel",
    "Engine",
    "ExecutionPath",
    "ExportError",
    "ExportReport",
    "ModelMeasurement",
    "OnnxModel",
    "OpenVinoExportReport",
    "OpenVinoModel",
    "PathResult",
    "PathUnavailableError",
    "benchmark_paths",
    "compare_models",
    "export_onnx",
    "export_openvino",
    "get_engine",
    "onnx_accuracy",
    "openvino_accuracy",
    "quantize_ir",
    "quantize_onnx",
    "verify_onnx",
]
