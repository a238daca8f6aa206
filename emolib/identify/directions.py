"""A second identification method: emotion directions and per-neuron contributions (Wang et al. 2025, "Do LLMs
'Feel'? Emotion Circuits Discovery and Control", arXiv 2510.11328), from stage 2's own recording pass.

- Direction of emotion e at layer l: the mean, over the centring groups holding e, of (e's token-mean vector in the
  group minus the mean over the group's emotions of their token-means), normalised to unit length. A centring group
  is a topic where the topic holds several emotions (the template generator writes every topic in every emotion:
  matched scenarios), else one shared group of all single-emotion topics (centred globally). The vector is the MLP
  output or the residual stream (decoder layer output), at the dialogue tokens or the answer position.
- Contribution of FFN neuron i of layer l to emotion e: the mean over e's counted tokens of its down_proj input
  (act, post-gate) times (W_down[:, i] . direction_e^l). The `directions` named set takes each emotion's top neurons
  by contribution, as many as the `paper` set has for that emotion.
- Null: the same directions and contributions from permuted labels (stage 2's seeded permutations), in the same pass.
- Steering baseline: `add_direction` adds alpha x a direction to the residual stream after one decoder layer.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..lm.models import decoder_layers, ffn_layers
from . import neurons

FILE = "directions.safetensors"


# ---------------------------------------------------------------- centring (which items weigh what)


def centring_groups(emotion: np.ndarray, topic: list[str]) -> list[str]:
    """Each item's centring group: its topic when the topic holds several emotions, else one shared global group."""
    ems: dict[str, set] = {}
    for e, t in zip(emotion.tolist(), topic):
        ems.setdefault(t, set()).add(e)
    return [("t", t) if len(ems[t]) > 1 else ("global",) for t in topic]


def centring_weights(
    emotion: np.ndarray, topic: list[str], n_tokens: np.ndarray, n_emotions: int, use: np.ndarray | None = None
) -> np.ndarray:
    """[E, N] weights w such that sum_i w[e, i] S_i is emotion e's raw direction, S_i being the sum of item i's
    vectors over its counted tokens: the mean over the centring groups holding e of (e's token-mean in the group
    minus the mean of the group's emotions' token-means). Only items with use[i] take part."""
    N = len(emotion)
    use = np.ones(N, bool) if use is None else use
    w = np.zeros((n_emotions, N))
    idx = np.flatnonzero(use & (n_tokens > 0))
    if not len(idx):
        return w
    groups = centring_groups(emotion[idx], [topic[i] for i in idx])
    tot: dict[tuple, float] = {}
    ems: dict[tuple, set] = {}
    for i, g in zip(idx, groups):
        tot[(g, emotion[i])] = tot.get((g, emotion[i]), 0.0) + n_tokens[i]
        ems.setdefault(g, set()).add(int(emotion[i]))
    multi = {g for g, s in ems.items() if len(s) > 1}
    n_groups = np.array([sum(e in ems[g] for g in multi) for e in range(n_emotions)])
    for i, g in zip(idx, groups):
        if g not in multi:
            continue
        base = n_tokens[i] / tot[(g, emotion[i])]  # item i's share of its own emotion's token-mean in g
        for e in ems[g]:
            w[e, i] += ((e == emotion[i]) - 1.0 / len(ems[g])) * base / n_groups[e] / n_tokens[i]
    return w


def weight_rows(
    emotion: np.ndarray, half: np.ndarray, null: np.ndarray, topic: list[str], n_tokens: np.ndarray, n_emotions: int
) -> np.ndarray:
    """[(3 + K) E, N] centring weights of every direction the pass records: all items, half 0, half 1, then each of
    the K null permutations' labels (E rows each)."""
    rows = [centring_weights(emotion, topic, n_tokens, n_emotions)]
    rows += [centring_weights(emotion, topic, n_tokens, n_emotions, half == h) for h in (0, 1)]
    rows += [centring_weights(np.asarray(null[k]), topic, n_tokens, n_emotions) for k in range(null.shape[0])]
    return np.concatenate(rows).astype(np.float64)


