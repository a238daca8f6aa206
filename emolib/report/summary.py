"""A markdown summary of finished runs, written into the README between markers (never typed by hand)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..causal import runfiles
from ..dataset import annotate
from ..identify import neurons
from . import findings

START, END = "<!-- results:start -->", "<!-- results:end -->"
STAGES = ("01_data_construction", "02_neuron_identification", "03_ablation", "04_layer_analysis", "05_steering")


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
    from ..safeio import read_json

    d = Path(run_dir)
    ns = neurons.load(d / "neurons.json")
    ann = _csv(d / "annotations.csv", ("theme", "kept"))
    params = ns.meta["params"]
    skip = ("topic", "theme", "dialogue", "style", "label", "kept", "split")
    annotators = [c for c in ann.columns if c not in skip]
    tests = _csv(d / "own_vs_random.csv", ("set", "emotion"))
    stab = (
        _csv(d / "stability.csv", ("emotion", "jaccard")).set_index("emotion")
        if (d / "stability.csv").exists()
        else None
    )
    inst = runfiles.load_instrument_file(d) or {}
    grid = pd.read_csv(d / "grid_contrasts.csv") if (d / "grid_contrasts.csv").exists() else None
    design = runfiles.load_design(d) or {}
    timing = read_json(d / "scoring_time.json", "timing file") if (d / "scoring_time.json").exists() else {}
    pooled_t = pd.read_csv(d / "pooled.csv") if (d / "pooled.csv").exists() else pd.DataFrame()
    tit = pd.read_csv(d / "titration.csv") if (d / "titration.csv").exists() else pd.DataFrame()
    return {
        "name": d.name,
        "model": ns.model,
        "layers": ns.n_layers,
        "d_ff": ns.d_ff,
        "selected": ns.meta["n_selected"],
        "top_rate": params["top_rate"],
        "generated": len(ann),
        "kept": int(ann["kept"].sum()),
        "agreement": {a: float((ann[a] == ann["theme"]).mean()) for a in annotators},
        "kappa": annotate.fleiss_kappa(ann[["theme"] + annotators].values.tolist(), ns.emotions)
        if annotators
        else None,
        "emotions": ns.emotions,
        "neurons": {e: len(ns.sets[e]) for e in ns.emotions},
        "jaccard": stab["jaccard"].to_dict() if stab is not None else {},
        "tests": tests,
        "pilot": inst.get("pilot", {}),
        "grid": grid,
        "design": design,
        "timing": timing,
        "pooled": pooled_t,
        "titration": tit,
        "timings": first_timings(d),
        "findings": findings.headline(d),
    }


def _csv(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    """A table of the run with the columns the report reads; one ValueError line naming the file otherwise."""
    from ..safeio import read_regular

    read_regular(path, "table", 256 * 2**20)  # a regular file of sane size (else its own line), before pandas
    try:
        table = pd.read_csv(path)
    except Exception as e:  # noqa: BLE001 - pandas' ParserError, EmptyDataError, UnicodeDecodeError
        raise ValueError(
            f"{path}: is not a readable CSV table ({type(e).__name__}); rerun the stage that writes it"
        ) from None
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(
            f"{path}: lacks the column(s) {', '.join(missing)}; is it the table the book writes? "
            "Rerun the stage that writes it"
        )
    return table


def _num(v, fmt: str) -> str:
    """A number formatted, or – when missing."""
    return fmt.format(v) if isinstance(v, (int, float)) and np.isfinite(v) else "–"


def _scoring(timing: dict) -> str:
    """Notebook 03's scoring time, or that every score came from the run's cache (an earlier, interrupted run)."""
    from ..causal.budget import reused_every_score

    if reused_every_score(timing):
        return "none: every score reused from the run's cache"
    return _num((timing.get("stage3_scoring_seconds") or float("nan")) / 60, "{:.1f} min")


def figures(S: list[dict]) -> list[str]:
    """The headline figures, each with a caption generated from the pooled tables."""
    out = []
    for s in S:
        t = s["pooled"]
        if t.empty:
            continue
        t = t[t["primary"].astype(bool)]
        words = "; ".join(f"{r['set']}: {r.verdict}" for _, r in t.iterrows())
        out += [
            f"![Stage 3 on {s['model']}, one pooled test per set against random families ({words})]"
            f"(outputs/{s['name']}/figures/03_pooled.png)",
            "",
        ]
    for s in S:
        if not s["titration"].empty:
            out += [
                f"![Detection curve on {s['model']}: {_detection(s)}](outputs/{s['name']}/figures/"
                "03_detection_curve.png)",
                "",
            ]
    return out


def _detection(s: dict) -> str:
    """The detection curve's reading: the smallest effect detected at 80%, or that none was."""
    from ..causal import pooled

    curve = pooled.detection_curve(s["titration"])
    small = pooled.smallest_detected(curve)
    return (
        f"effects of {small:.2f} nat and more detected in at least 80% of draws"
        if np.isfinite(small)
        else f"no titrated share detected in 80% of draws (effects up to {curve.effect.abs().max():.2f} nat)"
    )


