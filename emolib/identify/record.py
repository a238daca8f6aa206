"""Stage 2 recording: how many tokens each FFN neuron fires on (value > 0), per emotion, per half of the data and
under seeded permutations of the emotion labels (the null), in one pass with plain hooks.

Longer than 400 lines: the counting hook, its null permutations and halves, and its distributed merge share one pass
and its buffers.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from ..lm import prompts
from ..lm.models import decoder_layers, ffn_layers, model_device
from ..progress import tqdm

TENSORS = ("act", "product")  # act_fn(gate_proj(x)), and the input of down_proj (act * up_proj(x))
TOKENS = ("dialogue", "answer")  # every dialogue token, or the prompt's last position (where the label comes)
SITES = ("residual", "mlp")  # where emotion directions are read: a decoder layer's output, or its MLP's output
STATE_VERSION = 2
TOP_K = 8  # per neuron, the dialogues with the highest maximum activation kept by the recording (neuron cards)


def half_of(dialogue: str, seed: int) -> int:
    """Which of two disjoint halves (0/1) a dialogue belongs to, for the split-half stability check."""
    return hashlib.sha1(f"{seed}|{dialogue}".encode()).digest()[0] % 2


def null_labels(sizes: list[int], n_null: int, seed: int) -> np.ndarray:
    """[n_null, N]: each dialogue's emotion index under seeded permutations of the labels (counts per emotion kept).
    Dialogues are numbered emotion by emotion, in the order of `sizes`."""
    labels = np.repeat(np.arange(len(sizes)), sizes)
    return (
        np.stack([np.random.default_rng([seed, 7919, k]).permutation(labels) for k in range(n_null)])
        if n_null
        else np.zeros((0, len(labels)), dtype=int)
    )


def bos_prefix(tokenizer) -> list[int]:
    """[BOS] if the tokenizer adds one to plain text (Gemma, Llama-3), else []."""
    return [tokenizer.bos_token_id] if tokenizer("x")["input_ids"][0] == tokenizer.bos_token_id else []


def encode(
    tokenizer, dialogue: str, framing: str, parts: prompts.PromptParts | None, bos: list[int] | None = None
) -> tuple[list[int], int, int]:
    """Token ids of one input and the [start, end) span of the dialogue's own tokens in it."""
    dia = prompts.encode_dialogue(tokenizer, dialogue)
    if framing == "prompt":
        return parts.prefix + dia + parts.suffix, len(parts.prefix), len(parts.prefix) + len(dia)
    bos = bos_prefix(tokenizer) if bos is None else bos
    return bos + dia, len(bos), len(bos) + len(dia)


def make_batch(items: list[tuple[list[int], int, int]], pad_id: int, tokens: str = "dialogue"):
    """Right-padded ids, attention mask, and the mask of counted positions: the dialogue's tokens, or (answer) the
    last position of the input, where the model is about to name the emotion."""
    L = max(len(ids) for ids, _, _ in items)
    ids = torch.full((len(items), L), pad_id, dtype=torch.long)
    attn = torch.zeros_like(ids)
    count = torch.zeros((len(items), L), dtype=torch.bool)
    for r, (x, a, b) in enumerate(items):
        ids[r, : len(x)] = torch.tensor(x)
        attn[r, : len(x)] = 1
        if tokens == "answer":
            count[r, len(x) - 1] = True
        else:
            count[r, a:b] = True
    return ids, attn, count


