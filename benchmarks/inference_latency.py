"""Deployed inference speed: sepconv's execution paths against torchvision eager and a plain ONNX export.

Prints, from one process on one machine:

1. torchvision's mobilenet_v2 at 224x224, batch 1 and 16, every path of ``sepconv bench`` timed
   interleaved, plus ONNX Runtime on torchvision's own plain export (``torch.onnx.export`` of the
   unmodified model, no sepconv folding or metadata) as an extra path in the same rounds; then the
   ratios the targets ask for: sepconv's best path vs torchvision eager NCHW, sepconv's best float32
   path vs ONNX Runtime on the plain export, int8 vs float32 (both ONNX Runtime);
2. the demo twins deployed (ONNX Runtime float32, batch 1 and 64), standard vs separable, interleaved;
3. int8 vs float32 top-1 on the demo's separable model (``--model-file``, or one trained here with the
   demo's recipe) on the mnist5k test split.

    python benchmarks/inference_latency.py [--seconds 20] [--model-file runs/demo/separable_cnn/model.safetensors]

Timings vary with the machine's load: the paths share each round, so their ratios are what to read.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from sepconv.deploy.bench import BenchReport, ExecutionPath, PathResult, benchmark_paths

FP32_PATHS = ("eager", "channels_last", "folded_channels_last", "bf16", "compiled", "onnx_fp32")


def plain_onnx_path(name: str, model: torch.nn.Module, folder: Path) -> ExecutionPath:
    """ONNX Runtime on ``torch.onnx.export`` of ``model`` as it is (what a user gets without sepconv)."""

    def prepare(workspace: Any) -> Any:
        import contextlib
        import io
        import warnings

        from sepconv.deploy import OnnxModel

        path = folder / f"{name}.onnx"
        example = torch.randn(2, *workspace.input_size)
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
        # The session settings of sepconv's own ONNX paths (OnnxModel's), so the comparison is
        # between the two exported files only.
        session = OnnxModel(path, threads=torch.get_num_threads()).session

        def bind(images: torch.Tensor) -> Any:
            feed = {"images": images.numpy()}
            return lambda: torch.from_numpy(session.run(None, feed)[0])

        return bind

    return ExecutionPath(name, "ONNX Runtime on torch.onnx.export of the unmodified model", prepare)


def by_path(results: list[PathResult], batch_size: int) -> dict[str, PathResult]:
    return {result.path: result for result in results if result.batch_size == batch_size}


def print_report(title: str, report: BenchReport) -> None:
    print(f"\n## {title}\n")
    print(report.format_table())


def mobilenet_v2(seconds: float) -> dict[int, dict[str, PathResult]]:
    import torchvision

    model = torchvision.models.mobilenet_v2().eval()
    with tempfile.TemporaryDirectory() as folder:
        report = benchmark_paths(
            model,
            input_size=(3, 224, 224),
            batch_sizes=(1, 16),
            min_run_seconds=seconds,
            extra_paths=[plain_onnx_path("plain_onnx_fp32", model, Path(folder))],
        )
    print_report("torchvision mobilenet_v2, 3x224x224", report)
    tables = {batch: by_path(report.results, batch) for batch in (1, 16)}
    print(
        "\n| batch | best path | best / torchvision eager | best fp32 path | vs plain ONNX export | int8 vs fp32 |"
    )
    print("|---:|---|---:|---|---:|---:|")
    for batch, table in tables.items():
        ours = {name: result for name, result in table.items() if name != "plain_onnx_fp32"}
        best = min(ours.values(), key=lambda result: result.median_ms)
        fp32 = [result for name, result in ours.items() if name in FP32_PATHS]
        best_fp32 = min(fp32, key=lambda result: result.median_ms)
        plain = table["plain_onnx_fp32"]
        int8 = table.get("onnx_int8")
        int8_ratio = f"{table['onnx_fp32'].median_ms / int8.median_ms:.2f}x" if int8 else "skipped"
        print(
            f"| {batch} | {best.path} {best.median_ms:.2f} ms | {table['eager'].median_ms / best.median_ms:.2f}x "
            f"| {best_fp32.path} {best_fp32.median_ms:.2f} ms | {plain.median_ms / best_fp32.median_ms:.2f}x "
            f"| {int8_ratio} |"
        )
    for path, reason in report.skipped:
        print(f"skipped {path}: {reason}")
    return tables


def demo_twins(seconds: float) -> None:
    from sepconv.models import create_model

    separable = create_model("separable_cnn").eval()
    standard = create_model("standard_cnn").eval()
    with tempfile.TemporaryDirectory() as folder:
        report = benchmark_paths(
            separable,
            batch_sizes=(1, 64),
            paths=["eager", "onnx_fp32"],
            min_run_seconds=seconds,
            extra_paths=standard_twin_paths(standard, Path(folder)),
        )
    print_report(
        "demo twins: separable_cnn's paths, and standard_cnn's as extra paths (their max |diff| compares "
        "two different models: ignore it)",
        report,
    )
    print(
        "\n| batch | standard eager | separable eager | ratio | standard ONNX Runtime | separable ONNX Runtime | ratio |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for batch in (1, 64):
        table = by_path(report.results, batch)
        standard_eager, separable_eager = table["standard_eager"].median_ms, table["eager"].median_ms
        standard_onnx, separable_onnx = (
            table["standard_sepconv_onnx_fp32"].median_ms,
            table["onnx_fp32"].median_ms,
        )
        print(
            f"| {batch} | {standard_eager:.3f} ms | {separable_eager:.3f} ms | {standard_eager / separable_eager:.2f}x "
            f"| {standard_onnx:.3f} ms | {separable_onnx:.3f} ms | {standard_onnx / separable_onnx:.2f}x |"
        )


def standard_twin_paths(standard: torch.nn.Module, folder: Path) -> list[ExecutionPath]:
    """The standard twin, eager and exported by sepconv, as paths timed in the separable twin's rounds."""
    from sepconv.deploy import OnnxModel, export_onnx

    def eager(workspace: Any) -> Any:
        return lambda images: lambda: standard(images)

    def deployed(workspace: Any) -> Any:
        session = OnnxModel(export_onnx(standard, folder / "standard_cnn.onnx").path)

        def bind(images: torch.Tensor) -> Any:
            array = images.numpy()  # converted once, outside the timed calls
            return lambda: session(array)

        return bind

    return [
        ExecutionPath("standard_eager", "standard_cnn, eager PyTorch NCHW", eager),
        ExecutionPath(
            "standard_sepconv_onnx_fp32", "standard_cnn exported by sepconv, ONNX Runtime", deployed
        ),
    ]


