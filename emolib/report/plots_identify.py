"""Figures for the emotion-neurons experiment book: every function returns a matplotlib Figure.

Conventions: accuracy changes come in as fractions (-0.12) and are drawn in percentage points;
every figure's suptitle contains the caller's `label` (model and run); emotions keep a fixed
order and colour.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter

EMOTION_ORDER: tuple[str, ...] = ("anger", "disgust", "fear", "happiness", "sadness", "surprise")
EMOTION_COLORS: dict[str, str] = {
    "anger": "#d62728",      # red
    "disgust": "#6b8e23",    # olive green
    "fear": "#7b3fa0",       # purple
    "happiness": "#e6b800",  # gold
    "sadness": "#1f5fbf",    # blue
    "surprise": "#ff7f0e",   # orange
}
OTHER_COLOR = "#8c8c8c"
MAX_ANNOTATED_CELLS = 80
PP = "percentage points"


# ---------------------------------------------------------------- helpers

def _ordered(names) -> list:
    """Known emotions in canonical order, then any other names in order of first appearance."""
    names = list(dict.fromkeys(names))
    return [e for e in EMOTION_ORDER if e in names] + [n for n in names if n not in EMOTION_ORDER]


def _color(name) -> str:
    """The fixed colour of an emotion (grey for anything else)."""
    return EMOTION_COLORS.get(name, OTHER_COLOR)


def _title(fig: Figure, what: str, label: str) -> Figure:
    """Put a two-line suptitle (what is shown, then the caller's label) on the figure."""
    fig.suptitle(f"{what}\n{label}", fontsize=11)
    return fig


def _as_int_if_whole(df: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Return the table and a format string: integers when every value is whole, else one decimal."""
    vals = df.to_numpy(dtype=float)
    finite = vals[np.isfinite(vals)]
    if finite.size == 0 or np.allclose(finite, np.round(finite)):
        return df.fillna(0).round().astype(int), "d"
    return df, ".1f"


def _symmetric_limit(values: np.ndarray) -> float:
    """Largest absolute finite value (at least 1), for colour scales centred at 0."""
    finite = np.abs(values[np.isfinite(values)])
    return float(max(finite.max(), 1.0)) if finite.size else 1.0


def _pp_labels(df: pd.DataFrame) -> pd.DataFrame:
    """Cell annotations as whole numbers with no "-0" (blank for missing cells)."""
    def fmt(v: float) -> str:
        return "" if not np.isfinite(v) else f"{v:.0f}".replace("-0", "0") if abs(v) < 0.5 else f"{v:.0f}"
    return df.astype(float).map(fmt)


def _grid(n: int, ncols: int = 3, w: float = 3.6, h: float = 3.0, **kw) -> tuple[Figure, list]:
    """A constrained-layout figure with n panels on a grid of ncols columns; unused axes removed."""
    ncols = max(1, min(ncols, n))
    nrows = max(1, math.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(w * ncols, h * nrows + 0.8),
                             layout="constrained", squeeze=False, **kw)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.remove()
    return fig, flat[:n]


def _no_data(ax, text: str = "no data") -> None:
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
    return next(((a, b) for i, (a, x) in enumerate(boxes) for b, y in boxes[i + 1:] if _overlap(x, y)), None)


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


# ---------------------------------------------------------------- data set figures

def annotator_confusions(df: pd.DataFrame, annotators: list[str], emotions: list[str], label: str) -> Figure:
    """Row-normalised confusion heatmap (theme vs annotator label) per annotator, with agreement."""
    emotions = _ordered(emotions)
    fig, axes = _grid(len(annotators), ncols=min(3, max(1, len(annotators))), w=4.4, h=3.9)
    mappable = None
    for ax, name in zip(axes, annotators):
        pred = df[name].where(df[name].notna(), "none").astype(str)
        theme = df["theme"].astype(str)
        cols = emotions + sorted(set(pred) - set(emotions))
        counts = pd.crosstab(theme, pred).reindex(index=emotions, columns=cols, fill_value=0)
        share = counts.div(counts.sum(axis=1).replace(0, np.nan), axis=0) * 100
        agreement = float((pred == theme).mean() * 100) if len(df) else float("nan")
        annot = share.size < MAX_ANNOTATED_CELLS
        sns.heatmap(share, ax=ax, vmin=0, vmax=100, cmap="Blues", annot=annot, fmt=".0f",
                    cbar=False, linewidths=0.5, linecolor="white", square=False)
        mappable = ax.collections[0]
        ax.set_title(f"{name}\nagreement with theme: {agreement:.0f}%", fontsize=10)
        ax.set_xlabel(f"label given by {name}")
        ax.set_ylabel("intended emotion (theme)")
        ax.tick_params(axis="x", rotation=45)
        ax.tick_params(axis="y", rotation=0)
    if mappable is not None:
        fig.colorbar(mappable, ax=axes, shrink=0.8, label="share of the theme's dialogues (%)")
    return _title(fig, "Annotator labels vs intended emotion (rows sum to 100%)", label)


def kept_fraction(df: pd.DataFrame, emotions: list[str], label: str) -> Figure:
    """Bar per emotion of the share of generated dialogues kept after filtering (with counts)."""
    emotions = _ordered(emotions)
    g = df.groupby("theme")["kept"].agg(["sum", "count"]).reindex(emotions).fillna(0)
    pct = (g["sum"] / g["count"].replace(0, np.nan) * 100).fillna(0)
    fig, ax = plt.subplots(figsize=(7, 4.2), layout="constrained")
    bars = ax.bar(emotions, pct.values, color=[_color(e) for e in emotions], edgecolor="black", linewidth=0.5)
    ax.bar_label(bars, labels=[f"{int(k)}/{int(n)}" for k, n in zip(g["sum"], g["count"])],
                 padding=2, fontsize=9)
    ax.set_ylim(0, 110)
    ax.set_ylabel("dialogues kept (% of generated)")
    ax.set_xlabel("intended emotion (theme)")
    ax.text(0.99, 0.98, "bar labels: kept / generated", transform=ax.transAxes, ha="right", va="top",
            fontsize=8, color="grey")
    return _title(fig, "Share of generated dialogues kept after filtering", label)


def split_counts(counts: dict[str, dict[str, int]], label: str) -> Figure:
    """Grouped bars of dialogues per emotion in each split (e.g. train / eval)."""
    table = pd.DataFrame(counts).fillna(0)
    table = table.reindex(_ordered(table.index))
    long = table.rename_axis("emotion").reset_index().melt(id_vars="emotion", var_name="split", value_name="n")
    fig, ax = plt.subplots(figsize=(8, 4.2), layout="constrained")
    sns.barplot(long, x="emotion", y="n", hue="split", ax=ax, palette="Greys_r", edgecolor="black", linewidth=0.5)
    for cont in ax.containers:
        ax.bar_label(cont, fmt="%d", padding=2, fontsize=8)
    ax.set_ylim(0, max(1.0, float(long["n"].max())) * 1.15)
    ax.set_xlabel("emotion")
    ax.set_ylabel("dialogues")
    ax.legend(title="split", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _title(fig, "Dialogues per emotion and split", label)


def length_distribution(df: pd.DataFrame, label: str) -> Figure:
    """Two panels: dialogue turns (discrete histogram) and words per dialogue per emotion (box)."""
    d = df[df["label"].notna()].copy()
    d["label"] = d["label"].astype(str)
    lines = d["dialogue"].fillna("").astype(str).str.split("\n")
    d["turns"] = lines.map(lambda ls: sum(1 for s in ls if s.strip()))
    d["words"] = d["dialogue"].fillna("").astype(str).map(
        lambda t: sum(len(s.split(":", 1)[-1].split()) for s in t.split("\n") if s.strip()))
    order = _ordered(d["label"].unique())
    palette = {e: _color(e) for e in order}
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.4), layout="constrained")
    if len(d):
        sns.histplot(d, x="turns", hue="label", hue_order=order, palette=palette, multiple="stack",
                     discrete=True, ax=a1, edgecolor="white", linewidth=0.5)
        a1.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
        sns.move_legend(a1, "upper left", bbox_to_anchor=(1.0, 1.0), title="emotion label", fontsize=8)
        sns.boxplot(d, x="label", y="words", order=order, hue="label", hue_order=order, palette=palette,
                    ax=a2, legend=False, fliersize=2)
    else:
        _no_data(a1)
        _no_data(a2)
    a1.set_xlabel("turns per dialogue")
    a1.set_ylabel("dialogues")
    a1.set_title("number of turns", fontsize=10)
    a2.set_xlabel("emotion label")
    a2.set_ylabel("words per dialogue")
    a2.set_title("dialogue length in words (speaker tags excluded)", fontsize=10)
    a2.tick_params(axis="x", rotation=30)
    return _title(fig, f"Dialogue lengths (n = {len(d)} labelled dialogues)", label)


# ---------------------------------------------------------------- neuron selection figures

def entropy_hist(entropy: np.ndarray, cutoff: float, eligible: np.ndarray | None, label: str) -> Figure:
    """Histogram of per-neuron entropy over emotions, eligible neurons overlaid, selection cut-off marked."""
    ent = np.asarray(entropy, dtype=float).ravel()
    finite = np.isfinite(ent)
    n_inf = int((~finite).sum())
    max_h = math.log(6)
    hi = max(max_h, float(ent[finite].max())) if finite.any() else max_h
    bins = np.linspace(0, hi * 1.001, 61)
    fig, ax = plt.subplots(figsize=(11, 4.6), layout="constrained")
    ax.hist(ent[finite], bins=bins, color="#b0b0b0", label=f"all neurons with finite entropy (n = {int(finite.sum()):,})")
    if eligible is not None:
        el = np.asarray(eligible, dtype=bool).ravel() & finite
        ax.hist(ent[el], bins=bins, color="#3b75af", alpha=0.8, label=f"eligible neurons (n = {int(el.sum()):,})")
    if cutoff is not None and np.isfinite(cutoff):
        n_sel = int((ent[finite] <= cutoff).sum()) if eligible is None else int((ent[el] <= cutoff).sum())
        ax.axvline(cutoff, color="#d62728", lw=1.6, ls="--",
                   label=f"selection cut-off = {cutoff:.3f} nats ({n_sel:,} {'eligible ' if eligible is not None else ''}neurons at or below)")
    ax.axvline(max_h, color="black", lw=1.0, ls=":", label="maximum possible = ln 6 ≈ 1.792 nats")
    ax.set_yscale("log")
    ax.set_xlim(0, hi * 1.02)
    ax.set_xlabel("entropy over emotions (nats)")
    ax.set_ylabel("neurons (log scale)")
    handles, labels = ax.get_legend_handles_labels()
    handles.append(Line2D([], [], color="none"))
    labels.append(f"not shown: {n_inf:,} neurons never fired (entropy = inf)")
    ax.legend(handles, labels, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _title(fig, "Per-neuron entropy of firing over the six emotions (low = emotion-specific)", label)


def neurons_per_emotion(counts: dict[str, int], label: str) -> Figure:
    """Bars of the number of selected neurons per emotion, in emotion colours."""
    order = _ordered(counts)
    vals = [int(counts[e]) for e in order]
    fig, ax = plt.subplots(figsize=(7, 4.2), layout="constrained")
    bars = ax.bar(order, vals, color=[_color(e) for e in order], edgecolor="black", linewidth=0.5)
    ax.bar_label(bars, fmt="%d", padding=2, fontsize=9)
    ax.set_ylim(0, max(vals + [1]) * 1.15)
    ax.set_xlabel("emotion")
    ax.set_ylabel("emotion neurons")
    return _title(fig, f"Emotion neurons per emotion (total {sum(vals):,})", label)


def layer_heatmap(table: pd.DataFrame, label: str) -> Figure:
    """Heatmap of emotion-neuron counts per layer (layer 0 at the bottom) and emotion."""
    t = table[_ordered(table.columns)].sort_index(ascending=False)
    t, fmt = _as_int_if_whole(t)
    annot = len(t) <= 40
    height = max(4.0, 0.28 * len(t) + 1.8) if annot else min(10.0, 0.12 * len(t) + 2.5)
    return _emotion_heatmap(t, height, annot, fmt, "emotion neurons", "layer (0 = first)",
                            "Where the emotion neurons are: count per layer", label)


def depth_heatmap(profile: pd.DataFrame, label: str) -> Figure:
    """Heatmap of each emotion's share of neurons per relative-depth bin (depth 0 at the bottom)."""
    p = profile[_ordered(profile.columns)].sort_index(ascending=False) * 100
    p.index = [f"{float(v):.2f}" for v in p.index]
    return _emotion_heatmap(p, min(10.0, max(4.0, 0.32 * len(p) + 1.8)), p.size < MAX_ANNOTATED_CELLS, ".0f",
                            "share of the emotion's neurons (%)", "relative depth (0 = first layer, 1 = last)",
                            "Depth profile: share of each emotion's neurons per depth bin (columns sum to 100%)",
                            label, vmin=0)


def _emotion_heatmap(t: pd.DataFrame, height: float, annot: bool, fmt: str, cbar: str, ylabel: str, title: str,
                     label: str, vmin: float | None = None) -> Figure:
    """A rows x emotions heatmap (annotated when small), emotions on x, the first row at the top."""
    fig, ax = plt.subplots(figsize=(7.5, height), layout="constrained")
    sns.heatmap(t, ax=ax, cmap="rocket_r", vmin=vmin, annot=annot, fmt=fmt, annot_kws={"fontsize": 8},
                linewidths=0.3 if annot else 0, linecolor="white", cbar_kws={"label": cbar})
    ax.set_xlabel("emotion")
    ax.set_ylabel(ylabel)
    ax.tick_params(axis="y", rotation=0)
    return _title(fig, title, label)


def overlap_heatmap(overlap: pd.DataFrame, label: str) -> Figure:
    """Emotion x emotion shared-neuron counts (diagonal = set sizes), coloured by share of the row's set."""
    order = _ordered(overlap.index)
    o = overlap.reindex(index=order, columns=_ordered(overlap.columns)).fillna(0)
    counts, fmt = _as_int_if_whole(o)
    diag = pd.Series({e: o.loc[e, e] if e in o.columns else np.nan for e in o.index})
    share = o.div(diag.replace(0, np.nan), axis=0) * 100
    fig, ax = plt.subplots(figsize=(7, 5.6), layout="constrained")
    sns.heatmap(share, ax=ax, cmap="Purples", vmin=0, vmax=100, annot=counts, fmt=fmt,
                linewidths=0.5, linecolor="white", square=True,
                cbar_kws={"label": "shared neurons (% of the row emotion's neurons)"})
    ax.set_xlabel("emotion (column set)")
    ax.set_ylabel("emotion (row set)")
    ax.tick_params(axis="y", rotation=0)
    plt.setp(ax.get_xticklabels(), rotation=35, ha="right", rotation_mode="anchor")
    return _title(fig, "Overlap of emotion-neuron sets (numbers: neurons; diagonal: set size)", label)


def activation_profiles(P: np.ndarray, picks: list[tuple[int, int]], emotions: list[str], label: str,
                        picked_for: list[str] | None = None) -> Figure:
    """Small bar panels of firing probability across emotions for up to 8 picked neurons (titled with the emotion
    each was picked for, when given)."""
    P = np.asarray(P, dtype=float)
    picks = list(picks)[:8]
    n = max(1, len(picks))
    fig, axes = _grid(n, ncols=4, w=2.9, h=2.9, sharey=True)
    colors = [_color(e) for e in emotions]
    for ax, (layer, idx) in zip(axes, picks):
        ax.bar(range(len(emotions)), P[:, layer, idx], color=colors, edgecolor="black", linewidth=0.4)
        k = picks.index((layer, idx))
        ax.set_title(f"L{layer} #{idx}" + (f" · picked for {picked_for[k]}" if picked_for else ""), fontsize=9)
        ax.set_xticks(range(len(emotions)), emotions, rotation=60, ha="right", fontsize=8)
        ax.set_ylim(0, 1.02)
        ax.set_ylabel("firing probability" if ax.get_subplotspec().is_first_col() else "")
        ax.set_xlabel("emotion of the dialogues", fontsize=8)
    if not picks:
        _no_data(axes[0], "no neurons picked")
        axes[0].set_ylabel("firing probability")
        axes[0].set_xlabel("emotion of the dialogues")
    return _title(fig, "Firing probability of selected neurons per emotion (layer L, neuron #)", label)


def stability_bars(df: pd.DataFrame, label: str) -> Figure:
    """Grouped bars of split-half selection Jaccard vs random sets of the same size, per emotion."""
    d = df.reindex(_ordered(df.index))[["jaccard", "random_jaccard"]].rename(
        columns={"jaccard": "split-half selections", "random_jaccard": "chance: random sets of the same sizes "
                 "from the eligible pool"})
    long = d.rename_axis("emotion").reset_index().melt(id_vars="emotion", var_name="comparison", value_name="j")
    fig, ax = plt.subplots(figsize=(8.5, 4.2), layout="constrained")
    sns.barplot(long, x="emotion", y="j", hue="comparison", ax=ax,
                palette=["#3b75af", "#c0c0c0"], edgecolor="black", linewidth=0.5)
    for cont in ax.containers:
        ax.bar_label(cont, fmt="%.2f", padding=2, fontsize=8)
    ax.set_ylim(0, 1.08)
    ax.set_xlabel("emotion")
    ax.set_ylabel("Jaccard overlap (0 = disjoint, 1 = identical)")
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right", rotation_mode="anchor")
    ax.legend(title=None, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=9)
    return _title(fig, "Stability of the selection: overlap of neurons chosen on two halves of the data", label)


# ---------------------------------------------------------------- classification / ablation figures

def confusion_heatmap(conf: pd.DataFrame, label: str, title: str = "baseline") -> Figure:
    """Confusion matrix with counts annotated and cells coloured by the true emotion's row share."""
    c = conf.reindex(index=_ordered(conf.index), columns=_ordered(conf.columns)).fillna(0)
    counts, fmt = _as_int_if_whole(c)
    share = c.div(c.sum(axis=1).replace(0, np.nan), axis=0) * 100
    correct = sum(float(c.loc[e, e]) for e in c.index if e in c.columns)
    total = float(c.to_numpy().sum())
    acc = f"accuracy {100 * correct / total:.1f}% of {int(total)}" if total else "no predictions"
    fig, ax = plt.subplots(figsize=(7.5, 5.6), layout="constrained")
    sns.heatmap(share, ax=ax, cmap="Blues", vmin=0, vmax=100, annot=counts, fmt=fmt,
                linewidths=0.5, linecolor="white",
                cbar_kws={"label": "share of the true emotion's dialogues (%)"})
    ax.set_xlabel("predicted emotion")
    ax.set_ylabel("true emotion")
    ax.tick_params(axis="y", rotation=0)
    return _title(fig, f"Confusion matrix, {title} ({acc}; numbers are dialogues)", label)


# ---------------------------------------------------------------- cross-model figures

def depth_lines(profiles: dict[str, pd.DataFrame], label: str) -> Figure:
    """One panel per emotion, a line per model/run of the share of neurons across relative depth."""
    emotions = _ordered([c for p in profiles.values() for c in p.columns])
    fig, axes = _grid(max(1, len(emotions)), ncols=3, w=3.8, h=3.0, sharex=True, sharey=True)
    colors = dict(zip(profiles, sns.color_palette("tab10", max(1, len(profiles)))))
    for ax, e in zip(axes, emotions):
        for run, p in profiles.items():
            if e in p.columns:
                s = p[e].sort_index()
                ax.plot(s.index.astype(float), s.to_numpy(dtype=float) * 100, marker="o", ms=3,
                        lw=1.5, color=colors[run], label=run)
        ax.set_title(e, fontsize=10, color=_color(e), fontweight="bold")
        ax.set_xlim(0, 1)
        spec = ax.get_subplotspec()
        if spec.is_last_row() or e == emotions[-1]:
            ax.set_xlabel("relative depth (0 = first layer, 1 = last)", fontsize=9)
        if spec.is_first_col():
            ax.set_ylabel("share of the emotion's neurons (%)", fontsize=9)
        ax.grid(alpha=0.3)
    if not emotions:
        _no_data(axes[0])
        axes[0].set_xlabel("relative depth (0 = first layer, 1 = last)")
    handles = [Line2D([], [], color=colors[r], marker="o", ms=3, label=r) for r in profiles]
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncol=min(4, len(handles)), fontsize=9)
    return _title(fig, "Depth profiles of emotion neurons across models", label)


def compare_bars(values: pd.DataFrame, ylabel: str, label: str) -> Figure:
    """Grouped bars of one value per emotion (rows) for several runs (columns)."""
    v = values.reindex(_ordered(values.index))
    long = v.rename_axis("emotion").reset_index().melt(id_vars="emotion", var_name="run", value_name="value")
    fig, ax = plt.subplots(figsize=(max(8.0, 1.0 * len(v) * max(1, v.shape[1]) * 0.45 + 4), 4.4),
                           layout="constrained")
    sns.barplot(long, x="emotion", y="value", hue="run", ax=ax, palette="tab10", edgecolor="black", linewidth=0.5)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xlabel("emotion")
    ax.set_ylabel(ylabel)
    ax.legend(title="run", loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    return _title(fig, f"Comparison across runs: {ylabel}", label)


# ---------------------------------------------------------------- stage 2: selectivity against the null

def selectivity_distributions(groups: dict[str, np.ndarray], label: str) -> Figure:
    """Cumulative distributions of the highest/lowest firing-probability ratio (log scale) for several neuron
    groups: the selected neurons, the eligible pool, what the null selects."""
    fig, ax = plt.subplots(figsize=(9, 4.6), layout="constrained")
    palette = ["#d62728", "#3b75af", "#8c8c8c", "#2ca02c", "#9467bd", "#ff7f0e"]
    for (name, vals), color in zip(groups.items(), palette):
        v = np.sort(np.asarray(vals, dtype=float))
        v = v[np.isfinite(v)]
        if v.size:
            ax.step(v, np.arange(1, v.size + 1) / v.size, where="post", color=color, lw=1.8,
                    label=f"{name} (n = {v.size:,}, median {np.median(v):.2f}x)")
    ax.set_xscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:g}"[0] in "125" else ""))
    ax.axvline(1, color="black", lw=0.8, ls=":")
    ax.set_xlabel("selectivity: highest / lowest firing probability across emotions (log scale; 1 = none)")
    ax.set_ylabel("share of neurons at or below")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8, loc="lower right")
    return _title(fig, "How selective are the neurons? Selected vs eligible pool vs label-permutation null", label)


