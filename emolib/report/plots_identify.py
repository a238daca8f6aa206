"""Figures of stage 2, neuron identification (notebook 02): the entropy of firing, how many emotion neurons there are
and where they sit (per layer, per depth bin: the depth heatmap is also drawn in notebook 04), their overlap, firing
profiles and split-half stability, the selection against the label-permutation null, the named sets' firing rates,
and the emotion directions.

Longer than 400 lines: stage 2 has the most figures of any stage (entropy, counts, depth, overlap, profiles,
stability, null, rates, directions), each a small function.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter

from .plots_common import (
    MAX_ANNOTATED_CELLS,
    OTHER_COLOR,
    as_int_if_whole,
    emotion_color,
    no_data,
    ordered,
    panel_grid,
    titled,
)

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
    ax.hist(
        ent[finite], bins=bins, color="#b0b0b0", label=f"all neurons with finite entropy (n = {int(finite.sum()):,})"
    )
    if eligible is not None:
        el = np.asarray(eligible, dtype=bool).ravel() & finite
        ax.hist(ent[el], bins=bins, color="#3b75af", alpha=0.8, label=f"eligible neurons (n = {int(el.sum()):,})")
    if cutoff is not None and np.isfinite(cutoff):
        n_sel = int((ent[finite] <= cutoff).sum()) if eligible is None else int((ent[el] <= cutoff).sum())
        ax.axvline(
            cutoff,
            color="#d62728",
            lw=1.6,
            ls="--",
            label=f"selection cut-off = {cutoff:.3f} nats ({n_sel:,} "
            f"{'eligible ' if eligible is not None else ''}neurons at or below)",
        )
    ax.axvline(max_h, color="black", lw=1.0, ls=":", label="maximum possible = ln 6 ≈ 1.792 nats")
    ax.set_yscale("log")
    ax.set_xlim(0, hi * 1.02)
    ax.set_xlabel("entropy over emotions (nats)")
    ax.set_ylabel("neurons (log scale)")
    handles, labels = ax.get_legend_handles_labels()
    handles.append(Line2D([], [], color="none"))
    labels.append(f"not shown: {n_inf:,} neurons never fired (entropy = inf)")
    ax.legend(handles, labels, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return titled(fig, "Per-neuron entropy of firing over the six emotions (low = emotion-specific)", label)


def neurons_per_emotion(counts: dict[str, int], label: str) -> Figure:
    """Bars of the number of selected neurons per emotion, in emotion colours."""
    order = ordered(counts)
    vals = [int(counts[e]) for e in order]
    fig, ax = plt.subplots(figsize=(7, 4.2), layout="constrained")
    bars = ax.bar(order, vals, color=[emotion_color(e) for e in order], edgecolor="black", linewidth=0.5)
    ax.bar_label(bars, fmt="%d", padding=2, fontsize=9)
    ax.set_ylim(0, max(vals + [1]) * 1.15)
    ax.set_xlabel("emotion")
    ax.set_ylabel("emotion neurons")
    return titled(fig, f"Emotion neurons per emotion (total {sum(vals):,})", label)


def layer_heatmap(table: pd.DataFrame, label: str) -> Figure:
    """Heatmap of emotion-neuron counts per layer (layer 0 at the bottom) and emotion."""
    t = table[ordered(table.columns)].sort_index(ascending=False)
    t, fmt = as_int_if_whole(t)
    annot = len(t) <= 40
    height = max(4.0, 0.28 * len(t) + 1.8) if annot else min(10.0, 0.12 * len(t) + 2.5)
    return _emotion_heatmap(
        t,
        height,
        annot,
        fmt,
        "emotion neurons",
        "layer (0 = first)",
        "Where the emotion neurons are: count per layer",
        label,
    )


def depth_heatmap(profile: pd.DataFrame, label: str) -> Figure:
    """Heatmap of each emotion's share of neurons per relative-depth bin (depth 0 at the bottom)."""
    p = profile[ordered(profile.columns)].sort_index(ascending=False) * 100
    p.index = [f"{float(v):.2f}" for v in p.index]
    return _emotion_heatmap(
        p,
        min(10.0, max(4.0, 0.32 * len(p) + 1.8)),
        p.size < MAX_ANNOTATED_CELLS,
        ".0f",
        "share of the emotion's neurons (%)",
        "relative depth (0 = first layer, 1 = last)",
        "Depth profile: share of each emotion's neurons per depth bin (columns sum to 100%)",
        label,
        vmin=0,
    )


