"""Stage 2 selection: firing probabilities, entropy over emotions, the lowest-entropy neurons and their emotions."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


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


def select(counts: torch.Tensor, tokens: torch.Tensor, emotions: list[str], top_rate: float = 0.01,
           filter_quantile: float | None = 0.95, assign: str = "threshold") -> dict:
    """Select the top_rate lowest-entropy neurons (after the filter) and assign each to its emotion(s)."""
    P = probabilities(counts, tokens)
    E, L, D = P.shape
    H = entropy(P)
    thr = threshold(P, filter_quantile if filter_quantile is not None else 0.95)
    eligible = torch.isfinite(H)
    if filter_quantile is not None:
        eligible &= P.max(0).values >= thr
    k = max(1, round(top_rate * L * D))
    flat_H = torch.where(eligible, H, torch.full_like(H, math.inf)).flatten()
    order = torch.sort(flat_H, stable=True).indices
    chosen = order[: min(k, int(eligible.sum()))]
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
    return {"sets": sets, "selected": selected, "threshold": thr, "k": k, "n_eligible": int(eligible.sum()),
            "entropy": H, "P": P}


@dataclass
class NeuronSets:
    """Emotion neurons as loaded from neurons.json."""

    model: str
    n_layers: int
    d_ff: int
    emotions: list[str]
    sets: dict[str, list[tuple[int, int]]]
    meta: dict

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


def save(path: str | Path, model: str, params: dict, result: dict, tokens: torch.Tensor, emotions: list[str],
         shape: tuple[int, int]) -> None:
    """Write neurons.json: model, parameters, token counts, and per emotion its [layer, index] pairs."""
    out = {"model": model, "n_layers": shape[0], "d_ff": shape[1], "emotions": emotions, "params": params,
           "tokens_per_emotion": {e: int(t) for e, t in zip(emotions, tokens.tolist())},
           "threshold": result["threshold"], "n_selected": len(result["selected"]), "k": result["k"],
           "n_eligible": result["n_eligible"],
           "neurons_per_emotion": {e: len(v) for e, v in result["sets"].items()},
           "neurons": result["sets"], "selected": result["selected"]}
    Path(path).write_text(json.dumps(out, indent=1))


def load(path: str | Path) -> NeuronSets:
    """Read neurons.json written by stage 2."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run notebook 02 (stage 2) for this run first")
    d = json.loads(path.read_text())
    sets = {e: [tuple(x) for x in d["neurons"][e]] for e in d["emotions"]}
    return NeuronSets(d["model"], d["n_layers"], d["d_ff"], d["emotions"], sets, d)


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


def relative_depth(layer: int, n_layers: int) -> float:
    """Layer position in [0, 1] (centre of the layer), so models of different depth compare."""
    return (layer + 0.5) / n_layers