def null_cutoffs(table: pd.DataFrame, nulls: dict[str, dict], label: str) -> Figure:
    """Per variant: the entropy cut-off of the selection (red) against the cut-offs of the same procedure under
    each label permutation (grey), and the number selected against the expected false selections."""
    names = [n for n in table.index if nulls.get(n, {}).get("n_null")]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 0.45 * max(4, len(names)) + 1.8), layout="constrained",
                                  sharey=True, width_ratios=[3, 2])
    for y, n in enumerate(names):
        ax.scatter(nulls[n]["cutoff_null"], [y] * len(nulls[n]["cutoff_null"]), color="#8c8c8c", s=14, alpha=0.7,
                   label="null (label permutations)" if y == 0 else None)
        ax.scatter([table.loc[n, "cutoff"]], [y], color="#d62728", marker="D", s=40,
                   label="real labels" if y == 0 else None)
    ax.set_yticks(range(len(names)), names, fontsize=10)
    ax.invert_yaxis()
    ax.set_xlabel("entropy cut-off of the top-k selection (nats; lower = more selective)", fontsize=10)
    ax.legend(fontsize=9, loc="lower left")
    sel = table.loc[names, "n_selected"].to_numpy(float)
    fal = table.loc[names, "expected_false"].to_numpy(float)
    ax2.barh(np.arange(len(names)) - 0.2, sel, height=0.4, color="#3b75af", label="selected")
    ax2.barh(np.arange(len(names)) + 0.2, fal, height=0.4, color="#8c8c8c", label="expected false (null mean)")
    for y, (a, b) in enumerate(zip(sel, fal)):
        ax2.text(max(a, b), y, f"  FDR {b / a:.2f}" if a else "", va="center", fontsize=9)
    ax2.set_xlim(0, 1.25 * max(np.nanmax(np.r_[sel, fal, 1.0]), 1.0))
    ax2.set_xlabel("neurons", fontsize=10)
    ax2.legend(fontsize=9, loc="lower right")
    return _title(fig, "Does the selection beat the label-permutation null? (one row per variant)", label)


