"""Run by tests/test_distributed.py under torchrun: record the tiny model's counts, sharded over the processes."""

import sys
from datetime import timedelta

import torch
import torch.distributed as dist

from emolib.emotions import EMOTIONS
from emolib.identify import record
from emolib.identify.distributed import exit_written
from emolib.lm import models
from emolib.lm.synth_template import generate_dialogues

if __name__ == "__main__":
    out, partial = sys.argv[1], sys.argv[2]
    dist.init_process_group("gloo", timeout=timedelta(minutes=10))  # a busy CPU is slow, not broken
    torch.set_num_threads(1)
    model, tok = models.load_model("tiny-random-llama", "float32", "cpu")
    rows = generate_dialogues(["cats", "knitting", "rain"], list(EMOTIONS), 1, 3)
    by = {e: [r["dialogue"] for r in rows if r["theme"] == e] for e in EMOTIONS}
    st = record.record_counts(model, tok, by, batch_size=3, n_null=4, state_path=partial, save_every=0, top_k=4)
    if dist.get_rank() == 0:
        torch.save({k: v for k, v in st.items() if isinstance(v, torch.Tensor)}, out)
    dist.destroy_process_group()
    exit_written()  # an abort at interpreter exit would fail torchrun after the work is done