def _emotion_heatmap(
    t: pd.DataFrame,
    height: float,
    annot: bool,
    fmt: str,
    cbar: str,
    ylabel: str,
    title: str,
    label: str,
    vmin: float | None = None,
) -> Figure:
    """A rows x emotions heatmap (annotated when small), emotions on x, the first row at the top."""
    fig, ax = plt.subplots(figsize=(7.5, height), layout="constrained")
    sns.heatmap(
        t,
        ax=ax,
        cmap="rocket_r",
        vmin=vmin,
        annot=annot,
        fmt=fmt,
        annot_kws={"fontsize": 8},
        linewidths=0.3 if annot else 0,
        linecolor="white",
        cbar_kws={"label": cbar},
    )
    ax.set_xlabel("emotion")
    ax.set_ylabel(ylabel)
    ax.tick_params(axis="y", rotation=0)
    return titled(fig, title, label)


def overlap_heatmap(overlap: pd.DataFrame, label: str) -> Figure:
    """Emotion x emotion shared-neuron counts (diagonal = set sizes), coloured by share of the row's set."""
    order = ordered(overlap.index)
    o = overlap.reindex(index=order, columns=ordered(overlap.columns)).fillna(0)
    counts, fmt = as_int_if_whole(o)
    diag = pd.Series({e: o.loc[e, e] if e in o.columns else np.nan for e in o.index})
    share = o.div(diag.replace(0, np.nan), axis=0) * 100
    fig, ax = plt.subplots(figsize=(7, 5.6), layout="constrained")
    sns.heatmap(
        share,
        ax=ax,
        cmap="Purples",
        vmin=0,
        vmax=100,
        annot=counts,
        fmt=fmt,
        linewidths=0.5,
        linecolor="white",
        square=True,
        cbar_kws={"label": "shared neurons (% of the row emotion's neurons)"},
    )
    ax.set_xlabel("emotion (column set)")
    ax.set_ylabel("emotion (row set)")
    ax.tick_params(axis="y", rotation=0)
    plt.setp(ax.get_xticklabels(), rotation=35, ha="right", rotation_mode="anchor")
    return titled(fig, "Overlap of emotion-neuron sets (numbers: neurons; diagonal: set size)", label)


def activation_profiles(
    P: np.ndarray, picks: list[tuple[int, int]], emotions: list[str], label: str, picked_for: list[str] | None = None
) -> Figure:
    """Small bar panels of firing probability across emotions for up to 8 picked neurons (titled with the emotion
    each was picked for, when given)."""
    P = np.asarray(P, dtype=float)
    picks = list(picks)[:8]
    n = max(1, len(picks))
    fig, axes = panel_grid(n, ncols=4, w=2.9, h=2.9, sharey=True)
    colors = [emotion_color(e) for e in emotions]
    for ax, (layer, idx) in zip(axes, picks):
        ax.bar(range(len(emotions)), P[:, layer, idx], color=colors, edgecolor="black", linewidth=0.4)
        k = picks.index((layer, idx))
        ax.set_title(f"L{layer} #{idx}" + (f" · picked for {picked_for[k]}" if picked_for else ""), fontsize=9)
        ax.set_xticks(range(len(emotions)), emotions, rotation=60, ha="right", fontsize=8)
        ax.set_ylim(0, 1.02)
        ax.set_ylabel("firing probability" if ax.get_subplotspec().is_first_col() else "")
        ax.set_xlabel("emotion of the dialogues", fontsize=8)
    if not picks:
        no_data(axes[0], "no neurons picked")
        axes[0].set_ylabel("firing probability")
        axes[0].set_xlabel("emotion of the dialogues")
    return titled(fig, "Firing probability of selected neurons per emotion (layer L, neuron #)", label)


