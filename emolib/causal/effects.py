"""Stage 3's test that can say yes: each neuron set's own effect against matched random sets. The test statistics
(each own set's mean margin and accuracy change against the random sets', power, Holm within a family), the pilot
that picks the intervention on random sets only, the main test of every named set x emotion with its secondary arms
and random_sets.csv's rows, the titrated families of the detection curve, the random sets' scores beside the
masked x true table, and the generation protocol's check. The items are emolib.causal.splits, the scorer
emolib.causal.instrument, the matched sets emolib.causal.matched, the tables read from the results
emolib.causal.effect_tables and notebook 04's grids and contrasts emolib.causal.grids.

Conventions (fixed before looking at any result):
- A delta is ablated minus unablated on the same items, so a drop is negative. The margin of an item is its true
  label's score minus the best other label's score (nat, float32); accuracy is stats.correct (ties count 1/k).
- The intervention and calibration (ARMS: zero or mean ablation x calibration fixed or recomputed under the mask)
  are chosen by PILOT_RULE on the paper set's matched random sets, before any own set is scored; every other arm
  is reported as secondary columns.
- The main test of a set and emotion compares the own set's mean margin delta on that emotion's eval items with
  the mean deltas of `n_random_sets` random sets matched per layer, firing decile and activation-SD decile: a
  two-sided t prediction p (t = (own - mean) / (sd sqrt(1 + 1/R)), df = R - 1), Holm-corrected across every set x
  emotion. Its interval inverts the same test; its power is that test's (stats.t_power).
- The `attribution` set (emolib.causal.attribution) is the positive control and is read first.
- Notebook 04 tests a small family fixed in advance (dose slope, top minus bottom, against random series); the full
  grids are descriptive (emolib.causal.grids).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..identify import neurons
from ..lm import ablate, classify
from ..progress import tqdm
from . import budget, families, pooled, stats
from .instrument import ARMS, PAPER_ARM, Scorer, split_arm
from .matched import matched_sets, set_firing

ALPHA = 0.05
POWER_DELTA = 0.25  # nat: the margin shift beyond random that power is reported for (fixed before looking)


# ---------------------------------------------------------------- own vs matched random


def mean_deltas(base: np.ndarray, scored: np.ndarray, y: np.ndarray, metric=stats.margin) -> np.ndarray:
    """[K] each scored set's mean change of a per-item metric (margin or correct) from the baseline scores."""
    b = metric(base, y)
    return np.array([(metric(s, y) - b).mean() for s in scored])


def effect_row(base: np.ndarray, own: np.ndarray, rand: np.ndarray, y: np.ndarray, n_boot: int, seed: int) -> dict:
    """One own-vs-random test on the same items: scores [N, labels] unablated and own, [R, N, labels] random.

    The tested contrast is the own set's mean margin change minus the random sets' mean; its p (two-sided t
    prediction, R - 1 df) and its interval (omr_*_lo/hi, the same test inverted) both use the random sets' spread.
    own_d_margin_lo/hi resample items only: how precisely the own set's change on these items is measured."""
    mb, ab = stats.margin(base, y), stats.correct(base, y)
    d_own_m, d_own_a = stats.margin(own, y) - mb, stats.correct(own, y) - ab
    row = {
        "n_items": len(y),
        "baseline_accuracy": ab.mean(),
        "baseline_margin": mb.mean(),
        "own_d_margin": d_own_m.mean(),
        "own_d_accuracy": d_own_a.mean(),
        "n_random": len(rand),
    }
    own_ci = stats.paired_delta(mb, mb + d_own_m, n_boot, seed=seed)
    row.update(own_d_margin_lo=own_ci.lo, own_d_margin_hi=own_ci.hi)
    if len(rand) >= 2:
        rm, ra = mean_deltas(base, rand, y), mean_deltas(base, rand, y, stats.correct)
        dm, mlo, mhi = stats.prediction_ci(d_own_m.mean(), rm)
        da, alo, ahi = stats.prediction_ci(d_own_a.mean(), ra)
        row.update(
            random_d_margin=rm.mean(),
            random_d_margin_sd=rm.std(ddof=1),
            random_d_accuracy=ra.mean(),
            random_d_accuracy_sd=ra.std(ddof=1),
            own_minus_random_margin=dm,
            omr_margin_lo=mlo,
            omr_margin_hi=mhi,
            own_minus_random_accuracy=da,
            omr_accuracy_lo=alo,
            omr_accuracy_hi=ahi,
            p=stats.normal_p(d_own_m.mean(), rm, "two-sided"),
            p_accuracy=stats.normal_p(d_own_a.mean(), ra, "two-sided"),
        )
    return row


