"""Stage 5 steering: are the emotion neurons sufficient? During generation, push one emotion's FFN neurons (the input
of mlp.down_proj, through ablate's pre-hook with per-row amounts) and read the emotion of the continuations with
scorers that are not the steered model.

Fixed in advance (issue 26):
- Dose: the size of the push written into the residual stream, in units of the stream's median norm after the
  middle layer. Where the FFN writes into the stream directly (Llama, SmolLM2) that is ||W_down Delta a|| (the same
  at every position). Where a norm sits between the FFN and the stream (Gemma's post_feedforward_layernorm), it is
  the mean over the prompts' tokens of ||norm(m + W_down Delta a) - norm(m)||, m the unsteered FFN output there. Every own set, every
  random family (emolib.causal.families: same sizes, layers, firing and SD deciles, overlaps), the emotion direction
  and every random direction get the same push at a dose.
- Test dose: per intervention, the largest dose of steer_doses at which the median over its own replies of the
  perplexity ratio to the unsteered reply on the same prompt and noise stays within steer_ppl_factor
  (PPL_FACTOR_NOTE).
- Outcome: per reply, each scorer's P(target emotion), paired with the unsteered reply on the same prompt (common
  random numbers); a degenerate reply (empty, repetitive, or perplexity above steer_ppl_cap x the unsteered median)
  counts as no change, and a condition with more than steer_max_degenerate of its replies degenerate is excluded
  from every test and listed.
- Confirmatory test: emolib.causal.pooled's pooled-over-emotions test (test_row + decide, Holm over the named sets,
  TOST equivalence) per scorer; the direction is the positive control, tested the same way against random
  directions of the same norm. A claim needs both scorers (BOTH_SCORERS_RULE): 'effect' only when both scorers'
  pooled tests reject in the same direction; with one scorer no claim is made.
- The prompting ceiling: the same openings after "Reply as someone who feels <emotion>.", read by the same scorers.

Sampling uses common random numbers: every (prompt, sample) has its own seeded noise stream, the same under every
condition, so the unsteered and steered continuations of a prompt differ only through the steering.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from ..progress import tqdm

from . import stats
from ..lm import ablate
from ..lm.models import model_device

TEMPERATURE = 0.8  # sampling temperature of the continuations
TOP_K = 50  # sampling among the k most likely tokens
MINILM_TAU = 0.05  # temperature turning MiniLM's cosine similarities into label probabilities
DEGENERATE_DISTINCT = 0.5  # a reply of >= 8 tokens with fewer distinct bigrams than this share is repetitive
ALPHA = 0.05
BASELINE, OWN = -2, -1  # Condition.random for the unsteered model and for a named set's own neurons
OTHER_SCORER = {"smollm2-135m-instruct": "gemma3-270m", "gemma3-270m": "smollm2-135m-instruct"}
FALLBACK_SCORER = "smollm2-135m-instruct"
GEN_CACHE, SCORE_CACHE = "steer_generations.jsonl", "steer_scores.jsonl"  # under run_dir/cache
SPEED_FILE = "steer_speed.json"  # seconds per condition last measured, for the budget of a resumed run
OPENINGS = (  # neutral openings in the book's dialogue format; {topic} from topics the run never used
    "A: So, how did the meeting about {topic} go?\nB:",
    "A: What did you end up deciding about {topic}?\nB:",
    "A: I saw the email about {topic}. What happened?\nB:",
    "A: Did you get a chance to look into {topic} this week?\nB:",
    "A: So what's the latest on the {topic} thing?\nB:",
    "A: You were talking to your sister about {topic}, right? How did that go?\nB:",
    "A: Tell me about the call regarding {topic}.\nB:",
    "A: How was the afternoon? Still working on {topic}?\nB:",
)


# ---------------------------------------------------------------- prompts

def run_topics(run_dir: str | Path) -> set[str]:
    """Every topic of the run's stage-1 data (train and eval), lower-cased."""
    from ..dataset.data import load_splits
    dd = load_splits(run_dir)
    return {str(t).lower() for split in dd.values() for t in split["topic"]}


def neutral_prompts(n: int, seed: int, exclude: set[str]) -> list[str]:
    """n seeded neutral openings, each about a different topic that the run's data never used."""
    from ..dataset.data import load_topics
    pool = [t for t in dict.fromkeys(load_topics("all")) if t.lower() not in exclude]
    if n > len(pool):
        raise ValueError(f"steer_prompts: only {len(pool)} unused topics are left, asked for {n}")
    topics = random.Random(f"steer-prompts|{seed}").sample(pool, n)
    return [OPENINGS[i % len(OPENINGS)].format(topic=t) for i, t in enumerate(topics)]


# ---------------------------------------------------------------- scorers

def same_model(a: str, b: str) -> bool:
    """Whether two model specs name the same model (equal names, or the same file or folder)."""
    if a.strip().lower() == b.strip().lower():
        return True
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    return pa.exists() and pb.exists() and pa.resolve() == pb.resolve()


def resolve_scorer(model: str, scorer: str) -> str | None:
    """The LM label scorer's spec: auto = the other embedded model (SmolLM2 <-> Gemma-3), none = MiniLM only."""
    if scorer == "none":
        return None
    spec = OTHER_SCORER.get(model, FALLBACK_SCORER) if scorer == "auto" else scorer
    if scorer == "auto" and same_model(spec, model):
        spec = "gemma3-270m"
    check_scorer(model, spec)
    return spec


def check_scorer(model: str, scorer: str) -> None:
    """A scorer must never be the steered model: one clear error otherwise."""
    if same_model(model, scorer):
        raise ValueError(f"steer_scorer: {scorer!r} is the steered model; the emotion of its continuations must be "
                         "read by another model (auto, none, or another model spec)")