def depth_vs_pool(depth: pd.DataFrame, label: str) -> Figure:
    """Share of selected neurons per layer, at relative depth (l + 0.5) / L, beside the eligible pool and all
    neurons (no binning: one point per layer)."""
    fig, ax = plt.subplots(figsize=(9, 4.4), layout="constrained")
    x = depth["relative depth"].to_numpy()
    styles = {"selected": dict(lw=2.0, marker="o", ms=3), "eligible pool": dict(lw=1.2, ls="--"),
              "all neurons": dict(lw=1.0, ls=":", color="black")}
    palette = iter(["#d62728", "#3b75af", "#2ca02c", "#9467bd"])
    colors: dict[str, str] = {}
    for col in depth.columns[1:]:
        kind = col.split(" (")[0]
        name = col.split(" (")[1].rstrip(")") if " (" in col else None
        if name and name not in colors:
            colors[name] = next(palette)
        kw = dict(styles.get(kind, {}))
        kw.setdefault("color", colors.get(name, "black"))
        ax.plot(x, 100 * depth[col].to_numpy(), label=col, **kw)
    ax.set_xlim(0, 1)
    ax.set_xlabel("relative depth (layer + 0.5) / L  (0 = first layer, 1 = last)")
    ax.set_ylabel("share per layer (%)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _title(fig, "Where the selected neurons sit, against where they could have been selected", label)


# ---------------------------------------------------------------- stages 3-4: tests against matched random sets

def effect_forest(table: pd.DataFrame, random_means: dict[tuple[str, str], np.ndarray], label: str,
                  metric: str = "margin") -> Figure:
    """Per set and emotion: the own set's mean change (dot, 95% CI) beside each matched random set's mean change
    (grey), on the emotion's own eval items; verdicts after Holm in the labels."""
    t = table.dropna(subset=["own_d_" + metric]).reset_index(drop=True)
    sets = list(dict.fromkeys(t["set"]))
    fig, axes = _grid(len(sets), ncols=len(sets), w=6.2, h=0.5 * max(4, len(t) / max(1, len(sets))) + 1.2,
                      sharex=True)
    unit = "margin (log-prob units)" if metric == "margin" else f"accuracy ({PP})"
    k = 1 if metric == "margin" else 100
    for ax, s in zip(axes, sets):
        rows = t[t["set"] == s].reset_index(drop=True)
        for y, r in rows.iterrows():
            rnd = np.asarray(random_means.get((s, r.emotion), []), dtype=float) * k
            ax.scatter(rnd, [y] * len(rnd), color="#9a9a9a", s=12, alpha=0.8, zorder=2)
            own = r["own_d_" + metric] * k
            lo, hi = (r.get("own_d_margin_lo", np.nan), r.get("own_d_margin_hi", np.nan)) if metric == "margin" \
                else (np.nan, np.nan)
            ax.errorbar([own], [y], xerr=None if not np.isfinite(lo) else [[own - lo * k], [hi * k - own]],
                        fmt="D", color=_color(r.emotion), ms=7, capsize=3, zorder=3)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(range(len(rows)), [f"{r.emotion}\n{r.get('verdict', '')}" for _, r in rows.iterrows()],
                      fontsize=8)
        ax.invert_yaxis()
        ax.set_title(f"set: {s}", fontsize=10)
        ax.set_xlabel(f"change in {unit} on the emotion's items")
    fig.legend(handles=[Line2D([], [], marker="D", ls="", color="#555555", label="own set (95% CI over items)"),
                        Line2D([], [], marker="o", ls="", color="#9a9a9a", label="matched random sets")],
               fontsize=8, loc="outside lower center", ncol=2)
    return _title(fig, f"Own neurons vs matched random neurons ({metric}); verdicts Holm-corrected", label)


def dose_response(table: pd.DataFrame, emotions: list[str], label: str, total: int) -> Figure:
    """Descriptive: own minus mean random margin change against the share of all neurons masked, per emotion and set,
    with the 95% interval against the random sets' spread as a band (cells are not tested one by one)."""
    t = table.dropna(subset=["own_minus_random_margin"])
    fig, axes = _grid(len(emotions), ncols=3, w=3.8, h=3.0, sharey=True)
    for ax, e in zip(axes, _ordered(emotions)):
        for s, ls in zip(dict.fromkeys(t["set"]), ["-", "--", ":", "-."]):
            r = t[(t.emotion == e) & (t["set"] == s)].sort_values("rate")
            if r.empty:
                continue
            x = r["rate"].to_numpy(float) * 100
            ax.fill_between(x, r["omr_margin_lo"], r["omr_margin_hi"], color=_color(e), alpha=0.12)
            ax.plot(x, r["own_minus_random_margin"], ls=ls, marker="o", ms=4, color=_color(e), label=f"set {s}")
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xscale("log")
        rates = sorted(set(t["rate"].astype(float) * 100))
        ax.set_xticks(rates, [f"{v:g}" for v in rates], fontsize=8)
        ax.minorticks_off()
        ax.set_title(e, fontsize=10)
        ax.set_xlabel("neurons masked (% of all)")
        ax.set_ylabel("own − random margin (nat)" if ax.get_subplotspec().is_first_col() else "")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    return _title(fig, f"Dose-response (descriptive; {total:,} FFN neurons): each emotion's k neurons vs matched "
                       "random sets\nband: 95% interval against the random sets' spread; the tested contrast is "
                       "the slope (see the contrast figure)", label)


def contrast_forest(table: pd.DataFrame, label: str) -> Figure:
    """The pre-specified grid contrasts: own minus random per set, emotion and contrast, with the 95% interval that
    inverts the test, filled where Holm-significant."""
    t = table.dropna(subset=["own_minus_random_margin"]).reset_index(drop=True)
    contrasts = list(dict.fromkeys(t["contrast"]))
    fig, axes = _grid(len(contrasts), ncols=len(contrasts), w=5.6, h=0.32 * max(6, len(t) / max(1, len(contrasts)))
                      + 1.4)
    for ax, c in zip(axes, contrasts):
        rows = t[t.contrast == c].reset_index(drop=True)
        for y, r in rows.iterrows():
            sig = "beyond random" in str(r.get("verdict", ""))
            ax.errorbar([r.own_minus_random_margin], [y], xerr=[[r.own_minus_random_margin - r.omr_margin_lo],
                                                               [r.omr_margin_hi - r.own_minus_random_margin]],
                        fmt="o", color=_color(r.emotion), mfc=_color(r.emotion) if sig else "white", capsize=3)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(range(len(rows)), [f"{r['set']} · {r.emotion}" for _, r in rows.iterrows()], fontsize=8)
        ax.invert_yaxis()
        ax.set_title(c, fontsize=10)
        ax.xaxis.set_major_locator(MaxNLocator(4))
        ax.set_xlabel("own − random (nat" + (" per tenfold dose)" if c == "dose slope" else ")"))
    return _title(fig, "Pre-specified grid contrasts against matched random series (unadjusted 95% intervals; "
                       "filled = Holm-significant)", label)


def range_heatmap(table: pd.DataFrame, emotions: list[str], label: str, set_name: str) -> Figure:
    """Descriptive: depth range (rows) x emotion (columns), own minus mean random margin change (nat), annotated with
    the neuron count."""
    t = table[table["set"] == set_name]
    ranges = list(dict.fromkeys(t["range"]))
    order = _ordered(emotions)
    val = t.pivot_table(index="range", columns="emotion", values="own_minus_random_margin", aggfunc="first")
    val = val.reindex(index=ranges, columns=order)
    ann = pd.DataFrame("", index=ranges, columns=order)
    for _, r in t.iterrows():
        v = r.get("own_minus_random_margin", np.nan)
        ann.loc[r["range"], r.emotion] = (f"{v:+.2f}\nn={int(r.n_neurons)}" if np.isfinite(v)
                                          else f"n={int(r.n_neurons)}")
    vals = val.to_numpy(dtype=float)
    lim = float(np.nanmax(np.abs(vals))) if np.isfinite(vals).any() else 1.0
    fig, ax = plt.subplots(figsize=(8, 0.7 * len(ranges) + 2.2), layout="constrained")
    sns.heatmap(val, ax=ax, cmap="vlag", center=0, vmin=-lim, vmax=lim, annot=ann, fmt="", linewidths=0.5,
                linecolor="white", annot_kws={"fontsize": 8}, cbar_kws={"label": "own − random margin (nat)"})
    ax.set_xlabel("emotion")
    ax.set_ylabel("layers masked")
    ax.tick_params(axis="y", rotation=0)
    return _title(fig, f"Masking by depth range, set {set_name} (descriptive; n = neurons masked)", label)


def specificity_pair(own: pd.DataFrame, rnd: pd.DataFrame | None, label: str) -> Figure:
    """Masked emotion x true emotion margin changes: each emotion's own set (left) beside its matched random sets'
    mean (right), on one colour scale."""
    tables = [own] + ([rnd] if rnd is not None else [])
    vals = np.concatenate([t.to_numpy(dtype=float).ravel() for t in tables])
    lim = float(np.nanmax(np.abs(vals))) if np.isfinite(vals).any() else 1.0
    fig, axes = plt.subplots(1, len(tables), figsize=(6.4 * len(tables), 5.4), layout="constrained", squeeze=False)
    for ax, t, what in zip(axes[0], tables, ["own set masked", "that emotion's matched random sets masked (mean)"]):
        d = t.reindex(index=_ordered(t.index), columns=_ordered(t.columns)).astype(float)
        sns.heatmap(d, ax=ax, cmap="vlag", center=0, vmin=-lim, vmax=lim, annot=True, fmt=".2f", linewidths=0.5,
                    linecolor="white", cbar_kws={"label": "mean margin change (nat)"}, annot_kws={"fontsize": 8})
        ax.set_title(what, fontsize=10)
        ax.set_ylabel("emotion whose neurons are masked")
        ax.set_xlabel("true emotion of the items")
        ax.tick_params(axis="y", rotation=0)
    return _title(fig, "Specificity: margin change on each emotion's items", label)


def shift_heatmap(table: pd.DataFrame, label: str, title: str, unit: str) -> Figure:
    """A diverging heatmap of changes (rows x columns), annotated, centred at zero."""
    d = table.reindex(index=_ordered(table.index), columns=_ordered(table.columns)).astype(float)
    lim = _symmetric_limit(d.to_numpy())
    fig, ax = plt.subplots(figsize=(7.5, 5.6), layout="constrained")
    sns.heatmap(d, ax=ax, cmap="vlag", center=0, vmin=-lim, vmax=lim, annot=True, fmt=".2f" if lim < 5 else ".0f",
                linewidths=0.5, linecolor="white", cbar_kws={"label": unit})
    ax.set_xlabel(d.columns.name or "emotion")
    ax.set_ylabel(d.index.name or "emotion")
    ax.tick_params(axis="y", rotation=0)
    return _title(fig, title, label)


# ---------------------------------------------------------------- steering (stage 5)

def steering_dose(doses: pd.DataFrame, emotions: list[str], scorer: str, label: str) -> Figure:
    """Descriptive dose-response: change of mean P(target) from dose 0 against the push size (stream norms), per
    emotion: one line per intervention (named sets, the direction) with its paired 95% interval over prompts."""
    d = doses[doses.scorer == scorer]
    fig, axes = _grid(len(emotions), ncols=3, w=3.8, h=3.0, sharey=True)
    for ax, e in zip(axes, _ordered(emotions)):
        for s, ls in zip(dict.fromkeys(d["set"]), ["-", "--", ":", "-.", (0, (1, 3))]):
            r = d[(d.emotion == e) & (d["set"] == s)].sort_values("dose")
            if r.empty:
                continue
            ax.fill_between(r["dose"], r["d_p_lo"] * 100, r["d_p_hi"] * 100, color=_color(e), alpha=0.12)
            ax.plot(r["dose"], r["d_p"] * 100, ls=ls, marker="o", ms=4, color=_color(e), label=s)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_title(e, fontsize=10)
        ax.set_xlabel("push size (stream norms)")
        ax.set_ylabel(f"P(target) change ({PP})" if ax.get_subplotspec().is_first_col() else "")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    return _title(fig, f"Steering dose-response (descriptive), read by {scorer}: mean P(target) minus dose 0\n"
                       "band: paired 95% bootstrap interval over prompts", label)


def steering_tradeoff(trade: pd.DataFrame, label: str) -> Figure:
    """The trade-off, one panel per scorer: target-emotion score (change of mean P(target) from the unsteered model,
    mean over emotions) against fluency (median perplexity under the unsteered model) for each named set and the
    direction at its test dose, their random families / directions (grey), and the prompting ceiling (star)."""
    scorers = list(dict.fromkeys(trade["scorer"]))
    fig, axes = _grid(max(1, len(scorers)), ncols=min(2, max(1, len(scorers))), w=5.2, h=4.0)
    markers = ["o", "s", "^", "D", "v", "P"]
    for ax, sc in zip(axes, scorers):
        t = trade[trade.scorer == sc]
        rnd = t[t.random >= 0]
        ax.scatter(rnd["median_ppl"], rnd["d_p"] * 100, s=14, color=OTHER_COLOR, alpha=0.6,
                   label="random families / directions")
        own = t[(t.random == -1) & (t.kind != "prompt")]
        for (_, r), m in zip(own.iterrows(), markers):
            ax.scatter(r["median_ppl"], r["d_p"] * 100, s=60, marker=m, edgecolor="black", linewidth=0.5,
                       label=f"{r['intervention']} (dose {r['dose']:g})", zorder=3)
        pr = t[t.kind == "prompt"]
        if len(pr):
            ax.scatter(pr["median_ppl"], pr["d_p"] * 100, s=160, marker="*", color="black", label="prompted", zorder=3)
        ax.axhline(0, color="black", lw=0.8)
        lo, hi = ax.get_xlim()
        log = hi / max(lo, 1e-9) >= 10  # a log axis only over a decade or more (narrower: plain ticks that fit)
        if log:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
        else:
            ax.xaxis.set_major_locator(MaxNLocator(4))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
        ax.set_title(f"read by {sc}", fontsize=10)
        ax.set_xlabel("median perplexity under the unsteered model" + (" (log)" if log else ""))
        ax.set_ylabel(f"P(target) change, mean over emotions ({PP})")
        ax.legend(fontsize=7, loc="best")
    return _title(fig, "Steering trade-off at each intervention's test dose: target-emotion score against fluency",
                  label)


# ---------------------------------------------------------------- emotion directions (emolib.identify.directions)

def direction_cosines(cos: np.ndarray, emotions: list[str], label: str, max_panels: int = 6) -> Figure:
    """Cosine similarity between the emotions' unit directions, one heatmap per layer (at most max_panels layers,
    evenly spaced in depth)."""
    L = cos.shape[0]
    layers = sorted(set(np.linspace(0, L - 1, min(L, max_panels)).round().astype(int).tolist()))
    fig, axes = _grid(len(layers), ncols=3, w=3.9, h=3.4)
    for ax, l in zip(axes, layers):
        sns.heatmap(pd.DataFrame(cos[l], index=emotions, columns=emotions), ax=ax, vmin=-1, vmax=1, cmap="RdBu_r",
                    annot=len(emotions) <= 8, fmt=".2f", annot_kws={"fontsize": 7}, cbar=ax is axes[-1],
                    cbar_kws={"label": "cosine"} if ax is axes[-1] else None)
        ax.set_title(f"layer {l} (relative depth {(l + 0.5) / L:.2f})", fontsize=9)
        ax.tick_params(labelsize=8)
        plt.setp(ax.get_xticklabels(), rotation=40, ha="right", rotation_mode="anchor")
    return _title(fig, "Cosine similarity between topic-centred emotion directions, per layer", label)


def direction_stability(half_cos: np.ndarray, null_cos: np.ndarray, emotions: list[str], label: str) -> Figure:
    """Per emotion and layer (relative depth): the cosine between the directions found on the two halves of the
    train split, beside the cosine between two label permutations' directions (grey band: range; chance)."""
    E, L = half_cos.shape
    x = (np.arange(L) + 0.5) / L
    fig, axes = _grid(E, ncols=3, w=3.6, h=2.8, sharey=True)
    for j, (ax, e) in enumerate(zip(axes, emotions)):
        ax.plot(x, half_cos[j], color=_color(e), marker="o", ms=3, lw=1.8, label="half A vs half B")
        if null_cos.size:
            ax.fill_between(x, null_cos[:, j].min(0), null_cos[:, j].max(0), color=OTHER_COLOR, alpha=0.35,
                            label="two permutations (range): chance")
        ax.axhline(0, color="black", lw=0.6, ls=":")
        ax.set_ylim(-1.05, 1.05)
        ax.set_title(e, fontsize=9)
        ax.set_xlabel("relative depth (layer + 0.5) / L", fontsize=8)
        ax.set_ylabel("cosine", fontsize=8)
    axes[0].legend(fontsize=7, loc="lower left")
    return _title(fig, "Split-half stability of the emotion directions, against two permutations' directions",
                  label)


def contribution_null(summary: dict, emotions: list[str], label: str) -> Figure:
    """Per emotion: the selected neurons' mean contribution (red) against what each label permutation's own
    selection reaches (grey), with the permutation p."""
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(emotions) + 1.8), layout="constrained")
    for y, e in enumerate(emotions):
        null = [v for v in summary["null_mean_contribution"][e] if v is not None and np.isfinite(v)]
        ax.scatter(null, [y] * len(null), color=OTHER_COLOR, s=16, alpha=0.8,
                   label="permuted labels (each permutation's selection)" if y == 0 else None)
        real = summary["mean_contribution"][e]
        if real is not None and np.isfinite(real):
            ax.scatter([real], [y], color="#d62728", marker="D", s=40, label="real labels" if y == 0 else None)
            ax.annotate(f"p = {summary['p_per_emotion'][e]:.3f}", (real, y), xytext=(6, 4),
                        textcoords="offset points", fontsize=8)
    ax.set_yticks(range(len(emotions)), emotions)
    ax.invert_yaxis()
    ax.set_xlabel("mean contribution of the selected neurons: act x (W_down column . direction), hidden-state units")
    ax.legend(fontsize=8, loc="lower right")
    return _title(fig, "Do the contribution-selected neurons beat the permuted-label null?", label)


