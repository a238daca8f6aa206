"""The one findings writer: every stage's "what this run shows" sentences, built from the run's tables and JSON
files (nothing typed by hand), written to run_dir/findings.json and read by the notebooks, the runner's top cell and
the README block (emolib.report.summary).

Longer than 400 lines: one builder per stage, each a few sentences from its tables, so every generated claim of the
book is in one file.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..causal import runfiles

ALPHA = 0.05  # the family-wise level of every Holm-corrected verdict (as in emolib.causal.pooled and outcomes)
FILE = "findings.json"
STAGES = {
    "01": "01_data_construction",
    "02": "02_neuron_identification",
    "03": "03_ablation",
    "04": "04_layer_analysis",
    "05": "05_steering",
}


def selection(table: pd.DataFrame, chosen: str | None, why: str, n_null: int) -> list[str]:
    """Stage 2: what the variant table shows, sentence by sentence, from the variant table (nothing typed by hand)."""
    from ..identify import selection as identify

    def describe(name: str) -> str:
        r = table.loc[name]
        verdict = "beats" if r.beats_null else "does not beat"
        return (
            f"{int(r.n_selected)} neurons selected (of {int(r.n_eligible):,} eligible); median selectivity "
            f"{r.median_selectivity:.2f}x against {r.null_selectivity:.2f}x for what the null selects; it {verdict} "
            f"the null (cut-off {r.cutoff:.3f} nats vs null median {r.null_cutoff:.3f}, p = {r.p_cutoff:.3f}; "
            f"{r.expected_false:.1f} expected false selections, empirical FDR {r.fdr:.3f}); split-half Jaccard "
            f"{r.jaccard:.2f} against {r.jaccard_chance:.3f} by chance from the eligible pool "
            f"({'stable' if r.stable else 'not stable'} by the {identify.STABLE_FACTOR:g}x rule)"
        )

    if not n_null:
        return ["n_null is 0: no permutation null was recorded, so nothing here can be called beyond chance."]
    lines = [f"The paper's setting: {describe('paper')}."]
    both = [n for n in table.index if table.loc[n, "beats_null"] and table.loc[n, "stable"]]
    neither = [n for n in table.index if not table.loc[n, "beats_null"]]
    lines.append(
        f"Of {len(table)} variants, {len(both)} beat the null and are stable"
        + (f" ({', '.join(both)})" if both else "")
        + "; "
        + (
            f"{len(neither)} do not beat the null ({', '.join(neither)})."
            if neither
            else "every variant beats the null."
        )
    )
    if chosen:
        lines.append(f"The second named set, 'selective', is {chosen}: {why}. {describe(chosen)}.")
    else:
        lines.append(f"There is no 'selective' set: {why}.")
    sel = table["median_selectivity"]
    lines.append(
        f"Median selectivity ranges from {sel.min():.2f}x ({sel.idxmin()}) to {sel.max():.2f}x "
        f"({sel.idxmax()}). Beating the null says the preferences are not sampling noise; the size of the "
        "preference is the selectivity, and whether the neurons matter is for the causal tests of "
        "notebooks 03 and 04."
    )
    return lines


def directions(entry: dict) -> list[str]:
    """'What this run shows' for the directions set, from its neurons.json entry (nothing typed by hand)."""
    n, nul = entry["n_selected"], entry["null"]
    m = entry["method"]
    lines = [
        f"The contribution method (directions at the {m['site']} stream, {m['tokens']} tokens, centred "
        f"{m['centring']}) selects {n} neurons, as many per emotion as the paper set."
    ]
    if nul.get("n_null"):
        p_e = nul["p_per_emotion"]
        below = [e for e, v in p_e.items() if v is not None and v < 0.05]
        p_e = {e: v for e, v in p_e.items() if v is not None}  # emotions with selected neurons
        lines.append(
            f"Against {nul['n_null']} label permutations: the selected neurons' mean contribution "
            f"{nul['mean_real']:.4g} against a null median of {float(np.median(nul['mean_null'])):.4g} "
            f"(p = {nul['p_mean']:.3f}); {len(below)} of {len(p_e)} emotions have p < 0.05"
            + (f" ({', '.join(below)})" if below else "")
            + f"; {nul['n_above_null_max']} of {n} "
            f"selected neurons exceed the largest contribution any permutation gives their emotion; "
            f"{nul['expected_false']:.1f} null neurons per permutation pass the real cut-offs"
            + (f" (empirical FDR {nul['fdr']:.3f})." if nul.get("fdr") is not None else ".")
        )
    else:
        lines.append("n_null is 0: no permuted-label null, so nothing about the directions is beyond chance.")
    half = pd.DataFrame(entry["split_half"])
    if not half.empty:
        lines.append(
            f"Split-half stability: the two halves' directions have a mean cosine (over layers) of "
            f"{half.cosine_mean.min():.2f} to {half.cosine_mean.max():.2f} across emotions; their selections "
            f"overlap with Jaccard {half.jaccard.min():.2f} to {half.jaccard.max():.2f}, against "
            f"{half.random_jaccard.median():.4f} for random sets of those sizes."
        )
    return lines


def control(table: pd.DataFrame, control: str = "attribution") -> str | None:
    """The positive control's verdict on the instrument, read before any other: how many of its tests reject, and
    whether that is most of them (None when the run has no control set)."""
    t = table[(table["set"] == control) & table["p"].notna()] if "set" in table else table.iloc[:0]
    if t.empty:
        return None
    k, n = int((t.p_holm < ALPHA).sum()), len(t)
    head = (
        f"Positive control: the `{control}` set (neurons chosen on train items to move the readout) is "
        f"detected in {k} of {n} emotions after Holm correction"
    )
    if k > n / 2:
        return head + ", so this test can find an effect of that kind at this size."
    return (
        head + ". The instrument is too weak to find even an effect built to exist: every 'no detectable "
        "effect' below says nothing about absence."
    )


def tests(table: pd.DataFrame, what: str = "main") -> list[str]:
    """'What this run shows', one sentence per tested row, from the corrected tests (nothing typed by hand)."""
    lines = []
    for _, r in table.iterrows():
        where = f"{r['set']} set, {r['emotion']}" + (f", {what} {r[what]}" if what != "main" else "")
        if not np.isfinite(r.get("p", np.nan)):
            lines.append(
                f"{where}: not tested ({int(r.get('n_neurons', 0) or 0)} neurons, "
                f"{int(r.get('n_items', 0) or 0)} items)."
            )
            continue
        size = (
            f"own minus random margin {r.own_minus_random_margin:+.2f} nat, unadjusted 95% interval "
            f"[{r.omr_margin_lo:+.2f}, {r.omr_margin_hi:+.2f}] against {int(r.n_random)} random sets"
        )
        tail = ""
        if r.verdict == "no detectable effect" and np.isfinite(r.get("power", np.nan)):
            tail = (
                f"; power to see a {r.power_delta:g}-nat shift was {r.power:.0%}, 80% power needs a shift of "
                f"{r.delta_80:.2f} nat"
            )
        lines.append(
            f"{where} ({int(r.n_neurons)} neurons, {int(r.n_items)} items): {r.verdict} "
            f"(Holm p = {r.p_holm:.3g}; {size}){tail}."
        )
    return lines


def grid(table: pd.DataFrame) -> list[str]:
    """Sentences for notebook 04's pooled contrasts: one per named set and contrast, then the controls."""
    t = table[np.isfinite(table.get("p", pd.Series(np.nan, table.index)).astype(float))] if len(table) else table
    if t.empty:
        return ["The grid contrasts ran no test (no emotion had neurons in every cell)."]
    tests_ = t[t.role == "test"]
    lines = [
        f"Depth and dose, pooled over emotions (Holm over {len(tests_)} named-set contrasts, alpha {ALPHA}): "
        + "; ".join(verdict_phrase(r, f"`{r['set']}` {r.contrast}") for _, r in tests_.iterrows())
        + "."
    ]
    ctl = t[t.role != "test"]
    if len(ctl):
        lines.append(
            "Controls (outside the family): "
            + "; ".join(verdict_phrase(r, f"`{r['set']}` {r.contrast}") for _, r in ctl.iterrows())
            + "."
        )
    return lines


