"""The GPU check at paper scale, in one command (a few minutes on one H100; no download):

    .venv/bin/python benchmarks/gpu_check.py [--out DIR] [--tiny] [--no-book]

1. Builds a model with Llama-3.1-8B's dimensions (32 layers x 14,336 FFN neurons, hidden 4,096, GQA 32/8) and
   random weights from a LlamaConfig, in bfloat16 on the GPU.
2. Measures a plain forward pass, stage 2's recording without and with a 20-permutation null (tokens/s), and
   stage 3's scoring of items under many masks at once (items x masks per s), with peak GPU memory.
3. Projects paper-scale wall times: identification over EmoPrism's ~42M dialogue tokens, and the stage-3 grid.
4. Runs the whole quick book (params/quick.yaml) on the GPU with the embedded model, so every notebook's CUDA path
   is exercised (skip with --no-book).

--tiny swaps in a 2-layer toy config and runs on whatever device there is: the test suite runs it on CPU.
Results: DIR/gpu_check.json (default benchmarks/results-gpu-check.json).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from emolib.emotions import EMOTIONS  # noqa: E402
from emolib.identify import record  # noqa: E402
from emolib.lm import batched, classify, models, prompts
from emolib.lm.synth_template import generate_dialogues  # noqa: E402

PAPER_TOKENS = 42_000_000  # EmoPrism's kept dialogues, about 143 tokens each, 293,725 of them
PAPER_GRID = {
    "emotions": 6,
    "sets": 2,
    "random_sets": 20,
    "dose_levels": 6,
    "dose_random": 5,
    "ranges": 4,
    "items_per_emotion": 200,
}


def llama8b_config(tiny: bool, vocab: int):
    """Llama-3.1-8B's dimensions (or a toy version), random weights."""
    from transformers import LlamaConfig

    if tiny:
        return LlamaConfig(
            vocab_size=vocab,
            hidden_size=64,
            intermediate_size=256,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=2048,
        )
    return LlamaConfig(
        vocab_size=vocab,
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        max_position_embeddings=8192,
        rope_theta=500000.0,
        rms_norm_eps=1e-5,
    )


def sync(device: str) -> None:
    """Wait for the GPU (no-op on CPU)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str) -> float:
    """Wall seconds of fn() after one warm-up call."""
    fn()
    sync(device)
    t = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t


def grid_conditions() -> int:
    """Item-mask evaluations of the stage-3/4 grid at paper scale."""
    g = PAPER_GRID
    main = g["sets"] * g["emotions"] * (1 + g["random_sets"])
    dose = g["sets"] * g["emotions"] * g["dose_levels"] * (1 + g["dose_random"])
    ranges = g["sets"] * g["emotions"] * g["ranges"] * (1 + g["dose_random"])
    return (main + dose + ranges) * g["items_per_emotion"]


def main(argv: list[str] | None = None) -> dict:
    """Run the check and write its JSON."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "benchmarks"))
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--no-book", action="store_true")
    ap.add_argument("--n", type=int, default=64, help="dialogues for the timings")
    a = ap.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    out = measure(a, device)  # the model is freed when measure returns
    if device == "cuda":
        torch.cuda.empty_cache()
    if not a.no_book:
        t = time.time()
        res = subprocess.run(
            [
                sys.executable,
                "-m",
                "emolib",
                "run",
                "params/quick.yaml",
                "--out",
                str(Path(a.out) / "quick-cuda"),
                "--force",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        out["quick_book_on_device"] = {
            "returncode": res.returncode,
            "seconds": round(time.time() - t),
            "tail": res.stdout[-400:] + res.stderr[-800:],
        }
    path = Path(a.out) / ("gpu_check.json" if a.out != str(ROOT / "benchmarks") else "results-gpu-check.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    for k, v in out.items():
        print(f"{k:<36} {v if not isinstance(v, dict) else json.dumps(v)[:200]}")
    return out


def measure(a: argparse.Namespace, device: str) -> dict:
    """Timings and memory of the 8B-shaped model (or the toy one)."""
    dtype = torch.bfloat16 if device == "cuda" or models.cpu_has_fast_bf16() else torch.float32
    tok = models.load_tokenizer(models.PRESETS["smollm2-135m-instruct"])
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    cfg = llama8b_config(a.tiny, 128256 if not a.tiny else len(tok))
    with torch.device(device):
        model = LlamaForCausalLM(cfg).to(dtype).eval()
    model.config.name_or_path = "llama-3.1-8b-shaped-random" if not a.tiny else "tiny-llama-shaped-random"
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    rows = generate_dialogues([f"topic {i}" for i in range(8)], list(EMOTIONS), 2, 0)[: a.n]
    by = {e: [r["dialogue"] for r in rows if r["theme"] == e] for e in EMOTIONS}
    texts = [r["dialogue"] for r in rows]
    out: dict = {
        "device": torch.cuda.get_device_name() if device == "cuda" else models.cpu_description(),
        "dtype": str(dtype).replace("torch.", ""),
        "config": "tiny" if a.tiny else "llama-3.1-8b-shaped",
        "layers_x_d_ff": list(models.ffn_shape(model)),
        "dialogues": len(texts),
    }
    items = [record.encode(tok, d, "raw", None) for d in texts]
    batches = [record.make_batch(items[s : s + 32], tok.pad_token_id) for s in range(0, len(items), 32)]
    n_tok = sum(int(b[2].sum()) for b in batches)

    def plain():
        with torch.inference_mode():
            for ids, attn, _ in batches:
                model.model(input_ids=ids.to(device), attention_mask=attn.to(device), use_cache=False)

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t_plain = timed(plain, device)
    t_rec = timed(lambda: record.record_counts(model, tok, by, batch_size=32), device)
    t_null = timed(lambda: record.record_counts(model, tok, by, batch_size=32, n_null=20), device)
    out.update(
        {
            "forward_tokens_per_s": round(n_tok / t_plain),
            "recording_tokens_per_s": round(n_tok / t_rec),
            "recording_null20_tokens_per_s": round(n_tok / t_null),
            "recording_over_forward": round(t_rec / t_plain, 2),
            "null20_over_forward": round(t_null / t_plain, 2),
        }
    )
    chat = prompts.use_chat("auto", True, tok)
    clf = classify.make_classifier(model, tok, list(EMOTIONS), chat, batch_size=16, calibrate=False)
    L, D = models.ffn_shape(model)
    g = torch.Generator().manual_seed(0)
    masks = [{l: torch.randperm(D, generator=g)[: D // 100].tolist() for l in range(L)} for _ in range(8)]
    t_score = timed(lambda: batched.score_masks(clf, texts[:16], masks, calibration=None), device)
    out["scoring_item_masks_per_s"] = round(16 * len(masks) / t_score, 1)
    if device == "cuda":
        out["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 1)
    out["projected_identification_minutes"] = round(PAPER_TOKENS / out["recording_null20_tokens_per_s"] / 60, 1)
    out["paper_grid_item_masks"] = grid_conditions()
    out["projected_grid_minutes"] = round(grid_conditions() / out["scoring_item_masks_per_s"] / 60, 1)
    return out


if __name__ == "__main__":
    main()
