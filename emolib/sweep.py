"""Stage 4: mask emotion neurons by depth range and proportion, against matched random sets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from . import ablate, evaluate, identify, neurons


def proportion_sets(p: dict, ns: neurons.NeuronSets) -> dict[str, tuple[str, float, dict[str, dict[int, list[int]]]]]:
    """Each sweep column: (reading, value, {emotion: neurons by layer}). Reading b masks fractions of the stage-2
    sets; reading a re-selects with a larger top_rate from stage 2's counts."""
    cols: dict = {}
    for f in p["sweep_fractions"]:
        cols[f"{f:.0%} of own"] = ("fraction", f, {e: ns.by_layer(e) for e in p["emotions"]})
    rates = [r for r in p["sweep_top_rates"] if abs(r - ns.meta["params"]["top_rate"]) > 1e-12]
    if rates:
        state = torch.load(identify.counts_path(p["run_dir"]), weights_only=False)
        for r in rates:
            sel = neurons.select(state["counts"].sum(0), state["tokens"].sum(0), state["emotions"], r,
                                 ns.meta["params"]["filter_quantile"], ns.meta["params"]["assign"])["sets"]
            by_layer = {}
            for e in p["emotions"]:
                d: dict[int, list[int]] = {}
                for layer, idx in sel[e]:
                    d.setdefault(layer, []).append(idx)
                by_layer[e] = d
            cols[f"top {r:.0%}"] = ("top_rate", r, by_layer)
    return cols


def run_sweep(clf, p: dict, ns: neurons.NeuronSets) -> pd.DataFrame:
    """For each emotion, range and proportion: accuracy on that emotion and on the others, own vs random masks."""
    cache = evaluate.PredictionCache(Path(p["run_dir"]) / "cache" / "predictions.jsonl")
    ranges = ablate.layer_bins(ns.n_layers, p["layer_bins"])
    cols = proportion_sets(p, ns)
    n = p["sweep_eval_per_emotion"]
    rows = []
    jobs = [(e, r, c) for e in p["emotions"] for r in ranges for c in cols]
    bases: dict[str, tuple] = {}
    for e, rname, cname in tqdm(jobs, desc="layer sweep"):
        if e not in bases:  # focused eval set: n dialogues of e, a few of each other emotion; baseline once
            items = evaluate.eval_items(p, None, only=e, others=max(1, n // max(1, len(p["emotions"]) - 1)))
            items = pd.concat([items[items.label == e].head(n), items[items.label != e]])
            d, t = items["dialogue"].tolist(), np.asarray(items["label"])
            bases[e] = (d, t, np.asarray(evaluate.predict_condition(clf, p, d, {}, "zero", None, cache)) == t)
        d, t, base_ok = bases[e]
        reading, value, sets = cols[cname]
        fraction = value if reading == "fraction" else 1.0
        own = ablate.restrict(sets[e], ranges[rname], fraction, p["seed"])
        conds = [("own", -1, own)] + [("random", s, ablate.random_like(own, ns.d_ff, p["seed"] * 1000 + s,
                                                                         exclude=sets[e]))
                                      for s in range(p["sweep_random_seeds"])]
        for cond, seed, mask in conds:
            ok = np.asarray(evaluate.predict_condition(clf, p, d, mask, "zero", None, cache)) == t \
                if mask else base_ok
            for target, sel in (("own emotion", t == e), ("other emotions", t != e)):
                rows.append({"masked": e, "range": rname, "layers": f"{ranges[rname].start}-{ranges[rname].stop - 1}",
                             "proportion": cname, "reading": reading, "value": value, "condition": cond,
                             "seed": seed, "n_neurons": sum(map(len, mask.values())), "target": target,
                             "n": int(sel.sum()), "baseline": float(base_ok[sel].mean()),
                             "accuracy": float(ok[sel].mean()), "delta": float(ok[sel].mean() - base_ok[sel].mean())})
    table = pd.DataFrame(rows)
    table.to_csv(Path(p["run_dir"]) / "layer_sweep.csv", index=False)
    return table


def depth_profile(ns: neurons.NeuronSets, bins: int = 10) -> pd.DataFrame:
    """Share of each emotion's neurons per relative-depth bin (rows: bin centres in [0, 1])."""
    edges = np.linspace(0, 1, bins + 1)
    out = {}
    for e in ns.emotions:
        depths = [neurons.relative_depth(layer, ns.n_layers) for layer, _ in ns.sets[e]]
        h, _ = np.histogram(depths, edges)
        out[e] = h / max(1, h.sum())
    return pd.DataFrame(out, index=pd.Index(np.round((edges[:-1] + edges[1:]) / 2, 3), name="relative depth"))