def correct_family(table: pd.DataFrame, alpha: float = ALPHA) -> pd.DataFrame:
    """Holm-adjust the family's p-values and state each verdict with its direction."""
    t = table.copy()
    if "p" not in t:
        t["p"] = np.nan
    t["p_holm"] = stats.holm(t["p"].to_numpy())
    t["verdict"] = [
        (
            "not tested"
            if not np.isfinite(ph)
            else "own drop beyond random"
            if ph < alpha and d < 0
            else "own gain beyond random"
            if ph < alpha
            else "no detectable effect"
        )
        for ph, d in zip(t["p_holm"], t.get("own_minus_random_margin", pd.Series(np.nan, t.index)))
    ]
    return t


def add_power(table: pd.DataFrame, delta: float = POWER_DELTA, alpha: float = ALPHA) -> pd.DataFrame:
    """Each test's power to detect a margin shift delta (nat) beyond random (two-sided t prediction test, R - 1 df,
    at Holm's strictest level alpha / m, m = the tests of its set), and the shift delta_80 at which it reaches 80%."""
    t = table.copy()
    for c in ("random_d_margin_sd", "n_random", "p"):
        if c not in t:
            t[c] = np.nan
    m = t.groupby("set", sort=False)["p"].transform(lambda x: max(1, int(x.notna().sum())))
    ok = [np.isfinite(sd) and np.isfinite(r) and r >= 2 for sd, r in zip(t["random_d_margin_sd"], t["n_random"])]
    t["power_delta"] = delta
    t["power"] = [
        stats.t_power(delta, sd, int(r), alpha, int(k)) if o else np.nan
        for sd, r, k, o in zip(t["random_d_margin_sd"], t["n_random"], m, ok)
    ]
    t["delta_80"] = [
        stats.delta_for_power(sd, int(r), alpha, int(k)) if o else np.nan
        for sd, r, k, o in zip(t["random_d_margin_sd"], t["n_random"], m, ok)
    ]
    return t


# ---------------------------------------------------------------- the pilot (random sets only)

PILOT_SEED_OFFSET = 1  # the pilot's matched sets come from seed + 1 (matched_sets), disjoint from the families
PILOT_RULE = (
    "descriptive: the paper set's matched random sets (other seeds than the test's families) are scored on "
    "every emotion's eval items under each arm; the table gives the SD of their mean margin change per "
    "arm, and the quietest arm is named, but the primary arm is the parameter file's `intervention`"
)


def pilot(
    scorer: Scorer, p: dict, ns: neurons.NeuronSets, items: pd.DataFrame, n_random: int, spread: torch.Tensor | None
) -> tuple[pd.DataFrame, dict]:
    """Per arm and emotion, the SD (and mean) of the paper set's matched random sets' mean margin change on the
    emotion's eval items; the primary arm by PILOT_RULE. No own set is scored."""
    E = p["emotions"]
    firing = set_firing(p, ns)
    y_all = np.array([E.index(e) for e in items.label])
    rows = []
    for j, e in enumerate(tqdm(E, desc="pilot: random sets under each arm")):
        own, sel = ns.by_layer(e), y_all == j
        if not sum(map(len, own.values())) or not sel.any():
            continue
        d, y = items.dialogue[sel].tolist(), y_all[sel]
        masks = matched_sets(own, firing, n_random, p["seed"] + PILOT_SEED_OFFSET, spread)
        for arm in scorer.arms():
            base = scorer.arm_scores(d, [{}], arm)[0]
            s = scorer.arm_scores(d, masks, arm)
            per_item = np.stack([stats.margin(x, y) for x in s]) - stats.margin(base, y)  # [R, n]
            dm = per_item.mean(1)
            between, within = budget.components(per_item)
            rows.append(
                {
                    "arm": arm,
                    "emotion": e,
                    "n_items": len(d),
                    "n_random": len(masks),
                    "random_d_margin": dm.mean(),
                    "random_d_margin_sd": dm.std(ddof=1),
                    "var_between_sets": between,
                    "var_set_x_item": within,
                }
            )
    table = pd.DataFrame(rows)
    return table, pilot_decision(table)


def pilot_decision(table: pd.DataFrame) -> dict:
    """The primary arm: the smallest median over emotions of the random sets' SD (PILOT_RULE), with the SDs."""
    med = table.groupby("arm")["random_d_margin_sd"].median() if len(table) else pd.Series(dtype=float)
    order = [PAPER_ARM] + [a for a in ARMS if a != PAPER_ARM]
    ranked = sorted(med.index, key=lambda a: (med[a], order.index(a) if a in order else len(order)))
    chosen = ranked[0] if ranked else PAPER_ARM
    paper = med.get(PAPER_ARM, np.nan)
    finite = lambda v: float(v) if np.isfinite(v) else None  # noqa: E731  (JSON has no NaN)
    return {
        "rule": PILOT_RULE,
        "quietest": chosen,
        "median_sd": {a: finite(med[a]) for a in med.index},
        "sd_ratio_to_paper_arm": {a: finite(med[a] / paper) if paper else None for a in med.index},
    }


