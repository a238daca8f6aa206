"""Neuron cards (issue 28): for the top neurons of each named set and emotion, the train dialogues on which the neuron
fires most, each as a window of tokens around its maximum with the activation at every token, a seeded sample of
random train dialogues read the same way, its firing rate per emotion, and the tokens its down_proj column promotes
and suppresses (emolib.identify.weights.top_tokens).

Which neurons get cards is known only after stage 2's recording pass (the named sets are selected from its counts),
so the pass keeps, for every neuron, only its top_k dialogues by maximum activation (record.top_update: k numbers
and k dialogue numbers per neuron, a [L, k, D] update per batch). Afterwards the few dialogues that the cards need are
run again, once, and their windows read from hooks. A card's maximum is the dialogue's maximum over its counted
tokens (the dialogue's own, not the prompt's), of the tensor the run records (`record_tensor`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..lm.models import ffn_layers, model_device
from . import record

if TYPE_CHECKING:
    import pandas as pd

FILE = "cards.json"
PER_SET = 5  # cards per named set and emotion
WINDOW = 12  # tokens either side of a context's maximum
N_RANDOM = 8  # random train dialogues read for every card (the same ones for all cards of a run)
N_TOKENS = 8  # promoted and suppressed tokens shown
SETS = ("paper", "selective", "directions")  # the named sets stage 2 writes (the controls come later)


def rank_neurons(neurons: list, score: torch.Tensor, n: int = PER_SET, lowest: bool = True) -> list[list[int]]:
    """The n best of an emotion's [layer, index] neurons by score [L, D] (lowest first, or highest first), ties by
    (layer, index)."""
    keyed = sorted((float(score[l, i]) * (1 if lowest else -1), l, i) for l, i in neurons)
    return [[l, i] for _, l, i in keyed[:n]]


def by_emotion(p: dict) -> dict[str, list[str]]:
    """The train dialogues per emotion, in the order stage 2's recording numbers them (selection.record_train)."""
    from ..dataset import data

    train = data.load_splits(p["run_dir"])["train"]
    return {e: [d for d, lab in zip(train["dialogue"], train["label"]) if lab == e] for e in p["emotions"]}


def random_dialogues(n_items: int, seed: int, n: int = N_RANDOM) -> list[int]:
    """A seeded sample of n dialogue numbers (the same for every card of a run), sorted."""
    rng = np.random.default_rng([seed, 2828])
    return sorted(rng.choice(n_items, min(n, n_items), replace=False).tolist())


@torch.inference_mode()
def read_dialogues(
    model,
    tok,
    dialogues: list[str],
    neurons: list[tuple[int, int]],
    tensor: str = "act",
    framing: str = "raw",
    parts=None,
    batch_size: int = 8,
) -> list[dict]:
    """Run the dialogues once and read the given neurons' activations (tensor act: act_fn's output; product: the
    input of down_proj) at every token of each dialogue's own span: per dialogue {"ids": token ids,
    "acts": float32 [n_neurons, n_tokens]}."""
    layers = sorted({l for l, _ in neurons})
    cols = {l: [i for ll, i in neurons if ll == l] for l in layers}
    mlps = ffn_layers(model)
    grabbed: dict[int, torch.Tensor] = {}
    handles = []
    for l in layers:
        idx = torch.tensor(cols[l])
        if tensor == "act":
            handles.append(
                mlps[l].act_fn.register_forward_hook(
                    lambda mod, a, out, l=l, idx=idx: grabbed.__setitem__(l, out[..., idx.to(out.device)].float().cpu())
                )
            )
        else:
            handles.append(
                mlps[l].down_proj.register_forward_pre_hook(
                    lambda mod, a, l=l, idx=idx: grabbed.__setitem__(l, a[0][..., idx.to(a[0].device)].float().cpu())
                )
            )
    base, dev, bos = getattr(model, "model", model), model_device(model), record.bos_prefix(tok)
    out = []
    try:
        for s in range(0, len(dialogues), batch_size):
            items = [record.encode(tok, d, framing, parts, bos) for d in dialogues[s : s + batch_size]]
            ids, attn, _ = record.make_batch(items, tok.pad_token_id)
            base(input_ids=ids.to(dev), attention_mask=attn.to(dev), use_cache=False)
            for r, (x, a, b) in enumerate(items):
                acts = (
                    torch.stack([grabbed[l][r, a:b, cols[l].index(i)] for l, i in neurons])
                    if neurons
                    else torch.zeros((0, b - a))
                )
                out.append({"ids": x[a:b], "acts": acts})
    finally:
        for h in handles:
            h.remove()
    return out


