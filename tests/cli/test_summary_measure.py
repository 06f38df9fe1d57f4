"""``sepconv summary --measure ENGINE``: measured ms per layer beside bytes moved and arithmetic intensity,
in every output format, cached in the cost table; the measuring flags' errors are one line, exit 2.
A tiny timing plan: nothing timed decides a result."""

from __future__ import annotations

import csv
import io
import json

import pytest
from tests.helpers.cli import run_sepconv

from sepconv.deploy.defaults import ENGINE_NAMES
from sepconv.deploy.engines import ENGINES
from sepconv.optimize import costs
from sepconv.timing import TimingPlan

TINY = TimingPlan(warmup_calls=0, min_rounds=1, min_run_seconds=0, calls_per_block=1, settle_seconds=0)


@pytest.fixture(autouse=True)
def _tiny_timing(monkeypatch):
    monkeypatch.setattr(costs, "LAYER_TIMING", TINY)


def _measure(capsys, tmp_path, *extra: str):  # type: ignore[no-untyped-def]
    table = str(tmp_path / "costs.json")
    return run_sepconv(
        ["summary", "standard_cnn", "--measure", "torch", "--cost-table", table, *extra], capsys
    )


def test_the_flag_lists_the_registered_engines() -> None:
    assert tuple(ENGINES) == ENGINE_NAMES


def test_json_has_each_layers_time_bytes_and_intensity_and_a_second_run_reads_the_table(
    capsys, tmp_path
) -> None:
    code, out, err = _measure(capsys, tmp_path, "--json", "--threads", "1")
    assert code == 0, err
    document = json.loads(out)
    measurement = document["measurement"]
    assert measurement["engine"]["name"] == "torch" and measurement["engine"]["precision"] == "fp32"
    assert measurement["batch_size"] == 1 and measurement["threads"] == 1
    layers = {layer["name"]: layer for layer in document["layers"]}
    stem = layers["features.0.0"]["measured"]
    # 1x1x28x28 in, 1x32x28x28 out, 32*1*3*3 weights (no bias), 4 bytes each
    assert stem["bytes"] == 4 * (784 + 32 * 784 + 288)
    assert stem["intensity"] == pytest.approx(layers["features.0.0"]["macs"] / stem["bytes"])
    assert stem["ms"] >= 0 and stem["cached"] is False and stem["reason"] is None
    assert all(layer["measured"]["ms"] is not None for layer in document["layers"])

    code, out, _ = _measure(capsys, tmp_path, "--json", "--threads", "1")
    assert code == 0
    again = json.loads(out)
    assert all(layer["measured"]["cached"] for layer in again["layers"])
    assert [layer["measured"]["ms"] for layer in again["layers"]] == [
        layer["measured"]["ms"] for layer in document["layers"]
    ]


def test_table_markdown_and_csv_show_the_measured_columns(capsys, tmp_path) -> None:
    code, out, err = _measure(capsys, tmp_path)
    assert code == 0, err
    header = next(line for line in out.splitlines() if line.startswith("Layer"))
    assert header.split()[-3:] == ["ms", "Bytes", "MACs/B"]
    assert "Measured: PyTorch eager, channels_last, float32" in out and "each layer run alone" in out
    code, out, _ = _measure(capsys, tmp_path, "--markdown")
    assert code == 0 and "| Start | ms | Bytes | MACs/B |" in out and "- Measured: PyTorch eager" in out
    code, out, _ = _measure(capsys, tmp_path, "--csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    stem = next(row for row in rows if row["name"] == "features.0.0")
    assert int(stem["bytes_moved"]) == 4 * (784 + 32 * 784 + 288) and float(stem["measured_ms"]) >= 0


def test_batch_size_sets_the_batch_every_layer_is_timed_on(capsys, tmp_path) -> None:
    code, out, err = _measure(capsys, tmp_path, "--json", "--batch-size", "3")
    assert code == 0, err
    document = json.loads(out)
    assert document["measurement"]["batch_size"] == 3 and document["input_shapes"] == [[3, 1, 28, 28]]
    stem = next(layer for layer in document["layers"] if layer["name"] == "features.0.0")
    assert stem["measured"]["bytes"] == 4 * (3 * 784 + 3 * 32 * 784 + 288)


def test_onnx_runtime_times_each_layer_alone(capsys, tmp_path) -> None:
    table = str(tmp_path / "costs.json")
    args = ["summary", "standard_cnn", "--measure", "ort", "--cost-table", table, "--threads", "1", "--json"]
    code, out, err = run_sepconv(args, capsys)
    assert code == 0, err
    document = json.loads(out)
    assert document["measurement"]["engine"]["name"] == "ort"
    assert all(layer["measured"]["ms"] is not None for layer in document["layers"])


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--threads", "2"], "--threads set how layers are timed: give --measure ENGINE too"),
        (
            ["--batch-size", "2", "--cost-table", "x.json"],
            "--batch-size, --cost-table set how layers are timed",
        ),
        (["--measure", "onnx"], "invalid choice: 'onnx'"),
        (["--measure", "torch", "--threads", "0"], "--threads"),
        (["--measure", "torch", "--input-size", "2,1,28,28", "--batch-size", "4"], "give the batch once"),
        (["--measure", "torch", "--cost-table", "/dev/null"], "--cost-table must end in .json"),
    ],
)
def test_measuring_flags_refused_in_one_line(extra, message, capsys) -> None:
    code, out, err = run_sepconv(["summary", "standard_cnn", *extra], capsys)
    assert code == 2 and out == ""
    assert message in err and len(err.strip().splitlines()) == 1


def test_the_html_page_shows_the_measured_columns(capsys, tmp_path) -> None:
    page = tmp_path / "summary.html"
    code, _, err = _measure(capsys, tmp_path, "--html", str(page))
    assert code == 0, err
    html = page.read_text()
    assert "<th" in html and "MACs per byte" in html and "bytes moved" in html
    assert "each layer run alone in PyTorch eager, channels_last, float32" in html


def test_a_corrupt_cost_table_is_named_in_one_warning_line_and_measured_again(capsys, tmp_path) -> None:
    table = tmp_path / "costs.json"
    table.write_text("{not json")
    code, out, err = _measure(capsys, tmp_path, "--json")
    assert code == 0
    assert err.startswith(f"sepconv summary: warning: {table}: it is not valid JSON")
    assert err.count("\n") == 1 and "will be redone" in err
    assert not any(layer["measured"]["cached"] for layer in json.loads(out)["layers"])
    assert json.loads(table.read_text())["format"] == costs.COST_TABLE_FORMAT
