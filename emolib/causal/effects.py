"""Stages 3-4 as tests that can say yes: label scores under many masks (batched, cached), a pilot that picks the
intervention on random sets only, each neuron set's own effect against matched random sets, power, specificity,
and the pre-specified dose and depth contrasts.

Conventions (fixed before looking at any result):
- A delta is ablated minus unablated on the same items, so a drop is negative. The margin of an item is its true
  label's score minus the best other label's score (nat, float32); accuracy is stats.correct (ties count 1/k).
- The intervention and calibration (ARMS: zero or mean ablation x calibration fixed or recomputed under the mask)
  are chosen by PILOT_RULE on the paper set's matched random sets, before any own set is scored; every other arm
  is reported as secondary columns.
- The main test of a set and emotion compares the own set's mean margin delta on that emotion's eval items with
  the mean deltas of `n_random_sets` random sets matched per layer, firing decile and activation-SD decile: a
  two-sided t prediction p (t = (own - mean) / (sd sqrt(1 + 1/R)), df = R - 1), Holm-corrected across every set x
  emotion. Its interval inverts the same test; its power is that test's (stats.t_power).
- The `attribution` set (emolib.causal.attribution) is the positive control and is read first.
- Notebook 04 tests a small family fixed in advance (dose slope, top minus bottom, against random series); the full
  grids are descriptive.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from ..progress import tqdm

from . import attribution, budget, families, pooled, stats
from ..lm import ablate, batched, classify, models, prompts
from ..dataset import data
from ..identify import selection as identify, neurons
from ..lm.classify import PredictionCache

ALPHA = 0.05
POWER_DELTA = 0.25  # nat: the margin shift beyond random that power is reported for (fixed before looking)


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

ARMS = ("zero/fixed", "zero/recomputed", "mean/fixed", "mean/recomputed")  # intervention / calibration
PAPER_ARM = "zero/fixed"  # the paper's intervention (zeroing), read with the unablated model's calibration
PRIMARY_ARM = "zero/recomputed"  # the params' default primary arm, fixed before the data: zero ablation (the paper's)
PILOT_SEED_OFFSET = 1  # the pilot's matched sets come from seed + 1 (matched_sets), disjoint from the families
PILOT_RULE = ("descriptive: the paper set's matched random sets (other seeds than the test's families) are scored on "
              "every emotion's eval items under each arm; the table gives the SD of their mean margin change per "
              "arm, and the quietest arm is named, but the primary arm is the parameter file's `intervention`")


def item_hash(dialogue: str) -> str:
    """A short hash of one dialogue's text (its part of a score's cache key)."""
    return hashlib.sha1(dialogue.encode()).hexdigest()[:16]


def distinct(keys: list[str]) -> list[int]:
    """The index of each key's first occurrence, in order."""
    seen: set[str] = set()
    return [i for i, k in enumerate(keys) if not (k in seen or seen.add(k))]


def split_arm(arm: str) -> tuple[str, str]:
    """'mean/recomputed' -> ('mean', 'recomputed')."""
    mode, cal = arm.split("/")
    return mode, cal


REUSE_MASKS_PER_PASS = 32  # masks per pass when none touches the first layer (their lower layers run once per item)