def _shares(S: list[dict]) -> list[float]:
    """Every titration share of the runs, sorted."""
    return sorted({float(x) for s in S if not s["titration"].empty for x in s["titration"]["share"]})


def set_names(summaries: list[dict]) -> list[str]:
    """The named sets the runs tested, in their tables' order (the positive control first)."""
    return list(dict.fromkeys(n for s in summaries for n in s["tests"].get("set", pd.Series(dtype=str))))


def _tested(tests: pd.DataFrame, name: str) -> pd.DataFrame:
    """The tested rows of one named set."""
    t = tests[tests["set"] == name] if "set" in tests else tests.iloc[0:0]
    return t[t["p"].notna()] if "p" in t else t.iloc[0:0]


def _cell(t: pd.DataFrame, name: str, e: str) -> str:
    """'own − random [interval] · Holm p · verdict' of one set and emotion."""
    r = t[(t["set"] == name) & (t["emotion"] == e)]
    if r.empty or not np.isfinite(r.iloc[0].get("p", np.nan)):
        return "not tested"
    r = r.iloc[0]
    short = {
        "own drop beyond random": "**drop**",
        "own gain beyond random": "**gain**",
        "no detectable effect": "none",
    }.get(r.verdict, r.verdict)
    return (
        f"{r.own_minus_random_margin:+.2f} [{r.omr_margin_lo:+.2f}, {r.omr_margin_hi:+.2f}] · {r.p_holm:.2g} · {short}"
    )


def markdown(run_dirs: list[str | Path]) -> str:
    """Tables of the runs: data, the pilot and positive control, per emotion each set's test, the paper's claims,
    findings and timings."""
    try:
        return _markdown(run_dirs)
    except (KeyError, AttributeError, TypeError, IndexError) as e:  # a value of a run's files of the wrong kind
        raise ValueError(
            f"report: a file of {', '.join(map(str, run_dirs))} holds a value the book does not write "
            f"({type(e).__name__}: {' '.join(str(e).split())[:100]}); rerun the stage that wrote it"
        ) from None


