"""Stage 2's recording split over two processes (torch.distributed, gloo) equals the single-process recording."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from emolib.emotions import EMOTIONS
from emolib.identify import record
from emolib.lm.synth_template import generate_dialogues

ROOT = Path(__file__).resolve().parent.parent


def test_two_processes_record_the_same_counts_as_one(tiny, tmp_path):
    model, tok = tiny
    rows = generate_dialogues(["cats", "knitting", "rain"], list(EMOTIONS), 1, 3)
    by = {e: [r["dialogue"] for r in rows if r["theme"] == e] for e in EMOTIONS}
    single = record.record_counts(model, tok, by, batch_size=3, n_null=4, top_k=4)
    out = tmp_path / "dist.pt"
    torchrun = Path(sys.executable).with_name("torchrun")
    # loopback only and generous timeouts: on a busy CPU (other tests, the tiny book in the background) a rank can
    # lag the other by many seconds, which is slow, not wrong
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "GLOO_SOCKET_IFNAME": "lo"}
    res = subprocess.run(
        [
            str(torchrun),
            "--standalone",
            "--nproc_per_node=2",
            "--max-restarts=0",
            str(ROOT / "tests/dist_worker.py"),
            str(out),
            str(tmp_path / "partial.pt"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if res.returncode != 0:  # the whole tail, untruncated: which rank died, and how
        pytest.fail(f"torchrun exited {res.returncode}\n{res.stdout[-2000:]}\n{res.stderr[-6000:]}", pytrace=False)
    dist = torch.load(out, weights_only=True)
    for key in ("counts_act", "counts_product", "null_act", "null_product", "tokens", "null_tokens"):
        assert torch.equal(dist[key], single[key]), key
    assert torch.allclose(dist["sums"], single["sums"], rtol=1e-6, atol=1e-6)
    assert torch.allclose(dist["top_values"], single["top_values"], atol=1e-5)  # the ranks' top-k merged (cards)
    # each rank kept its own resumable state
    assert {p.name for p in tmp_path.glob("partial.rank*.pt")} == {"partial.rank0.pt", "partial.rank1.pt"}


def test_device_map_placement_keeps_hooks_on_the_right_device(tiny, tmp_path):
    """A model placed by accelerate with max_memory, most layers offloaded (their weights on 'meta' until they
    run): recording counts and ablation equal the unsplit model's. A GPU split is the same code path."""
    from transformers import AutoModelForCausalLM

    from emolib.lm import ablate, models

    model, tok = tiny
    model.save_pretrained(tmp_path / "m")
    split = AutoModelForCausalLM.from_pretrained(
        tmp_path / "m",
        device_map="auto",
        max_memory={"cpu": "1MB"},
        offload_folder=str(tmp_path / "off"),
        dtype=torch.float32,
    )
    assert "disk" in set(split.hf_device_map.values())  # really split
    split.config.name_or_path = model.config.name_or_path
    rows = generate_dialogues(["cats"], list(EMOTIONS), 1, 3)
    by = {e: [r["dialogue"] for r in rows if r["theme"] == e] for e in EMOTIONS}
    a = record.record_counts(model, tok, by, batch_size=3, n_null=2)
    b = record.record_counts(split, tok, by, batch_size=3, n_null=2)
    for key in ("counts_act", "counts_product", "null_act", "tokens"):
        assert torch.equal(a[key], b[key]), key
    ids = torch.tensor([tok("A: I am furious.\nB: Why?")["input_ids"]])
    mask = {1: [3, 9], 3: [0, 5, 7]}
    with torch.inference_mode():
        with ablate.ablate(model, mask):
            ref = model(input_ids=ids).logits
        with ablate.ablate(split, mask):
            out = split(input_ids=ids.to(models.model_device(split))).logits
    assert torch.allclose(ref, out.cpu(), atol=1e-5)


def test_a_worker_leaves_with_its_output_flushed_and_its_code():
    """exit_written skips interpreter finalization (where loaded CPUs' exits sometimes aborted), losing no output."""
    code = "from emolib.identify.distributed import exit_written; print('written', end=''); exit_written(3)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert (res.returncode, res.stdout) == (3, "written")
