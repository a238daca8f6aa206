"""Stage 5's interventions: pushes of one size written into the residual stream (a neuron set's amounts on
down_proj's input, scaled so its write has the dose's norm, measured after a post-FFN norm where the model has one;
or a direction added after the middle decoder layer), the dose unit (the stream's median norm there), the hooks
that give each row of a batch its own push, and the conditions (set, emotion, dose; own, random or unsteered) that
are generated."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from ..lm import ablate
from ..lm.models import model_device

BASELINE, OWN = -2, -1  # Condition.random for the unsteered model and for a named set's own neurons
DIRECTION_SET, PROMPT_SET = "direction", "prompt"
INSTRUCTION = "Reply as someone who feels {emotion}.\n"  # the prompting ceiling's instruction, before the opening


# ---------------------------------------------------------------- doses: pushes of the same size


def direction_layer(n_layers: int) -> int:
    """The decoder layer the direction pushes are added after: the middle one (fixed in advance)."""
    return n_layers // 2


def down_weights(model) -> list[torch.Tensor]:
    """[H, d_ff] float32 W_down of every FFN layer (on the CPU)."""
    from ..lm.models import ffn_layers

    return [m.down_proj.weight.detach().float().cpu() for m in ffn_layers(model)]


@torch.no_grad()
def normed_scale(norm, m: torch.Tensor, v: torch.Tensor, target: float, steps: int = 40) -> float:
    """The c >= 0 at which the push a post-FFN norm lets into the stream, the mean over positions of
    ||norm(m + c v) - norm(m)||, equals target: by doubling then bisection; where the norm caps the push below target
    (it saturates at ||norm(v) - norm(m)||), the c of the largest push found."""
    if target <= 0:
        return 0.0
    base = norm(m)  # the unsteered output of the norm, the same for every c

    def written(c: float) -> float:
        return float((norm(m + c * v) - base).float().norm(dim=-1).mean())

    hi = target / max(float(v.norm()), 1e-12)
    best, best_f = hi, written(hi)
    for _ in range(60):
        if best_f >= target:
            break
        hi *= 2
        f = written(hi)
        if f <= best_f * (1 + 1e-6):  # saturated: the norm lets no more through
            return best
        best, best_f = hi, f
    if best_f < target:
        return best
    lo = 0.0
    for _ in range(steps):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if written(mid) < target else (lo, mid)
    return (lo + hi) / 2


@torch.inference_mode()
def ffn_outputs(model, prompt_ids: list[list[int]]) -> list[torch.Tensor]:
    """Per layer, [T, H] float32 output of down_proj over the prompts' tokens after the first (the unsteered model,
    on its device): the m that a post-FFN norm sees."""
    from ..lm.models import ffn_layers

    mlps, dev = ffn_layers(model), model_device(model)
    got: list[list[torch.Tensor]] = [[] for _ in mlps]
    hooks = [
        m.down_proj.register_forward_hook(lambda mod, a, o, l=l: got[l].append(o[0, 1:].float()))
        for l, m in enumerate(mlps)
    ]
    try:
        for ids in prompt_ids:
            model(input_ids=torch.tensor([ids], device=dev))
    finally:
        for h in hooks:
            h.remove()
    return [torch.cat(g) for g in got]


@torch.inference_mode()
def stream_norm(model, prompt_ids: list[list[int]], layer: int) -> float:
    """The dose unit: the median norm of the residual stream after decoder layer `layer` over the prompts' tokens
    after the first (the unsteered model; the first position is an outlier, an attention sink)."""
    dev = model_device(model)
    norms = []
    for ids in prompt_ids:
        h = model(input_ids=torch.tensor([ids], device=dev), output_hidden_states=True).hidden_states[layer + 1][0]
        h = h.float().cpu()
        norms.append((h[1:] if len(h) > 1 else h).norm(dim=-1))
    return float(torch.cat(norms).median())


def neuron_push(
    W: list[torch.Tensor],
    sd: torch.Tensor,
    neurons: dict[int, list[int]],
    size: float,
    norms: list | None = None,
    outs: list[torch.Tensor] | None = None,
) -> dict[int, torch.Tensor]:
    """Per layer the [d_ff] amounts added to the chosen neurons so that the set writes a push of norm `size` into the
    residual stream: Delta a_l = c_l x SD_l on the layer's chosen neurons (the shape of the old alpha-in-SD doses),
    c_l chosen so that ||W_down,l Delta a_l|| = size x sqrt(n_l / N) (n_l of the set's N neurons in layer l), so the
    layers' writes have a root-sum-square of `size`.

    Closed form, exact: down_proj is linear (no bias in Llama, SmolLM2 or Gemma-3 MLPs) and the amounts are added to
    its input at every position, so its output changes by W_down Delta a at every position, whatever the input. The
    mean over positions of ||W_down Delta a|| is that one number (up to the rounding of the amounts to the model's
    dtype). A set and its random family get the same norm in every layer (families keep the layer counts).

    With post-FFN norms (norms and outs, the unsteered FFN outputs m of ffn_outputs), c_l is found by bisection so
    that the mean over the prompts' tokens of ||norm_l(m + c_l W_down,l shape) - norm_l(m)|| is that size; where the
    norm caps the push below it, the largest push it allows."""
    n_all = sum(len(v) for v in neurons.values())
    out = {}
    for layer, idx in neurons.items():
        if not idx:
            continue
        idx_t = torch.as_tensor(sorted(idx), dtype=torch.long)
        shape = sd[layer, idx_t].float().clamp(min=1e-6)
        v = W[layer][:, idx_t] @ shape
        target = size * math.sqrt(len(idx) / n_all)
        if norms is None:
            c = target / max(float(v.norm()), 1e-12)
        else:
            m = outs[layer]
            c = normed_scale(norms[layer], m, v.to(m.device), target)
        a = torch.zeros(W[layer].shape[1])
        a[idx_t] = shape * c
        out[int(layer)] = a
    return out


def random_direction(hidden: int, seed: int, emotion: str, j: int) -> torch.Tensor:
    """A unit random direction (isotropic Gaussian), seeded by (seed, emotion, j) alone."""
    h = int.from_bytes(hashlib.sha1(f"steer-direction|{seed}|{emotion}|{j}".encode()).digest()[:7], "big")
    v = torch.randn(hidden, generator=torch.Generator().manual_seed(h))
    return v / v.norm()


@contextmanager
def interventions(
    model, pushes: list[dict[int, torch.Tensor]], vectors: list[torch.Tensor | None], layer: int, n_items: int
):
    """Within the block, row r of a batch uses condition r // n_items: its neuron amounts (added to down_proj's input,
    through ablate's pre-hook with per-row amounts) and its residual-stream vector (added after decoder layer
    `layer`, at every position). Many sets, directions and the unsteered model share one generate call."""
    from ..lm.models import decoder_layers, ffn_layers

    mlps = ffn_layers(model)
    d_ff, H = mlps[0].down_proj.in_features, mlps[0].down_proj.out_features
    ctl = ablate.RowMasks(len(pushes), n_items)
    handles = []
    try:
        for lay in sorted({l for p in pushes for l in p}):
            add = torch.stack([p.get(lay, torch.zeros(d_ff)) for p in pushes])
            handles.append(mlps[lay].down_proj.register_forward_pre_hook(ablate.down_proj_hook(ctl, None, add)))
        if any(v is not None for v in vectors):
            vec = torch.stack([torch.zeros(H) if v is None else v.float() for v in vectors])
            cache: dict = {}

            def hook(module, args, out):
                h = out[0] if isinstance(out, tuple) else out
                key = (h.device, h.dtype)
                if key not in cache:
                    cache[key] = vec.to(h.device, h.dtype)
                r = ctl.index(h.shape[0], h.device)
                h = h + cache[key][r][:, None, :]
                return (h, *out[1:]) if isinstance(out, tuple) else h

            handles.append(decoder_layers(model)[layer].register_forward_hook(hook))
        yield ctl
    finally:
        for h in handles:
            h.remove()


# ---------------------------------------------------------------- conditions


@dataclass
class Condition:
    """One generation condition. set: a named set, DIRECTION_SET, PROMPT_SET or 'none' (the unsteered model); random:
    BASELINE, OWN (the set's own neurons, the emotion's direction, the instruction) or the index of a random family /
    random direction; dose: the push's size in stream norms (0 for the baseline and the prompt)."""

    set: str
    emotion: str
    dose: float
    random: int
    neurons: dict[int, list[int]] = field(default_factory=dict)
    extra: str = ""  # what else the continuations depend on

    @property
    def kind(self) -> str:
        return (
            "unsteered"
            if self.random == BASELINE
            else "prompt"
            if self.set == PROMPT_SET
            else ("direction" if self.set == DIRECTION_SET else "own")
            if self.random == OWN
            else ("random direction" if self.set == DIRECTION_SET else "random")
        )

    def key(self, context: str) -> str:
        """Cache key: what the continuations depend on (the neurons themselves, the dose and the context hash)."""
        blob = json.dumps(
            [sorted((int(k), sorted(v)) for k, v in self.neurons.items()), float(self.dose), context]
            + ([self.extra] if self.extra else [])
        )
        return (
            f"{self.set}|{self.emotion}|d={self.dose:g}|r={self.random}|{hashlib.sha1(blob.encode()).hexdigest()[:16]}"
        )


