"""Stage 2 recording: per emotion, how many tokens each FFN neuron fires on (value > 0), with plain hooks."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import prompts
from .models import ffn_layers, model_device


def half_of(dialogue: str, seed: int) -> int:
    """Which of two disjoint halves (0/1) a dialogue belongs to, for the split-half stability check."""
    return hashlib.sha1(f"{seed}|{dialogue}".encode()).digest()[0] % 2


def bos_prefix(tokenizer) -> list[int]:
    """[BOS] if the tokenizer adds one to plain text (Gemma, Llama-3), else []."""
    return [tokenizer.bos_token_id] if tokenizer("x")["input_ids"][0] == tokenizer.bos_token_id else []


def encode(tokenizer, dialogue: str, framing: str, parts: prompts.PromptParts | None,
           bos: list[int] | None = None) -> tuple[list[int], int, int]:
    """Token ids of one input and the [start, end) span of the dialogue's own tokens in it."""
    dia = prompts.encode_dialogue(tokenizer, dialogue)
    if framing == "prompt":
        return parts.prefix + dia + parts.suffix, len(parts.prefix), len(parts.prefix) + len(dia)
    bos = bos_prefix(tokenizer) if bos is None else bos
    return bos + dia, len(bos), len(bos) + len(dia)


def make_batch(items: list[tuple[list[int], int, int]], pad_id: int, last_only: bool):
    """Right-padded ids, attention mask, and the mask of counted tokens (dialogue tokens, or the last one)."""
    L = max(len(ids) for ids, _, _ in items)
    ids = torch.full((len(items), L), pad_id, dtype=torch.long)
    attn = torch.zeros_like(ids)
    count = torch.zeros((len(items), L), dtype=torch.bool)
    for r, (x, a, b) in enumerate(items):
        ids[r, :len(x)] = torch.tensor(x)
        attn[r, :len(x)] = 1
        if last_only:
            count[r, b - 1] = True
        else:
            count[r, a:b] = True
    return ids, attn, count


class Recorder:
    """Hooks on every layer's act_fn (output) and down_proj (input) that accumulate firing counts per half."""

    def __init__(self, model, tensor: str = "act"):
        self.model, self.tensor = model, tensor
        self.mlps = ffn_layers(model)
        L, D = len(self.mlps), self.mlps[0].down_proj.in_features
        devs = [m.down_proj.weight.device for m in self.mlps]
        self.counts = [torch.zeros((2, D), dtype=torch.long, device=d) for d in devs]  # current emotion
        self.sums = [torch.zeros(D, dtype=torch.float64, device=d) for d in devs]  # of the down_proj input
        self.shape = (L, D)
        self.mask = self.half = None
        self.handles = []

    def _count(self, layer: int, h: torch.Tensor) -> None:
        m = self.mask.to(h.device)
        fired = ((h > 0) & m[..., None]).sum(1)  # [B, D] tokens fired per row
        self.counts[layer].index_add_(0, self.half.to(h.device), fired)

    def __enter__(self):
        for i, mlp in enumerate(self.mlps):
            if self.tensor == "act":
                self.handles.append(mlp.act_fn.register_forward_hook(
                    lambda mod, args, out, i=i: self._count(i, out)))
            self.handles.append(mlp.down_proj.register_forward_pre_hook(lambda mod, args, i=i: self._product(i, args[0])))
        return self

    def _product(self, layer: int, x: torch.Tensor) -> None:
        if self.tensor == "product":
            self._count(layer, x)
        m = self.mask.to(x.device)
        self.sums[layer] += (x.double() * m[..., None]).sum((0, 1))

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        self.handles = []
        return False

    def take_counts(self) -> torch.Tensor:
        """The counts since the last call, as a [2, L, D] CPU tensor; resets them."""
        out = torch.stack([c.cpu() for c in self.counts], 1)
        for c in self.counts:
            c.zero_()
        return out


@torch.inference_mode()
def record_counts(model, tokenizer, dialogues: dict[str, list[str]], tensor: str = "act", tokens: str = "dialogue",
                  framing: str = "raw", parts: prompts.PromptParts | None = None, batch_size: int = 16,
                  seed: int = 0, state_path: str | Path | None = None, save_every: float = 60.0) -> dict:
    """Count firing tokens per (emotion, layer, neuron) over the dialogues; resumable from state_path."""
    emotions = list(dialogues)
    fingerprint = hashlib.sha1(json.dumps([tensor, tokens, framing, batch_size, seed, model.config.name_or_path,
                                           {e: dialogues[e] for e in emotions}]).encode()).hexdigest()
    base = getattr(model, "model", model)
    rec = Recorder(model, tensor)
    L, D = rec.shape
    state = {"fingerprint": fingerprint, "done": 0, "counts": torch.zeros((2, len(emotions), L, D), dtype=torch.long),
             "tokens": torch.zeros((2, len(emotions)), dtype=torch.long), "sums": torch.zeros((L, D), dtype=torch.float64),
             "seconds": 0.0}
    state_path = Path(state_path) if state_path else None
    if state_path and state_path.exists():
        saved = torch.load(state_path, weights_only=False)
        if saved.get("fingerprint") == fingerprint:
            state = saved
    jobs = []
    bos = bos_prefix(tokenizer)  # once, not per dialogue
    for ei, e in enumerate(emotions):
        items = [(encode(tokenizer, d, framing, parts, bos), half_of(d, seed)) for d in dialogues[e]]
        items.sort(key=lambda t: -len(t[0][0]))
        jobs += [(ei, items[s:s + batch_size]) for s in range(0, len(items), batch_size)]
    for layer, total in enumerate(state["sums"]):  # restored sums continue to accumulate
        rec.sums[layer] += total.to(rec.sums[layer].device)
    last_save, t0 = time.time(), time.time() - state["seconds"]
    dev = model_device(model)
    with rec:
        for j in tqdm(range(state["done"], len(jobs)), desc="recording activations", initial=state["done"],
                      total=len(jobs)):
            ei, batch = jobs[j]
            ids, attn, count = make_batch([it for it, _ in batch], tokenizer.pad_token_id, tokens == "last")
            rec.mask = count.to(dev)
            rec.half = torch.tensor([h for _, h in batch])
            base(input_ids=ids.to(dev), attention_mask=attn.to(dev), use_cache=False)
            state["counts"][:, ei] += rec.take_counts()
            for h in (0, 1):
                state["tokens"][h, ei] += int(count[rec.half == h].sum())
            state["done"] = j + 1
            if state_path and (time.time() - last_save > save_every or j + 1 == len(jobs)):
                _save(state, rec, t0, state_path)
                last_save = time.time()
    state["sums"] = torch.stack([s.cpu() for s in rec.sums])
    state["seconds"] = time.time() - t0
    state["emotions"] = emotions
    return state


def _save(state: dict, rec: Recorder, t0: float, path: Path) -> None:
    """Write the partial state atomically, so an interrupted run resumes after the last saved batch."""
    state["sums"] = torch.stack([s.cpu() for s in rec.sums])
    state["seconds"] = time.time() - t0
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)