def pooled_forest(table: pd.DataFrame, delta: float, label: str) -> Figure:
    """Stage 3's answer: per set, its pooled own-minus-random margin change with the 95% interval of the test, the
    equivalence band +-delta shaded, filled where the verdict is an effect; the controls below a line."""
    t = table.dropna(subset=["own_minus_random"]).reset_index(drop=True)
    t = pd.concat([t[t.role == "test"], t[t.role != "test"]], ignore_index=True)
    fig, ax = plt.subplots(figsize=(7.5, 0.5 * max(3, len(t)) + 1.6), layout="constrained")
    ax.axvspan(-delta, delta, color="#dddddd", zorder=0, label=f"equivalence band ±{delta:g} nat")
    for y, r in t.iterrows():
        eff = str(r.get("verdict", "")).startswith("effect")
        ax.errorbar([r.own_minus_random], [y], xerr=[[r.own_minus_random - r.lo], [r.hi - r.own_minus_random]],
                    fmt="o", color="#444444" if r.role == "test" else "#b2182b", mfc="black" if eff else "white",
                    capsize=3)
    if (t.role != "test").any() and (t.role == "test").any():
        ax.axhline((t.role == "test").sum() - 0.5, color="grey", lw=0.6, ls=":")
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(range(len(t)), [f"{r['set']} ({r.role})\n{r.verdict}" for _, r in t.iterrows()], fontsize=8)
    ax.invert_yaxis()
    ax.xaxis.set_major_locator(MaxNLocator(5))
    ax.set_xlabel("pooled own − random margin change (nat, mean over emotions)")
    ax.set_ylabel("neuron set")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False)
    return _title(fig, "One pooled test per set against random families (95% intervals; filled = effect after Holm)",
                  label)


