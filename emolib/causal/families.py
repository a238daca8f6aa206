"""Random families: the null of the pooled test (stages 3 and 4).

A named set gives each emotion its neurons, and the emotions' sets overlap (the `paper` sets share most of theirs).
A random *family* keeps that structure: each neuron of the set's union is mapped to one random neuron of the same
layer, firing decile and activation-SD decile (never a neuron of the union, without replacement), and each emotion's
random set is the image of its own set under that one map. So a family's emotion sets have the same sizes, the same
layers and the same overlaps as the named set's, and the mean over emotions of a family's effect is distributed like
the named set's would be if its neurons were no different from matched random ones.

Family r of a set is seeded by (seed, FAMILY_SEED, r) alone, so the same union, firing and spread give the same
family on every machine and in every notebook (03's test, 04's depth ranges, which are images of subsets).
Titrated families (the detection curve) replace a share of a family's emotion sets with that emotion's control
neurons.
"""

from __future__ import annotations

import numpy as np
import torch

from ..lm.ablate import joint_bins

FAMILY_SEED = 4243  # the families' stream (the pilot's matched sets use another)
TITRATION_SEED = 7717  # the titrated families' stream

Neuron = tuple[int, int]
Mask = dict[int, list[int]]


def union(sets: dict[str, Mask]) -> Mask:
    """Every neuron of any emotion's set, by layer (sorted)."""
    out: dict[int, set[int]] = {}
    for m in sets.values():
        for layer, idx in m.items():
            out.setdefault(int(layer), set()).update(int(i) for i in idx)
    return {layer: sorted(v) for layer, v in sorted(out.items()) if v}


def family_map(own: Mask, bins: np.ndarray, n_bins: int, rng: np.random.Generator) -> dict[Neuron, Neuron]:
    """One random family: each own neuron -> a random neuron of its layer and joint bin, never an own neuron, without
    replacement; where a bin runs out, the nearest bin with free neurons (the lower one first at equal distance)."""
    out: dict[Neuron, Neuron] = {}
    d_ff = bins.shape[1]
    for layer in sorted(own):
        idx = np.asarray(sorted(set(own[layer])), dtype=int)
        b = bins[layer]
        banned = np.zeros(d_ff, dtype=bool)
        banned[idx] = True
        free = [rng.permutation(np.flatnonzero((b == k) & ~banned)).tolist() for k in range(n_bins)]
        if len(idx) > sum(map(len, free)):
            raise ValueError(f"random family: layer {layer} has fewer free neurons than the {len(idx)} to match")
        short: list[int] = []
        for i in idx:  # same-bin draws first, so a fallback never takes a bin's own candidates
            k = int(b[i])
            if free[k]:
                out[(layer, int(i))] = (layer, int(free[k].pop(0)))
            else:
                short.append(int(i))
        for i in short:
            k = int(b[i])
            for dist in range(1, n_bins):
                j = next((j for j in (k - dist, k + dist) if 0 <= j < n_bins and free[j]), None)
                if j is not None:
                    out[(layer, i)] = (layer, int(free[j].pop(0)))
                    break
    return out


MIN_PER_BIN = 4  # joint firing x SD bins only where a layer holds at least this many neurons per bin on average


def family_maps(
    own: Mask,
    firing: torch.Tensor | np.ndarray,
    n: int,
    seed: int,
    spread: torch.Tensor | np.ndarray | None = None,
    start: int = 0,
) -> list[dict[Neuron, Neuron]]:
    """Families start .. start + n - 1 of a union of neurons: family r is seeded by (seed, FAMILY_SEED, r) alone.
    Neurons are matched on firing decile x SD decile; in layers too narrow for 100 bins of MIN_PER_BIN neurons (the
    test suite's tiny model), on the firing decile alone, so that families still differ."""
    width = firing.shape[1]
    bins, n_bins = joint_bins(firing, spread if width >= 100 * MIN_PER_BIN else None)
    return [
        family_map(own, bins, n_bins, np.random.default_rng([seed, FAMILY_SEED, r])) for r in range(start, start + n)
    ]


def image(fmap: dict[Neuron, Neuron], mask: Mask) -> Mask:
    """The random set that a family gives one own set (or a subset of the union): its neurons' images, by layer."""
    out: dict[int, list[int]] = {}
    for layer, idx in mask.items():
        for i in idx:
            l2, j = fmap[(int(layer), int(i))]
            out.setdefault(l2, []).append(j)
    return {layer: sorted(v) for layer, v in sorted(out.items())}


def as_pairs(mask: Mask) -> list[Neuron]:
    """A mask as sorted (layer, index) pairs."""
    return sorted((int(layer), int(i)) for layer, idx in mask.items() for i in idx)


def as_mask(pairs) -> Mask:
    """(layer, index) pairs as a mask by layer."""
    out: dict[int, list[int]] = {}
    for layer, i in pairs:
        out.setdefault(int(layer), []).append(int(i))
    return {layer: sorted(set(v)) for layer, v in sorted(out.items())}


def titrated(base: Mask, control: Mask, share: float, rng: np.random.Generator) -> Mask:
    """A random set with round(share x its size) of its neurons replaced by as many randomly chosen control neurons
    (fewer when the control has fewer); share 0 leaves it as it is."""
    b, c = as_pairs(base), [x for x in as_pairs(control)]
    k = min(int(round(share * len(b))), len(c))
    if k == 0:
        return as_mask(b)
    drop = set(rng.choice(len(b), k, replace=False).tolist())
    add = [c[j] for j in rng.choice(len(c), k, replace=False).tolist()]
    kept = [x for j, x in enumerate(b) if j not in drop and x not in set(add)]
    return as_mask(kept + add)


def titrated_family(
    fmap: dict[Neuron, Neuron], own: list[Mask], control: list[Mask], share: float, seed: int, draw: int
) -> list[Mask]:
    """Per emotion, the family's image of the own set with a share replaced by that emotion's control neurons
    (seeded by seed, TITRATION_SEED, share and draw)."""
    rng = np.random.default_rng([seed, TITRATION_SEED, int(round(1000 * share)), draw])
    return [titrated(image(fmap, m), c, share, rng) for m, c in zip(own, control)]


def overlaps(sets: list[Mask]) -> np.ndarray:
    """[E, E] shared neurons between every two sets (the diagonal: each set's size)."""
    ps = [set(as_pairs(m)) for m in sets]
    return np.array([[len(a & b) for b in ps] for a in ps])
