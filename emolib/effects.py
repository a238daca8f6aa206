"""Stages 3-4 as tests that can tell: label scores under many masks (batched, cached), each neuron set's own effect
against matched random sets (margin and accuracy, bootstrap CIs, p-values, Holm), power, dose-response and depth.

Conventions (fixed before looking at any result):
- A delta is ablated minus unablated on the same items, so a drop is negative. The margin of an item is its true
  label's score minus the best other label's score; accuracy is margin > 0.
- The main test of a set and emotion compares the own set's mean margin delta on that emotion's eval items with
  the mean deltas of `n_random_sets` random sets matched per layer and firing-probability decile: a two-sided
  t prediction p (t = (own - mean) / (sd sqrt(1 + 1/R)), df = R - 1), Holm-corrected across every test of the
  family (all sets x emotions; all cells of a grid). The empirical p, (1 + #random at least as extreme) / (1 + R),
  is reported beside it.
- Scores are calibrated with the unablated model's content-free scores held fixed (or not at all when
  `calibrate` is false); recomputing the calibration under each mask is shown in the protocol table only.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from . import ablate, batched, classify, data, identify, models, neurons, prompts, stats
from .evaluate import PredictionCache

ALPHA = 0.05
TARGET_DROP = 0.10  # the accuracy drop beyond random that the default runs are sized to detect (80% power)


# ---------------------------------------------------------------- items

def eval_table(p: dict, per_emotion: int | None = None) -> pd.DataFrame:
    """The eval items (dialogue, label): stage 1's eval split, or the external file when eval_source is file;
    at most per_emotion per emotion, in a seeded order."""
    if p.get("eval_source") == "file":
        ev = pd.DataFrame(data.load_eval_file(p["eval_path"], p["emotions"]))
    else:
        ev = data.load_splits(p["run_dir"])["eval"].to_pandas()[["dialogue", "label"]]
    return _take(ev, p["emotions"], per_emotion, p["seed"])


def dev_table(p: dict, per_emotion: int) -> pd.DataFrame:
    """A dev split for choosing the instrument: train dialogues (topic-disjoint from eval), per_emotion each."""
    tr = data.load_splits(p["run_dir"])["train"].to_pandas()[["dialogue", "label"]]
    return _take(tr, p["emotions"], per_emotion, p["seed"] + 1)


def unfiltered_eval_table(p: dict, per_emotion: int | None = None) -> pd.DataFrame | None:
    """Every eval-topic dialogue before the vote, labelled with its intended emotion (None if not saved)."""
    try:
        rows = data.load_eval_unfiltered(p["run_dir"])
    except (FileNotFoundError, ValueError):
        return None
    ev = pd.DataFrame(rows)[["dialogue", "label"]]
    return _take(ev[ev.label.isin(p["emotions"])], p["emotions"], per_emotion, p["seed"])


def _take(df: pd.DataFrame, emotions: list[str], per_emotion: int | None, seed: int) -> pd.DataFrame:
    """Shuffle with a seed and keep at most per_emotion items of each emotion, emotion by emotion."""
    df = df.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    parts = [df[df.label == e].head(per_emotion) if per_emotion else df[df.label == e] for e in emotions]
    return pd.concat(parts).reset_index(drop=True)


# ---------------------------------------------------------------- scoring under masks

class Scorer:
    """Raw label scores of dialogues under masks, many masks per forward pass, each (mask, items) pair cached."""

    def __init__(self, clf: classify.Classifier, p: dict, tag: dict, masks_per_pass: int = 8):
        from dataclasses import replace
        self.use_calibration = clf.calibrate  # applied here, held fixed; the scores themselves are raw
        self.clf, self.p, self.masks_per_pass = replace(clf, calibrate=False), p, masks_per_pass
        self.tag = {"prompt_style": tag["prompt_style"], "few_shot": tag["few_shot"],
                    "prompt_template": p.get("prompt_template")}
        self.cache = PredictionCache(Path(p["run_dir"]) / "cache" / "scores.jsonl")
        self.base_cf = self.content_free([{}])[0]

    def key(self, dialogues: list[str], mask: dict[int, list[int]]) -> str:
        """Everything one condition's scores depend on, hashed."""
        blob = json.dumps([self.p["model"], str(self.clf.model.dtype), self.tag, self.clf.labels,
                           hashlib.sha1("\n\x00".join(dialogues).encode()).hexdigest(),
                           {str(k): sorted(v) for k, v in sorted(mask.items()) if v}])
        return hashlib.sha1(blob.encode()).hexdigest()

    def scores(self, dialogues: list[str], masks: list[dict[int, list[int]]], desc: str | None = None) -> np.ndarray:
        """[K, N, labels] raw scores; uncached masks are scored masks_per_pass at a time."""
        keys = [self.key(dialogues, m) for m in masks]
        todo = list(dict.fromkeys(k for k in keys if k not in self.cache.rows))
        first = {k: masks[keys.index(k)] for k in todo}
        for s in range(0, len(todo), self.masks_per_pass):
            chunk = todo[s:s + self.masks_per_pass]
            arr = batched.score_masks(self.clf, dialogues, [first[k] for k in chunk], calibration=None, progress=desc)
            for k, a in zip(chunk, arr):
                self.cache.get_or_run(k, lambda a=a: np.round(a, 5).tolist())
        return np.asarray([self.cache.rows[k] for k in keys], dtype=float).reshape(len(masks), len(dialogues), -1)

    def content_free(self, masks: list[dict[int, list[int]]]) -> np.ndarray:
        """[K, labels] raw scores of the content-free dialogue under each mask (for recomputed calibration)."""
        return self.scores([prompts.CONTENT_FREE], masks)[:, 0]

    def calibrate(self, raw: np.ndarray) -> np.ndarray:
        """Scores with the unablated model's content-free scores held fixed (or raw when calibrate is false)."""
        return raw - self.base_cf if self.use_calibration else raw


