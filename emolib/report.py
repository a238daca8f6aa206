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
    skip = ("topic", "theme", "dialogue", "style", "label", "kept", "split")
    annotators = [c for c in ann.columns if c not in skip]
    from .compare import paper_rows
    tests = paper_rows(pd.read_csv(d / "own_vs_random.csv")).set_index("emotion")
    stab = pd.read_csv(d / "stability.csv").set_index("emotion") if (d / "stability.csv").exists() else None
    return {"name": d.name, "model": ns.model, "layers": ns.n_layers, "d_ff": ns.d_ff,
            "selected": ns.meta["n_selected"], "top_rate": params["top_rate"],
            "generated": len(ann), "kept": int(ann["kept"].sum()),
            "agreement": {a: float((ann[a] == ann["theme"]).mean()) for a in annotators},
            "kappa": annotate.fleiss_kappa(ann[["theme"] + annotators].values.tolist(), ns.emotions) if annotators else None,
            "emotions": ns.emotions, "neurons": {e: len(ns.sets[e]) for e in ns.emotions},
            "jaccard": stab["jaccard"].to_dict() if stab is not None else {},
            "tests": tests.to_dict("index"), "timings": first_timings(d), "findings": run_findings(d, tests)}


def run_findings(d: Path, tests: pd.DataFrame) -> list[str]:
    """Two or three sentences per run: stage 2 against its null, and stage 3's corrected verdicts."""
    out = []
    if (d / "variants.csv").exists():
        v = pd.read_csv(d / "variants.csv").set_index("variant")
        r = v.loc["paper"]
        good = [n for n in v.index if v.loc[n, "beats_null"] and v.loc[n, "stable"]]
        out.append(f"Stage 2: the paper's selection {'beats' if r.beats_null else 'does not beat'} the "
                   f"label-permutation null (empirical FDR {r.fdr:.3f}) with median selectivity "
                   f"{r.median_selectivity:.2f}x (null {r.null_selectivity:.2f}x); {len(good)} of {len(v)} variants "
                   "beat the null and are stable.")
    tested = tests[tests["verdict"] != "not tested"] if "verdict" in tests else tests.iloc[0:0]
    eff = tested[tested["verdict"].str.contains("beyond random")] if len(tested) else tested
    if len(tested):
        out.append(f"Stage 3: {len(eff)} of {len(tested)} emotions show an effect of their own neurons beyond matched "
                   "random sets after Holm correction" + (": " + ", ".join(
                       f"{e} ({100 * r.own_minus_random_accuracy:+.0f} pp accuracy, {r.verdict})"
                       for e, r in eff.iterrows()) if len(eff) else "") + "; median power to see a 10 pp drop was "
                   f"{tested['power_at_10pp'].median():.0%}.")
    return out


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
    lines += ["", "Per emotion, `paper` set: neurons selected, split-half stability (Jaccard), baseline accuracy on the "
              "eval items, and the accuracy change on the emotion's own items when its neurons are zeroed minus the "
              "mean change under matched random sets (percentage points, 95% CI), with notebook 03's Holm-corrected "
              "verdict.", ""]
    head = "| emotion | " + " | ".join(f"{s['name']}: neurons · J · baseline · own − random [CI] · verdict" for s in S) + " |"
    lines += [head, "|---" * (len(S) + 1) + "|"]
    for e in S[0]["emotions"]:
        cells = []
        for s in S:
            j = s["jaccard"].get(e, np.nan)
            t = s["tests"].get(e, {})
            d, lo, hi = (100 * t.get(k, np.nan) for k in ("own_minus_random_accuracy", "omr_accuracy_lo",
                                                           "omr_accuracy_hi"))
            cells.append(f"{s['neurons'].get(e, 0)} · {j:.2f} · {t.get('baseline_accuracy', np.nan):.0%} · "
                         f"{d:+.0f} [{lo:+.0f}, {hi:+.0f}] · {t.get('verdict', 'not tested')}")
        lines.append(f"| {e} | " + " | ".join(cells) + " |")
    lines += ["", "The paper's claims (Llama-3.1-8B-Instruct) beside each run's Holm-corrected verdict for the `paper` set:",
              "", "| emotion | paper | " + " | ".join(f"`{s['name']}`" for s in S) + " |",
              "|---" * (len(S) + 2) + "|"]
    from .effects import PAPER_CLAIMS
    for e, claim in PAPER_CLAIMS.items():
        lines.append(f"| {e} | {claim} | " + " | ".join(s["tests"].get(e, {}).get("verdict", "not tested")
                                                         for s in S) + " |")
    lines += ["", "Findings, generated from the same tables:", ""]
    for s in S:
        lines.append(f"- `{s['name']}`: " + " ".join(s["findings"]))
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
