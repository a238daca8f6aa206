"""Stage 3-4's instrument and its scorer: raw label scores of dialogues under neuron masks, many masks per forward
pass and cached per (item, mask, mode), read under an arm (zero or mean ablation x calibration fixed or recomputed
under the mask); the choice of the instrument (prompt style, few-shot k, calibration) on a dev split by a rule fixed
in advance, and loading it with the pilot's arm for notebook 04 and the CLI."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..lm import ablate, batched, classify, models, prompts
from ..lm.classify import PredictionCache
from ..progress import tqdm
from . import budget, matched, runfiles, stats

# ---------------------------------------------------------------- scoring under masks

ARMS = ("zero/fixed", "zero/recomputed", "mean/fixed", "mean/recomputed")  # intervention / calibration
PAPER_ARM = "zero/fixed"  # the paper's intervention (zeroing), read with the unablated model's calibration
PRIMARY_ARM = "zero/recomputed"  # the params' default primary arm, fixed before the data: zero ablation (the paper's)


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

    def __init__(
        self,
        clf: classify.Classifier,
        p: dict,
        tag: dict,
        masks_per_pass: int = 8,
        means: torch.Tensor | None = None,
        arm: str = PAPER_ARM,
    ):
        from dataclasses import replace

        self.use_calibration = clf.calibrate  # applied here; the cached scores themselves are raw
        self.clf, self.p, self.masks_per_pass = replace(clf, calibrate=False), p, masks_per_pass
        self.tag = {
            "prompt_style": tag["prompt_style"],
            "few_shot": tag["few_shot"],
            "prompt_template": p.get("prompt_template"),
        }
        self.cache = PredictionCache(Path(p["run_dir"]) / "cache" / "scores.jsonl")
        self.means, self.arm = means, arm
        self.means_hash = None if means is None else matched.neuron_hash(means)
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
        blob = json.dumps(
            [
                self.p["model"],
                str(self.clf.model.dtype),
                self.tag,
                self.clf.labels,
                {str(k): sorted(v) for k, v in sorted(mask.items()) if v},
                mode,
                self.means_hash if mode == "mean" else None,
            ]
        )
        return hashlib.sha1(blob.encode()).hexdigest()[:24]

    def key(self, dialogue: str, mask: dict[int, list[int]], mode: str = "zero") -> str:
        """The cache key of one item under one mask and mode."""
        return self.mask_key(mask, mode) + item_hash(dialogue)

    def scores(
        self, dialogues: list[str], masks: list[dict[int, list[int]]], desc: str | None = None, mode: str | None = None
    ) -> np.ndarray:
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
                chunk = ks[s : s + per]
                t = time.perf_counter()
                arr = batched.score_masks(
                    self.clf,
                    [dialogues[i] for i in miss],
                    [masks[k] for k in chunk],
                    mode=mode,
                    means=self.means,
                    calibration=None,
                    progress=desc,
                )
                self.seconds += time.perf_counter() - t
                self.computed += arr.shape[0] * arr.shape[1]
                self.cache.put_many(
                    {mk[k] + ih[i]: np.round(a[n], 6).tolist() for k, a in zip(chunk, arr) for n, i in enumerate(miss)}
                )
                if self.on_progress:
                    self.on_progress(arr.shape[0] * arr.shape[1])
        return np.asarray([[self.cache.rows[k + h] for h in ih] for k in mk], dtype=float).reshape(
            len(masks), len(dialogues), -1
        )

    def content_free(self, masks: list[dict[int, list[int]]], mode: str | None = None) -> np.ndarray:
        """[K, labels] raw scores of the content-free dialogue under each mask (for recomputed calibration)."""
        return self.scores([prompts.CONTENT_FREE], masks, mode=mode)[:, 0]

    def calibrate(self, raw: np.ndarray) -> np.ndarray:
        """Scores with the unablated model's content-free scores held fixed (or raw when calibrate is false)."""
        return raw - self.base_cf if self.use_calibration else raw

    def arm_scores(
        self, dialogues: list[str], masks: list[dict[int, list[int]]], arm: str | None = None, desc: str | None = None
    ) -> np.ndarray:
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
    saved = runfiles.load_instrument_file(p["run_dir"])
    inst = (
        saved["chosen"]
        if saved is not None
        else {"prompt_style": p["prompt_style"], "few_shot": p["few_shot"], "calibrate": p["calibrate"]}
    )
    return model, tok, make_clf(model, tok, p, inst), inst