def load_instrument(p: dict, model=None, tok=None) -> tuple[object, object, classify.Classifier, dict]:
    """(model, tokenizer, classifier, instrument) with the instrument notebook 03 chose (instrument.json), or the
    run's prompt parameters when there is none."""
    if model is None:
        model, tok = models.load_model(p["model"], p["dtype"], p["device"], p["device_map"], p["seed"])
    path = Path(p["run_dir"]) / "instrument.json"
    inst = json.loads(path.read_text())["chosen"] if path.exists() else {
        "prompt_style": p["prompt_style"], "few_shot": p["few_shot"], "calibrate": p["calibrate"]}
    return model, tok, make_clf(model, tok, p, inst), inst


def make_clf(model, tok, p: dict, inst: dict) -> classify.Classifier:
    """A classifier for one instrument (prompt style, few-shot k, calibration)."""
    chat = prompts.use_chat(inst["prompt_style"], models.is_instruct(p["model"], tok), tok)
    return classify.make_classifier(model, tok, p["emotions"], chat, inst["few_shot"], p["prompt_template"],
                                    p["batch_size"], inst["calibrate"])


# ---------------------------------------------------------------- the instrument

def instrument_candidates(p: dict, tok) -> list[dict]:
    """Prompt styles the tokenizer supports x few-shot k in {0, 3, 6} x calibration on/off."""
    styles = ["chat", "plain"] if getattr(tok, "chat_template", None) else ["plain"]
    return [{"prompt_style": s, "few_shot": k, "calibrate": c} for s in styles for k in (0, 3, 6) for c in (False, True)]


