"""Stage 3 pipeline: classify the eval split under ablation conditions, with cached, resumable predictions."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from . import ablate, classify, data, metrics, models, neurons, prompts


def load_classifier(p: dict):
    """(model, tokenizer, Classifier) for the run's model and prompt parameters."""
    model, tok = models.load_model(p["model"], p["dtype"], p["device"], p["device_map"], p["seed"])
    chat = prompts.use_chat(p["prompt_style"], models.is_instruct(p["model"], tok), tok)
    clf = classify.make_classifier(model, tok, p["emotions"], chat, p["few_shot"], p["prompt_template"],
                                   p["batch_size"], p["calibrate"])
    return model, tok, clf


def eval_items(p: dict, per_emotion: int | None = None, only: str | None = None,
               others: int | None = None) -> pd.DataFrame:
    """The eval split (dialogue, label), at most per_emotion per emotion in a seeded order; optionally focused on
    one emotion with a few dialogues of each other emotion."""
    ev = data.load_splits(p["run_dir"])["eval"].to_pandas()[["dialogue", "label"]]
    ev = ev.sample(frac=1.0, random_state=p["seed"]).reset_index(drop=True)
    parts = []
    for e in p["emotions"]:
        g = ev[ev["label"] == e]
        n = per_emotion if only is None or e == only else others
        parts.append(g if n is None else g.head(n))
    return pd.concat(parts).reset_index(drop=True)


def means_from_counts(run_dir: str | Path) -> torch.Tensor | None:
    """Mean input of down_proj per neuron over the train tokens (for mean ablation), from stage 2's counts."""
    path = Path(run_dir) / "cache" / "counts.pt"
    if not path.exists():
        return None
    state = torch.load(path, weights_only=False)
    return (state["sums"] / state["tokens"].sum().clamp(min=1)).float()


class PredictionCache:
    """Predictions per condition, appended to a JSON-lines file as each condition finishes."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.rows: dict[str, list] = {}
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                if line.strip():
                    r = json.loads(line)
                    self.rows[r["key"]] = r["preds"]

    def get_or_run(self, key: str, fn) -> list:
        """Cached predictions for key, or run fn() and store its result."""
        if key not in self.rows:
            self.rows[key] = fn()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a") as f:
                f.write(json.dumps({"key": key, "preds": self.rows[key]}) + "\n")
        return self.rows[key]


def condition_key(p: dict, dialogues: list[str], mask: dict[int, list[int]], mode: str, scale: float) -> str:
    """Everything a condition's predictions depend on, hashed."""
    blob = json.dumps([p["model"], p["dtype"], p["protocol"], p["prompt_style"], p["few_shot"], p["prompt_template"],
                       p["calibrate"], p["max_new_tokens"], p["emotions"], dialogues,
                       {str(k): v for k, v in sorted(mask.items())}, mode, scale if mode == "scale" else None])
    return hashlib.sha1(blob.encode()).hexdigest()


def predict_condition(clf, p: dict, dialogues: list[str], mask: dict[int, list[int]], mode: str,
                      means, cache: PredictionCache) -> list[str | None]:
    """Predictions with the given neurons ablated (an empty mask = baseline)."""
    key = condition_key(p, dialogues, mask, mode, p.get("ablation_scale", 0.5))

    def run():
        with ablate.ablate(clf.model, mask, mode, means, p.get("ablation_scale", 0.5)):
            preds, _ = classify.predict(clf, dialogues, p["protocol"], p["max_new_tokens"])
        return preds
    return cache.get_or_run(key, run)


def rows_for(condition: str, masked: str, mode: str, seed: int, n_neurons: int, true: list[str],
             preds: list, emotions: list[str]) -> list[dict]:
    """One row per true emotion: n and accuracy."""
    acc = metrics.per_emotion_accuracy(true, preds, emotions)
    t = np.asarray(true)
    return [{"condition": condition, "masked": masked, "mode": mode, "seed": seed, "n_neurons": n_neurons,
             "true": e, "n": int((t == e).sum()), "accuracy": acc[e]} for e in emotions]


