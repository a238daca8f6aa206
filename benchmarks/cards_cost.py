"""What neuron cards (issue 28) cost stage 2: its recording with and without the streaming top-k, in float32 and
bfloat16 in one run, and the re-reading of the card neurons' dialogues afterwards:

    .venv/bin/python benchmarks/cards_cost.py [--n 32] [--repeats 3]

The recording is stage 2's (both tensors, halves, a 20-permutation null; without the direction sums, which would
only make the baseline longer and the ratio smaller). Times are the process's CPU
seconds (time.process_time: other jobs on a shared machine stretch wall time far more than 5%); the two settings run
interleaved, best of --repeats each, and the CPU time spent inside the top-k update itself is also summed (a direct
measure of the cards' share). The re-reading takes 5 neurons per emotion for
3 sets (90 random neurons, as many as stage 2's cards at most) and reads the union of their top dialogues and 8
random ones, as emolib.identify.cards.build does. Writes benchmarks/results-cards.json.
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
from emolib.identify import cards, record  # noqa: E402
from emolib.lm import models  # noqa: E402
from emolib.lm.synth_template import generate_dialogues  # noqa: E402


def main() -> None:
    """Measure and write the table."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    models.set_threads()
    rows = generate_dialogues([f"topic {i}" for i in range(8)], list(EMOTIONS), 2, 0)[: a.n]
    by = {e: [r["dialogue"] for r in rows if r["theme"] == e] for e in EMOTIONS}
    by = {e: v for e, v in by.items() if v}
    model, tok = models.load_model(a.model, "float32", "cpu")
    spent = [0.0]
    inner = record.top_update

    def timed(*args):
        t = time.process_time()
        out = inner(*args)
        spent[0] += time.process_time() - t
        return out

    record.top_update = timed
    out = {
        "model": a.model,
        "dialogues": sum(map(len, by.values())),
        "threads": torch.get_num_threads(),
        "cpu": models.cpu_description(),
        "repeats": a.repeats,
        "rows": [],
    }
    for name, dt in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        model.to(dt)

        def rec(k):
            return record.record_counts(model, tok, by, batch_size=16, n_null=20, top_k=k)

        rec(0), rec(record.TOP_K)  # warm-up
        t = {0: [], record.TOP_K: []}
        inside = []
        for _ in range(a.repeats):
            for k in t:
                spent[0] = 0.0
                s = time.process_time()
                st = rec(k)
                t[k].append(time.process_time() - s)
                if k:
                    inside.append(spent[0])
        without, with_ = min(t[0]), min(t[record.TOP_K])
        # the re-reading: 90 random neurons' top dialogues and 8 random dialogues, read once
        L, D = st["top_values"].shape[0], st["top_values"].shape[2]
        g = torch.Generator().manual_seed(0)
        picks = sorted({(int(u) // D, int(u) % D) for u in torch.randperm(L * D, generator=g)[:90]})
        flat = [d for e in by for d in by[e]]
        need = sorted(
            {int(j) for l, i in picks for j in st["top_ids"][l, :, i] if j >= 0}
            | set(cards.random_dialogues(len(flat), 0))
        )
        s = time.process_time()
        cards.read_dialogues(model, tok, [flat[j] for j in need], picks, "act", batch_size=16)
        reread = time.process_time() - s
        out["rows"].append(
            {
                "dtype": name,
                "recording_s": round(without, 3),
                "recording_with_cards_s": round(with_, 3),
                "ratio": round(with_ / without, 4),
                "ratio_median": round(sorted(t[record.TOP_K])[a.repeats // 2] / sorted(t[0])[a.repeats // 2], 4),
                "top_update_s": round(min(inside), 3),
                "top_update_share": round(min(inside) / without, 4),
                "reread_dialogues": len(need),
                "reread_s": round(reread, 3),
                "reread_s_per_dialogue": round(reread / len(need), 4),
                "recording_s_per_dialogue": round(without / len(flat), 4),
            }
        )
    path = Path(__file__).parent / "results-cards.json"
    path.write_text(json.dumps(out, indent=1))
    print(f"{out['cpu']}; {out['dialogues']} dialogues, best of {a.repeats}")
    for r in out["rows"]:
        print(r)


if __name__ == "__main__":
    main()