class Scorer:
    """Raw label scores of dialogues under masks, many masks per forward pass, cached per (item, mask, mode); the
    arms (zero or mean ablation x calibration fixed or recomputed under the mask) are applied on reading."""

    def __init__(self, clf: classify.Classifier, p: dict, tag: dict, masks_per_pass: int = 8,
                 means: torch.Tensor | None = None, arm: str = PAPER_ARM):
        from dataclasses import replace
        self.use_calibration = clf.calibrate  # applied here; the cached scores themselves are raw
        self.clf, self.p, self.masks_per_pass = replace(clf, calibrate=False), p, masks_per_pass
        self.tag = {"prompt_style": tag["prompt_style"], "few_shot": tag["few_shot"],
                    "prompt_template": p.get("prompt_template")}
        self.cache = PredictionCache(Path(p["run_dir"]) / "cache" / "scores.jsonl")
        self.means, self.arm = means, arm
        self.means_hash = None if means is None else attribution.neuron_hash(means)
        self.computed = 0  # item-masks scored (not read from the cache) by this scorer
        self.seconds = 0.0  # the time they took
        self.on_progress = None  # called with (item-masks just scored) after each pass (the budget's progress line)
        self.base_cf = self.content_free([{}], "zero")[0]

    def mask_key(self, mask: dict[int, list[int]], mode: str = "zero") -> str:
        """Everything a mask's raw scores depend on but the item, hashed: model, dtype, prompt, labels, mask, the
        intervention and, for mean ablation, the means (calibration is applied after reading)."""
        if mode not in ablate.MODES:
            raise ValueError(f"ablation mode: must be one of {', '.join(ablate.MODES)}, got {mode!r}")
        if not any(mask.values()):
            mode = "zero"  # nothing masked: every mode scores the unablated model
        blob = json.dumps([self.p["model"], str(self.clf.model.dtype), self.tag, self.clf.labels,
                           {str(k): sorted(v) for k, v in sorted(mask.items()) if v},
                           mode, self.means_hash if mode == "mean" else None])
        return hashlib.sha1(blob.encode()).hexdigest()[:24]

    def key(self, dialogue: str, mask: dict[int, list[int]], mode: str = "zero") -> str:
        """The cache key of one item under one mask and mode."""
        return self.mask_key(mask, mode) + item_hash(dialogue)

    def scores(self, dialogues: list[str], masks: list[dict[int, list[int]]], desc: str | None = None,
               mode: str | None = None) -> np.ndarray:
        """[K, N, labels] raw scores under mode (default: the primary arm's); only the (item, mask) pairs not in the
        cache are scored, masks_per_pass masks per forward pass, masks missing the same items together."""
        import time
        mode = mode or split_arm(self.arm)[0]
        if mode == "mean" and self.means is None:
            raise ValueError("mean ablation needs the neurons' means on the scoring sequence (attribution.moments)")
        ih = [item_hash(d) for d in dialogues]
        mk = [self.mask_key(m, mode) for m in masks]
        items = distinct(ih)
        groups: dict[tuple[int, ...], list[int]] = {}  # the items a mask lacks -> the masks lacking exactly those
        for k in distinct(mk):
            miss = tuple(i for i in items if mk[k] + ih[i] not in self.cache.rows)
            if miss:
                groups.setdefault(miss, []).append(k)
        for miss, ks in groups.items():
            per = self.masks_per_pass
            if batched.first_masked_layer([masks[k] for k in ks]) not in (0, None):
                per = max(per, REUSE_MASKS_PER_PASS)  # the unmasked lower layers then run once for all these masks
            for s in range(0, len(ks), per):
                chunk = ks[s:s + per]
                t = time.perf_counter()
                arr = batched.score_masks(self.clf, [dialogues[i] for i in miss], [masks[k] for k in chunk],
                                          mode=mode, means=self.means, calibration=None, progress=desc)
                self.seconds += time.perf_counter() - t
                self.computed += arr.shape[0] * arr.shape[1]
                self.cache.put_many({mk[k] + ih[i]: np.round(a[n], 6).tolist()
                                     for k, a in zip(chunk, arr) for n, i in enumerate(miss)})
                if self.on_progress:
                    self.on_progress(arr.shape[0] * arr.shape[1])
        return np.asarray([[self.cache.rows[k + h] for h in ih] for k in mk], dtype=float).reshape(
            len(masks), len(dialogues), -1)

    def content_free(self, masks: list[dict[int, list[int]]], mode: str | None = None) -> np.ndarray:
        """[K, labels] raw scores of the content-free dialogue under each mask (for recomputed calibration)."""
        return self.scores([prompts.CONTENT_FREE], masks, mode=mode)[:, 0]

    def calibrate(self, raw: np.ndarray) -> np.ndarray:
        """Scores with the unablated model's content-free scores held fixed (or raw when calibrate is false)."""
        return raw - self.base_cf if self.use_calibration else raw

    def arm_scores(self, dialogues: list[str], masks: list[dict[int, list[int]]], arm: str | None = None,
                   desc: str | None = None) -> np.ndarray:
        """[K, N, labels] scores under an arm (default the primary): the intervention, then the calibration held
        fixed or recomputed under each mask (raw when the instrument does not calibrate)."""
        mode, cal = split_arm(arm or self.arm)
        raw = self.scores(dialogues, masks, desc, mode)
        if not self.use_calibration:
            return raw
        if cal == "recomputed":
            return raw - self.content_free(masks, mode)[:, None, :]
        return raw - self.base_cf

    def arms(self) -> list[str]:
        """The arms this instrument can read: all four, or the two interventions when it does not calibrate."""
        return list(ARMS) if self.use_calibration else ["zero/fixed", "mean/fixed"]


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
    from ..safeio import atomic_write_json
    path = Path(p["run_dir"]) / "instrument.json"
    atomic_write_json(path, {"chosen": chosen, "dev_items": n_dev,
                             "rule": "highest accuracy holding on both halves of dev, ties to fewer shots",
                             "candidates": json.loads(table.to_json(orient="records"))}, indent=1)
    return path


def save_pilot(p: dict, table: pd.DataFrame, decision: dict) -> Path:
    """Add the pilot (its rule, SDs, decision and table) to run_dir/instrument.json."""
    from ..safeio import atomic_write_json, read_json
    path = Path(p["run_dir"]) / "instrument.json"
    inst = read_json(path, "instrument file") if path.exists() else {
        "chosen": {"prompt_style": p["prompt_style"], "few_shot": p["few_shot"], "calibrate": p["calibrate"]}}
    inst["pilot"] = {**decision, "table": json.loads(table.to_json(orient="records"))}
    atomic_write_json(path, inst, indent=1)
    return path


