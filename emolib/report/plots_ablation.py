"""Figures of stages 3 and 4, ablation and layer analysis (notebooks 03 and 04): the baseline confusion matrix, the
pooled test per set and its detection curve, each emotion's own set against matched random sets, specificity, and the
dose, contrast and depth-range grids.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from .plots_common import (
    PP,
    as_int_if_whole,
    emotion_color,
    no_data,
    ordered,
    panel_grid,
    symmetric_limit,
    titled,
)

# ---------------------------------------------------------------- classification / ablation figures


def confusion_heatmap(conf: pd.DataFrame, label: str, title: str = "baseline") -> Figure:
    """Confusion matrix with counts annotated and cells coloured by the true emotion's row share."""
    c = conf.reindex(index=ordered(conf.index), columns=ordered(conf.columns)).fillna(0)
    counts, fmt = as_int_if_whole(c)
    share = c.div(c.sum(axis=1).replace(0, np.nan), axis=0) * 100
    correct = sum(float(c.loc[e, e]) for e in c.index if e in c.columns)
    total = float(c.to_numpy().sum())
    acc = f"accuracy {100 * correct / total:.1f}% of {int(total)}" if total else "no predictions"
    fig, ax = plt.subplots(figsize=(7.5, 5.6), layout="constrained")
    sns.heatmap(
        share,
        ax=ax,
        cmap="Blues",
        vmin=0,
        vmax=100,
        annot=counts,
        fmt=fmt,
        linewidths=0.5,
        linecolor="white",
        cbar_kws={"label": "share of the true emotion's dialogues (%)"},
    )
    ax.set_xlabel("predicted emotion")
    ax.set_ylabel("true emotion")
    ax.tick_params(axis="y", rotation=0)
    return titled(fig, f"Confusion matrix, {title} ({acc}; numbers are dialogues)", label)


# ------------------------------------------------ stage 3: the pooled test per set and what it could detect


def pooled_forest(table: pd.DataFrame, delta: float, label: str) -> Figure:
    """Stage 3's answer: per set, its pooled own-minus-random margin change with the 95% interval of the test, the
    equivalence band +-delta shaded, filled where the verdict is an effect; the controls below a line."""
    t = table.dropna(subset=["own_minus_random"]).reset_index(drop=True)
    t = pd.concat([t[t.role == "test"], t[t.role != "test"]], ignore_index=True)
    fig, ax = plt.subplots(figsize=(7.5, 0.5 * max(3, len(t)) + 1.6), layout="constrained")
    ax.axvspan(-delta, delta, color="#dddddd", zorder=0, label=f"equivalence band ±{delta:g} nat")
    for y, r in t.iterrows():
        eff = str(r.get("verdict", "")).startswith("effect")
        ax.errorbar(
            [r.own_minus_random],
            [y],
            xerr=[[r.own_minus_random - r.lo], [r.hi - r.own_minus_random]],
            fmt="o",
            color="#444444" if r.role == "test" else "#b2182b",
            mfc="black" if eff else "white",
            capsize=3,
        )
    if (t.role != "test").any() and (t.role == "test").any():
        ax.axhline((t.role == "test").sum() - 0.5, color="grey", lw=0.6, ls=":")
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(range(len(t)), [f"{r['set']} ({r.role})\n{r.verdict}" for _, r in t.iterrows()], fontsize=8)
    ax.invert_yaxis()
    ax.xaxis.set_major_locator(MaxNLocator(5))
    ax.set_xlabel("pooled own − random margin change (nat, mean over emotions)")
    ax.set_ylabel("neuron set")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False)
    return titled(
        fig, "One pooled test per set against random families (95% intervals; filled = effect after Holm)", label
    )


def detection_curve(tit: pd.DataFrame, curve: pd.DataFrame, label: str) -> Figure:
    """The measured detection curve: per titrated family its real pooled effect (nat) and whether the pooled test
    rejected; per share the detection rate at the share's mean effect, with the 80% line."""
    fig, ax = plt.subplots(figsize=(7.5, 4.2), layout="constrained")
    if curve.empty:
        no_data(ax, "no titrated families in this run")
    else:
        x = tit.effect.abs()
        ax.scatter(
            x,
            tit.detected.astype(float) + np.random.default_rng(0).uniform(-0.03, 0.03, len(tit)),
            s=14,
            color="#888888",
            label="titrated family (detected 1, not 0)",
        )
        c = curve.assign(size=curve.effect.abs()).sort_values("size")
        ax.plot(c["size"], c.detected, "o-", color="#b2182b", label="detection rate per share (at its mean effect)")
        for k, r in enumerate(c.itertuples()):
            ax.annotate(
                f"{r.share:.0%}",
                (r.size, r.detected),
                textcoords="offset points",
                xytext=(4, -12 if k % 2 else 6),
                fontsize=8,
            )
        ax.axhline(0.8, color="black", lw=0.8, ls="--", label="80%")
        ok = c[c.detected >= 0.8]
        if len(ok):
            ax.axvline(
                ok["size"].min(),
                color="#b2182b",
                lw=0.8,
                ls=":",
                label=f"smallest effect detected ≥ 80%: {ok['size'].min():.2f} nat",
            )
        ax.set_xlim(left=0)
        ax.set_ylim(-0.08, 1.12)
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False, ncol=2)
    ax.set_xlabel("|real pooled effect| of the titrated family (nat)")
    ax.set_ylabel("detected by the pooled test")
    return titled(fig, "Detection curve: shares of each emotion's random set replaced by attribution neurons", label)


