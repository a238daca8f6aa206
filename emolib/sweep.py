"""Depth profiles of neuron sets (notebooks 02, 04 and the comparison)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import neurons


def depth_profile(ns: neurons.NeuronSets, bins: int = 10) -> pd.DataFrame:
    """Share of each emotion's neurons per relative-depth bin (rows: bin centres in [0, 1])."""
    edges = np.linspace(0, 1, bins + 1)
    out = {}
    for e in ns.emotions:
        depths = [neurons.relative_depth(layer, ns.n_layers) for layer, _ in ns.sets[e]]
        h, _ = np.histogram(depths, edges)
        out[e] = h / max(1, h.sum())
    return pd.DataFrame(out, index=pd.Index(np.round((edges[:-1] + edges[1:]) / 2, 3), name="relative depth"))