def load_scorer(p: dict, model=None, tok=None) -> tuple[object, object, classify.Classifier, dict, Scorer,
                                                        torch.Tensor | None]:
    """(model, tokenizer, classifier, instrument, scorer under the pilot's arm, activation SDs) as notebook 03 left
    them, for notebook 04 and the CLI."""
    model, tok, clf, inst = load_instrument(p, model, tok)
    path = Path(p["run_dir"]) / "instrument.json"
    design = budget.load(p) or {}
    arm = design.get("intervention") or (json.loads(path.read_text()).get("pilot", {}).get("chosen") if path.exists()
                                         else None) or p.get("intervention", PRIMARY_ARM)
    sums = attribution.load(p["run_dir"])
    means, spread = attribution.moments(sums) if sums is not None else (None, None)
    if split_arm(arm)[0] == "mean" and means is None:
        raise ValueError(f"{p['run_dir']}: the pilot chose {arm} but {attribution.STATS_FILE} is missing; rerun "
                         "notebook 03")
    return model, tok, clf, inst, Scorer(clf, p, inst, means=means, arm=arm), spread


# ---------------------------------------------------------------- own vs matched random

def firing_rates(run_dir: str | Path, settings: dict) -> torch.Tensor:
    """[L, D] each neuron's highest firing probability over emotions, for the set's tensor and tokens."""
    from safetensors.torch import load_file
    P = load_file(str(Path(run_dir) / "probabilities.safetensors"))[f"{settings['tokens']}_P_{settings['tensor']}"]
    return P.float().max(0).values


def matched_sets(own: dict[int, list[int]], firing: torch.Tensor, n: int, seed: int,
                 spread: torch.Tensor | None = None) -> list[dict[int, list[int]]]:
    """n random sets matched to own per layer, firing decile and (given spread) activation-SD decile, never drawing
    own neurons (seeded: set j is the same draw wherever own is the same)."""
    return [dict(ablate.random_matched(own, firing, seed * 1000 + j, exclude=own, spread=spread)) for j in range(n)]


def set_firing(p: dict, ns: neurons.NeuronSets) -> torch.Tensor:
    """[L, D] firing rates that a set's random sets are matched on (the paper's recording for sets without one)."""
    return firing_rates(p["run_dir"], set_settings(ns))


def set_settings(ns: neurons.NeuronSets) -> dict:
    """The recording settings (tokens, tensor) a set was selected from; the paper set's for the attribution set."""
    named = ns.meta.get("named_sets", {})
    return (named.get(ns.name) or {}).get("settings") or named["paper"]["settings"]


def mean_deltas(base: np.ndarray, scored: np.ndarray, y: np.ndarray, metric=stats.margin) -> np.ndarray:
    """[K] each scored set's mean change of a per-item metric (margin or correct) from the baseline scores."""
    b = metric(base, y)
    return np.array([(metric(s, y) - b).mean() for s in scored])


def effect_row(base: np.ndarray, own: np.ndarray, rand: np.ndarray, y: np.ndarray, n_boot: int,
               seed: int) -> dict:
    """One own-vs-random test on the same items: scores [N, labels] unablated and own, [R, N, labels] random.

    The tested contrast is the own set's mean margin change minus the random sets' mean; its p (two-sided t
    prediction, R - 1 df) and its interval (omr_*_lo/hi, the same test inverted) both use the random sets' spread.
    own_d_margin_lo/hi resample items only: how precisely the own set's change on these items is measured."""
    mb, ab = stats.margin(base, y), stats.correct(base, y)
    d_own_m, d_own_a = stats.margin(own, y) - mb, stats.correct(own, y) - ab
    row = {"n_items": len(y), "baseline_accuracy": ab.mean(), "baseline_margin": mb.mean(),
           "own_d_margin": d_own_m.mean(), "own_d_accuracy": d_own_a.mean(), "n_random": len(rand)}
    own_ci = stats.paired_delta(mb, mb + d_own_m, n_boot, seed=seed)
    row.update(own_d_margin_lo=own_ci.lo, own_d_margin_hi=own_ci.hi)
    if len(rand) >= 2:
        rm, ra = mean_deltas(base, rand, y), mean_deltas(base, rand, y, stats.correct)
        dm, mlo, mhi = stats.prediction_ci(d_own_m.mean(), rm)
        da, alo, ahi = stats.prediction_ci(d_own_a.mean(), ra)
        row.update(random_d_margin=rm.mean(), random_d_margin_sd=rm.std(ddof=1), random_d_accuracy=ra.mean(),
                   random_d_accuracy_sd=ra.std(ddof=1),
                   own_minus_random_margin=dm, omr_margin_lo=mlo, omr_margin_hi=mhi,
                   own_minus_random_accuracy=da, omr_accuracy_lo=alo, omr_accuracy_hi=ahi,
                   p=stats.normal_p(d_own_m.mean(), rm, "two-sided"),
                   p_accuracy=stats.normal_p(d_own_a.mean(), ra, "two-sided"))
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