def detection_curve(tit: pd.DataFrame, curve: pd.DataFrame, label: str) -> Figure:
    """The measured detection curve: per titrated family its real pooled effect (nat) and whether the pooled test
    rejected; per share the detection rate at the share's mean effect, with the 80% line."""
    fig, ax = plt.subplots(figsize=(7.5, 4.2), layout="constrained")
    if curve.empty:
        _no_data(ax, "no titrated families in this run")
    else:
        x = tit.effect.abs()
        ax.scatter(x, tit.detected.astype(float) + np.random.default_rng(0).uniform(-0.03, 0.03, len(tit)), s=14,
                   color="#888888", label="titrated family (detected 1, not 0)")
        c = curve.assign(size=curve.effect.abs()).sort_values("size")
        ax.plot(c["size"], c.detected, "o-", color="#b2182b", label="detection rate per share (at its mean effect)")
        for k, r in enumerate(c.itertuples()):
            ax.annotate(f"{r.share:.0%}", (r.size, r.detected), textcoords="offset points",
                        xytext=(4, -12 if k % 2 else 6), fontsize=8)
        ax.axhline(0.8, color="black", lw=0.8, ls="--", label="80%")
        ok = c[c.detected >= 0.8]
        if len(ok):
            ax.axvline(ok["size"].min(), color="#b2182b", lw=0.8, ls=":",
                       label=f"smallest effect detected ≥ 80%: {ok['size'].min():.2f} nat")
        ax.set_xlim(left=0)
        ax.set_ylim(-0.08, 1.12)
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False, ncol=2)
    ax.set_xlabel("|real pooled effect| of the titrated family (nat)")
    ax.set_ylabel("detected by the pooled test")
    return _title(fig, "Detection curve: shares of each emotion's random set replaced by attribution neurons", label)


def set_rates(tables: dict[str, pd.DataFrame], label: str) -> Figure:
    """Per named set: emotion set (rows) x token emotion (columns), the mean firing probability of the set's
    neurons on that emotion's tokens (a near-saturated set is dark everywhere)."""
    fig, axes = _grid(len(tables), ncols=min(3, len(tables)), w=4.4, h=3.6)
    for ax, (name, t) in zip(axes, tables.items()):
        sns.heatmap(t.astype(float), ax=ax, vmin=0, vmax=1, cmap="rocket_r", annot=True, fmt=".2f",
                    annot_kws={"fontsize": 8}, cbar_kws={"label": "P(fire | token of the emotion)"})
        ax.set_title(f"set {name}", fontsize=10)
        ax.set_xlabel("tokens of")
        ax.set_ylabel("neurons selected for")
        ax.tick_params(axis="x", rotation=45, labelsize=8)
        ax.tick_params(axis="y", rotation=0, labelsize=8)
    return _title(fig, "How often each named set's neurons fire on each emotion's tokens", label)
