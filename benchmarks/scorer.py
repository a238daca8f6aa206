"""The stage 3-4 scorer against a plain forward pass over the same tokens, before and after this issue's changes.

Rows, all on the same items in one run (a noisy machine: read the ratios):
  plain forward        model(prefix + dialogue + question) per item and mask, batched, nothing masked, no cache
  scorer, all layers   instrument.Scorer on K random masks over every layer (a stage-3 neuron set)
  grid cell, before    a notebook-04 "top third" cell (own + R random masks), masks_per_pass=8 per pass (the old path:
                       the unmasked lower layers run once per item per 8 masks)
  grid cell, after     the same cell with every mask of the cell in one pass (lower layers once per item)
and, in item-masks, a miniature stage 3 (own sets on all items, random sets on each emotion's items, the other arm's
own set on the emotion's items, specificity's random sets on all items) cached per item list (before) and per item
(after). Scores of every path agree (max |diff| printed).

Usage: .venv/bin/python benchmarks/scorer.py [--model smollm2-135m-instruct] [--n 12] [--k 8] [--dtype auto]
Writes benchmarks/results-scorer.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from emolib.causal import instrument
from emolib.emotions import EMOTIONS
from emolib.lm import ablate, classify, models, prompts
from emolib.lm.synth_template import generate_dialogues


def plain_forward(clf, texts: list[str], k: int) -> float:
    """Seconds for k plain forward passes over every item's full prompt, batched by clf.batch_size."""
    tok, parts = clf.tokenizer, clf.parts
    seqs = [parts.prefix + b + parts.suffix for b in classify.encode_dialogues(clf, texts)]
    t = time.perf_counter()
    with torch.inference_mode():
        for _ in range(k):
            for s in range(0, len(seqs), clf.batch_size):
                batch = seqs[s : s + clf.batch_size]
                L = max(map(len, batch))
                ids = torch.tensor([[tok.pad_token_id] * (L - len(x)) + x for x in batch])
                mask = torch.tensor([[0] * (L - len(x)) + [1] * len(x) for x in batch])
                clf.model(input_ids=ids, attention_mask=mask, logits_to_keep=1)
    return time.perf_counter() - t


def timed_scores(scorer: instrument.Scorer, texts: list[str], masks: list[dict]) -> tuple[float, np.ndarray]:
    """(seconds, scores) of an uncached call."""
    t = time.perf_counter()
    out = scorer.scores(texts, masks, mode="zero")
    return time.perf_counter() - t, out


def main() -> None:
    """Time every row; write the results."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--n", type=int, default=12, help="items")
    ap.add_argument("--k", type=int, default=8, help="masks over all layers")
    ap.add_argument("--grid-random", type=int, default=20, help="random masks of the grid cell")
    a = ap.parse_args()
    models.set_threads()
    rows = generate_dialogues(["cooking", "Jamaica", "knitting", "Football"], list(EMOTIONS), 2, 0)
    texts = [r["dialogue"] for r in rows][: a.n]
    model, tok = models.load_model(a.model, a.dtype, "cpu")
    L, D = models.ffn_shape(model)
    chat = prompts.use_chat("auto", models.is_instruct(a.model, tok), tok)
    clf = classify.make_classifier(model, tok, list(EMOTIONS), chat, batch_size=16, calibrate=False)
    shape = {l: list(range(7)) for l in range(L)}
    all_layers = [ablate.random_like(shape, D, s) for s in range(a.k)]
    top = ablate.layer_bins(L, 3)["top"]
    cell = [
        {l: v for l, v in ablate.random_like(shape, D, 100 + s).items() if l in top} for s in range(1 + a.grid_random)
    ]
    tag = {"prompt_style": "chat" if chat else "plain", "few_shot": 0}
    out: dict = {
        "model": a.model,
        "dtype": str(model.dtype),
        "items": len(texts),
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "rows": [],
    }
    with tempfile.TemporaryDirectory() as tmp:

        def scorer(per: int, name: str) -> instrument.Scorer:
            p = {"run_dir": f"{tmp}/{name}", "model": a.model, "prompt_template": None}
            return instrument.Scorer(clf, p, tag, masks_per_pass=per)

        plain_forward(clf, texts[:2], 1)  # warm-up
        t_plain = plain_forward(clf, texts, a.k) / (a.k * len(texts))
        t_all, s_all = timed_scores(scorer(8, "all"), texts, all_layers)
        old = scorer(8, "before")
        old_reuse = instrument.REUSE_MASKS_PER_PASS
        instrument.REUSE_MASKS_PER_PASS = 8  # the old path: the lower layers once per 8 masks
        try:
            t_before, s_before = timed_scores(old, texts, cell)
        finally:
            instrument.REUSE_MASKS_PER_PASS = old_reuse
        t_after, s_after = timed_scores(scorer(8, "after"), texts, cell)
        n_cell = len(cell) * len(texts)
        for name, sec, n in (
            ("plain forward (full prompt)", t_plain * a.k * len(texts), a.k * len(texts)),
            ("scorer, all layers", t_all, a.k * len(texts)),
            ("grid cell (top third), before: 8 masks per pass", t_before, n_cell),
            ("grid cell (top third), after: the whole cell per pass", t_after, n_cell),
        ):
            out["rows"].append(
                {
                    "path": name,
                    "item_masks": n,
                    "seconds": round(sec, 2),
                    "item_masks_per_s": round(n / sec, 2),
                    "speed_vs_plain_forward": round((n / sec) / (1 / t_plain), 2),
                }
            )
        out["max_abs_diff_cell_before_after"] = float(np.abs(s_before - s_after).max())
        out["stage3_item_masks"] = mini_stage3(scorer(8, "mini"), texts, all_layers)
    path = Path(__file__).parent / "results-scorer.json"
    path.write_text(json.dumps(out, indent=1))
    print(f"{a.model} {out['dtype']}, {len(texts)} items, {out['threads']} threads, CPU {out['cpu_capability']}")
    for r in out["rows"]:
        print(f"  {r['path']:<55} {r['item_masks_per_s']:>7} item-masks/s  x{r['speed_vs_plain_forward']:.2f} plain")
    print(f"  cell scores before vs after: max |diff| {out['max_abs_diff_cell_before_after']:.1e}")
    print(f"  miniature stage 3: {out['stage3_item_masks']}")
    print(f"written to {path}")


def mini_stage3(sc: instrument.Scorer, texts: list[str], masks: list[dict]) -> dict:
    """Item-masks a miniature stage 3 scores when cached per item list (before) and per item (after)."""
    halves = [texts[: len(texts) // 2], texts[len(texts) // 2 :]]  # two "emotions"
    own, rnd = masks[:2], masks[2:]
    calls = [(texts, own, "zero")]  # own sets on all items
    for j, items in enumerate(halves):
        calls += [
            (items, [{}] + [own[j]] + rnd, "zero"),  # base, own and random on the emotion's items
            (items, [{}, own[j]] + rnd[:2], "scale"),
        ]  # the other arm (secondary random sets)
    calls += [(texts, rnd[:1], "zero"), (texts, rnd[1:2], "zero")]  # specificity: random sets on all items
    before, seen = 0, set()
    for items, ms, mode in calls:
        for m in ms:
            key = (tuple(items), sc.mask_key(m, mode))
            if key not in seen:
                seen.add(key)
                before += len(items)
    n0 = sc.computed
    for items, ms, mode in calls:
        sc.scores(items, ms, mode=mode)
    return {"before (cached per item list)": before, "after (cached per item)": sc.computed - n0}


if __name__ == "__main__":
    main()
