"""Stage 2 recording against a plain forward pass, in float32 and bfloat16, in one run (ratios only):

    .venv/bin/python benchmarks/recording.py [--n 96] [--before OLD_RECORD_PY] [--profile]

- plain forward (batch 16, no LM head) over the same batches;
- emolib's recording (both tensors, halves), without and with a 20- and a 99-permutation null (the showcase's);
- a batch-1 loop in the style of the 10kH rebuild (hooks copy each layer's activations to CPU float32);
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

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from emolib.lm import models
from emolib.identify import record# noqa: E402
from emolib.emotions import EMOTIONS  # noqa: E402
from emolib.dataset.synth_template import generate_dialogues# noqa: E402


def best_of(fn, repeats: int = 2) -> float:
    """Best wall time of fn() over repeats, after a warm-up call."""
    fn()
    out = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out = min(out, time.perf_counter() - t)
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
    ap.add_argument("--profile", action="store_true")
    a = ap.parse_args()
    models.set_threads()
    rows = generate_dialogues([f"topic {i}" for i in range(8)], list(EMOTIONS), 2, 0)[: a.n]
    texts = [r["dialogue"] for r in rows]
    by = {e: [r["dialogue"] for r in rows if r["theme"] == e] for e in EMOTIONS}
    model, tok = models.load_model(a.model, "float32", "cpu")
    items = [record.encode(tok, d, "raw", None) for d in texts]
    items.sort(key=lambda x: -len(x[0]))
    batches = [record.make_batch(items[s:s + 16], tok.pad_token_id) for s in range(0, len(items), 16)]
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

    out = {"model": a.model, "dialogues": len(texts), "counted_tokens": n_tok, "threads": torch.get_num_threads(),
           "cpu": models.cpu_description(), "auto_dtype_on_cpu": str(models.resolve_dtype("auto", "cpu")), "rows": []}
    for name, dt in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        model.to(dt)
        paths = {"plain forward, batch 16": plain,
                 "recording (both tensors, halves)": lambda: record.record_counts(model, tok, by, batch_size=16),
                 "recording + null (20 permutations)": lambda: record.record_counts(model, tok, by, batch_size=16,
                                                                                   n_null=20),
                 "recording + null (99 permutations)": lambda: record.record_counts(model, tok, by, batch_size=16,
                                                                                   n_null=99),
                 "batch-1 loop, CPU float32 copies (10kH style)": lambda: batch1_loop(model, tok, texts)}
        if old is not None:
            paths["recording before (one tensor, float64 sums)"] = lambda: old.record_counts(model, tok, by,
                                                                                               batch_size=16)
        t = {k: best_of(f, 1 if "batch-1" in k else 2) for k, f in paths.items()}
        base = t["plain forward, batch 16"]
        for k, v in t.items():
            out["rows"].append({"dtype": name, "path": k, "tokens_per_s": round(n_tok / v),
                                "time_over_plain_forward": round(v / base, 2),
                                "speed_over_batch1_loop": round(t["batch-1 loop, CPU float32 copies (10kH style)"] / v, 2)})
        if a.profile:
            from torch.profiler import ProfilerActivity, profile
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                record.record_counts(model, tok, by, batch_size=16, n_null=20)
            out[f"profile_{name}"] = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10)
    path = Path(__file__).parent / "results-recording.json"
    path.write_text(json.dumps(out, indent=1))
    print(f"{out['cpu']}; {n_tok:,} counted tokens; auto dtype on this CPU: {out['auto_dtype_on_cpu']}")
    print(f"{'dtype':<9} {'path':<48} {'tok/s':>7} {'x plain':>8} {'x batch-1':>10}")
    for r in out["rows"]:
        print(f"{r['dtype']:<9} {r['path']:<48} {r['tokens_per_s']:>7} {r['time_over_plain_forward']:>8} "
              f"{r['speed_over_batch1_loop']:>10}")
    for k in out:
        if k.startswith("profile_"):
            print(k, "\n", out[k])


if __name__ == "__main__":
    main()
