"""Deployment engines side by side (issue 24): is sepconv's best deployed path the fastest one it knows?

Prints, from one process on one machine, with the CPU and its instruction sets named first:

1. torchvision's mobilenet_v2 at 224x224, batch 1 and 16: every path of ``sepconv bench`` (PyTorch
   eager / channels_last / compiled, ONNX Runtime fp32 and int8, OpenVINO fp32, bf16 and int8, each with
   its deployment settings) and two baselines built without sepconv, timed in the same interleaved
   rounds: ONNX Runtime with its default session settings on ``torch.onnx.export`` of the unmodified
   model (``plain_ort``), and OpenVINO on that same file, compiled for latency at each batch size
   (``plain_openvino``). Then: sepconv's best deployed path against the best of everything measured
   (target: not slower), and against ONNX Runtime fp32 (target on native-bf16 CPUs: 1.5x faster);
2. int8 through NNCF on the demo's separable model (``--model-file``, or one trained here with the
   demo's recipe): top-1 of the float and the int8 IR on the mnist5k test split (target: within 1 point);
3. the demo twins at batch 1 and 64 on every deployment engine, with a large tensor copy timed in the
   same rounds: the separable twin's best deployed latency at batch 64 against its memory bound, the
   bytes of weights and activations it must move over the copy's bandwidth (target: within 2x).

    python benchmarks/engines.py [--seconds 20] [--model-file runs/demo/separable_cnn/model.safetensors]

Timings vary with the machine's load: the paths share each round, so their ratios are what to read.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sepconv.deploy.bench import BenchReport, ExecutionPath, PathResult, benchmark_paths

# sepconv's deployed paths (what `sepconv export` writes and an engine runs), and the PyTorch ones.
DEPLOYED_PATHS = ("onnx_fp32", "onnx_int8", "openvino_fp32", "openvino_bf16", "openvino_int8")
BASELINES = ("plain_ort", "plain_openvino")
# Bytes per element at each deployed path's precision (weights and activations).
PATH_BYTES = {"onnx_int8": 1, "openvino_int8": 1, "openvino_bf16": 2}
# The copy that measures memory bandwidth: 64 M floats (256 MB) read and 256 MB written, far beyond
# any cache of the CPUs this runs on.
COPY_ELEMENTS = 64 * 1024 * 1024


def plain_export(model: nn.Module, input_size: tuple[int, ...], path: Path) -> Path:
    """``torch.onnx.export`` of ``model`` as it is: no BatchNorm folding, no metadata (what users do)."""
    example = torch.randn(2, *input_size)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(),
            (example,),
            str(path),
            dynamo=True,
            input_names=["images"],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
        )
    return path


def plain_paths(model: nn.Module, folder: Path) -> list[ExecutionPath]:
    """The baselines: ONNX Runtime (default settings) and OpenVINO on the plain export."""
    exported: dict[str, Path] = {}

    def onnx_file(workspace: Any) -> Path:
        if "file" not in exported:
            exported["file"] = plain_export(model, workspace.input_size, folder / "plain.onnx")
        return exported["file"]

    def ort(workspace: Any) -> Any:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()  # the same cores as every path
        session = onnxruntime.InferenceSession(
            str(onnx_file(workspace)), sess_options=options, providers=["CPUExecutionProvider"]
        )

        def bind(images: torch.Tensor) -> Any:
            feed = {"images": images.numpy()}
            return lambda: session.run(None, feed)[0]

        return bind

    def openvino(workspace: Any) -> Any:
        from sepconv.deploy.openvino_runtime import import_openvino, signal_stack_kept

        ov = import_openvino()
        core = ov.Core()
        config = {"INFERENCE_NUM_THREADS": torch.get_num_threads(), "PERFORMANCE_HINT": "LATENCY"}

        def bind(images: torch.Tensor) -> Any:
            graph = core.read_model(str(onnx_file(workspace)))
            graph.reshape({0: list(images.shape)})
            with signal_stack_kept():  # see its docstring: OpenVINO's CPU plugin and the signal stack
                request = core.compile_model(graph, "CPU", config).create_infer_request()
            array = images.numpy()

            def run() -> Any:
                request.infer({0: array})
                return request.get_output_tensor(0).data

            return run

        return bind

    return [
        ExecutionPath("plain_ort", "ONNX Runtime, default settings, on torch.onnx.export of the model", ort),
        ExecutionPath(
            "plain_openvino", "OpenVINO, latency hint, static shape, on the plain export", openvino
        ),
    ]


def copy_path() -> ExecutionPath:
    """A 256 MB tensor copy, timed in the same rounds: the memory bandwidth of this machine, now."""

    def prepare(workspace: Any) -> Any:
        source = torch.ones(COPY_ELEMENTS)
        target = torch.empty_like(source)

        def bind(images: torch.Tensor) -> Any:
            def copy() -> torch.Tensor:
                target.copy_(source)
                return torch.zeros(images.shape[0], 10)  # an output of the eager model's shape

            return copy

        return bind

    return ExecutionPath("copy", "a 256 MB tensor copy (the memory bandwidth)", prepare)


def by_path(results: list[PathResult], batch_size: int) -> dict[str, PathResult]:
    return {result.path: result for result in results if result.batch_size == batch_size}


def print_report(title: str, report: BenchReport) -> None:
    print(f"\n## {title}\n")
    print(report.format_table())


def mobilenet_v2(seconds: float) -> None:
    import torchvision

    model = torchvision.models.mobilenet_v2().eval()
    with tempfile.TemporaryDirectory() as folder:
        report = benchmark_paths(
            model,
            input_size=(3, 224, 224),
            batch_sizes=(1, 16),
            min_run_seconds=seconds,
            extra_paths=plain_paths(model, Path(folder)),
        )
    print_report("torchvision mobilenet_v2, 3x224x224", report)
    print(
        "\n| batch | sepconv's best deployed path | best of all measured | best / ours | ORT fp32 (ours) | "
        "ORT fp32 / ours | plain ORT (defaults) | plain OpenVINO |"
    )
    print("|---:|---|---|---:|---:|---:|---:|---:|")
    for batch in (1, 16):
        table = by_path(report.results, batch)
        ours = {name: result for name, result in table.items() if name not in BASELINES}
        best_ours = min(ours.values(), key=lambda result: result.median_ms)
        best_all = min(table.values(), key=lambda result: result.median_ms)
        ort = table.get("onnx_fp32")
        print(
            f"| {batch} | {best_ours.path} {best_ours.median_ms:.2f} ms | {best_all.path} {best_all.median_ms:.2f} ms "
            f"| {best_all.median_ms / best_ours.median_ms:.2f} | {ort.median_ms if ort else float('nan'):.2f} ms "
            f"| {(ort.median_ms / best_ours.median_ms) if ort else float('nan'):.2f}x "
            f"| {_ms(table, 'plain_ort')} | {_ms(table, 'plain_openvino')} |"
        )


def _ms(table: dict[str, PathResult], name: str) -> str:
    return f"{table[name].median_ms:.2f} ms" if name in table else "skipped"


def int8_accuracy(model_file: str | None) -> None:
    from sepconv import load_model
    from sepconv.data import load_dataset
    from sepconv.deploy.openvino_export import export_openvino

    data = load_dataset("mnist5k", seed=0)
    with tempfile.TemporaryDirectory() as folder:
        if model_file is None:
            from sepconv.demo import DEMO_BATCH_SIZE, DEMO_EPOCHS, DEMO_LR, demo_config
            from sepconv.train.trainer import fit

            started = time.perf_counter()
            config = demo_config(
                "separable_cnn",
                Path(folder),
                dataset="mnist5k",
                epochs=DEMO_EPOCHS,
                batch_size=DEMO_BATCH_SIZE,
                lr=DEMO_LR,
                seed=0,
                progress=False,
            )
            model_file = str(fit(config, data=data).model_path)
            print(f"\ntrained separable_cnn with the demo's recipe in {time.perf_counter() - started:.0f} s")
        model = load_model(model_file)
        loader = torch.utils.data.DataLoader(data.train, batch_size=32)
        calibration = [images for index, (images, _) in zip(range(8), loader)]
        images = torch.stack([data.test[index][0] for index in range(16)])
        metadata = {"mean": data.mean, "std": data.std, "class_names": data.class_names, "dataset": data.name}
        report = export_openvino(
            model,
            Path(folder) / "ir",
            inputs=images,
            metadata=metadata,
            int8_calibration=calibration,
            int8_test=data.test,
        )
    int8 = report.int8
    assert int8 is not None
    print(
        f"\n## int8 through NNCF on the demo's separable_cnn (mnist5k test, {int8['test_samples']} images)\n\n"
        f"OpenVINO fp32 {int8['fp32_accuracy']:.2%}, int8 {int8['int8_accuracy']:.2%}: "
        f"{-int8['accuracy_drop_points']:+.2f} points (target: within 1 point); "
        f"{int8['calibration_images']} calibration images; NNCF {int8['method']}"
    )


def moved_bytes(model: nn.Module, input_shape: tuple[int, ...], bytes_per_element: int) -> int:
    """The bytes a deployed forward pass must move at least: the input read, each convolution's, linear
    layer's and pooling layer's output written once and read once by the next layer (BatchNorm folded,
    activations fused into the layer before), and every weight read once; all at ``bytes_per_element``.

    >>> moved_bytes(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()), (1, 1, 4, 4), 4)  # 16 in, 8 out, 20 weights
    208
    """
    from sepconv.analysis import summarize

    summary = summarize(model, input_shape)
    activations = 0
    for layer in summary.layers:
        if layer.type in _MOVING_LAYERS:
            activations += 2 * _numel(layer.output_shape)
    weights = sum(parameter.numel() for parameter in model.parameters())
    inputs = _numel(input_shape)
    return bytes_per_element * (inputs + activations + weights)


# The layers whose output a deployed graph writes to memory (activations and BatchNorm fuse into them).
_MOVING_LAYERS = (
    "Conv2d",
    "DepthwiseConv2d",
    "PointwiseConv2d",
    "ConvTranspose2d",
    "Linear",
    "MaxPool2d",
    "AvgPool2d",
    "AdaptiveAvgPool2d",
)


def _numel(shape: Any) -> int:
    count = 1
    for size in shape:
        count *= int(size)
    return count


def demo_twins(seconds: float) -> None:
    from sepconv.convert import fold_batchnorm
    from sepconv.models import create_model

    torch.manual_seed(0)
    for name in ("standard_cnn", "separable_cnn"):
        model = create_model(name).eval()
        extra = [copy_path()] if name == "separable_cnn" else []
        report = benchmark_paths(
            model,
            batch_sizes=(1, 64),
            paths=["eager", "channels_last", *DEPLOYED_PATHS],
            min_run_seconds=seconds,
            extra_paths=extra,
        )
        print_report(f"demo twin {name}, 1x28x28 (copy: a 256 MB tensor copy in the same rounds)", report)
        if name != "separable_cnn":
            continue
        table = by_path(report.results, 64)
        copy = table["copy"]
        bandwidth = 2 * 4 * COPY_ELEMENTS / (copy.median_ms / 1000)  # read + written
        folded = fold_batchnorm(model)
        print(
            f"\nseparable twin, batch 64, against its memory bound (copy bandwidth {bandwidth / 1e9:.1f} GB/s "
            "in the same rounds; bytes at each path's precision):\n"
        )
        print("| path | latency | bytes to move | memory bound | latency / bound |")
        print("|---|---:|---:|---:|---:|")
        deployed = {path: table[path] for path in DEPLOYED_PATHS if path in table}
        for path, result in sorted(deployed.items(), key=lambda item: item[1].median_ms):
            needed = moved_bytes(folded, (64, 1, 28, 28), PATH_BYTES.get(path, 4))
            bound_ms = needed / bandwidth * 1000
            print(
                f"| {path} | {result.median_ms:.2f} ms | {needed / 1e6:.1f} MB | {bound_ms:.2f} ms "
                f"| {result.median_ms / bound_ms:.2f} |"
            )
        best = min(deployed.values(), key=lambda result: result.median_ms)
        print(f"\nbest deployed: {best.path} (target: its latency within 2x of its memory bound)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seconds", type=float, default=20.0, help="timed seconds per benchmark (default 20)"
    )
    parser.add_argument("--model-file", help="the demo's separable model (default: train one, a few minutes)")
    parser.add_argument(
        "--sections", default="1,2,3", help="which sections to run, e.g. 1,3 (default all three)"
    )
    args = parser.parse_args(argv)
    from sepconv.machine import cpu_summary

    print(f"{cpu_summary()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    sections = {int(part) for part in args.sections.split(",")}
    if 1 in sections:
        mobilenet_v2(args.seconds)
    if 2 in sections:
        int8_accuracy(args.model_file)
    if 3 in sections:
        demo_twins(args.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
