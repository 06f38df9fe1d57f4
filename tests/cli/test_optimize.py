"""``sepconv optimize``: every bad input is one line and exit code 2, before anything is written."""

from __future__ import annotations

import json
import re

import pytest
import torch
from tests.helpers.cli import run_sepconv
from tests.helpers.optimize_run import install_mac_clock

from sepconv import save_model
from sepconv.convert import to_separable
from sepconv.models import create_model
from sepconv.optimize.report import format_text


@pytest.fixture
def model_file(tmp_path):
    torch.manual_seed(0)
    return save_model(create_model("standard_cnn", widths=[4, 8, 8, 16]), tmp_path / "small.safetensors")


def _refused(args: list[str], capsys: pytest.CaptureFixture[str], out) -> str:
    """The one line of a refusal, after checking the exit code, stdout and that --out was left alone."""
    code, stdout, stderr = run_sepconv(args, capsys)
    assert code == 2, stderr
    assert stdout == ""
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert not out.exists()
    return stderr.strip()


@pytest.mark.parametrize(
    ("budget", "expected"),
    [
        (["--speedup", "1"], "argument --speedup: must be a finite number > 1, got '1'"),
        (["--speedup", "0.5"], "argument --speedup: must be a finite number > 1, got '0.5'"),
        (["--speedup", "nan"], "argument --speedup: must be a finite number > 1, got 'nan'"),
        (["--latency-ms", "0"], "argument --latency-ms: must be a finite number > 0, got '0'"),
        (
            ["--speedup", "2", "--latency-ms", "3"],
            "argument --latency-ms: not allowed with argument --speedup",
        ),
        (
            [],
            "give a budget: --speedup (times faster than the original) or --latency-ms, and/or --max-accuracy-drop",
        ),
        (["--speedup", "2", "--max-accuracy-drop", "-1"], "argument --max-accuracy-drop: must be"),
    ],
)
def test_a_budget_that_is_no_budget_is_refused_by_the_parser(tmp_path, capsys, model_file, budget, expected):
    out = tmp_path / "out"
    line = _refused(["optimize", str(model_file), *budget, "--out", str(out)], capsys, out)
    assert expected in line


def test_an_unknown_engine_is_named_with_the_known_ones(tmp_path, capsys, model_file):
    out = tmp_path / "out"
    line = _refused(
        ["optimize", str(model_file), "--speedup", "2", "--engine", "tensorrt", "--out", str(out)],
        capsys,
        out,
    )
    assert line.startswith("sepconv optimize: error:")
    assert "--engine" in line and "tensorrt" in line
    for known in ("ort", "ort-int8", "torch"):
        assert known in line


def test_a_model_without_a_convertible_layer_is_refused(tmp_path, capsys):
    torch.manual_seed(0)
    # every convolution already separable, and the classifier too small to split: no site at all
    separable, _ = to_separable(create_model("standard_cnn", widths=[4, 8, 8, 16]), depth_multiplier=1)
    path = save_model(separable, tmp_path / "separable.safetensors")
    out = tmp_path / "out"
    line = _refused(["optimize", str(path), "--speedup", "2", "--out", str(out)], capsys, out)
    assert line.startswith(f"sepconv optimize: error: MODEL: {path} has no convolution or linear layer")
    assert line.endswith(
        "(features.0.0.depthwise: already depthwise; features.0.0.pointwise: already pointwise; "
        "features.1.0.depthwise: already depthwise; and 10 more)"
    )


def test_data_that_does_not_fit_the_model_is_refused_before_measuring(tmp_path, capsys, model_file):
    out = tmp_path / "out"
    line = _refused(
        ["optimize", str(model_file), "--dataset", "synthetic", "--speedup", "2", "--out", str(out)],
        capsys,
        out,
    )
    assert "does not accept the images of data set 'synthetic'" in line
    assert "3 channel(s), 32x32" in line


@pytest.fixture
def mac_clock(tmp_path, monkeypatch):
    """Measuring on the MAC clock (tests/helpers/optimize_run.py), the tables in a folder of the test's."""
    monkeypatch.setenv("SEPCONV_CACHE_DIR", str(tmp_path / "cache"))
    install_mac_clock(monkeypatch)


def test_an_impossible_budget_is_one_line_naming_the_best_speedup_and_nothing_is_written(
    tmp_path, capsys, mac_clock, model_file
):
    out = tmp_path / "out"
    line = _refused(["optimize", str(model_file), "--speedup", "500", "--out", str(out)], capsys, out)
    assert line.startswith(
        "sepconv optimize: error: --speedup 500 is out of reach on this engine: the fastest plan"
    )
    # the closest plan was measured end to end before the budget was called out of reach
    assert re.search(
        r"predicted at [\d.]+ ms, [\d.]+x the original's [\d.]+ ms, losing [\d.]+ relative output error; "
        r"measured, that plan ran [\d.]+ ms, [\d.]+x the original's [\d.]+ ms$",
        line,
    )


def test_an_accuracy_budget_without_data_is_refused(tmp_path, capsys, model_file):
    out = tmp_path / "out"
    line = _refused(
        ["optimize", str(model_file), "--speedup", "2", "--max-accuracy-drop", "1", "--out", str(out)],
        capsys,
        out,
    )
    assert line.startswith("sepconv optimize: error: --max-accuracy-drop needs a data set")
    assert "name a data set" in line


def test_the_json_document_is_the_plan_file_and_the_text_report_names_the_plan(
    tmp_path, capsys, mac_clock, model_file
):
    out = tmp_path / "out"
    code, stdout, stderr = run_sepconv(
        ["optimize", str(model_file), "--speedup", "1.5", "--out", str(out), "--json"], capsys
    )
    assert code == 0, stderr
    document = json.loads(stdout)
    assert document == json.loads((out / "plan.json").read_text())
    assert document["budget"]["speedup"] == 1.5 and document["engine"]["name"] == "ort"
    code, stdout, stderr = run_sepconv(
        [
            "optimize",
            str(model_file),
            "--speedup",
            "1.5",
            "--out",
            str(out),
            "--overwrite",
            "--html",
            str(tmp_path / "page.html"),
        ],
        capsys,
    )
    assert code == 0, stderr
    assert format_text(json.loads((out / "plan.json").read_text())) in stdout
    assert (tmp_path / "page.html").is_file() and not (out / "report.html").exists()


def test_ctrl_c_says_the_tables_keep_what_was_measured(tmp_path, capsys, monkeypatch, model_file):
    import sepconv.optimize.run as run

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(run, "optimize_model", interrupted)
    code, stdout, stderr = run_sepconv(
        ["optimize", str(model_file), "--speedup", "2", "--out", str(tmp_path / "out")], capsys
    )
    assert code == 130 and stdout == ""
    assert stderr.strip() == (
        "sepconv optimize: interrupted: the cost and sensitivity tables keep every layer measured so far; "
        "the same command resumes from them"
    )