def window(tok, ids: list[int], acts: torch.Tensor, width: int = WINDOW) -> dict:
    """The tokens around the maximum of one neuron's activations over one dialogue: decoded tokens, activations
    (3 significant digits), the maximum and its place in the window."""
    m = int(torch.argmax(acts)) if len(acts) else 0
    a, b = max(0, m - width), min(len(ids), m + width + 1)
    return {
        "tokens": [tok.decode([int(t)]) for t in ids[a:b]],
        "acts": [float(f"{float(v):.3g}") for v in acts[a:b]],
        "max": float(f"{float(acts[m]):.4g}") if len(acts) else 0.0,
        "at": m - a,
        "cut_left": a > 0,
        "cut_right": b < len(ids),
    }


def build(
    p: dict, model, tok, state: dict, named: dict[str, dict], parts=None, dialogues: dict[str, list[str]] | None = None
) -> dict:
    """The cards of a run: named maps a set name to {"neurons": {emotion: [[layer, index], ...]}, "score": [L, D]
    (or [E, L, D], one score per emotion), "lowest": bool, "criterion": its name, "P": [E, L, D] firing
    probabilities}. Per set and emotion, its PER_SET best neurons by score get a card. Needs the recording's top-k
    (record_counts with top_k) over the train dialogues (by default the run's; or `dialogues`, as recorded)."""
    if "top_values" not in state:
        raise ValueError(
            "the stage 2 recording has no top contexts (recorded before neuron cards); delete "
            f"{Path(p['run_dir']) / 'cache' / 'counts.pt'} and rerun notebook 02"
        )
    t0 = time.time()
    dialogues = by_emotion(p) if dialogues is None else dialogues
    emotions = list(dialogues)
    flat = [(e, d) for e in emotions for d in dialogues[e]]
    if len(flat) != int(state["top_items"]):
        raise ValueError(
            f"the train split has {len(flat)} dialogues but the recording numbered {state['top_items']}; "
            "rerun notebook 02"
        )
    tv, ti = state["top_values"], state["top_ids"]
    rnd = random_dialogues(len(flat), p["seed"])
    picks = []  # (set, emotion, rank, [layer, index])
    for name, s in named.items():
        for j, e in enumerate(emotions):
            score = s["score"][j] if s["score"].dim() == 3 else s["score"]
            for r, n in enumerate(rank_neurons(s["neurons"].get(e, []), score, PER_SET, s["lowest"])):
                picks.append((name, e, r, n))
    neurons = sorted({tuple(n) for _, _, _, n in picks})
    tops = {
        n: [(int(j), float(v)) for v, j in zip(tv[n[0], :, n[1]], ti[n[0], :, n[1]]) if j >= 0 and torch.isfinite(v)]
        for n in neurons
    }
    need = sorted({j for n in neurons for j, _ in tops[n]} | set(rnd))
    framing = p.get("record_framing", "raw")
    if framing == "prompt" and parts is None:  # as stage 2's recording frames them (selection.record_train)
        from ..lm import models, prompts

        chat = prompts.use_chat(p["prompt_style"], models.is_instruct(p["model"], tok), tok)
        parts = prompts.build(tok, p["emotions"], chat, p["few_shot"], p["prompt_template"])
    read = dict(
        zip(
            need,
            read_dialogues(
                model,
                tok,
                [flat[j][1] for j in need],
                list(neurons),
                state["top_tensor"],
                framing,
                parts,
                p.get("batch_size", 8),
            ),
        )
    )
    col = {n: k for k, n in enumerate(neurons)}

    def context(n, j, recorded=None) -> dict:
        w = window(tok, read[j]["ids"], read[j]["acts"][col[n]])
        w.update(dialogue=j, emotion=flat[j][0])
        if recorded is not None:
            w["recorded_max"] = float(f"{recorded:.4g}")
        return w

    cards = []
    for name, e, r, (l, i) in picks:
        s = named[name]
        P = s["P"][:, l, i]
        score = s["score"][emotions.index(e)] if s["score"].dim() == 3 else s["score"]
        cards.append(
            {
                "set": name,
                "emotion": e,
                "rank": r + 1,
                "layer": l,
                "index": i,
                "criterion": s["criterion"],
                "score": float(f"{float(score[l, i]):.5g}"),
                "firing_rate": {em: float(f"{float(v):.4g}") for em, v in zip(emotions, P)},
                "top": [context((l, i), j, v) for j, v in tops[(l, i)]],
                "random": [context((l, i), j) for j in rnd],
                **_weights(model, tok, l, i),
            }
        )
    n_per = {e: len(v) for e, v in dialogues.items()}
    return {
        "version": 1,
        "tensor": state["top_tensor"],
        "k": int(state["top_k"]),
        "window": WINDOW,
        "per_set": PER_SET,
        "n_random": len(rnd),
        "emotions": emotions,
        "dialogues_per_emotion": n_per,
        "sets": list(named),
        "dialogues_rerun": len(need),
        "dialogues_total": len(flat),
        "seconds": round(time.time() - t0, 1),
        "cards": cards,
    }


