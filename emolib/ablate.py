"""Stage 3 interventions: set chosen FFN neurons to zero, their mean, or a scaled value, through down_proj hooks."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch

from .models import ffn_layers

MODES = ("zero", "mean", "scale")


@contextmanager
def ablate(model, neurons: dict[int, list[int]], mode: str = "zero", means: torch.Tensor | None = None,
           scale: float = 0.5):
    """Within the block, neuron i of layer l (the input of mlp.down_proj) is zeroed, set to its mean, or scaled."""
    if mode not in MODES:
        raise ValueError(f"ablation mode: must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "mean" and means is None:
        raise ValueError("ablation mode mean needs the neurons' mean activations (stage 2's counts file)")
    mlps = ffn_layers(model)
    handles = []

    def make_hook(idx: torch.Tensor, value: torch.Tensor | None):
        def hook(module, args):
            x = args[0]
            if mode == "zero":
                x[..., idx] = 0
            elif mode == "mean":
                x[..., idx] = value.to(x.dtype)
            else:
                x[..., idx] *= scale
            return (x,) + tuple(args[1:])
        return hook

    try:
        for layer, idx in neurons.items():
            if not idx:
                continue
            dev = mlps[layer].down_proj.weight.device
            t = torch.as_tensor(sorted(idx), dtype=torch.long, device=dev)
            value = means[layer, t.cpu()].to(dev) if mode == "mean" else None
            handles.append(mlps[layer].down_proj.register_forward_pre_hook(make_hook(t, value)))
        yield
    finally:
        for h in handles:
            h.remove()


def random_like(neurons: dict[int, list[int]], d_ff: int, seed: int,
                exclude: dict[int, list[int]] | None = None) -> dict[int, list[int]]:
    """Random neurons with the same count in each layer, avoiding the excluded ones (the emotion's own)."""
    rng = np.random.default_rng(seed)
    out = {}
    for layer in sorted(neurons):
        pool = np.setdiff1d(np.arange(d_ff), np.asarray((exclude or {}).get(layer, []), dtype=int))
        out[layer] = sorted(rng.choice(pool, len(neurons[layer]), replace=False).tolist())
    return out


def restrict(neurons: dict[int, list[int]], layers: range | list[int], fraction: float = 1.0,
             seed: int = 0) -> dict[int, list[int]]:
    """The neurons inside the given layers, keeping a seeded fraction of them (at least one if any)."""
    inside = [(l, i) for l in sorted(neurons) if l in layers for i in neurons[l]]
    if not inside:
        return {}
    k = max(1, round(fraction * len(inside)))
    rng = np.random.default_rng(seed)
    keep = [inside[j] for j in sorted(rng.choice(len(inside), k, replace=False).tolist())]
    out: dict[int, list[int]] = {}
    for layer, idx in keep:
        out.setdefault(layer, []).append(idx)
    return out


def layer_bins(n_layers: int, bins: int) -> dict[str, range]:
    """Equal depth ranges (bottom/middle/top for 3 bins), plus all layers."""
    edges = np.linspace(0, n_layers, bins + 1).round().astype(int)
    names = {1: ["all"], 2: ["bottom", "top"], 3: ["bottom", "middle", "top"]}.get(bins) or \
        [f"bin{i + 1}" for i in range(bins)]
    out = {n: range(int(a), int(b)) for n, a, b in zip(names, edges[:-1], edges[1:])}
    out["all"] = range(n_layers)
    return out