def add_power(table: pd.DataFrame, delta: float = POWER_DELTA, alpha: float = ALPHA) -> pd.DataFrame:
    """Each test's power to detect a margin shift delta (nat) beyond random (two-sided t prediction test, R - 1 df,
    at Holm's strictest level alpha / m, m = the tests of its set), and the shift delta_80 at which it reaches 80%."""
    t = table.copy()
    for c in ("random_d_margin_sd", "n_random", "p"):
        if c not in t:
            t[c] = np.nan
    m = t.groupby("set", sort=False)["p"].transform(lambda x: max(1, int(x.notna().sum())))
    ok = [np.isfinite(sd) and np.isfinite(r) and r >= 2 for sd, r in zip(t["random_d_margin_sd"], t["n_random"])]
    t["power_delta"] = delta
    t["power"] = [stats.t_power(delta, sd, int(r), alpha, int(k)) if o else np.nan
                  for sd, r, k, o in zip(t["random_d_margin_sd"], t["n_random"], m, ok)]
    t["delta_80"] = [stats.delta_for_power(sd, int(r), alpha, int(k)) if o else np.nan
                     for sd, r, k, o in zip(t["random_d_margin_sd"], t["n_random"], m, ok)]
    return t


# ---------------------------------------------------------------- the pilot (random sets only)

def pilot(scorer: Scorer, p: dict, ns: neurons.NeuronSets, items: pd.DataFrame, n_random: int,
          spread: torch.Tensor | None) -> tuple[pd.DataFrame, dict]:
    """Per arm and emotion, the SD (and mean) of the paper set's matched random sets' mean margin change on the
    emotion's eval items; the primary arm by PILOT_RULE. No own set is scored."""
    E = p["emotions"]
    firing = set_firing(p, ns)
    y_all = np.array([E.index(e) for e in items.label])
    rows = []
    for j, e in enumerate(tqdm(E, desc="pilot: random sets under each arm")):
        own, sel = ns.by_layer(e), y_all == j
        if not sum(map(len, own.values())) or not sel.any():
            continue
        d, y = items.dialogue[sel].tolist(), y_all[sel]
        masks = matched_sets(own, firing, n_random, p["seed"] + PILOT_SEED_OFFSET, spread)
        for arm in scorer.arms():
            base = scorer.arm_scores(d, [{}], arm)[0]
            s = scorer.arm_scores(d, masks, arm)
            per_item = np.stack([stats.margin(x, y) for x in s]) - stats.margin(base, y)  # [R, n]
            dm = per_item.mean(1)
            between, within = budget.components(per_item)
            rows.append({"arm": arm, "emotion": e, "n_items": len(d), "n_random": len(masks),
                         "random_d_margin": dm.mean(), "random_d_margin_sd": dm.std(ddof=1),
                         "var_between_sets": between, "var_set_x_item": within})
    table = pd.DataFrame(rows)
    return table, pilot_decision(table)


def pilot_decision(table: pd.DataFrame) -> dict:
    """The primary arm: the smallest median over emotions of the random sets' SD (PILOT_RULE), with the SDs."""
    med = table.groupby("arm")["random_d_margin_sd"].median() if len(table) else pd.Series(dtype=float)
    order = [PAPER_ARM] + [a for a in ARMS if a != PAPER_ARM]
    ranked = sorted(med.index, key=lambda a: (med[a], order.index(a) if a in order else len(order)))
    chosen = ranked[0] if ranked else PAPER_ARM
    paper = med.get(PAPER_ARM, np.nan)
    finite = lambda v: float(v) if np.isfinite(v) else None  # noqa: E731  (JSON has no NaN)
    return {"rule": PILOT_RULE, "quietest": chosen, "median_sd": {a: finite(med[a]) for a in med.index},
            "sd_ratio_to_paper_arm": {a: finite(med[a] / paper) if paper else None for a in med.index}}


# ---------------------------------------------------------------- the main test