def _weights(model, tok, layer: int, index: int) -> dict:
    """The tokens a neuron's down_proj column promotes and suppresses most (weights.top_tokens)."""
    from .weights import top_tokens

    t = top_tokens(model, tok, layer, index, N_TOKENS)
    return {k: [[s, float(f"{v:.4g}")] for s, v in t[k]] for k in ("promoted", "suppressed")}


def stage2_sets(results: dict, chosen: str | None, dstate: dict | None, path: str | Path) -> dict[str, dict]:
    """What build needs for each named set stage 2 wrote: paper and selective ranked by their entropy (lowest
    first), directions by its contribution to the emotion's direction (highest first); firing rates from the set's
    own recording (directions: the paper set's)."""
    from . import neurons as nmod

    out = {}
    for name in nmod.set_names(path):
        sets = nmod.load(path, name).sets
        if name == "paper" or (name == "selective" and chosen):
            res = results["paper" if name == "paper" else chosen]
            out[name] = {
                "neurons": sets,
                "score": res["entropy"],
                "lowest": True,
                "criterion": "entropy (nats)",
                "P": res["P"],
            }
        elif name == "directions" and dstate is not None and "contrib" in dstate:
            out[name] = {
                "neurons": sets,
                "score": dstate["contrib"],
                "lowest": False,
                "criterion": "contribution",
                "P": results["paper"]["P"],
            }
    return out


def save(run_dir: str | Path, cards: dict) -> Path:
    """Write run_dir/cards.json."""
    from ..safeio import atomic_write_text

    path = Path(run_dir) / FILE
    atomic_write_text(path, json.dumps(cards, indent=None, separators=(",", ":"), allow_nan=False))
    return path


def load(run_dir: str | Path) -> dict | None:
    """run_dir/cards.json, or None when the run has none."""
    path = Path(run_dir) / FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def own_share(cards: dict) -> pd.DataFrame:
    """Per named set: how many of its cards' top contexts come from the dialogue of the card's own emotion, their
    share, and the share expected by chance (the mean over its cards of their emotion's share of train dialogues)."""
    import pandas as pd

    n = cards["dialogues_per_emotion"]
    total = sum(n.values())
    rows = []
    for name in cards["sets"]:
        cs = [c for c in cards["cards"] if c["set"] == name]
        tops = sum(len(c["top"]) for c in cs)
        own = sum(sum(t["emotion"] == c["emotion"] for t in c["top"]) for c in cs)
        chance = sum(len(c["top"]) * n[c["emotion"]] / total for c in cs)
        rows.append(
            {
                "set": name,
                "cards": len(cs),
                "top contexts": tops,
                "own emotion": own,
                "share": own / tops if tops else float("nan"),
                "chance share": chance / tops if tops else float("nan"),
            }
        )
    return pd.DataFrame(rows).set_index("set")


def pick_shown(cards: dict, sizes: dict[str, dict[str, int]]) -> list[dict]:
    """Per set, the rank-1 card of the emotion with the most neurons in that set (sizes: set -> emotion -> count;
    ties: the first emotion)."""
    out = []
    for name in cards["sets"]:
        if name not in sizes or not sizes[name]:
            continue
        e = max(sizes[name], key=lambda k: (sizes[name][k], -list(sizes[name]).index(k)))
        c = next((c for c in cards["cards"] if c["set"] == name and c["emotion"] == e and c["rank"] == 1), None)
        if c is not None:
            out.append(c)
    return out
