"""Figures of the model comparison (notebook 06): each emotion's depth profile and one value per emotion, across
models and runs.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .plots_common import emotion_color, no_data, ordered, panel_grid, titled

# ---------------------------------------------------------------- cross-model figures


def depth_lines(profiles: dict[str, pd.DataFrame], label: str) -> Figure:
    """One panel per emotion, a line per model/run of the share of neurons across relative depth."""
    emotions = ordered([c for p in profiles.values() for c in p.columns])
    fig, axes = panel_grid(max(1, len(emotions)), ncols=3, w=3.8, h=3.0, sharex=True, sharey=True)
    colors = dict(zip(profiles, sns.color_palette("tab10", max(1, len(profiles)))))
    for ax, e in zip(axes, emotions):
        for run, p in profiles.items():
            if e in p.columns:
                s = p[e].sort_index()
                ax.plot(
                    s.index.astype(float),
                    s.to_numpy(dtype=float) * 100,
                    marker="o",
                    ms=3,
                    lw=1.5,
                    color=colors[run],
                    label=run,
                )
        ax.set_title(e, fontsize=10, color=emotion_color(e), fontweight="bold")
        ax.set_xlim(0, 1)
        spec = ax.get_subplotspec()
        if spec.is_last_row() or e == emotions[-1]:
            ax.set_xlabel("relative depth (0 = first layer, 1 = last)", fontsize=9)
        if spec.is_first_col():
            ax.set_ylabel("share of the emotion's neurons (%)", fontsize=9)
        ax.grid(alpha=0.3)
    if not emotions:
        no_data(axes[0])
        axes[0].set_xlabel("relative depth (0 = first layer, 1 = last)")
    handles = [Line2D([], [], color=colors[r], marker="o", ms=3, label=r) for r in profiles]
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncol=min(4, len(handles)), fontsize=9)
    return titled(fig, "Depth profiles of emotion neurons across models", label)


def compare_bars(values: pd.DataFrame, ylabel: str, label: str) -> Figure:
    """Grouped bars of one value per emotion (rows) for several runs (columns)."""
    v = values.reindex(ordered(values.index))
    long = v.rename_axis("emotion").reset_index().melt(id_vars="emotion", var_name="run", value_name="value")
    fig, ax = plt.subplots(figsize=(max(8.0, 1.0 * len(v) * max(1, v.shape[1]) * 0.45 + 4), 4.4), layout="constrained")
    sns.barplot(long, x="emotion", y="value", hue="run", ax=ax, palette="tab10", edgecolor="black", linewidth=0.5)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xlabel("emotion")
    ax.set_ylabel(ylabel)
    ax.legend(title="run", loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    return titled(fig, f"Comparison across runs: {ylabel}", label)
