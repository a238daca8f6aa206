"""The paper-scale GPU check runs end to end on CPU with a toy config (its CUDA path runs where a GPU is lent)."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_check_runs_with_a_tiny_config(tmp_path):
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = mod.main(["--tiny", "--no-book", "--n", "12", "--out", str(tmp_path)])
    assert (tmp_path / "gpu_check.json").exists()
    assert out["layers_x_d_ff"] == [2, 256]
    for k in (
        "forward_tokens_per_s",
        "recording_tokens_per_s",
        "recording_null20_tokens_per_s",
        "scoring_item_masks_per_s",
    ):
        assert out[k] > 0
    assert out["paper_grid_item_masks"] == mod.grid_conditions() > 0
    assert out["projected_identification_minutes"] > 0
