"""Two identification methods head to head: the entropy (`paper`) set and the contribution (`directions`) set,
each against chance and against the `attribution` positive control, and every causal result side by side with a
plain-language reading generated from the numbers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from . import neurons

ENTROPY, CONTRIB, CONTROL = "paper", "directions", "attribution"


def overlap(a: neurons.NeuronSets, b: neurons.NeuronSets, n_draws: int = 200, seed: int = 0) -> pd.DataFrame:
    """Per emotion: both sets' sizes, neurons shared, Jaccard, and the mean Jaccard of random sets of those sizes
    among all L x d_ff neurons (chance), with their ratio."""
    total = a.n_layers * a.d_ff
    rows = []
    for e in a.emotions:
        x, y = a.sets[e], b.sets.get(e, [])
        chance = neurons.random_jaccard(len(x), len(y), total, n_draws, seed) if x and y else np.nan
        j = neurons.jaccard(x, y)
        rows.append(
            {
                "emotion": e,
                f"n {a.name}": len(x),
                f"n {b.name}": len(y),
                "shared": len({tuple(v) for v in x} & {tuple(v) for v in y}),
                "jaccard": j,
                "chance jaccard": chance,
                "x chance": j / chance if chance and np.isfinite(chance) else np.nan,
            }
        )
    return pd.DataFrame(rows).set_index("emotion")


def depth_shares(sets: dict[str, neurons.NeuronSets]) -> pd.DataFrame:
    """Share of each set's neurons (all emotions) per layer at relative depth, beside all neurons; columns named
    for plots_identify.depth_vs_pool."""
    any_set = next(iter(sets.values()))
    L = any_set.n_layers
    out = {"relative depth": [neurons.relative_depth(l, L) for l in range(L)]}
    for name, ns in sets.items():
        layers = np.array([l for e in ns.emotions for l, _ in ns.sets[e]], dtype=int)
        out[f"selected ({name})"] = np.bincount(layers, minlength=L) / max(1, len(layers))
    out["all neurons"] = np.full(L, 1 / L)
    return pd.DataFrame(out, index=pd.RangeIndex(L, name="layer"))


def median_depth(sets: dict[str, neurons.NeuronSets]) -> dict[str, float]:
    """Each set's median relative depth over its neurons."""
    return {
        name: float(np.median([neurons.relative_depth(l, ns.n_layers) for e in ns.emotions for l, _ in ns.sets[e]]))
        if any(ns.sets.values())
        else np.nan
        for name, ns in sets.items()
    }


def overlap_lines(table: pd.DataFrame, a: str, b: str) -> list[str]:
    """Sentences on one overlap table (from the numbers)."""
    t = table[np.isfinite(table["chance jaccard"])]
    if t.empty:
        return [f"The `{a}` and `{b}` sets share no emotion with neurons in both."]
    beyond = t[t["jaccard"] > 2 * t["chance jaccard"]]
    return [
        f"`{a}` against `{b}`: per emotion they share {int(t.shared.min())} to {int(t.shared.max())} neurons "
        f"(Jaccard {t.jaccard.min():.3f} to {t.jaccard.max():.3f}, against {t['chance jaccard'].median():.4f} "
        f"for random sets of the same sizes); {len(beyond)} of {len(t)} emotions overlap more than twice "
        f"chance" + (f" ({', '.join(beyond.index)})." if len(beyond) else ".")
    ]


def causal_table(run_dir: str | Path, sets: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Every causal result of a run, one row per (test, emotion), one column pair per set: own minus random
    margin (nat) and the Holm verdict (stage 3's own_vs_random.csv, stage 4's grid_contrasts_per_emotion.csv)."""
    run = Path(run_dir)
    parts = []
    for file, test in (("own_vs_random.csv", None), ("grid_contrasts_per_emotion.csv", "contrast")):
        if not (run / file).exists():
            continue
        t = pd.read_csv(run / file)
        t["test"] = "own vs random" if test is None else t[test]
        parts.append(t[["test", "set", "emotion", "own_minus_random_margin", "verdict"]])
    if not parts:
        return pd.DataFrame()
    long = pd.concat(parts, ignore_index=True)
    if sets is not None:
        long = long[long["set"].isin(sets)]
    order = list(dict.fromkeys(long["set"]))
    wide = long.pivot_table(
        index=["test", "emotion"], columns="set", values="own_minus_random_margin", aggfunc="first", sort=False
    )
    verdict = long.pivot_table(index=["test", "emotion"], columns="set", values="verdict", aggfunc="first", sort=False)
    out = pd.DataFrame(index=wide.index)
    for s in order:
        out[f"{s}: own - random (nat)"] = wide.get(s)
        out[f"{s}: verdict"] = verdict.get(s)
    return out


def causal_lines(run_dir: str | Path) -> list[str]:
    """A plain-language reading of causal_table: per set and test, in how many emotions its neurons move the
    margin beyond matched random sets, which, and by how much; then which method found more."""
    t = causal_table(run_dir)
    if t.empty:
        return ["No causal results yet: run notebooks 03 and 04 for this run."]
    names = [c.split(":")[0] for c in t.columns if c.endswith("verdict")]
    lines, hits = [], {}
    for test in dict.fromkeys(t.index.get_level_values(0)):
        part = t.loc[test]
        for s in names:
            v, d = part[f"{s}: verdict"], part[f"{s}: own - random (nat)"]
            tested = v[v.notna() & (v != "not tested")]
            if tested.empty:
                continue
            sig = tested[tested.str.contains("beyond random")]
            hits[(s, test)] = len(sig)
            what = (
                f"moves the margin beyond matched random sets in {len(sig)} of {len(tested)} emotions"
                + (f" ({', '.join(f'{e} {d[e]:+.2f} nat' for e in sig.index)})" if len(sig) else "")
                + f"; median own minus random {np.nanmedian(d[tested.index].astype(float)):+.2f} nat"
            )
            lines.append(f"{test}, `{s}` set: {what}.")
    for test in dict.fromkeys(k[1] for k in hits):
        a, b = hits.get((ENTROPY, test)), hits.get((CONTRIB, test))
        if a is None or b is None:
            continue
        lead = (
            "both methods find the same number of emotions"
            if a == b
            else f"the {'entropy (`paper`)' if a > b else 'contribution (`directions`)'} method finds neurons that "
            f"matter in more emotions ({max(a, b)} against {min(a, b)})"
        )
        ctl = hits.get((CONTROL, test))
        lines.append(f"{test}: {lead}" + (f"; the positive control reaches {ctl}." if ctl is not None else "."))
    return lines
