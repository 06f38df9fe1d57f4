"""Hostile sizes refused in one line before the big allocation, measured in a child process.

Each child is told the machine has 8 GiB available (``tests.helpers.memory``), so the refusal does not
depend on this machine; its time is bounded by the subprocess timeout (60 s) and its peak resident
memory must stay far below what the value would have needed.
"""

from __future__ import annotations

import pytest
from tests.helpers.memory import run_with_memory

# Generous: an interpreter with torch, torchvision and a model imported peaks well under this.
MAX_RSS_BYTES = 1.5 * 2**30


def check_refused(args: list[str], flag: str) -> str:
    run = run_with_memory(args)
    lines = run.stderr.strip().splitlines()
    assert run.code == 2, run.stderr
    assert len(lines) == 1, run.stderr
    assert 0 < run.maxrss_bytes < MAX_RSS_BYTES
    assert f"{flag}=" in lines[0] and "more than the 8.0 GiB of memory available" in lines[0]
    return lines[0]


@pytest.mark.slow
def test_bench_batch_sizes():
    line = check_refused(["bench", "separable_cnn", "--batch-sizes", "100000", "--json"], "--batch-sizes")
    assert line.startswith("sepconv bench: error: --batch-sizes=100000 needs about ")
    assert line.endswith("use a smaller --batch-sizes")


@pytest.mark.slow
def test_export_input_size(tmp_path):
    out = tmp_path / "model.onnx"
    line = check_refused(
        ["export", "mobilenet_v2", "--onnx", str(out), "--input-size", "3,5000,5000"], "--input-size"
    )
    assert line.startswith("sepconv export: error: --input-size=3,5000,5000 needs about ")
    assert not out.exists()


@pytest.mark.slow
def test_summary_input_size():
    line = check_refused(["summary", "mobilenet_v2", "--input-size", "3,8000,8000"], "--input-size")
    assert line.startswith("sepconv summary: error: --input-size=3,8000,8000 needs about ")


@pytest.mark.slow
def test_rf_input_size(tmp_path):
    out = tmp_path / "rf.png"
    args = ["rf", "mobilenet_v2", "--layer", "features.3", "--out", str(out), "--input-size", "3,8000,8000"]
    line = check_refused(args, "--input-size")
    assert line.startswith("sepconv rf: error: --input-size=3,8000,8000 needs about ")
    assert not out.exists()


@pytest.mark.slow
def test_compare_batch_size():
    line = check_refused(
        ["compare", "standard_cnn", "separable_cnn", "--batch-size", "100000"], "--batch-size"
    )
    assert line.startswith("sepconv compare: error: --batch-size=100000 needs about ")


@pytest.mark.slow
def test_animate_dilation_with_same_padding(tmp_path):
    out = tmp_path / "conv.gif"
    args = ["animate", "--dilation", "1000", "--padding", "same", "--out", str(out)]
    line = check_refused(args, "--dilation")
    # 25 frames of a 52,498 x 52,250-pixel canvas: the 78.5 GiB allocation this used to attempt.
    assert line.startswith("sepconv animate: error: --dilation=1000 needs about ")
    assert "25 frames of " in line and not out.exists()


@pytest.mark.slow
def test_convert_depth_multiplier(tmp_path):
    out = tmp_path / "converted.safetensors"
    run = run_with_memory(["convert", "standard_cnn", "--out", str(out), "--depth-multiplier", "1000000"])
    lines = run.stderr.strip().splitlines()
    assert run.code == 2 and len(lines) == 1, run.stderr
    assert 0 < run.maxrss_bytes < MAX_RSS_BYTES
    # A rank above every layer's exact one (3x3 kernels: 9) is refused before any layer is built.
    assert lines[0].startswith("sepconv convert: error: --depth-multiplier=1000000 is above the exact rank")
    assert lines[0].endswith("use at most 9") and not out.exists()
