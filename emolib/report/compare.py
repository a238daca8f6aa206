"""Notebook 06: read several finished runs and compare their neurons, depth profiles and ablation results."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .. import safeio
from ..identify import neurons


def paper_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of the 'paper' neuron set (tables written before named sets hold only those)."""
    return table[table["set"] == "paper"].drop(columns="set") if "set" in table.columns else table


def load_runs(run_dirs: list[str]) -> dict[str, dict]:
    """{run name: {"neurons": NeuronSets, "tests": own_vs_random table of the paper set, "sweep": DataFrame|None}}
    for finished runs."""
    out = {}
    for d in run_dirs:
        d = Path(d)
        for need in ("neurons.json", "own_vs_random.csv"):
            if not (d / need).exists():
                raise FileNotFoundError(f"runs: {d / need} not found; run stages 01-03 for {d} first")
        safeio.load_neurons_json(d / "neurons.json")
        sw = d / "layer_sweep.csv"
        out[d.name] = {
            "neurons": neurons.load(d / "neurons.json"),
            "tests": paper_rows(pd.read_csv(d / "own_vs_random.csv")).set_index("emotion"),
            "sweep": paper_rows(pd.read_csv(sw)) if sw.exists() else None,
        }
    return out


def overview(R: dict) -> pd.DataFrame:
    """Model, depth, width and selection size of each run."""
    rows = []
    for name, r in R.items():
        ns = r["neurons"]
        rows.append(
            {
                "run": name,
                "model": ns.model,
                "layers": ns.n_layers,
                "d_ff": ns.d_ff,
                "FFN neurons": ns.n_layers * ns.d_ff,
                "selected": ns.meta["n_selected"],
                "baseline accuracy (mean over emotions)": round(float(r["tests"]["baseline_accuracy"].mean()), 3),
                "named sets": ", ".join(neurons.set_names_of(ns.meta)),
            }
        )
    return pd.DataFrame(rows).set_index("run")


def neurons_per_emotion(R: dict) -> pd.DataFrame:
    """Emotion x run: number of emotion neurons."""
    return pd.DataFrame(
        {name: {e: len(r["neurons"].sets.get(e, [])) for e in r["neurons"].emotions} for name, r in R.items()}
    )


def depth_profiles(R: dict) -> dict[str, pd.DataFrame]:
    """Each run's share of neurons per relative-depth bin."""
    return {name: neurons.depth_profile(r["neurons"]) for name, r in R.items()}


def median_depth(R: dict) -> pd.DataFrame:
    """Emotion x run: median relative depth of the emotion's neurons."""
    out = {}
    for name, r in R.items():
        ns = r["neurons"]
        out[name] = {
            e: float(np.median([neurons.relative_depth(l, ns.n_layers) for l, _ in ns.sets[e]]))
            if ns.sets[e]
            else np.nan
            for e in ns.emotions
        }
    return pd.DataFrame(out)


def sensitivity(R: dict, column: str = "own_minus_random_accuracy") -> pd.DataFrame:
    """Emotion x run (paper set): the own set's accuracy change on the emotion's items minus the mean change under
    matched random sets (or another column of the test table)."""
    return pd.DataFrame(
        {name: r["tests"][column] if column in r["tests"] else pd.Series(dtype=float) for name, r in R.items()}
    )


def shared_emotions(R: dict) -> tuple[list[str], dict[str, list[str]]]:
    """The emotions every run studied (canonical order), and per run the ones left out of the comparison."""
    from ..emotions import EMOTIONS

    every = [e for e in EMOTIONS if all(e in r["neurons"].emotions for r in R.values())]
    if not every:
        raise ValueError(
            "compare: the runs share no emotion ("
            + "; ".join(f"{n}: {', '.join(r['neurons'].emotions)}" for n, r in R.items())
            + ")"
        )
    return every, {n: [e for e in r["neurons"].emotions if e not in every] for n, r in R.items()}


def conclusions(R: dict) -> pd.DataFrame:
    """Per emotion the runs share, and run: the Holm-corrected verdict of notebook 03's own-vs-random test for the
    paper set. A missing measurement is "not measured", never "no detectable effect"."""
    shared, left_out = shared_emotions(R)
    out = pd.DataFrame(
        {name: r["tests"]["verdict"] if "verdict" in r["tests"] else pd.Series(dtype=object) for name, r in R.items()}
    ).reindex(shared)
    out = out.apply(lambda col: col.map(lambda v: "not measured" if pd.isna(v) or v == "not tested" else v))
    out.attrs["left_out"] = {n: v for n, v in left_out.items() if v}
    return out


def agreement_lines(concl: pd.DataFrame) -> list[str]:
    """Sentences saying where the runs agree and differ."""
    left_out = concl.attrs.get("left_out") or {}
    unmeasured = [e for e, row in concl.iterrows() if (row == "not measured").any()]
    same = [e for e, row in concl.iterrows() if row.nunique() == 1 and e not in unmeasured]
    diff = [e for e in concl.index if e not in same and e not in unmeasured]
    scope = "shared emotions" if left_out else "emotions"
    lines = [
        f"The runs agree on {len(same)} of {len(concl)} {scope}: "
        + ", ".join(f"{e} ({concl.loc[e].iloc[0]})" for e in same)
        if same
        else "The runs agree on no emotion."
    ]
    if left_out:
        lines.insert(
            0,
            f"Compared on the {len(concl)} emotions every run studied ({', '.join(concl.index)}); left out: "
            + "; ".join(f"{n} also studied {', '.join(v)}" for n, v in left_out.items())
            + ".",
        )
    if unmeasured:
        lines.append("Not measured in every run (no ablation result): " + ", ".join(unmeasured) + ".")
    if diff:
        lines.append(
            "They differ on: "
            + "; ".join(f"{e} (" + ", ".join(f"{c}: {concl.loc[e, c]}" for c in concl.columns) + ")" for e in diff)
        )
    return lines


def pooled_verdicts(run_dirs: list[str]) -> pd.DataFrame:
    """Set x run: each run's pooled verdict under its primary arm (stage 3's answer), with the effect and the
    smallest equivalence margin; runs without pooled.csv are left out."""
    cells = {}
    for d in map(Path, run_dirs):
        if not (d / "pooled.csv").exists():
            continue
        t = pd.read_csv(d / "pooled.csv")
        t = t[t["primary"].astype(bool)]
        cells[d.name] = {
            f"{r['set']} ({r.role})": f"{r.verdict} · {r.own_minus_random:+.2f} nat · ±{r.equivalence_bound:.2f}"
            for _, r in t.iterrows()
        }
    return pd.DataFrame(cells)