def fired_per_row(
    h: torch.Tensor, flat: torch.Tensor, rows: torch.Tensor, n_rows: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The counting itself: of h [B, T, D], the counted positions (flat, indices into h.flatten(0, 1)) and their batch
    rows; returns [B, D] how many counted tokens of each row each neuron fires on (value > 0), and the selected
    vectors [N, D]."""
    sel = h.flatten(0, 1).index_select(0, flat)  # [N counted tokens, D]
    fired = torch.zeros((n_rows, sel.shape[1]), dtype=torch.float32, device=h.device)
    fired.index_add_(0, rows, (sel > 0).to(torch.float32))  # tokens fired per row (exact in fp32)
    return fired, sel


def top_update(
    values: torch.Tensor, ids: torch.Tensor, sel: torch.Tensor, rows: torch.Tensor, row_ids: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The streaming top-k of neuron cards: each batch row's maximum over its counted positions (sel [N, D], rows
    [N]) merged into the k best so far (values [k, D] float32, ids [k, D] int64 dialogue numbers); rows with no
    counted position count as -inf. Returns the new (values, ids)."""
    k, D = values.shape
    m = torch.full((len(row_ids), D), -torch.inf, dtype=sel.dtype, device=sel.device)
    with warnings.catch_warnings():  # "index_reduce() is in beta"
        warnings.simplefilter("ignore", UserWarning)
        m.index_reduce_(0, rows, sel, "amax")
    v = torch.cat([values, m.float()])
    i = torch.cat([ids, row_ids.view(-1, 1).expand(-1, D)])
    top, at = v.topk(k, dim=0)
    return top, i.gather(0, at)


class Recorder:
    """Hooks on every layer's act_fn (output) and down_proj (input). Each batch row belongs to several count
    groups (its emotion and half; its emotion under each null permutation); per layer and tensor, the rows' firing
    counts are added to their groups with one small matrix product, on the model's devices."""

    def __init__(
        self,
        model,
        n_groups: int,
        site: str | None = None,
        n_dir_rows: int = 0,
        top_k: int = 0,
        top_tensor: str = "act",
    ):
        self.model = model
        self.mlps = ffn_layers(model)
        L, D = len(self.mlps), self.mlps[0].down_proj.in_features
        # on each layer's weight device; a layer offloaded by accelerate (weights on "meta") gets its counts moved
        # to wherever its activations turn up, on the first batch
        devs = [
            m.down_proj.weight.device if m.down_proj.weight.device.type != "meta" else torch.device("cpu")
            for m in self.mlps
        ]
        self.counts = {t: [torch.zeros((n_groups, D), dtype=torch.int32, device=d) for d in devs] for t in TENSORS}
        self.sums = [torch.zeros(D, dtype=torch.float64, device=d) for d in devs]  # of the down_proj input
        self.shape = (L, D)
        self.flat = self.rows = self.groups = self.dir_weights = None  # set per batch by set_batch
        self.handles = []
        # emotion directions (emolib.identify.directions): weighted sums of the site's vectors [R, H] per layer, and the
        # down_proj input summed per count group [G, D] per layer (for the contributions' mean activation)
        self.site = site
        if site is not None:
            H = self.mlps[0].down_proj.out_features
            self.dir_sums = [torch.zeros((n_dir_rows, H), dtype=torch.float64, device=d) for d in devs]
            self.act_sums = [torch.zeros((n_groups, D), dtype=torch.float32, device=d) for d in devs]
        # neuron cards (top_k > 0): per layer, the top_k dialogues by maximum activation of top_tensor [k, D]
        self.top_k, self.top_tensor = top_k, top_tensor
        self.top_values = [torch.full((top_k, D), -torch.inf, device=d) for d in devs]
        self.top_ids = [torch.full((top_k, D), -1, dtype=torch.long, device=d) for d in devs]
        self.row_ids = None

    def set_batch(
        self,
        count: torch.Tensor,
        groups: torch.Tensor,
        dir_weights: torch.Tensor | None = None,
        row_ids: torch.Tensor | None = None,
    ) -> None:
        """The counted positions [B, T], the group membership matrix [G, B], (with a site) the direction
        weights [R, B] and (with top_k) each row's dialogue number [B] of the next forward pass."""
        self.flat = count.flatten().nonzero().squeeze(1)
        self.rows = torch.div(self.flat, count.shape[1], rounding_mode="floor")
        self.n_rows = count.shape[0]
        self._dev = {}
        self.groups = groups
        self.dir_weights = dir_weights
        self.row_ids = row_ids

    def _put(self, dev) -> tuple:
        """The batch's index tensors on one device (cached: layers split over devices share them)."""
        if dev not in self._dev:
            self._dev[dev] = (
                self.flat.to(dev),
                self.rows.to(dev),
                self.groups.to(dev),
                None if self.row_ids is None else self.row_ids.to(dev),
            )
        return self._dev[dev]

    def _count(self, tensor: str, layer: int, h: torch.Tensor) -> None:
        flat, rows, groups, row_ids = self._put(h.device)
        fired, sel = fired_per_row(h, flat, rows, self.n_rows)
        if self.top_k and tensor == self.top_tensor and row_ids is not None:
            if self.top_values[layer].device != h.device:
                self.top_values[layer] = self.top_values[layer].to(h.device)
                self.top_ids[layer] = self.top_ids[layer].to(h.device)
            self.top_values[layer], self.top_ids[layer] = top_update(
                self.top_values[layer], self.top_ids[layer], sel, rows, row_ids
            )
        if self.counts[tensor][layer].device != h.device:
            self.counts[tensor][layer] = self.counts[tensor][layer].to(h.device)
        self.counts[tensor][layer] += (groups @ fired).to(torch.int32)
        if tensor == "product":
            if self.sums[layer].device != h.device:
                self.sums[layer] = self.sums[layer].to(h.device)
            self.sums[layer] += sel.sum(0, dtype=torch.float32).double()
            if self.site is not None:
                if self.act_sums[layer].device != h.device:
                    self.act_sums[layer] = self.act_sums[layer].to(h.device)
                self.act_sums[layer] += groups @ self._row_sums(sel, rows, h.device)

    def _row_sums(self, sel: torch.Tensor, rows: torch.Tensor, dev) -> torch.Tensor:
        """[B, width] each batch row's sum of the selected positions' vectors, in float32."""
        out = torch.zeros((self.n_rows, sel.shape[1]), dtype=torch.float32, device=dev)
        return out.index_add_(0, rows, sel.float())

    def _direct(self, layer: int, out) -> None:
        """Add the batch's direction-weighted sums of the site's vectors (MLP output or residual stream)."""
        h = out[0] if isinstance(out, tuple) else out
        flat, rows, _, _ = self._put(h.device)
        s = self._row_sums(h.flatten(0, 1).index_select(0, flat), rows, h.device)
        if self.dir_sums[layer].device != h.device:
            self.dir_sums[layer] = self.dir_sums[layer].to(h.device)
        self.dir_sums[layer] += self.dir_weights.to(h.device, torch.float64) @ s.double()

    def __enter__(self):
        for i, mlp in enumerate(self.mlps):
            self.handles.append(
                mlp.act_fn.register_forward_hook(lambda mod, args, out, i=i: self._count("act", i, out))
            )
            self.handles.append(
                mlp.down_proj.register_forward_pre_hook(lambda mod, args, i=i: self._count("product", i, args[0]))
            )
        if self.site is not None:
            mods = self.mlps if self.site == "mlp" else list(decoder_layers(self.model))
            for i, m in enumerate(mods):
                self.handles.append(m.register_forward_hook(lambda mod, args, out, i=i: self._direct(i, out)))
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        self.handles = []
        return False

    def load(self, counts: dict[str, torch.Tensor], sums: torch.Tensor, extra: dict | None = None) -> None:
        """Continue from saved [G, L, D] counts and [L, D] sums (and the direction sums, with a site; and the
        top-k of neuron cards, [L, k, D], with top_k)."""
        for t in TENSORS:
            for layer, c in enumerate(self.counts[t]):
                c.copy_(counts[t][:, layer])
        for layer, s in enumerate(self.sums):
            s.copy_(sums[layer])
        if self.site is not None and extra:
            for layer in range(self.shape[0]):
                self.dir_sums[layer].copy_(extra["dir_sums"][:, layer])
                self.act_sums[layer].copy_(extra["act_sums"][:, layer])
        if self.top_k and extra and "top_values" in extra:
            for layer in range(self.shape[0]):
                self.top_values[layer].copy_(extra["top_values"][layer])
                self.top_ids[layer].copy_(extra["top_ids"][layer])

    def export_top(self) -> dict[str, torch.Tensor]:
        """With top_k: the top-k of neuron cards, values [L, k, D] float32 and dialogue numbers [L, k, D] int64."""
        if not self.top_k:
            return {}
        return {
            "top_values": torch.stack([v.cpu() for v in self.top_values]),
            "top_ids": torch.stack([i.cpu() for i in self.top_ids]),
        }

    def export(self) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The counts so far as {tensor: [G, L, D]} int32 and the sums as [L, D] float64, on the CPU."""
        return (
            {t: torch.stack([c.cpu() for c in self.counts[t]], 1) for t in TENSORS},
            torch.stack([s.cpu() for s in self.sums]),
        )

    def export_directions(self) -> dict[str, torch.Tensor]:
        """With a site: the direction sums [R, L, H] float64 and the per-group down_proj input sums [G, L, D]."""
        if self.site is None:
            return {}
        return {
            "dir_sums": torch.stack([s.cpu() for s in self.dir_sums], 1),
            "act_sums": torch.stack([s.cpu() for s in self.act_sums], 1),
        }


def group_matrix(emotion: list[int], half: list[int], null: np.ndarray, n_emotions: int) -> torch.Tensor:
    """[G, B] 0/1 membership of each batch row in the count groups: rows 2e+h for (emotion, half), then
    2E + kE + e' for emotion e' under null permutation k."""
    E, B, K = n_emotions, len(emotion), null.shape[0]
    g = torch.zeros((2 * E + K * E, B), dtype=torch.float32)
    for r in range(B):
        g[2 * emotion[r] + half[r], r] = 1
        for k in range(K):
            g[2 * E + k * E + int(null[k, r]), r] = 1
    return g


@torch.inference_mode()
def record_counts(
    model,
    tokenizer,
    dialogues: dict[str, list[str]],
    tensor: str = "act",
    tokens: str = "dialogue",
    framing: str = "raw",
    parts: prompts.PromptParts | None = None,
    batch_size: int = 16,
    seed: int = 0,
    state_path: str | Path | None = None,
    save_every: float = 60.0,
    n_null: int = 0,
    direction_site: str | None = None,
    topics: dict[str, list[str]] | None = None,
    top_k: int = 0,
) -> dict:
    """Count firing tokens per (emotion, layer, neuron) for both tensors, per half and under n_null label
    permutations, over the dialogues; resumable from state_path. `tensor` names the counts returned as "counts".
    With direction_site (mlp or residual), the same pass also sums what emotion directions need (topic-centred,
    emolib.identify.directions; topics: each dialogue's topic, aligned with `dialogues`; none = centred globally).
    With top_k, the same pass keeps per neuron of `tensor` the top_k dialogues by maximum activation over their counted
    tokens ("top_values", "top_ids" [L, k, D]; dialogues numbered emotion by emotion, as in `dialogues`), from which
    emolib.identify.cards re-extracts the contexts of a few neurons."""
    if tensor not in TENSORS:
        raise ValueError(f"record_tensor: must be one of {', '.join(TENSORS)}, got {tensor!r}")
    if tokens not in TOKENS:
        raise ValueError(f"record_tokens: must be one of {', '.join(TOKENS)}, got {tokens!r}")
    if tokens == "answer" and framing != "prompt":
        raise ValueError("record_tokens: answer counts the prompt's last position, so it needs record_framing: prompt")
    if direction_site is not None and direction_site not in SITES:
        raise ValueError(f"direction_site: must be one of {', '.join(SITES)}, got {direction_site!r}")
    emotions = list(dialogues)
    E = len(emotions)
    rank, world = dist_rank_world()
    fp = [
        STATE_VERSION,
        tokens,
        framing,
        batch_size,
        seed,
        n_null,
        model.config.name_or_path,
        str(model.dtype),
        rank,
        world,
        {e: dialogues[e] for e in emotions},
    ]
    if direction_site is not None:  # (kept out of the list otherwise: earlier states stay valid)
        fp += [direction_site, topics]
    if top_k:  # (likewise)
        fp += [["top", top_k, tensor]]
    fingerprint = hashlib.sha1(json.dumps(fp).encode()).hexdigest()
    base = getattr(model, "model", model)
    G = 2 * E + n_null * E
    bos = bos_prefix(tokenizer)  # once, not per dialogue
    null = null_labels([len(dialogues[e]) for e in emotions], n_null, seed)
    items, j = [], 0
    for ei, e in enumerate(emotions):
        for d in dialogues[e]:
            items.append((encode(tokenizer, d, framing, parts, bos), ei, half_of(d, seed), j))
            j += 1
    weights = None
    if direction_site is not None:
        from .directions import weight_rows

        topic_list = [t for e in emotions for t in topics[e]] if topics else ["all"] * len(items)
        n_tok = np.array([1 if tokens == "answer" else b - a for (_, a, b), _, _, _ in items])
        weights = torch.from_numpy(
            weight_rows(
                np.array([it[1] for it in items]), np.array([it[2] for it in items]), null, topic_list, n_tok, E
            )
        )  # float64
    rec = Recorder(model, G, direction_site, 0 if weights is None else weights.shape[0], top_k, tensor)
    L, D = rec.shape
    state = {
        "version": STATE_VERSION,
        "fingerprint": fingerprint,
        "done": 0,
        "group_tokens": torch.zeros(G, dtype=torch.long),
        "seconds": 0.0,
    }
    counts0, sums0 = rec.export()
    extra0 = {**rec.export_directions(), **rec.export_top()}
    state_path = Path(state_path) if state_path else None
    if state_path and world > 1:  # each rank keeps its own resumable state
        state_path = state_path.with_name(f"{state_path.stem}.rank{rank}{state_path.suffix}")
    if state_path and state_path.exists():
        from ..safeio import load_tensors

        saved = load_tensors(state_path)
        if saved.get("fingerprint") == fingerprint:
            state = {k: saved[k] for k in ("version", "fingerprint", "done", "group_tokens", "seconds")}
            counts0, sums0 = {t: saved[f"group_counts_{t}"] for t in TENSORS}, saved["sums"]
            extra0 = {k: saved[k] for k in extra0}
    rec.load(counts0, sums0, extra0)
    order = sorted(range(len(items)), key=lambda i: (-len(items[i][0][0]), i))  # similar lengths batch together
    jobs = [[items[i] for i in order[s : s + batch_size]] for s in range(0, len(order), batch_size)]
    jobs = jobs[rank::world]  # a deterministic shard of the batches per process (all of them in one process)
    last_save, t0 = time.time(), time.time() - state["seconds"]
    dev = model_device(model)
    with rec:
        for j in tqdm(
            range(state["done"], len(jobs)),
            desc="recording activations",
            initial=state["done"],
            total=len(jobs),
            disable=rank > 0,
        ):
            batch = jobs[j]
            ids, attn, count = make_batch([it for it, _, _, _ in batch], tokenizer.pad_token_id, tokens)
            groups = group_matrix([b[1] for b in batch], [b[2] for b in batch], null[:, [b[3] for b in batch]], E)
            rec.set_batch(
                count.to(dev),
                groups,
                None if weights is None else weights[:, [b[3] for b in batch]],
                torch.tensor([b[3] for b in batch]) if top_k else None,
            )
            base(input_ids=ids.to(dev), attention_mask=attn.to(dev), use_cache=False)
            state["group_tokens"] += (groups @ count.sum(1).float()).long()
            state["done"] = j + 1
            if state_path and (time.time() - last_save > save_every or j + 1 == len(jobs)):
                _save(state, rec, t0, state_path)
                last_save = time.time()
    state["seconds"] = time.time() - t0
    if world > 1:
        all_reduce(state, rec)
    out = _unpack(state, rec, emotions, n_null, tensor)
    if direction_site is not None:
        out["direction_site"] = direction_site
    if top_k:
        out.update(rec.export_top(), top_k=top_k, top_tensor=tensor, top_items=len(items))
    return out


def dist_rank_world() -> tuple[int, int]:
    """(rank, world size) of a torch.distributed run (torchrun), or (0, 1) in a single process."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_reduce(state: dict, rec: Recorder) -> None:
    """Sum every rank's counts, token totals and sums, in place, so each rank holds the whole recording."""
    import torch.distributed as dist

    for t in TENSORS:
        for c in rec.counts[t]:
            dist.all_reduce(c)
    for s in rec.sums:
        dist.all_reduce(s)
    if rec.site is not None:
        for s in rec.dir_sums + rec.act_sums:
            dist.all_reduce(s)
    for layer in range(rec.shape[0] if rec.top_k else 0):  # every rank's top-k, merged
        v, i = rec.top_values[layer], rec.top_ids[layer]
        vs, ids = (
            [torch.empty_like(v) for _ in range(dist.get_world_size())],
            [torch.empty_like(i) for _ in range(dist.get_world_size())],
        )
        dist.all_gather(vs, v)
        dist.all_gather(ids, i)
        top, at = torch.cat(vs).topk(rec.top_k, dim=0)
        rec.top_values[layer], rec.top_ids[layer] = top, torch.cat(ids).gather(0, at)
    dev = rec.counts[TENSORS[0]][0].device
    gt = state["group_tokens"].to(dev)
    dist.all_reduce(gt)
    state["group_tokens"] = gt.cpu()
    sec = torch.tensor([state["seconds"]], dtype=torch.float64, device=dev)
    dist.all_reduce(sec, op=dist.ReduceOp.MAX)
    state["seconds"] = float(sec)


def _unpack(state: dict, rec: Recorder, emotions: list[str], n_null: int, tensor: str) -> dict:
    """The recording as named tensors: counts [2 halves, E, L, D] per tensor, tokens [2, E], null counts
    [n_null, E, L, D] (int32) and null tokens [n_null, E]."""
    E = len(emotions)
    counts, sums = rec.export()
    L, D = rec.shape
    gt = state["group_tokens"]
    out = {
        "version": STATE_VERSION,
        "fingerprint": state["fingerprint"],
        "done": state["done"],
        "seconds": state["seconds"],
        "emotions": emotions,
        "n_null": n_null,
        "sums": sums,
        "tokens": gt[: 2 * E].view(E, 2).T.contiguous(),
        "null_tokens": gt[2 * E :].view(n_null, E),
    }
    for t in TENSORS:
        out[f"counts_{t}"] = counts[t][: 2 * E].view(E, 2, L, D).transpose(0, 1).long().contiguous()
        out[f"null_{t}"] = counts[t][2 * E :].view(n_null, E, L, D).contiguous()
    out["counts"] = out[f"counts_{tensor}"]
    extra = rec.export_directions()
    if extra:  # direction rows: all items, half 0, half 1, then each null permutation (E rows each)
        ds, acts = extra["dir_sums"], extra["act_sums"]
        H = ds.shape[-1]
        out["dir_raw"], out["dir_raw_half"] = ds[:E], ds[E : 3 * E].view(2, E, L, H)
        out["dir_raw_null"] = ds[3 * E :].view(n_null, E, L, H)
        out["act_sums"] = acts[: 2 * E].view(E, 2, L, D).transpose(0, 1).contiguous()
        out["null_act_sums"] = acts[2 * E :].view(n_null, E, L, D).contiguous()
    return out


def _save(state: dict, rec: Recorder, t0: float, path: Path) -> None:
    """Write the partial state atomically, so an interrupted run resumes after the last saved batch."""
    counts, sums = rec.export()
    state["seconds"] = time.time() - t0
    from ..safeio import atomic_save  # a fresh temporary name, never through a planted link (file or cache/)

    atomic_save(
        path,
        lambda tmp: torch.save(
            {
                **state,
                "sums": sums,
                **rec.export_directions(),
                **rec.export_top(),
                **{f"group_counts_{t}": counts[t] for t in TENSORS},
            },
            tmp,
        ),
        base=Path(path).parent.parent,
    )


def means_from_counts(run_dir: str | Path, shape: tuple[int, int] | None = None) -> torch.Tensor | None:
    """Mean input of down_proj per neuron over the train tokens (for mean ablation), from stage 2's counts;
    loaded without running code, and checked against the model's FFN shape when given."""
    from ..safeio import clear_hint, load_tensors

    path = Path(run_dir) / "cache" / "counts.pt"
    if not path.exists():
        return None
    state = load_tensors(path)
    sums, tokens = (state.get("sums"), state.get("tokens")) if isinstance(state, dict) else (None, None)
    if not isinstance(sums, torch.Tensor) or not isinstance(tokens, torch.Tensor) or sums.dim() != 2:
        raise ValueError(
            f"{path}: not stage 2's counts (needs tensors sums [layers, d_ff] and tokens); "
            f"delete it to recompute ({clear_hint(path)})"
        )
    if shape is not None and tuple(sums.shape) != tuple(shape):
        raise ValueError(
            f"{path}: counts of an FFN of {sums.shape[0]} layers x {sums.shape[1]} neurons; the loaded "
            f"model has {shape[0]} x {shape[1]}"
        )
    means = (sums / tokens.sum().clamp(min=1)).float()
    if not torch.isfinite(means).all():
        raise ValueError(f"{path}: mean activations contain NaN or inf; delete it to recompute ({clear_hint(path)})")
    return means