def softmax(x: np.ndarray, tau: float = 1.0) -> np.ndarray:
    """Row-wise softmax of x / tau."""
    z = np.asarray(x, dtype=float) / tau
    z = np.exp(z - z.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


def minilm_scorer(emotions: list[str]) -> Callable[[list[str]], np.ndarray]:
    """[N, emotions] probabilities from MiniLM's prototype similarities (softmax at MINILM_TAU)."""
    from ..dataset.annotate import minilm_similarities
    sims = minilm_similarities(emotions)
    return lambda texts: softmax(sims(texts), MINILM_TAU)


def lm_scorer(spec: str, emotions: list[str], p: dict, steered=None) -> Callable[[list[str]], np.ndarray]:
    """[N, emotions] probabilities from another LM's calibrated label scores (softmax over the labels); refuses the
    steered model (by spec, and by object when given)."""
    from ..lm import classify, models, prompts
    check_scorer(p["model"], spec)
    model, tok = models.load_model(spec, p["dtype"], p["device"], None, p["seed"])
    if steered is not None and model is steered:
        raise AssertionError("steering scorer: the scorer is the steered model object")
    chat = prompts.use_chat("auto", models.is_instruct(spec, tok), tok)
    clf = classify.make_classifier(model, tok, emotions, chat, 0, None, p["batch_size"], True)
    return lambda texts: softmax(classify.label_scores(clf, texts))


def load_scorers(p: dict, steered=None) -> dict[str, Callable[[list[str]], np.ndarray]]:
    """The scorers of the run: the other model's label scorer (first: the primary) and MiniLM."""
    out = {}
    spec = resolve_scorer(p["model"], p["steer_scorer"])
    if spec is not None:
        out[f"lm:{spec}"] = lm_scorer(spec, p["emotions"], p, steered)
    out["minilm"] = minilm_scorer(p["emotions"])
    return out


# ---------------------------------------------------------------- generation

def stop_ids(tok) -> set[int]:
    """Token ids that end B's turn: any token holding a newline, and end-of-sequence."""
    pieces = tok.convert_ids_to_tokens(list(range(len(tok))))
    out = {i for i, s in enumerate(pieces) if s and ("\n" in s or "Ċ" in s)}
    if tok.eos_token_id is not None:
        out.add(int(tok.eos_token_id))
    return out


def row_generator(seed: int, prompt: int, sample: int = 0) -> torch.Generator:
    """The noise stream of one (prompt, sample): the same under every condition (common random numbers)."""
    h = int.from_bytes(hashlib.sha1(f"steer|{seed}|{prompt}|{sample}".encode()).digest()[:7], "big")
    return torch.Generator().manual_seed(h)


def sample_next(logits: torch.Tensor, gens: list[torch.Generator]) -> torch.Tensor:
    """[B] next tokens: Gumbel-max over each row's top-k logits at TEMPERATURE, noise from the row's generator."""
    v, idx = logits.float().topk(min(TOP_K, logits.shape[-1]), dim=-1)
    u = torch.stack([torch.rand(v.shape[1], generator=g) for g in gens]).clamp(1e-12, 1 - 1e-7)
    pick = (v.cpu() / TEMPERATURE - torch.log(-torch.log(u))).argmax(1)
    return idx.cpu().gather(1, pick[:, None]).squeeze(1)


@torch.inference_mode()
def sample_batch(model, tok, prompt_ids: list[list[int]], gens: list[torch.Generator], max_new_tokens: int,
                 stops: set[int]) -> list[list[int]]:
    """New token ids of each left-padded row, up to max_new_tokens or a stop token (kept)."""
    B, T = len(prompt_ids), max(map(len, prompt_ids))
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    ids = torch.full((B, T), pad, dtype=torch.long)
    attn = torch.zeros((B, T), dtype=torch.long)
    for r, x in enumerate(prompt_ids):
        ids[r, T - len(x):], attn[r, T - len(x):] = torch.tensor(x), 1
    dev = model_device(model)
    pos = (attn.cumsum(1) - 1).clamp(min=0)
    out = model(input_ids=ids.to(dev), attention_mask=attn.to(dev), position_ids=pos.to(dev), use_cache=True,
                logits_to_keep=1)
    nxt_pos = attn.sum(1, keepdim=True)
    new: list[list[int]] = [[] for _ in range(B)]
    done = [False] * B
    for step in range(max_new_tokens):
        toks = sample_next(out.logits[:, -1], gens)
        for r, t in enumerate(toks.tolist()):
            if not done[r]:
                new[r].append(t)
                done[r] = t in stops
        if all(done) or step == max_new_tokens - 1:
            break
        attn = torch.cat([attn, torch.ones((B, 1), dtype=torch.long)], 1)
        out = model(input_ids=toks[:, None].to(dev), attention_mask=attn.to(dev), position_ids=nxt_pos.to(dev),
                    cache=out.cache, use_cache=True)
        nxt_pos = nxt_pos + 1
    return new


def reply(tok, new_ids: list[int], stops: set[int]) -> tuple[str, list[int]]:
    """B's reply (text up to the first newline, stripped) and its token ids (before the first stop token)."""
    kept = []
    for t in new_ids:
        if t in stops:
            break
        kept.append(t)
    return tok.decode(kept, skip_special_tokens=True).split("\n")[0].strip(), kept


@torch.inference_mode()
def perplexity(model, prompt_ids: list[list[int]], cont_ids: list[list[int]], pad: int) -> np.ndarray:
    """[N] perplexity of each continuation given its prompt under the model as it is (NaN for an empty one); rows
    are left-padded so every continuation ends the row, and logits are computed for the last positions only."""
    k = max(map(len, cont_ids), default=0)
    if k == 0:
        return np.full(len(cont_ids), np.nan)
    seqs = [a + b for a, b in zip(prompt_ids, cont_ids)]
    T = max(map(len, seqs))
    ids = torch.full((len(seqs), T), pad, dtype=torch.long)
    attn = torch.zeros_like(ids)
    for r, x in enumerate(seqs):
        ids[r, T - len(x):], attn[r, T - len(x):] = torch.tensor(x), 1
    dev = model_device(model)
    pos = (attn.cumsum(1) - 1).clamp(min=0)
    logits = model(input_ids=ids.to(dev), attention_mask=attn.to(dev), position_ids=pos.to(dev),
                   logits_to_keep=k + 1).logits[:, :k]  # position T-k-1+j predicts token T-k+j
    n = torch.tensor([len(b) for b in cont_ids])
    m = torch.arange(k)[None, :] >= (k - n)[:, None]  # each row's continuation: its last n tokens
    lp = torch.log_softmax(logits[m.to(dev)].float(), -1)
    tok_lp = torch.zeros(m.shape)
    tok_lp[m] = lp.gather(1, ids[:, T - k:][m].to(dev)[:, None]).squeeze(1).cpu()
    nll = -tok_lp.sum(1) / n.clamp(min=1)
    return np.where(n.numpy() > 0, np.exp(nll.numpy()), np.nan)


def degenerate(text: str, ids: list[int]) -> str:
    """'empty', 'repetition' (>= 8 tokens, distinct bigrams below DEGENERATE_DISTINCT of all) or '' (fine)."""
    if not text.strip():
        return "empty"
    bigrams = list(zip(ids, ids[1:]))
    if len(ids) >= 8 and len(set(bigrams)) < DEGENERATE_DISTINCT * len(bigrams):
        return "repetition"
    return ""


# ---------------------------------------------------------------- doses: pushes of the same size

DIRECTION_SET, PROMPT_SET = "direction", "prompt"
INSTRUCTION = "Reply as someone who feels {emotion}.\n"  # the prompting ceiling's instruction, before the opening
PPL_FACTOR_NOTE = ("the test dose of an intervention is the largest dose of steer_doses at which the median over its "
                   "own replies (every emotion and prompt) of the reply's perplexity over the unsteered reply's on the "
                   "same prompt and noise (both under the unsteered model) stays within steer_ppl_factor")


def direction_layer(n_layers: int) -> int:
    """The decoder layer the direction pushes are added after: the middle one (fixed in advance)."""
    return n_layers // 2


def down_weights(model) -> list[torch.Tensor]:
    """[H, d_ff] float32 W_down of every FFN layer (on the CPU)."""
    from ..lm.models import ffn_layers
    return [m.down_proj.weight.detach().float().cpu() for m in ffn_layers(model)]


@torch.no_grad()
def written(norm, m: torch.Tensor, v: torch.Tensor, c: float) -> float:
    """Mean over positions of ||norm(m + c v) - norm(m)||: the push a post-FFN norm lets into the stream."""
    return float((norm(m + c * v) - norm(m)).float().norm(dim=-1).mean())


def normed_scale(norm, m: torch.Tensor, v: torch.Tensor, target: float, steps: int = 40) -> float:
    """The c >= 0 at which written(norm, m, v, c) = target, by doubling then bisection; where the norm caps the push
    below target (it saturates at ||norm(v) - norm(m)||), the c of the largest push found."""
    if target <= 0:
        return 0.0
    hi = target / max(float(v.norm()), 1e-12)
    best, best_f = hi, written(norm, m, v, hi)
    for _ in range(60):
        if best_f >= target:
            break
        hi *= 2
        f = written(norm, m, v, hi)
        if f <= best_f * (1 + 1e-6):  # saturated: the norm lets no more through
            return best
        best, best_f = hi, f
    if best_f < target:
        return best
    lo = 0.0
    for _ in range(steps):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if written(norm, m, v, mid) < target else (lo, mid)
    return (lo + hi) / 2


@torch.inference_mode()
def ffn_outputs(model, prompt_ids: list[list[int]]) -> list[torch.Tensor]:
    """Per layer, [T, H] float32 output of down_proj over the prompts' tokens after the first (the unsteered model,
    on its device): the m that a post-FFN norm sees."""
    from ..lm.models import ffn_layers
    mlps, dev = ffn_layers(model), model_device(model)
    got: list[list[torch.Tensor]] = [[] for _ in mlps]
    hooks = [m.down_proj.register_forward_hook(lambda mod, a, o, l=l: got[l].append(o[0, 1:].float()))
             for l, m in enumerate(mlps)]
    try:
        for ids in prompt_ids:
            model(input_ids=torch.tensor([ids], device=dev))
    finally:
        for h in hooks:
            h.remove()
    return [torch.cat(g) for g in got]


def neuron_push(W: list[torch.Tensor], sd: torch.Tensor, neurons: dict[int, list[int]], size: float,
                norms: list | None = None, outs: list[torch.Tensor] | None = None) -> dict[int, torch.Tensor]:
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
def interventions(model, pushes: list[dict[int, torch.Tensor]], vectors: list[torch.Tensor | None], layer: int,
                  n_items: int):
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
        return ("unsteered" if self.random == BASELINE else "prompt" if self.set == PROMPT_SET else
                ("direction" if self.set == DIRECTION_SET else "own") if self.random == OWN else
                ("random direction" if self.set == DIRECTION_SET else "random"))

    def key(self, context: str) -> str:
        """Cache key: what the continuations depend on (the neurons themselves, the dose and the context hash)."""
        blob = json.dumps([sorted((int(k), sorted(v)) for k, v in self.neurons.items()), float(self.dose), context]
                          + ([self.extra] if self.extra else []))
        return f"{self.set}|{self.emotion}|d={self.dose:g}|r={self.random}|{hashlib.sha1(blob.encode()).hexdigest()[:16]}"


def baseline() -> Condition:
    """The unsteered model (dose 0): shared by every set and emotion."""
    return Condition("none", "none", 0.0, BASELINE)


def own_conditions(sets: dict, emotions: list[str], doses: list[float]) -> list[Condition]:
    """Every named set x emotion x positive dose, own neurons."""
    return [Condition(name, e, float(a), OWN, ns.by_layer(e)) for name, ns in sets.items() for e in emotions
            for a in doses if a > 0 and sum(map(len, ns.by_layer(e).values()))]


def direction_conditions(emotions: list[str], doses: list[float], randoms: range | list[int] = ()) -> list[Condition]:
    """The emotion's direction (OWN) at every positive dose, or random directions j at one dose each."""
    if randoms:
        return [Condition(DIRECTION_SET, e, float(doses[0]), j, {}, f"random direction {j}") for j in randoms
                for e in emotions]
    return [Condition(DIRECTION_SET, e, float(a), OWN, {}, "emotion direction") for e in emotions for a in doses
            if a > 0]


def prompt_conditions(emotions: list[str]) -> list[Condition]:
    """The prompting ceiling: the instruction to reply with the emotion before the same openings."""
    return [Condition(PROMPT_SET, e, 0.0, OWN, {}, INSTRUCTION.format(emotion=e)) for e in emotions]


def random_conditions(sets: dict, emotions: list[str], dose_of: dict[str, float], n: int, firing_of: Callable,
                      spread: torch.Tensor | None, seed: int) -> list[Condition]:
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
    return [Condition(name, e, float(dose_of[name]), j, families.image(maps[j], m))
            for j in range(n) for name, (own, maps) in per_set.items() for e, m in own.items()]


def context_hash(p: dict, prompts: list[str], sd: torch.Tensor, samples: int = 1, post_norm: bool = False) -> str:
    """What every condition's continuations depend on besides its neurons and dose (v2: doses in stream norms; a
    model with post-FFN norms is also keyed by how its pushes are measured)."""
    from .attribution import neuron_hash
    blob = json.dumps([p["model"], p["dtype"], p["seed"], p["steer_max_new_tokens"], TEMPERATURE, TOP_K, prompts,
                       neuron_hash(sd), samples, "push-norm-v2"] + (["post-ffn-norm"] if post_norm else []))
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


# ---------------------------------------------------------------- running conditions

class Runner:
    """Generates, measures fluency and scores conditions in batches across conditions (one generate call carries
    many sets', directions' and prompts' rows), caching each condition as it finishes (an interrupted run resumes),
    and times them for the budget."""

    def __init__(self, model, tok, p: dict, prompts: list[str], sd: torch.Tensor, scorers: dict, cache_dir: Path,
                 samples: int = 1):
        from ..lm.classify import PredictionCache
        from ..lm.models import decoder_layers, post_ffn_norms
        self.model, self.tok, self.p, self.prompts, self.sd, self.scorers = model, tok, p, prompts, sd, scorers
        self.samples = samples
        self.stops = stop_ids(tok)
        self.bos = [tok.bos_token_id] if tok("x")["input_ids"][0] == tok.bos_token_id else []
        self.prompt_ids = [self.encode(x) for x in prompts]
        self.norms = post_ffn_norms(model)  # Gemma: the push is measured after them
        self.ctx = context_hash(p, prompts, sd, samples, self.norms is not None)
        cache_dir.mkdir(parents=True, exist_ok=True)
        self.gens = PredictionCache(cache_dir / GEN_CACHE)
        self.scores = PredictionCache(cache_dir / SCORE_CACHE)
        self.speed_file = cache_dir / SPEED_FILE
        self.seconds, self.done_new = 0.0, 0
        self.W = down_weights(model)
        self.layer = direction_layer(len(decoder_layers(model)))
        self.unit = stream_norm(model, self.prompt_ids, self.layer)  # one dose unit: the stream's median norm
        self.outs = ffn_outputs(model, self.prompt_ids) if self.norms is not None else None
        self.directions: dict[str, torch.Tensor] | None = None  # unit emotion directions at self.layer

    def encode(self, text: str) -> list[int]:
        return self.bos + self.tok(text, add_special_tokens=False)["input_ids"]

    def rows(self) -> list[tuple[int, int]]:
        """(prompt, sample) of each row of a condition."""
        return [(i, k) for i in range(len(self.prompts)) for k in range(self.samples)]

    def cached(self, c: Condition) -> bool:
        """Whether a condition's continuations and every score are cached."""
        key = c.key(self.ctx)
        return key in self.gens.rows and all(f"{s}|{key}" in self.scores.rows for s in self.scorers)

    def per_condition(self) -> float | None:
        """Measured seconds per condition: this session's, else the last session's (None when never measured)."""
        if self.done_new:
            return self.seconds / self.done_new
        from ..safeio import read_json
        try:
            got = read_json(self.speed_file, "steering speed").get(self.ctx) if self.speed_file.exists() else None
        except (ValueError, AttributeError):
            return None
        return float(got) if isinstance(got, (int, float)) and math.isfinite(got) and got > 0 else None

    def run(self, conds: list[Condition], desc: str = "steering", per_batch: int | None = None) -> None:
        """Compute every uncached condition, several per generate call (rows = 4 x batch_size)."""
        todo = [c for c in conds if not self.cached(c)]
        per_batch = per_batch or max(1, (4 * self.p["batch_size"]) // len(self.rows()))
        for s in tqdm(range(0, len(todo), per_batch), desc=desc, disable=not todo):
            t = time.time()
            self._run_group(todo[s:s + per_batch])
            self.seconds += time.time() - t
            self.done_new += len(todo[s:s + per_batch])
        if todo:
            from ..safeio import atomic_write_json
            atomic_write_json(self.speed_file, {self.ctx: round(self.per_condition(), 3)})

    def push(self, c: Condition) -> tuple[dict[int, torch.Tensor], torch.Tensor | None]:
        """(neuron amounts by layer, residual-stream vector or None) of a condition; both of norm dose x unit."""
        size = c.dose * self.unit
        if c.set == DIRECTION_SET:
            if c.random == OWN:
                if self.directions is None:
                    raise RuntimeError("the emotion directions are not loaded (Runner.load_directions)")
                u = self.directions[c.emotion]
            else:
                u = random_direction(self.W[0].shape[0], self.p["seed"], c.emotion, c.random)
            return {}, u * size
        if c.neurons and size > 0:
            return neuron_push(self.W, self.sd, c.neurons, size, self.norms, self.outs), None
        return {}, None

    def load_directions(self, run_dir: str | Path) -> bool:
        """Load the unit emotion directions at the middle layer; False when the run has none."""
        if not (Path(run_dir) / "directions.safetensors").exists():
            return False
        from ..identify.directions import load_directions, load_meta
        U, names = load_directions(run_dir).float(), load_meta(run_dir)["emotions"]
        self.directions = {e: U[names.index(e), self.layer] / U[names.index(e), self.layer].norm()
                           for e in self.p["emotions"] if e in names}
        return True

    def _run_group(self, group: list[Condition]) -> None:
        """Generate one batch of conditions with per-row pushes and prompts, then fluency and scores per condition."""
        rows = self.rows()
        keys = [c.key(self.ctx) for c in group]
        need = [i for i, k in enumerate(keys) if k not in self.gens.rows]
        if need:
            plain = [self.prompt_ids[i] for _ in need for i, _ in rows]
            ids = [self.encode(group[n].extra + self.prompts[i]) if group[n].set == PROMPT_SET else self.prompt_ids[i]
                   for n in need for i, _ in rows]
            gens = [row_generator(self.p["seed"], i, k) for _ in need for i, k in rows]
            pushes = [self.push(group[n]) for n in need]
            with interventions(self.model, [a for a, _ in pushes], [v for _, v in pushes], self.layer, len(rows)):
                new = sample_batch(self.model, self.tok, ids, gens, self.p["steer_max_new_tokens"], self.stops)
            out = [reply(self.tok, x, self.stops) for x in new]
            pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else 0
            ppl = perplexity(self.model, plain, [k for _, k in out], pad)  # no hooks: the unsteered model
            for n, i in enumerate(need):
                part = slice(n * len(rows), (n + 1) * len(rows))
                recs = [{"text": t, "n_tokens": len(k), "ppl": None if not np.isfinite(q) else round(float(q), 4),
                         "degenerate": degenerate(t, k)} for (t, k), q in zip(out[part], ppl[part])]
                self.gens.get_or_run(keys[i], lambda recs=recs: recs)
        for name, fn in self.scorers.items():
            miss = [k for k in keys if f"{name}|{k}" not in self.scores.rows]
            if not miss:
                continue
            texts = [self.dialogue(i, rec["text"]) for k in miss for (i, _), rec in zip(rows, self.gens.rows[k])]
            probs = fn(texts)
            for n, k in enumerate(miss):
                part = probs[n * len(rows):(n + 1) * len(rows)]
                self.scores.get_or_run(f"{name}|{k}", lambda part=part: np.round(part, 5).tolist())

    def dialogue(self, prompt: int, text: str) -> str:
        """The two-turn dialogue the scorers read: the neutral opening and B's reply (never the instruction)."""
        return f"{self.prompts[prompt]} {text}".rstrip()

    def records(self, conds: list[Condition]) -> pd.DataFrame:
        """One row per condition x (prompt, sample) x scorer: text, fluency and the scorer's probabilities."""
        out = []
        E = self.p["emotions"]
        for c in conds:
            key = c.key(self.ctx)
            gens = self.gens.rows[key]
            for name in self.scorers:
                probs = np.asarray(self.scores.rows[f"{name}|{key}"])
                for (i, k), g, pr in zip(self.rows(), gens, probs):
                    target = E.index(c.emotion) if c.emotion in E else -1
                    out.append({"kind": c.kind, "set": c.set, "emotion": c.emotion, "dose": c.dose,
                                "random": c.random, "prompt": i, "sample": k, "scorer": name, "text": g["text"],
                                "ppl": np.nan if g["ppl"] is None else g["ppl"], "degenerate": g["degenerate"],
                                "top": E[int(np.argmax(pr))], **{f"p_{e}": float(v) for e, v in zip(E, pr)},
                                "target_p": float(pr[target]) if target >= 0 else np.nan})
        return pd.DataFrame(out)


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


def choose_random_sets(runner: Runner, rand: list[Condition], n_max: int, budget_s: float, elapsed_s: float,
                       floor: int = 20) -> int:
    """The most random families per test (min(floor, n_max) to n_max) whose uncached conditions fit the time left,
    at the measured seconds per condition (the first min(floor, n_max) are always run: a verdict needs them)."""
    per = runner.per_condition()
    least = min(floor, n_max)
    if per is None:
        return n_max
    best = least
    for k in range(least, n_max + 1):
        cost = sum(1 for c in rand if c.random < k and not runner.cached(c)) * per
        if elapsed_s + cost <= budget_s:
            best = k
    return best


# ---------------------------------------------------------------- fluency, degenerate replies and the test dose

def mark_degenerate(rec: pd.DataFrame, ppl_cap: float) -> tuple[pd.DataFrame, float]:
    """(records with `bad`: the reply is empty, repetitive or has perplexity above ppl_cap x the unsteered model's
    median; the perplexity cap)."""
    base = rec[rec.random == BASELINE].drop_duplicates(["prompt", "sample"])
    cap = ppl_cap * float(np.nanmedian(base["ppl"])) if base["ppl"].notna().any() else np.inf
    rec = rec.copy()
    high = rec["ppl"].fillna(np.inf) > cap
    rec["bad"] = np.where(rec["degenerate"].astype(str) != "", rec["degenerate"].astype(str),
                          np.where(high & rec["ppl"].notna(), "perplexity", ""))
    return rec, cap


def test_doses(rec: pd.DataFrame, names: list[str], doses: list[float], factor: float) -> pd.DataFrame:
    """Per intervention (named set or the direction) and dose: `ratio`, the median over its own replies (every emotion
    and prompt) of the reply's perplexity over the unsteered reply's on the same prompt and noise (paired by the
    common random numbers: a median of many paired ratios, not one over a median of a few unsteered replies), the
    medians beside it, and `chosen`: the largest dose with ratio <= factor (the pre-specified, fluency-matched test
    dose; none when no positive dose keeps it)."""
    first = rec[rec.scorer == rec.scorer.iloc[0]]
    plain = first[first.random == BASELINE]
    base = float(np.nanmedian(plain["ppl"]))
    base_of = plain.drop_duplicates(["prompt", "sample"]).set_index(["prompt", "sample"])["ppl"].astype(float)
    rows = []
    for name in names:
        for a in sorted(d for d in doses if d > 0):
            g = first[(first["set"] == name) & (first.random == OWN) & (first.dose == a)]
            if g.empty:
                continue
            ppl = g["ppl"].astype(float).to_numpy()
            paired = ppl / base_of.reindex(list(zip(g.prompt, g["sample"]))).to_numpy()
            med = float(np.nanmedian(ppl)) if np.isfinite(ppl).any() else np.nan
            ratio = float(np.nanmedian(paired)) if np.isfinite(paired).any() else np.nan
            rows.append({"intervention": name, "dose": a, "median_ppl": med, "unsteered_median_ppl": base,
                         "ratio": ratio, "fluent": bool(ratio <= factor)})
    t = pd.DataFrame(rows, columns=["intervention", "dose", "median_ppl", "unsteered_median_ppl", "ratio", "fluent"])
    t["chosen"] = False
    for name, g in t.groupby("intervention", sort=False):
        ok = g[g.fluent]
        if len(ok):
            t.loc[ok.dose.idxmax(), "chosen"] = True
    return t


def chosen_doses(doses: pd.DataFrame) -> dict[str, float]:
    """intervention -> its test dose (only those with a fluent dose)."""
    c = doses[doses.chosen]
    return dict(zip(c.intervention, c.dose.astype(float)))


# ---------------------------------------------------------------- the continuous outcome and the tests

def effects(rec: pd.DataFrame, emotions: list[str], max_bad: float) -> pd.DataFrame:
    """Per scorer x condition (set, emotion, dose, random): d_p, the mean over prompts of the reply's P(target)
    minus the unsteered reply's P(target) on the same prompt (paired: the same noise), with each degenerate reply's
    change counted as 0 (never a success); bad_share; excluded = more than max_bad of the replies degenerate (the
    condition is reported, never tested); median perplexity."""
    r = rec[rec.random != BASELINE]
    base = rec[rec.random == BASELINE]
    rows = []
    for scorer, g_s in r.groupby("scorer", sort=False):
        b = base[base.scorer == scorer].set_index(["prompt", "sample"])
        for (kind, name, e, dose, rnd), g in g_s.groupby(["kind", "set", "emotion", "dose", "random"], sort=False):
            bp = b.loc[list(zip(g.prompt, g["sample"])), f"p_{e}"].to_numpy()
            bad = (g["bad"] != "").to_numpy()
            d = np.where(bad, 0.0, g["target_p"].to_numpy() - bp)
            rows.append({"scorer": scorer, "kind": kind, "set": name, "emotion": e, "dose": dose, "random": rnd,
                         "n": len(g), "target_p": float(g["target_p"].mean()), "baseline_p": float(bp.mean()),
                         "d_p": float(d.mean()), "bad_share": float(bad.mean()),
                         "excluded": bool(bad.mean() > max_bad),
                         "median_ppl": float(np.nanmedian(g["ppl"])) if g["ppl"].notna().any() else np.nan})
    return pd.DataFrame(rows)


def _unit(verdict: str) -> str:
    return verdict.replace(" nat", " in P(target)")


def _cells(eff: pd.DataFrame, scorer: str, name: str, dose: float, emotions: list[str]
           ) -> tuple[pd.Series, pd.DataFrame, list[str]]:
    """(own d_p by emotion, random d_p [family x emotion], excluded condition labels) of one set at one dose, the
    excluded (degenerate) conditions removed."""
    g = eff[(eff.scorer == scorer) & (eff["set"] == name) & np.isclose(eff.dose, dose)]
    out = [f"{r.kind} {r.emotion}" + (f" #{r.random}" if r.random >= 0 else "") for r in g[g.excluded].itertuples()]
    ok = g[~g.excluded]
    own = ok[ok.random == OWN].set_index("emotion")["d_p"].reindex([e for e in emotions])
    rnd = ok[ok.random >= 0].pivot_table(index="random", columns="emotion", values="d_p", aggfunc="first")
    return own, rnd, out


def pooled_table(eff: pd.DataFrame, dose_of: dict[str, float], emotions: list[str], delta: float,
                 power_delta: float, alpha: float = ALPHA) -> pd.DataFrame:
    """The confirmatory test, per scorer and intervention at its test dose: the mean over emotions of the own d_p
    against the same mean for each random family (neuron sets) or random-direction family (the direction), by
    emolib.causal.pooled's test_row (t prediction test, TOST equivalence within +-delta); Holm over the named sets
    within each scorer (the direction, the positive control, apart). Emotions whose own condition is degenerate are
    left out, and so is every family with a degenerate condition among the kept emotions; both are listed."""
    from . import pooled
    rows = []
    for scorer in dict.fromkeys(eff.scorer):
        names = [n for n in dose_of if n != DIRECTION_SET]
        for name in [n for n in dose_of if n == DIRECTION_SET] + names:
            own, rnd, excl = _cells(eff, scorer, name, dose_of[name], emotions)
            keep = [e for e in emotions if np.isfinite(own.get(e, np.nan)) and e in rnd.columns]
            fams = rnd[keep].dropna() if keep else rnd.iloc[:0]
            dropped = len(rnd) - len(fams)
            m = max(1, len(names)) if name != DIRECTION_SET else 1
            row = test_row_safe(float(own[keep].mean()) if keep else np.nan, fams.mean(axis=1).to_numpy(), delta, m,
                                alpha, power_delta)
            rows.append({"scorer": scorer, "intervention": name,
                         "role": "positive control" if name == DIRECTION_SET else "test",
                         "dose": dose_of[name], "n_emotions": len(keep), "emotions": ", ".join(keep),
                         "families_dropped": dropped, "excluded": "; ".join(excl), **row})
    t = pd.DataFrame(rows)
    if t.empty:  # no intervention kept fluency at any dose: nothing is tested
        return pd.DataFrame(columns=["scorer", "intervention", "role", "dose", "n_emotions", "own_minus_random",
                                     "lo", "hi", "p", "p_holm", "p_equivalence", "p_equivalence_holm", "verdict"])
    for c in ("p", "p_equivalence", "own_minus_random", "lo", "hi"):  # absent when no row could be tested
        if c not in t:
            t[c] = np.nan
    parts = [pooled.decide(g, delta, alpha) for _, g in t.groupby(["scorer", "role"], sort=False)]
    out = pd.concat(parts).reindex(t.index)
    out["verdict"] = out["verdict"].map(_unit)
    return out


def test_row_safe(own: float, null: np.ndarray, delta: float, m: int, alpha: float, power_delta: float) -> dict:
    """pooled.test_row, with the random SD floored away from 0 in power (a null without spread tests nothing)."""
    from . import pooled
    null = np.asarray(null, dtype=float)
    if len(null[np.isfinite(null)]) >= 2 and np.nanstd(null) == 0:
        return {"own": own, "n_random": int(np.isfinite(null).sum()), "random_mean": float(np.nanmean(null)),
                "random_sd": 0.0}
    return pooled.test_row(own, null, delta, m, alpha, power_delta)


BOTH_SCORERS_RULE = ("a claim needs both scorers: 'effect beyond random' only when both scorers' pooled tests reject "
                     "(Holm) in the same direction; 'equivalent to random' only when both show equivalence; "
                     "'scorers disagree' when one rejects and the other does not (or they reject in opposite "
                     "directions); otherwise 'undecided'. With one scorer no claim is made.")


def claims(pooled_t: pd.DataFrame, n_scorers: int) -> pd.DataFrame:
    """Per intervention: the claim under the both-scorers rule (fixed in advance; BOTH_SCORERS_RULE)."""
    rows = []
    for name, g in pooled_t.groupby("intervention", sort=False):
        v = g["verdict"].astype(str).tolist()
        gains, drops = [x.endswith("(gain)") for x in v], [x.endswith("(drop)") for x in v]
        eq = [x.startswith("equivalent") for x in v]
        if n_scorers < 2 or len(g) < 2:
            claim = "no claim (one scorer only)"
        elif all(gains):
            claim = "effect beyond random (gain)"
        elif all(drops):
            claim = "effect beyond random (drop)"
        elif any(gains) or any(drops):
            claim = "scorers disagree"
        elif all(eq):
            claim = "equivalent to random"
        elif any(x == "not tested" for x in v):
            claim = "not tested"
        else:
            claim = "undecided"
        rows.append({"intervention": name, "role": g["role"].iloc[0], "dose": g["dose"].iloc[0],
                     **{f"verdict [{s}]": x for s, x in zip(g.scorer, v)}, "claim": claim})
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=["intervention", "role", "dose", "claim"])


def per_emotion_table(eff: pd.DataFrame, dose_of: dict[str, float], emotions: list[str], delta: float,
                      power_delta: float, alpha: float = ALPHA) -> pd.DataFrame:
    """The secondary tests: per scorer, intervention and emotion, own d_p against its random sets' (Holm within each
    scorer and intervention); degenerate conditions left out."""
    from . import pooled
    parts = []
    for scorer in dict.fromkeys(eff.scorer):
        for name, dose in dose_of.items():
            own, rnd, _ = _cells(eff, scorer, name, dose, emotions)
            rows = []
            for e in emotions:
                null = rnd[e].dropna().to_numpy() if e in rnd.columns else np.array([])
                m = len(emotions)
                rows.append({"scorer": scorer, "intervention": name, "emotion": e, "dose": dose,
                             **test_row_safe(float(own.get(e, np.nan)), null, delta, m, alpha, power_delta)})
            t = pd.DataFrame(rows)
            for c in ("p", "p_equivalence", "own_minus_random", "lo", "hi"):
                if c not in t:
                    t[c] = np.nan
            parts.append(pooled.decide(t, delta, alpha))
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if len(out):
        out["verdict"] = out["verdict"].map(_unit)
    return out


def tradeoff_table(eff: pd.DataFrame, dose_of: dict[str, float]) -> pd.DataFrame:
    """Per scorer: target-emotion score (d_p, mean over emotions) and fluency (median perplexity) of each
    intervention at its test dose, each of its random families, and the prompting ceiling; degenerate shares."""
    rows = []
    for scorer in dict.fromkeys(eff.scorer):
        e_s = eff[eff.scorer == scorer]
        for name, dose in dose_of.items():
            g = e_s[(e_s["set"] == name) & np.isclose(e_s.dose, dose)]
            for rnd, x in g.groupby("random", sort=True):
                rows.append({"scorer": scorer, "intervention": name, "kind": x.kind.iloc[0], "random": rnd,
                             "dose": dose, "d_p": float(x.d_p.mean()), "median_ppl": float(x.median_ppl.median()),
                             "bad_share": float(x.bad_share.mean()), "excluded": int(x.excluded.sum())})
        pr = e_s[e_s.kind == "prompt"]
        if len(pr):
            rows.append({"scorer": scorer, "intervention": PROMPT_SET, "kind": "prompt", "random": OWN, "dose": 0.0,
                         "d_p": float(pr.d_p.mean()), "median_ppl": float(pr.median_ppl.median()),
                         "bad_share": float(pr.bad_share.mean()), "excluded": int(pr.excluded.sum())})
    return pd.DataFrame(rows)


def beside_table(eff: pd.DataFrame, dose_of: dict[str, float]) -> pd.DataFrame:
    """Per scorer and emotion: the prompting ceiling beside every steered condition at its test dose (own d_p; the
    random families' mean), with median perplexities."""
    rows = []
    for (scorer, e), g in eff.groupby(["scorer", "emotion"], sort=False):
        row = {"scorer": scorer, "emotion": e}
        pr = g[g.kind == "prompt"]
        row["prompt d_p"] = float(pr.d_p.iloc[0]) if len(pr) else np.nan
        row["prompt ppl"] = float(pr.median_ppl.iloc[0]) if len(pr) else np.nan
        for name, dose in dose_of.items():
            x = g[(g["set"] == name) & np.isclose(g.dose, dose)]
            o, r = x[x.random == OWN], x[x.random >= 0]
            row[f"{name} d_p"] = float(o.d_p.iloc[0]) if len(o) else np.nan
            row[f"{name} ppl"] = float(o.median_ppl.iloc[0]) if len(o) else np.nan
            row[f"{name} random d_p"] = float(r.d_p.mean()) if len(r) else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def dose_table(rec: pd.DataFrame, emotions: list[str], doses: list[float], n_boot: int, seed: int) -> pd.DataFrame:
    """Descriptive dose-response: per scorer x intervention x emotion x dose (0 = unsteered), mean P(target) and its
    change from dose 0 with a paired bootstrap 95% interval over prompts (the same noise per prompt everywhere)."""
    rows = []
    own = rec[(rec.random == OWN) & (rec.kind != "prompt")]
    for (scorer, name), _ in own.groupby(["scorer", "set"], sort=False):
        base = rec[(rec.scorer == scorer) & (rec.random == BASELINE)]
        for e in emotions:
            b = base[f"p_{e}"].to_numpy()
            for a in sorted(doses):
                x = b if a == 0 else own[(own.scorer == scorer) & (own["set"] == name) & (own.emotion == e)
                                         & np.isclose(own.dose, a)]["target_p"].to_numpy()
                if not len(x):
                    continue
                dp = stats.paired_delta(b, x, n_boot, seed=seed)
                rows.append({"scorer": scorer, "set": name, "emotion": e, "dose": a, "n": len(x),
                             "target_p": float(np.mean(x)), "d_p": dp.mean, "d_p_lo": dp.lo, "d_p_hi": dp.hi})
    return pd.DataFrame(rows)


def samples_table(rec: pd.DataFrame, emotions: list[str], doses: list[float], set_name: str, prompt: int = 0
                  ) -> pd.DataFrame:
    """One prompt's continuation per emotion (rows) and dose (columns) under an intervention (first scorer)."""
    r = rec[rec.scorer == rec.scorer.iloc[0]]
    base = r[(r.random == BASELINE) & (r.prompt == prompt) & (r["sample"] == 0)]
    out = {}
    for e in emotions:
        row = {}
        for a in sorted(doses):
            x = base if a == 0 else r[(r.random == OWN) & (r["set"] == set_name) & (r.emotion == e)
                                      & np.isclose(r.dose, a) & (r.prompt == prompt) & (r["sample"] == 0)]
            row[f"dose {a:g}"] = x["text"].iloc[0] if len(x) else ""
        pr = r[(r.kind == "prompt") & (r.emotion == e) & (r.prompt == prompt) & (r["sample"] == 0)]
        if len(pr):
            row["prompted"] = pr["text"].iloc[0]
        out[e] = row
    return pd.DataFrame(out).T


def _span(values, fmt: str) -> str:
    """'a' when every value formats alike, else 'a to b' (lowest to highest)."""
    lo, hi = fmt.format(min(values)), fmt.format(max(values))
    return lo if lo == hi else f"{lo} to {hi}"


def set_sd_table(sets: dict, sd: torch.Tensor, emotions: list[str]) -> pd.DataFrame:
    """Per set and emotion: neurons, and the median and largest activation SD among them (the shape of the push)."""
    rows = []
    for name, ns in sets.items():
        for e in emotions:
            v = [float(sd[layer, i]) for layer, idx in ns.by_layer(e).items() for i in idx]
            rows.append({"set": name, "emotion": e, "n_neurons": len(v),
                         "median_sd": float(np.median(v)) if v else np.nan, "max_sd": max(v) if v else np.nan})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- the stage

def activation_sd(run_dir: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """([L, D] mean, [L, D] SD) of each neuron's down_proj input on the scoring sequences (stage 3's pass)."""
    from . import attribution
    sums = attribution.load(run_dir)
    if sums is None:
        raise FileNotFoundError(f"{Path(run_dir) / attribution.STATS_FILE} not found: run notebook 03 for this run "
                                "first (its scoring pass stores each neuron's mean and SD)")
    return attribution.moments(sums)


def select_sets(p: dict) -> dict:
    """The named sets to steer: steer_sets, or every named set of neurons.json (iterated generically)."""
    from ..identify.neurons import named_sets
    sets = named_sets(p)
    wanted = p["steer_sets"] or list(sets)
    missing = [n for n in wanted if n not in sets]
    if missing:
        raise ValueError(f"steer_sets: {', '.join(missing)} not in {Path(p['run_dir']) / 'neurons.json'} "
                         f"(has {', '.join(sets)})")
    return {n: sets[n] for n in wanted}


def run_stage(runner: Runner, p: dict, sets: dict, spread: torch.Tensor) -> tuple[pd.DataFrame, dict]:
    """1. the unsteered model, the prompting ceiling, and every own set and the emotion direction at every dose;
    2. the test dose of each (fluency-matched, PPL_FACTOR_NOTE); 3. at it, random families (neuron sets) and random
    directions, min(20, steer_random_sets) to steer_random_sets per test as the budget allows. Returns the records
    and what was run."""
    from .effects import set_firing
    start, budget = time.time(), 60 * p["steer_budget_min"]
    E, doses = p["emotions"], p["steer_doses"]
    has_dir = runner.load_directions(p["run_dir"])
    first = ([baseline()] + prompt_conditions(E) + own_conditions(sets, E, doses)
             + (direction_conditions([e for e in E if e in runner.directions], doses) if has_dir else []))
    runner.run(first, "unsteered, prompted, own sets and directions")
    rec0 = runner.records(first)
    names = list(sets) + ([DIRECTION_SET] if has_dir else [])
    dose_t = test_doses(rec0, names, doses, p["steer_ppl_factor"])
    dose_of = chosen_doses(dose_t)
    n = p["steer_random_sets"]
    rand = random_conditions(sets, E, dose_of, n, lambda ns: set_firing(p, ns), spread, p["seed"])
    if DIRECTION_SET in dose_of:
        dirs = [e for e in E if e in runner.directions]
        rand += [c for j in range(n) for c in direction_conditions(dirs, [dose_of[DIRECTION_SET]], [j])]
    rand.sort(key=lambda c: c.random)
    least = [c for c in rand if c.random < min(20, n)]
    runner.run(least, f"random families and directions (first {min(20, n)})")
    k = choose_random_sets(runner, rand, n, budget, time.time() - start)
    runner.run([c for c in rand if c.random < k], f"random families and directions (up to {k})")
    elapsed = time.time() - start
    conds = first + [c for c in rand if c.random < k]
    info = {"n_random": k, "n_random_asked": n, "seconds": round(elapsed, 1), "budget_s": budget,
            "per_condition_s": runner.per_condition(), "n_conditions": len(conds), "unit": runner.unit,
            "layer": runner.layer, "doses": dose_t, "dose_of": dose_of, "directions": has_dir}
    return runner.records(conds), info


def budget_note(info: dict) -> str:
    """One line on what the budget allowed (from the stage's info)."""
    per = info["per_condition_s"]
    speed = f"{per:.2f} s per condition measured" if per else "every condition cached"
    cut = (f"; the budget cut the random families from {info['n_random_asked']} to {info['n_random']} per test"
           if info["n_random"] < info["n_random_asked"] else "")
    return (f"{info['n_conditions']} conditions, {info['n_random']} random families (and random directions) per test; "
            f"{info['seconds']:.0f} s of a {info['budget_s'] / 60:g}-minute budget ({speed}){cut}.")


def dose_note(info: dict, factor: float) -> str:
    """The pre-specified rule and the doses it chose."""
    chosen = ", ".join(f"{k}: {v:g}" for k, v in info["dose_of"].items()) or "none"
    missing = [n for n in info["doses"].intervention.unique() if n not in info["dose_of"]]
    return (f"One dose unit is the residual stream's median norm after decoder layer {info['layer']} over the "
            f"prompts' tokens ({info['unit']:.3g}). Rule, fixed in advance: {PPL_FACTOR_NOTE} "
            f"(steer_ppl_factor = {factor:g}). Test doses: {chosen}."
            + (f" Not tested (no positive dose kept fluency): {', '.join(missing)}." if missing else ""))


# ---------------------------------------------------------------- saving, the CLI and the widget

def save_csv(table: pd.DataFrame, run_dir: str | Path, name: str) -> Path:
    """Write a table to run_dir/name atomically."""
    from ..safeio import atomic_save
    path = Path(run_dir) / name
    atomic_save(path, lambda tmp: table.to_csv(tmp, index=False), base=run_dir)
    return path


def steer_text(model, tok, p: dict, neurons: dict[int, list[int]], dose: float, sd: torch.Tensor, prompt: str,
               n: int, scorers: dict) -> pd.DataFrame:
    """n sampled replies to one prompt with the neurons pushed up by dose SDs, each with every scorer's top label and
    P(target) columns per emotion, and its perplexity under the unsteered model."""
    stops = stop_ids(tok)
    bos = [tok.bos_token_id] if tok("x")["input_ids"][0] == tok.bos_token_id else []
    ids = bos + tok(prompt, add_special_tokens=False)["input_ids"]
    gens = [row_generator(p["seed"], 0, k) for k in range(n)]
    with ablate.ablate_rows(model, [neurons], n, mode="add", means=sd, scales=[float(dose)]):
        new = sample_batch(model, tok, [ids] * n, gens, p["steer_max_new_tokens"], stops)
    out = [reply(tok, x, stops) for x in new]
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    table = pd.DataFrame({"reply": [t for t, _ in out],
                          "ppl": perplexity(model, [ids] * n, [k for _, k in out], pad),
                          "degenerate": [degenerate(t, k) for t, k in out]})
    texts = [f"{prompt} {t}".rstrip() for t, _ in out]
    for name, fn in scorers.items():
        probs = fn(texts)
        table[f"{name} top"] = [p["emotions"][int(j)] for j in probs.argmax(1)]
        for j, e in enumerate(p["emotions"]):
            table[f"{name} P({e})"] = probs[:, j]
    return table


def interactive() -> bool:
    """Whether the notebook runs in a live Jupyter kernel (not headless: the runner sets EMOLIB_HEADLESS)."""
    import os
    if os.environ.get("EMOLIB_HEADLESS") == "1":
        return False
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    ip = get_ipython()
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"


def widget(model, tok, p: dict, sets: dict, sd: torch.Tensor, scorers: dict, prompts: list[str]):
    """An ipywidgets form: emotion, set, dose, prompt -> three sampled replies and their scores."""
    import ipywidgets as w
    from IPython.display import display
    emo = w.Dropdown(options=p["emotions"], description="emotion")
    name = w.Dropdown(options=list(sets), description="set")
    dose = w.FloatSlider(value=2.0, min=0, max=10.0, step=0.5, description="α (SDs)")
    text = w.Textarea(value=prompts[0], description="prompt", layout=w.Layout(width="90%"))
    go, out = w.Button(description="generate"), w.Output()

    def run(_) -> None:
        out.clear_output()
        with out:
            display(steer_text(model, tok, p, sets[name.value].by_layer(emo.value), dose.value, sd,
                               text.value.replace("\\n", "\n"), 3, scorers))
    go.on_click(run)
    return w.VBox([emo, name, dose, text, go, out])