def baseline() -> Condition:
    """The unsteered model (dose 0): shared by every set and emotion."""
    return Condition("none", "none", 0.0, BASELINE)


def own_conditions(sets: dict, emotions: list[str], doses: list[float]) -> list[Condition]:
    """Every named set x emotion x positive dose, own neurons."""
    return [
        Condition(name, e, float(a), OWN, ns.by_layer(e))
        for name, ns in sets.items()
        for e in emotions
        for a in doses
        if a > 0 and sum(map(len, ns.by_layer(e).values()))
    ]


def direction_conditions(emotions: list[str], doses: list[float], randoms: range | list[int] = ()) -> list[Condition]:
    """The emotion's direction (OWN) at every positive dose, or random directions j at one dose each."""
    if randoms:
        return [
            Condition(DIRECTION_SET, e, float(doses[0]), j, {}, f"random direction {j}")
            for j in randoms
            for e in emotions
        ]
    return [
        Condition(DIRECTION_SET, e, float(a), OWN, {}, "emotion direction") for e in emotions for a in doses if a > 0
    ]


def prompt_conditions(emotions: list[str]) -> list[Condition]:
    """The prompting ceiling: the instruction to reply with the emotion before the same openings."""
    return [Condition(PROMPT_SET, e, 0.0, OWN, {}, INSTRUCTION.format(emotion=e)) for e in emotions]


def random_conditions(
    sets: dict,
    emotions: list[str],
    dose_of: dict[str, float],
    n: int,
    firing_of: Callable,
    spread: torch.Tensor | None,
    seed: int,
) -> list[Condition]:
    """n random families per named set (emolib.causal.families: each neuron of the set's union mapped to a random
    neuron of the same layer, firing decile and SD decile, so the emotions' random sets keep the own sets' sizes,
    layers and overlaps), each pushed at its set's test dose; ordered by family index first (a budget cut keeps the
    same families for every set)."""
    from . import families

    per_set = {}
    for name, ns in sets.items():
        if name not in dose_of:
            continue
        own = {e: ns.by_layer(e) for e in emotions if sum(map(len, ns.by_layer(e).values()))}
        if own:
            maps = families.family_maps(families.union(own), firing_of(ns), n, seed, spread)
            per_set[name] = (own, maps)
    return [
        Condition(name, e, float(dose_of[name]), j, families.image(maps[j], m))
        for j in range(n)
        for name, (own, maps) in per_set.items()
        for e, m in own.items()
    ]
