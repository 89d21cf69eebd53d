"""The console's SVG charts: labels escaped, figures named for screen readers, gaps left as gaps."""

from __future__ import annotations

from services.console.charts import Series, _nice_max, grouped_bars, stacked_rows


def test_labels_are_escaped_and_figures_described() -> None:
    svg = grouped_bars(
        "k", "<script>alert(1)</script>", ["w1", "w&2"], [Series("planned", [60.0, 30.0]), Series("paid", [45.0, None])]
    )
    assert "<script>" not in svg
    assert "&lt;script&gt;" in svg
    assert "w&amp;2" in svg
    assert 'role="img"' in svg
    assert "w1: planned 60, paid 45; w&amp;2: planned 30, paid none" in svg
    # three bars drawn (the missing figure draws none), plus two legend swatches
    assert svg.count("<rect") == 3 + 2


def test_axis_maximum_is_round_and_never_zero() -> None:
    assert [_nice_max(v) for v in (0, 7, 60, 690, 1001)] == [1.0, 10.0, 100.0, 1000.0, 2000.0]


def test_stacked_rows_split_each_row_by_its_parts() -> None:
    svg = stacked_rows(
        "o", "Outcomes", [("personal_care", [("met", 3), ("not met", 1)]), ("food", [("met", 0), ("not met", 0)])]
    )
    assert "personal_care: met 3, not met 1; food: met 0, not met 0" in svg
    assert svg.count("<rect") == 2 + 2  # two parts of the first row, none of the empty one, two legend swatches