def main_test(scorer: Scorer, p: dict, sets: dict[str, neurons.NeuronSets], items: pd.DataFrame,
              n_random: int, spread: torch.Tensor | None = None, secondary_random: int = 3
              ) -> tuple[pd.DataFrame, dict, pd.DataFrame]:
    """Every named set x emotion under the primary arm: the own set's effect on the emotion's items against the
    images of n_random random families (emolib.causal.families); every other arm as secondary columns (all n_random
    families where the arm reads the primary's intervention, else secondary_random); plus the masked x true scores
    of every own set on all items. Returns the per-emotion table (Holm within each set), the score arrays and
    random_sets.csv's rows (every own and random value of every arm, from which the tables are recomputed)."""
    E = p["emotions"]
    dialogues = items.dialogue.tolist()
    y_all = np.array([E.index(e) for e in items.label])
    base = scorer.arm_scores(dialogues, [{}], desc="baseline")[0]
    primary_mode = split_arm(scorer.arm)[0]
    rows, rs = [], []
    arrays = {"base": base, "y": y_all, "own_all": {}, "random": {}, "masks": {}, "maps": {}}
    for name, ns in sets.items():
        firing = set_firing(p, ns)
        own_masks = [ns.by_layer(e) for e in E]
        maps = families.family_maps(families.union(dict(zip(E, own_masks))), firing, n_random, p["seed"], spread)
        arrays["maps"][name] = maps
        own_all = scorer.arm_scores(dialogues, own_masks, desc=f"{name}: own sets on all items")
        arrays["own_all"][name] = own_all
        for j, e in enumerate(tqdm(E, desc=f"{name}: own vs random families")):
            sel, own = y_all == j, own_masks[j]
            n_own = sum(map(len, own.values()))
            if not n_own or not sel.any():
                rows.append({"set": name, "emotion": e, "n_neurons": n_own, "n_items": int(sel.sum())})
                continue
            d, y = items.dialogue[sel].tolist(), y_all[sel]
            rnd_masks = [families.image(m, own) for m in maps]
            rnd = scorer.arm_scores(d, rnd_masks)
            arrays["random"][(name, e)], arrays["masks"][(name, e)] = rnd, rnd_masks
            row = {"set": name, "emotion": e, "n_neurons": n_own, "arm": scorer.arm,
                   **effect_row(base[sel], own_all[j][sel], rnd, y, p["n_bootstrap"], p["seed"])}
            rs += arm_records(name, scorer.arm, e, n_own, base[sel], own_all[j][sel], rnd, y)
            for arm in scorer.arms():
                if arm == scorer.arm:
                    continue
                r2 = n_random if split_arm(arm)[0] == primary_mode else secondary_random
                s = scorer.arm_scores(d, [{}, own] + rnd_masks[:r2], arm)
                er = effect_row(s[0], s[1], s[2:], y, p["n_bootstrap"], p["seed"])
                row.update({f"omr_margin[{arm}]": er.get("own_minus_random_margin", np.nan),
                            f"p[{arm}]": er.get("p", np.nan), f"n_random[{arm}]": r2})
                rs += arm_records(name, arm, e, n_own, s[0], s[1], s[2:], y)
            rows.append(row)
    table = within_sets(pd.DataFrame(rows))
    for arm in scorer.arms():
        if f"p[{arm}]" in table:
            table[f"p_holm[{arm}]"] = np.concatenate([stats.holm(g[f"p[{arm}]"].to_numpy())
                                                      for _, g in table.groupby("set", sort=False)])
    return (add_power(table, p.get("power_delta", POWER_DELTA)), arrays, pooled.frame(rs))


def arm_records(name: str, arm: str, emotion: str, n_own: int, base: np.ndarray, own: np.ndarray, rnd: np.ndarray,
                y: np.ndarray) -> list[dict]:
    """random_sets.csv rows of one set, arm and emotion: the own set's and each random family's mean changes."""
    o = [mean_deltas(base, own[None], y)[0], mean_deltas(base, own[None], y, stats.correct)[0]]
    return (pooled.records(name, arm, "own", emotion, len(y), n_own, o[0], o[1]) +
            pooled.records(name, arm, "random", emotion, len(y), n_own, mean_deltas(base, rnd, y),
                           mean_deltas(base, rnd, y, stats.correct)))


def within_sets(table: pd.DataFrame) -> pd.DataFrame:
    """correct_family within each set (the per-emotion tests are secondary: Holm over a set's emotions)."""
    if table.empty:
        return correct_family(table)
    return pd.concat([correct_family(g) for _, g in table.groupby("set", sort=False)])


def titration(scorer: Scorer, p: dict, ns: neurons.NeuronSets, control: neurons.NeuronSets, items: pd.DataFrame,
              shares: list[float], draws: int, start: int, spread: torch.Tensor | None = None) -> pd.DataFrame:
    """random_sets.csv rows of the titrated families: per share and draw, a random family of ns (families start,
    start + 1, ..., disjoint from the test's) with that share of each emotion's set replaced by the control's
    neurons, scored on each emotion's items under the primary arm."""
    E = p["emotions"]
    y_all = np.array([E.index(e) for e in items.label])
    own = [ns.by_layer(e) for e in E]
    ctl = [control.by_layer(e) for e in E]
    maps = families.family_maps(families.union(dict(zip(E, own))), set_firing(p, ns), draws, p["seed"], spread,
                                start=start)
    fams = {(sh, k): families.titrated_family(maps[k], own, ctl, sh, p["seed"], k) for sh in shares
            for k in range(draws)}
    rows = []
    for j, e in enumerate(tqdm(E, desc=f"{ns.name}: titrated families")):
        sel = y_all == j
        if not sel.any() or not sum(map(len, own[j].values())):
            continue
        d, y = items.dialogue[sel].tolist(), y_all[sel]
        base = scorer.arm_scores(d, [{}])[0]
        keys = list(fams)
        s = scorer.arm_scores(d, [fams[k][j] for k in keys])
        dm, da = mean_deltas(base, s, y), mean_deltas(base, s, y, stats.correct)
        for (sh, k), m, a in zip(keys, dm, da):
            rows += pooled.records(ns.name, scorer.arm, "titrated", e, len(y),
                                   sum(map(len, fams[(sh, k)][j].values())), m, a, share=sh, start=k)
    return pooled.frame(rows)