# ---------------------------------------------------------------- directions and contributions


def unit(v: torch.Tensor) -> torch.Tensor:
    """Each vector (last dimension) scaled to unit length; a zero vector stays zero."""
    return v / v.norm(dim=-1, keepdim=True).clamp(min=1e-30)


def projections(model, dirs: torch.Tensor) -> torch.Tensor:
    """[..., L, D] W_down[:, i] . direction for every neuron, for directions [..., L, H]."""
    out = []
    for layer, mlp in enumerate(ffn_layers(model)):
        W = mlp.down_proj.weight.detach()  # [H, D], on its own device (float32 there; double on the CPU)
        if W.device.type == "meta":
            raise ValueError(
                f"layer {layer}'s down_proj weights are offloaded (meta); load the model with its "
                "weights on a device (device_map) to compute contributions"
            )
        dt = torch.float64 if W.device.type == "cpu" else torch.float32
        out.append((dirs[..., layer, :].to(W.device, dt) @ W.to(dt)).float().cpu())
    return torch.stack(out, -2)


def contributions(proj: torch.Tensor, act_sums: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """[E, L, D] mean over each emotion's tokens of act x (W_down column . direction): the projection times the mean
    act (the mean of a product with a constant factor)."""
    return proj * (act_sums.double() / tokens.double().clamp(min=1).view(-1, 1, 1)).float()


@torch.no_grad()
def finish(state: dict, model) -> dict:
    """Add unit directions and contributions (all items, halves, null permutations) to a recording that carries
    direction sums (record_counts with direction_site); returns the state."""
    for key in ("", "_half", "_null"):
        state[f"dir_unit{key}"] = unit(state[f"dir_raw{key}"]).float()
    state["contrib"] = contributions(
        projections(model, state["dir_unit"]), state["act_sums"].sum(0), state["tokens"].sum(0)
    )
    state["contrib_half"] = torch.stack(
        [
            contributions(projections(model, state["dir_unit_half"][h]), state["act_sums"][h], state["tokens"][h])
            for h in (0, 1)
        ]
    )
    K = state["dir_unit_null"].shape[0]
    state["contrib_null"] = (
        torch.stack(
            [
                contributions(
                    projections(model, state["dir_unit_null"][k]), state["null_act_sums"][k], state["null_tokens"][k]
                )
                for k in range(K)
            ]
        )
        if K
        else torch.zeros((0, *state["contrib"].shape))
    )
    return state


def select(contrib: torch.Tensor, k_per_emotion: list[int], emotions: list[str]) -> dict[str, list[list[int]]]:
    """Per emotion, its k neurons with the largest positive contribution, as sorted [layer, index] pairs."""
    D = contrib.shape[-1]
    out = {}
    for j, e in enumerate(emotions):
        flat = contrib[j].reshape(-1)
        k = min(int(k_per_emotion[j]), int((flat > 0).sum()))
        idx = torch.topk(flat, k).indices.tolist() if k else []
        out[e] = sorted([[i // D, i % D] for i in idx])
    return out


def _mean_selected(contrib: torch.Tensor, sets: dict[str, list], emotions: list[str]) -> list[float]:
    """Per emotion, the mean contribution of its selected neurons (nan when none)."""
    return [
        float(contrib[j][tuple(torch.as_tensor(sets[e]).T)].mean()) if sets[e] else math.nan
        for j, e in enumerate(emotions)
    ]


def null_summary(state: dict, k_per_emotion: list[int], emotions: list[str]) -> dict:
    """The selection against the permuted-label null: per emotion its mean contribution against what each
    permutation's own selection reaches (permutation p), how many selected neurons exceed the largest contribution
    any permutation gives that emotion, and how many null neurons pass the real cut-off (expected false, FDR)."""
    real = select(state["contrib"], k_per_emotion, emotions)
    real_mean = _mean_selected(state["contrib"], real, emotions)
    K = int(state["contrib_null"].shape[0])
    n_sel = sum(map(len, real.values()))
    if K == 0:
        return {"n_null": 0}
    null_means = [
        _mean_selected(state["contrib_null"][k], select(state["contrib_null"][k], k_per_emotion, emotions), emotions)
        for k in range(K)
    ]
    null_max = state["contrib_null"].flatten(2).max(2).values.max(0).values  # [E]
    cut = [
        float(state["contrib"][j][tuple(torch.as_tensor(real[e]).T)].min()) if real[e] else math.inf
        for j, e in enumerate(emotions)
    ]
    false = [
        int(sum(int((state["contrib_null"][k, j] >= cut[j]).sum()) for j in range(len(emotions)))) for k in range(K)
    ]
    above = {
        e: int((state["contrib"][j][tuple(torch.as_tensor(real[e]).T)] > null_max[j]).sum()) if real[e] else 0
        for j, e in enumerate(emotions)
    }
    per_p = {
        e: (1 + sum(nm[j] >= real_mean[j] for nm in null_means if math.isfinite(nm[j]))) / (1 + K)
        if math.isfinite(real_mean[j])
        else math.nan
        for j, e in enumerate(emotions)
    }
    overall, overall_null = float(np.nanmean(real_mean)), [float(np.nanmean(nm)) for nm in null_means]
    return {
        "n_null": K,
        "mean_contribution": dict(zip(emotions, real_mean)),
        "null_mean_contribution": {e: [nm[j] for nm in null_means] for j, e in enumerate(emotions)},
        "p_per_emotion": per_p,
        "mean_real": overall,
        "mean_null": overall_null,
        "p_mean": (1 + sum(v >= overall for v in overall_null)) / (1 + K),
        "null_max": dict(zip(emotions, null_max.tolist())),
        "above_null_max": above,
        "n_above_null_max": sum(above.values()),
        "false_null": false,
        "expected_false": float(np.mean(false)),
        "fdr": float(np.mean(false)) / n_sel if n_sel else math.nan,
    }


def split_half(state: dict, k_per_emotion: list[int], emotions: list[str], seed: int) -> pd.DataFrame:
    """Per emotion: the cosine of the two halves' directions (mean over layers, and its minimum), and the Jaccard of
    the two halves' selections against random sets of those sizes among all neurons."""
    cos = (state["dir_unit_half"][0] * state["dir_unit_half"][1]).sum(-1)  # [E, L]
    halves = [select(state["contrib_half"][h], k_per_emotion, emotions) for h in (0, 1)]
    L, D = state["contrib"].shape[1:]
    rows = []
    for j, e in enumerate(emotions):
        a, b = halves[0][e], halves[1][e]
        rows.append(
            {
                "emotion": e,
                "cosine_mean": float(cos[j].mean()),
                "cosine_min": float(cos[j].min()),
                "n_half_a": len(a),
                "n_half_b": len(b),
                "jaccard": neurons.jaccard(a, b),
                "random_jaccard": neurons.pool_jaccard(len(a), len(b), L * D, 100, seed),
            }
        )
    return pd.DataFrame(rows).set_index("emotion")


def half_cosines(state: dict) -> torch.Tensor:
    """[E, L] cosine between the directions from the two halves of the train split, per emotion and layer."""
    return (state["dir_unit_half"][0] * state["dir_unit_half"][1]).sum(-1)


def cosines(dirs: torch.Tensor) -> torch.Tensor:
    """[L, E, E] cosine similarity between emotions' unit directions [E, L, H], per layer."""
    d = dirs.transpose(0, 1).double()
    return (d @ d.transpose(1, 2)).float()


def null_cosines(state: dict) -> torch.Tensor:
    """[K (K - 1) / 2, E, L] cosine between the directions of two different label permutations, per emotion and
    layer: how alike two directions are when the labels carry no information (the split-half cosine's chance)."""
    d = state["dir_unit_null"]
    pairs = [(a, b) for a in range(d.shape[0]) for b in range(a + 1, d.shape[0])]
    return torch.stack([(d[a] * d[b]).sum(-1) for a, b in pairs]) if pairs else torch.zeros((0, *d.shape[1:3]))


# ---------------------------------------------------------------- the named set and the stored directions


def named_set_entry(state: dict, p: dict, paper_entry: dict, k_per_emotion: list[int]) -> dict:
    """The `directions` named set for neurons.json: its neurons (as many per emotion as the paper set's), how they
    were found, the recording settings its random sets are matched on (the paper set's), and its null."""
    E = state["emotions"]
    sets = select(state["contrib"], k_per_emotion, E)
    nul = null_summary(state, k_per_emotion, E)
    half = split_half(state, k_per_emotion, E, p["seed"])
    from ..safeio import json_safe as clean

    return {
        "variant": "directions",
        "settings": paper_entry["settings"],
        "method": {
            "site": state["direction_site"],
            "tokens": p["direction_tokens"],
            "centring": "within topic where a topic holds several emotions, else global",
            "sizes": "as many per emotion as the paper set",
        },
        "why": "second method (Wang et al. 2025): per emotion, the neurons whose mean act x (W_down column . "
        "topic-centred emotion direction) is largest; as many as the paper set's",
        "neurons": sets,
        "n_selected": sum(map(len, sets.values())),
        "null": clean(nul),
        "split_half": clean(half.reset_index().to_dict(orient="records")),
    }


def save(run_dir: str | Path, state: dict, tokens: str) -> Path:
    """Write run_dir/directions.safetensors: unit directions [E, L, H] (and per half), contributions [E, L, D]."""
    from safetensors.torch import save_file

    from ..safeio import atomic_save

    path = Path(run_dir) / FILE
    out = {
        "directions": state["dir_unit"].float().contiguous(),
        "directions_half": state["dir_unit_half"].float().contiguous(),
        "contributions": state["contrib"].float().contiguous(),
    }
    meta = {"site": state["direction_site"], "tokens": tokens, "emotions": ",".join(state["emotions"])}
    atomic_save(path, lambda tmp: save_file(out, str(tmp), metadata=meta))
    return path


def _load(run_dir: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The stored tensors and metadata."""
    from safetensors import safe_open

    path = Path(run_dir) / FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run notebook 02 (stage 2) with find_directions: true first")
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})


def load_directions(run_dir: str | Path) -> torch.Tensor:
    """[E, L, H] unit emotion directions of a run (emotions in neurons.json order; see load_meta)."""
    return _load(run_dir)[0]["directions"]


def load_meta(run_dir: str | Path) -> dict:
    """How the run's directions were read: site (mlp or residual), tokens (dialogue or answer), emotions."""
    meta = _load(run_dir)[1]
    meta["emotions"] = meta["emotions"].split(",")
    return meta


def dose_select(run_dir: str | Path, k_per_emotion: list[int], emotions: list[str]) -> dict[str, list[list[int]]]:
    """The directions set at another size: per emotion its top-k contributions (stage 4's dose-response)."""
    return select(_load(run_dir)[0]["contributions"], k_per_emotion, emotions)


# ---------------------------------------------------------------- steering baseline


@contextmanager
def add_direction(model, layer: int, vec: torch.Tensor, alpha: float):
    """Inside the block, add alpha x vec to the residual stream after decoder layer `layer` (its output), at every
    position; the hook is removed on exit, also after an error."""
    layers = decoder_layers(model)
    if not 0 <= layer < len(layers):
        raise ValueError(f"layer: must be in 0..{len(layers) - 1}, got {layer}")
    H = ffn_layers(model)[0].down_proj.out_features
    if tuple(vec.shape) != (H,):
        raise ValueError(f"vec: must have shape ({H},) (the model's hidden size), got {tuple(vec.shape)}")
    if not math.isfinite(alpha):
        raise ValueError(f"alpha: must be a finite number, got {alpha!r}")
    cache: dict = {}

    def hook(module, args, out):
        h = out[0] if isinstance(out, tuple) else out
        key = (h.device, h.dtype)
        if key not in cache:
            cache[key] = (alpha * vec.detach().double()).to(h.device, h.dtype)
        h = h + cache[key]
        return (h, *out[1:]) if isinstance(out, tuple) else h

    handle = layers[layer].register_forward_hook(hook)
    try:
        yield model
    finally:
        handle.remove()