def verdict_phrase(r: pd.Series, name: str) -> str:
    """One pooled test as a phrase: its verdict, the difference with its interval, in random-set SDs, Holm p and
    the smallest equivalence margin."""
    sds = f", {r.in_sds:+.1f} random-set SDs" if np.isfinite(r.get("in_sds", np.nan)) else ""
    return (
        f"{name}: {r.verdict} ({r.own_minus_random:+.2f} nat [{r.lo:+.2f}, {r.hi:+.2f}]{sds}, "
        f"Holm p = {r.p_holm:.3g}; shown equivalent to random within ±{r.equivalence_bound:.2f} nat at the "
        "strictest level)"
    )


def pooled_lines(d: Path) -> list[str]:
    """Stage 3's answer: each named set's pooled verdict with its equivalence bound, then the controls, then the
    measured detection curve (nothing for a run without pooled.csv)."""
    t = _csv(d, "pooled.csv")
    if t is None or t.empty:
        return []
    t = t[t["primary"].astype(bool)] if "primary" in t else t
    tested = t[t.role == "test"].dropna(subset=["p"])
    out = []
    if len(tested):
        out.append(
            f"Stage 3's answer, one pooled test per named set (the mean over emotions of the own set's margin "
            f"change against {int(tested.n_random.min())} random families that keep the set's overlap, Holm "
            f"over {len(tested)} sets, arm {tested.arm.iloc[0]}): "
            + "; ".join(verdict_phrase(r, f"`{r['set']}`") for _, r in tested.iterrows())
            + "."
        )
    ctl = t[t.role != "test"].dropna(subset=["p"])
    if len(ctl):
        out.append(
            "Controls, tested the same way outside the family: "
            + "; ".join(verdict_phrase(r, f"`{r['set']}`") for _, r in ctl.iterrows())
            + "."
        )
    out += detection_lines(d)
    return out


