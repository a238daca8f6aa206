"""Stage 5's outcome and its tests, read from the generation records: degenerate replies, the fluency-matched test
dose of each intervention, each condition's paired change of P(target), the confirmatory pooled test and the
secondary per-emotion tests against random families (emolib.causal.pooled), the both-scorers claims, and the
descriptive tables (trade-off, the prompting ceiling beside steering, dose-response, sample replies, set SDs).

Longer than 400 lines: the degenerate-reply rule, the test dose, the paired outcome and the tests all read the same
records frame; they are the stage's statistics in one place.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from . import stats
from .intervene import BASELINE, DIRECTION_SET, OWN, PROMPT_SET

ALPHA = 0.05


# ---------------------------------------------------------------- fluency, degenerate replies and the test dose

PPL_FACTOR_NOTE = (
    "the test dose of an intervention is the largest dose of steer_doses at which the median over its "
    "own replies (every emotion and prompt) of the reply's perplexity over the unsteered reply's on the "
    "same prompt and noise (both under the unsteered model) stays within steer_ppl_factor"
)


def mark_degenerate(rec: pd.DataFrame, ppl_cap: float) -> tuple[pd.DataFrame, float]:
    """(records with `bad`: the reply is empty, repetitive or has perplexity above ppl_cap x the unsteered model's
    median; the perplexity cap)."""
    base = rec[rec.random == BASELINE].drop_duplicates(["prompt", "sample"])
    cap = ppl_cap * float(np.nanmedian(base["ppl"])) if base["ppl"].notna().any() else np.inf
    rec = rec.copy()
    high = rec["ppl"].fillna(np.inf) > cap
    rec["bad"] = np.where(
        rec["degenerate"].astype(str) != "",
        rec["degenerate"].astype(str),
        np.where(high & rec["ppl"].notna(), "perplexity", ""),
    )
    return rec, cap


def test_doses(rec: pd.DataFrame, names: list[str], doses: list[float], factor: float) -> pd.DataFrame:
    """Per intervention (named set or the direction) and dose: `ratio`, the median over its own replies (every emotion
    and prompt) of the reply's perplexity over the unsteered reply's on the same prompt and noise (paired by the
    common random numbers: a median of many paired ratios, not one over a median of a few unsteered replies), the
    medians beside it, and `chosen`: the largest dose with ratio <= factor (the pre-specified, fluency-matched test
    dose; none when no positive dose keeps it)."""
    first = rec[rec.scorer == rec.scorer.iloc[0]]
    plain = first[first.random == BASELINE]
    base = float(np.nanmedian(plain["ppl"]))
    base_of = plain.drop_duplicates(["prompt", "sample"]).set_index(["prompt", "sample"])["ppl"].astype(float)
    rows = []
    for name in names:
        for a in sorted(d for d in doses if d > 0):
            g = first[(first["set"] == name) & (first.random == OWN) & (first.dose == a)]
            if g.empty:
                continue
            ppl = g["ppl"].astype(float).to_numpy()
            paired = ppl / base_of.reindex(list(zip(g.prompt, g["sample"]))).to_numpy()
            med = float(np.nanmedian(ppl)) if np.isfinite(ppl).any() else np.nan
            ratio = float(np.nanmedian(paired)) if np.isfinite(paired).any() else np.nan
            rows.append(
                {
                    "intervention": name,
                    "dose": a,
                    "median_ppl": med,
                    "unsteered_median_ppl": base,
                    "ratio": ratio,
                    "fluent": bool(ratio <= factor),
                }
            )
    t = pd.DataFrame(rows, columns=["intervention", "dose", "median_ppl", "unsteered_median_ppl", "ratio", "fluent"])
    t["chosen"] = False
    for _name, g in t.groupby("intervention", sort=False):
        ok = g[g.fluent]
        if len(ok):
            t.loc[ok.dose.idxmax(), "chosen"] = True
    return t


def chosen_doses(doses: pd.DataFrame) -> dict[str, float]:
    """intervention -> its test dose (only those with a fluent dose)."""
    c = doses[doses.chosen]
    return dict(zip(c.intervention, c.dose.astype(float)))


# ---------------------------------------------------------------- the continuous outcome and the tests


def effects(rec: pd.DataFrame, emotions: list[str], max_bad: float) -> pd.DataFrame:
    """Per scorer x condition (set, emotion, dose, random): d_p, the mean over prompts of the reply's P(target)
    minus the unsteered reply's P(target) on the same prompt (paired: the same noise), with each degenerate reply's
    change counted as 0 (never a success); bad_share; degenerate = more than max_bad of the replies degenerate;
    excluded = a degenerate own condition (a set's own neurons or the emotion direction: reported, never tested).
    A degenerate random condition stays in its family: a random push that breaks the text is a draw of the null in
    which the target emotion did not rise (RANDOM_DEGENERATE_RULE); median perplexity."""
    r = rec[rec.random != BASELINE]
    base = rec[rec.random == BASELINE]
    rows = []
    for scorer, g_s in r.groupby("scorer", sort=False):
        b = base[base.scorer == scorer].set_index(["prompt", "sample"])
        for (kind, name, e, dose, rnd), g in g_s.groupby(["kind", "set", "emotion", "dose", "random"], sort=False):
            bp = b.loc[list(zip(g.prompt, g["sample"])), f"p_{e}"].to_numpy()
            bad = (g["bad"] != "").to_numpy()
            d = np.where(bad, 0.0, g["target_p"].to_numpy() - bp)
            rows.append(
                {
                    "scorer": scorer,
                    "kind": kind,
                    "set": name,
                    "emotion": e,
                    "dose": dose,
                    "random": rnd,
                    "n": len(g),
                    "target_p": float(g["target_p"].mean()),
                    "baseline_p": float(bp.mean()),
                    "d_p": float(d.mean()),
                    "bad_share": float(bad.mean()),
                    "degenerate": bool(bad.mean() > max_bad),
                    "excluded": bool(bad.mean() > max_bad and rnd == OWN),
                    "median_ppl": float(np.nanmedian(g["ppl"])) if g["ppl"].notna().any() else np.nan,
                }
            )
    return pd.DataFrame(rows)


RANDOM_DEGENERATE_RULE = (
    "a degenerate reply counts as no change, in own and random conditions alike; an own condition with more than "
    "steer_max_degenerate of its replies degenerate is excluded from the tests and listed; a random family is never "
    "dropped for a degenerate condition (a random push that breaks the text is a draw of the null in which the "
    "target emotion did not rise)"
)


def degenerate_note(eff: pd.DataFrame, cap: float) -> str:
    """One markdown line: the perplexity cap, the own conditions excluded (listed) and the degenerate random
    conditions kept in their families as no change (counted), over the first scorer's rows."""
    e = eff[eff.scorer == eff.scorer.iloc[0]] if len(eff) else eff
    out = e[e.excluded] if len(e) else e
    kept = int((e.degenerate & ~e.excluded).sum()) if len(e) else 0
    listed = ", ".join(
        (r.kind if r.kind == r.set else f"{r.kind} {r.set}")
        + f" {r.emotion} dose {r.dose:g}"
        + (f" #{r.random}" if r.random >= 0 else "")
        for r in out.itertuples()
    )
    return (
        f"Degenerate replies: perplexity cap {cap:.1f}; {len(out)} own condition(s) excluded from the tests"
        + (f": {listed}" if listed else "")
        + f"; {kept} degenerate random condition(s) kept in their families as no change."
    )


def _unit(verdict: str) -> str:
    return verdict.replace(" nat", " in P(target)")


def _cells(
    eff: pd.DataFrame, scorer: str, name: str, dose: float, emotions: list[str]
) -> tuple[pd.Series, pd.DataFrame, list[str]]:
    """(own d_p by emotion, random d_p [family x emotion], excluded condition labels) of one set at one dose, the
    excluded (degenerate) conditions removed."""
    g = eff[(eff.scorer == scorer) & (eff["set"] == name) & np.isclose(eff.dose, dose)]
    out = [f"{r.kind} {r.emotion}" + (f" #{r.random}" if r.random >= 0 else "") for r in g[g.excluded].itertuples()]
    ok = g[~g.excluded]
    own = ok[ok.random == OWN].set_index("emotion")["d_p"].reindex([e for e in emotions])
    rnd = ok[ok.random >= 0].pivot_table(index="random", columns="emotion", values="d_p", aggfunc="first")
    return own, rnd, out


def with_test_columns(t: pd.DataFrame) -> pd.DataFrame:
    """t with the test columns pooled.decide reads, NaN where no row could be tested (a null without spread)."""
    return t.assign(**{c: np.nan for c in ("p", "p_equivalence", "own_minus_random", "lo", "hi") if c not in t})


def pooled_table(
    eff: pd.DataFrame,
    dose_of: dict[str, float],
    emotions: list[str],
    delta: float,
    power_delta: float,
    alpha: float = ALPHA,
) -> pd.DataFrame:
    """The confirmatory test, per scorer and intervention at its test dose: the mean over emotions of the own d_p
    against the same mean for each random family (neuron sets) or random-direction family (the direction), by
    emolib.causal.pooled's test_row (t prediction test, TOST equivalence within +-delta); Holm over the named sets
    within each scorer (the direction, the positive control, apart). Emotions whose own condition is degenerate are
    left out and listed; random families keep their degenerate conditions (RANDOM_DEGENERATE_RULE)."""
    from . import pooled

    rows = []
    for scorer in dict.fromkeys(eff.scorer):
        names = [n for n in dose_of if n != DIRECTION_SET]
        for name in [n for n in dose_of if n == DIRECTION_SET] + names:
            own, rnd, excl = _cells(eff, scorer, name, dose_of[name], emotions)
            keep = [e for e in emotions if np.isfinite(own.get(e, np.nan)) and e in rnd.columns]
            fams = rnd[keep].dropna() if keep else rnd.iloc[:0]
            dropped = len(rnd) - len(fams)
            m = max(1, len(names)) if name != DIRECTION_SET else 1
            row = test_row_safe(
                float(own[keep].mean()) if keep else np.nan, fams.mean(axis=1).to_numpy(), delta, m, alpha, power_delta
            )
            rows.append(
                {
                    "scorer": scorer,
                    "intervention": name,
                    "role": "positive control" if name == DIRECTION_SET else "test",
                    "dose": dose_of[name],
                    "n_emotions": len(keep),
                    "emotions": ", ".join(keep),
                    "families_dropped": dropped,
                    "excluded": "; ".join(excl),
                    **row,
                }
            )
    t = pd.DataFrame(rows)
    if t.empty:  # no intervention kept fluency at any dose: nothing is tested
        return pd.DataFrame(
            columns=[
                "scorer",
                "intervention",
                "role",
                "dose",
                "n_emotions",
                "own_minus_random",
                "lo",
                "hi",
                "p",
                "p_holm",
                "p_equivalence",
                "p_equivalence_holm",
                "verdict",
            ]
        )
    t = with_test_columns(t)
    parts = [pooled.decide(g, delta, alpha) for _, g in t.groupby(["scorer", "role"], sort=False)]
    out = pd.concat(parts).reindex(t.index)
    out["verdict"] = out["verdict"].map(_unit)
    return out


def test_row_safe(own: float, null: np.ndarray, delta: float, m: int, alpha: float, power_delta: float) -> dict:
    """pooled.test_row, with the random SD floored away from 0 in power (a null without spread tests nothing)."""
    from . import pooled

    null = np.asarray(null, dtype=float)
    if len(null[np.isfinite(null)]) >= 2 and np.nanstd(null) == 0:
        return {
            "own": own,
            "n_random": int(np.isfinite(null).sum()),
            "random_mean": float(np.nanmean(null)),
            "random_sd": 0.0,
        }
    return pooled.test_row(own, null, delta, m, alpha, power_delta)


BOTH_SCORERS_RULE = (
    "a claim needs both scorers: 'effect beyond random' only when both scorers' pooled tests reject "
    "(Holm) in the same direction; 'equivalent to random' only when both show equivalence; "
    "'scorers disagree' when one rejects and the other does not (or they reject in opposite "
    "directions); otherwise 'undecided'. With one scorer no claim is made."
)


def claims(pooled_t: pd.DataFrame, n_scorers: int) -> pd.DataFrame:
    """Per intervention: the claim under the both-scorers rule (fixed in advance; BOTH_SCORERS_RULE)."""
    rows = []
    for name, g in pooled_t.groupby("intervention", sort=False):
        v = g["verdict"].astype(str).tolist()
        gains, drops = [x.endswith("(gain)") for x in v], [x.endswith("(drop)") for x in v]
        eq = [x.startswith("equivalent") for x in v]
        if n_scorers < 2 or len(g) < 2:
            claim = "no claim (one scorer only)"
        elif all(gains):
            claim = "effect beyond random (gain)"
        elif all(drops):
            claim = "effect beyond random (drop)"
        elif any(gains) or any(drops):
            claim = "scorers disagree"
        elif all(eq):
            claim = "equivalent to random"
        elif any(x == "not tested" for x in v):
            claim = "not tested"
        else:
            claim = "undecided"
        rows.append(
            {
                "intervention": name,
                "role": g["role"].iloc[0],
                "dose": g["dose"].iloc[0],
                **{f"verdict [{s}]": x for s, x in zip(g.scorer, v)},
                "claim": claim,
            }
        )
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=["intervention", "role", "dose", "claim"])


