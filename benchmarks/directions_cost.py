"""What recording emotion directions (emolib.identify.directions) adds to stage 2's pass: the same recording (both
tensors,
halves, a 20-permutation null) with and without direction_site, interleaved, best of several repeats. On the CPU
it times the process's CPU seconds on one thread (robust to other load on a shared machine); on a GPU, wall time:

    .venv/bin/python benchmarks/directions_cost.py [--model smollm2-135m-instruct] [--n 96] [--device cpu]

Writes benchmarks/results-directions.json (seconds and the ratio with/without, per site).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from emolib.emotions import EMOTIONS  # noqa: E402
from emolib.identify import record  # noqa: E402
from emolib.lm import models
from emolib.lm.synth_template import generate_dialogues  # noqa: E402


def main() -> None:
    """Measure and write the table."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--n", type=int, default=96)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results-directions.json"))
    a = ap.parse_args()
    on_cpu = a.device == "cpu"
    torch.set_num_threads(1) if on_cpu else models.set_threads()
    clock = time.process_time if on_cpu else time.perf_counter
    rows = generate_dialogues([f"topic {i}" for i in range(8)], list(EMOTIONS), 2, 0)[: a.n]
    by = {e: [r["dialogue"] for r in rows if r["theme"] == e] for e in EMOTIONS}
    tp = {e: [r["topic"] for r in rows if r["theme"] == e] for e in EMOTIONS}
    model, tok = models.load_model(a.model, a.dtype, a.device)
    sync = torch.cuda.synchronize if torch.cuda.is_available() and a.device != "cpu" else (lambda: None)

    def once(site):
        sync()
        t = clock()
        record.record_counts(model, tok, by, batch_size=16, n_null=20, direction_site=site, topics=tp)
        sync()
        return clock() - t

    conds = [None, "residual", "mlp"]
    for c in conds:  # warm-up
        once(c)
    best = {str(c): float("inf") for c in conds}
    for _ in range(a.repeats):  # interleaved, so drifting load hits every condition alike
        for c in conds:
            best[str(c)] = min(best[str(c)], once(c))
    out = {
        "model": a.model,
        "device": a.device,
        "dtype": a.dtype,
        "clock": "CPU seconds, one thread" if on_cpu else "wall seconds",
        "dialogues": len(rows),
        "n_null": 20,
        "batch_size": 16,
        "seconds_best": best,
        "ratio_with_directions": {s: best[s] / best["None"] for s in ("residual", "mlp")},
    }
    Path(a.out).write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
