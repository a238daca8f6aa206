"""Stage 2 selection: firing probabilities, entropy over emotions, the lowest-entropy neurons and their emotions."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..lm.ablate import depth_bins

# Named sets built as controls (attribution: gradients on the readout; weights: the weights alone), never in the
# family of the named sets whose claims are tested.
CONTROL_SETS = ("attribution", "weights")


def probabilities(counts: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """P(u, e) = f(u, e) / T_e for counts [E, L, D] and token totals [E]."""
    return counts.double() / tokens.double().clamp(min=1).view(-1, 1, 1)


def entropy(P: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of each neuron's probabilities normalised over emotions; 0 log 0 = 0; never-firing = inf."""
    total = P.sum(0)
    q = P / total.clamp(min=1e-300)
    H = -(torch.where(q > 0, q * torch.log(q.clamp(min=1e-300)), torch.zeros_like(q))).sum(0)
    return torch.where(total > 0, H, torch.full_like(H, math.inf))


def threshold(P: torch.Tensor, q: float) -> float:
    """The q-quantile of all P values (LAPE's activation-probability filter)."""
    flat = P.flatten().float()
    if flat.numel() > 16_000_000:  # torch.quantile's size limit: a seeded subsample
        flat = flat[torch.randperm(flat.numel(), generator=torch.Generator().manual_seed(0))[:16_000_000]]
    return float(torch.quantile(flat, q))


