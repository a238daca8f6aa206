"""The confirmatory test of stage 3 (and notebook 04's depth contrast): one pooled test per named set.

Fixed before looking:
- The statistic of a set is the mean over emotions of its own emotion set's mean margin change on that emotion's
  eval items (nat). Its null is R random families (emolib.causal.families) scored the same way: family r's statistic
  is the mean over the same emotions of its emotion sets' changes on the same items.
- The test is the two-sided t prediction test of emolib.causal.stats (t = (own - mean) / (sd sqrt(1 + 1/R)),
  R - 1 df), Holm-corrected over the named sets (`paper`, `selective`, `directions`, ...); the control sets
  (`attribution`, `weights`) and the titrated families are outside that family.
- Beside it, equivalence: two one-sided tests (TOST) against +-delta (`equivalence_margin`) on the same prediction
  distribution, Holm-corrected over the same sets. Verdicts: "effect beyond random" (a drop or a gain), "equivalent
  to random within +-delta", or "undecided". The smallest delta for which equivalence holds is reported too (at
  Holm's strictest level alpha / m).
- Every number is recomputable from random_sets.csv (one row per set, arm, own or random or titrated draw, and
  emotion): `per_emotion` and `pooled` read only that table.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..identify.neurons import CONTROL_SETS
from . import stats

ALPHA = 0.05
RANDOM_SETS_FILE = "random_sets.csv"
POOLED_FILE = "pooled.csv"
TITRATION_FILE = "titration.csv"
CONTROLS = CONTROL_SETS  # sets built to matter (or chosen from the weights): outside the Holm family
COLUMNS = ["set", "arm", "kind", "share", "draw", "emotion", "n_items", "n_neurons", "d_margin", "d_accuracy"]


def records(
    name: str,
    arm: str,
    kind: str,
    emotion: str,
    n_items: int,
    n_neurons: int,
    d_margin,
    d_accuracy,
    share: float = float("nan"),
    start: int = 0,
) -> list[dict]:
    """random_sets.csv rows: one per draw of an own set (draw -1), random family or titrated family."""
    dm, da = np.atleast_1d(d_margin), np.atleast_1d(d_accuracy)
    return [
        {
            "set": name,
            "arm": arm,
            "kind": kind,
            "share": share,
            "draw": -1 if kind == "own" else start + k,
            "emotion": emotion,
            "n_items": n_items,
            "n_neurons": n_neurons,
            "d_margin": float(m),
            "d_accuracy": float(a),
        }
        for k, (m, a) in enumerate(zip(dm, da))
    ]


def frame(rows: list[dict]) -> pd.DataFrame:
    """random_sets.csv as a table with its columns in order."""
    return pd.DataFrame(rows, columns=COLUMNS)


def test_row(
    own: float, null: np.ndarray, delta: float, m: int = 1, alpha: float = ALPHA, power_delta: float | None = None
) -> dict:
    """Own against random values: the difference, its 95% interval, p, the equivalence p against +-delta and the
    smallest equivalence margin at level alpha / m, the difference in random-set SDs, and power at power_delta."""
    null = np.asarray(null, dtype=float)
    null = null[np.isfinite(null)]
    if len(null) < 2 or not np.isfinite(own):
        return {"own": own, "n_random": len(null)}
    d, lo, hi = stats.prediction_ci(own, null)
    sd = float(null.std(ddof=1))
    pd_ = power_delta if power_delta is not None else delta
    return {
        "own": own,
        "n_random": len(null),
        "random_mean": float(null.mean()),
        "random_sd": sd,
        "own_minus_random": d,
        "lo": lo,
        "hi": hi,
        "in_sds": d / sd if sd > 0 else np.nan,
        "p": stats.normal_p(own, null, "two-sided"),
        "p_equivalence": stats.tost_p(own, null, delta),
        "equivalence_bound": stats.equivalence_bound(own, null, alpha / m),
        "power": stats.t_power(pd_, sd, len(null), alpha, m),
    }


def decide(t: pd.DataFrame, delta: float, alpha: float = ALPHA) -> pd.DataFrame:
    """Holm over the rows (p and equivalence p, separately) and the three verdicts."""
    t = t.copy()
    t["p_holm"] = stats.holm(t["p"].to_numpy(dtype=float)) if len(t) else []
    t["p_equivalence_holm"] = stats.holm(t["p_equivalence"].to_numpy(dtype=float)) if len(t) else []
    t["verdict"] = [
        verdict(ph, pe, d, delta, alpha)
        for ph, pe, d in zip(t["p_holm"], t["p_equivalence_holm"], t["own_minus_random"])
    ]
    return t


def verdict(p_holm: float, p_eq_holm: float, d: float, delta: float, alpha: float = ALPHA) -> str:
    """'effect beyond random (drop|gain)', 'equivalent to random within +-delta', 'undecided' or 'not tested'."""
    if not np.isfinite(p_holm):
        return "not tested"
    if p_holm < alpha:
        return f"effect beyond random ({'drop' if d < 0 else 'gain'})"
    if np.isfinite(p_eq_holm) and p_eq_holm < alpha:
        return f"equivalent to random within ±{delta:g} nat"
    return "undecided"


def pooled_values(
    rs: pd.DataFrame, name: str, arm: str, emotions: list[str] | None = None
) -> tuple[float, np.ndarray, list[str]]:
    """(own statistic, [R] random families' statistics, emotions pooled) of one set and arm: means over the emotions
    that have both an own value and every random draw."""
    g = rs[(rs["set"] == name) & (rs["arm"] == arm)]
    own = g[g.kind == "own"].set_index("emotion")["d_margin"]
    rnd = g[g.kind == "random"].pivot_table(index="draw", columns="emotion", values="d_margin", aggfunc="first")
    keep = [
        e
        for e in (emotions or list(own.index))
        if e in own.index and e in rnd.columns and np.isfinite(own[e]) and rnd[e].notna().all()
    ]
    if not keep or not len(rnd):
        return float("nan"), np.array([]), []
    return float(own[keep].mean()), rnd[keep].mean(axis=1).to_numpy(), keep


def pooled(rs: pd.DataFrame, arm: str, delta: float, power_delta: float, alpha: float = ALPHA) -> pd.DataFrame:
    """The pooled table of one arm: a row per set, the named sets Holm-corrected as one family, the controls apart."""
    names = list(dict.fromkeys(rs.loc[rs.arm == arm, "set"]))
    tests = [n for n in names if n not in CONTROLS]
    rows = []
    for n in names:
        own, null, keep = pooled_values(rs, n, arm)
        m = max(1, len(tests)) if n in tests else max(1, len(names) - len(tests))  # Holm's m of its family
        rows.append(
            {
                "set": n,
                "role": "control" if n in CONTROLS else "test",
                "arm": arm,
                "n_emotions": len(keep),
                "n_items": int(
                    rs[(rs.set == n) & (rs.arm == arm) & (rs.kind == "own") & rs.emotion.isin(keep)].n_items.sum()
                ),
                **test_row(own, null, delta, m, alpha, power_delta),
            }
        )
    t = pd.DataFrame(rows)
    for c in ("p", "p_equivalence", "own_minus_random"):
        if c not in t:
            t[c] = np.nan
    parts = [decide(t[t.role == r], delta, alpha) for r in ("test", "control") if (t.role == r).any()]
    out = pd.concat(parts) if parts else t
    return out.reindex(t.index)


def pooled_all(rs: pd.DataFrame, arms: list[str], primary: str, delta: float, power_delta: float) -> pd.DataFrame:
    """The pooled tables of every arm with random families (the primary first), one table."""
    tabs = [
        pooled(rs, a, delta, power_delta).assign(primary=a == primary)
        for a in [primary] + [a for a in arms if a != primary]
        if ((rs.arm == a) & (rs.kind == "random")).any()
    ]
    return pd.concat(tabs, ignore_index=True) if tabs else pd.DataFrame()


def per_emotion(rs: pd.DataFrame, arm: str, delta: float, power_delta: float, alpha: float = ALPHA) -> pd.DataFrame:
    """The secondary tests: per set and emotion, own against that emotion's random sets (Holm within each set;
    power and the equivalence bound at Holm's strictest level within the set)."""
    parts = []
    g_all = rs[(rs.arm == arm) & (rs.kind.isin(["own", "random"]))]
    for name, g_set in g_all.groupby("set", sort=False):
        cells = [(e, g) for e, g in g_set.groupby("emotion", sort=False) if (g.kind == "own").any()]
        m = max(1, sum(int((g.kind == "random").sum() >= 2) for _, g in cells))
        rows = [
            {
                "set": name,
                "emotion": e,
                **test_row(
                    float(g[g.kind == "own"].d_margin.iloc[0]),
                    g[g.kind == "random"].d_margin,
                    delta,
                    m,
                    alpha,
                    power_delta,
                ),
            }
            for e, g in cells
        ]
        t = pd.DataFrame(rows)
        for c in ("p", "p_equivalence", "own_minus_random"):
            if c not in t:
                t[c] = np.nan
        parts.append(decide(t, delta, alpha))
    return pd.concat(parts) if parts else pd.DataFrame()


def titration(rs: pd.DataFrame, arm: str, reference: str, n_tests: int, alpha: float = ALPHA) -> pd.DataFrame:
    """Per titrated family: its pooled statistic against the reference set's random families (the same null as that
    set's pooled test), its real pooled effect (own minus random mean, nat) and whether the pooled test rejects at
    Holm's strictest level alpha / n_tests."""
    _, null, keep = pooled_values(rs, reference, arm)
    g = rs[(rs.kind == "titrated") & (rs.arm == arm) & (rs.set == reference) & rs.emotion.isin(keep)]
    rows = []
    for (share, draw), x in g.groupby(["share", "draw"], sort=True):
        own = float(x.set_index("emotion").d_margin.reindex(keep).mean())
        p = stats.normal_p(own, null, "two-sided") if len(null) >= 2 else np.nan
        rows.append(
            {
                "share": share,
                "draw": draw,
                "own": own,
                "effect": own - float(np.mean(null)),
                "p": p,
                "detected": bool(p < alpha / max(1, n_tests)),
            }
        )
    return pd.DataFrame(rows)


def detection_curve(tit: pd.DataFrame) -> pd.DataFrame:
    """Per share: the mean real pooled effect (nat), its spread over draws, and the detection rate."""
    if tit.empty:
        return pd.DataFrame(columns=["share", "effect", "effect_sd", "draws", "detected"])
    return (
        tit.groupby("share")
        .agg(
            effect=("effect", "mean"),
            effect_sd=("effect", "std"),
            draws=("draw", "size"),
            detected=("detected", "mean"),
        )
        .reset_index()
    )


def smallest_detected(curve: pd.DataFrame, rate: float = 0.8) -> float:
    """The smallest |mean effect| (nat) among the shares detected at least `rate` of the time (NaN if none)."""
    ok = curve[curve.detected >= rate]
    return float(ok.effect.abs().min()) if len(ok) else float("nan")
