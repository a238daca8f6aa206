"""Figures of stage 1, the data set (notebook 01): how the annotators' labels agree with the intended emotion, the
share of generated dialogues kept, the dialogues per emotion and split, and the dialogues' lengths.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from .plots_common import (
    MAX_ANNOTATED_CELLS,
    emotion_color,
    no_data,
    ordered,
    panel_grid,
    titled,
)

# ---------------------------------------------------------------- data set figures


def annotator_confusions(df: pd.DataFrame, annotators: list[str], emotions: list[str], label: str) -> Figure:
    """Row-normalised confusion heatmap (theme vs annotator label) per annotator, with agreement."""
    emotions = ordered(emotions)
    fig, axes = panel_grid(len(annotators), ncols=min(3, max(1, len(annotators))), w=4.4, h=3.9)
    mappable = None
    for ax, name in zip(axes, annotators):
        pred = df[name].where(df[name].notna(), "none").astype(str)
        theme = df["theme"].astype(str)
        cols = emotions + sorted(set(pred) - set(emotions))
        counts = pd.crosstab(theme, pred).reindex(index=emotions, columns=cols, fill_value=0)
        share = counts.div(counts.sum(axis=1).replace(0, np.nan), axis=0) * 100
        agreement = float((pred == theme).mean() * 100) if len(df) else float("nan")
        annot = share.size < MAX_ANNOTATED_CELLS
        sns.heatmap(
            share,
            ax=ax,
            vmin=0,
            vmax=100,
            cmap="Blues",
            annot=annot,
            fmt=".0f",
            cbar=False,
            linewidths=0.5,
            linecolor="white",
            square=False,
        )
        mappable = ax.collections[0]
        ax.set_title(f"{name}\nagreement with theme: {agreement:.0f}%", fontsize=10)
        ax.set_xlabel(f"label given by {name}")
        ax.set_ylabel("intended emotion (theme)")
        ax.tick_params(axis="x", rotation=45)
        ax.tick_params(axis="y", rotation=0)
    if mappable is not None:
        fig.colorbar(mappable, ax=axes, shrink=0.8, label="share of the theme's dialogues (%)")
    return titled(fig, "Annotator labels vs intended emotion (rows sum to 100%)", label)


def kept_fraction(df: pd.DataFrame, emotions: list[str], label: str) -> Figure:
    """Bar per emotion of the share of generated dialogues kept after filtering (with counts)."""
    emotions = ordered(emotions)
    g = df.groupby("theme")["kept"].agg(["sum", "count"]).reindex(emotions).fillna(0)
    pct = (g["sum"] / g["count"].replace(0, np.nan) * 100).fillna(0)
    fig, ax = plt.subplots(figsize=(7, 4.2), layout="constrained")
    bars = ax.bar(emotions, pct.values, color=[emotion_color(e) for e in emotions], edgecolor="black", linewidth=0.5)
    ax.bar_label(bars, labels=[f"{int(k)}/{int(n)}" for k, n in zip(g["sum"], g["count"])], padding=2, fontsize=9)
    ax.set_ylim(0, 110)
    ax.set_ylabel("dialogues kept (% of generated)")
    ax.set_xlabel("intended emotion (theme)")
    ax.text(
        0.99,
        0.98,
        "bar labels: kept / generated",
        transform=ax.transAxes,
        ha="right",
        va="top",
        fontsize=8,
        color="grey",
    )
    return titled(fig, "Share of generated dialogues kept after filtering", label)


def split_counts(counts: dict[str, dict[str, int]], label: str) -> Figure:
    """Grouped bars of dialogues per emotion in each split (e.g. train / eval)."""
    table = pd.DataFrame(counts).fillna(0)
    table = table.reindex(ordered(table.index))
    long = table.rename_axis("emotion").reset_index().melt(id_vars="emotion", var_name="split", value_name="n")
    fig, ax = plt.subplots(figsize=(8, 4.2), layout="constrained")
    sns.barplot(long, x="emotion", y="n", hue="split", ax=ax, palette="Greys_r", edgecolor="black", linewidth=0.5)
    for cont in ax.containers:
        ax.bar_label(cont, fmt="%d", padding=2, fontsize=8)
    ax.set_ylim(0, max(1.0, float(long["n"].max())) * 1.15)
    ax.set_xlabel("emotion")
    ax.set_ylabel("dialogues")
    ax.legend(title="split", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return titled(fig, "Dialogues per emotion and split", label)


def length_distribution(df: pd.DataFrame, label: str) -> Figure:
    """Two panels: dialogue turns (discrete histogram) and words per dialogue per emotion (box)."""
    d = df[df["label"].notna()].copy()
    d["label"] = d["label"].astype(str)
    lines = d["dialogue"].fillna("").astype(str).str.split("\n")
    d["turns"] = lines.map(lambda ls: sum(1 for s in ls if s.strip()))
    d["words"] = (
        d["dialogue"]
        .fillna("")
        .astype(str)
        .map(lambda t: sum(len(s.split(":", 1)[-1].split()) for s in t.split("\n") if s.strip()))
    )
    order = ordered(d["label"].unique())
    palette = {e: emotion_color(e) for e in order}
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.4), layout="constrained")
    if len(d):
        sns.histplot(
            d,
            x="turns",
            hue="label",
            hue_order=order,
            palette=palette,
            multiple="stack",
            discrete=True,
            ax=a1,
            edgecolor="white",
            linewidth=0.5,
        )
        a1.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
        sns.move_legend(a1, "upper left", bbox_to_anchor=(1.0, 1.0), title="emotion label", fontsize=8)
        sns.boxplot(
            d,
            x="label",
            y="words",
            order=order,
            hue="label",
            hue_order=order,
            palette=palette,
            ax=a2,
            legend=False,
            fliersize=2,
        )
    else:
        no_data(a1)
        no_data(a2)
    a1.set_xlabel("turns per dialogue")
    a1.set_ylabel("dialogues")
    a1.set_title("number of turns", fontsize=10)
    a2.set_xlabel("emotion label")
    a2.set_ylabel("words per dialogue")
    a2.set_title("dialogue length in words (speaker tags excluded)", fontsize=10)
    a2.tick_params(axis="x", rotation=30)
    return titled(fig, f"Dialogue lengths (n = {len(d)} labelled dialogues)", label)