def detection_lines(d: Path) -> list[str]:
    """The measured detection curve in one sentence (nothing without titration.csv)."""
    from ..causal import pooled

    tit = _csv(d, "titration.csv")
    if tit is None or tit.empty:
        return []
    curve = pooled.detection_curve(tit)
    small = pooled.smallest_detected(curve)
    parts = ", ".join(f"{r.share:.0%} → {r.effect:+.2f} nat, detected {r.detected:.0%}" for r in curve.itertuples())
    floor = (
        " (the smallest effect titrated: smaller ones were not tried)"
        if np.isfinite(small) and np.isclose(small, curve.effect.abs().min())
        else ""
    )
    tail = (
        f"the smallest effect detected in at least 80% of draws was {small:.2f} nat{floor}, so an effect of "
        "that size would have been found"
        if np.isfinite(small)
        else f"no share was detected in 80% of draws, so effects up to {curve.effect.abs().max():.2f} nat could be "
        "missed"
    )
    return [
        f"Detection curve (titrated families: a share of each emotion's random set replaced by its `attribution` "
        f"neurons, {int(curve.draws.min())} draws per share, each through the same pooled test): {parts}; {tail}."
    ]


def steering(claims: pd.DataFrame, pooled_t: pd.DataFrame, trade: pd.DataFrame, doses: pd.DataFrame) -> list[str]:
    """'What this run shows' for stage 5, from its tables (nothing typed): the direction (the positive control) first,
    then each named set's claim under the both-scorers rule, the prompting ceiling, and fluency."""
    lines = []
    order = list(claims.sort_values("role", key=lambda r: r != "positive control").intervention) if len(claims) else []

    def per_scorer(name: str) -> str:
        g = pooled_t[pooled_t.intervention == name]
        return "; ".join(
            f"{r.scorer}: own − random {r.own_minus_random:+.3f} P(target) over {r.n_emotions} emotions "
            f"against {r.n_random:.0f} random, {r.verdict}"
            if np.isfinite(r.get("own_minus_random", np.nan))
            else f"{r.scorer}: {r.verdict}{why(r)}"
            for _, r in g.iterrows()
        )

    def why(r) -> str:
        dropped = int(r.get("families_dropped", 0) or 0)
        left = r.get("n_random", np.nan)
        return (
            f", {dropped} random families left out for a degenerate condition"
            + (f", {left:.0f} left" if np.isfinite(left) else "")
            if dropped
            else ""
        )

    for name in order:
        c = claims[claims.intervention == name].iloc[0]
        what = (
            "The steering positive control, the emotion direction against random directions of the same norm"
            if name == "direction"
            else f"Set `{name}` against random families"
        )
        tail = ""
        if name == "direction" and not str(c.claim).startswith("effect"):
            found = "could not test" if str(c.claim) == "not tested" else "did not find"
            tail = (
                f" The instrument {found} the direction's steering, so a neuron set's null result below says "
                "little about sufficiency."
            )
        lines.append(f"{what}, at its fluency-matched dose {c.dose:g}: {c.claim} ({per_scorer(name)}).{tail}")
    missing = sorted(set(doses.intervention) - set(doses[doses.chosen].intervention)) if len(doses) else []
    if missing:
        lines.append(f"Not tested (no dose kept the median perplexity within the factor): {', '.join(missing)}.")
    for sc, g in trade.groupby("scorer", sort=False) if len(trade) else []:
        p_ = g[g.kind == "prompt"]
        own = g[(g.random == -1) & (g.kind != "prompt")]
        if len(p_) and len(own):
            lines.append(
                f"Prompting ceiling ({sc}): the instruction moved P(target) by {p_.d_p.iloc[0]:+.3f} "
                f"(median perplexity {p_.median_ppl.iloc[0]:.1f}); steering at the test doses: "
                + ", ".join(f"{r.intervention} {r.d_p:+.3f} (perplexity {r.median_ppl:.1f})" for r in own.itertuples())
                + "."
            )
    if len(doses):
        base = doses.unsteered_median_ppl.iloc[0]
        lines.append(
            f"Fluency: the unsteered model's median perplexity was {base:.1f}; at the largest dose the own "
            f"interventions reached {_spanf(doses[doses.dose == doses.dose.max()].median_ppl)}."
        )
    return lines