def per_emotion_table(
    eff: pd.DataFrame,
    dose_of: dict[str, float],
    emotions: list[str],
    delta: float,
    power_delta: float,
    alpha: float = ALPHA,
) -> pd.DataFrame:
    """The secondary tests: per scorer, intervention and emotion, own d_p against its random sets' (Holm within each
    scorer and intervention); degenerate conditions left out."""
    from . import pooled

    parts = []
    for scorer in dict.fromkeys(eff.scorer):
        for name, dose in dose_of.items():
            own, rnd, _ = _cells(eff, scorer, name, dose, emotions)
            rows = []
            for e in emotions:
                null = rnd[e].dropna().to_numpy() if e in rnd.columns else np.array([])
                m = len(emotions)
                rows.append(
                    {
                        "scorer": scorer,
                        "intervention": name,
                        "emotion": e,
                        "dose": dose,
                        **test_row_safe(float(own.get(e, np.nan)), null, delta, m, alpha, power_delta),
                    }
                )
            t = pd.DataFrame(rows)
            t = with_test_columns(t)
            parts.append(pooled.decide(t, delta, alpha))
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if len(out):
        out["verdict"] = out["verdict"].map(_unit)
    return out


# ---------------------------------------------------------------- descriptive tables


def tradeoff_table(eff: pd.DataFrame, dose_of: dict[str, float]) -> pd.DataFrame:
    """Per scorer: target-emotion score (d_p, mean over emotions) and fluency (median perplexity) of each
    intervention at its test dose, each of its random families, and the prompting ceiling; degenerate shares."""
    rows = []
    for scorer in dict.fromkeys(eff.scorer):
        e_s = eff[eff.scorer == scorer]
        for name, dose in dose_of.items():
            g = e_s[(e_s["set"] == name) & np.isclose(e_s.dose, dose)]
            for rnd, x in g.groupby("random", sort=True):
                rows.append(
                    {
                        "scorer": scorer,
                        "intervention": name,
                        "kind": x.kind.iloc[0],
                        "random": rnd,
                        "dose": dose,
                        "d_p": float(x.d_p.mean()),
                        "median_ppl": float(x.median_ppl.median()),
                        "bad_share": float(x.bad_share.mean()),
                        "excluded": int(x.excluded.sum()),
                    }
                )
        pr = e_s[e_s.kind == "prompt"]
        if len(pr):
            rows.append(
                {
                    "scorer": scorer,
                    "intervention": PROMPT_SET,
                    "kind": "prompt",
                    "random": OWN,
                    "dose": 0.0,
                    "d_p": float(pr.d_p.mean()),
                    "median_ppl": float(pr.median_ppl.median()),
                    "bad_share": float(pr.bad_share.mean()),
                    "excluded": int(pr.excluded.sum()),
                }
            )
    return pd.DataFrame(rows)


