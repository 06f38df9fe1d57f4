"""The sample ``plan.json`` that the optimize command and its report are tested against agrees with itself."""

from __future__ import annotations

import json
from itertools import pairwise

import pytest
from tests.helpers.optimize import FORMAT, SITE_NAMES, is_consistent, sample_document, schema_differences


@pytest.mark.parametrize(
    "options", [{}, {"rounds": 1}, {"dataset": None}, {"rename": {"features.1.0": "<b>x</b>"}}]
)
def test_the_sample_is_json_and_its_repeated_figures_agree(options) -> None:
    document = sample_document(**options)
    assert json.loads(json.dumps(document)) == document
    assert document["format"] == FORMAT and is_consistent(document)
    assert len(document["layers"]) == len(SITE_NAMES) and 10 <= len(document["pareto"]) <= 25
    front = [(plan["predicted_ms"], plan["predicted_loss"]) for plan in document["pareto"]]
    assert all(later[0] < earlier[0] and later[1] >= earlier[1] for earlier, later in pairwise(front))
    latency = document["latency"]
    assert latency["speedup"] >= document["budget"]["speedup"]
    assert document["rounds"][-1]["measured_ms"] <= latency["original_ms"] / document["budget"]["speedup"]
    layers = document["layers"]
    saved = sum(layer["macs_before"] - layer["macs_after"] for layer in layers)
    assert document["macs"]["before"] - document["macs"]["after"] == saved > 0


def test_the_second_round_replans_after_the_first_misses() -> None:
    first, second = sample_document()["rounds"]
    budget_ms = 1.30 / 3
    assert first["measured_ms"] > budget_ms >= second["measured_ms"]
    assert first["relative_error"] == pytest.approx(
        (first["predicted_ms"] - first["measured_ms"]) / first["measured_ms"]
    )
    assert second["latency_model"] != first["latency_model"]
    (only,) = sample_document(rounds=1)["rounds"]
    assert only["measured_ms"] <= budget_ms


def test_without_a_dataset_there_is_no_accuracy_and_the_loss_is_output_error() -> None:
    document = sample_document(dataset=None)
    assert document["accuracy"] is None and document["loss_unit"] == "relative output error"
    assert all(layer["accuracy_drop"] is None for layer in document["layers"])


def test_schema_differences_name_a_missing_or_an_extra_key_and_let_data_keys_pass() -> None:
    for options in ({}, {"rounds": 1}, {"dataset": None}, {"rename": {"features.1.0": "a.b"}}):
        assert schema_differences(sample_document(**options)) == []
    document = sample_document()
    del document["layers"][2]["bytes_after"]
    document["rounds"][0]["extra"] = 1
    document["engine"]["cpu"]["features"]["sse4"] = True  # data, not schema
    assert sorted(schema_differences(document)) == ["+rounds.0.extra", "-layers.2.bytes_after"]