def stability_bars(df: pd.DataFrame, label: str) -> Figure:
    """Grouped bars of split-half selection Jaccard vs random sets of the same size, per emotion."""
    d = df.reindex(ordered(df.index))[["jaccard", "random_jaccard"]].rename(
        columns={
            "jaccard": "split-half selections",
            "random_jaccard": "chance: random sets of the same sizes from the eligible pool",
        }
    )
    long = d.rename_axis("emotion").reset_index().melt(id_vars="emotion", var_name="comparison", value_name="j")
    fig, ax = plt.subplots(figsize=(8.5, 4.2), layout="constrained")
    sns.barplot(
        long,
        x="emotion",
        y="j",
        hue="comparison",
        ax=ax,
        palette=["#3b75af", "#c0c0c0"],
        edgecolor="black",
        linewidth=0.5,
    )
    for cont in ax.containers:
        ax.bar_label(cont, fmt="%.2f", padding=2, fontsize=8)
    ax.set_ylim(0, 1.08)
    ax.set_xlabel("emotion")
    ax.set_ylabel("Jaccard overlap (0 = disjoint, 1 = identical)")
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right", rotation_mode="anchor")
    ax.legend(title=None, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=9)
    return titled(fig, "Stability of the selection: overlap of neurons chosen on two halves of the data", label)


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
            ax.step(
                v,
                np.arange(1, v.size + 1) / v.size,
                where="post",
                color=color,
                lw=1.8,
                label=f"{name} (n = {v.size:,}, median {np.median(v):.2f}x)",
            )
    ax.set_xscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:g}"[0] in "125" else ""))
    ax.axvline(1, color="black", lw=0.8, ls=":")
    ax.set_xlabel("selectivity: highest / lowest firing probability across emotions (log scale; 1 = none)")
    ax.set_ylabel("share of neurons at or below")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8, loc="lower right")
    return titled(fig, "How selective are the neurons? Selected vs eligible pool vs label-permutation null", label)


def null_cutoffs(table: pd.DataFrame, nulls: dict[str, dict], label: str) -> Figure:
    """Per variant: the entropy cut-off of the selection (red) against the cut-offs of the same procedure under
    each label permutation (grey), and the number selected against the expected false selections."""
    names = [n for n in table.index if nulls.get(n, {}).get("n_null")]
    fig, (ax, ax2) = plt.subplots(
        1, 2, figsize=(10, 0.45 * max(4, len(names)) + 1.8), layout="constrained", sharey=True, width_ratios=[3, 2]
    )
    for y, n in enumerate(names):
        ax.scatter(
            nulls[n]["cutoff_null"],
            [y] * len(nulls[n]["cutoff_null"]),
            color="#8c8c8c",
            s=14,
            alpha=0.7,
            label="null (label permutations)" if y == 0 else None,
        )
        ax.scatter(
            [table.loc[n, "cutoff"]], [y], color="#d62728", marker="D", s=40, label="real labels" if y == 0 else None
        )
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
    return titled(fig, "Does the selection beat the label-permutation null? (one row per variant)", label)


def depth_vs_pool(depth: pd.DataFrame, label: str) -> Figure:
    """Share of selected neurons per layer, at relative depth (l + 0.5) / L, beside the eligible pool and all
    neurons (no binning: one point per layer)."""
    fig, ax = plt.subplots(figsize=(9, 4.4), layout="constrained")
    x = depth["relative depth"].to_numpy()
    styles = {
        "selected": dict(lw=2.0, marker="o", ms=3),
        "eligible pool": dict(lw=1.2, ls="--"),
        "all neurons": dict(lw=1.0, ls=":", color="black"),
    }
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
    return titled(fig, "Where the selected neurons sit, against where they could have been selected", label)


def set_rates(tables: dict[str, pd.DataFrame], label: str) -> Figure:
    """Per named set: emotion set (rows) x token emotion (columns), the mean firing probability of the set's
    neurons on that emotion's tokens (a near-saturated set is dark everywhere)."""
    fig, axes = panel_grid(len(tables), ncols=min(3, len(tables)), w=4.4, h=3.6)
    for ax, (name, t) in zip(axes, tables.items()):
        sns.heatmap(
            t.astype(float),
            ax=ax,
            vmin=0,
            vmax=1,
            cmap="rocket_r",
            annot=True,
            fmt=".2f",
            annot_kws={"fontsize": 8},
            cbar_kws={"label": "P(fire | token of the emotion)"},
        )
        ax.set_title(f"set {name}", fontsize=10)
        ax.set_xlabel("tokens of")
        ax.set_ylabel("neurons selected for")
        ax.tick_params(axis="x", rotation=45, labelsize=8)
        ax.tick_params(axis="y", rotation=0, labelsize=8)
    return titled(fig, "How often each named set's neurons fire on each emotion's tokens", label)