# ---------------------------------------------------------------- stages 3-4: tests against matched random sets


def effect_forest(
    table: pd.DataFrame, random_means: dict[tuple[str, str], np.ndarray], label: str, metric: str = "margin"
) -> Figure:
    """Per set and emotion: the own set's mean change (dot, 95% CI) beside each matched random set's mean change
    (grey), on the emotion's own eval items; verdicts after Holm in the labels."""
    t = table.dropna(subset=["own_d_" + metric]).reset_index(drop=True)
    sets = list(dict.fromkeys(t["set"]))
    fig, axes = panel_grid(
        len(sets), ncols=len(sets), w=6.2, h=0.5 * max(4, len(t) / max(1, len(sets))) + 1.2, sharex=True
    )
    unit = "margin (log-prob units)" if metric == "margin" else f"accuracy ({PP})"
    k = 1 if metric == "margin" else 100
    for ax, s in zip(axes, sets):
        rows = t[t["set"] == s].reset_index(drop=True)
        for y, r in rows.iterrows():
            rnd = np.asarray(random_means.get((s, r.emotion), []), dtype=float) * k
            ax.scatter(rnd, [y] * len(rnd), color="#9a9a9a", s=12, alpha=0.8, zorder=2)
            own = r["own_d_" + metric] * k
            lo, hi = (
                (r.get("own_d_margin_lo", np.nan), r.get("own_d_margin_hi", np.nan))
                if metric == "margin"
                else (np.nan, np.nan)
            )
            ax.errorbar(
                [own],
                [y],
                xerr=None if not np.isfinite(lo) else [[own - lo * k], [hi * k - own]],
                fmt="D",
                color=emotion_color(r.emotion),
                ms=7,
                capsize=3,
                zorder=3,
            )
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(
            range(len(rows)), [f"{r.emotion}\n{r.get('verdict', '')}" for _, r in rows.iterrows()], fontsize=8
        )
        ax.invert_yaxis()
        ax.set_title(f"set: {s}", fontsize=10)
        ax.set_xlabel(f"change in {unit} on the emotion's items")
    fig.legend(
        handles=[
            Line2D([], [], marker="D", ls="", color="#555555", label="own set (95% CI over items)"),
            Line2D([], [], marker="o", ls="", color="#9a9a9a", label="matched random sets"),
        ],
        fontsize=8,
        loc="outside lower center",
        ncol=2,
    )
    return titled(fig, f"Own neurons vs matched random neurons ({metric}); verdicts Holm-corrected", label)


def dose_response(table: pd.DataFrame, emotions: list[str], label: str, total: int) -> Figure:
    """Descriptive: own minus mean random margin change against the share of all neurons masked, per emotion and set,
    with the 95% interval against the random sets' spread as a band (cells are not tested one by one)."""
    t = table.dropna(subset=["own_minus_random_margin"])
    fig, axes = panel_grid(len(emotions), ncols=3, w=3.8, h=3.0, sharey=True)
    for ax, e in zip(axes, ordered(emotions)):
        for s, ls in zip(dict.fromkeys(t["set"]), ["-", "--", ":", "-."]):
            r = t[(t.emotion == e) & (t["set"] == s)].sort_values("rate")
            if r.empty:
                continue
            x = r["rate"].to_numpy(float) * 100
            ax.fill_between(x, r["omr_margin_lo"], r["omr_margin_hi"], color=emotion_color(e), alpha=0.12)
            ax.plot(x, r["own_minus_random_margin"], ls=ls, marker="o", ms=4, color=emotion_color(e), label=f"set {s}")
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
    return titled(
        fig,
        f"Dose-response (descriptive; {total:,} FFN neurons): each emotion's k neurons vs matched "
        "random sets\nband: 95% interval against the random sets' spread; the tested contrast is "
        "the slope (see the contrast figure)",
        label,
    )