def choose_instrument(model, tok, p: dict, dev: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Score the dev split under each candidate instrument; choose, by a rule fixed in advance, the highest accuracy
    that holds on both halves of dev (the lower of the two halves' accuracies), ties to the simpler instrument."""
    y = np.array([p["emotions"].index(e) for e in dev.label])
    half = np.arange(len(dev)) % 2
    rows, raw_by_prompt = [], {}
    for cand in tqdm(instrument_candidates(p, tok), desc="instrument candidates"):
        pk = (cand["prompt_style"], cand["few_shot"])
        if pk not in raw_by_prompt:
            sc = Scorer(make_clf(model, tok, p, cand), p, cand)
            raw_by_prompt[pk] = (sc.scores(dev.dialogue.tolist(), [{}])[0], sc.base_cf)
        raw, cf = raw_by_prompt[pk]
        s = raw - cf if cand["calibrate"] else raw
        ok = stats.correct(s, y)
        rows.append({**cand, "dev_accuracy": ok.mean(), "half_a": ok[half == 0].mean(), "half_b": ok[half == 1].mean(),
                     "min_emotion_accuracy": min(ok[y == j].mean() for j in range(len(p["emotions"]))),
                     "mean_margin": stats.margin(s, y).mean()})
    table = pd.DataFrame(rows)
    table["holds_on_both_halves"] = table[["half_a", "half_b"]].min(axis=1)
    best = table.sort_values(["holds_on_both_halves", "dev_accuracy", "few_shot"], ascending=[False, False, True],
                             kind="stable").iloc[0]
    chosen = {"prompt_style": best.prompt_style, "few_shot": int(best.few_shot), "calibrate": bool(best.calibrate)}
    return table, chosen


def save_instrument(p: dict, table: pd.DataFrame, chosen: dict, n_dev: int) -> Path:
    """Write run_dir/instrument.json (the chosen instrument and the dev table) for notebooks 03 and 04."""
    from .safeio import atomic_write_json
    path = Path(p["run_dir"]) / "instrument.json"
    atomic_write_json(path, {"chosen": chosen, "dev_items": n_dev,
                             "rule": "highest accuracy holding on both halves of dev, ties to fewer shots",
                             "candidates": json.loads(table.to_json(orient="records"))}, indent=1)
    return path


# ---------------------------------------------------------------- own vs matched random

def firing_rates(run_dir: str | Path, settings: dict) -> torch.Tensor:
    """[L, D] each neuron's highest firing probability over emotions, for the set's tensor and tokens."""
    from safetensors.torch import load_file
    P = load_file(str(Path(run_dir) / "probabilities.safetensors"))[f"{settings['tokens']}_P_{settings['tensor']}"]
    return P.float().max(0).values


def matched_sets(own: dict[int, list[int]], firing: torch.Tensor, n: int, seed: int) -> list[dict[int, list[int]]]:
    """n random sets matched to own per layer and firing decile, never drawing own neurons (seeded)."""
    return [dict(ablate.random_matched(own, firing, seed * 1000 + j, exclude=own)) for j in range(n)]


def effect_row(base: np.ndarray, own: np.ndarray, rand: np.ndarray, y: np.ndarray, n_boot: int,
               seed: int) -> dict:
    """One own-vs-random test on the same items: scores [N, labels] unablated and own, [R, N, labels] random."""
    mb, ab = stats.margin(base, y), stats.correct(base, y)
    d_own_m, d_own_a = stats.margin(own, y) - mb, stats.correct(own, y) - ab
    d_rnd_m = np.stack([stats.margin(r, y) - mb for r in rand]) if len(rand) else np.zeros((0, len(y)))
    d_rnd_a = np.stack([stats.correct(r, y) - ab for r in rand]) if len(rand) else np.zeros((0, len(y)))
    row = {"n_items": len(y), "baseline_accuracy": ab.mean(), "baseline_margin": mb.mean(),
           "own_d_margin": d_own_m.mean(), "own_d_accuracy": d_own_a.mean()}
    own_ci = stats.paired_delta(mb, mb + d_own_m, n_boot, seed=seed)
    row.update(own_d_margin_lo=own_ci.lo, own_d_margin_hi=own_ci.hi)
    if len(rand) >= 2:
        rm, ra = d_rnd_m.mean(1), d_rnd_a.mean(1)
        diff_m = stats.paired_delta(d_rnd_m.mean(0), d_own_m, n_boot, seed=seed)  # own - mean random, per item
        diff_a = stats.paired_delta(d_rnd_a.mean(0), d_own_a, n_boot, seed=seed)
        sd_item = float(np.std(d_own_a - d_rnd_a.mean(0), ddof=1)) if len(y) > 1 else 0.0
        tau = stats.between_set_sd(ra, float(np.mean(np.std(d_rnd_a, axis=1, ddof=1))), len(y)) if len(y) > 1 else 0
        row.update(random_d_margin=rm.mean(), random_d_margin_sd=rm.std(ddof=1), random_d_accuracy=ra.mean(),
                   random_d_accuracy_sd=ra.std(ddof=1),
                   own_minus_random_margin=diff_m.mean, omr_margin_lo=diff_m.lo, omr_margin_hi=diff_m.hi,
                   own_minus_random_accuracy=diff_a.mean, omr_accuracy_lo=diff_a.lo, omr_accuracy_hi=diff_a.hi,
                   p=stats.normal_p(d_own_m.mean(), rm, "two-sided"),
                   p_empirical=stats.empirical_p(d_own_m.mean(), rm, "two-sided"),
                   p_accuracy=stats.normal_p(d_own_a.mean(), ra, "two-sided"),
                   item_sd_accuracy=sd_item, between_set_sd_accuracy=tau)
    return row


def correct_family(table: pd.DataFrame, alpha: float = ALPHA) -> pd.DataFrame:
    """Holm-adjust the family's p-values and state each verdict with its direction."""
    t = table.copy()
    if "p" not in t:
        t["p"] = np.nan
    t["p_holm"] = stats.holm(t["p"].to_numpy())
    t["verdict"] = [("not tested" if not np.isfinite(ph) else
                     "own drop beyond random" if ph < alpha and d < 0 else
                     "own gain beyond random" if ph < alpha else "no detectable effect")
                    for ph, d in zip(t["p_holm"], t.get("own_minus_random_margin", pd.Series(np.nan, t.index)))]
    return t


def add_power(table: pd.DataFrame, m: int, d: float = TARGET_DROP, alpha: float = ALPHA) -> pd.DataFrame:
    """Power to detect an accuracy drop d beyond random at each row's n (two-sided Holm level alpha / m), and the
    items per emotion that 80% power needs (inf when the set-to-set spread alone exceeds what d allows)."""
    t = table.copy()
    if "item_sd_accuracy" not in t:
        t["item_sd_accuracy"] = t["between_set_sd_accuracy"] = np.nan
    a2 = alpha / 2  # two-sided
    floor = math.sqrt(d * (1 - d))  # a true drop of d flips a share d of the items: their SD is at least this
    sds = np.maximum(t["item_sd_accuracy"].to_numpy(float), floor)
    t["power_at_10pp"] = [stats.power(d, sd, n, a2, m, tau) if np.isfinite(sd) and np.isfinite(tau) else np.nan
                          for sd, n, tau in zip(sds, t["n_items"], t["between_set_sd_accuracy"])]
    t["items_for_80pct"] = [stats.n_required(d, sd, a2, m, 0.8, tau) if np.isfinite(sd) and np.isfinite(tau)
                            else np.nan for sd, tau in zip(sds, t["between_set_sd_accuracy"])]
    return t


def main_test(scorer: Scorer, p: dict, sets: dict[str, neurons.NeuronSets], items: pd.DataFrame,
              n_random: int) -> tuple[pd.DataFrame, dict]:
    """Every named set x emotion: own effect on the emotion's items against n_random matched random sets; plus the
    masked x true scores of every own set on all items. Returns the test table and the score arrays."""
    E = p["emotions"]
    dialogues = items.dialogue.tolist()
    y_all = np.array([E.index(e) for e in items.label])
    base = scorer.calibrate(scorer.scores(dialogues, [{}], "baseline")[0])
    rows, arrays = [], {"base": base, "y": y_all, "own_all": {}, "random": {}}
    for name, ns in sets.items():
        firing = firing_rates(p["run_dir"], ns.meta["named_sets"][name]["settings"]) if "named_sets" in ns.meta \
            else None
        own_masks = [ns.by_layer(e) for e in E]
        own_all = scorer.calibrate(scorer.scores(dialogues, own_masks, f"{name}: own sets on all items"))
        arrays["own_all"][name] = own_all
        for j, e in enumerate(tqdm(E, desc=f"{name}: own vs matched random")):
            sel = y_all == j
            own = own_masks[j]
            n_own = sum(map(len, own.values()))
            if not n_own or not sel.any():
                rows.append({"set": name, "emotion": e, "n_neurons": n_own, "n_items": int(sel.sum())})
                continue
            rnd_masks = matched_sets(own, firing if firing is not None else torch.rand(ns.n_layers, ns.d_ff),
                                     n_random, p["seed"])
            rnd = scorer.calibrate(scorer.scores(items.dialogue[sel].tolist(), rnd_masks)) if rnd_masks else \
                np.zeros((0, int(sel.sum()), len(E)))
            arrays["random"][(name, e)] = rnd
            rows.append({"set": name, "emotion": e, "n_neurons": n_own,
                         **effect_row(base[sel], own_all[j][sel], rnd, y_all[sel], p["n_bootstrap"], p["seed"])})
    table = correct_family(pd.DataFrame(rows))
    return add_power(table, int(table["p"].notna().sum()) or 1), arrays


def masked_by_true(arrays: dict, name: str, emotions: list[str], metric: str = "margin") -> pd.DataFrame:
    """Masked emotion (rows) x true emotion (columns): mean change of margin (or accuracy) under each own set."""
    y, base = arrays["y"], arrays["base"]
    f = stats.margin if metric == "margin" else stats.correct
    b = f(base, y)
    out = [[float((f(arrays["own_all"][name][i], y) - b)[y == j].mean()) for j in range(len(emotions))]
           for i in range(len(emotions))]
    return pd.DataFrame(out, index=pd.Index(emotions, name="masked"), columns=pd.Index(emotions, name="true"))


def confusion_shift(arrays: dict, name: str, emotions: list[str]) -> pd.DataFrame:
    """Masked emotion (rows) x predicted label (columns): change in the share of the emotion's own items predicted
    as each label when its own set is masked (fractions; a row sums to 0)."""
    y, base = arrays["y"], arrays["base"]
    rows = []
    for i, e in enumerate(emotions):
        sel = y == i
        before = np.bincount(base[sel].argmax(1), minlength=len(emotions)) / max(1, sel.sum())
        after = np.bincount(arrays["own_all"][name][i][sel].argmax(1), minlength=len(emotions)) / max(1, sel.sum())
        rows.append(after - before)
    return pd.DataFrame(rows, index=pd.Index(emotions, name="masked (own items)"),
                        columns=pd.Index(emotions, name="predicted"))


def protocol_table(scorer: Scorer, clf_gen: classify.Classifier, p: dict, ns: neurons.NeuronSets,
                   items: pd.DataFrame, n_random: int) -> pd.DataFrame:
    """Own minus mean random accuracy change per emotion under four protocols: uncalibrated, calibration held fixed,
    calibration recomputed under each mask, and greedy generation (the published re-implementation's)."""
    E = p["emotions"]
    firing = firing_rates(p["run_dir"], ns.meta["named_sets"][ns.name]["settings"])
    rows = []
    for j, e in enumerate(tqdm(E, desc="protocols")):
        sel = items.label == e
        d = items.dialogue[sel].tolist()
        own = ns.by_layer(e)
        if not d or not sum(map(len, own.values())):
            continue
        masks = [{}, own] + matched_sets(own, firing, n_random, p["seed"])
        raw = scorer.scores(d, masks)
        cf = scorer.content_free(masks)
        y = np.full(len(d), j)
        row = {"emotion": e, "n_items": len(d)}
        for name, s in (("uncalibrated", raw), ("fixed calibration", raw - cf[0]),
                        ("recomputed calibration", raw - cf[:, None, :])):
            acc = np.array([stats.correct(x, y).mean() for x in s])
            row[name] = (acc[1] - acc[0]) - (acc[2:] - acc[0]).mean()
        gen = []
        for m in masks:
            with ablate.ablate(clf_gen.model, m):
                gen.append(np.mean([x == e for x in classify.generate_labels(clf_gen, d, p["max_new_tokens"])]))
        row["generate"] = (gen[1] - gen[0]) - (np.array(gen[2:]) - gen[0]).mean()
        row["generate_baseline"] = gen[0]
        rows.append(row)
    return pd.DataFrame(rows).set_index("emotion")


# ---------------------------------------------------------------- dose-response and depth (notebook 04)

def dose_sets(p: dict, ns: neurons.NeuronSets, rate: float) -> dict[str, dict[int, list[int]]]:
    """Each emotion's neurons when the set's variant selects top_rate = rate (its lowest-entropy neurons)."""
    settings = ns.meta["named_sets"][ns.name]["settings"]
    state = identify.load_counts(p["run_dir"], settings["tokens"])
    res = identify.select_variant(state, settings, rate, ns.meta.get("min_count", 0))
    out = {}
    for e in p["emotions"]:
        d: dict[int, list[int]] = {}
        for layer, idx in res["sets"][e]:
            d.setdefault(layer, []).append(idx)
        out[e] = d
    return out


def grid_test(scorer: Scorer, p: dict, ns: neurons.NeuronSets, items: pd.DataFrame,
              cells: dict[str, dict[str, dict[int, list[int]]]], n_random: int, what: str) -> pd.DataFrame:
    """Own vs matched random for every cell (a label -> {emotion: mask}) and emotion, on the emotion's items;
    Holm across all cells of the grid."""
    E = p["emotions"]
    firing = firing_rates(p["run_dir"], ns.meta["named_sets"][ns.name]["settings"])
    dialogues = items.dialogue.tolist()
    y_all = np.array([E.index(e) for e in items.label])
    base = scorer.calibrate(scorer.scores(dialogues, [{}])[0])
    rows = []
    for label, per_emotion in tqdm(list(cells.items()), desc=f"{ns.name}: {what}"):
        for j, e in enumerate(E):
            own = per_emotion.get(e, {})
            n_own = sum(map(len, own.values()))
            sel = y_all == j
            if not n_own or not sel.any():
                rows.append({"set": ns.name, what: label, "emotion": e, "n_neurons": n_own})
                continue
            d = items.dialogue[sel].tolist()
            masks = [own] + matched_sets(own, firing, n_random, p["seed"])
            s = scorer.calibrate(scorer.scores(d, masks))
            rows.append({"set": ns.name, what: label, "emotion": e, "n_neurons": n_own,
                         **effect_row(base[sel], s[0], s[1:], y_all[sel], p["n_bootstrap"], p["seed"])})
    return correct_family(pd.DataFrame(rows))


def range_cells(ns: neurons.NeuronSets, bins: int) -> dict[str, dict[str, dict[int, list[int]]]]:
    """The set's neurons inside each depth range (bottom / middle / top thirds for 3 bins, and all)."""
    ranges = ablate.layer_bins(ns.n_layers, bins)
    return {name: {e: {l: v for l, v in ns.by_layer(e).items() if l in r} for e in ns.emotions}
            for name, r in ranges.items()}


# ---------------------------------------------------------------- reading the results

def fmt_pp(v: float) -> str:
    """A fraction as signed percentage points."""
    return f"{100 * v:+.0f} pp" if np.isfinite(v) else "n/a"


def findings(table: pd.DataFrame, what: str = "main") -> list[str]:
    """'What this run shows', one sentence per tested row, from the corrected tests (nothing typed by hand)."""
    lines = []
    for _, r in table.iterrows():
        where = f"{r['set']} set, {r['emotion']}" + (f", {what} {r[what]}" if what != "main" else "")
        if not np.isfinite(r.get("p", np.nan)):
            lines.append(f"{where}: not tested ({int(r.get('n_neurons', 0))} neurons, {int(r.get('n_items', 0) or 0)} "
                         "items).")
            continue
        size = (f"own minus random margin {r.own_minus_random_margin:+.2f} [{r.omr_margin_lo:+.2f}, "
                f"{r.omr_margin_hi:+.2f}], accuracy {fmt_pp(r.own_minus_random_accuracy)} "
                f"[{fmt_pp(r.omr_accuracy_lo)}, {fmt_pp(r.omr_accuracy_hi)}]")
        tail = ""
        if r.verdict == "no detectable effect" and "items_for_80pct" in r and np.isfinite(r.get("power_at_10pp", np.nan)):
            need = r["items_for_80pct"]
            tail = (f"; power to see a 10 pp drop here was {r.power_at_10pp:.0%}, "
                    + (f"{int(need)} items per emotion would give 80%" if np.isfinite(need) else
                       "and no number of items reaches 80%: random sets alone move accuracy too much"))
        lines.append(f"{where} ({int(r.n_neurons)} neurons, {int(r.n_items)} items): {r.verdict} "
                     f"(Holm p = {r.p_holm:.3g}; {size}){tail}.")
    return lines


PAPER_CLAIMS = {"anger": "drop", "fear": "drop", "happiness": "little change or gain",
                "surprise": "little change or gain"}


def paper_comparison(table: pd.DataFrame) -> pd.DataFrame:
    """The paper's claims (anger and fear drop; joy and surprise robust) beside this run's corrected verdicts."""
    rows = []
    for e, claim in PAPER_CLAIMS.items():
        for _, r in table[table.emotion == e].iterrows():
            here = r.get("verdict", "not tested")
            agrees = ("not tested" if here == "not tested" else
                      (here == "own drop beyond random") if claim == "drop" else (here != "own drop beyond random"))
            rows.append({"emotion": e, "set": r["set"], "paper (Llama-3.1-8B)": claim, "this run": here,
                         "agrees": agrees})
    return pd.DataFrame(rows)


def random_means(arrays: dict, emotions: list[str]) -> dict[str, dict[tuple[str, str], np.ndarray]]:
    """Per (set, emotion): each random set's mean change of margin and of accuracy on the emotion's items."""
    out: dict = {"margin": {}, "accuracy": {}}
    y, base = arrays["y"], arrays["base"]
    for (name, e), rnd in arrays["random"].items():
        j = emotions.index(e)
        sel = y == j
        yy = y[sel]
        for metric, f in (("margin", stats.margin), ("accuracy", stats.correct)):
            b = f(base[sel], yy)
            out[metric][(name, e)] = np.array([(f(r, yy) - b).mean() for r in rnd])
    return out


def grid_findings(table: pd.DataFrame, what: str) -> list[str]:
    """Sentences for a grid: every Holm-significant cell, then how many cells show nothing and their median power."""
    name = {"rate": "dose-response", "range": "depth-range"}.get(what, what)
    t = table[np.isfinite(table.get("p", pd.Series(np.nan, table.index)).astype(float))]
    if t.empty:
        return [f"The {name} grid ran no test (no cell had neurons and items)."]
    sig = t[t.verdict.str.contains("beyond random")]
    fmt = (lambda v: f"{100 * v:g}% of neurons") if what == "rate" else (lambda v: f"{v} layers")
    lines = [f"{name.capitalize()} grid: {len(sig)} of {len(t)} cells differ from matched random sets after Holm "
             f"correction (alpha {ALPHA})."]
    for _, r in sig.iterrows():
        lines.append(f"{r['set']} set, {r.emotion}, {fmt(r[what])} ({int(r.n_neurons)} neurons): {r.verdict}, "
                     f"accuracy {fmt_pp(r.own_minus_random_accuracy)} [{fmt_pp(r.omr_accuracy_lo)}, "
                     f"{fmt_pp(r.omr_accuracy_hi)}] beyond random, margin {r.own_minus_random_margin:+.2f} "
                     f"(Holm p = {r.p_holm:.3g}).")
    rest = t[~t.index.isin(sig.index)]
    if len(rest):
        lines.append(f"The other {len(rest)} cells show no detectable effect; their own-minus-random accuracy changes "
                     f"range from {fmt_pp(rest.own_minus_random_accuracy.min())} to "
                     f"{fmt_pp(rest.own_minus_random_accuracy.max())}, and the random sets' own spread (SD) has a "
                     f"median of {100 * rest.random_d_accuracy_sd.median():.0f} pp, so smaller effects cannot be told "
                     "from noise at this size.")
    return lines


def combine(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One grid's tables of every set, Holm-corrected together as one family."""
    t = pd.concat(list(tables.values()), ignore_index=True)
    return correct_family(t.drop(columns=["p_holm", "verdict"], errors="ignore"))
