"""``summary`` names ``--input-size`` when the model cannot run at the size it chose."""

from __future__ import annotations

from tests.helpers.cli import run_sepconv


def test_an_input_size_the_model_cannot_take_names_the_flag(capsys):
    code, out, err = run_sepconv(["summary", "standard_cnn", "--input-size", "3,28,28"], capsys)
    assert (code, out) == (2, "")
    assert err.startswith(
        "sepconv summary: error: standard_cnn cannot run at --input-size 3,28,28 (1x3x28x28): "
        "layer 'features.0.0' (Conv2d) failed on input (1, 3, 28, 28): "
    )
    assert err.endswith("1 channels, got shape (1, 3, 28, 28)\n") and err.count("\n") == 1
