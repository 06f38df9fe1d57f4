"""``sepconv demo``: the comparison document, the report files, and (slow) the acceptance run on mnist5k."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time

import pytest
import torch
from tests.helpers.browser import LAPTOP, PHONE, launch

from sepconv import load_model
from sepconv.cli.main import main
from sepconv.demo import measure
from sepconv.deploy import OnnxModel
from sepconv.timing import TimingPlan


@pytest.fixture(scope="module")
def browser():
    yield from launch()


def _check_document(document, out_dir):
    from torch.utils.data import DataLoader

    from sepconv.data import load_dataset

    recipe = document["recipe"]
    test_split = load_dataset(recipe["dataset"], seed=recipe["seed"]).test
    assert recipe["test_samples"] == len(test_split)
    for role in ("standard", "separable"):
        figures = document[role]
        for key in ("params", "macs", "test_accuracy", "train_seconds", "latency_ms"):
            assert key in figures, key
        # An accuracy is k/N for a count k of the N test images: the float64 quotient k/N is exact to
        # the last bit, so the k found by rounding must give it back exactly.
        correct = round(figures["test_accuracy"] * len(test_split))
        assert 0 <= correct <= len(test_split)
        assert correct / len(test_split) == figures["test_accuracy"]
        # k recounted from the saved model on the same test images, in the memory format training
        # evaluated with (the same batches of 256). Training may have evaluated on another kernel
        # path, whose float32 logits differ by roundoff, so only images whose top two logits lie
        # within 1e-4 of each other (far above that roundoff) may be counted differently.
        model = load_model(figures["model_path"]).eval()
        recount = near_ties = 0
        with torch.inference_mode():
            for images, labels in DataLoader(test_split, batch_size=256):
                if figures["channels_last"]:
                    images = images.contiguous(memory_format=torch.channels_last)
                logits = model(images)
                recount += int((logits.argmax(dim=1) == labels).sum())
                top = logits.topk(2, dim=1).values
                near_ties += int((top[:, 0] - top[:, 1] < 1e-4).sum())
        assert abs(recount - correct) <= near_ties, role
        assert figures["train_seconds"] > 0 and figures["latency_ms"] > 0
    # Exact counts of fixed architectures (about 8x for 3x3 convolutions: 1/9 + 1/C_out of the cost);
    # 5x is the demo's promised floor, so no noise is involved.
    assert document["standard"]["params"] / document["separable"]["params"] >= 5
    assert document["standard"]["macs"] / document["separable"]["macs"] >= 5
    report = (out_dir / "report.md").read_text()
    assert document["report"] == str(out_dir / "report.md")
    for role in ("standard", "separable"):  # the report shows the very numbers printed
        figures = document[role]
        assert f"{figures['params']:,}" in report
        assert f"{figures['macs']:,}" in report
        assert f"{figures['test_accuracy']:.2%}" in report
        assert f"{figures['latency_ms']:.3f}" in report
        assert f"{figures['train_seconds']:.1f}" in report
        assert f"{figures['deployed_latency_ms']:.3f}" in report
        assert f"{figures['deployed_latency_ms_batch64']:.2f}" in report
        for engine, row in figures["deployed"].items():  # each engine's own row
            assert (
                f"{engine}, batch 1 | {document['standard']['deployed'][engine]['latency_ms']:.3f}" in report
            )
            assert f"{row['latency_ms']:.3f}" in report
    for role, figures in ((role, document[role]) for role in ("standard", "separable")):
        # The deployed file is the trained model: its logits on real test images agree with the
        # PyTorch model's (float32 with folded BatchNorm: 1e-4 absolute on logits of size ~10).
        deployed = OnnxModel(figures["onnx_path"])
        model = load_model(figures["model_path"])
        assert deployed.metadata["spec"]["name"] == figures["model"]
        assert figures["onnx_max_abs_diff"] <= 1e-4
        assert figures["deployed_latency_ms"] > 0 and figures["deployed_latency_ms_batch64"] > 0
        assert document["ratios"]["deployed_latency_ms"] == pytest.approx(
            document["standard"]["deployed_latency_ms"] / document["separable"]["deployed_latency_ms"]
        )
        probe = torch.randn(
            3, *deployed.input_size, generator=torch.Generator().manual_seed(int(role == "standard"))
        )
        with torch.inference_mode():
            torch.testing.assert_close(deployed(probe), model(probe), rtol=0, atol=1e-4)
    assert "](curves.png)" in report and "](comparison.png)" in report
    for name in ("curves.png", "comparison.png"):
        assert (out_dir / name).read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out_dir / "results.json").read_text()) == document
    # report.html: the same numbers, the two plots embedded byte for byte, nothing loaded from outside.
    page = (out_dir / "report.html").read_text(encoding="utf-8")
    for role in ("standard", "separable"):
        figures = document[role]
        assert f"{figures['params']:,}" in page and f"{figures['test_accuracy']:.2%}" in page
    for name in ("curves.png", "comparison.png"):
        encoded = base64.b64encode((out_dir / name).read_bytes()).decode("ascii")
        assert f'src="data:image/png;base64,{encoded}"' in page
    assert "http://" not in page and "https://" not in page


@pytest.mark.slow  # trains four small models: about 2 minutes
@pytest.mark.browser
def test_demo_json_on_small_data_is_reproducible_and_owns_its_folder(tmp_path, capsys, browser, monkeypatch):
    # One-call latencies: every latency is checked for being there and reported, none for its value
    # (the acceptance run below times with the shipped plan); a second or more per twin and runtime saved.
    tiny = TimingPlan(warmup_calls=1, min_rounds=1, min_run_seconds=0.0, calls_per_block=1, settle_seconds=0)
    monkeypatch.setattr(measure, "LATENCY_PLAN", tiny)
    documents = []
    for name in ("first", "again"):
        copy = tmp_path / f"{name}.html"
        arguments = ["--epochs", "1", "--out", str(tmp_path / name), "--html", str(copy), "--json"]
        code = main(["demo", "--dataset", "synthetic", *arguments])
        captured = capsys.readouterr()
        assert code == 0, captured.err
        documents.append(json.loads(captured.out))
        _check_document(documents[-1], tmp_path / name)
        assert copy.read_bytes() == (tmp_path / name / "report.html").read_bytes()
    document, again = documents
    _check_page_in_a_browser(browser, tmp_path / "first.html", document, tmp_path)
    assert document["standard"]["params"] == 575_594 + 2 * 9 * 32 - 4 * 257  # 3 input channels, 6 classes
    # The twins are labelled from what was trained, not from the folder's name.
    assert (document["standard"]["model"], document["separable"]["model"]) == (
        "standard_cnn",
        "separable_cnn",
    )
    for role in ("standard", "separable"):  # same seed, same machine: the same numbers
        assert again[role]["test_accuracy"] == document[role]["test_accuracy"]
        assert again[role]["val_accuracy"] == document[role]["val_accuracy"]
    # An earlier demo's folder is refused, then cleared with --overwrite.
    code = main(
        ["demo", "--dataset", "synthetic", "--epochs", "1", "--out", str(tmp_path / "first"), "--json"]
    )
    captured = capsys.readouterr()
    assert code == 2 and f"already holds demo run {document['run_id']}" in captured.err


def _check_page_in_a_browser(browser, page, document, tmp_path) -> None:
    """The demo's report.html in headless Chromium: both plots decode, the table holds the run's numbers."""
    for viewport in (LAPTOP, PHONE):
        view = browser.open_page(page, tmp_path / f"demo-{viewport['width']}.png", viewport=viewport)
        assert view.outside_requests == [] and view.errors == []
        assert [image["alt"] for image in view.images] == ["training curves", "comparison"]
        assert all(image["complete"] and image["naturalWidth"] > 0 for image in view.images)
        assert all(0 < image["shownWidth"] <= viewport["width"] for image in view.images)
        assert view.page_width <= viewport["width"]
        (table,) = view.tables
        rows = {row[0]: (row[1:], values[1:]) for row, values in zip(table["rows"], table["values"])}
        texts, values = rows["parameters"]
        assert texts[:2] == [f"{document[role]['params']:,}" for role in ("standard", "separable")]
        assert values == [
            document["standard"]["params"],
            document["separable"]["params"],
            pytest.approx(document["standard"]["params"] / document["separable"]["params"], rel=1e-9),
        ]
        texts, values = rows["test accuracy"]
        assert values[:2] == [document[role]["test_accuracy"] for role in ("standard", "separable")]


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [
        ("--epochs", "0", "must be a positive integer, got '0'"),
        ("--batch-size", "-3", "must be a positive integer, got '-3'"),
        ("--lr", "nan", "must be a finite number > 0, got 'nan'"),
        ("--lr", "inf", "must be a finite number > 0, got 'inf'"),
        ("--seed", "4294967296", "must be an integer in [0, 4,294,967,295], got '4294967296'"),
    ],
)
def test_demo_rejects_bad_numbers_naming_the_flag(capsys, flag, value, expected):
    with pytest.raises(SystemExit) as stopped:
        main(["demo", flag, value])
    assert stopped.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and f"argument {flag}: {expected}" in lines[0]


@pytest.mark.slow
def test_demo_acceptance_on_mnist5k(tmp_path):
    """README command 1 as shipped: separable >= 97.5 % test accuracy, >= 5x cheaper than the standard twin."""
    start = time.monotonic()
    completed = subprocess.run(
        [sys.executable, "-m", "sepconv", "demo", "--out", str(tmp_path), "--json"],
        capture_output=True,
        text=True,
        timeout=1200,  # a safety net only: alone it takes ~2.5 min; beside other tests on 2 cores, longer
    )
    wall_seconds = time.monotonic() - start
    assert completed.returncode == 0, completed.stderr[-3000:]
    document = json.loads(completed.stdout)
    _check_document(document, tmp_path)
    # The acceptance target. 1000 test images: one image is 0.1 point; the run is seeded and its
    # precision choice fixed (same numbers on the same machine), and it reached 98.2-98.8% on the
    # machines tried, so the floor sits 7 to 13 images below, not within run-to-run noise.
    assert document["separable"]["test_accuracy"] >= 0.975
    assert document["recipe"]["test_samples"] == 1000
    # The 3-minute target is measured by benchmarks/bench_demo.py and README figures, not asserted here:
    # a timed test on a shared runner measures the runner.
    print(f"demo wall time {wall_seconds:.0f} s: {json.dumps(document['ratios'])}")


# --- checked before the folder is claimed, and given back when nothing trained (issue 20) ----------


def _image_folder(root, per_class: int):
    """Two classes of ``per_class`` 32 x 32 RGB PNGs each (noise): 2 per class leave the test split empty."""
    import numpy as np
    from PIL import Image

    generator = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        for index in range(per_class):
            pixels = generator.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{index}.png")
    return root


def test_an_empty_test_split_is_refused_before_anything_is_claimed_or_trained(tmp_path, capsys):
    from tests.helpers.cli import run_sepconv

    images = _image_folder(tmp_path / "images", per_class=2)
    out = tmp_path / "demo"
    dataset = f"imagefolder:{images}"
    code, stdout, stderr = run_sepconv(["demo", "--dataset", dataset, "--out", str(out), "--json"], capsys)
    assert (code, stdout) == (2, "")
    assert stderr == (
        f"sepconv demo: error: --dataset {dataset!r} cannot be used for the demo: its test split is empty "
        "(4 train, 0 validation images): the demo measures each twin on test images; give it more images "
        "per class\n"
    )
    assert not out.exists()


def test_progress_beside_json_is_refused(tmp_path, capsys):
    from tests.helpers.cli import run_sepconv

    code, stdout, stderr = run_sepconv(["demo", "--progress", "--json", "--out", str(tmp_path / "d")], capsys)
    assert (code, stdout) == (2, "")
    assert stderr == (
        "sepconv demo: error: --progress draws on stdout, where --json prints one JSON document: give one of them\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_an_engine_that_cannot_run_here_is_refused_before_anything_is_claimed(tmp_path, capsys, monkeypatch):
    from tests.helpers.cli import run_sepconv

    monkeypatch.setattr("sepconv.machine.cpu_has_native_bf16", lambda: False)
    out = tmp_path / "d"
    code, stdout, stderr = run_sepconv(
        ["demo", "--engine", "ort", "--engine", "openvino-bf16", "--out", str(out)], capsys
    )
    assert (code, stdout) == (2, "")
    assert stderr == (
        "sepconv demo: error: --engine: openvino-bf16 cannot run here: this CPU has no native bf16 (no "
        "AVX512-BF16 or AMX); OpenVINO would run float32\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_an_out_that_is_a_fifo_is_refused_and_stays_a_fifo(tmp_path, capsys):
    import os
    import stat

    from tests.helpers.cli import run_sepconv

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    code, stdout, stderr = run_sepconv(["demo", "--out", str(fifo), "--json"], capsys)
    assert (code, stdout) == (2, "")
    assert stderr == (
        f"sepconv demo: error: --out {str(fifo)!r} is a FIFO (named pipe), not a folder; give a folder "
        "(new or empty)\n"
    )
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and [path.name for path in tmp_path.iterdir()] == ["pipe"]


def test_a_demo_that_fails_before_training_gives_its_folder_back(tmp_path, monkeypatch):
    import sepconv.train.trainer as trainer
    from sepconv.demo import run_demo

    def trainer_that_cannot_start(*args, **kwargs):
        raise RuntimeError("the trainer could not start")

    monkeypatch.setattr(trainer, "make_trainer", trainer_that_cannot_start)
    out = tmp_path / "runs" / "demo"
    with pytest.raises(RuntimeError, match="could not start"):
        run_demo(out, dataset="synthetic", epochs=1, fused="off")
    # The twin's run gave back runs/demo/standard_cnn, so the demo gave back runs/demo (and runs/).
    assert list(tmp_path.iterdir()) == []
