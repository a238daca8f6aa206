"""A control chosen from the weights alone (issue 25): per emotion, the FFN neurons whose output weight column,
read through the unembedding, raises the emotion's label token most against the other labels'. No data, no gradient.

The reading is first order (the logit lens). A unit activation of neuron i of layer l (the down_proj input) adds
the column W_down[:, i] to the residual stream; Gemma-3 first passes the MLP output through its post-FFN RMSNorm,
counted here as its elementwise scale (1 + weight) only. The final RMSNorm divides the residual by its RMS and
multiplies it elementwise by its weight (Llama, Mistral, Qwen: `weight`; Gemma-3's Gemma3RMSNorm: `1 + weight`),
and the LM head (the input embedding when tied) maps it to logits. Only the elementwise scales are kept: the RMS
division depends on the whole residual stream, not on the neuron, so it is ignored, as is Gemma-3's final logit
soft-capping (monotone). Neuron n's direct contribution to token t is then W_U[t] . (g * s_l * W_down[:, n]).

Score of neuron n for emotion e: its contribution to e's label token minus the mean of its contributions to the
other emotions' label tokens. The label tokens are the classifier's: the first token of " " + emotion as it follows
the prompt (emolib.lm.prompts.build), the one token every label's score reads first (emolib.lm.classify).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..lm.models import decoder_layers, ffn_layers

if TYPE_CHECKING:
    import pandas as pd

FILE = "weights.safetensors"
N_SHOWN = 3  # neurons per emotion whose top promoted tokens the named set records


def norm_scale(norm: torch.nn.Module) -> torch.Tensor:
    """An RMSNorm's elementwise scale in float32: 1 + weight for Gemma's norms, weight otherwise."""
    w = norm.weight.detach().float()
    return 1.0 + w if type(norm).__name__.startswith("Gemma") else w


def final_norm(model: torch.nn.Module) -> torch.nn.Module:
    """The norm applied to the residual stream before the LM head."""
    base = getattr(model, "model", model)
    base = getattr(base, "language_model", base)
    return base.norm


def unembedding(model: torch.nn.Module) -> torch.Tensor:
    """The LM head's weight [V, H] (the input embedding's when the model has no separate head)."""
    head = model.get_output_embeddings()
    return (head if head is not None else model.get_input_embeddings()).weight.detach()


def layer_scale(model: torch.nn.Module, layer: int) -> torch.Tensor | None:
    """The elementwise scale of a post-FFN norm on the MLP output (Gemma-3), or None when the layer has none."""
    norm = getattr(decoder_layers(model)[layer], "post_feedforward_layernorm", None)
    return None if norm is None else norm_scale(norm)


def label_token_ids(clf) -> list[int]:
    """The token each label's score reads first (the first token of " " + label), in the classifier's label order."""
    return [lab[0] for lab in clf.parts.labels]


@torch.no_grad()
def contributions(model: torch.nn.Module, token_ids: list[int]) -> torch.Tensor:
    """[T, L, D] direct logit contribution of a unit activation of each FFN neuron to each token, float32, CPU."""
    W_U = unembedding(model)
    rows = W_U[torch.as_tensor(token_ids, device=W_U.device)].float() * norm_scale(final_norm(model)).to(W_U.device)
    out = []
    for layer, mlp in enumerate(ffn_layers(model)):
        W = mlp.down_proj.weight.detach()
        r = rows.to(W.device)
        s = layer_scale(model, layer)
        if s is not None:
            r = r * s.to(W.device)
        out.append((r @ W.float()).cpu())  # [T, H] @ [H, D]
    return torch.stack(out, 1)


def scores_from(contrib: torch.Tensor) -> torch.Tensor:
    """[E, L, D] each label's contribution minus the mean of the other labels' (contributions [E, L, D])."""
    E = contrib.shape[0]
    if E < 2:
        raise ValueError("the weights control needs at least two labels to compare")
    return contrib - (contrib.sum(0, keepdim=True) - contrib) / (E - 1)


def scores(model: torch.nn.Module, label_ids: list[int]) -> torch.Tensor:
    """[E, L, D] each FFN neuron's score per emotion from the label token ids (one per emotion, in order)."""
    return scores_from(contributions(model, label_ids))


