"""Speed benchmarks, reported as ratios measured in one run (the machines are noisy; compare within a run only).

  1. dtype: forward tokens/s of the model in float32 vs bfloat16 on this device (with the CPU's bf16 capability)
  2. recording: tokens/s of stage 2's counting pass (both tensors, halves; without and with a 20-permutation null)
     vs a plain forward pass over the same batches, in both dtypes
  3. classification: batched vs one-at-a-time label scoring, and the shared-prefix cache on vs off

Usage: .venv/bin/python benchmarks/run_all.py [--model smollm2-135m-instruct] [--n 48]
Writes benchmarks/results-<model>.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from emolib.emotions import EMOTIONS
from emolib.identify import record
from emolib.lm import classify, models, prompts
from emolib.lm.synth_template import generate_dialogues


def timed(fn, repeats: int = 2) -> float:
    """Best wall time of fn() over a few repeats (after one warm-up)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    """Run the three benchmarks and write the results."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--n", type=int, default=48, help="dialogues")
    a = ap.parse_args()
    models.set_threads()
    rows = generate_dialogues(["cooking", "Jamaica", "knitting", "Football"], list(EMOTIONS), 2, 0)[: a.n]
    texts = [r["dialogue"] for r in rows]
    by_emotion = {e: [r["dialogue"] for r in rows if r["theme"] == e] for e in EMOTIONS}
    out: dict = {
        "model": a.model,
        "dialogues": len(texts),
        "threads": torch.get_num_threads(),
        "cpu": models.cpu_description(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_fast_bf16": models.cpu_has_fast_bf16(),
        "auto_dtype_on_cpu": str(models.resolve_dtype("auto", "cpu")).replace("torch.", ""),
    }

    # 1. dtype
    model, tok = models.load_model(a.model, "float32", "cpu")
    items = [record.encode(tok, d, "raw", None) for d in texts]
    ids, attn, _ = record.make_batch(items[:16], tok.pad_token_id, False)
    n_tok = int(attn.sum())
    for name, dt in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        model.to(dt)
        with torch.inference_mode():
            s = timed(lambda: model.model(input_ids=ids, attention_mask=attn))
        out[f"forward_tokens_per_s_{name}"] = round(n_tok / s)
    model.to(torch.float32)
    out["bfloat16_over_float32_speed"] = round(
        out["forward_tokens_per_s_bfloat16"] / out["forward_tokens_per_s_float32"], 2
    )

    # 2. recording vs plain forward over the same batches
    batches = [record.make_batch(items[s : s + 16], tok.pad_token_id, False) for s in range(0, len(items), 16)]
    total = sum(int(b[1].sum()) for b in batches)

    def plain():
        with torch.inference_mode():
            for ids_, attn_, _ in batches:
                model.model(input_ids=ids_, attention_mask=attn_, use_cache=False)

    for name, dt in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        model.to(dt)
        t_plain = timed(plain, 1)
        t_rec = timed(lambda: record.record_counts(model, tok, by_emotion, batch_size=16), 1)
        t_null = timed(lambda: record.record_counts(model, tok, by_emotion, batch_size=16, n_null=20), 1)
        out[f"plain_forward_tokens_per_s_{name}"] = round(total / t_plain)
        out[f"recording_tokens_per_s_{name}"] = round(total / t_rec)
        out[f"recording_with_null20_tokens_per_s_{name}"] = round(total / t_null)
        out[f"recording_over_plain_time_{name}"] = round(t_rec / t_plain, 2)
        out[f"recording_with_null20_over_plain_time_{name}"] = round(t_null / t_plain, 2)
        out[f"null20_over_recording_time_{name}"] = round(t_null / t_rec, 2)
    model.to(torch.float32)

    # 3. classification: batched vs one at a time, prefix cache on vs off
    chat = prompts.use_chat("auto", models.is_instruct(a.model, tok), tok)
    clf = classify.make_classifier(model, tok, list(EMOTIONS), chat, batch_size=16, calibrate=True)
    t_batched = timed(lambda: classify.label_scores(clf, texts), 1)
    clf.prefix_cache = False
    t_noprefix = timed(lambda: classify.label_scores(clf, texts), 1)
    clf.prefix_cache, clf.batch_size = True, 1
    t_single = timed(lambda: classify.label_scores(clf, texts), 1)
    out["classify_dialogues_per_s_batched"] = round(len(texts) / t_batched, 1)
    out["classify_dialogues_per_s_one_at_a_time"] = round(len(texts) / t_single, 1)
    out["classify_dialogues_per_s_batched_no_prefix_cache"] = round(len(texts) / t_noprefix, 1)
    out["batched_speedup"] = round(t_single / t_batched, 2)
    out["prefix_cache_speedup"] = round(t_noprefix / t_batched, 2)

    path = Path(__file__).parent / f"results-{a.model}.json"
    path.write_text(json.dumps(out, indent=1))
    for k, v in out.items():
        print(f"{k:<50} {v}")
    print(f"written to {path}")


if __name__ == "__main__":
    main()