def _spanf(v) -> str:
    v = [x for x in v if np.isfinite(x)]
    return "n/a" if not v else (f"{min(v):.1f}" if len(v) == 1 else f"{min(v):.1f} to {max(v):.1f}")


def headline(d: str | Path) -> list[str]:
    """A few sentences per run (the README's): stage 2 against its null, the positive control, stage 3's corrected
    verdicts, the two methods, steering, the grid contrasts."""
    d = Path(d)
    tests = _csv(d, "own_vs_random.csv")
    tests = tests if tests is not None else pd.DataFrame()
    grid = _csv(d, "grid_contrasts.csv")
    inst = runfiles.load_instrument_file(d) or {}
    pilot = inst.get("pilot", {})
    out = []
    if (d / "variants.csv").exists():
        v = pd.read_csv(d / "variants.csv").set_index("variant")
        r = v.loc["paper"]
        good = [n for n in v.index if v.loc[n, "beats_null"] and v.loc[n, "stable"]]
        out.append(
            f"Stage 2: the paper's selection {'beats' if r.beats_null else 'does not beat'} the "
            f"label-permutation null (empirical FDR {r.fdr:.3f}) with median selectivity "
            f"{r.median_selectivity:.2f}x (null {r.null_selectivity:.2f}x); {len(good)} of {len(v)} variants "
            "beat the null and are stable."
        )
    out += pooled_lines(d)
    if pilot:
        out.append(
            f"The primary arm was fixed in the parameter file ({pilot.get('chosen')}); the descriptive pilot's "
            f"quietest arm was {pilot.get('quietest', pilot.get('chosen'))}."
        )
    check = control(tests) if "set" in tests else None
    if check:
        out.append("Per emotion (secondary, Holm within each set): " + check[0].lower() + check[1:])
    out += set_lines(d, tests)
    out += head_to_head(d)
    out += steering_summary(d)
    if grid is not None and "role" in grid:
        out += grid_lines(grid)
    return out


def grid_lines(grid: pd.DataFrame) -> list[str]:
    """Notebook 04's pooled contrasts in one sentence for the headline."""
    g = grid[grid["p"].notna() & (grid.role == "test")]
    if g.empty:
        return []
    return [
        "Depth and dose, pooled over emotions: "
        + "; ".join(f"`{r['set']}` {r.contrast} {r.verdict}" for _, r in g.iterrows())
        + "."
    ]


def set_lines(d: Path, tests: pd.DataFrame) -> list[str]:
    """One sentence per tested set but the controls: how many emotions reject after Holm, which, and the power."""
    from ..identify.neurons import CONTROL_SETS

    out = []
    for name in dict.fromkeys(tests.get("set", [])):
        if name in CONTROL_SETS:
            continue
        t = _tested(tests, name)
        if t.empty:
            continue
        eff = t[t["verdict"].str.contains("beyond random")]
        spec = pd.read_csv(d / "specificity.csv") if (d / "specificity.csv").exists() else None

        def shared(e: str) -> str:
            if spec is None:  # noqa: B023 (called within this iteration)
                return ""
            r = spec[(spec["set"] == name) & (spec.emotion == e)]  # noqa: B023 (called within this iteration)
            return f"; the other emotions' sets move the same items by {r.iloc[0].others_d:+.2f} nat" if len(r) else ""

        out.append(
            f"`{name}` set, per emotion: {len(eff)} of {len(t)} emotions show an effect of their own neurons "
            "beyond their random sets after Holm correction within the set"
            + (
                " ("
                + ", ".join(
                    f"{r.emotion}: {r.own_minus_random_margin:+.2f} nat, {r.verdict}{shared(r.emotion)}"
                    for _, r in eff.iterrows()
                )
                + ")"
                if len(eff)
                else ""
            )
            + f"; 80% power needed a shift of {t['delta_80'].median():.2f} nat (median over emotions)."
        )
    return out


