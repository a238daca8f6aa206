"""One pass over train dialogues in the instrument's own scoring sequence (prefix + dialogue + suffix, then the
label): each FFN neuron's mean and SD there (for mean ablation and for matching random sets), and the
attribution-patching estimate of what ablating it does to the true label's calibrated margin (the positive control).

The estimate is first order: for an item, (replacement - activation) x d margin / d activation, summed over every
position the ablation touches and averaged over the emotion's items. One backward pass per batch gives it for every
neuron. With the calibration recomputed under the mask, the content-free dialogue's own first-order change is
subtracted (for the item's true label and its runner-up).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..lm import prompts
from ..lm.classify import Classifier, encode_dialogues, score_batch
from ..lm.models import ffn_layers
from ..progress import tqdm
from .matched import load, moments, save


class _Capture:
    """Forward pre-hooks on every mlp.down_proj that keep its input (with its gradient) for each call in order."""

    def __init__(self, model):
        self.mlps, self.calls, self.handles = ffn_layers(model), {}, []

    def __enter__(self):
        def make(layer: int):
            def hook(module, args):
                x = args[0]
                if x.requires_grad:
                    x.retain_grad()
                self.calls.setdefault(layer, []).append(x)

            return hook

        self.handles = [m.down_proj.register_forward_pre_hook(make(l)) for l, m in enumerate(self.mlps)]
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        return False

    def clear(self) -> None:
        """Forget the captured tensors of the last batch."""
        self.calls = {}


def _per_item(x: torch.Tensor, b: int) -> torch.Tensor:
    """[rows, T, D] of one call -> [b, rows // b * T, D]: the continuation calls repeat each item's row per label."""
    return x.reshape(b, -1, x.shape[-1])


def _grad_sums(xs: list[torch.Tensor], b: int) -> tuple[torch.Tensor, torch.Tensor]:
    """([b, D] sum_pos grad, [b, D] sum_pos x * grad) per item over every captured call of one layer."""
    g_tot = xg_tot = torch.zeros(b, xs[0].shape[-1])
    for x in xs:
        xv = _per_item(x.detach().float().cpu(), b)
        gv = _per_item(x.grad.float().cpu(), b) if x.grad is not None else torch.zeros_like(xv)
        g_tot, xg_tot = g_tot + gv.sum(1), xg_tot + (xv * gv).sum(1)
    return g_tot, xg_tot


def _embed_requires_grad(model):
    """A hook that makes the input embeddings require grad, so a frozen model still builds a graph."""
    emb = model.get_input_embeddings()
    return emb.register_forward_hook(lambda m, a, out: out.requires_grad_(True))


def scoring_pass(
    clf: Classifier,
    dialogues: list[str],
    y: np.ndarray,
    calibration: np.ndarray | None,
    n_emotions: int,
    batch_size: int = 4,
    progress: str | None = "scoring-sequence pass",
) -> dict:
    """Sums over the train dialogues' scoring sequences: activation sum, sum of squares and count (non-pad positions
    of prefix + dialogue + suffix); per emotion of the items, sum over items of sum_pos grad and sum_pos x * grad of
    the calibrated true-label margin; each emotion's runner-up label counts; the same sums for the content-free
    dialogue, per label score."""
    model, tok, parts = clf.model, clf.tokenizer, clf.parts
    L = len(ffn_layers(model))
    D = ffn_layers(model)[0].down_proj.in_features
    out = {
        "sum": torch.zeros(L, D, dtype=torch.float64),
        "sumsq": torch.zeros(L, D, dtype=torch.float64),
        "count": 0,
        "g": torch.zeros(n_emotions, L, D),
        "xg": torch.zeros(n_emotions, L, D),
        "n": torch.zeros(n_emotions),
        "runner_up": torch.zeros(n_emotions, n_emotions),
    }
    cal = torch.zeros(len(parts.labels)) if calibration is None else torch.as_tensor(np.asarray(calibration)).float()
    bodies = [ids + parts.suffix for ids in encode_dialogues(clf, dialogues)]
    P = len(parts.prefix)
    was_training = model.training
    frozen = [q for q in model.parameters() if q.requires_grad]
    for q in frozen:  # gradients of the activations only, never of the weights
        q.requires_grad_(False)
    model.eval()
    emb_hook = _embed_requires_grad(model)
    try:
        with torch.enable_grad(), _Capture(model) as cap:
            for s in tqdm(range(0, len(bodies), batch_size), desc=progress, disable=progress is None, leave=False):
                idx = list(range(s, min(s + batch_size, len(bodies))))
                cap.clear()
                sc = score_batch(model, parts.prefix, [bodies[i] for i in idx], parts.labels, tok.pad_token_id)
                sc = sc.float() - cal
                yy = torch.as_tensor(y[idx], dtype=torch.long)
                other = sc.detach().clone()
                other[torch.arange(len(idx)), yy] = -torch.inf
                ru = other.argmax(1)
                margin = sc[torch.arange(len(idx)), yy] - sc[torch.arange(len(idx)), ru]
                margin.sum().backward()
                T = max(len(bodies[i]) for i in idx)
                keep = torch.zeros(len(idx), P + T, dtype=torch.bool)
                keep[:, :P] = True
                for r, i in enumerate(idx):
                    keep[r, P + T - len(bodies[i]) :] = True
                for layer, xs in cap.calls.items():
                    sel = xs[0].detach()[keep.to(xs[0].device)].double().cpu()  # main call's non-pad positions
                    out["sum"][layer] += sel.sum(0)
                    out["sumsq"][layer] += (sel**2).sum(0)
                    g, xg = _grad_sums(xs, len(idx))
                    out["g"][:, layer].index_add_(0, yy, g)
                    out["xg"][:, layer].index_add_(0, yy, xg)
                out["count"] += int(keep.sum())
                out["n"].index_add_(0, yy, torch.ones(len(idx)))
                out["runner_up"].index_put_((yy, ru), torch.ones(len(idx)), accumulate=True)
            out.update(_content_free_sums(clf, cal, cap, L, D))
    finally:
        emb_hook.remove()
        model.train(was_training)
        for q in frozen:
            q.requires_grad_(True)
    return out


def _content_free_sums(clf: Classifier, cal: torch.Tensor, cap: _Capture, L: int, D: int) -> dict:
    """Per label j, sum_pos grad and sum_pos x * grad of the content-free dialogue's calibrated score of j: one
    forward and backward pass over a batch of n copies, copy j carrying label j's score."""
    tok, parts = clf.tokenizer, clf.parts
    free = prompts.encode_dialogue(tok, prompts.CONTENT_FREE) + parts.suffix
    n = len(parts.labels)
    cap.clear()
    sc = score_batch(clf.model, parts.prefix, [free] * n, parts.labels, tok.pad_token_id)
    sc.diagonal().sum().backward()
    g, xg = torch.zeros(n, L, D), torch.zeros(n, L, D)
    for layer, xs in cap.calls.items():
        g[:, layer], xg[:, layer] = _grad_sums(xs, n)
    return {"cf_g": g, "cf_xg": xg}


def estimate(sums: dict, mode: str, calibration: str) -> torch.Tensor:
    """[E, L, D] estimated mean change of each emotion's true-label margin when one neuron is ablated (mode zero or
    mean; calibration fixed or recomputed under the mask), first order."""
    mean, _ = moments(sums)
    n = sums["n"].clamp(min=1)[:, None, None]
    g, xg = sums["g"] / n, sums["xg"] / n
    est = (mean[None] * g - xg) if mode == "mean" else -xg
    if calibration == "recomputed":
        cf = (mean[None] * sums["cf_g"] - sums["cf_xg"]) if mode == "mean" else -sums["cf_xg"]  # [labels, L, D]
        w = sums["runner_up"] / sums["runner_up"].sum(1, keepdim=True).clamp(min=1)  # [E, labels]
        E = est.shape[0]
        est = est - (cf[:E] - torch.einsum("eo,old->eld", w, cf))
    return est


def select(est: torch.Tensor, k_per_emotion: list[int], emotions: list[str]) -> dict[str, list[list[int]]]:
    """Per emotion, its k neurons whose ablation is estimated to lower its margin most (only estimated drops)."""
    L, D = est.shape[1:]
    out = {}
    for j, e in enumerate(emotions):
        flat = est[j].reshape(-1)
        k = min(int(k_per_emotion[j]), int((flat < 0).sum()))
        idx = torch.topk(-flat, k).indices.tolist() if k else []
        out[e] = sorted([[i // D, i % D] for i in idx])
    return out


def stats_tag(tag: dict, dialogues: list[str]) -> str:
    """What the stored statistics depend on: the instrument and the dialogues, hashed."""
    blob = repr((sorted(tag.items()), hashlib.sha1("\n\x00".join(dialogues).encode()).hexdigest()))
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def train_sample(p: dict, per_emotion: int) -> pd.DataFrame:
    """Train dialogues for the pass: per_emotion of each emotion, in a seeded order (never eval topics)."""
    from ..dataset.data import load_splits
    from .splits import take_seeded

    tr = load_splits(p["run_dir"])["train"].to_pandas()[["dialogue", "label"]]
    return take_seeded(tr, p["emotions"], per_emotion, p["seed"] + 2)


ESTIMATE_FILE = "attribution.safetensors"


def prepare(p: dict, clf: Classifier, inst: dict) -> dict:
    """The scoring-sequence pass of the run (train dialogues, attribution_per_emotion each): loaded when stored for
    this instrument and these dialogues, else computed and stored."""
    from ..lm.classify import calibration_vector

    E = p["emotions"]
    tr = train_sample(p, p["attribution_per_emotion"])
    tag = stats_tag(
        {**inst, "model": p["model"], "dtype": str(clf.model.dtype), "template": p.get("prompt_template")},
        tr.dialogue.tolist(),
    )
    sums = load(p["run_dir"], tag)
    if sums is None:
        y = np.array([E.index(e) for e in tr.label])
        cal = calibration_vector(clf) if inst["calibrate"] else None
        sums = scoring_pass(clf, tr.dialogue.tolist(), y, cal, len(E), batch_size=max(1, p["batch_size"] // 4))
        save(p["run_dir"], sums, tag)
    return sums


def save_estimate(run_dir: str | Path, est: torch.Tensor, arm: str) -> None:
    """Store the chosen arm's [E, L, D] estimate (notebook 04 selects the attribution set's doses from it)."""
    from safetensors.torch import save_file

    from ..safeio import atomic_save

    atomic_save(
        Path(run_dir) / ESTIMATE_FILE,
        lambda tmp: save_file({"estimate": est.float().contiguous()}, str(tmp), metadata={"arm": arm}),
    )


def load_estimate(run_dir: str | Path) -> torch.Tensor:
    """The stored [E, L, D] attribution estimate (notebook 03 writes it)."""
    from safetensors.torch import load_file

    path = Path(run_dir) / ESTIMATE_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run notebook 03 for this run first")
    return load_file(str(path))["estimate"]


def add_named_set(p: dict, sums: dict, arm: str, calibrates: bool) -> dict:
    """Select the attribution set under the primary arm, as many neurons per emotion as the paper set has, and
    write it into neurons.json as the first named set; returns its entry."""
    from ..identify import neurons as nmod
    from ..safeio import atomic_write_text, load_neurons_json

    mode, cal = arm.split("/")
    est = estimate(sums, mode, cal if calibrates else "fixed")
    save_estimate(p["run_dir"], est, arm)
    path = Path(p["run_dir"]) / "neurons.json"
    meta = load_neurons_json(path)
    paper = nmod.load(path, "paper")
    E = meta["emotions"]
    sets = select(est, [len(paper.sets[e]) for e in E], E)
    entry = {
        "variant": "attribution",
        "settings": meta["named_sets"]["paper"]["settings"],
        "arm": arm,
        "why": "positive control: per emotion, the neurons whose ablation (" + arm + ") is estimated, to first "
        "order on train items, to lower the true label's margin most; as many as the paper set's",
        "neurons": sets,
        "n_selected": sum(map(len, sets.values())),
        "train_items": {e: int(n) for e, n in zip(E, sums["n"].tolist())},
        "estimated_d_margin": {
            e: float(est[j][tuple(torch.as_tensor(sets[e]).T)].sum()) if sets[e] else 0.0 for j, e in enumerate(E)
        },
    }
    named = {k: v for k, v in meta.get("named_sets", {}).items() if k != "attribution"}
    meta["named_sets"] = {"attribution": entry, **named}
    atomic_write_text(path, json.dumps(meta, indent=1, allow_nan=False))
    return entry


def summary(entry: dict) -> pd.DataFrame:
    """Per emotion: the attribution set's size, train items and summed first-order estimate (nat)."""
    return pd.DataFrame(
        {
            "neurons": {e: len(v) for e, v in entry["neurons"].items()},
            "train items": entry["train_items"],
            "estimated margin change (nat)": entry["estimated_d_margin"],
        }
    )
