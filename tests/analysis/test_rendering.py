"""Renderings: human numbers in tables, exact integers in JSON and CSV, units stated."""

import json

from torch import nn

from sepconv.analysis import human_bytes, human_count, summarize


def small_summary():
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(16, 10))  # fmt: skip
    return summarize(model, (1, 3, 32, 32))


def test_human_numbers():
    assert [human_count(n) for n in (0, 999, 1_000, 3_504_872, 300_774_272, 4_089_184_256)] == [
        "0", "999", "1.00K", "3.50M", "300.8M", "4.09G",
    ]  # fmt: skip
    # One byte format for every report (sepconv.formatting.format_bytes): one decimal, binary units.
    assert [human_bytes(n) for n in (512, 2048, 5 * 1024**2)] == ["512 B", "2.0 KiB", "5.0 MiB"]


def test_json_is_exact_and_states_units():
    summary = small_summary()
    document = json.loads(json.dumps(summary.to_dict()))
    assert document["total_macs"] == 16 * 32 * 32 * 27 + 160 == summary.total_macs
    assert document["total_flops"] == 2 * document["total_macs"]
    assert "multiply" in document["units"]["macs"]
    conv = document["layers"][0]
    assert conv["output_shape"] == [1, 16, 32, 32] and conv["output_bytes"] == 16 * 32 * 32 * 4
    assert conv["receptive_field"] == [3, 3] and conv["effective_padding"] == [1, 1]
    assert document["layers"][-1]["sees_whole_input"] is True


def test_text_markdown_csv_show_the_same_rows():
    summary = small_summary()
    text = str(summary)
    assert "442.5K" in text  # 442,528 MACs
    assert "MACs: 442,528" in text and "FLOPs = 2 x MACs" in text
    markdown = summary.to_markdown()
    assert markdown.count("\n| `") == len(summary.layers)
    lines = summary.to_csv().splitlines()
    assert len(lines) == 1 + len(summary.layers)
    assert lines[1].split(",")[:8] == ["0", "0", "Conv2d", "1x3x32x32", "1x16x32x32", "448", "448", "442368"]


def test_rich_rendering():
    from rich.console import Console

    console = Console(record=True, width=200)
    console.print(small_summary())
    assert "whole input" in console.export_text()
