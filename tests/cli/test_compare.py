"""``sepconv compare A B``: one JSON document or an aligned table; every refusal is one line and exit code 2.

Costs are checked against PyTorch's own counters (parameters, ``FlopCounterMode``); latencies only for
consistency (speedup = A's / B's as reported), never for which model is faster.
"""

from __future__ import annotations

import json

import pytest
import torch
from tests.helpers.cli import run_sepconv
from torch.utils.flop_counter import FlopCounterMode

from sepconv import save_model
from sepconv.convert import fold_batchnorm
from sepconv.data import load_dataset
from sepconv.models import create_model

FAST = ["--repeats", "1"]
# The demo CNNs at a fraction of their width: the same layers, a fraction of the compute.
TINY = {"widths": (4, 8, 8, 16)}


def macs(model: torch.nn.Module, input_size: tuple[int, ...]) -> int:
    """Multiply-adds of one forward pass on one image, by torch.utils.flop_counter (FLOPs = 2 x MACs)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.eval()(torch.zeros(1, *input_size))
    return counter.get_total_flops() // 2


def params(model: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def assert_one_line_error(code: int, out: str, err: str, *, mentions: str) -> None:
    assert code == 2, err
    assert out == ""
    assert err.startswith("sepconv compare: error: ") and err.endswith("\n")
    assert err.count("\n") == 1, err
    assert mentions in err


def test_json_is_one_document_with_costs_counted_by_pytorch(capsys):
    code, out, err = run_sepconv(["compare", "standard_cnn", "separable_cnn", "--json", *FAST], capsys)
    assert code == 0, err
    assert err == ""
    document = json.loads(out)  # the whole of stdout is one JSON document
    assert set(document) == {
        "a",
        "b",
        "speedup",
        "speedup_within_noise",
        "mac_ratio",
        "agreement",
        "agreement_reason",
        "input_size",
        "batch_size",
        "repeats",
        "threads",
        "engine",
    }
    assert document["engine"] is None  # no --engine: PyTorch latencies only
    for side, name in (("a", "standard_cnn"), ("b", "separable_cnn")):
        entry = document[side]
        assert set(entry) == {"name", "params", "macs", "receptive_field", "latency_ms", "latency_spread_ms"}
        model = create_model(name)
        assert entry["name"] == name
        assert entry["params"] == params(model)
        assert entry["macs"] == macs(model, (1, 28, 28))
        assert set(entry["latency_ms"]) == {"forward", "forward_backward"}
    # Both twins: stem + five 3x3 convolutions with two 2x2 max pools between them. By the Distill
    # recurrence r += (k - 1) * j: 3x3 at stride 1 -> 3, 5; pool -> 6 (j=2); 3x3, 3x3 -> 10, 14;
    # pool -> 16 (j=4); 3x3, 3x3 -> 24, 32.
    assert document["a"]["receptive_field"] == document["b"]["receptive_field"] == [32, 32]
    assert document["mac_ratio"] == document["a"]["macs"] / document["b"]["macs"]
    for phase in ("forward", "forward_backward"):
        assert document["speedup"][phase] == (
            document["a"]["latency_ms"][phase] / document["b"]["latency_ms"][phase]
        )
    assert document["agreement"] is None
    assert (
        document["agreement_reason"] == "different architectures: A is standard_cnn(), B is separable_cnn()"
    )
    assert (document["input_size"], document["batch_size"], document["repeats"]) == ([1, 28, 28], 2, 1)
    assert document["threads"] == torch.get_num_threads()


def test_a_model_file_and_its_folded_copy_agree_on_mnist5k(tmp_path, capsys):
    torch.manual_seed(0)
    model = create_model("standard_cnn", **TINY)
    model.train()
    with torch.no_grad():  # move the BatchNorm statistics so that folding them changes the weights
        model(torch.randn(16, 1, 28, 28) * 2 + 1)
    original = save_model(model.eval(), tmp_path / "original.safetensors")
    folded = save_model(fold_batchnorm(model), tmp_path / "folded.safetensors")

    code, out, err = run_sepconv(
        ["compare", str(original), str(folded), "--json", "--samples", "32", *FAST], capsys
    )
    assert code == 0, err
    document = json.loads(out)
    assert document["agreement_reason"] is None
    agreement = document["agreement"]
    assert (agreement["samples"], agreement["inputs"]) == (32, "mnist5k test images")
    assert agreement["top1_agreement"] == 1.0
    # One extra float32 rounding per folded weight through 6 layers: ~1e-6; a wrong fold gives >= 1e-2.
    assert agreement["relative_error"] < 1e-5
    assert document["a"]["params"] == params(model)
    assert document["b"]["params"] == params(fold_batchnorm(model))
    assert document["a"]["macs"] == document["b"]["macs"] == macs(model, (1, 28, 28))


def test_text_table_uses_the_training_runs_data_set(tmp_path, capsys):
    data = load_dataset("synthetic", seed=0)
    torch.manual_seed(1)
    model = create_model("standard_cnn", in_channels=3, num_classes=data.num_classes, **TINY)
    run_folder = tmp_path / "run"
    (run_folder / "checkpoints").mkdir(parents=True)
    (run_folder / "config.json").write_text(json.dumps({"dataset": "synthetic", "seed": 0}))
    model_file = save_model(model, run_folder / "checkpoints" / "last.safetensors")
    folded_file = save_model(fold_batchnorm(model), tmp_path / "folded.safetensors")  # outside the run

    code, out, err = run_sepconv(
        ["compare", str(model_file), str(folded_file), "--samples", "16", *FAST], capsys
    )
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["A:", str(model_file), "B:", str(folded_file), "A", "/", "B"]
    assert set(lines[1]) == {"-", " "}  # the rule under the header
    assert lines[2].split()[0] == "parameters"
    assert lines[3].split()[:3] == ["MACs", "per", "image"]
    assert lines[4].split() == ["receptive", "field", "(px)", "32x32", "32x32"]  # as in the JSON test
    assert lines[5].split()[:2] == ["forward", "ms"]
    assert lines[6].split()[0] == "forward+backward"
    # The synthetic images are 3x32x32: the data set, not the models' registered 28x28, sets the size.
    assert "output agreement on 16 synthetic test images: logits relative error" in out
    assert "top-1 agreement 100.00%" in out
    assert "input 3x32x32, batch 2: latencies are medians of 1 interleaved rounds (A, B, A, B, ...)" in out
    assert "torch threads" in out


def test_input_size_sets_the_image_both_models_run_on(tmp_path, capsys):
    standard = save_model(create_model("standard_cnn", **TINY), tmp_path / "standard.safetensors")
    separable = save_model(create_model("separable_cnn", **TINY), tmp_path / "separable.safetensors")
    code, out, err = run_sepconv(
        [
            "compare",
            str(standard),
            str(separable),
            "--input-size",
            "40",
            "--batch-size",
            "3",
            "--json",
            *FAST,
        ],
        capsys,
    )
    assert code == 0, err
    document = json.loads(out)
    assert (document["input_size"], document["batch_size"]) == ([1, 40, 40], 3)
    assert document["a"]["macs"] == macs(create_model("standard_cnn", **TINY), (1, 40, 40))
    assert document["b"]["macs"] == macs(create_model("separable_cnn", **TINY), (1, 40, 40))


@pytest.mark.parametrize(
    ("arguments", "mentions"),
    [
        (["standard_cnn", "no_such_model"], "unknown model name 'no_such_model'"),
        (["standard_cnn", "missing.safetensors"], "checkpoint file not found: missing.safetensors"),
        (
            ["standard_cnn", "mobilenet_v2"],
            "A (standard_cnn) takes 1x28x28 images and B (mobilenet_v2) takes 3x224x224; give --input-size",
        ),
        (
            ["standard_cnn", "standard_cnn", "--batch-size", "0"],
            "argument --batch-size: must be a positive integer",
        ),
        (
            ["standard_cnn", "standard_cnn", "--repeats", "0"],
            "argument --repeats: must be a positive integer",
        ),
        (
            ["standard_cnn", "standard_cnn", "--repeats", "two"],
            "argument --repeats: must be a positive integer",
        ),
        (
            ["standard_cnn", "standard_cnn", "--input-size", "0,28,28"],
            "argument --input-size: must be C,H,W or N,C,H,W of positive integers",
        ),
    ],
)
def test_refusals_are_one_line_and_exit_code_2(arguments, mentions, capsys):
    code, out, err = run_sepconv(["compare", *arguments, "--json"], capsys)
    assert_one_line_error(code, out, err, mentions=mentions)