def select(scores: torch.Tensor, sizes: list[int], emotions: list[str]) -> dict[str, list[list[int]]]:
    """Per emotion, its sizes[e] highest-scoring neurons (positive scores only; ties by index), as sorted
    [layer, index] pairs."""
    D = scores.shape[-1]
    out = {}
    for j, e in enumerate(emotions):
        flat = scores[j].reshape(-1)
        k = min(int(sizes[j]), int((flat > 0).sum()))
        idx = torch.sort(flat, descending=True, stable=True).indices[:k].tolist()
        out[e] = sorted([[i // D, i % D] for i in idx])
    return out


def ranked(scores: torch.Tensor, j: int, k: int) -> list[list[int]]:
    """Emotion j's k highest-scoring neurons, best first, as [layer, index] pairs."""
    D = scores.shape[-1]
    idx = torch.sort(scores[j].reshape(-1), descending=True, stable=True).indices[:k].tolist()
    return [[i // D, i % D] for i in idx]


@torch.no_grad()
def token_logits(model: torch.nn.Module, layer: int, index: int) -> torch.Tensor:
    """[V] one neuron's direct logit contribution to every token (float32, CPU)."""
    col = ffn_layers(model)[layer].down_proj.weight.detach()[:, index].float()
    s = layer_scale(model, layer)
    if s is not None:
        col = col * s.to(col.device)
    W_U = unembedding(model)
    v = col.to(W_U.device) * norm_scale(final_norm(model)).to(W_U.device)
    return (W_U.float() @ v).cpu()


def top_tokens(model: torch.nn.Module, tok, layer: int, index: int, k: int = 10) -> dict[str, list]:
    """The k tokens one neuron's column promotes most and the k it suppresses most, as [decoded token, logit]."""
    v = token_logits(model, layer, index)
    up, down = torch.topk(v, k), torch.topk(-v, k)
    return {
        "promoted": [[tok.decode([int(i)]), float(x)] for x, i in zip(up.values, up.indices)],
        "suppressed": [[tok.decode([int(i)]), float(-x)] for x, i in zip(down.values, down.indices)],
    }


def save(run_dir: str | Path, s: torch.Tensor, label_ids: list[int]) -> Path:
    """Write the [E, L, D] scores (and the label tokens they read) to run_dir/weights.safetensors."""
    from safetensors.torch import save_file

    from ..safeio import atomic_save

    path = Path(run_dir) / FILE
    atomic_save(
        path,
        lambda tmp: save_file(
            {"scores": s.float().contiguous()}, str(tmp), metadata={"label_ids": json.dumps(list(map(int, label_ids)))}
        ),
    )
    return path


def load(run_dir: str | Path) -> torch.Tensor:
    """The stored [E, L, D] scores (add_named_set writes them)."""
    from safetensors.torch import load_file

    path = Path(run_dir) / FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: add the weights set to this run first")
    return load_file(str(path))["scores"]


def dose_select(run_dir: str | Path, sizes: list[int], emotions: list[str]) -> dict[str, list[list[int]]]:
    """The weights set at another size: per emotion its top-scoring neurons (stage 4's dose-response)."""
    return select(load(run_dir), sizes, emotions)


def add_named_set(p: dict, model: torch.nn.Module, tok, label_ids: list[int]) -> dict:
    """Select the weights set, as many neurons per emotion as the paper set has, and write it into neurons.json
    right after the attribution set (first when there is none); returns its entry."""
    from ..safeio import atomic_write_text, load_neurons_json
    from . import neurons as nmod

    path = Path(p["run_dir"]) / "neurons.json"
    meta = load_neurons_json(path)
    E = meta["emotions"]
    if len(label_ids) != len(E):
        raise ValueError(f"label_ids: one token per emotion of {path} ({', '.join(E)}), got {len(label_ids)}")
    paper = nmod.load(path, "paper")
    s = scores(model, label_ids)
    save(p["run_dir"], s, label_ids)
    sets = select(s, [len(paper.sets[e]) for e in E], E)
    named = meta.get("named_sets") or {"paper": {"neurons": meta["neurons"]}}
    shown = {
        e: [
            {
                "neuron": n,
                "score": float(s[j, n[0], n[1]]),
                "promoted": [t for t, _ in top_tokens(model, tok, n[0], n[1])["promoted"]],
            }
            for n in ranked(s, j, N_SHOWN)
        ]
        for j, e in enumerate(E)
    }
    entry = {
        "variant": "weights",
        "settings": (named.get("paper") or {}).get("settings"),
        "why": "control from the weights alone: per emotion, the neurons whose down_proj column, read through "
        "the final norm's scale and the unembedding (first order, no data, no gradient), raises the "
        "label's token most against the other labels'; as many as the paper set's",
        "neurons": sets,
        "n_selected": sum(map(len, sets.values())),
        "label_tokens": {e: tok.decode([int(t)]) for e, t in zip(E, label_ids)},
        "score_sum": {
            e: float(s[j][tuple(torch.as_tensor(sets[e]).T)].sum()) if sets[e] else 0.0 for j, e in enumerate(E)
        },
        "top_neurons": shown,
    }
    items = [(k, v) for k, v in named.items() if k != "weights"]
    at = [k for k, _ in items].index("attribution") + 1 if "attribution" in named else 0
    items.insert(at, ("weights", entry))
    meta["named_sets"] = dict(items)
    atomic_write_text(path, json.dumps(meta, indent=1, allow_nan=False))
    return entry


def summary(entry: dict) -> pd.DataFrame:
    """Per emotion: the weights set's size, its label token, and its first neurons with the tokens they promote."""
    import pandas as pd

    return pd.DataFrame(
        {
            e: {
                "neurons": len(entry["neurons"][e]),
                "label token": entry["label_tokens"][e],
                "top neurons (layer, index): promoted tokens": "; ".join(
                    f"({x['neuron'][0]}, {x['neuron'][1]}): " + " ".join(map(repr, x["promoted"][:5]))
                    for x in entry["top_neurons"][e]
                ),
            }
            for e in entry["neurons"]
        }
    ).T
