"""A markdown summary of finished runs, written into the README between markers (never typed by hand)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from . import annotate, neurons

START, END = "<!-- results:start -->", "<!-- results:end -->"
STAGES = ("01_data_construction", "02_neuron_identification", "03_ablation", "04_layer_analysis")


def first_timings(run_dir: Path) -> dict[str, float]:
    """Wall time of each stage in the run's first complete pass (timings-history), else the latest."""
    hist = run_dir / "timings-history.jsonl"
    out: dict[str, float] = {}
    if hist.exists():
        for line in hist.read_text().splitlines():
            r = json.loads(line)
            out.setdefault(r["notebook"], r["seconds"])
    elif (run_dir / "timings.json").exists():
        out = json.loads((run_dir / "timings.json").read_text())
    return out


def run_summary(run_dir: str | Path) -> dict:
    """The headline numbers of one run, read from its committed tables."""
    d = Path(run_dir)
    ns = neurons.load(d / "neurons.json")
    ann = pd.read_csv(d / "annotations.csv")
    params = ns.meta["params"]
    annotators = [c for c in ann.columns if c not in ("topic", "theme", "dialogue", "style", "label", "kept")]
    ab = pd.read_csv(d / "ablation.csv")
    zero = ab[ab["mode"].isin(["zero", "none"])]
    base = zero[zero.condition == "baseline"].set_index("true")["accuracy"]
    own = zero[(zero.condition == "own") & (zero["true"] == zero["masked"])].set_index("masked")["accuracy"]
    rnd = zero[(zero.condition == "random") & (zero["true"] == zero["masked"])].groupby("masked")["accuracy"].mean()
    stab = pd.read_csv(d / "stability.csv").set_index("emotion") if (d / "stability.csv").exists() else None
    return {"name": d.name, "model": ns.model, "layers": ns.n_layers, "d_ff": ns.d_ff,
            "selected": ns.meta["n_selected"], "top_rate": params["top_rate"],
            "generated": len(ann), "kept": int(ann["kept"].sum()),
            "agreement": {a: float((ann[a] == ann["theme"]).mean()) for a in annotators},
            "kappa": annotate.fleiss_kappa(ann[["theme"] + annotators].values.tolist(), ns.emotions) if annotators else None,
            "emotions": ns.emotions, "neurons": {e: len(ns.sets[e]) for e in ns.emotions},
            "jaccard": stab["jaccard"].to_dict() if stab is not None else {},
            "baseline": base.to_dict(), "own": (own - base.reindex(own.index)).to_dict(),
            "random": (rnd - base.reindex(rnd.index)).to_dict(), "timings": first_timings(d)}


def markdown(run_dirs: list[str | Path]) -> str:
    """Tables of the runs side by side: data, timings, and per emotion neurons, stability and ablation effects."""
    S = [run_summary(d) for d in run_dirs]
    lines = ["| run | model | FFN neurons | selected | dialogues kept | annotator agreement with theme | Fleiss' κ |",
             "|---|---|---|---|---|---|---|"]
    for s in S:
        agree = ", ".join(f"{a} {v:.0%}" for a, v in s["agreement"].items())
        kappa = f"{s['kappa']:.2f}" if s["kappa"] is not None else "n/a"
        lines.append(f"| `{s['name']}` | {s['model']} | {s['layers']} × {s['d_ff']:,} | {s['selected']} "
                     f"({s['top_rate']:.0%}) | {s['kept']} of {s['generated']} ({s['kept'] / s['generated']:.0%}) | "
                     f"{agree} | {kappa} |")
    lines += ["", "Per emotion: neurons selected, split-half stability (Jaccard), baseline accuracy on the eval "
              "split, and the accuracy change on the emotion's own dialogues when its neurons are zeroed, beside the "
              "mean change under matched random neurons (percentage points).", ""]
    head = "| emotion | " + " | ".join(f"{s['name']}: neurons · J · baseline · own Δ · random Δ" for s in S) + " |"
    lines += [head, "|---" * (len(S) + 1) + "|"]
    for e in S[0]["emotions"]:
        cells = []
        for s in S:
            j = s["jaccard"].get(e, np.nan)
            cells.append(f"{s['neurons'].get(e, 0)} · {j:.2f} · {s['baseline'].get(e, np.nan):.0%} · "
                         f"{100 * s['own'].get(e, np.nan):+.0f} · {100 * s['random'].get(e, np.nan):+.0f}")
        lines.append(f"| {e} | " + " | ".join(cells) + " |")
    lines += ["", "Wall time per stage on a 2-core CPU (first complete run, seconds):", "",
              "| run | " + " | ".join(STAGES) + " | total |", "|---" * (len(STAGES) + 2) + "|"]
    for s in S:
        t = [s["timings"].get(k) for k in STAGES]
        total = sum(x for x in t if x)
        lines.append(f"| `{s['name']}` | " + " | ".join(f"{x:.0f}" if x else "–" for x in t) +
                     f" | {total:.0f} ({total / 60:.0f} min) |")
    return "\n".join(lines) + "\n"


def update_readme(readme: str | Path, run_dirs: list[str | Path]) -> None:
    """Replace the block between the results markers of the README with a fresh summary."""
    readme = Path(readme)
    text = readme.read_text()
    if START not in text or END not in text:
        raise ValueError(f"{readme} lacks the markers {START} ... {END}")
    block = f"{START}\n{markdown(run_dirs)}{END}"
    readme.write_text(re.sub(re.escape(START) + ".*?" + re.escape(END), lambda m: block, text, flags=re.S))