def arm_summary(table: pd.DataFrame, arms: list[str], primary: str) -> pd.DataFrame:
    """Per set and arm: tests rejected after Holm within the arm, and the median own-minus-random margin."""
    rows = []
    for name, t in table.groupby("set", sort=False):
        for arm in arms:
            p_col, d_col = ("p_holm", "own_minus_random_margin") if arm == primary else \
                (f"p_holm[{arm}]", f"omr_margin[{arm}]")
            if p_col not in t:
                continue
            tested = t[p_col].notna()
            rows.append({"set": name, "arm": arm + (" (primary)" if arm == primary else "") +
                         (" · the paper's intervention" if arm == PAPER_ARM else ""),
                         "tests": int(tested.sum()), "rejected": int((t.loc[tested, p_col] < ALPHA).sum()),
                         "median own − random margin": float(t.loc[tested, d_col].median())})
    return pd.DataFrame(rows)


def specificity_random(scorer: Scorer, p: dict, sets: dict[str, neurons.NeuronSets], items: pd.DataFrame,
                       arrays: dict, n_sets: int) -> None:
    """Adds arrays['random_all'][set]: [E, n_sets, N, labels] scores of each emotion's first n_sets matched random
    sets on all items (the random rows beside the masked x true table)."""
    dialogues = items.dialogue.tolist()
    arrays.setdefault("random_all", {})
    for name in sets:
        per = []
        for e in p["emotions"]:
            masks = arrays["masks"].get((name, e), [])[:n_sets]
            per.append(scorer.arm_scores(dialogues, masks) if masks else
                       np.full((n_sets, len(dialogues), len(p["emotions"])), np.nan))
        arrays["random_all"][name] = np.stack(per)


def masked_by_true(arrays: dict, name: str, emotions: list[str], metric: str = "margin",
                   random: bool = False) -> pd.DataFrame:
    """Masked emotion (rows) x true emotion (columns): mean change of margin (or accuracy) under each own set, or
    (random) under that emotion's matched random sets, averaged over the sets."""
    y, base = arrays["y"], arrays["base"]
    f = stats.margin if metric == "margin" else stats.correct
    b = f(base, y)

    def cell(scores: np.ndarray, j: int) -> float:
        d = (f(scores, y) - b)[y == j]
        return float(d.mean()) if d.size else np.nan  # no items of that emotion: no value, and no warning

    def mean(values: list[float]) -> float:
        v = np.asarray(values, dtype=float)
        return float(np.nanmean(v)) if np.isfinite(v).any() else np.nan

    if random:
        ra = arrays["random_all"][name]
        out = [[mean([cell(s, j) for s in ra[i]]) if len(ra[i]) else np.nan
                for j in range(len(emotions))] for i in range(len(emotions))]
    else:
        out = [[cell(arrays["own_all"][name][i], j) for j in range(len(emotions))] for i in range(len(emotions))]
    return pd.DataFrame(out, index=pd.Index(emotions, name="masked"), columns=pd.Index(emotions, name="true"))


def specificity(arrays: dict, ns: neurons.NeuronSets, emotions: list[str]) -> pd.DataFrame:
    """Per emotion of a set: how much of its neurons and of its effect it shares with the other emotions' sets.

    shared_neurons: the share of its neurons that are also in another emotion's set; own_d: its own set's margin
    change on its items; others_d: the mean change the other emotions' sets cause on the same items;
    shared_effect: others_d / own_d (1 = the other sets do as much); own_minus_others: what is specific."""
    mbt = masked_by_true(arrays, ns.name, emotions)
    rows = []
    for j, e in enumerate(emotions):
        mine = set(map(tuple, ns.sets[e]))
        rest = {tuple(x) for f in emotions if f != e for x in ns.sets[f]}
        own_d = mbt.iloc[j, j]
        others = float(np.mean([mbt.iloc[i, j] for i in range(len(emotions)) if i != j]))
        rows.append({"set": ns.name, "emotion": e, "n_neurons": len(mine),
                     "shared_neurons": len(mine & rest) / len(mine) if mine else np.nan,
                     "own_d": own_d, "others_d": others, "own_minus_others": own_d - others,
                     "shared_effect": others / own_d if own_d else np.nan})
    return pd.DataFrame(rows)