def run_ablation(clf, p: dict, ns: neurons.NeuronSets) -> tuple[pd.DataFrame, dict]:
    """Baseline, own-neuron and matched random ablations per emotion; returns the table and the predictions."""
    items = eval_items(p, p["eval_limit"])
    dialogues, true = items["dialogue"].tolist(), items["label"].tolist()
    cache = PredictionCache(Path(p["run_dir"]) / "cache" / "predictions.jsonl")
    means = means_from_counts(p["run_dir"]) if "mean" in p["ablation_modes"] else None
    E = p["emotions"]
    preds = {("baseline", "none", "none", -1): predict_condition(clf, p, dialogues, {}, "zero", None, cache)}
    jobs = [(e, m, s) for m in p["ablation_modes"] for e in E for s in [-1] + list(range(p["n_random_seeds"]))]
    for e, mode, seed in tqdm(jobs, desc="ablation conditions"):
        own = ns.by_layer(e)
        mask = own if seed < 0 else ablate.random_like(own, ns.d_ff, p["seed"] * 1000 + seed, exclude=own)
        preds[("own" if seed < 0 else "random", e, mode, seed)] = predict_condition(clf, p, dialogues, mask, mode,
                                                                                   means, cache)
    rows = []
    for (cond, masked, mode, seed), pr in preds.items():
        n = 0 if cond == "baseline" else len(ns.sets[masked])
        rows += rows_for(cond, masked, mode, seed, n, true, pr, E)
    table = pd.DataFrame(rows)
    table.to_csv(Path(p["run_dir"]) / "ablation.csv", index=False)
    return table, {"true": true, "preds": preds}


def delta_matrix(table: pd.DataFrame, mode: str = "zero", condition: str = "own") -> pd.DataFrame:
    """Masked emotion x true emotion: accuracy change against the baseline (mean over seeds for random)."""
    base = table[table.condition == "baseline"].set_index("true")["accuracy"]
    t = table[(table.condition == condition) & (table["mode"] == mode)]
    m = t.groupby(["masked", "true"])["accuracy"].mean().unstack("true")
    return m.sub(base, axis=1)


def own_vs_random(table: pd.DataFrame, result: dict, emotions: list[str], mode: str = "zero",
                  n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per emotion: own-neuron drop on its own dialogues (with a paired 95% interval) beside the random drops."""
    true = np.asarray(result["true"])
    base = np.asarray(result["preds"][("baseline", "none", "none", -1)])
    rows = []
    for e in emotions:
        sel = true == e
        b = base[sel] == e
        own = np.asarray(result["preds"][("own", e, mode, -1)])[sel] == e
        lo, hi = metrics.bootstrap_diff_ci(b, own, n_boot, seed)
        rnd = [float((np.asarray(pr)[sel] == e).mean() - b.mean()) for (c, m_, mo, s), pr in result["preds"].items()
               if c == "random" and m_ == e and mo == mode]
        d_own = float(own.mean() - b.mean())
        rows.append({"emotion": e, "baseline": float(b.mean()), "own_delta": d_own, "own_ci_low": lo,
                     "own_ci_high": hi, "random_delta_mean": float(np.mean(rnd)) if rnd else np.nan,
                     "random_delta_min": float(np.min(rnd)) if rnd else np.nan,
                     "own_minus_random": d_own - float(np.mean(rnd)) if rnd else np.nan,
                     "own_larger_drop_than_all_random": bool(rnd) and all(d_own < r for r in rnd)})
    return pd.DataFrame(rows).set_index("emotion")


def random_deltas(result: dict, emotions: list[str], mode: str = "zero") -> dict[str, list[float]]:
    """Per emotion: accuracy change on its own dialogues under each of its matched random sets."""
    true = np.asarray(result["true"])
    base = np.asarray(result["preds"][("baseline", "none", "none", -1)])
    out: dict[str, list[float]] = {}
    for e in emotions:
        sel = true == e
        b = float((base[sel] == e).mean())
        out[e] = [float((np.asarray(pr)[sel] == e).mean()) - b for (c, m, mo, _), pr in result["preds"].items()
                  if c == "random" and m == e and mo == mode]
    return out