def make_clf(model, tok, p: dict, inst: dict) -> classify.Classifier:
    """A classifier for one instrument (prompt style, few-shot k, calibration)."""
    chat = prompts.use_chat(inst["prompt_style"], models.is_instruct(p["model"], tok), tok)
    return classify.make_classifier(
        model, tok, p["emotions"], chat, inst["few_shot"], p["prompt_template"], p["batch_size"], inst["calibrate"]
    )


# ---------------------------------------------------------------- the instrument


def instrument_candidates(p: dict, tok) -> list[dict]:
    """Prompt styles the tokenizer supports x few-shot k in {0, 3, 6} x calibration on/off."""
    styles = ["chat", "plain"] if getattr(tok, "chat_template", None) else ["plain"]
    return [
        {"prompt_style": s, "few_shot": k, "calibrate": c} for s in styles for k in (0, 3, 6) for c in (False, True)
    ]


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
        rows.append(
            {
                **cand,
                "dev_accuracy": ok.mean(),
                "half_a": ok[half == 0].mean(),
                "half_b": ok[half == 1].mean(),
                "min_emotion_accuracy": min(ok[y == j].mean() for j in range(len(p["emotions"]))),
                "mean_margin": stats.margin(s, y).mean(),
            }
        )
    table = pd.DataFrame(rows)
    table["holds_on_both_halves"] = table[["half_a", "half_b"]].min(axis=1)
    best = table.sort_values(
        ["holds_on_both_halves", "dev_accuracy", "few_shot"], ascending=[False, False, True], kind="stable"
    ).iloc[0]
    chosen = {"prompt_style": best.prompt_style, "few_shot": int(best.few_shot), "calibrate": bool(best.calibrate)}
    return table, chosen


def save_instrument(p: dict, table: pd.DataFrame, chosen: dict, n_dev: int) -> Path:
    """Write run_dir/instrument.json (the chosen instrument and the dev table) for notebooks 03 and 04."""
    from ..safeio import atomic_write_json

    path = Path(p["run_dir"]) / "instrument.json"
    atomic_write_json(
        path,
        {
            "chosen": chosen,
            "dev_items": n_dev,
            "rule": "highest accuracy holding on both halves of dev, ties to fewer shots",
            "candidates": json.loads(table.to_json(orient="records")),
        },
        indent=1,
    )
    return path


def save_pilot(p: dict, table: pd.DataFrame, decision: dict) -> Path:
    """Add the pilot (its rule, SDs, decision and table) to run_dir/instrument.json."""
    from ..safeio import atomic_write_json, read_json

    path = Path(p["run_dir"]) / "instrument.json"
    inst = (
        read_json(path, "instrument file")
        if path.exists()
        else {"chosen": {"prompt_style": p["prompt_style"], "few_shot": p["few_shot"], "calibrate": p["calibrate"]}}
    )
    inst["pilot"] = {**decision, "table": json.loads(table.to_json(orient="records"))}
    atomic_write_json(path, inst, indent=1)
    return path


def load_scorer(
    p: dict, model=None, tok=None
) -> tuple[object, object, classify.Classifier, dict, Scorer, torch.Tensor | None]:
    """(model, tokenizer, classifier, instrument, scorer under the pilot's arm, activation SDs) as notebook 03 left
    them, for notebook 04 and the CLI."""
    model, tok, clf, inst = load_instrument(p, model, tok)
    saved = runfiles.load_instrument_file(p["run_dir"]) or {}
    design = budget.load(p) or {}
    arm = design.get("intervention") or saved.get("pilot", {}).get("chosen") or p.get("intervention", PRIMARY_ARM)
    sums = matched.load(p["run_dir"])
    means, spread = matched.moments(sums) if sums is not None else (None, None)
    if split_arm(arm)[0] == "mean" and means is None:
        raise ValueError(
            f"{p['run_dir']}: the pilot chose {arm} but {matched.STATS_FILE} is missing; rerun notebook 03"
        )
    return model, tok, clf, inst, Scorer(clf, p, inst, means=means, arm=arm), spread