def int8_accuracy(model_file: str | None) -> None:
    from sepconv import load_model
    from sepconv.data import load_dataset
    from sepconv.deploy import export_onnx, onnx_accuracy, quantize_onnx

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
        fp32 = Path(folder) / "model.onnx"
        int8 = Path(folder) / "model.int8.onnx"
        images = torch.stack([data.test[index][0] for index in range(16)])
        export_onnx(model, fp32, inputs=images)
        loader = torch.utils.data.DataLoader(data.train, batch_size=32)
        quantize_onnx(fp32, int8, (images for index, (images, _) in enumerate(loader) if index < 8))
        fp32_accuracy, int8_accuracy = onnx_accuracy(fp32, data.test), onnx_accuracy(int8, data.test)
        sizes = fp32.stat().st_size, int8.stat().st_size
    print(
        f"\n## int8 on the demo's separable_cnn (mnist5k test, {len(data.test)} images)\n\n"
        f"fp32 {fp32_accuracy:.2%}, int8 {int8_accuracy:.2%}: {100 * (int8_accuracy - fp32_accuracy):+.2f} points; "
        f"file {sizes[0] / 1e3:.0f} kB -> {sizes[1] / 1e3:.0f} kB"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seconds", type=float, default=20.0, help="timed seconds per benchmark (default 20)"
    )
    parser.add_argument(
        "--model-file", help="the demo's separable model (default: train one, about a minute)"
    )
    args = parser.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    mobilenet_v2(args.seconds)
    demo_twins(args.seconds)
    int8_accuracy(args.model_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
