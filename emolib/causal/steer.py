"""Stage 5 steering: are the emotion neurons sufficient? During generation, add alpha activation SDs to one
emotion's FFN neurons (the input of mlp.down_proj, through ablate's pre-hooks, mode add) and read the emotion of
the continuations with scorers that are not the steered model.

Sampling uses common random numbers: every (prompt, sample) has its own seeded noise stream, the same under every
condition, so the unsteered (alpha = 0) and steered continuations of a prompt differ only through the steering.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from ..progress import tqdm

from . import ablate, stats
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


# ---------------------------------------------------------------- conditions

@dataclass
class Condition:
    """One generation condition: a neuron set pushed up by dose SDs (random = BASELINE, OWN or a random set's index)."""

    set: str
    emotion: str
    dose: float
    random: int
    neurons: dict[int, list[int]] = field(default_factory=dict)
    extra: str = ""  # what else the continuations depend on (the direction baseline: its layer and vector's hash)

    def key(self, context: str) -> str:
        """Cache key: what the continuations depend on (the neurons themselves, the dose and the context hash)."""
        blob = json.dumps([sorted((int(k), sorted(v)) for k, v in self.neurons.items()), float(self.dose), context]
                          + ([self.extra] if self.extra else []))
        return f"{self.set}|{self.emotion}|a={self.dose:g}|r={self.random}|{hashlib.sha1(blob.encode()).hexdigest()[:16]}"


def baseline() -> Condition:
    """The unsteered model (alpha = 0): shared by every set and emotion."""
    return Condition("none", "none", 0.0, BASELINE)


def own_conditions(sets: dict, emotions: list[str], doses: list[float]) -> list[Condition]:
    """Every named set x emotion x positive dose, own neurons."""
    return [Condition(name, e, float(a), OWN, ns.by_layer(e)) for name, ns in sets.items() for e in emotions
            for a in doses if a > 0 and sum(map(len, ns.by_layer(e).values()))]


def random_conditions(sets: dict, emotions: list[str], dose: float, n: int, firing_of: Callable,
                      spread: torch.Tensor | None, seed: int) -> list[Condition]:
    """n matched random sets per named set x emotion at one dose, ordered by index j first (so a budget cut keeps the
    same number of random sets in every test): stage 3's draws (same layer counts, firing and SD deciles)."""
    from .effects import matched_sets
    per_test = {}
    for name, ns in sets.items():
        firing = firing_of(ns)
        for e in emotions:
            own = ns.by_layer(e)
            if sum(map(len, own.values())):
                per_test[(name, e)] = matched_sets(own, firing, n, seed, spread)
    return [Condition(name, e, float(dose), j, masks[j]) for j in range(n) for (name, e), masks in per_test.items()]


def context_hash(p: dict, prompts: list[str], sd: torch.Tensor, samples: int = 1) -> str:
    """What every condition's continuations depend on besides its neurons and dose."""
    from .attribution import neuron_hash
    blob = json.dumps([p["model"], p["dtype"], p["seed"], p["steer_max_new_tokens"], TEMPERATURE, TOP_K, prompts,
                       neuron_hash(sd), samples])
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


# ---------------------------------------------------------------- running conditions

class Runner:
    """Generates, measures fluency and scores conditions in batches across conditions, caching each condition as it
    finishes (an interrupted run resumes), and times them for the budget."""

    def __init__(self, model, tok, p: dict, prompts: list[str], sd: torch.Tensor, scorers: dict, cache_dir: Path,
                 samples: int = 1):
        from ..lm.classify import PredictionCache
        self.model, self.tok, self.p, self.prompts, self.sd, self.scorers = model, tok, p, prompts, sd, scorers
        self.samples = samples
        self.stops = stop_ids(tok)
        bos = [tok.bos_token_id] if tok("x")["input_ids"][0] == tok.bos_token_id else []
        self.prompt_ids = [bos + tok(x, add_special_tokens=False)["input_ids"] for x in prompts]
        self.ctx = context_hash(p, prompts, sd, samples)
        cache_dir.mkdir(parents=True, exist_ok=True)
        self.gens = PredictionCache(cache_dir / GEN_CACHE)
        self.scores = PredictionCache(cache_dir / SCORE_CACHE)
        self.speed_file = cache_dir / SPEED_FILE
        self.seconds, self.done_new = 0.0, 0
        self.direction: tuple[int, dict[str, torch.Tensor]] | None = None  # (layer, push per emotion at dose 1)

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
        """Compute every uncached condition, several per batch (batch rows = 2 x batch_size)."""
        todo = [c for c in conds if not self.cached(c)]
        per_batch = per_batch or max(1, (2 * self.p["batch_size"]) // len(self.rows()))
        for s in tqdm(range(0, len(todo), per_batch), desc=desc, disable=not todo):
            t = time.time()
            self._run_group(todo[s:s + per_batch])
            self.seconds += time.time() - t
            self.done_new += len(todo[s:s + per_batch])
        if todo:
            from ..safeio import atomic_write_json
            atomic_write_json(self.speed_file, {self.ctx: round(self.per_condition(), 3)})

    def _run_group(self, group: list[Condition]) -> None:
        """Generate one batch of conditions with per-row masks and doses, then fluency and scores per condition."""
        rows = self.rows()
        keys = [c.key(self.ctx) for c in group]
        need = [i for i, k in enumerate(keys) if k not in self.gens.rows]
        if need:
            ids = [self.prompt_ids[i] for _ in need for i, _ in rows]
            gens = [row_generator(self.p["seed"], i, k) for _ in need for i, k in rows]
            if group[need[0]].set == DIRECTION_SET:  # one direction per pass: run_directions sends one at a time
                from ..identify.directions import add_direction
                c = group[need[0]]
                layer, push = self.direction
                with add_direction(self.model, layer, push[c.emotion], c.dose):
                    new = sample_batch(self.model, self.tok, ids, gens, self.p["steer_max_new_tokens"], self.stops)
            else:
                with ablate.ablate_rows(self.model, [group[i].neurons for i in need], len(rows), mode="add",
                                        means=self.sd, scales=[group[i].dose for i in need]):
                    new = sample_batch(self.model, self.tok, ids, gens, self.p["steer_max_new_tokens"],
                                       self.stops)
            out = [reply(self.tok, x, self.stops) for x in new]
            pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else 0
            ppl = perplexity(self.model, ids, [k for _, k in out], pad)  # no hooks: the unsteered model
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
        """The two-turn dialogue the scorers read: the neutral opening and B's reply."""
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
                    out.append({"set": c.set, "emotion": c.emotion, "dose": c.dose, "random": c.random,
                                "prompt": i, "sample": k, "scorer": name, "text": g["text"],
                                "ppl": np.nan if g["ppl"] is None else g["ppl"], "degenerate": g["degenerate"],
                                "top": E[int(np.argmax(pr))], **{f"p_{e}": float(v) for e, v in zip(E, pr)},
                                "target_p": float(pr[target]) if target >= 0 else np.nan})
        return pd.DataFrame(out)


def choose_random_sets(runner: Runner, rand: list[Condition], n_max: int, budget_s: float, elapsed_s: float
                       ) -> int:
    """The most random sets per test (2 to n_max) whose uncached conditions fit the time left, at the measured
    seconds per condition (the first two are always run: the test needs them)."""
    per = runner.per_condition()
    if per is None:
        return n_max
    best = 2
    for k in range(2, n_max + 1):
        cost = sum(1 for c in rand if c.random < k and not runner.cached(c)) * per
        if elapsed_s + cost <= budget_s:
            best = k
    return best


# ---------------------------------------------------------------- tables and tests

def baseline_view(rec: pd.DataFrame, emotions: list[str]) -> pd.DataFrame:
    """The unsteered records once per target emotion (their share of that emotion is each test's baseline)."""
    base = rec[rec.random == BASELINE]
    out = []
    for e in emotions:
        b = base.copy()
        b["emotion"], b["target_p"] = e, b[f"p_{e}"]
        out.append(b)
    return pd.concat(out, ignore_index=True)


def condition_summary(rec: pd.DataFrame, emotions: list[str]) -> pd.DataFrame:
    """Per scorer x set x emotion x dose x random index: target share, mean P(target), fluency, degenerate share."""
    r = pd.concat([rec[rec.random != BASELINE], baseline_view(rec, emotions)], ignore_index=True)
    r["hit"] = (r["top"] == r["emotion"]).astype(float)
    g = r.groupby(["scorer", "set", "emotion", "dose", "random"], sort=False)
    return g.agg(n=("hit", "size"), target_share=("hit", "mean"), target_p=("target_p", "mean"),
                 log_ppl=("ppl", lambda x: float(np.nanmean(np.log(x))) if np.isfinite(x).any() else np.nan),
                 degenerate=("degenerate", lambda x: float((x != "").mean()))).reset_index().assign(
        ppl=lambda d: np.exp(d["log_ppl"]))


def _per_prompt(rec: pd.DataFrame, scorer: str, name: str, e: str, dose: float, rnd: int) -> pd.DataFrame:
    """Per (prompt, sample): hit and P(target) of one condition (name 'none' = the baseline)."""
    if rnd == BASELINE:
        r = rec[(rec.scorer == scorer) & (rec.random == BASELINE)]
        return pd.DataFrame({"hit": (r["top"] == e).astype(float).to_numpy(), "p": r[f"p_{e}"].to_numpy()})
    r = rec[(rec.scorer == scorer) & (rec["set"] == name) & (rec.emotion == e) & (rec.dose == dose)
            & (rec.random == rnd)]
    return pd.DataFrame({"hit": (r["top"] == e).astype(float).to_numpy(), "p": r["target_p"].to_numpy()})


def dose_table(rec: pd.DataFrame, emotions: list[str], doses: list[float], n_boot: int, seed: int) -> pd.DataFrame:
    """Per scorer x set x emotion x dose (0 = unsteered): target share and its change from alpha = 0 with a paired
    bootstrap 95% interval over prompts (the same noise per prompt in every condition)."""
    rows = []
    own = rec[rec.random == OWN]
    for (scorer, name), _ in own.groupby(["scorer", "set"], sort=False):
        for e in emotions:
            b = _per_prompt(rec, scorer, name, e, 0.0, BASELINE)
            for a in sorted(doses):
                x = b if a == 0 else _per_prompt(rec, scorer, name, e, a, OWN)
                if x.empty:
                    continue
                d = stats.paired_delta(b["hit"].to_numpy(), x["hit"].to_numpy(), n_boot, seed=seed)
                dp = stats.paired_delta(b["p"].to_numpy(), x["p"].to_numpy(), n_boot, seed=seed)
                rows.append({"scorer": scorer, "set": name, "emotion": e, "dose": a, "n": len(x),
                             "target_share": x["hit"].mean(), "d_share": d.mean, "d_share_lo": d.lo,
                             "d_share_hi": d.hi, "target_p": x["p"].mean(), "d_p": dp.mean})
    return pd.DataFrame(rows)


def test_table(rec: pd.DataFrame, emotions: list[str], dose: float, delta: float, alpha: float = ALPHA
               ) -> pd.DataFrame:
    """Per scorer x set x emotion at the random sets' dose: own target-share change from alpha = 0 against the matched
    random sets' (two-sided t prediction test, R - 1 df, and its inverted 95% interval); Holm over sets x emotions
    within each scorer; power to see a delta shift of the share at Holm's strictest level."""
    rows = []
    own = rec[(rec.random == OWN) & (rec.dose == dose)]
    for (scorer, name), _ in own.groupby(["scorer", "set"], sort=False):
        for e in emotions:
            b = _per_prompt(rec, scorer, name, e, 0.0, BASELINE)
            o = _per_prompt(rec, scorer, name, e, dose, OWN)
            ks = sorted(rec[(rec.scorer == scorer) & (rec["set"] == name) & (rec.emotion == e)
                            & (rec.random >= 0)].random.unique())
            if o.empty:
                continue
            r_share = np.array([_per_prompt(rec, scorer, name, e, dose, k)["hit"].mean() for k in ks]) - b["hit"].mean()
            r_p = np.array([_per_prompt(rec, scorer, name, e, dose, k)["p"].mean() for k in ks]) - b["p"].mean()
            d_own, dp_own = o["hit"].mean() - b["hit"].mean(), o["p"].mean() - b["p"].mean()
            row = {"scorer": scorer, "set": name, "emotion": e, "dose": dose, "n": len(o), "n_random": len(ks),
                   "baseline_share": b["hit"].mean(), "own_d_share": d_own, "own_d_p": dp_own}
            if len(ks) >= 2 and r_share.std(ddof=1) == 0:  # the random sets all changed the share alike: a
                row.update(random_d_share=r_share.mean(), random_d_share_sd=0.0)  # t test has no spread to use
            elif len(ks) >= 2:
                omr, lo, hi = stats.prediction_ci(d_own, r_share)
                row.update(random_d_share=r_share.mean(), random_d_share_sd=r_share.std(ddof=1),
                           own_minus_random_share=omr, omr_lo=lo, omr_hi=hi,
                           own_minus_random_p=dp_own - r_p.mean(), p=stats.normal_p(d_own, r_share, "two-sided"))
            rows.append(row)
    t = pd.DataFrame(rows)
    if t.empty:
        return t
    for c in ("random_d_share", "random_d_share_sd", "own_minus_random_share", "omr_lo", "omr_hi",
              "own_minus_random_p", "p"):  # every column, also where no test had random sets with spread
        if c not in t:
            t[c] = np.nan
    parts = []
    for _, g in t.groupby("scorer", sort=False):
        g = g.copy()
        g["p_holm"] = stats.holm(g["p"].to_numpy())
        m = int(g["p"].notna().sum()) or 1
        g["verdict"] = ["not tested (random sets without spread)" if not np.isfinite(ph) and sd == 0 else
                        "not tested" if not np.isfinite(ph) else
                        "own gain beyond random" if ph < alpha and d > 0 else
                        "own drop beyond random" if ph < alpha else "no detectable effect"
                        for ph, d, sd in zip(g["p_holm"], g.get("own_minus_random_share", pd.Series(np.nan, g.index)),
                                             g.get("random_d_share_sd", pd.Series(np.nan, g.index)))]
        g["power_delta"] = delta
        g["power"] = [stats.t_power(delta, sd, int(r), alpha, m) if np.isfinite(sd) and sd > 0 and r >= 2 else np.nan
                      for sd, r in zip(g.get("random_d_share_sd", pd.Series(np.nan, g.index)), g["n_random"])]
        parts.append(g)
    return pd.concat(parts, ignore_index=True)


def fluency_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Per set x emotion x dose (own sets and the baseline; the first scorer's rows): perplexity under the unsteered
    model (geometric mean) and the degenerate share; random sets pooled per dose."""
    s = summary[summary.scorer == summary.scorer.iloc[0]].copy()
    s["kind"] = np.where(s.random == BASELINE, "unsteered", np.where(s.random == OWN, "own", "random"))
    s = s[~((s.kind == "unsteered") & s.duplicated(["random"]))]  # the baseline once
    return s.groupby(["kind", "set", "emotion", "dose"], sort=False).agg(
        ppl=("log_ppl", lambda x: float(np.exp(np.nanmean(x)))), degenerate=("degenerate", "mean"),
        n_conditions=("n", "size")).reset_index()


def samples_table(rec: pd.DataFrame, emotions: list[str], doses: list[float], set_name: str, prompt: int = 0
                  ) -> pd.DataFrame:
    """One prompt's continuation per emotion (rows) and dose (columns) under a set's own neurons (first scorer)."""
    r = rec[rec.scorer == rec.scorer.iloc[0]]
    base = r[(r.random == BASELINE) & (r.prompt == prompt) & (r["sample"] == 0)]
    out = {}
    for e in emotions:
        row = {}
        for a in sorted(doses):
            x = base if a == 0 else r[(r.random == OWN) & (r["set"] == set_name) & (r.emotion == e) & (r.dose == a)
                                      & (r.prompt == prompt) & (r["sample"] == 0)]
            row[f"α = {a:g}"] = x["text"].iloc[0] if len(x) else ""
        out[e] = row
    return pd.DataFrame(out).T


def _span(values, fmt: str) -> str:
    """'a' when every value formats alike, else 'a to b' (lowest to highest)."""
    lo, hi = fmt.format(min(values)), fmt.format(max(values))
    return lo if lo == hi else f"{lo} to {hi}"


def set_sd_table(sets: dict, sd: torch.Tensor, emotions: list[str]) -> pd.DataFrame:
    """Per set and emotion: neurons, and the median and largest activation SD among them (the size of one dose)."""
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
    """Baseline and own sets at every dose, then matched random sets at the test dose, as many per test as the
    budget allows (2 to steer_random_sets); returns the records and what was run."""
    from .effects import set_firing
    start, budget = time.time(), 60 * p["steer_budget_min"]
    E, doses = p["emotions"], p["steer_doses"]
    own = [baseline()] + own_conditions(sets, E, doses)
    runner.run(own, "baseline and own sets")
    rand = random_conditions(sets, E, p["steer_random_dose"], p["steer_random_sets"],
                             lambda ns: set_firing(p, ns), spread, p["seed"])
    first = [c for c in rand if c.random == 0]
    runner.run(first, "random sets (first of each test)")
    k = choose_random_sets(runner, rand, p["steer_random_sets"], budget, time.time() - start)
    runner.run([c for c in rand if 0 < c.random < k], f"random sets (up to {k} per test)")
    elapsed = time.time() - start
    info = {"n_random": k, "n_random_asked": p["steer_random_sets"], "seconds": round(elapsed, 1),
            "budget_s": budget, "per_condition_s": runner.per_condition(), "n_conditions": len(own) + len(rand)}
    return runner.records(own + [c for c in rand if c.random < k]), info


def budget_note(info: dict) -> str:
    """One line on what the budget allowed (from the stage's info)."""
    per = info["per_condition_s"]
    speed = f"{per:.1f} s per condition measured" if per else "every condition cached"
    cut = (f"; the budget cut the random sets from {info['n_random_asked']} to {info['n_random']} per test"
           if info["n_random"] < info["n_random_asked"] else "")
    return (f"{info['n_random']} matched random sets per test; {info['seconds']:.0f} s of a "
            f"{info['budget_s'] / 60:g}-minute budget ({speed}){cut}.")


# ---------------------------------------------------------------- the direction baseline (issue 17)

DIRECTION_SET = "direction"


def direction_layer(n_layers: int) -> int:
    """The decoder layer the direction baseline steers after: the middle one (fixed in advance)."""
    return n_layers // 2


@torch.inference_mode()
def direction_pushes(p: dict, runner: Runner) -> tuple[int, dict[str, torch.Tensor], pd.DataFrame]:
    """(layer, per emotion the push at dose 1, a table): the emotion's unit direction at the middle layer times the SD
    of the residual stream's projection on it over the steering prompts' tokens after the first (the unsteered
    model; the first position's state is an outlier in these models), so that a
    dose of alpha moves the stream alpha SDs along the direction, as the neuron doses move each neuron."""
    from ..identify.directions import load_directions, load_meta
    from ..lm.models import decoder_layers
    U, names = load_directions(p["run_dir"]).float(), load_meta(p["run_dir"])["emotions"]
    layer = direction_layer(len(decoder_layers(runner.model)))
    dev = model_device(runner.model)
    states = []
    for ids in runner.prompt_ids:
        out = runner.model(input_ids=torch.tensor([ids], device=dev), output_hidden_states=True)
        h = out.hidden_states[layer + 1][0].float().cpu()  # the output of decoder layer `layer`
        states.append(h[1:] if len(h) > 1 else h)  # without the first position (its norm is an outlier: a sink)
    X = torch.cat(states)
    pushes, rows = {}, []
    for e in p["emotions"]:
        u = U[names.index(e), layer]
        sd = float((X @ u).std())
        pushes[e] = u * sd
        rows.append({"emotion": e, "layer": layer, "projection_sd": sd, "push_norm_at_dose_1": sd})
    return layer, pushes, pd.DataFrame(rows)


def direction_baseline(p: dict, runner: Runner) -> tuple[pd.DataFrame | None, str]:
    """The residual-stream direction-steering baseline (emolib.identify.directions): per emotion, alpha SDs of the residual
    stream's projection on the emotion's unit direction added after the middle decoder layer, at the test dose,
    on the same prompts with the same per-prompt noise; (records with set 'direction', a note). Descriptive: there
    are no random directions to test it against."""
    if not (Path(p["run_dir"]) / "directions.safetensors").exists():
        return None, ("Direction-steering baseline skipped: this run has no emotion directions "
                      "(find_directions: false in stage 2).")
    from ..identify.directions import load_meta
    from .attribution import neuron_hash
    layer, pushes, table = direction_pushes(p, runner)
    runner.direction = (layer, pushes)
    dose = p["steer_random_dose"]
    conds = [Condition(DIRECTION_SET, e, float(dose), OWN, {}, f"direction layer {layer} {neuron_hash(pushes[e])}")
             for e in p["emotions"]]
    runner.run(conds, "direction baseline", per_batch=1)
    meta = load_meta(p["run_dir"])
    return runner.records(conds), (f"Direction baseline: the {meta['site']} directions ({meta['tokens']} tokens) "
                                   f"added after decoder layer {layer} (the middle one) at dose {dose:g}, in SDs of "
                                   "the stream's projection on each direction over these prompts.")


def direction_table(rec: pd.DataFrame, direction: pd.DataFrame, neurons: pd.DataFrame, emotions: list[str]
                    ) -> pd.DataFrame:
    """Per scorer and emotion at the test dose: the target share and P(target) change from alpha = 0 under the
    direction and under each steered neuron set, with the perplexity (the three interventions side by side)."""
    base = baseline_view(rec, emotions)
    both = pd.concat([neurons, direction], ignore_index=True)
    rows = []
    for (scorer, e, name), g in both.groupby(["scorer", "emotion", "set"], sort=False):
        b = base[(base.scorer == scorer) & (base.emotion == e)]
        if b.empty:
            continue
        rows.append({"scorer": scorer, "emotion": e, "intervention": name if name == DIRECTION_SET else f"set {name}",
                     "dose": float(g["dose"].iloc[0]),
                     "d_target_share": float((g["top"] == e).mean() - (b["top"] == e).mean()),
                     "d_target_p": float(g["target_p"].mean() - b["target_p"].mean()),
                     "ppl": float(np.exp(np.log(g["ppl"].dropna()).mean())) if g["ppl"].notna().any() else np.nan})
    return pd.DataFrame(rows)


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
    dose = w.FloatSlider(value=p["steer_random_dose"], min=0, max=max(p["steer_doses"]) * 2, step=0.5,
                         description="α (SDs)")
    text = w.Textarea(value=prompts[0], description="prompt", layout=w.Layout(width="90%"))
    go, out = w.Button(description="generate"), w.Output()

    def run(_) -> None:
        out.clear_output()
        with out:
            display(steer_text(model, tok, p, sets[name.value].by_layer(emo.value), dose.value, sd,
                               text.value.replace("\\n", "\n"), 3, scorers))
    go.on_click(run)
    return w.VBox([emo, name, dose, text, go, out])
