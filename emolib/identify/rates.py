"""How often a named set's neurons fire on the tokens of each emotion: the question the entropy ranking hides.

A neuron of lowest entropy over emotions can fire on almost every token of every emotion, as long as it fires a
little more on some; such a set is near-saturated rather than emotion-specific. These functions read the firing
probabilities that stage 2 saved (probabilities.safetensors, per emotion, layer and neuron) for each named set.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .neurons import NeuronSets

PROBABILITIES_FILE = "probabilities.safetensors"
MOST = 0.5  # "fires on most tokens": on more than half of an emotion's tokens


def probabilities(run_dir: str | Path, settings: dict) -> torch.Tensor:
    """[E, L, D] P(a neuron fires | a token of the emotion), for the recording settings (tokens, tensor) of a set."""
    from safetensors.torch import load_file

    return load_file(str(Path(run_dir) / PROBABILITIES_FILE))[f"{settings['tokens']}_P_{settings['tensor']}"].float()


def set_rates(P: torch.Tensor, ns: NeuronSets) -> pd.DataFrame:
    """Emotion set (rows) x token emotion (columns): the mean over the set's neurons of P(fire | token emotion)."""
    rows = {}
    for e in ns.emotions:
        idx = torch.as_tensor(ns.sets[e], dtype=torch.long).reshape(-1, 2)
        rows[e] = P[:, idx[:, 0], idx[:, 1]].mean(1).tolist() if len(idx) else [np.nan] * P.shape[0]
    return pd.DataFrame.from_dict(rows, orient="index", columns=ns.emotions).rename_axis(
        index="neurons of", columns="tokens of"
    )


def summary(run_dir: str | Path, sets: dict[str, NeuronSets], settings: dict[str, dict]) -> pd.DataFrame:
    """Per named set: its union's firing rate on the tokens of each emotion (lowest and highest), whether it fires
    on most tokens of every emotion, and its own/other rate (each emotion set's rate on its own emotion over its mean
    rate on the others, median over emotions)."""
    rows = []
    for name, ns in sets.items():
        P = probabilities(run_dir, settings[name])
        union = sorted({tuple(x) for v in ns.sets.values() for x in v})
        if not union:
            continue
        idx = torch.as_tensor(union, dtype=torch.long)
        on = P[:, idx[:, 0], idx[:, 1]].mean(1).numpy()  # [E]: the union's mean rate per token emotion
        t = set_rates(P, ns).to_numpy()
        own = np.diag(t)
        others = (t.sum(1) - own) / max(1, t.shape[1] - 1)
        rows.append(
            {
                "set": name,
                "neurons": len(union),
                "lowest rate": float(on.min()),
                "highest rate": float(on.max()),
                "fires on most tokens of every emotion": bool(on.min() > MOST),
                "own/other rate": float(np.nanmedian(own / np.where(others > 0, others, np.nan))),
            }
        )
    return pd.DataFrame(rows)


def lines(table: pd.DataFrame) -> list[str]:
    """Findings: per set, the range of its firing rates over the emotions' tokens, saturated or not, and its
    own/other rate (generated from the table)."""
    out = []
    for _, r in table.iterrows():
        rng = f"{r['lowest rate']:.0%} to {r['highest rate']:.0%}"
        ratio = (
            f"its emotion sets fire {r['own/other rate']:.2f}x as often on their own emotion's tokens as on the "
            "others' (median over emotions)"
        )
        if r["fires on most tokens of every emotion"]:
            out.append(
                f"`{r['set']}` ({r.neurons} neurons) fires on most tokens of every emotion ({rng} of an "
                f"emotion's tokens): it is near-saturated, not emotion-specific; {ratio}."
            )
        else:
            out.append(f"`{r['set']}` ({r.neurons} neurons) fires on {rng} of an emotion's tokens; {ratio}.")
    return out
