"""Notebook 04's dose-response and depth grids: each named set's neurons at other selection rates and in depth
ranges, their own and random families' margin and accuracy changes per cell (descriptive), and the pre-specified
contrasts (dose slope, top minus bottom) tested pooled over emotions against the random series (Holm over the named
sets) and per emotion as secondary tests."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..identify import neurons
from ..identify import selection as identify
from ..lm import ablate
from ..progress import tqdm
from . import attribution, families, pooled, stats
from .effects import POWER_DELTA, correct_family, mean_deltas
from .instrument import Scorer
from .matched import set_firing, set_settings


def dose_sets(p: dict, ns: neurons.NeuronSets, rate: float) -> dict[str, dict[int, list[int]]]:
    """Each emotion's neurons when the set's rule selects top_rate = rate: its lowest-entropy neurons, or for the
    attribution set its strongest estimated drops, as many per emotion as the paper's rule selects at that rate."""
    entry = ns.meta["named_sets"][ns.name]
    settings = set_settings(ns)
    state = identify.load_counts(p["run_dir"], settings["tokens"])
    res = identify.select_variant(state, settings, rate, ns.meta.get("min_count", 0))
    sets = res["sets"]
    if entry.get("variant") == "attribution":
        est = attribution.load_estimate(p["run_dir"])
        sets = attribution.select(est, [len(res["sets"][e]) for e in p["emotions"]], p["emotions"])
    elif entry.get("variant") == "weights":  # its top-scoring neurons through the unembedding, sized likewise
        from ..identify.weights import dose_select as weights_dose

        sets = weights_dose(p["run_dir"], [len(res["sets"][e]) for e in p["emotions"]], p["emotions"])
    elif (
        entry.get("variant") == "directions"
    ):  # its top contributions, sized like the paper's rule (emolib.identify.directions)
        from ..identify.directions import dose_select

        sets = dose_select(p["run_dir"], [len(res["sets"][e]) for e in p["emotions"]], p["emotions"])
    out = {}
    for e in p["emotions"]:
        d: dict[int, list[int]] = {}
        for layer, idx in sets[e]:
            d.setdefault(layer, []).append(idx)
        out[e] = d
    return out


def range_cells(
    ns: neurons.NeuronSets, bins: int, only: list[str] | None = None
) -> dict[str, dict[str, dict[int, list[int]]]]:
    """The set's neurons inside each depth range (bottom / middle / top thirds for 3 bins, and all; or only those)."""
    ranges = {k: v for k, v in ablate.layer_bins(ns.n_layers, bins).items() if only is None or k in only}
    return {
        name: {e: {l: v for l, v in ns.by_layer(e).items() if l in r} for e in ns.emotions}
        for name, r in ranges.items()
    }


def grid_scores(
    scorer: Scorer,
    p: dict,
    ns: neurons.NeuronSets,
    items: pd.DataFrame,
    cells: dict,
    n_random: int,
    spread: torch.Tensor | None,
) -> dict:
    """Per emotion and cell: the own set's and each random family's mean margin and accuracy change on the emotion's
    items ({(emotion, cell): {'own': (m, a), 'random': [R, 2], 'n_neurons', 'n_items'}}). A cell's families map the
    union of its emotions' neurons (emolib.causal.families), so series r of every emotion is one family."""
    E = p["emotions"]
    firing = set_firing(p, ns)
    y_all = np.array([E.index(e) for e in items.label])
    maps = {
        label: families.family_maps(families.union(per_emotion), firing, n_random, p["seed"], spread)
        for label, per_emotion in cells.items()
    }
    out = {}
    for j, e in enumerate(tqdm(E, desc=f"{ns.name}: grid")):
        sel = y_all == j
        if not sel.any():
            continue
        d, y = items.dialogue[sel].tolist(), y_all[sel]
        base = scorer.arm_scores(d, [{}])[0]
        for label, per_emotion in cells.items():
            own = per_emotion.get(e, {})
            if not sum(map(len, own.values())):
                continue
            masks = [own] + [families.image(m, own) for m in maps[label]]
            s = scorer.arm_scores(d, masks)
            dm, da = mean_deltas(base, s, y), mean_deltas(base, s, y, stats.correct)
            out[(e, label)] = {
                "own": (dm[0], da[0]),
                "random": np.stack([dm[1:], da[1:]], 1),
                "n_neurons": sum(map(len, own.values())),
                "n_items": len(d),
            }
    return out


def grid_cells(g: dict, name: str, what: str) -> pd.DataFrame:
    """The descriptive grid: every cell's own and random changes with its own-minus-random interval (not tested)."""
    rows = []
    for (e, label), c in g.items():
        rm, ra = c["random"][:, 0], c["random"][:, 1]
        dm, mlo, mhi = stats.prediction_ci(c["own"][0], rm)
        da, alo, ahi = stats.prediction_ci(c["own"][1], ra)
        rows.append(
            {
                "set": name,
                what: label,
                "emotion": e,
                "n_neurons": c["n_neurons"],
                "n_items": c["n_items"],
                "n_random": len(rm),
                "own_d_margin": c["own"][0],
                "own_d_accuracy": c["own"][1],
                "random_d_margin": rm.mean(),
                "random_d_margin_sd": rm.std(ddof=1) if len(rm) > 1 else np.nan,
                "random_d_accuracy_sd": ra.std(ddof=1) if len(ra) > 1 else np.nan,
                "own_minus_random_margin": dm,
                "omr_margin_lo": mlo,
                "omr_margin_hi": mhi,
                "own_minus_random_accuracy": da,
                "omr_accuracy_lo": alo,
                "omr_accuracy_hi": ahi,
            }
        )
    return pd.DataFrame(rows)


