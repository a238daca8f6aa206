"""Figures of stage 5, steering (notebook 05): each intervention's dose-response, and the trade-off between the
target-emotion score and fluency at each intervention's test dose.
"""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from .plots_common import OTHER_COLOR, PP, emotion_color, ordered, panel_grid, titled

# ---------------------------------------------------------------- steering (stage 5)


def steering_dose(doses: pd.DataFrame, emotions: list[str], scorer: str, label: str) -> Figure:
    """Descriptive dose-response: change of mean P(target) from dose 0 against the push size (stream norms), per
    emotion: one line per intervention (named sets, the direction) with its paired 95% interval over prompts."""
    d = doses[doses.scorer == scorer]
    fig, axes = panel_grid(len(emotions), ncols=3, w=3.8, h=3.0, sharey=True)
    for ax, e in zip(axes, ordered(emotions)):
        for s, ls in zip(dict.fromkeys(d["set"]), ["-", "--", ":", "-.", (0, (1, 3))]):
            r = d[(d.emotion == e) & (d["set"] == s)].sort_values("dose")
            if r.empty:
                continue
            ax.fill_between(r["dose"], r["d_p_lo"] * 100, r["d_p_hi"] * 100, color=emotion_color(e), alpha=0.12)
            ax.plot(r["dose"], r["d_p"] * 100, ls=ls, marker="o", ms=4, color=emotion_color(e), label=s)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_title(e, fontsize=10)
        ax.set_xlabel("push size (stream norms)")
        ax.set_ylabel(f"P(target) change ({PP})" if ax.get_subplotspec().is_first_col() else "")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    return titled(
        fig,
        f"Steering dose-response (descriptive), read by {scorer}: mean P(target) minus dose 0\n"
        "band: paired 95% bootstrap interval over prompts",
        label,
    )


def steering_tradeoff(trade: pd.DataFrame, label: str) -> Figure:
    """The trade-off, one panel per scorer: target-emotion score (change of mean P(target) from the unsteered model,
    mean over emotions) against fluency (median perplexity under the unsteered model) for each named set and the
    direction at its test dose, their random families / directions (grey), and the prompting ceiling (star)."""
    scorers = list(dict.fromkeys(trade["scorer"]))
    fig, axes = panel_grid(max(1, len(scorers)), ncols=min(2, max(1, len(scorers))), w=5.2, h=4.0)
    markers = ["o", "s", "^", "D", "v", "P"]
    for ax, sc in zip(axes, scorers):
        t = trade[trade.scorer == sc]
        rnd = t[t.random >= 0]
        ax.scatter(
            rnd["median_ppl"],
            rnd["d_p"] * 100,
            s=14,
            color=OTHER_COLOR,
            alpha=0.6,
            label="random families / directions",
        )
        own = t[(t.random == -1) & (t.kind != "prompt")]
        for (_, r), m in zip(own.iterrows(), markers):
            ax.scatter(
                r["median_ppl"],
                r["d_p"] * 100,
                s=60,
                marker=m,
                edgecolor="black",
                linewidth=0.5,
                label=f"{r['intervention']} (dose {r['dose']:g})",
                zorder=3,
            )
        pr = t[t.kind == "prompt"]
        if len(pr):
            ax.scatter(pr["median_ppl"], pr["d_p"] * 100, s=160, marker="*", color="black", label="prompted", zorder=3)
        ax.axhline(0, color="black", lw=0.8)
        lo, hi = ax.get_xlim()
        log = hi / max(lo, 1e-9) >= 10  # a log axis only over a decade or more (narrower: plain ticks that fit)
        if log:
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))  # 5, 10, 20, 50...: a labelled tick per third
            ax.xaxis.set_minor_formatter(NullFormatter())
        else:
            ax.xaxis.set_major_locator(MaxNLocator(4))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
        ax.set_title(f"read by {sc}", fontsize=10)
        ax.set_xlabel("median perplexity under the unsteered model" + (" (log)" if log else ""))
        ax.set_ylabel(f"P(target) change, mean over emotions ({PP})")
        ax.legend(fontsize=7, loc="best")
    return titled(
        fig, "Steering trade-off at each intervention's test dose: target-emotion score against fluency", label
    )