def lowest_entropy(
    P: torch.Tensor,
    H: torch.Tensor,
    fired: torch.Tensor,
    thr: float,
    k: int,
    min_count: int = 0,
    use_filter: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """LAPE's pick: the eligible neurons [L, D] (fired at least max(1, min_count) times; with the filter, a largest P
    at or above thr) and the flat indices of the k lowest-entropy ones among them, lowest first (ties by index)."""
    eligible = torch.isfinite(H) & (fired >= max(1, min_count))
    if use_filter:
        eligible &= P.max(0).values >= thr
    flat_H = torch.where(eligible, H, torch.full_like(H, math.inf)).flatten()
    chosen = torch.sort(flat_H, stable=True).indices[: min(k, int(eligible.sum()))]
    return eligible, chosen


def select(
    counts: torch.Tensor,
    tokens: torch.Tensor,
    emotions: list[str],
    top_rate: float = 0.01,
    filter_quantile: float | None = 0.95,
    assign: str = "threshold",
    min_count: int = 0,
    scope: str = "global",
) -> dict:
    """Select the top_rate lowest-entropy eligible neurons and assign each to its emotion(s).

    Eligible: fired at all, at least min_count times over all emotions, and (LAPE's filter) a largest firing
    probability at or above the filter_quantile of all P values. scope global ranks all eligible neurons together;
    per_emotion takes k / E from the neurons whose top emotion is each emotion. assign threshold gives a neuron to
    every emotion whose P exceeds the filter threshold (its top emotion if none); argmax to its top emotion only."""
    if scope not in SCOPES:
        raise ValueError(f"selection_scope: must be one of {', '.join(SCOPES)}, got {scope!r}")
    P = probabilities(counts, tokens)
    E, L, D = P.shape
    H = entropy(P)
    thr = threshold(P, filter_quantile if filter_quantile is not None else 0.95)
    k = max(1, round(top_rate * L * D))
    eligible, chosen = lowest_entropy(P, H, counts.sum(0), thr, k, min_count, filter_quantile is not None)
    flat_H = torch.where(eligible, H, torch.full_like(H, math.inf)).flatten()
    top = P.argmax(0).flatten()
    if scope == "global":
        cutoff = {"all": float(flat_H[chosen].max()) if len(chosen) else math.nan}
    else:
        chosen_parts, cutoff = [], {}
        for j, e in enumerate(emotions):
            k_e = max(1, round(k / E))
            own = torch.where(top == j, flat_H, torch.full_like(flat_H, math.inf))
            order = torch.sort(own, stable=True).indices[: min(k_e, int(torch.isfinite(own).sum()))]
            chosen_parts.append(order)
            cutoff[e] = float(own[order].max()) if len(order) else math.nan
        chosen = torch.sort(torch.cat(chosen_parts)).values
        chosen = chosen[torch.argsort(flat_H[chosen], stable=True)]
    sets: dict[str, list[list[int]]] = {e: [] for e in emotions}
    selected = []
    for u in chosen.tolist():
        layer, idx = divmod(u, D)
        p = P[:, layer, idx]
        if assign == "argmax":
            owners = [int(p.argmax())]
        else:
            owners = [j for j in range(E) if p[j] > thr] or [int(p.argmax())]
        for j in owners:
            sets[emotions[j]].append([layer, idx])
        selected.append([layer, idx, float(H[layer, idx])])
    return {
        "sets": sets,
        "selected": selected,
        "threshold": thr,
        "k": k,
        "n_eligible": int(eligible.sum()),
        "entropy": H,
        "P": P,
        "eligible": eligible,
        "cutoff": cutoff,
        "scope": scope,
    }


SCOPES = ("global", "per_emotion")


def selectivity(P: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Ratio of each neuron's highest to lowest firing probability across emotions, [L, D]; the lowest is floored
    at one token's worth (1 / T_e), so a neuron silent for some emotion gets a finite ratio."""
    floor = (1.0 / tokens.double().clamp(min=1)).view(-1, 1, 1)
    return P.max(0).values / torch.maximum(P, floor).min(0).values


def diagnostics(
    P: torch.Tensor, H: torch.Tensor, tokens: torch.Tensor, sets: dict[str, list], emotions: list[str]
) -> list[dict]:
    """Per selected neuron: firing probability per emotion, highest/lowest ratio, gap between the top emotion and
    the runner-up, entropy, and the emotions it was assigned to (in selection order of the union)."""
    owners: dict[tuple[int, int], list[str]] = {}
    for e in emotions:
        for layer, idx in sets[e]:
            owners.setdefault((layer, idx), []).append(e)
    ratio = selectivity(P, tokens)
    rows = []
    for (layer, idx), es in owners.items():
        p = P[:, layer, idx]
        top2 = torch.topk(p, min(2, len(p))).values
        rows.append(
            {
                "layer": layer,
                "index": idx,
                "emotions": es,
                "n_emotions": len(es),
                "p": {e: round(float(v), 5) for e, v in zip(emotions, p)},
                "top_emotion": emotions[int(p.argmax())],
                "ratio": round(float(ratio[layer, idx]), 4),
                "gap": round(float(top2[0] - top2[-1]), 5),
                "entropy": round(float(H[layer, idx]), 5),
            }
        )
    return rows


def false_selections(null_result: dict, cutoff: dict[str, float], emotions: list[str]) -> int:
    """How many neurons of a null selection's eligible pool pass the real selection's entropy cut-off (global, or per
    top emotion for per_emotion scope): the selections one would expect if labels carried no information."""
    H, el, P = null_result["entropy"], null_result["eligible"], null_result["P"]
    if "all" in cutoff:
        return int((el & (H <= cutoff["all"])).sum())
    top = P.argmax(0)
    return int(
        sum(int((el & (top == j) & (H <= cutoff[e])).sum()) for j, e in enumerate(emotions) if math.isfinite(cutoff[e]))
    )


def summary_cutoff(result: dict) -> float:
    """One number for a selection's entropy cut-off: the largest selected entropy (global) or the mean over
    emotions (per_emotion)."""
    vals = [v for v in result["cutoff"].values() if math.isfinite(v)]
    return float(np.mean(vals)) if vals else math.nan


@dataclass
class NeuronSets:
    """One named set of emotion neurons, as loaded from neurons.json."""

    model: str
    n_layers: int
    d_ff: int
    emotions: list[str]
    sets: dict[str, list[tuple[int, int]]]
    meta: dict
    name: str = "paper"

    def by_layer(self, emotion: str) -> dict[int, list[int]]:
        """An emotion's neurons grouped by layer: {layer: [indices]}."""
        out: dict[int, list[int]] = {}
        for layer, idx in self.sets[emotion]:
            out.setdefault(layer, []).append(idx)
        return out

    def union(self) -> dict[int, list[int]]:
        """All emotions' neurons, grouped by layer."""
        out: dict[int, set[int]] = {}
        for e in self.emotions:
            for layer, idx in self.sets[e]:
                out.setdefault(layer, set()).add(idx)
        return {k: sorted(v) for k, v in out.items()}


def save(
    path: str | Path,
    model: str,
    params: dict,
    result: dict,
    tokens: torch.Tensor,
    emotions: list[str],
    shape: tuple[int, int],
    extra: dict | None = None,
) -> None:
    """Write neurons.json: model, parameters, token counts, per emotion its [layer, index] pairs (the first named
    set, under 'neurons'), and any extra keys (named sets, diagnostics, null summaries)."""
    out = {
        "model": model,
        "n_layers": shape[0],
        "d_ff": shape[1],
        "emotions": emotions,
        "params": params,
        "tokens_per_emotion": {e: int(t) for e, t in zip(emotions, tokens.tolist())},
        "threshold": result["threshold"],
        "n_selected": len(result["selected"]),
        "k": result["k"],
        "n_eligible": result["n_eligible"],
        "neurons_per_emotion": {e: len(v) for e, v in result["sets"].items()},
        "neurons": result["sets"],
        "selected": result["selected"],
        **(extra or {}),
    }
    from ..safeio import atomic_write_text, json_safe

    atomic_write_text(path, json.dumps(json_safe(out), indent=1, allow_nan=False))  # an empty cut-off is inf


def set_names(path: str | Path) -> list[str]:
    """The named neuron sets in a neurons.json (['paper'] for files written before named sets)."""
    from ..safeio import load_neurons_json

    return set_names_of(load_neurons_json(path))


def set_names_of(meta: dict) -> list[str]:
    """The named neuron sets of a loaded neurons.json mapping."""
    return list(meta.get("named_sets") or {"paper": None})


def load(path: str | Path, name: str = "paper", shape: tuple[int, int] | None = None) -> NeuronSets:
    """Read one named set of a neurons.json written by stage 2 (files without named sets hold only 'paper'); every
    named set is checked (safeio.check_neurons), against the model's FFN shape when given."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run notebook 02 (stage 2) for this run first")
    from ..safeio import load_neurons_json

    d = load_neurons_json(path, shape=shape)
    named = d.get("named_sets") or {"paper": {"neurons": d["neurons"]}}
    if name not in named:
        raise ValueError(f"{path}: has no neuron set named {name!r}; it has {', '.join(named)}")
    sets = {e: [tuple(x) for x in named[name]["neurons"][e]] for e in d["emotions"]}
    return NeuronSets(d["model"], d["n_layers"], d["d_ff"], d["emotions"], sets, d, name)


def jaccard(a: list, b: list) -> float:
    """|A ∩ B| / |A ∪ B| of two neuron lists (1.0 for two empty sets)."""
    A, B = {tuple(x) for x in a}, {tuple(x) for x in b}
    return len(A & B) / len(A | B) if A | B else 1.0


def random_jaccard(n_a: int, n_b: int, total: int, n_draws: int = 200, seed: int = 0) -> float:
    """Mean Jaccard of two random neuron sets of sizes n_a and n_b among total neurons."""
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n_draws):
        a = set(rng.choice(total, n_a, replace=False).tolist())
        b = set(rng.choice(total, n_b, replace=False).tolist())
        vals.append(len(a & b) / max(1, len(a | b)))
    return float(np.mean(vals))


def pool_jaccard(n_a: int, n_b: int, pool: int, n_draws: int = 200, seed: int = 0) -> float:
    """Chance Jaccard of two random sets of sizes n_a and n_b drawn from the pool they could be selected from
    (the eligible neurons), not from all neurons."""
    if pool <= 0 or not n_a or not n_b:
        return float("nan")
    return random_jaccard(min(n_a, pool), min(n_b, pool), pool, n_draws, seed)


def relative_depth(layer: int, n_layers: int) -> float:
    """Layer position in [0, 1] (centre of the layer), so models of different depth compare."""
    return (layer + 0.5) / n_layers


def bin_shares(layers: list[int], n_layers: int, bins: int) -> np.ndarray:
    """Share of the given layers (one entry per neuron) in each range of depth_bins (all zeros for none)."""
    counts = np.bincount(np.asarray(layers, dtype=int), minlength=n_layers)
    h = np.array([counts[r.start : r.stop].sum() for r in depth_bins(n_layers, bins)], dtype=float)
    return h / max(1.0, h.sum())


def named_sets(p: dict, shape: tuple[int, int] | None = None) -> dict[str, NeuronSets]:
    """Every named neuron set of the run's neurons.json ('paper' first, then 'selective' when stage 2 found one),
    each checked (against the model's FFN shape when given)."""
    path = Path(p["run_dir"]) / "neurons.json"
    return {name: load(path, name, shape) for name in set_names(path)}


def depth_profile(ns: NeuronSets, bins: int = 10) -> pd.DataFrame:
    """Share of each emotion's neurons per depth range of depth_bins (rows: the ranges' centres in [0, 1])."""
    edges = np.linspace(0, 1, bins + 1)
    out = {e: bin_shares([layer for layer, _ in ns.sets[e]], ns.n_layers, bins) for e in ns.emotions}
    return pd.DataFrame(out, index=pd.Index(np.round((edges[:-1] + edges[1:]) / 2, 3), name="relative depth"))