def steering_summary(d: Path) -> list[str]:
    """Stage 5 (sufficiency) in one sentence: the direction's claim first, then each named set's, under the
    both-scorers rule at the fluency-matched dose (nothing for runs without the stage or with an earlier table)."""
    path = d / "steering_claims.csv"
    if not path.exists():
        return []
    t = pd.read_csv(path)
    t = t.sort_values("role", key=lambda r: r != "positive control", kind="stable")
    parts = [
        f"{'the emotion direction (positive control)' if r.role == 'positive control' else 'set ' + r.intervention}"
        f" at dose {r.dose:g}: {r.claim}"
        for r in t.itertuples()
    ]
    return (
        ["Stage 5, steering (sufficiency; pooled over emotions, both scorers must agree): " + "; ".join(parts) + "."]
        if parts
        else []
    )


def head_to_head(d: Path) -> list[str]:
    """With a `directions` set: its overlap with `paper` against chance, and which method's neurons matter in more
    emotions (emolib.identify.headtohead); nothing for runs without it."""
    from ..identify import headtohead, neurons

    path = d / "neurons.json"
    if not path.exists() or "directions" not in neurons.set_names(path):
        return []
    ov = headtohead.overlap(neurons.load(path, "paper"), neurons.load(path, "directions"))
    lead = [x for x in headtohead.causal_lines(d) if ", `" not in x.split(":")[0]]  # the per-test comparisons
    return ["Two methods: " + " ".join(headtohead.overlap_lines(ov, "paper", "directions") + lead)]


def _tested(tests: pd.DataFrame, name: str) -> pd.DataFrame:
    """The tested rows of one named set."""
    t = tests[tests["set"] == name] if "set" in tests else tests.iloc[0:0]
    return t[t["p"].notna()] if "p" in t else t.iloc[0:0]


def _csv(d: Path, name: str) -> pd.DataFrame | None:
    """A table of the run folder, or None when the stage has not written it."""
    return pd.read_csv(d / name) if (d / name).exists() else None


def _json(d: Path, name: str) -> dict | None:
    """A JSON file of the run folder, or None when absent."""
    return json.loads((d / name).read_text()) if (d / name).exists() else None


def data(d: Path) -> list[str]:
    """Stage 1: dialogues generated and kept, and each annotator's agreement with the intended theme."""
    ann = _csv(d, "annotations.csv")
    if ann is None or "kept" not in ann or not len(ann):
        return []
    raters = [c for c in ann.columns if c not in ("topic", "theme", "dialogue", "style", "label", "kept", "split")]
    kept = int(ann["kept"].sum())
    lines = [f"{kept} of {len(ann)} generated dialogues ({kept / len(ann):.0%}) were kept by the annotators' vote."]
    if "theme" in ann and raters:
        lines.append(
            "Agreement of each annotator with the intended emotion: "
            + ", ".join(f"{a} {(ann[a] == ann['theme']).mean():.0%}" for a in raters)
            + "."
        )
    return lines


def identification(d: Path) -> list[str]:
    """Stage 2: the variants against their null, the selective set, the directions set and the two methods."""
    table, nj = _csv(d, "variants.csv"), _json(d, "neurons.json")
    if table is None or nj is None:
        return []
    choice = nj.get("selective_choice", {})
    lines = selection(
        table.set_index("variant"),
        choice.get("variant"),
        choice.get("why", ""),
        int(nj.get("params", {}).get("n_null", 0)),
    )
    lines += firing_lines(d, nj)
    entry = nj.get("named_sets", {}).get("directions")
    if entry:
        from ..identify import headtohead, neurons

        two = {n: neurons.load(d / "neurons.json", n) for n in ("paper", "directions")}
        lines += directions(entry) + headtohead.overlap_lines(
            headtohead.overlap(two["paper"], two["directions"], seed=int(nj.get("params", {}).get("seed", 0))),
            "paper",
            "directions",
        )
        lines.append(
            "Median relative depth: "
            + ", ".join(f"`{n}` {v:.2f}" for n, v in headtohead.median_depth(two).items())
            + "."
        )
    return lines


