"""Stage 2 recording against a plain forward pass, in float32 and bfloat16, in one run (ratios only):

    .venv/bin/python benchmarks/recording.py [--n 96] [--nulls 20 99] [--no-batch1] [--repeats 2]
        [--before OLD_RECORD_PY] [--profile]

- plain forward (batch 16, no LM head) over the same batches;
- emolib's recording (both tensors, halves), without a null and with each null size of --nulls (label
  permutations counted in the same pass; the showcase params use 99);
- a batch-1 loop in the style of the 10kH rebuild (hooks copy each layer's activations to CPU float32), unless
  --no-batch1;
- optionally the recorder of an earlier version (--before path/to/record.py), for a before/after table;
- optionally (--profile) where the recording's time goes, by operator.
Writes benchmarks/results-recording.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from emolib.emotions import EMOTIONS  # noqa: E402
from emolib.identify import record  # noqa: E402
from emolib.lm import models
from emolib.lm.synth_template import generate_dialogues  # noqa: E402

BATCH1 = "batch-1 loop, CPU float32 copies (10kH style)"


def interleaved(paths: dict, repeats: int = 2, once: tuple[str, ...] = ()) -> dict[str, list[float]]:
    """Wall times of each path in every round, after one warm-up call each, timing the paths in turn in every round
    (so a change of load on a shared machine falls on all of them); the paths in `once` are timed in the first
    round only."""
    for fn in paths.values():
        fn()
    out: dict[str, list[float]] = {k: [] for k in paths}
    for r in range(repeats):
        for k, fn in paths.items():
            if r and k in once:
                continue
            t = time.perf_counter()
            fn()
            out[k].append(time.perf_counter() - t)
            print(f"  round {r + 1}: {k} {out[k][-1]:.1f} s", flush=True)
    return out


@torch.inference_mode()
def batch1_loop(model, tok, texts: list[str]) -> None:
    """One dialogue at a time; every layer's act_fn output copied to the CPU in float32 and counted there."""
    mlps = models.ffn_layers(model)
    L, D = len(mlps), mlps[0].down_proj.in_features
    counts = torch.zeros((L, D))
    grabbed: list = []
    hs = [m.act_fn.register_forward_hook(lambda mod, a, o: grabbed.append(o[0].float().cpu())) for m in mlps]
    try:
        for d in texts:
            grabbed.clear()
            ids = torch.tensor([record.encode(tok, d, "raw", None)[0]])
            model.model(input_ids=ids)
            for layer, h in enumerate(grabbed):
                counts[layer] += (h > 0).sum(0)
    finally:
        for h in hs:
            h.remove()


def main() -> None:
    """Measure and write the table."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--n", type=int, default=96)
    ap.add_argument("--before", help="an earlier emolib/identify/record.py to compare with")
    ap.add_argument("--nulls", type=int, nargs="+", default=[20, 99], help="null sizes (label permutations) to time")
    ap.add_argument("--no-batch1", action="store_true", help="leave out the (slow) batch-1 loop")
    ap.add_argument("--repeats", type=int, default=2, help="timed rounds (each path's best is kept)")
    ap.add_argument("--profile", action="store_true")
    a = ap.parse_args()
    models.set_threads()
    rows = generate_dialogues([f"topic {i}" for i in range(8)], list(EMOTIONS), 2, 0)[: a.n]
    texts = [r["dialogue"] for r in rows]
    by = {e: [r["dialogue"] for r in rows if r["theme"] == e] for e in EMOTIONS}
    model, tok = models.load_model(a.model, "float32", "cpu")
    items = [record.encode(tok, d, "raw", None) for d in texts]
    items.sort(key=lambda x: -len(x[0]))
    batches = [record.make_batch(items[s : s + 16], tok.pad_token_id) for s in range(0, len(items), 16)]
    n_tok = sum(int(b[2].sum()) for b in batches)
    old = None
    if a.before:
        spec = importlib.util.spec_from_file_location("emolib.record_before", a.before)
        old = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = old
        spec.loader.exec_module(old)

    def plain():
        with torch.inference_mode():
            for ids, attn, _ in batches:
                model.model(input_ids=ids, attention_mask=attn, use_cache=False)

    out = {
        "model": a.model,
        "dialogues": len(texts),
        "counted_tokens": n_tok,
        "threads": torch.get_num_threads(),
        "cpu": models.cpu_description(),
        "auto_dtype_on_cpu": str(models.resolve_dtype("auto", "cpu")),
        "nulls": a.nulls,
        "repeats": a.repeats,
        "rows": [],
    }
    for name, dt in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        model.to(dt)
        paths = {
            "plain forward, batch 16": plain,
            "recording (both tensors, halves)": lambda: record.record_counts(model, tok, by, batch_size=16),
        }
        for k in a.nulls:
            paths[f"recording + null ({k} permutations)"] = lambda k=k: record.record_counts(
                model, tok, by, batch_size=16, n_null=k
            )
        if not a.no_batch1:
            paths[BATCH1] = lambda: batch1_loop(model, tok, texts)
        if old is not None:
            paths["recording before (one tensor, float64 sums)"] = lambda: old.record_counts(
                model, tok, by, batch_size=16
            )
        print(f"{name}:", flush=True)
        t = interleaved(paths, a.repeats, once=(BATCH1,))
        base = t["plain forward, batch 16"]
        for k, v in t.items():  # ratios: the median over rounds of the path's time over the plain forward's
            ratios = [a / b for a, b in zip(v, base)]
            out["rows"].append(
                {
                    "dtype": name,
                    "path": k,
                    "tokens_per_s": round(n_tok / min(v)),
                    "time_over_plain_forward": round(float(np.median(ratios)), 2),
                    "per_round": [round(x, 2) for x in ratios],
                    "speed_over_batch1_loop": round(min(t[BATCH1]) / min(v), 2) if BATCH1 in t else None,
                }
            )
        if a.profile:
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU]) as prof:
                record.record_counts(model, tok, by, batch_size=16, n_null=max(a.nulls))
            out[f"profile_{name}"] = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10)
    path = Path(__file__).parent / "results-recording.json"
    path.write_text(json.dumps(out, indent=1))
    print(f"{out['cpu']}; {n_tok:,} counted tokens; auto dtype on this CPU: {out['auto_dtype_on_cpu']}")
    print(f"{'dtype':<9} {'path':<48} {'tok/s':>7} {'x plain':>8} {'x batch-1':>10}")
    for r in out["rows"]:
        print(
            f"{r['dtype']:<9} {r['path']:<48} {r['tokens_per_s']:>7} {r['time_over_plain_forward']:>8} "
            f"{r['speed_over_batch1_loop'] or '-':>10}"
        )
    for k in out:
        if k.startswith("profile_"):
            print(k, "\n", out[k])


if __name__ == "__main__":
    main()