def beside_table(eff: pd.DataFrame, dose_of: dict[str, float]) -> pd.DataFrame:
    """Per scorer and emotion: the prompting ceiling beside every steered condition at its test dose (own d_p; the
    random families' mean), with median perplexities."""
    rows = []
    for (scorer, e), g in eff.groupby(["scorer", "emotion"], sort=False):
        row = {"scorer": scorer, "emotion": e}
        pr = g[g.kind == "prompt"]
        row["prompt d_p"] = float(pr.d_p.iloc[0]) if len(pr) else np.nan
        row["prompt ppl"] = float(pr.median_ppl.iloc[0]) if len(pr) else np.nan
        for name, dose in dose_of.items():
            x = g[(g["set"] == name) & np.isclose(g.dose, dose)]
            o, r = x[x.random == OWN], x[x.random >= 0]
            row[f"{name} d_p"] = float(o.d_p.iloc[0]) if len(o) else np.nan
            row[f"{name} ppl"] = float(o.median_ppl.iloc[0]) if len(o) else np.nan
            row[f"{name} random d_p"] = float(r.d_p.mean()) if len(r) else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def dose_table(rec: pd.DataFrame, emotions: list[str], doses: list[float], n_boot: int, seed: int) -> pd.DataFrame:
    """Descriptive dose-response: per scorer x intervention x emotion x dose (0 = unsteered), mean P(target) and its
    change from dose 0 with a paired bootstrap 95% interval over prompts (the same noise per prompt everywhere)."""
    rows = []
    own = rec[(rec.random == OWN) & (rec.kind != "prompt")]
    for (scorer, name), _ in own.groupby(["scorer", "set"], sort=False):
        base = rec[(rec.scorer == scorer) & (rec.random == BASELINE)]
        for e in emotions:
            b = base[f"p_{e}"].to_numpy()
            for a in sorted(doses):
                x = (
                    b
                    if a == 0
                    else own[
                        (own.scorer == scorer) & (own["set"] == name) & (own.emotion == e) & np.isclose(own.dose, a)
                    ]["target_p"].to_numpy()
                )
                if not len(x):
                    continue
                dp = stats.paired_delta(b, x, n_boot, seed=seed)
                rows.append(
                    {
                        "scorer": scorer,
                        "set": name,
                        "emotion": e,
                        "dose": a,
                        "n": len(x),
                        "target_p": float(np.mean(x)),
                        "d_p": dp.mean,
                        "d_p_lo": dp.lo,
                        "d_p_hi": dp.hi,
                    }
                )
    return pd.DataFrame(rows)