# ---------------------------------------------------------------- the main test


def main_test(
    scorer: Scorer,
    p: dict,
    sets: dict[str, neurons.NeuronSets],
    items: pd.DataFrame,
    n_random: int,
    spread: torch.Tensor | None = None,
    secondary_random: int = 3,
) -> tuple[pd.DataFrame, dict, pd.DataFrame]:
    """Every named set x emotion under the primary arm: the own set's effect on the emotion's items against the
    images of n_random random families (emolib.causal.families); every other arm as secondary columns (all n_random
    families where the arm reads the primary's intervention, else secondary_random); plus the masked x true scores
    of every own set on all items. Returns the per-emotion table (Holm within each set), the score arrays and
    random_sets.csv's rows (every own and random value of every arm, from which the tables are recomputed)."""
    E = p["emotions"]
    dialogues = items.dialogue.tolist()
    y_all = np.array([E.index(e) for e in items.label])
    base = scorer.arm_scores(dialogues, [{}], desc="baseline")[0]
    primary_mode = split_arm(scorer.arm)[0]
    rows, rs = [], []
    arrays = {"base": base, "y": y_all, "own_all": {}, "random": {}, "masks": {}, "maps": {}}
    for name, ns in sets.items():
        firing = set_firing(p, ns)
        own_masks = [ns.by_layer(e) for e in E]
        maps = families.family_maps(families.union(dict(zip(E, own_masks))), firing, n_random, p["seed"], spread)
        arrays["maps"][name] = maps
        own_all = scorer.arm_scores(dialogues, own_masks, desc=f"{name}: own sets on all items")
        arrays["own_all"][name] = own_all
        for j, e in enumerate(tqdm(E, desc=f"{name}: own vs random families")):
            sel, own = y_all == j, own_masks[j]
            n_own = sum(map(len, own.values()))
            if not n_own or not sel.any():
                rows.append({"set": name, "emotion": e, "n_neurons": n_own, "n_items": int(sel.sum())})
                continue
            d, y = items.dialogue[sel].tolist(), y_all[sel]
            rnd_masks = [families.image(m, own) for m in maps]
            rnd = scorer.arm_scores(d, rnd_masks)
            arrays["random"][(name, e)], arrays["masks"][(name, e)] = rnd, rnd_masks
            row = {
                "set": name,
                "emotion": e,
                "n_neurons": n_own,
                "arm": scorer.arm,
                **effect_row(base[sel], own_all[j][sel], rnd, y, p["n_bootstrap"], p["seed"]),
            }
            rs += arm_records(name, scorer.arm, e, n_own, base[sel], own_all[j][sel], rnd, y)
            for arm in scorer.arms():
                if arm == scorer.arm:
                    continue
                r2 = n_random if split_arm(arm)[0] == primary_mode else secondary_random
                s = scorer.arm_scores(d, [{}, own] + rnd_masks[:r2], arm)
                er = effect_row(s[0], s[1], s[2:], y, p["n_bootstrap"], p["seed"])
                row.update(
                    {
                        f"omr_margin[{arm}]": er.get("own_minus_random_margin", np.nan),
                        f"p[{arm}]": er.get("p", np.nan),
                        f"n_random[{arm}]": r2,
                    }
                )
                rs += arm_records(name, arm, e, n_own, s[0], s[1], s[2:], y)
            rows.append(row)
    table = within_sets(pd.DataFrame(rows))
    for arm in scorer.arms():
        if f"p[{arm}]" in table:
            table[f"p_holm[{arm}]"] = np.concatenate(
                [stats.holm(g[f"p[{arm}]"].to_numpy()) for _, g in table.groupby("set", sort=False)]
            )
    return (add_power(table, p.get("power_delta", POWER_DELTA)), arrays, pooled.frame(rs))


def arm_records(
    name: str, arm: str, emotion: str, n_own: int, base: np.ndarray, own: np.ndarray, rnd: np.ndarray, y: np.ndarray
) -> list[dict]:
    """random_sets.csv rows of one set, arm and emotion: the own set's and each random family's mean changes."""
    o = [mean_deltas(base, own[None], y)[0], mean_deltas(base, own[None], y, stats.correct)[0]]
    return pooled.records(name, arm, "own", emotion, len(y), n_own, o[0], o[1]) + pooled.records(
        name, arm, "random", emotion, len(y), n_own, mean_deltas(base, rnd, y), mean_deltas(base, rnd, y, stats.correct)
    )