# ---------------------------------------------------------------- emotion directions (emolib.identify.directions)


def direction_cosines(cos: np.ndarray, emotions: list[str], label: str, max_panels: int = 6) -> Figure:
    """Cosine similarity between the emotions' unit directions, one heatmap per layer (at most max_panels layers,
    evenly spaced in depth)."""
    L = cos.shape[0]
    layers = sorted(set(np.linspace(0, L - 1, min(L, max_panels)).round().astype(int).tolist()))
    fig, axes = panel_grid(len(layers), ncols=3, w=3.9, h=3.4)
    for ax, l in zip(axes, layers):
        sns.heatmap(
            pd.DataFrame(cos[l], index=emotions, columns=emotions),
            ax=ax,
            vmin=-1,
            vmax=1,
            cmap="RdBu_r",
            annot=len(emotions) <= 8,
            fmt=".2f",
            annot_kws={"fontsize": 7},
            cbar=ax is axes[-1],
            cbar_kws={"label": "cosine"} if ax is axes[-1] else None,
        )
        ax.set_title(f"layer {l} (relative depth {(l + 0.5) / L:.2f})", fontsize=9)
        ax.tick_params(labelsize=8)
        plt.setp(ax.get_xticklabels(), rotation=40, ha="right", rotation_mode="anchor")
    return titled(fig, "Cosine similarity between topic-centred emotion directions, per layer", label)


def direction_stability(half_cos: np.ndarray, null_cos: np.ndarray, emotions: list[str], label: str) -> Figure:
    """Per emotion and layer (relative depth): the cosine between the directions found on the two halves of the
    train split, beside the cosine between two label permutations' directions (grey band: range; chance)."""
    E, L = half_cos.shape
    x = (np.arange(L) + 0.5) / L
    fig, axes = panel_grid(E, ncols=3, w=3.6, h=2.8, sharey=True)
    for j, (ax, e) in enumerate(zip(axes, emotions)):
        ax.plot(x, half_cos[j], color=emotion_color(e), marker="o", ms=3, lw=1.8, label="half A vs half B")
        if null_cos.size:
            ax.fill_between(
                x,
                null_cos[:, j].min(0),
                null_cos[:, j].max(0),
                color=OTHER_COLOR,
                alpha=0.35,
                label="two permutations (range): chance",
            )
        ax.axhline(0, color="black", lw=0.6, ls=":")
        ax.set_ylim(-1.05, 1.05)
        ax.set_title(e, fontsize=9)
        ax.set_xlabel("relative depth (layer + 0.5) / L", fontsize=8)
        ax.set_ylabel("cosine", fontsize=8)
    axes[0].legend(fontsize=7, loc="lower left")
    return titled(fig, "Split-half stability of the emotion directions, against two permutations' directions", label)


def contribution_null(summary: dict, emotions: list[str], label: str) -> Figure:
    """Per emotion: the selected neurons' mean contribution (red) against what each label permutation's own
    selection reaches (grey), with the permutation p."""
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(emotions) + 1.8), layout="constrained")
    for y, e in enumerate(emotions):
        null = [v for v in summary["null_mean_contribution"][e] if v is not None and np.isfinite(v)]
        ax.scatter(
            null,
            [y] * len(null),
            color=OTHER_COLOR,
            s=16,
            alpha=0.8,
            label="permuted labels (each permutation's selection)" if y == 0 else None,
        )
        real = summary["mean_contribution"][e]
        if real is not None and np.isfinite(real):
            ax.scatter([real], [y], color="#d62728", marker="D", s=40, label="real labels" if y == 0 else None)
            ax.annotate(
                f"p = {summary['p_per_emotion'][e]:.3f}",
                (real, y),
                xytext=(6, 4),
                textcoords="offset points",
                fontsize=8,
            )
    ax.set_yticks(range(len(emotions)), emotions)
    ax.invert_yaxis()
    ax.set_xlabel("mean contribution of the selected neurons: act x (W_down column . direction), hidden-state units")
    ax.legend(fontsize=8, loc="lower right")
    return titled(fig, "Do the contribution-selected neurons beat the permuted-label null?", label)