def specificity_all(arrays: dict, sets: dict[str, neurons.NeuronSets], emotions: list[str]) -> pd.DataFrame:
    """specificity for every named set, one table."""
    return pd.concat([specificity(arrays, ns, emotions) for ns in sets.values()], ignore_index=True)


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
    """Own minus mean random accuracy change per emotion under greedy generation (the published
    re-implementation's protocol) with zero ablation, beside the uncalibrated scores (descriptive, n_random sets)."""
    E = p["emotions"]
    firing = set_firing(p, ns)
    rows = []
    for j, e in enumerate(tqdm(E, desc="protocols")):
        sel = items.label == e
        d = items.dialogue[sel].tolist()
        own = ns.by_layer(e)
        if not d or not sum(map(len, own.values())):
            continue
        masks = [{}, own] + matched_sets(own, firing, n_random, p["seed"])
        raw = scorer.scores(d, masks, mode="zero")
        y = np.full(len(d), j)
        acc = np.array([stats.correct(x, y).mean() for x in raw])
        row = {"emotion": e, "n_items": len(d), "uncalibrated": (acc[1] - acc[0]) - (acc[2:] - acc[0]).mean()}
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
    """Each emotion's neurons when the set's rule selects top_rate = rate: its lowest-entropy neurons, or for the
    attribution set its strongest estimated drops, as many per emotion as the paper's rule selects at that rate."""
    entry = ns.meta["named_sets"][ns.name]
    settings = set_settings(ns)
    state = identify.load_counts(p["run_dir"], settings["tokens"])
    res = identify.select_variant(state, settings, rate, ns.meta.get("min_count", 0))
    sets = res["sets"]
    if entry.get("variant") == "attribution":
        est = attribution.load_estimate(p["run_dir"])
        sets = attribution.select(est, [len(res["sets"][e]) for e in p["emotions"]], p["emotions"])
    elif entry.get("variant") == "weights":  # its top-scoring neurons through the unembedding, sized likewise
        from ..identify.weights import dose_select as weights_dose
        sets = weights_dose(p["run_dir"], [len(res["sets"][e]) for e in p["emotions"]], p["emotions"])
    elif entry.get("variant") == "directions":  # its top contributions, sized like the paper's rule (emolib.identify.directions)
        from ..identify.directions import dose_select
        sets = dose_select(p["run_dir"], [len(res["sets"][e]) for e in p["emotions"]], p["emotions"])
    out = {}
    for e in p["emotions"]:
        d: dict[int, list[int]] = {}
        for layer, idx in sets[e]:
            d.setdefault(layer, []).append(idx)
        out[e] = d
    return out


def range_cells(ns: neurons.NeuronSets, bins: int, only: list[str] | None = None
                ) -> dict[str, dict[str, dict[int, list[int]]]]:
    """The set's neurons inside each depth range (bottom / middle / top thirds for 3 bins, and all; or only those)."""
    ranges = {k: v for k, v in ablate.layer_bins(ns.n_layers, bins).items() if only is None or k in only}
    return {name: {e: {l: v for l, v in ns.by_layer(e).items() if l in r} for e in ns.emotions}
            for name, r in ranges.items()}


def grid_scores(scorer: Scorer, p: dict, ns: neurons.NeuronSets, items: pd.DataFrame,
                cells: dict, n_random: int, spread: torch.Tensor | None) -> dict:
    """Per emotion and cell: the own set's and each random family's mean margin and accuracy change on the emotion's
    items ({(emotion, cell): {'own': (m, a), 'random': [R, 2], 'n_neurons', 'n_items'}}). A cell's families map the
    union of its emotions' neurons (emolib.causal.families), so series r of every emotion is one family."""
    E = p["emotions"]
    firing = set_firing(p, ns)
    y_all = np.array([E.index(e) for e in items.label])
    maps = {label: families.family_maps(families.union(per_emotion), firing, n_random, p["seed"], spread)
            for label, per_emotion in cells.items()}
    out = {}
    for j, e in enumerate(tqdm(E, desc=f"{ns.name}: grid")):
        sel = y_all == j
        if not sel.any():
            continue
        d, y = items.dialogue[sel].tolist(), y_all[sel]
        base = scorer.arm_scores(d, [{}])[0]
        for label, per_emotion in cells.items():
            own = per_emotion.get(e, {})
            if not sum(map(len, own.values())):
                continue
            masks = [own] + [families.image(m, own) for m in maps[label]]
            s = scorer.arm_scores(d, masks)
            dm, da = mean_deltas(base, s, y), mean_deltas(base, s, y, stats.correct)
            out[(e, label)] = {"own": (dm[0], da[0]), "random": np.stack([dm[1:], da[1:]], 1),
                               "n_neurons": sum(map(len, own.values())), "n_items": len(d)}
    return out


def grid_cells(g: dict, name: str, what: str) -> pd.DataFrame:
    """The descriptive grid: every cell's own and random changes with its own-minus-random interval (not tested)."""
    rows = []
    for (e, label), c in g.items():
        rm, ra = c["random"][:, 0], c["random"][:, 1]
        dm, mlo, mhi = stats.prediction_ci(c["own"][0], rm)
        da, alo, ahi = stats.prediction_ci(c["own"][1], ra)
        rows.append({"set": name, what: label, "emotion": e, "n_neurons": c["n_neurons"], "n_items": c["n_items"],
                     "n_random": len(rm), "own_d_margin": c["own"][0], "own_d_accuracy": c["own"][1],
                     "random_d_margin": rm.mean(), "random_d_margin_sd": rm.std(ddof=1) if len(rm) > 1 else np.nan,
                     "random_d_accuracy_sd": ra.std(ddof=1) if len(ra) > 1 else np.nan,
                     "own_minus_random_margin": dm, "omr_margin_lo": mlo, "omr_margin_hi": mhi,
                     "own_minus_random_accuracy": da, "omr_accuracy_lo": alo, "omr_accuracy_hi": ahi})
    return pd.DataFrame(rows)


def grid_table(grids: dict[str, dict], what: str) -> pd.DataFrame:
    """grid_cells of every set, one table."""
    return pd.concat([grid_cells(g, name, what) for name, g in grids.items()], ignore_index=True)


