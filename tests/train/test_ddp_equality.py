"""N processes compute what one process computes, with the default model arguments (dropout on).

``separable_cnn`` at its defaults (dropout 0.1) trains 2 steps of a 32-image global batch on 1 process,
on 2 processes (Lightning's launcher), and on 2 "nodes" of one process each (torchrun twice on this
machine), in float32 and under forced bf16 autocast. Same seed, same global batches: the per-step
training loss and accuracy (reduced over the processes), the validation loss and accuracy, and the
final weights must agree to what float rounding allows; before dropout was keyed to the global batch,
the first step's loss was 3e-3 off and two of the 32 images were classified differently (measured).

The runs use the execution settings users get (channels_last and fused kernels "auto"): one process
runs sepconv's fused BatchNorm kernels, N processes the distributed BatchNorm (float64 statistics).
Each run gets a reserved port and a cleared launch environment, as in ``test_ddp.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from tests.helpers.training import DDP_DRIVER, launch_environment, reserved_port

from sepconv import load_model
from sepconv.models import create_model

HANG_GUARD_SECONDS = 600  # only against a hang (a lost process): a run takes well under a minute
STEPS = 2
SETTINGS = {
    "model": "separable_cnn",  # default model arguments: widths (32, 64, 128, 256), dropout 0.1
    "train_size": 32,
    "val_size": 32,
    "epochs": STEPS,  # 32 training images, a global batch of 32: one step per epoch, one row per step
    "batch_size": 32,
    "optimizer": "sgd",  # Adam divides by the gradient's size: rounding-level gradients would get lr-sized steps
    "momentum": 0.0,
    "schedule": "constant",
    "lr": 0.01,
    "accelerator": "cpu",
    "tensorboard": False,
    "progress_bar": False,
}


def _last_json(stdout: str) -> dict:
    return json.loads([line for line in stdout.splitlines() if line.startswith("{")][-1])


def _train(out_dir: Path, *, devices: int, bf16: str, fused: str = "auto") -> dict:
    settings = {**SETTINGS, "out_dir": str(out_dir), "devices": devices, "bf16": bf16, "fused": fused}
    with reserved_port() as port:
        completed = subprocess.run(
            [sys.executable, str(DDP_DRIVER), json.dumps(settings)],
            capture_output=True,
            text=True,
            env=launch_environment(port),
            timeout=HANG_GUARD_SECONDS,
        )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return _last_json(completed.stdout)


def _train_two_nodes(out_dir: Path) -> dict:
    """torchrun on "node" 0 and "node" 1 of this machine, one process each, float32."""
    settings = {**SETTINGS, "out_dir": str(out_dir), "devices": 1, "num_nodes": 2, "bf16": "off"}
    with reserved_port() as port:
        environment = launch_environment(port)
        nodes = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "torch.distributed.run",
                    "--nnodes",
                    "2",
                    "--nproc-per-node",
                    "1",
                    "--node-rank",
                    str(rank),
                    "--master-addr",
                    "127.0.0.1",
                    "--master-port",
                    str(port),
                    str(DDP_DRIVER),
                    json.dumps(settings),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=environment,
            )
            for rank in (0, 1)
        ]
        try:
            outputs = [node.communicate(timeout=HANG_GUARD_SECONDS) for node in nodes]
        finally:
            for node in nodes:
                if node.poll() is None:
                    node.kill()
    for node, (_, stderr) in zip(nodes, outputs, strict=True):
        assert node.returncode == 0, stderr[-3000:]
    return _last_json(outputs[0][0])


def _initial_weights() -> dict[str, torch.Tensor]:
    """The weights every run starts from: fit seeds with the run's seed (0) and builds the model."""
    pl.seed_everything(0, workers=True, verbose=False)
    return create_model("separable_cnn", num_classes=6, in_channels=3).state_dict()