def samples_table(
    rec: pd.DataFrame, emotions: list[str], doses: list[float], set_name: str, prompt: int = 0
) -> pd.DataFrame:
    """One prompt's continuation per emotion (rows) and dose (columns) under an intervention (first scorer)."""
    r = rec[rec.scorer == rec.scorer.iloc[0]]
    base = r[(r.random == BASELINE) & (r.prompt == prompt) & (r["sample"] == 0)]
    out = {}
    for e in emotions:
        row = {}
        for a in sorted(doses):
            x = (
                base
                if a == 0
                else r[
                    (r.random == OWN)
                    & (r["set"] == set_name)
                    & (r.emotion == e)
                    & np.isclose(r.dose, a)
                    & (r.prompt == prompt)
                    & (r["sample"] == 0)
                ]
            )
            row[f"dose {a:g}"] = x["text"].iloc[0] if len(x) else ""
        pr = r[(r.kind == "prompt") & (r.emotion == e) & (r.prompt == prompt) & (r["sample"] == 0)]
        if len(pr):
            row["prompted"] = pr["text"].iloc[0]
        out[e] = row
    return pd.DataFrame(out).T


def _span(values, fmt: str) -> str:
    """'a' when every value formats alike, else 'a to b' (lowest to highest)."""
    lo, hi = fmt.format(min(values)), fmt.format(max(values))
    return lo if lo == hi else f"{lo} to {hi}"


def set_sd_table(sets: dict, sd: torch.Tensor, emotions: list[str]) -> pd.DataFrame:
    """Per set and emotion: neurons, and the median and largest activation SD among them (the shape of the push)."""
    rows = []
    for name, ns in sets.items():
        for e in emotions:
            v = [float(sd[layer, i]) for layer, idx in ns.by_layer(e).items() for i in idx]
            rows.append(
                {
                    "set": name,
                    "emotion": e,
                    "n_neurons": len(v),
                    "median_sd": float(np.median(v)) if v else np.nan,
                    "max_sd": max(v) if v else np.nan,
                }
            )
    return pd.DataFrame(rows)
