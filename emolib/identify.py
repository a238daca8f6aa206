"""Stage 2 pipeline: record firing counts on the train split, select emotion neurons, check split-half stability."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from . import data, models, neurons, prompts, record

PARAMS_SAVED = ("record_tensor", "record_tokens", "record_framing", "top_rate", "filter_quantile", "assign", "seed",
                "prompt_style", "few_shot", "prompt_template")


def counts_path(run_dir: str | Path) -> Path:
    """Where stage 2 keeps its counts (not committed: large)."""
    return Path(run_dir) / "cache" / "counts.pt"


def record_train(p: dict, model=None, tokenizer=None) -> dict:
    """Firing counts over the train split, per emotion and half; cached in run_dir/cache/counts.pt."""
    final = counts_path(p["run_dir"])
    dd = data.load_splits(p["run_dir"])
    train = dd["train"]
    by_emotion = {e: [d for d, lab in zip(train["dialogue"], train["label"]) if lab == e] for e in p["emotions"]}
    if model is None:
        model, tokenizer = models.load_model(p["model"], p["dtype"], p["device"], p["device_map"], p["seed"])
    parts = None
    if p["record_framing"] == "prompt":
        chat = prompts.use_chat(p["prompt_style"], models.is_instruct(p["model"], tokenizer), tokenizer)
        parts = prompts.build(tokenizer, p["emotions"], chat, p["few_shot"], p["prompt_template"])
    if final.exists():
        state = torch.load(final, weights_only=False)
        if state.get("key") == _key(p, by_emotion):
            return state
    state = record.record_counts(model, tokenizer, by_emotion, p["record_tensor"], p["record_tokens"],
                                 p["record_framing"], parts, p["batch_size"], p["seed"],
                                 state_path=final.with_suffix(".partial.pt"))
    state["key"] = _key(p, by_emotion)
    state["shape"] = models.ffn_shape(model)
    torch.save(state, final)
    final.with_suffix(".partial.pt").unlink(missing_ok=True)
    return state


def _key(p: dict, by_emotion: dict) -> str:
    """What the counts depend on."""
    import hashlib
    import json
    return hashlib.sha1(json.dumps([p["model"], p["dtype"], p["record_tensor"], p["record_tokens"],
                                    p["record_framing"], p["seed"], by_emotion]).encode()).hexdigest()


def select_all(state: dict, p: dict) -> dict:
    """Selection on the whole train split (both halves)."""
    return neurons.select(state["counts"].sum(0), state["tokens"].sum(0), state["emotions"], p["top_rate"],
                          p["filter_quantile"], p["assign"])


def save_neurons(p: dict, state: dict, result: dict) -> Path:
    """Write run_dir/neurons.json."""
    path = Path(p["run_dir"]) / "neurons.json"
    neurons.save(path, p["model"], {k: p[k] for k in PARAMS_SAVED}, result, state["tokens"].sum(0),
                 state["emotions"], tuple(state["shape"]))
    return path


def stability(state: dict, p: dict, n_draws: int = 200) -> pd.DataFrame:
    """Select on each half of the train split; per emotion, Jaccard overlap of the two sets against random sets
    (also written to run_dir/stability.csv)."""
    halves = [neurons.select(state["counts"][h], state["tokens"][h], state["emotions"], p["top_rate"],
                             p["filter_quantile"], p["assign"])["sets"] for h in (0, 1)]
    L, D = state["shape"]
    rows = []
    for e in state["emotions"]:
        a, b = halves[0][e], halves[1][e]
        rows.append({"emotion": e, "n_half_a": len(a), "n_half_b": len(b), "jaccard": neurons.jaccard(a, b),
                     "random_jaccard": neurons.random_jaccard(len(a), len(b), L * D, n_draws, p["seed"])
                     if a and b else float("nan")})
    table = pd.DataFrame(rows).set_index("emotion")
    table.to_csv(Path(p["run_dir"]) / "stability.csv")
    return table


def counts_table(result: dict, emotions: list[str], n_layers: int) -> pd.DataFrame:
    """Neurons per (layer, emotion): the study's key table."""
    t = pd.DataFrame(0, index=pd.RangeIndex(n_layers, name="layer"), columns=emotions)
    for e in emotions:
        for layer, _ in result["sets"][e]:
            t.loc[layer, e] += 1
    return t


def overlap_table(sets: dict[str, list], emotions: list[str]) -> pd.DataFrame:
    """Neurons shared by each pair of emotions (diagonal: set sizes)."""
    S = {e: {tuple(x) for x in sets[e]} for e in emotions}
    return pd.DataFrame([[len(S[a] & S[b]) for b in emotions] for a in emotions], index=emotions, columns=emotions)


def emotions_per_neuron(result: dict) -> pd.Series:
    """How many selected neurons serve 1, 2, ... emotions under the assignment rule."""
    owners: dict[tuple, int] = {}
    for pairs in result["sets"].values():
        for layer, idx in pairs:
            owners[(layer, idx)] = owners.get((layer, idx), 0) + 1
    return pd.Series(list(owners.values())).value_counts().sort_index().rename_axis("emotions served")


def profile_picks(result: dict, emotions: list[str]) -> list[tuple[int, int]]:
    """Per emotion, its lowest-entropy neuron not already picked for an earlier emotion."""
    rank = {(l, i): h for l, i, h in result["selected"]}
    picks: list[tuple[int, int]] = []
    for e in emotions:
        own = sorted((rank[(l, i)], l, i) for l, i in result["sets"][e] if (l, i) not in picks)
        if own:
            picks.append(own[0][1:])
    return picks