def _assert_same_run(
    got: dict,
    folder: Path,
    expected: dict,
    expected_folder: Path,
    *,
    bf16: bool,
    noise: dict[str, float] | None = None,
) -> None:
    """Per-step metrics and final weights of two runs agree to the rounding of their dtype.

    float32: the runs differ in the order of float32 sums (gradients averaged over processes, fused
    kernels against float64 BatchNorm statistics): ~1e-7 relative per operation, and the losses
    agree to 1e-5 relative (measured: 1e-7). Weights moved by the 2 steps agree to 10% of how far they
    moved: the gradients of the stem convolution and of BatchNorm parameters are sums over 32 images x
    32 x 32 pixels that cancel almost to zero (plain backgrounds, normalised activations), so float32
    rounding is a few percent of them (measured: 2.4% here, 4.5% between fused and plain kernels in
    one process); a dropout mask drawn per process moved the classifier's weights by 67%.

    bf16: every convolution rounds its output to 8 significant bits (2**-8 relative). The loss is a
    smooth function of the logits: it agrees to 2**-8 relative (measured: 3e-4). The cancelling
    gradient sums above then carry up to half their size in rounding (measured: 0.39); an argmax can
    flip where two logits are within a bf16 step: one image of 32 (before the fix: two).
    The 1e-6 floor is a few float32 steps of a weight near 1, for weights that barely moved.

    ``noise`` (bf16): per weight, how far bf16 rounding alone took it in one process (its distance from
    the float32 run). Where a weight's true gradient cancels to ~0 (BatchNorm weights here: the float32
    run moves them by 1e-7) that noise is all it moves, and two bf16 runs with sums in different orders
    each carry their own: they may differ by twice it.
    """
    loss_tolerance = 2**-8 if bf16 else 1e-5
    images = SETTINGS["batch_size"]
    accuracy_tolerance = (1 if bf16 else 0) / images + 1e-12
    assert [row["step"] for row in got["history"]] == list(range(1, STEPS + 1))
    assert [row["step"] for row in expected["history"]] == list(range(1, STEPS + 1))
    for row, reference in zip(got["history"], expected["history"], strict=True):
        for key in ("train_loss", "val_loss"):
            assert row[key] == pytest.approx(reference[key], rel=loss_tolerance), (key, row["step"])
        for key in ("train_accuracy", "val_accuracy"):
            assert row[key] == pytest.approx(reference[key], abs=accuracy_tolerance), (key, row["step"])
    initial = _initial_weights()
    weights = load_model(folder / "model.safetensors").state_dict()
    reference_weights = load_model(expected_folder / "model.safetensors").state_dict()
    assert weights.keys() == reference_weights.keys() == initial.keys()
    share = 0.5 if bf16 else 0.1
    for key, reference in reference_weights.items():
        if not reference.is_floating_point():
            assert torch.equal(weights[key], reference), key  # num_batches_tracked: one per step
            continue
        moved = (reference - initial[key]).abs().max().item()
        difference = (weights[key] - reference).abs().max().item()
        allowed = share * moved + 2 * (noise or {}).get(key, 0.0) + 1e-6
        assert difference <= allowed, f"{key}: {difference:.3g} apart, moved {moved:.3g}"


# Its tests run on one worker (pytest-xdist's --dist loadgroup), so the module fixture
# `one_process_fp32` is computed once per run, not once on each worker.
pytestmark = pytest.mark.xdist_group("train-ddp_equality")


@pytest.fixture(scope="module")
def one_process_fp32(tmp_path_factory) -> tuple[dict, Path]:
    folder = tmp_path_factory.mktemp("ddp_equality") / "one_fp32"
    return _train(folder, devices=1, bf16="off"), folder


@pytest.mark.slow
def test_two_processes_compute_what_one_computes_in_float32(one_process_fp32, tmp_path):
    expected, expected_folder = one_process_fp32
    got = _train(tmp_path / "two", devices=2, bf16="off")
    assert got["bf16"] is False and expected["bf16"] is False
    _assert_same_run(got, tmp_path / "two", expected, expected_folder, bf16=False)


@pytest.mark.slow
def test_two_processes_compute_what_one_computes_under_bf16(one_process_fp32, tmp_path):
    """Forced bf16 autocast: where DistributedBatchNorm crashed (a bf16 running-statistics update).

    N processes run the distributed BatchNorm and bf16 convolutions, so they are compared with one
    process on the same kernels (fused off). One process with the fused kernels on runs the fused
    depthwise operator (float32 sums and weights, bf16 storage), whose rounding differs from both plain
    bf16 paths (on the stem's BatchNorm weight, whose gradient cancels to ~0, it ended 8.3e-7 from the
    float32 run against 9.7e-6 and 9.8e-6), so it is held to its distance from the float32 run instead.
    """
    expected = _train(tmp_path / "one", devices=1, bf16="on", fused="off")
    got = _train(tmp_path / "two", devices=2, bf16="on")
    assert got["bf16"] is True and expected["bf16"] is True
    exact = load_model(one_process_fp32[1] / "model.safetensors").state_dict()
    plain_weights = load_model(tmp_path / "one" / "model.safetensors").state_dict()
    noise = {
        key: (plain_weights[key] - value).abs().max().item()
        for key, value in exact.items()
        if value.is_floating_point()
    }
    _assert_same_run(got, tmp_path / "two", expected, tmp_path / "one", bf16=True, noise=noise)

    fused = _train(tmp_path / "fused", devices=1, bf16="on")
    assert fused["bf16"] is True
    initial = _initial_weights()
    fused_weights = load_model(tmp_path / "fused" / "model.safetensors").state_dict()
    trained = [key for key, value in exact.items() if value.is_floating_point() and "running" not in key]

    def distance(weights: dict[str, torch.Tensor]) -> float:
        return sum(float((weights[key] - exact[key]).square().sum()) for key in trained) ** 0.5

    # Euclidean distances over the trained parameters: each bf16 run ends away from the float32 run by
    # its rounding, of one size; 1.5x covers the spread between two such roundings (as in
    # tests/train/test_fused_training.py), a tenth of the float32 run's move the rest.
    moved, fused_distance, plain_distance = (
        distance(initial),
        distance(fused_weights),
        distance(plain_weights),
    )
    assert fused_distance <= 1.5 * plain_distance + 0.1 * moved, (fused_distance, plain_distance, moved)


@pytest.mark.slow
def test_two_torchrun_nodes_compute_what_one_process_computes(one_process_fp32, tmp_path):
    """Multi-node as the README documents it: torchrun on each node (here twice on localhost)."""
    expected, expected_folder = one_process_fp32
    got = _train_two_nodes(tmp_path / "nodes")
    _assert_same_run(got, tmp_path / "nodes", expected, expected_folder, bf16=False)