def within_sets(table: pd.DataFrame) -> pd.DataFrame:
    """correct_family within each set (the per-emotion tests are secondary: Holm over a set's emotions)."""
    if table.empty:
        return correct_family(table)
    return pd.concat([correct_family(g) for _, g in table.groupby("set", sort=False)])


def titration(
    scorer: Scorer,
    p: dict,
    ns: neurons.NeuronSets,
    control: neurons.NeuronSets,
    items: pd.DataFrame,
    shares: list[float],
    draws: int,
    start: int,
    spread: torch.Tensor | None = None,
) -> pd.DataFrame:
    """random_sets.csv rows of the titrated families: per share and draw, a random family of ns (families start,
    start + 1, ..., disjoint from the test's) with that share of each emotion's set replaced by the control's
    neurons, scored on each emotion's items under the primary arm."""
    E = p["emotions"]
    y_all = np.array([E.index(e) for e in items.label])
    own = [ns.by_layer(e) for e in E]
    ctl = [control.by_layer(e) for e in E]
    maps = families.family_maps(
        families.union(dict(zip(E, own))), set_firing(p, ns), draws, p["seed"], spread, start=start
    )
    fams = {
        (sh, k): families.titrated_family(maps[k], own, ctl, sh, p["seed"], k) for sh in shares for k in range(draws)
    }
    rows = []
    for j, e in enumerate(tqdm(E, desc=f"{ns.name}: titrated families")):
        sel = y_all == j
        if not sel.any() or not sum(map(len, own[j].values())):
            continue
        d, y = items.dialogue[sel].tolist(), y_all[sel]
        base = scorer.arm_scores(d, [{}])[0]
        keys = list(fams)
        s = scorer.arm_scores(d, [fams[k][j] for k in keys])
        dm, da = mean_deltas(base, s, y), mean_deltas(base, s, y, stats.correct)
        for (sh, k), m, a in zip(keys, dm, da):
            rows += pooled.records(
                ns.name,
                scorer.arm,
                "titrated",
                e,
                len(y),
                sum(map(len, fams[(sh, k)][j].values())),
                m,
                a,
                share=sh,
                start=k,
            )
    return pooled.frame(rows)


def specificity_random(
    scorer: Scorer, p: dict, sets: dict[str, neurons.NeuronSets], items: pd.DataFrame, arrays: dict, n_sets: int
) -> None:
    """Adds arrays['random_all'][set]: [E, n_sets, N, labels] scores of each emotion's first n_sets matched random
    sets on all items (the random rows beside the masked x true table)."""
    dialogues = items.dialogue.tolist()
    arrays.setdefault("random_all", {})
    for name in sets:
        per = []
        for e in p["emotions"]:
            masks = arrays["masks"].get((name, e), [])[:n_sets]
            per.append(
                scorer.arm_scores(dialogues, masks)
                if masks
                else np.full((n_sets, len(dialogues), len(p["emotions"])), np.nan)
            )
        arrays["random_all"][name] = np.stack(per)


def protocol_table(
    scorer: Scorer, clf_gen: classify.Classifier, p: dict, ns: neurons.NeuronSets, items: pd.DataFrame, n_random: int
) -> pd.DataFrame:
    """Own minus mean random accuracy change per emotion under greedy generation (the published
    re-implementation's protocol) with zero ablation, beside the uncalibrated scores (descriptive, n_random sets)."""
    E = p["emotions"]
    firing = set_firing(p, ns)
    rows = []
    for j, e in enumerate(tqdm(E, desc="protocols")):
        sel = items.label == e
        d = items.dialogue[sel].tolist()
        own = ns.by_layer(e)
        if not d or not sum(map(len, own.values())):
            continue
        masks = [{}, own] + matched_sets(own, firing, n_random, p["seed"])
        raw = scorer.scores(d, masks, mode="zero")
        y = np.full(len(d), j)
        acc = np.array([stats.correct(x, y).mean() for x in raw])
        row = {"emotion": e, "n_items": len(d), "uncalibrated": (acc[1] - acc[0]) - (acc[2:] - acc[0]).mean()}
        gen = []
        for m in masks:
            with ablate.ablate(clf_gen.model, m):
                gen.append(np.mean([x == e for x in classify.generate_labels(clf_gen, d, p["max_new_tokens"])]))
        row["generate"] = (gen[1] - gen[0]) - (np.array(gen[2:]) - gen[0]).mean()
        row["generate_baseline"] = gen[0]
        rows.append(row)
    return pd.DataFrame(rows).set_index("emotion")
