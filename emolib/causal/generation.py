"""Stage 5's generation: neutral openings about topics the run never used, sampling with common random numbers
(every (prompt, sample) has its own seeded noise stream, the same under every condition, so the unsteered and
steered continuations of a prompt differ only through the steering), each reply's perplexity under the unsteered
model and its degeneracy, and the Runner that generates, measures and scores conditions in batches across
conditions, caching each as it finishes and timing them for the budget.

Longer than 400 lines: the Runner batches many conditions into one generate call and caches each as it finishes;
sampling, perplexity and the runner share its state, so they stay together (lines counted after `ruff format`).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..lm.models import model_device
from ..progress import tqdm
from .intervene import (
    DIRECTION_SET,
    OWN,
    PROMPT_SET,
    Condition,
    direction_layer,
    down_weights,
    ffn_outputs,
    interventions,
    neuron_push,
    random_direction,
    stream_norm,
)

TEMPERATURE = 0.8  # sampling temperature of the continuations
TOP_K = 50  # sampling among the k most likely tokens
DEGENERATE_DISTINCT = 0.5  # a reply of >= 8 tokens with fewer distinct bigrams than this share is repetitive
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
def sample_batch(
    model, tok, prompt_ids: list[list[int]], gens: list[torch.Generator], max_new_tokens: int, stops: set[int]
) -> list[list[int]]:
    """New token ids of each left-padded row, up to max_new_tokens or a stop token (kept)."""
    B, T = len(prompt_ids), max(map(len, prompt_ids))
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    ids = torch.full((B, T), pad, dtype=torch.long)
    attn = torch.zeros((B, T), dtype=torch.long)
    for r, x in enumerate(prompt_ids):
        ids[r, T - len(x) :], attn[r, T - len(x) :] = torch.tensor(x), 1
    dev = model_device(model)
    pos = (attn.cumsum(1) - 1).clamp(min=0)
    out = model(
        input_ids=ids.to(dev), attention_mask=attn.to(dev), position_ids=pos.to(dev), use_cache=True, logits_to_keep=1
    )
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
        out = model(
            input_ids=toks[:, None].to(dev),
            attention_mask=attn.to(dev),
            position_ids=nxt_pos.to(dev),
            cache=out.cache,
            use_cache=True,
        )
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
        ids[r, T - len(x) :], attn[r, T - len(x) :] = torch.tensor(x), 1
    dev = model_device(model)
    pos = (attn.cumsum(1) - 1).clamp(min=0)
    logits = model(
        input_ids=ids.to(dev), attention_mask=attn.to(dev), position_ids=pos.to(dev), logits_to_keep=k + 1
    ).logits[:, :k]  # position T-k-1+j predicts token T-k+j
    n = torch.tensor([len(b) for b in cont_ids])
    m = torch.arange(k)[None, :] >= (k - n)[:, None]  # each row's continuation: its last n tokens
    lp = torch.log_softmax(logits[m.to(dev)].float(), -1)
    tok_lp = torch.zeros(m.shape)
    tok_lp[m] = lp.gather(1, ids[:, T - k :][m].to(dev)[:, None]).squeeze(1).cpu()
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


# ---------------------------------------------------------------- running conditions


def context_hash(p: dict, prompts: list[str], sd: torch.Tensor, samples: int = 1, post_norm: bool = False) -> str:
    """What every condition's continuations depend on besides its neurons and dose (v2: doses in stream norms; a
    model with post-FFN norms is also keyed by how its pushes are measured)."""
    from .matched import neuron_hash

    blob = json.dumps(
        [
            p["model"],
            p["dtype"],
            p["seed"],
            p["steer_max_new_tokens"],
            TEMPERATURE,
            TOP_K,
            prompts,
            neuron_hash(sd),
            samples,
            "push-norm-v2",
        ]
        + (["post-ffn-norm"] if post_norm else [])
    )
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


class Runner:
    """Generates, measures fluency and scores conditions in batches across conditions (one generate call carries
    many sets', directions' and prompts' rows), caching each condition as it finishes (an interrupted run resumes),
    and times them for the budget."""

    def __init__(
        self,
        model,
        tok,
        p: dict,
        prompts: list[str],
        sd: torch.Tensor,
        scorers: dict,
        cache_dir: Path,
        samples: int = 1,
    ):
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
            self._run_group(todo[s : s + per_batch])
            self.seconds += time.time() - t
            self.done_new += len(todo[s : s + per_batch])
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
        self.directions = {
            e: U[names.index(e), self.layer] / U[names.index(e), self.layer].norm()
            for e in self.p["emotions"]
            if e in names
        }
        return True

    def _run_group(self, group: list[Condition]) -> None:
        """Generate one batch of conditions with per-row pushes and prompts, then fluency and scores per condition."""
        rows = self.rows()
        keys = [c.key(self.ctx) for c in group]
        need = [i for i, k in enumerate(keys) if k not in self.gens.rows]
        if need:
            plain = [self.prompt_ids[i] for _ in need for i, _ in rows]
            ids = [
                self.encode(group[n].extra + self.prompts[i]) if group[n].set == PROMPT_SET else self.prompt_ids[i]
                for n in need
                for i, _ in rows
            ]
            gens = [row_generator(self.p["seed"], i, k) for _ in need for i, k in rows]
            pushes = [self.push(group[n]) for n in need]
            with interventions(self.model, [a for a, _ in pushes], [v for _, v in pushes], self.layer, len(rows)):
                new = sample_batch(self.model, self.tok, ids, gens, self.p["steer_max_new_tokens"], self.stops)
            out = [reply(self.tok, x, self.stops) for x in new]
            pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else 0
            ppl = perplexity(self.model, plain, [k for _, k in out], pad)  # no hooks: the unsteered model
            for n, i in enumerate(need):
                part = slice(n * len(rows), (n + 1) * len(rows))
                recs = [
                    {
                        "text": t,
                        "n_tokens": len(k),
                        "ppl": None if not np.isfinite(q) else round(float(q), 4),
                        "degenerate": degenerate(t, k),
                    }
                    for (t, k), q in zip(out[part], ppl[part])
                ]
                self.gens.get_or_run(keys[i], lambda recs=recs: recs)
        for name, fn in self.scorers.items():
            miss = [k for k in keys if f"{name}|{k}" not in self.scores.rows]
            if not miss:
                continue
            texts = [self.dialogue(i, rec["text"]) for k in miss for (i, _), rec in zip(rows, self.gens.rows[k])]
            probs = fn(texts)
            for n, k in enumerate(miss):
                part = probs[n * len(rows) : (n + 1) * len(rows)]
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
                    out.append(
                        {
                            "kind": c.kind,
                            "set": c.set,
                            "emotion": c.emotion,
                            "dose": c.dose,
                            "random": c.random,
                            "prompt": i,
                            "sample": k,
                            "scorer": name,
                            "text": g["text"],
                            "ppl": np.nan if g["ppl"] is None else g["ppl"],
                            "degenerate": g["degenerate"],
                            "top": E[int(np.argmax(pr))],
                            **{f"p_{e}": float(v) for e, v in zip(E, pr)},
                            "target_p": float(pr[target]) if target >= 0 else np.nan,
                        }
                    )
        return pd.DataFrame(out)


def choose_random_sets(
    runner: Runner, rand: list[Condition], n_max: int, budget_s: float, elapsed_s: float, floor: int = 20
) -> int:
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
