"""sepconv.formatting: each number format against values worked by hand, and one table in three forms."""

from __future__ import annotations

import pytest

from sepconv.formatting import (
    Table,
    format_bytes,
    format_count,
    format_ms,
    format_percent,
    format_ratio,
    ratio_of,
    short_count,
)


def test_counts_exact_and_short():
    assert [format_count(n) for n in (0, 999, 1_000, 575_594, -72_266)] == [
        "0",
        "999",
        "1,000",
        "575,594",
        "-72,266",
    ]
    # Thresholds at each unit, and one decimal fewer from 100 of the unit on (three figures at least).
    assert [short_count(n) for n in (999, 1_000, 99_994, 100_000, 999_949, 1_000_000, 10**12)] == [
        "999", "1.00K", "99.99K", "100.0K", "999.9K", "1.00M", "1.00T",
    ]  # fmt: skip
    assert short_count(-2_500) == "-2.50K"


def test_ratios_read_the_same_everywhere():
    # 58,031,104 / 7,215,360 = 8.0428...; 7,215,360 / 58,031,104 = 0.12433...
    assert ratio_of(58_031_104, 7_215_360) == "8.04x"
    assert ratio_of(7_215_360, 58_031_104) == "0.12x"
    assert ratio_of(5, 0) == "-"
    # Below 0.1, two significant digits: a small ratio never reads 0.00x.
    assert [format_ratio(v) for v in (0.0123, 0.0996, 0.1, 1.0, 123.456)] == [
        "0.012x", "0.1x", "0.10x", "1.00x", "123.46x",
    ]  # fmt: skip
    assert format_ratio(0.0) == "0.00x"


def test_times_sizes_and_percents():
    assert format_ms(6.87712) == "6.877" and format_ms(95.984, decimals=2) == "95.98"
    assert format_percent(0.983) == "98.30%" and format_percent(None) == "-"
    assert format_percent(0.5, decimals=0) == "50%"
    # 1536 B = 1.5 KiB; 30.7 MiB = 32,160,400 B / 2**20; past TiB the mantissa switches to e-notation.
    assert [format_bytes(n) for n in (0, 1023, 1536, 32_160_400, 3 * 2**30)] == [
        "0 B", "1023 B", "1.5 KiB", "30.7 MiB", "3.0 GiB",
    ]  # fmt: skip
    assert format_bytes(2.0**80) == "1.1e+12 TiB"


def test_machine_and_analysis_keep_their_names_for_the_one_formatter():
    import sepconv.machine
    from sepconv.analysis import human_bytes, human_count
    from sepconv.viz.diagram import format_count as diagram_count

    assert sepconv.machine.format_bytes is format_bytes and human_bytes is format_bytes
    assert human_count is short_count and diagram_count is format_count


TABLE = Table(["layer", "params", "ratio"], [["conv", "1,728", "8.04x"], ["features.10", "64", "0.12x"]])


def test_plain_text_aligns_labels_left_numbers_right_under_a_rule():
    assert TABLE.to_text().splitlines() == [
        "layer        params  ratio",
        "-----------  ------  -----",
        "conv          1,728  8.04x",
        "features.10      64  0.12x",
    ]
    titled = Table(["a", "b"], [["x", ""]], align="ll", title="totals").to_text()
    assert titled.splitlines() == ["totals", "a  b", "-  -", "x"]  # no trailing spaces


def test_markdown_escapes_pipes_and_marks_alignment():
    table = Table(["what", "value"], [["a|b", "3"]], title="T")
    assert table.to_markdown().splitlines() == [
        "**T**",
        "",
        "| what | value |",
        "|:---|---:|",
        "| a\\|b | 3 |",
    ]


def test_rich_table_has_the_same_cells_and_alignment():
    from rich.console import Console

    table = TABLE.to_rich()
    assert [column.header for column in table.columns] == ["layer", "params", "ratio"]
    assert [column.justify for column in table.columns] == ["left", "right", "right"]
    assert [list(column.cells) for column in table.columns][1] == ["1,728", "64"]
    console = Console(record=True, width=80)
    console.print(table)
    assert "features.10" in console.export_text()


def test_rich_cells_are_text_not_markup():
    from rich.console import Console

    hostile = Table(["[b]layer[/b]", "n"], [["[red]conv[/red] \\[x]", "1"]], title="[i]t[/i]")
    console = Console(record=True, width=80)
    console.print(hostile.to_rich())
    shown = console.export_text()
    assert "[red]conv[/red] \\[x]" in shown and "[b]layer[/b]" in shown and "[i]t[/i]" in shown


@pytest.mark.parametrize(
    ("headers", "rows", "align", "message"),
    [
        (["a", "b"], [["1"]], "", "each row must have 2 cells"),
        (["a", "b"], [], "l", "align must be one 'l' or 'r' per column"),
        (["a", "b"], [], "lc", "align must be one 'l' or 'r' per column"),
    ],
)
def test_a_malformed_table_is_refused(headers, rows, align, message):
    with pytest.raises(ValueError, match=message):
        Table(headers, rows, align=align)
