"""emolib.report.tables: small formatted tables instead of bare dicts, lists and wide frames."""

import pandas as pd
import pytest

from emolib.report import tables


def test_pairs_and_row_join_lists_and_render():
    html = tables.pairs({"kept": 3, "voters": ["a", "b"]}, "step", "count").to_html()
    assert "a, b" in html and "['a'" not in html
    assert "anger" in tables.row({"anger": 1, "fear": 2}, "items").to_html()


def test_row_refuses_too_many_columns():
    with pytest.raises(ValueError, match="at most 8"):
        tables.row({str(i): i for i in range(9)})


def test_narrow_caps_columns_and_names_the_csv():
    df = pd.DataFrame([{f"c{i}": i for i in range(12)}])
    html = tables.narrow(df, ["c0", "c1", "nope"], csv="x.csv").to_html()
    assert "x.csv" in html and "2 columns shown" in html and ">c5<" not in html
    with pytest.raises(ValueError, match="columns has 9"):
        tables.narrow(df, [f"c{i}" for i in range(9)])


def test_interval_and_inline():
    s = tables.interval(pd.Series([1.0]), pd.Series([0.5]), pd.Series([2.0]))
    assert s.iloc[0] == "+1.00 [+0.50, +2.00]"
    assert tables.inline({"few_shot": 0, "calibrate": True}) == "few_shot 0 · calibrate True"
