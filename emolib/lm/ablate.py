"""Stage 3 and 5 interventions through down_proj pre-hooks: set chosen FFN neurons to zero, their mean or a scaled
value (ablation), or add a per-neuron amount to them (steering, mode add)."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch

from .models import ffn_layers

MODES = ("zero", "mean", "scale")  # ablation
HOOK_MODES = MODES + ("add",)  # add: the neuron gets scale x means[layer, i] added (stage 5: alpha x its SD)


def _check_mode(mode: str, means: torch.Tensor | None) -> None:
    """One clear error for an unknown mode, or a mode without the per-neuron values it needs."""
    if mode not in HOOK_MODES:
        raise ValueError(f"ablation mode: must be one of {', '.join(HOOK_MODES)}, got {mode!r}")
    if mode == "mean" and means is None:
        raise ValueError("ablation mode mean needs the neurons' mean activations (stage 2's counts file)")
    if mode == "add" and means is None:
        raise ValueError("mode add needs the per-neuron amounts (e.g. activation SDs) as means")


def random_like(
    neurons: dict[int, list[int]], d_ff: int, seed: int, exclude: dict[int, list[int]] | None = None
) -> dict[int, list[int]]:
    """Random neurons with the same count in each layer, avoiding the excluded ones (the emotion's own)."""
    rng = np.random.default_rng(seed)
    out = {}
    for layer in sorted(neurons):
        pool = np.setdiff1d(np.arange(d_ff), np.asarray((exclude or {}).get(layer, []), dtype=int))
        out[layer] = sorted(rng.choice(pool, len(neurons[layer]), replace=False).tolist())
    return out


def restrict(
    neurons: dict[int, list[int]], layers: range | list[int], fraction: float = 1.0, seed: int = 0
) -> dict[int, list[int]]:
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


def depth_bins(n_layers: int, bins: int) -> list[range]:
    """The layers of `bins` equal depth ranges, first layers first: range k ends at round(k x n_layers / bins),
    half to even (every depth binning of the book: stage 3-4 ranges, depth profiles, the b/m/t thirds)."""
    if bins < 1:
        raise ValueError(f"bins: must be a whole number of at least 1, got {bins!r}")
    edges = np.linspace(0, n_layers, bins + 1).round().astype(int)
    return [range(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def layer_bins(n_layers: int, bins: int) -> dict[str, range]:
    """Equal depth ranges (bottom/middle/top for 3 bins), plus all layers."""
    names = {1: ["all"], 2: ["bottom", "top"], 3: ["bottom", "middle", "top"]}.get(bins) or [
        f"bin{i + 1}" for i in range(bins)
    ]
    out = dict(zip(names, depth_bins(n_layers, bins)))
    out["all"] = range(n_layers)
    return out


class Matched(dict):
    """A layer -> neurons dict, as random_like returns, that also counts the draws taken from a neighbouring bin."""

    fallbacks: int = 0


def firing_bins(firing: torch.Tensor | np.ndarray, n_bins: int = 10) -> np.ndarray:
    """[L, D] firing-probability bin of each neuron by its rank within its own layer (0 = lowest); ties by index."""
    f = firing.detach().cpu().double().numpy() if torch.is_tensor(firing) else np.asarray(firing, dtype=float)
    ranks = np.argsort(np.argsort(f, axis=1, kind="stable"), axis=1, kind="stable")
    return ranks * n_bins // f.shape[1]


def joint_bins(
    firing: torch.Tensor | np.ndarray, spread: torch.Tensor | np.ndarray | None, n_bins: int = 10
) -> tuple[np.ndarray, int]:
    """([L, D] bin, number of bins): the firing decile within the layer, and with spread given, within each firing
    decile the decile of the neuron's activation SD (bin = 10 * firing decile + SD decile)."""
    fb = firing_bins(firing, n_bins)
    if spread is None:
        return fb, n_bins
    sd = spread.detach().cpu().double().numpy() if torch.is_tensor(spread) else np.asarray(spread, dtype=float)
    out = np.zeros_like(fb)
    for layer in range(fb.shape[0]):
        for k in range(n_bins):
            idx = np.flatnonzero(fb[layer] == k)
            if len(idx):
                r = np.argsort(np.argsort(sd[layer, idx], kind="stable"), kind="stable")
                out[layer, idx] = k * n_bins + r * n_bins // len(idx)
    return out, n_bins * n_bins


def random_matched(
    neurons_by_layer: dict[int, list[int]],
    firing: torch.Tensor | np.ndarray,
    seed: int,
    exclude: dict[int, list[int]] | None = None,
    n_bins: int = 10,
    spread: torch.Tensor | np.ndarray | None = None,
) -> Matched:
    """Per own neuron, a random neuron of the same layer and firing bin (deciles within the layer), without replacement;
    with spread ([L, D] activation SDs) also of the same SD decile within that firing decile.

    Bins are rank-based within each layer (equal sizes even where many neurons never fire), because firing rates
    shift with depth. The own neurons and `exclude` are never drawn. Where a bin runs out, the remaining draws come
    from the nearest bin with free neurons (the lower one first at equal distance; with spread, the neighbouring SD
    decile of the same firing decile first); `.fallbacks` counts them.
    """
    rng = np.random.default_rng(seed)
    bins, n_bins = joint_bins(firing, spread, n_bins)
    d_ff = bins.shape[1]
    out = Matched()
    for layer in sorted(neurons_by_layer):
        own = np.asarray(sorted(set(neurons_by_layer[layer])), dtype=int)
        banned = np.zeros(d_ff, dtype=bool)
        banned[own] = True
        banned[np.asarray((exclude or {}).get(layer, []), dtype=int)] = True
        b = bins[layer]
        need = np.bincount(b[own], minlength=n_bins)
        free = [rng.permutation(np.flatnonzero((b == k) & ~banned)).tolist() for k in range(n_bins)]
        if need.sum() > sum(map(len, free)):
            raise ValueError(f"random_matched: layer {layer} has fewer free neurons than the {need.sum()} to match")
        chosen: list[int] = []
        short = np.zeros(n_bins, dtype=int)
        for k in range(n_bins):  # same-bin draws first, so fallbacks never take a bin's own candidates
            take = min(int(need[k]), len(free[k]))
            chosen += free[k][:take]
            free[k] = free[k][take:]
            short[k] = need[k] - take
        for k in np.flatnonzero(short):
            for dist in range(1, n_bins):
                for j in (k - dist, k + dist):
                    if short[k] and 0 <= j < n_bins and free[j]:
                        take = min(int(short[k]), len(free[j]))
                        chosen += free[j][:take]
                        free[j] = free[j][take:]
                        short[k] -= take
                        out.fallbacks += take
        out[layer] = sorted(chosen)
    return out


class RowMasks:
    """Handle of ablate_rows: which mask each row of the following forward passes uses."""

    def __init__(self, n_masks: int, n_items: int | None = None):
        self.n_masks = n_masks
        self.rows: torch.Tensor | None = None
        self._memo: dict = {}
        if n_items is not None:
            self.set_rows(torch.arange(n_masks).repeat_interleave(n_items))

    def set_rows(self, rows) -> None:
        """Mask index of each row of the next batches (a batch k times longer repeats each row k times in place)."""
        rows = torch.as_tensor(rows, dtype=torch.long)
        if rows.numel() and (rows.min() < 0 or rows.max() >= self.n_masks):
            raise ValueError(f"ablate_rows: mask indices must lie in 0..{self.n_masks - 1}")
        self.rows, self._memo = rows, {}

    def index(self, batch: int, device) -> torch.Tensor:
        """Mask index of each of a batch's rows, by the repeat_interleave rule of set_rows."""
        key = (batch, str(device))
        if key not in self._memo:
            if self.rows is None:
                raise RuntimeError("ablate_rows: give n_items or call set_rows before the forward pass")
            if batch % len(self.rows):
                raise ValueError(f"ablate_rows: a batch of {batch} rows does not repeat the {len(self.rows)} rows set")
            self._memo[key] = self.rows.repeat_interleave(batch // len(self.rows)).to(device)
        return self._memo[key]


def down_proj_hook(rows: RowMasks, mult: torch.Tensor | None, add: torch.Tensor | None):
    """A forward pre-hook for mlp.down_proj: each row of its input (the FFN neurons) is multiplied by its mask's
    factors (0 ablates, scale scales, 1 leaves alone), then gets its mask's amounts added (a mean, a steering dose)."""
    cast: dict = {}

    def hook(module, args):
        x = args[0]
        if (x.dtype, x.device) not in cast:  # the factors in the activations' dtype, rounded once
            cast[x.dtype, x.device] = [None if t is None else t.to(x.device, x.dtype) for t in (mult, add)]
        m, a = cast[x.dtype, x.device]
        r = rows.index(x.shape[0], x.device)
        shape = (x.shape[0],) + (1,) * (x.dim() - 2) + (x.shape[-1],)
        if m is not None:
            x.mul_(m[r].view(shape))
        if a is not None:
            x.add_(a[r].view(shape))
        return (x,) + tuple(args[1:])

    return hook


def _factors(
    masks: list[dict[int, list[int]]],
    layer: int,
    d_ff: int,
    mode: str,
    means: torch.Tensor | None,
    scale: float,
    scales: list[float] | None,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """([K, d_ff] multipliers or None, [K, d_ff] added amounts or None) of one layer, in float32."""
    keep = torch.ones((len(masks), d_ff), dtype=torch.float32)
    for k, m in enumerate(masks):
        if m.get(layer):
            keep[k, torch.as_tensor(sorted(m[layer]), dtype=torch.long)] = 0
    if mode == "zero":
        return keep, None
    if mode == "scale":
        return keep + (1 - keep) * scale, None
    value = means[layer].detach().float().cpu()
    if mode == "add":
        factor = torch.tensor(scales if scales is not None else [scale] * len(masks), dtype=torch.float32)
        return None, (1 - keep) * factor[:, None] * value
    return keep, (1 - keep) * value  # mean


@contextmanager
def ablate_rows(
    model,
    masks: list[dict[int, list[int]]],
    n_items: int | None = None,
    mode: str = "zero",
    means: torch.Tensor | None = None,
    scale: float = 0.5,
    scales: list[float] | None = None,
):
    """Within the block, the chosen neurons of mlp.down_proj's input are zeroed, set to their mean, scaled, or
    (mode add) get scale x means[l, i] added, with a mask per row: row r uses masks[r // n_items] (or what the
    yielded RowMasks sets); with mode add, scales gives each mask its own factor (stage 5 batches doses and sets)."""
    _check_mode(mode, means)
    if scales is not None and len(scales) != len(masks):
        raise ValueError(f"ablate_rows: {len(scales)} scales for {len(masks)} masks")
    mlps = ffn_layers(model)
    d_ff = mlps[0].down_proj.in_features
    ctl = RowMasks(len(masks), n_items)
    handles = []
    try:
        for layer in sorted({l for m in masks for l, idx in m.items() if idx}):
            mult, add = _factors(masks, layer, d_ff, mode, means, scale, scales)
            handles.append(mlps[layer].down_proj.register_forward_pre_hook(down_proj_hook(ctl, mult, add)))
        yield ctl
    finally:
        for h in handles:
            h.remove()


@contextmanager
def ablate(
    model, neurons: dict[int, list[int]], mode: str = "zero", means: torch.Tensor | None = None, scale: float = 0.5
):
    """Within the block, neuron i of layer l (the input of mlp.down_proj) is zeroed, set to its mean, scaled, or
    (mode add) gets scale x means[l, i] added: ablate_rows with one mask for every row."""
    with ablate_rows(model, [neurons], 1, mode, means, scale):
        yield
