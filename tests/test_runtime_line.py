"""The runtime line at the top of an executed notebook: this run's time, the quick run's, and a stage 3 that only
read its scores from the cache says so."""

import json

from emolib import runner


def test_runtime_line_reads_the_quick_record(tmp_path):
    quick = tmp_path / "quick-timings.json"
    assert "no quick run is recorded" in runner.runtime_line("03_ablation", 12.0, quick)
    quick.write_text(json.dumps({"03_ablation": {"seconds": 121.3, "measured": "2026-12-01", "cpus": 2}}))
    line = runner.runtime_line("03_ablation", 12.0, quick)
    assert line.startswith("Runtime: this run took 12 s") and "121 s (measured 2026-12-01 on 2 CPUs)" in line


def test_a_stage_3_served_from_the_cache_says_so(tmp_path):
    quick = tmp_path / "none.json"
    (tmp_path / "scoring_time.json").write_text(json.dumps({"stage3_item_masks_scored": {}}))
    assert "came from the run's cache" in runner.runtime_line("03_ablation", 61.0, quick, run_dir=tmp_path)
    (tmp_path / "scoring_time.json").write_text(json.dumps({"stage3_item_masks_scored": {"main": 4200}}))
    assert "cache" not in runner.runtime_line("03_ablation", 610.0, quick, run_dir=tmp_path)