def contrast_forest(table: pd.DataFrame, label: str) -> Figure:
    """The pre-specified grid contrasts: own minus random per set, emotion and contrast, with the 95% interval that
    inverts the test, filled where Holm-significant."""
    t = table.dropna(subset=["own_minus_random_margin"]).reset_index(drop=True)
    contrasts = list(dict.fromkeys(t["contrast"]))
    fig, axes = panel_grid(
        len(contrasts), ncols=len(contrasts), w=5.6, h=0.32 * max(6, len(t) / max(1, len(contrasts))) + 1.4
    )
    for ax, c in zip(axes, contrasts):
        rows = t[t.contrast == c].reset_index(drop=True)
        for y, r in rows.iterrows():
            sig = "beyond random" in str(r.get("verdict", ""))
            ax.errorbar(
                [r.own_minus_random_margin],
                [y],
                xerr=[[r.own_minus_random_margin - r.omr_margin_lo], [r.omr_margin_hi - r.own_minus_random_margin]],
                fmt="o",
                color=emotion_color(r.emotion),
                mfc=emotion_color(r.emotion) if sig else "white",
                capsize=3,
            )
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(range(len(rows)), [f"{r['set']} · {r.emotion}" for _, r in rows.iterrows()], fontsize=8)
        ax.invert_yaxis()
        ax.set_title(c, fontsize=10)
        ax.xaxis.set_major_locator(MaxNLocator(4))
        ax.set_xlabel("own − random (nat" + (" per tenfold dose)" if c == "dose slope" else ")"))
    return titled(
        fig,
        "Pre-specified grid contrasts against matched random series (unadjusted 95% intervals; "
        "filled = Holm-significant)",
        label,
    )


def range_heatmap(table: pd.DataFrame, emotions: list[str], label: str, set_name: str) -> Figure:
    """Descriptive: depth range (rows) x emotion (columns), own minus mean random margin change (nat), annotated with
    the neuron count."""
    t = table[table["set"] == set_name]
    ranges = list(dict.fromkeys(t["range"]))
    order = ordered(emotions)
    val = t.pivot_table(index="range", columns="emotion", values="own_minus_random_margin", aggfunc="first")
    val = val.reindex(index=ranges, columns=order)
    ann = pd.DataFrame("", index=ranges, columns=order)
    for _, r in t.iterrows():
        v = r.get("own_minus_random_margin", np.nan)
        ann.loc[r["range"], r.emotion] = (
            f"{v:+.2f}\nn={int(r.n_neurons)}" if np.isfinite(v) else f"n={int(r.n_neurons)}"
        )
    vals = val.to_numpy(dtype=float)
    lim = float(np.nanmax(np.abs(vals))) if np.isfinite(vals).any() else 1.0
    fig, ax = plt.subplots(figsize=(8, 0.7 * len(ranges) + 2.2), layout="constrained")
    sns.heatmap(
        val,
        ax=ax,
        cmap="vlag",
        center=0,
        vmin=-lim,
        vmax=lim,
        annot=ann,
        fmt="",
        linewidths=0.5,
        linecolor="white",
        annot_kws={"fontsize": 8},
        cbar_kws={"label": "own − random margin (nat)"},
    )
    ax.set_xlabel("emotion")
    ax.set_ylabel("layers masked")
    ax.tick_params(axis="y", rotation=0)
    return titled(fig, f"Masking by depth range, set {set_name} (descriptive; n = neurons masked)", label)


def specificity_pair(own: pd.DataFrame, rnd: pd.DataFrame | None, label: str) -> Figure:
    """Masked emotion x true emotion margin changes: each emotion's own set (left) beside its matched random sets'
    mean (right), on one colour scale."""
    tables = [own] + ([rnd] if rnd is not None else [])
    vals = np.concatenate([t.to_numpy(dtype=float).ravel() for t in tables])
    lim = float(np.nanmax(np.abs(vals))) if np.isfinite(vals).any() else 1.0
    fig, axes = plt.subplots(1, len(tables), figsize=(6.4 * len(tables), 5.4), layout="constrained", squeeze=False)
    for ax, t, what in zip(axes[0], tables, ["own set masked", "that emotion's matched random sets masked (mean)"]):
        d = t.reindex(index=ordered(t.index), columns=ordered(t.columns)).astype(float)
        sns.heatmap(
            d,
            ax=ax,
            cmap="vlag",
            center=0,
            vmin=-lim,
            vmax=lim,
            annot=True,
            fmt=".2f",
            linewidths=0.5,
            linecolor="white",
            cbar_kws={"label": "mean margin change (nat)"},
            annot_kws={"fontsize": 8},
        )
        ax.set_title(what, fontsize=10)
        ax.set_ylabel("emotion whose neurons are masked")
        ax.set_xlabel("true emotion of the items")
        ax.tick_params(axis="y", rotation=0)
    return titled(fig, "Specificity: margin change on each emotion's items", label)


def shift_heatmap(table: pd.DataFrame, label: str, title: str, unit: str) -> Figure:
    """A diverging heatmap of changes (rows x columns), annotated, centred at zero."""
    d = table.reindex(index=ordered(table.index), columns=ordered(table.columns)).astype(float)
    lim = symmetric_limit(d.to_numpy())
    fig, ax = plt.subplots(figsize=(7.5, 5.6), layout="constrained")
    sns.heatmap(
        d,
        ax=ax,
        cmap="vlag",
        center=0,
        vmin=-lim,
        vmax=lim,
        annot=True,
        fmt=".2f" if lim < 5 else ".0f",
        linewidths=0.5,
        linecolor="white",
        cbar_kws={"label": unit},
    )
    ax.set_xlabel(d.columns.name or "emotion")
    ax.set_ylabel(d.index.name or "emotion")
    ax.tick_params(axis="y", rotation=0)
    return titled(fig, title, label)