def _markdown(run_dirs: list[str | Path]) -> str:
    """markdown(), without the one-line error."""
    S = [run_summary(d) for d in run_dirs]
    lines = [
        "| run | model | FFN neurons | selected | dialogues kept | annotator agreement with theme | Fleiss' κ |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in S:
        agree = ", ".join(f"{a} {v:.0%}" for a, v in s["agreement"].items())
        kappa = f"{s['kappa']:.2f}" if s["kappa"] is not None else "n/a"
        lines.append(
            f"| `{s['name']}` | {s['model']} | {s['layers']} × {s['d_ff']:,} | {s['selected']} "
            f"({s['top_rate']:.0%}) | {s['kept']} of {s['generated']} ({s['kept'] / s['generated']:.0%}) | "
            f"{agree} | {kappa} |"
        )
    lines += [
        "",
        "Stages 3-4's design, fixed in each parameter file (the same on every machine, up to the dtype): "
        "random families per test, items per emotion, the primary arm, the titrated families of the detection "
        "curve; then what this machine measured (it estimates time, it never changes the design).",
        "",
        "| run | random families · items per emotion | primary arm | titration (shares × draws) | dtype | "
        "throughput here | notebook 03 scoring |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in S:
        g, tm = s["design"], s["timing"]
        if not g or "intervention" not in g:
            lines.append(f"| `{s['name']}` | – | – | – | – | – | – |")
            continue
        shares = ", ".join(f"{x:g}" for x in g.get("titration_shares", []))
        lines.append(
            f"| `{s['name']}` | {g['n_random']} · {g['n_items']} | {g['intervention']} | "
            f"[{shares}] × {g.get('titration_draws', 0)} | {g.get('dtype') or '–'} | "
            f"{_num(tm.get('throughput'), '{:.1f} item-masks/s')} | {_scoring(tm)} |"
        )
    lines += [
        "",
        "**Stage 3's answer**: one pooled test per named set (the mean over the six emotions of the own "
        "set's margin change on its emotion's items, against the same mean of each random family, Holm over "
        "the named sets), with the equivalence test against ±`equivalence_margin` (TOST) and the smallest "
        "margin within which the set is shown equivalent to random; the controls are tested the same way, "
        "outside the family.",
        "",
        "| run | set | role | own − random, nat [95% CI] | in random-set SDs | Holm p | equivalent within | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in S:
        t = s["pooled"]
        if t.empty:
            continue
        for _, r in t[t["primary"].astype(bool)].iterrows():
            lines.append(
                f"| `{s['name']}` | `{r['set']}` | {r.role} | {r.own_minus_random:+.2f} [{r.lo:+.2f}, "
                f"{r.hi:+.2f}] | {r.in_sds:+.1f} | {r.p_holm:.2g} | ±{r.equivalence_bound:.2f} | "
                f"**{r.verdict}** |"
            )
    lines += [
        "",
        "The detection curve, measured: titrated families (a share of each emotion's random set replaced by "
        "its `attribution` neurons) through the same pooled test; per share the mean real pooled effect and "
        "the share of draws detected.",
        "",
        "| run | " + " | ".join(f"{x:.0%} replaced" for x in _shares(S)) + " | smallest effect detected ≥ 80% |",
        "|---" * (len(_shares(S)) + 2) + "|",
    ]
    from ..causal import pooled as pooled_mod

    for s in S:
        if s["titration"].empty:
            continue
        curve = pooled_mod.detection_curve(s["titration"]).set_index("share")
        cells = [
            f"{curve.loc[x, 'effect']:+.2f} nat · {curve.loc[x, 'detected']:.0%}" if x in curve.index else "–"
            for x in _shares(S)
        ]
        lines.append(
            f"| `{s['name']}` | "
            + " | ".join(cells)
            + " | "
            + _num(pooled_mod.smallest_detected(curve.reset_index()), "{:.2f} nat")
            + " |"
        )
    lines += [""] + figures(S)
    lines += [
        "Stage 3's pilot (descriptive, on random sets disjoint from the test's): the SD of random sets' mean "
        "margin change per arm (median over emotions, relative to the paper's zero ablation with fixed "
        "calibration) and the quietest arm; the primary arm, fixed in the parameter file; and, per emotion "
        "(secondary), how many of each set's six tests reject after Holm within the set.",
        "",
        "| run | SD ratio per arm | quietest | primary arm | " + " | ".join(set_names(S)) + " |",
        "|---" * (4 + len(set_names(S))) + "|",
    ]
    for s in S:
        pil = s["pilot"]
        ratios = ", ".join(f"{a} {v:.2f}" for a, v in pil.get("sd_ratio_to_paper_arm", {}).items() if v is not None)
        t = s["tests"]
        counts = []
        for name in set_names(S):
            x = _tested(t, name)
            counts.append(f"{int((x.p_holm < 0.05).sum())} of {len(x)}" if len(x) else "–")
        lines.append(
            f"| `{s['name']}` | {ratios or '–'} | {pil.get('quietest', '–')} | {pil.get('chosen', '–')} | "
            + " | ".join(counts)
            + " |"
        )
    for s in S:
        t = s["tests"]
        names = [n for n in set_names([s])]
        old = (
            " (a run of the earlier design, not yet re-executed with the fixed design: Holm over every set × emotion)"
            if s["pooled"].empty
            else ""
        )
        lines += [
            "",
            f"`{s['name']}`{old}, per emotion (secondary): `paper` neurons and split-half stability (J), baseline "
            f"accuracy, "
            "then for each set the own-minus-random margin change (nat) [unadjusted 95% interval against the "
            "random families' sets] · Holm p within the set · verdict.",
            "",
            "| emotion | neurons · J · baseline | " + " | ".join(names) + " |",
            "|---" * (len(names) + 2) + "|",
        ]
        for e in s["emotions"]:
            base = t[(t.get("set") == "paper") & (t.emotion == e)]["baseline_accuracy"]
            b = f"{base.iloc[0]:.0%}" if len(base) and np.isfinite(base.iloc[0]) else "–"
            lines.append(
                f"| {e} | {s['neurons'].get(e, 0)} · {s['jaccard'].get(e, np.nan):.2f} · {b} | "
                + " | ".join(_cell(t, n, e) for n in names)
                + " |"
            )
    lines += [
        "",
        "The paper's claims (Llama-3.1-8B-Instruct) beside each run's per-emotion (secondary) verdict for the "
        "`paper` set:",
        "",
        "| emotion | paper | " + " | ".join(f"`{s['name']}`" for s in S) + " |",
        "|---" * (len(S) + 2) + "|",
    ]
    from ..causal.effect_tables import PAPER_CLAIMS

    for e, claim in PAPER_CLAIMS.items():
        cells = []
        for s in S:
            r = s["tests"][(s["tests"].get("set") == "paper") & (s["tests"].emotion == e)]
            cells.append(r.iloc[0]["verdict"] if len(r) else "not tested")
        lines.append(f"| {e} | {claim} | " + " | ".join(cells) + " |")
    lines += ["", "Findings, generated from the same tables:", ""]
    for s in S:
        lines.append(f"- `{s['name']}`: " + " ".join(s["findings"]))
    lines += [
        "",
        "Wall time per stage, first complete run (seconds):",
        "",
        "| run | " + " | ".join(STAGES) + " | total |",
        "|---" * (len(STAGES) + 2) + "|",
    ]
    for s in S:
        t = [s["timings"].get(k) for k in STAGES]
        total = sum(x for x in t if x)
        lines.append(
            f"| `{s['name']}` | "
            + " | ".join(f"{x:.0f}" if x else "–" for x in t)
            + f" | {total:.0f} ({total / 60:.0f} min) |"
        )
    return "\n".join(lines) + "\n"


def update_readme(readme: str | Path, run_dirs: list[str | Path]) -> None:
    """Replace the block between the results markers of the README with a fresh summary."""
    from ..safeio import check_target, read_text

    readme = Path(readme)
    check_target(readme)  # written back in place: a link, a pipe or a device is refused before it is read
    text = read_text(readme, "README", 16 * 2**20)
    if START not in text or END not in text:
        raise ValueError(f"{readme} lacks the markers {START} ... {END}")
    block = f"{START}\n{markdown(run_dirs)}{END}"
    from ..safeio import atomic_write_text

    atomic_write_text(readme, re.sub(re.escape(START) + ".*?" + re.escape(END), lambda m: block, text, flags=re.S))
