"""Notebook 05: read several finished runs and compare their neurons, depth profiles and ablation results."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from . import neurons, sweep


def load_runs(run_dirs: list[str]) -> dict[str, dict]:
    """{run name: {"neurons": NeuronSets, "ablation": DataFrame, "sweep": DataFrame|None}} for finished runs."""
    out = {}
    for d in run_dirs:
        d = Path(d)
        for need in ("neurons.json", "ablation.csv"):
            if not (d / need).exists():
                raise FileNotFoundError(f"runs: {d / need} not found; run stages 01-03 for {d} first")
        sw = d / "layer_sweep.csv"
        out[d.name] = {"neurons": neurons.load(d / "neurons.json"), "ablation": pd.read_csv(d / "ablation.csv"),
                       "sweep": pd.read_csv(sw) if sw.exists() else None}
    return out


def overview(R: dict) -> pd.DataFrame:
    """Model, depth, width and selection size of each run."""
    rows = []
    for name, r in R.items():
        ns = r["neurons"]
        base = r["ablation"][r["ablation"].condition == "baseline"]
        rows.append({"run": name, "model": ns.model, "layers": ns.n_layers, "d_ff": ns.d_ff,
                     "FFN neurons": ns.n_layers * ns.d_ff, "selected": ns.meta["n_selected"],
                     "baseline accuracy (mean over emotions)": round(float(base["accuracy"].mean()), 3)})
    return pd.DataFrame(rows).set_index("run")


def neurons_per_emotion(R: dict) -> pd.DataFrame:
    """Emotion x run: number of emotion neurons."""
    return pd.DataFrame({name: {e: len(r["neurons"].sets.get(e, [])) for e in r["neurons"].emotions}
                         for name, r in R.items()})


def depth_profiles(R: dict) -> dict[str, pd.DataFrame]:
    """Each run's share of neurons per relative-depth bin."""
    return {name: sweep.depth_profile(r["neurons"]) for name, r in R.items()}


def median_depth(R: dict) -> pd.DataFrame:
    """Emotion x run: median relative depth of the emotion's neurons."""
    out = {}
    for name, r in R.items():
        ns = r["neurons"]
        out[name] = {e: float(np.median([neurons.relative_depth(l, ns.n_layers) for l, _ in ns.sets[e]]))
                     if ns.sets[e] else np.nan for e in ns.emotions}
    return pd.DataFrame(out)


def sensitivity(R: dict, mode: str = "zero") -> pd.DataFrame:
    """Emotion x run: own-neuron accuracy change on the emotion's dialogues minus the mean random-set change."""
    out = {}
    for name, r in R.items():
        t = r["ablation"]
        t = t[(t["true"] == t["masked"]) | (t.condition == "baseline")]
        base = t[t.condition == "baseline"].set_index("true")["accuracy"]
        own = t[(t.condition == "own") & (t["mode"] == mode)].set_index("masked")["accuracy"]
        rnd = t[(t.condition == "random") & (t["mode"] == mode)].groupby("masked")["accuracy"].mean()
        out[name] = (own - base) - (rnd - base).reindex(own.index) if len(rnd) else own - base
    return pd.DataFrame(out)


def conclusions(R: dict) -> pd.DataFrame:
    """Per emotion and run: does masking its neurons change accuracy more than random neurons do (by >= 5 pp)?"""
    s = sensitivity(R)
    return s.apply(lambda col: col.map(lambda v: "masking hurts" if v <= -0.05 else
                                       ("masking helps" if v >= 0.05 else "no clear effect")))


def agreement_lines(concl: pd.DataFrame) -> list[str]:
    """Sentences saying where the runs agree and differ."""
    same = [e for e, row in concl.iterrows() if row.nunique() == 1]
    diff = [e for e in concl.index if e not in same]
    lines = [f"The runs agree on {len(same)} of {len(concl)} emotions: "
             + ", ".join(f"{e} ({concl.loc[e].iloc[0]})" for e in same) if same else "The runs agree on no emotion."]
    if diff:
        lines.append("They differ on: " + "; ".join(f"{e} (" + ", ".join(f"{c}: {concl.loc[e, c]}" for c in concl.columns)
                                                     + ")" for e in diff))
    return lines
