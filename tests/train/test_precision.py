"""The memory format and precision rule: a function of the model, the device and the CPU, never a timing."""

from __future__ import annotations

import pytest
from torch import nn

from sepconv import machine
from sepconv.models import create_model
from sepconv.train.precision import choose_precision, cpu_has_native_bf16


@pytest.mark.parametrize("has_bf16", [True, False])
def test_auto_follows_the_cpu_bf16_units_and_the_presence_of_convolutions(monkeypatch, has_bf16):
    # The rule asks the one CPU probe, sepconv.machine.cpu_features: faking it fakes the CPU.
    monkeypatch.setattr(machine, "cpu_features", lambda: machine.CpuFeatures(avx2=True, avx512_bf16=has_bf16))
    assert cpu_has_native_bf16() is has_bf16
    convolutional = choose_precision(
        create_model("separable_cnn"), on_gpu=False, channels_last="auto", bf16="auto"
    )
    assert (convolutional.channels_last, convolutional.bf16) == (True, has_bf16)
    # separable_cnn: the stem's BN+ReLU, then 5 blocks of two (depthwise and pointwise) = 11 pairs
    assert convolutional.reason == (
        f"channels_last auto: 2-D convolutions; bf16 auto: CPU {'has' if has_bf16 else 'lacks'} native bf16; "
        "fused auto: 11 BatchNorm+activation pairs on the CPU"
    )
    assert convolutional.fused is True
    linear = choose_precision(
        nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), on_gpu=False, channels_last="auto", bf16="off"
    )
    assert (linear.channels_last, linear.bf16) == (False, False)


def test_forced_settings_win_and_repeated_calls_agree():
    model = create_model("standard_cnn")
    forced = choose_precision(model, on_gpu=False, channels_last="off", bf16="on")
    forced = choose_precision(model, on_gpu=False, channels_last="off", bf16="on", fused="off")
    assert (forced.channels_last, forced.bf16, forced.fused, forced.reason) == (
        False,
        True,
        False,
        "channels_last off; bf16 on; fused off",
    )
    choices = {choose_precision(model, on_gpu=False, channels_last="auto", bf16="auto") for _ in range(5)}
    assert len(choices) == 1


def test_fused_auto_is_on_for_cpu_training_with_pairs_and_built_kernels(monkeypatch):
    import sepconv.kernels

    standard = create_model("standard_cnn")  # the stem and 5 blocks: 6 BN+ReLU pairs
    cpu = choose_precision(standard, on_gpu=False, channels_last="auto", bf16="off")
    assert (cpu.fused, cpu.reason.split("; ")[-1]) == (
        True,
        "fused auto: 6 BatchNorm+activation pairs on the CPU",
    )
    gpu = choose_precision(standard, on_gpu=True, channels_last="auto", bf16="off")
    assert (gpu.fused, gpu.reason.split("; ")[-1]) == (False, "fused auto: GPU (the kernels are for the CPU)")
    linear = choose_precision(nn.Linear(3, 2), on_gpu=False, channels_last="auto", bf16="off")
    assert (linear.fused, linear.reason.split("; ")[-1]) == (
        False,
        "fused auto: no BatchNorm+activation pair",
    )
    monkeypatch.setattr(sepconv.kernels, "kernels_available", lambda: False)
    unbuilt = choose_precision(standard, on_gpu=False, channels_last="auto", bf16="off")
    assert (unbuilt.fused, unbuilt.reason.split("; ")[-1]) == (
        False,
        "fused auto: the kernels did not build (see the warning)",
    )
    forced = choose_precision(standard, on_gpu=False, channels_last="auto", bf16="off", fused="on")
    assert (forced.fused, forced.to_dict()["fused"]) == (True, True)
