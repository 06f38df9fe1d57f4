"""Without a C++ compiler (or with ``SEPCONV_KERNELS=off``) the fused blocks train on plain PyTorch.

Each case runs in a fresh interpreter, because the kernel library is loaded (or given up on) once per
process: ``CXX`` points at a compiler that does not exist and ``TORCH_EXTENSIONS_DIR`` at an empty
folder, so no cached build can stand in for the missing compiler.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Trains fused blocks and a plain copy for two SGD steps with every warning recorded ("always",
# so a warning repeated per call would show up as many), then prints what the test checks as JSON.
_TRAIN_TWO_STEPS = """
import copy, json, warnings
import torch
from sepconv.kernels import kernels_available, set_fused
from sepconv.layers import ConvNormAct, DepthwiseSeparableBlock

torch.manual_seed(0)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    # A channels_last 16x16 depthwise stage: where the kernels exist, it runs the fused depthwise +
    # BatchNorm + activation operator.
    fused = torch.nn.Sequential(ConvNormAct(3, 4, 3, act_layer="silu"), DepthwiseSeparableBlock(4, 6))
    plain = copy.deepcopy(fused)
    set_fused(plain, False)
    x = torch.randn(2, 3, 16, 16).contiguous(memory_format=torch.channels_last)
    same = []
    for module in (fused, plain):
        module.train()
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.1) for m in (fused, plain)]
    for step in range(2):
        outputs = []
        for module, optimizer in zip((fused, plain), optimizers):
            optimizer.zero_grad()
            out = module(x)
            out.square().mean().backward()
            optimizer.step()
            outputs.append(out.detach())
        same.append(torch.equal(*outputs))
    fused_state, plain_state = fused.state_dict(), plain.state_dict()
    same.append(all(torch.equal(fused_state[k], plain_state[k]) for k in plain_state))
    available = kernels_available()
print(json.dumps({
    "warnings": [[w.category.__name__, str(w.message)] for w in caught],
    "same": same,
    "kernels_available": available,
}))
"""


def _run_training(tmp_path: Path, **env_changes: str) -> tuple[dict, str]:
    extensions = tmp_path / "torch_extensions"
    extensions.mkdir()
    env = {key: value for key, value in os.environ.items() if key != "SEPCONV_KERNELS"}
    env.update(TORCH_EXTENSIONS_DIR=str(extensions), **env_changes)
    result = subprocess.run(
        [sys.executable, "-c", _TRAIN_TWO_STEPS],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    assert not any(extensions.iterdir()), "nothing may be built when the kernels are unavailable"
    return json.loads(result.stdout.strip().splitlines()[-1]), result.stderr


@pytest.mark.slow  # a fresh interpreter importing torch: 3-6 s
def test_missing_compiler_warns_once_and_trains_on_plain_pytorch(tmp_path):
    report, stderr = _run_training(tmp_path, CXX="/nonexistent/c++")
    kernel_warnings = [
        message for category, message in report["warnings"] if category == "KernelBuildWarning"
    ]
    assert len(kernel_warnings) == 1, report["warnings"]
    assert "no C++ compiler found (/nonexistent/c++)" in kernel_warnings[0]
    assert "plain PyTorch is used instead" in kernel_warnings[0]
    # The fallback runs exactly the plain modules' operators: bit-identical outputs and weights.
    assert report["same"] == [True, True, True]
    assert report["kernels_available"] is False
    assert "compiling" not in stderr


@pytest.mark.slow  # a fresh interpreter importing torch: 3-6 s
def test_kernels_off_is_silent_and_plain(tmp_path):
    report, stderr = _run_training(tmp_path, SEPCONV_KERNELS="off", CXX="/nonexistent/c++")
    assert [category for category, _ in report["warnings"] if category == "KernelBuildWarning"] == []
    assert report["same"] == [True, True, True]
    assert report["kernels_available"] is False
    assert "compiling" not in stderr


def test_missing_sources_warn_and_fall_back_instead_of_crashing(tmp_path, monkeypatch):
    # A wheel built without its package data has no csrc/*.cpp: torch's loader would stop on a bare
    # "At least one source is required" assertion; sepconv names the folder and trains on plain PyTorch.
    from sepconv.kernels import KernelBuildWarning, _build

    empty = tmp_path / "csrc"
    empty.mkdir()
    monkeypatch.setattr(_build, "_CSRC", empty)
    monkeypatch.delenv("SEPCONV_KERNELS", raising=False)
    monkeypatch.setattr(_build, "compiler", lambda: "c++")
    unwrapped = _build.load_kernels.__wrapped__  # the per-process cache would answer from a real build
    with pytest.warns(KernelBuildWarning, match="C\\+\\+ sources are missing from .*csrc"):
        assert unwrapped() is False
