"""Stage 3's tables, read from the main test's results (no scoring): the arms' summary, the masked x true and
confusion-shift tables, the specificity of each emotion's set, the paper's claims beside this run's verdicts, the
random sets' mean changes per set and emotion, and one grid's tables Holm-corrected together."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..identify import neurons
from . import stats
from .effects import ALPHA, correct_family, mean_deltas
from .instrument import PAPER_ARM

# ---------------------------------------------------------------- the main test's tables


def arm_summary(table: pd.DataFrame, arms: list[str], primary: str) -> pd.DataFrame:
    """Per set and arm: tests rejected after Holm within the arm, and the median own-minus-random margin."""
    rows = []
    for name, t in table.groupby("set", sort=False):
        for arm in arms:
            p_col, d_col = (
                ("p_holm", "own_minus_random_margin") if arm == primary else (f"p_holm[{arm}]", f"omr_margin[{arm}]")
            )
            if p_col not in t:
                continue
            tested = t[p_col].notna()
            rows.append(
                {
                    "set": name,
                    "arm": arm
                    + (" (primary)" if arm == primary else "")
                    + (" · the paper's intervention" if arm == PAPER_ARM else ""),
                    "tests": int(tested.sum()),
                    "rejected": int((t.loc[tested, p_col] < ALPHA).sum()),
                    "median own − random margin": float(t.loc[tested, d_col].median()),
                }
            )
    return pd.DataFrame(rows)


def masked_by_true(
    arrays: dict, name: str, emotions: list[str], metric: str = "margin", random: bool = False
) -> pd.DataFrame:
    """Masked emotion (rows) x true emotion (columns): mean change of margin (or accuracy) under each own set, or
    (random) under that emotion's matched random sets, averaged over the sets."""
    y, base = arrays["y"], arrays["base"]
    f = stats.margin if metric == "margin" else stats.correct
    b = f(base, y)

    def cell(scores: np.ndarray, j: int) -> float:
        d = (f(scores, y) - b)[y == j]
        return float(d.mean()) if d.size else np.nan  # no items of that emotion: no value, and no warning

    def mean(values: list[float]) -> float:
        v = np.asarray(values, dtype=float)
        return float(np.nanmean(v)) if np.isfinite(v).any() else np.nan

    if random:
        ra = arrays["random_all"][name]
        out = [
            [mean([cell(s, j) for s in ra[i]]) if len(ra[i]) else np.nan for j in range(len(emotions))]
            for i in range(len(emotions))
        ]
    else:
        out = [[cell(arrays["own_all"][name][i], j) for j in range(len(emotions))] for i in range(len(emotions))]
    return pd.DataFrame(out, index=pd.Index(emotions, name="masked"), columns=pd.Index(emotions, name="true"))


def specificity(arrays: dict, ns: neurons.NeuronSets, emotions: list[str]) -> pd.DataFrame:
    """Per emotion of a set: how much of its neurons and of its effect it shares with the other emotions' sets.

    shared_neurons: the share of its neurons that are also in another emotion's set; own_d: its own set's margin
    change on its items; others_d: the mean change the other emotions' sets cause on the same items;
    shared_effect: others_d / own_d (1 = the other sets do as much); own_minus_others: what is specific."""
    mbt = masked_by_true(arrays, ns.name, emotions)
    rows = []
    for j, e in enumerate(emotions):
        mine = set(map(tuple, ns.sets[e]))
        rest = {tuple(x) for f in emotions if f != e for x in ns.sets[f]}
        own_d = mbt.iloc[j, j]
        others = float(np.mean([mbt.iloc[i, j] for i in range(len(emotions)) if i != j]))
        rows.append(
            {
                "set": ns.name,
                "emotion": e,
                "n_neurons": len(mine),
                "shared_neurons": len(mine & rest) / len(mine) if mine else np.nan,
                "own_d": own_d,
                "others_d": others,
                "own_minus_others": own_d - others,
                "shared_effect": others / own_d if own_d else np.nan,
            }
        )
    return pd.DataFrame(rows)


def specificity_all(arrays: dict, sets: dict[str, neurons.NeuronSets], emotions: list[str]) -> pd.DataFrame:
    """specificity for every named set, one table."""
    return pd.concat([specificity(arrays, ns, emotions) for ns in sets.values()], ignore_index=True)


def confusion_shift(arrays: dict, name: str, emotions: list[str]) -> pd.DataFrame:
    """Masked emotion (rows) x predicted label (columns): change in the share of the emotion's own items predicted
    as each label when its own set is masked (fractions; a row sums to 0)."""
    y, base = arrays["y"], arrays["base"]
    rows = []
    for i in range(len(emotions)):
        sel = y == i
        before = np.bincount(base[sel].argmax(1), minlength=len(emotions)) / max(1, sel.sum())
        after = np.bincount(arrays["own_all"][name][i][sel].argmax(1), minlength=len(emotions)) / max(1, sel.sum())
        rows.append(after - before)
    return pd.DataFrame(
        rows, index=pd.Index(emotions, name="masked (own items)"), columns=pd.Index(emotions, name="predicted")
    )


# ---------------------------------------------------------------- reading the results


def fmt_pp(v: float) -> str:
    """A fraction as signed percentage points."""
    return f"{100 * v:+.0f} pp" if np.isfinite(v) else "n/a"


PAPER_CLAIMS = {
    "anger": "drop",
    "fear": "drop",
    "happiness": "little change or gain",
    "surprise": "little change or gain",
}


def paper_comparison(table: pd.DataFrame) -> pd.DataFrame:
    """The paper's claims (anger and fear drop; joy and surprise robust) beside this run's corrected verdicts."""
    rows = []
    for e, claim in PAPER_CLAIMS.items():
        for _, r in table[table.emotion == e].iterrows():
            here = r.get("verdict", "not tested")
            agrees = (
                "not tested"
                if here == "not tested"
                else (here == "own drop beyond random")
                if claim == "drop"
                else (here != "own drop beyond random")
            )
            rows.append(
                {"emotion": e, "set": r["set"], "paper (Llama-3.1-8B)": claim, "this run": here, "agrees": agrees}
            )
    return pd.DataFrame(rows)


def random_means(arrays: dict, emotions: list[str]) -> dict[str, dict[tuple[str, str], np.ndarray]]:
    """Per (set, emotion): each random set's mean change of margin and of accuracy on the emotion's items."""
    out: dict = {"margin": {}, "accuracy": {}}
    y, base = arrays["y"], arrays["base"]
    for (name, e), rnd in arrays["random"].items():
        j = emotions.index(e)
        sel = y == j
        yy = y[sel]
        for metric, f in (("margin", stats.margin), ("accuracy", stats.correct)):
            out[metric][(name, e)] = mean_deltas(base[sel], rnd, yy, f)
    return out


def combine(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One grid's tables of every set, Holm-corrected together as one family."""
    t = pd.concat(list(tables.values()), ignore_index=True)
    return correct_family(t.drop(columns=["p_holm", "verdict"], errors="ignore"))
