"""How many processes a run may start, what each costs, and that none outlives its launcher."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tests.helpers.training import launch_environment, reserved_port
from torch import nn

from sepconv import machine
from sepconv.train import TrainConfig, fit
from sepconv.train.processes import (
    RUNTIME_BYTES,
    ProcessLimitError,
    check_process_memory,
    process_memory_estimate,
)


@pytest.mark.slow  # a CLI process: 5 to 15 s
def test_cli_refuses_more_processes_than_cores_in_one_line_before_anything_starts(tmp_path):
    too_many = machine.usable_cpu_count() + 1
    out = tmp_path / "run"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "sepconv",
            "train",
            "--dataset",
            "synthetic",
            "--accelerator",
            "cpu",
            "--devices",
            str(too_many),
            "--batch-size",
            str(8 * too_many),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=launch_environment(),
        timeout=300,
    )
    assert completed.returncode == 2
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1, completed.stderr
    assert lines[0].startswith(f"sepconv train: error: --devices={too_many} is more processes than")
    assert f"{machine.usable_cpu_count()} CPU core(s)" in lines[0]
    assert lines[0].endswith(f"set --devices to at most {machine.usable_cpu_count()}")
    assert not out.exists()  # refused before the folder was claimed


def test_library_names_devices_and_the_core_count(tmp_path):
    too_many = machine.usable_cpu_count() + 1
    config = TrainConfig(
        dataset="synthetic",
        accelerator="cpu",
        devices=too_many,
        batch_size=8 * too_many,
        out_dir=str(tmp_path / "r"),
    )
    with pytest.raises(
        ProcessLimitError, match=rf"^devices={too_many} is more processes .* to at most {too_many - 1}$"
    ):
        fit(config)
    assert not (tmp_path / "r").exists()


def test_memory_estimate_counts_runtime_weights_optimizer_and_one_batch_share_of_activations():
    """Hand-worked: a 1->2 channel 3x3 convolution (18 weights + 2 biases) and a ReLU on a 1x5x5 image."""
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
    parts = process_memory_estimate(model, torch.zeros(1, 5, 5), batch_share=8, weight_copies=4)
    assert parts["runtime"] == RUNTIME_BYTES
    assert parts["weights"] == 20 * 4 * (1 + 1 + 2)  # float32 weights, gradients, AdamW's two moments
    assert parts["activations"] == (2 * 3 * 3) * 2 * 4 * 8  # conv and ReLU outputs, float32, 8 images
    assert parts["total"] == RUNTIME_BYTES + 320 + 1152
    assert model.training  # the estimate's forward pass leaves the mode as it was


def test_memory_check_refuses_processes_beyond_available_memory(monkeypatch):
    parts = {"runtime": RUNTIME_BYTES, "weights": 2**20, "activations": 2**20}
    parts["total"] = sum(parts.values())
    # Room for this process's run plus one more process, not for three more.
    monkeypatch.setattr(machine, "available_memory_bytes", lambda: 2 * parts["total"])
    check_process_memory(2, parts)
    with pytest.raises(ProcessLimitError) as refused:
        check_process_memory(4, parts)
    needed = 4 * parts["total"] - RUNTIME_BYTES
    message = str(refused.value)
    assert message.startswith(
        f"devices=4 needs about {machine.format_bytes(needed)} for 4 training processes"
    )
    assert f"more than the {machine.format_bytes(2 * parts['total'])} of memory available" in message
    assert message.endswith("use a smaller devices")
    # The command line names its flags for both (cli/main.py's user_message; tests/cli/test_main.py).
    assert (refused.value.param, refused.value.mentions) == ("devices", ("devices", "batch_size"))


def test_memory_check_names_the_batch_size_when_the_global_batch_alone_cannot_fit(monkeypatch):
    parts = {"runtime": RUNTIME_BYTES, "weights": 2**20, "activations": 2**30}
    parts["total"] = sum(parts.values())
    monkeypatch.setattr(machine, "available_memory_bytes", lambda: 2**30)
    with pytest.raises(ProcessLimitError) as refused:
        check_process_memory(2, parts)
    assert str(refused.value).endswith(
        "use a smaller devices; the activations of the global batch alone need about 2.0 GiB: "
        "use a smaller batch_size"
    )
    assert (refused.value.param, refused.value.mentions) == ("devices", ("devices", "batch_size"))
    # The command line names both parameters' flags (cli/main.py's one mapping).
    from sepconv.cli.main import build_parser, user_message

    assert user_message(refused.value, build_parser(), "train").endswith(
        "use a smaller --devices; the activations of the global batch alone need about 2.0 GiB: "
        "use a smaller --batch-size"
    )


def _children(parent: int) -> list[int]:
    """The processes whose parent is ``parent`` and that run sepconv (not a compiler, say)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        # The parent pid is the 2nd field after the command name, which is in parentheses.
        if int(status.rsplit(")", 1)[1].split()[1]) == parent and b"sepconv" in command:
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_processes_started_for_a_run_die_with_their_launcher(tmp_path):
    """SIGKILL the launching process of a 2-process run: its child goes too (it used to wait for gloo's
    half-hour timeout). The deadlines only bound a hang; the verdict is whether the child ends."""
    with reserved_port() as port:
        environment = launch_environment(port)
        launcher = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sepconv",
                "train",
                "--dataset",
                "synthetic",
                "--accelerator",
                "cpu",
                "--devices",
                "2",
                "--epochs",
                "50",
                "--bf16",
                "off",
                "--no-tensorboard",
                "--json",
                "--out",
                str(tmp_path / "run"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=environment,
        )
        children: list[int] = []
        try:
            deadline = time.monotonic() + 600  # the launcher may first compile the kernels
            while not children and launcher.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
                children = _children(launcher.pid)
            assert children, f"no child process appeared (launcher exit code {launcher.poll()})"
            launcher.send_signal(signal.SIGKILL)
            launcher.wait()
            deadline = time.monotonic() + 120
            while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert not any(_alive(pid) for pid in children), f"children {children} outlived their launcher"
        finally:
            if launcher.poll() is None:
                launcher.kill()
            for pid in children:
                if _alive(pid):
                    os.kill(pid, signal.SIGKILL)
