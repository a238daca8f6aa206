"""Many ablation conditions per forward pass: the item batch repeated once per mask, each copy with its own mask.

Row k * b + i of a pass is item i under mask k. Layers below the first masked layer are the same for every mask,
so they run once on the b items; from that layer on (`tile_from`) every batch tensor is tiled K times. The
prefix key/value cache is built the same way (lower layers batch 1, upper layers batch K), and classify's
score_batch repeats it per item, so row order stays k * b + i throughout, multi-token labels included.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch

from ..progress import tqdm
from . import ablate, prompts
from .classify import Classifier, cache_prefix, encode_dialogues, score_batch
from .models import decoder_layers


def first_masked_layer(masks: list[dict[int, list[int]]]) -> int | None:
    """Lowest layer in which any mask has a neuron (None if every mask is empty)."""
    layers = [l for m in masks for l, idx in m.items() if len(idx)]
    return min(layers) if layers else None


def _tile(v, b: int, copies: int):
    """v with every tensor of >= 2 dims and b rows tiled copies times along dim 0 (through tuples, lists, dicts)."""
    if torch.is_tensor(v):
        return v.repeat(copies, *([1] * (v.dim() - 1))) if v.dim() >= 2 and v.shape[0] == b else v
    if isinstance(v, (tuple, list)):
        return type(v)(_tile(u, b, copies) for u in v)
    if isinstance(v, dict):
        return {k: _tile(u, b, copies) for k, u in v.items()}
    return v


@contextmanager
def tile_from(model, start: int, copies: int):
    """Within the block, decoder layers >= start see each forward's batch tiled copies times (row k * b + i)."""
    layers = decoder_layers(model)
    state: dict = {}

    def hook(module, args, kwargs):
        if module is layers[start]:  # the batch size of this forward, before tiling
            state["b"] = (args[0] if args else kwargs["hidden_states"]).shape[0]
        b = state["b"]
        return _tile(args, b, copies), {k: _tile(v, b, copies) for k, v in kwargs.items()}

    handles = []
    try:
        if copies > 1:
            handles = [layer.register_forward_pre_hook(hook, with_kwargs=True) for layer in layers[start:]]
        yield
    finally:
        for h in handles:
            h.remove()


@torch.inference_mode()
def score_masks(
    clf: Classifier,
    dialogues: list[str],
    masks: list[dict[int, list[int]]],
    mode: str = "zero",
    means: torch.Tensor | None = None,
    scale: float = 0.5,
    calibration: np.ndarray | None = None,
    reuse_lower: bool = True,
    items_per_batch: int | None = None,
    progress: str | None = None,
) -> np.ndarray:
    """[K, N, labels] label scores of every dialogue under every mask, all K masks in each forward pass.

    Equal (to float tolerance) to `with ablate(model, masks[k]): label_scores(clf, dialogues, calibration=...)`
    for each k: calibration given = held fixed; else recomputed under each mask if clf.calibrate; else raw.
    reuse_lower runs the layers below the first masked layer once per item instead of once per mask.
    items_per_batch items make K times as many rows per pass; the default keeps about clf.batch_size rows (on a
    2-core CPU, 128 rows per pass ran at half the speed of 16).
    """
    tok, parts, model = clf.tokenizer, clf.parts, clf.model
    K, N, n_lab = len(masks), len(dialogues), len(parts.labels)
    out = torch.zeros((K, N, n_lab))
    if K == 0 or N == 0:
        return out.numpy()
    start = first_masked_layer(masks) if reuse_lower else 0
    start = len(decoder_layers(model)) - 1 if start is None else start
    bodies = [ids + parts.suffix for ids in encode_dialogues(clf, dialogues)]
    order = sorted(range(N), key=lambda i: -len(bodies[i]))
    b = items_per_batch or max(1, clf.batch_size // K)
    every = torch.arange(K)
    with ablate.ablate_rows(model, masks, mode=mode, means=means, scale=scale) as rows, tile_from(model, start, K):
        rows.set_rows(every)
        cache = cache_prefix(model, parts.prefix) if clf.prefix_cache else None
        for s in tqdm(range(0, N, b), desc=progress, disable=progress is None, leave=False):
            idx = order[s : s + b]
            rows.set_rows(every.repeat_interleave(len(idx)))
            sc = score_batch(model, parts.prefix, [bodies[i] for i in idx], parts.labels, tok.pad_token_id, cache)
            out[:, idx] = sc.view(K, len(idx), n_lab)
        if calibration is None and clf.calibrate:
            rows.set_rows(every)
            free = prompts.encode_dialogue(tok, prompts.CONTENT_FREE) + parts.suffix
            out -= score_batch(model, parts.prefix, [free], parts.labels, tok.pad_token_id, cache).view(K, 1, n_lab)
    if calibration is not None:
        out -= torch.as_tensor(np.asarray(calibration), dtype=out.dtype)
    return out.numpy()