def firing_lines(d: Path, nj: dict) -> list[str]:
    """Stage 2's named sets: how often they fire on each emotion's tokens (near-saturated or not), from
    probabilities.safetensors (nothing without it)."""
    from ..identify import neurons, rates

    if not (d / rates.PROBABILITIES_FILE).exists():
        return []
    named = nj.get("named_sets", {})
    names = [n for n in neurons.set_names(d / "neurons.json") if n not in neurons.CONTROL_SETS]
    sets = {n: neurons.load(d / "neurons.json", n) for n in names}
    settings = {n: (named.get(n) or {}).get("settings") or named["paper"]["settings"] for n in names}
    return rates.lines(rates.summary(d, sets, settings))


def ablation(d: Path) -> list[str]:
    """Stage 3: the positive control first, then one sentence per corrected test."""
    t = _csv(d, "own_vs_random.csv")
    if t is None:
        return []
    check = control(t)
    return pooled_lines(d) + ["Per emotion (secondary, Holm within each set):"] + ([check] if check else []) + tests(t)


def ablation_summary(d: Path) -> list[str]:
    """Stage 3 in a few lines, for the top of the notebook: the positive control, then one sentence per set."""
    t = _csv(d, "own_vs_random.csv")
    if t is None:
        return []
    check = control(t)
    return (
        pooled_lines(d)
        + ([f"Per emotion (secondary, Holm within each set): {check}"] if check else [])
        + set_lines(d, t)
        + ["One line per test: at the end of this notebook, and in `findings.json`."]
    )


def layers(d: Path) -> list[str]:
    """Stage 4: the pre-specified grid contrasts."""
    t = _csv(d, "grid_contrasts.csv")
    return grid(t) if t is not None and "role" in t else []  # (a table of an earlier version: no pooled contrasts)


def steered(d: Path) -> list[str]:
    """Stage 5: the direction control and the sets under the both-scorers rule, the prompting ceiling, fluency."""
    c, pt = _csv(d, "steering_claims.csv"), _csv(d, "steering_pooled.csv")
    tr, ds = _csv(d, "steering_tradeoff.csv"), _csv(d, "steering_dose_choice.csv")
    if c is None or pt is None or tr is None or ds is None:
        return []
    return steering(c, pt, tr, ds)


BUILDERS = {"01": data, "02": identification, "03": ablation, "04": layers, "05": steered}
SUMMARIES = {"03": ablation_summary}  # stages whose findings are too many for the top of the notebook
SUMMARY = " (summary)"  # findings.json key suffix of a stage's summary


def stage(run_dir: str | Path, number: str) -> list[str]:
    """One stage's findings ('01' to '05'), built from the run folder's files."""
    if number not in BUILDERS:
        raise ValueError(f"stage: must be one of {', '.join(BUILDERS)}, got {number!r}")
    return BUILDERS[number](Path(run_dir))


def build(run_dir: str | Path) -> dict[str, list[str]]:
    """Every stage's findings (by notebook name) and the run's headline, from its files."""
    d = Path(run_dir)
    out = {name: stage(d, n) for n, name in STAGES.items()}
    for n, fn in SUMMARIES.items():
        out[STAGES[n] + SUMMARY] = fn(d)
    out["headline"] = headline(d) if (d / "own_vs_random.csv").exists() or (d / "variants.csv").exists() else []
    return out


def write(run_dir: str | Path) -> dict[str, list[str]]:
    """Build every stage's findings and write them to run_dir/findings.json; returns them."""
    from ..safeio import atomic_write_json

    out = build(run_dir)
    atomic_write_json(Path(run_dir) / FILE, out, indent=1)
    return out


def markdown(lines: list[str]) -> str:
    """Findings as a Markdown bullet list."""
    return "\n".join(f"- {line}" for line in lines) if lines else "- (no findings: the stage wrote no tables)"


def show(run_dir: str | Path, number: str) -> None:
    """Display one stage's findings in a notebook, built from the files the stage has just written."""
    from IPython.display import Markdown, display

    display(Markdown(markdown(stage(run_dir, number))))
