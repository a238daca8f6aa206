"""Stage 2's recording on several processes or GPUs, launched with torchrun:

    torchrun --nproc_per_node=N -m emolib.identify.distributed params/<name>.yaml [--out outputs/<run>]

Each rank records a deterministic shard of the train batches (keeping its own resumable state), the counts, null
counts, token totals and sums are all-reduced, and rank 0 writes the run's cache/counts.pt: notebook 02 then finds
the recording done and goes straight to the selection. Stage 01 must have run for the folder first.

A worker ends with `exit_written`: once its outputs are written and the process group destroyed, it leaves without
interpreter finalization. On a loaded 2-core CPU (torch 2.13, gloo), a worker that had loaded a tokenizer or built a
model otherwise often aborted there ("terminate called without an active exception", no Python frame left), after
every file was written, and torchrun reported the whole run as failed. Measured with two busy loops beside it:
tests/dist_worker.py 8 of 90 runs aborted before, 0 of 40 after; a load-then-all_reduce script 6 of 12 before,
0 of 20 after; an all_reduce-only script 0 of 40 (so the abort needs both)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import NoReturn

import torch
import torch.distributed as dist

from .. import params as params_mod
from ..lm import models
from . import selection as identify


def main(argv: list[str] | None = None) -> None:
    """Record stage 2's counts for a run folder, one shard per torchrun process."""
    ap = argparse.ArgumentParser(prog="torchrun ... -m emolib.identify.distributed", description=__doc__.split("\n")[0])
    ap.add_argument("params")
    ap.add_argument("--out", help="run folder (default outputs/<run_name>)")
    a = ap.parse_args(argv)
    p = params_mod.load(a.params)
    run_dir = Path(a.out) if a.out else params_mod.ROOT / "outputs" / p["run_name"]
    if not (run_dir / "data").exists():
        raise SystemExit(
            f"{run_dir / 'data'} not found: run stage 01 for this folder first "
            f"(python -m emolib run {a.params} --only 01)"
        )
    cuda = torch.cuda.is_available() and p["device"] in ("auto", "cuda") and not p["device_map"]
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local)
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        p = {**p, "run_dir": str(run_dir), "device": f"cuda:{local}" if cuda else p["device"]}
        models.set_threads()
        model, tok = models.load_model(p["model"], p["dtype"], p["device"], p["device_map"], p["seed"])
        identify.record_train(p, model, tok)
        if identify.needs_answer_pass(p):
            identify.record_train(p, model, tok, tokens="answer")
        if dist.get_rank() == 0:
            print(f"counts written to {identify.counts_path(run_dir)} by {dist.get_world_size()} processes")
    finally:
        dist.destroy_process_group()


def exit_written(code: int = 0) -> NoReturn:
    """Leave a torchrun worker whose outputs are written and group destroyed, skipping interpreter finalization."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
    exit_written()
