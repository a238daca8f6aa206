"""Small formatted tables for the notebooks: no bare dict, list or repr reaches a reader."""

from __future__ import annotations

import pandas as pd
from pandas.io.formats.style import Styler

MAX_COLUMNS = 8


def _cell(v: object) -> object:
    """A list, tuple or set as one comma-joined string; anything else unchanged."""
    return ", ".join(map(str, v)) if isinstance(v, (list, tuple, set)) else v


def pairs(d: dict, key: str = "", value: str = "value", caption: str | None = None) -> Styler:
    """A dict as a two-column table, one row per key (lists joined with commas)."""
    df = pd.DataFrame({key or "item": list(d), value: [_cell(v) for v in d.values()]})
    st = df.style.hide(axis="index")
    return st.set_caption(caption) if caption else st


def row(d: dict, name: str = "", caption: str | None = None, fmt: str | None = None) -> Styler:
    """A dict as a one-row table (keys as columns), e.g. a count per emotion."""
    if len(d) > MAX_COLUMNS:
        raise ValueError(f"row: d has {len(d)} keys; at most {MAX_COLUMNS} fit as columns, use pairs()")
    df = pd.DataFrame([{k: _cell(v) for k, v in d.items()}], index=[name])
    st = df.style.format(fmt) if fmt else df.style
    return st.set_caption(caption) if caption else st


def narrow(
    df: pd.DataFrame,
    columns: list[str],
    fmt: dict | None = None,
    csv: str | None = None,
    index: bool = False,
    **format_kw,
) -> Styler:
    """At most MAX_COLUMNS of df's columns, with a caption naming the CSV that holds every column."""
    columns = [c for c in columns if c in df.columns]
    if not columns:
        raise ValueError(f"narrow: none of columns {columns} is in the table; it has {list(df.columns)}")
    if len(columns) + bool(index) > MAX_COLUMNS:
        raise ValueError(
            f"narrow: columns has {len(columns) + bool(index)} columns (with the index); "
            f"at most {MAX_COLUMNS} fit in a notebook"
        )
    format_kw.setdefault("na_rep", "–")  # a missing value reads as a dash, not "nan%"
    st = df[columns].style.format({k: v for k, v in (fmt or {}).items() if k in columns}, **format_kw)
    if not index:
        st = st.hide(axis="index")
    if csv:
        st = st.set_caption(f"{len(columns)} columns shown; every column is in <code>{csv}</code>")
    return st


def interval(est: pd.Series, lo: pd.Series, hi: pd.Series, fmt: str = "{:+.2f}") -> pd.Series:
    """An estimate and its interval as one text column: '+1.20 [+0.40, +2.00]'."""
    return pd.Series(
        [f"{fmt.format(e)} [{fmt.format(a)}, {fmt.format(b)}]" for e, a, b in zip(est, lo, hi)], index=est.index
    )


def inline(d: dict) -> str:
    """A dict as one readable line: 'prompt_style chat · few_shot 0 · calibrate True'."""
    return " · ".join(f"{k} {_cell(v)}" for k, v in d.items())
