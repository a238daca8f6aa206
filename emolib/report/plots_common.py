"""What every figure of the experiment book shares: the emotions' fixed order and colours, the layout, title and
empty-panel helpers the stage modules draw with, and the readability check run on each figure before it is saved
(check, save). Conventions of every figure module (plots_data, plots_identify, plots_ablation, plots_steering,
plots_compare): each figure function returns a matplotlib Figure; accuracy changes come in as fractions (-0.12) and
are drawn in percentage points; every figure's suptitle contains the caller's `label` (model and run); emotions keep
a fixed order and colour.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

EMOTION_ORDER: tuple[str, ...] = ("anger", "disgust", "fear", "happiness", "sadness", "surprise")
EMOTION_COLORS: dict[str, str] = {
    "anger": "#d62728",  # red
    "disgust": "#6b8e23",  # olive green
    "fear": "#7b3fa0",  # purple
    "happiness": "#e6b800",  # gold
    "sadness": "#1f5fbf",  # blue
    "surprise": "#ff7f0e",  # orange
}
OTHER_COLOR = "#8c8c8c"
MAX_ANNOTATED_CELLS = 80
PP = "percentage points"


# ---------------------------------------------------------------- helpers


def ordered(names) -> list:
    """Known emotions in canonical order, then any other names in order of first appearance."""
    names = list(dict.fromkeys(names))
    return [e for e in EMOTION_ORDER if e in names] + [n for n in names if n not in EMOTION_ORDER]


def emotion_color(name) -> str:
    """The fixed colour of an emotion (grey for anything else)."""
    return EMOTION_COLORS.get(name, OTHER_COLOR)


def titled(fig: Figure, what: str, label: str) -> Figure:
    """Put a two-line suptitle (what is shown, then the caller's label) on the figure."""
    fig.suptitle(f"{what}\n{label}", fontsize=11)
    return fig


def as_int_if_whole(df: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Return the table and a format string: integers when every value is whole, else one decimal."""
    vals = df.to_numpy(dtype=float)
    finite = vals[np.isfinite(vals)]
    if finite.size == 0 or np.allclose(finite, np.round(finite)):
        return df.fillna(0).round().astype(int), "d"
    return df, ".1f"


def symmetric_limit(values: np.ndarray) -> float:
    """Largest absolute finite value (at least 1), for colour scales centred at 0."""
    finite = np.abs(values[np.isfinite(values)])
    return float(max(finite.max(), 1.0)) if finite.size else 1.0


def pp_labels(df: pd.DataFrame) -> pd.DataFrame:
    """Cell annotations as whole numbers with no "-0" (blank for missing cells)."""

    def fmt(v: float) -> str:
        return "" if not np.isfinite(v) else f"{v:.0f}".replace("-0", "0") if abs(v) < 0.5 else f"{v:.0f}"

    return df.astype(float).map(fmt)


def panel_grid(n: int, ncols: int = 3, w: float = 3.6, h: float = 3.0, **kw) -> tuple[Figure, list]:
    """A constrained-layout figure with n panels on a grid of ncols columns; unused axes removed."""
    ncols = max(1, min(ncols, n))
    nrows = max(1, math.ceil(n / ncols))
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(w * ncols, h * nrows + 0.8), layout="constrained", squeeze=False, **kw
    )
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.remove()
    return fig, flat[:n]


def no_data(ax, text: str = "no data") -> None:
    """Write a centred note on an empty panel."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="grey")


# ---------------------------------------------------------------- saving

MIN_TICK_PT = 8  # the smallest tick label a reader can read


class FigureError(ValueError):
    """A figure a reader could not read (raised by check, naming the figure)."""


def _tick_labels(axis) -> list:
    """The tick labels an axis draws (inside its view, visible, non-empty)."""
    ticks = axis._update_ticks() if hasattr(axis, "_update_ticks") else axis.get_major_ticks()
    return [t for tick in ticks for t in (tick.label1, tick.label2) if t.get_visible() and t.get_text().strip()]


def _overlap(a, b, gap: float = 2.0) -> bool:
    """Two rendered boxes overlap, or come closer than `gap` pixels both ways (labels that run together)."""
    return a.x0 < b.x1 + gap and b.x0 < a.x1 + gap and a.y0 < b.y1 + gap and b.y0 < a.y1 + gap


def _clash(labels: list, renderer, dpi: float) -> tuple[str, str] | None:
    """Two tick labels of one axis that collide: upright or vertical labels by their rendered boxes; slanted labels
    (whose boxes overlap without the text touching) when parallel lines of text lie closer than one line height."""
    slanted = [t for t in labels if t.get_rotation() % 90]
    if slanted:
        pos = sorted(((t.get_transform().transform(t.get_position())[0], t) for t in slanted), key=lambda x: x[0])
        for (x0, a), (x1, b) in zip(pos, pos[1:]):
            theta = math.radians(a.get_rotation() % 180)
            if abs(x1 - x0) * abs(math.sin(theta)) < a.get_fontsize() * dpi / 72:
                return a.get_text(), b.get_text()
        return None
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in labels]
    return next(((a, b) for i, (a, x) in enumerate(boxes) for b, y in boxes[i + 1 :] if _overlap(x, y)), None)


def problems(fig: Figure) -> list[str]:
    """What makes a figure hard to read, after drawing it: a title missing, an axes without any label, axis offset
    or scientific-multiplier text, tick labels under MIN_TICK_PT points, tick labels overlapping on an axis."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    out = []
    suptitle = fig._suptitle.get_text() if getattr(fig, "_suptitle", None) else ""
    if not suptitle and not any(ax.get_title() for ax in fig.axes):
        out.append("no title or suptitle")
    for k, ax in enumerate(fig.axes):
        if not ax.get_visible() or not ax.axison:
            continue
        cbar = hasattr(ax, "_colorbar")
        where = f"{'colorbar' if cbar else 'axes'} {k}" + (f" ({ax.get_title()!r})" if ax.get_title() else "")
        if not cbar and not (ax.get_xlabel() or ax.get_ylabel() or ax.get_title()):
            out.append(f"{where}: no axis label or title")
        for name, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
            off = axis.get_offset_text()
            if off.get_visible() and off.get_text().strip():
                out.append(f"{where}: {name} axis shows offset/multiplier text {off.get_text()!r}")
            labels = _tick_labels(axis)
            small = sorted({t.get_fontsize() for t in labels if t.get_fontsize() < MIN_TICK_PT})
            if small:
                out.append(f"{where}: {name} tick labels of {small[0]:g} pt (at least {MIN_TICK_PT} pt)")
            clash = _clash(labels, renderer, fig.dpi)
            if clash:
                out.append(f"{where}: {name} tick labels overlap ({clash[0]!r} and {clash[1]!r})")
    return out


def check(fig: Figure, name: str) -> None:
    """Raise FigureError naming the figure and every problem found (see problems)."""
    found = problems(fig)
    if found:
        raise FigureError(f"figure {name}: " + "; ".join(found))


def save(fig: Figure, run_dir: str | Path, name: str) -> Path:
    """Check the figure is readable (check), write it to run_dir/figures/{name}.png (dpi 120, tight) and return the
    path."""
    check(fig, name)
    from ..safeio import atomic_save

    path = Path(run_dir) / "figures" / f"{name}.png"
    # a fresh temporary file renamed into place: never written through a link at the file or at figures/
    atomic_save(path, lambda tmp: fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png"), base=run_dir)
    return path