def dose_slope(rates: list[float], values: np.ndarray) -> float:
    """Least-squares slope of margin change against log10 of the share of neurons masked (per tenfold dose)."""
    x = np.log10(np.asarray(rates, dtype=float))
    v = np.asarray(values, dtype=float)
    return float(np.polyfit(x, v, 1)[0]) if len(x) >= 2 else np.nan


CONTRASTS = {"dose slope": "slope of the margin change per tenfold dose, own against each random series",
             "top minus bottom": "margin change with the top third's neurons minus the bottom third's, own against "
                                 "each random pair"}


def grid_contrasts(dose_g: dict[str, dict], range_g: dict[str, dict], emotions: list[str], rates: list[float],
                   delta: float = POWER_DELTA) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(pooled, per emotion): notebook 04's pre-specified contrasts. The confirmatory family is the pooled one: per
    named set the dose slope (two doses or more) and top minus bottom (both ranges scored), each the mean over
    emotions against the same mean of each random series, Holm-corrected over every named set x contrast (control
    sets apart). Per emotion, the same contrasts are secondary (Holm within each set and contrast)."""
    rows, todo = [], []
    for name in dose_g:
        if len(rates) >= 2:
            todo.append((name, dose_g[name], "dose slope", rates))
        keys = range_g.get(name, {})
        if any(k[1] == "top" for k in keys) and any(k[1] == "bottom" for k in keys):
            todo.append((name, range_g[name], "top minus bottom", ["top", "bottom"]))
    m_tests = max(1, sum(name not in pooled.CONTROLS for name, *_ in todo))  # Holm's m of the named sets' family
    m_controls = max(1, len(todo) - m_tests)
    pooled_rows = []
    for name, g, contrast, labels in todo:
        per = contrast_rows(g, name, emotions, contrast, labels)
        rows.append(correct_family(pd.DataFrame(per).drop(columns="random_values", errors="ignore")))
        pooled_rows.append(pooled_contrast(per, name, contrast, delta,
                                           m_controls if name in pooled.CONTROLS else m_tests))
    per_emotion = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
    pt = pd.DataFrame(pooled_rows)
    if pt.empty:
        return pt, per_emotion
    parts = [pooled.decide(pt[pt.role == r], delta) for r in ("test", "control") if (pt.role == r).any()]
    return pd.concat(parts).reindex(pt.index), per_emotion


def pooled_contrast(per: list[dict], name: str, contrast: str, delta: float, m: int = 1) -> dict:
    """One pooled contrast: the mean over emotions of the own contrast against the same mean of each random series."""
    ok = [r for r in per if "own" in r and "random_values" in r]
    row = {"set": name, "contrast": contrast, "role": "control" if name in pooled.CONTROLS else "test",
           "n_emotions": len(ok)}
    if not ok:
        return {**row, "p": np.nan, "p_equivalence": np.nan, "own_minus_random": np.nan}
    R = min(len(r["random_values"]) for r in ok)
    own = float(np.mean([r["own"] for r in ok]))
    null = np.mean([r["random_values"][:R] for r in ok], axis=0)
    return {**row, **pooled.test_row(own, null, delta, m)}


def contrast_rows(g: dict, name: str, emotions: list[str], contrast: str, labels: list) -> list[dict]:
    """The pre-specified contrast of a grid per emotion: own value against the random series' values (t prediction
    p, interval); random series j is random set j of every cell."""
    rows = []
    for e in emotions:
        cells = [g.get((e, l)) for l in labels]
        if any(c is None for c in cells) or min(len(c["random"]) for c in cells) < 2:
            rows.append({"set": name, "emotion": e, "contrast": contrast})
            continue
        R = min(len(c["random"]) for c in cells)
        own_v = np.array([c["own"][0] for c in cells])
        rnd_v = np.stack([c["random"][:R, 0] for c in cells], 1)  # [R, cells]
        if contrast == "dose slope":
            f = lambda v: dose_slope(labels, v)  # noqa: E731
        else:
            f = lambda v: v[0] - v[1]  # noqa: E731  (labels = [top, bottom])
        own, rnd = f(own_v), np.array([f(r) for r in rnd_v])
        d, lo, hi = stats.prediction_ci(own, rnd)
        rows.append({"set": name, "emotion": e, "contrast": contrast, "n_random": R,
                     "n_neurons": int(sum(c["n_neurons"] for c in cells)), "n_items": cells[0]["n_items"],
                     "own": own, "random_mean": rnd.mean(), "random_d_margin_sd": rnd.std(ddof=1),
                     "own_minus_random_margin": d, "omr_margin_lo": lo, "omr_margin_hi": hi,
                     "p": stats.normal_p(own, rnd, "two-sided"), "random_values": rnd})
    return rows


# ---------------------------------------------------------------- reading the results

def fmt_pp(v: float) -> str:
    """A fraction as signed percentage points."""
    return f"{100 * v:+.0f} pp" if np.isfinite(v) else "n/a"


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
            out[metric][(name, e)] = mean_deltas(base[sel], rnd, yy, f)
    return out


def combine(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One grid's tables of every set, Holm-corrected together as one family."""
    t = pd.concat(list(tables.values()), ignore_index=True)
    return correct_family(t.drop(columns=["p_holm", "verdict"], errors="ignore"))