def grid_table(grids: dict[str, dict], what: str) -> pd.DataFrame:
    """grid_cells of every set, one table."""
    return pd.concat([grid_cells(g, name, what) for name, g in grids.items()], ignore_index=True)


def dose_slope(rates: list[float], values: np.ndarray) -> float:
    """Least-squares slope of margin change against log10 of the share of neurons masked (per tenfold dose)."""
    x = np.log10(np.asarray(rates, dtype=float))
    v = np.asarray(values, dtype=float)
    return float(np.polyfit(x, v, 1)[0]) if len(x) >= 2 else np.nan


CONTRASTS = {
    "dose slope": "slope of the margin change per tenfold dose, own against each random series",
    "top minus bottom": "margin change with the top third's neurons minus the bottom third's, own against "
    "each random pair",
}


def grid_contrasts(
    dose_g: dict[str, dict],
    range_g: dict[str, dict],
    emotions: list[str],
    rates: list[float],
    delta: float = POWER_DELTA,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(pooled, per emotion): notebook 04's pre-specified contrasts. The confirmatory family is the pooled one: per
    named set the dose slope (two doses or more) and top minus bottom (both ranges scored), each the mean over
    emotions against the same mean of each random series, Holm-corrected over every named set x contrast (control
    sets apart). Per emotion, the same contrasts are secondary (Holm within each set and contrast)."""
    rows, todo = [], []
    for name in dose_g:
        if len(rates) >= 2:
            todo.append((name, dose_g[name], "dose slope", rates))
        keys = range_g.get(name, {})
        if any(k[1] == "top" for k in keys) and any(k[1] == "bottom" for k in keys):
            todo.append((name, range_g[name], "top minus bottom", ["top", "bottom"]))
    m_tests = max(1, sum(name not in pooled.CONTROLS for name, *_ in todo))  # Holm's m of the named sets' family
    m_controls = max(1, len(todo) - m_tests)
    pooled_rows = []
    for name, g, contrast, labels in todo:
        per = contrast_rows(g, name, emotions, contrast, labels)
        rows.append(correct_family(pd.DataFrame(per).drop(columns="random_values", errors="ignore")))
        pooled_rows.append(
            pooled_contrast(per, name, contrast, delta, m_controls if name in pooled.CONTROLS else m_tests)
        )
    per_emotion = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
    pt = pd.DataFrame(pooled_rows)
    if pt.empty:
        return pt, per_emotion
    parts = [pooled.decide(pt[pt.role == r], delta) for r in ("test", "control") if (pt.role == r).any()]
    return pd.concat(parts).reindex(pt.index), per_emotion


def pooled_contrast(per: list[dict], name: str, contrast: str, delta: float, m: int = 1) -> dict:
    """One pooled contrast: the mean over emotions of the own contrast against the same mean of each random series."""
    ok = [r for r in per if "own" in r and "random_values" in r]
    row = {
        "set": name,
        "contrast": contrast,
        "role": "control" if name in pooled.CONTROLS else "test",
        "n_emotions": len(ok),
    }
    if not ok:
        return {**row, "p": np.nan, "p_equivalence": np.nan, "own_minus_random": np.nan}
    R = min(len(r["random_values"]) for r in ok)
    own = float(np.mean([r["own"] for r in ok]))
    null = np.mean([r["random_values"][:R] for r in ok], axis=0)
    return {**row, **pooled.test_row(own, null, delta, m)}


def contrast_rows(g: dict, name: str, emotions: list[str], contrast: str, labels: list) -> list[dict]:
    """The pre-specified contrast of a grid per emotion: own value against the random series' values (t prediction
    p, interval); random series j is random set j of every cell."""
    rows = []
    for e in emotions:
        cells = [g.get((e, l)) for l in labels]
        if any(c is None for c in cells) or min(len(c["random"]) for c in cells) < 2:
            rows.append({"set": name, "emotion": e, "contrast": contrast})
            continue
        R = min(len(c["random"]) for c in cells)
        own_v = np.array([c["own"][0] for c in cells])
        rnd_v = np.stack([c["random"][:R, 0] for c in cells], 1)  # [R, cells]
        if contrast == "dose slope":
            f = lambda v: dose_slope(labels, v)  # noqa: E731
        else:
            f = lambda v: v[0] - v[1]  # noqa: E731  (labels = [top, bottom])
        own, rnd = f(own_v), np.array([f(r) for r in rnd_v])
        d, lo, hi = stats.prediction_ci(own, rnd)
        rows.append(
            {
                "set": name,
                "emotion": e,
                "contrast": contrast,
                "n_random": R,
                "n_neurons": int(sum(c["n_neurons"] for c in cells)),
                "n_items": cells[0]["n_items"],
                "own": own,
                "random_mean": rnd.mean(),
                "random_d_margin_sd": rnd.std(ddof=1),
                "own_minus_random_margin": d,
                "omr_margin_lo": lo,
                "omr_margin_hi": hi,
                "p": stats.normal_p(own, rnd, "two-sided"),
                "random_values": rnd,
            }
        )
    return rows
