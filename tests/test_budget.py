"""The stage 3-4 design within a time budget: variance components, the cost model, the choice, the progress line."""

import json

import numpy as np
import pandas as pd
import pytest

from emolib.causal import budget, stats
from emolib.emotions import EMOTIONS

P = {"emotions": list(EMOTIONS), "n_random_sets": 20, "power_delta": 0.25, "secondary_random_sets": 3,
     "specificity_random_sets": 1, "grid_random_sets": 20, "grid_eval_limit": 4}


def test_components_recover_planted_variances():
    rng = np.random.default_rng(0)
    R, n = 400, 60
    d = rng.normal(0, 0.3, (R, 1)) + rng.normal(0, 1.0, (1, n)) + rng.normal(0, 0.8, (R, n))  # set + item + noise
    between, within = budget.components(d)
    assert between == pytest.approx(0.09, rel=0.2) and within == pytest.approx(0.64, rel=0.05)
    # the SD of a set's mean over these n items is what the components predict
    assert budget.predicted_sd(between, within, n) == pytest.approx(d.mean(1).std(ddof=1), rel=0.1)
    assert np.isnan(budget.components(d[:1])[0])


def test_choice_fits_the_budget_and_keeps_the_minimum():
    comps = {e: (0.01, 0.5) for e in EMOTIONS}
    args = dict(comps=comps, p=P, n_sets=3, available=40, n_pilot=6, calibrates=True, n_tests=18, grid_sets=2,
                grid_cells=5)
    small = budget.choose(600, 10.0, **args)
    big = budget.choose(3000, 10.0, **args)
    assert small.total_seconds() <= 1200 and big.total_seconds() <= 3000
    assert small.n_random >= 20 and small.n_items >= 6 and big.n_items <= 40
    assert big.delta_80 <= small.delta_80 * (1 + budget.POWER_SLACK) and big.power >= small.power - 0.02
    assert small.power == pytest.approx(np.median([stats.t_power(0.25, budget.predicted_sd(0.01, 0.5, small.n_items),
                                                                 small.n_random, 0.05, 18)] * 6))
    tiny = budget.choose(1, 10.0, **args)  # below the smallest design: it runs, and says so
    assert (tiny.n_random, tiny.n_items) == (20, 6) and "below the smallest design" in tiny.note
    fixed = budget.choose(None, 10.0, **args)
    assert (fixed.n_random, fixed.n_items) == (20, 40) and "no budget" in fixed.note


def test_item_noise_buys_items_and_set_noise_does_not():
    args = dict(p=P, n_sets=3, available=60, n_pilot=4, calibrates=False, n_tests=18, grid_sets=0, grid_cells=0)
    items_matter = budget.choose(2000, 10.0, {e: (0.0, 2.0) for e in EMOTIONS}, **args)
    sets_matter = budget.choose(2000, 10.0, {e: (0.2, 0.01) for e in EMOTIONS}, **args)
    assert items_matter.n_items > sets_matter.n_items


def test_pilot_items_take_a_quarter_of_the_budget():
    n = budget.pilot_items(600, 10.0, 6, 20, 2, False, 100)
    assert budget.pilot_cost(6, 20, n, 2, False) <= budget.PILOT_SHARE * 600 * 10.0
    assert budget.pilot_cost(6, 20, n + 1, 2, False) > budget.PILOT_SHARE * 600 * 10.0
    assert budget.pilot_items(1, 10.0, 6, 20, 2, False, 100) == budget.MIN_PILOT_ITEMS
    assert budget.pilot_items(None, 10.0, 6, 20, 2, False, 17) == 17


def test_fewer_items_are_a_prefix_of_more():
    items = pd.DataFrame({"dialogue": [f"d{i}" for i in range(30)], "label": list(EMOTIONS) * 5})
    a, b = budget.take(items, 2, EMOTIONS), budget.take(items, 4, EMOTIONS)
    for e in EMOTIONS:
        assert b[b.label == e].dialogue.tolist()[:2] == a[a.label == e].dialogue.tolist()
    assert budget.available_items(items.iloc[:-1], EMOTIONS) == 4


def test_progress_line(tmp_path):
    prog = budget.Progress({"run_dir": str(tmp_path)}, "03_ablation", 1000, 10.0)
    prog.step("pilot")
    prog.add(250)
    line = budget.progress_line(tmp_path / budget.PROGRESS_FILE)
    assert "03_ablation · pilot · 250 of about 1,000 item-masks" in line and "about 1 min 15 s left" in line
    assert budget.progress_line(tmp_path / "absent.json") is None
    (tmp_path / "bad.json").write_text("{")
    assert budget.progress_line(tmp_path / "bad.json") is None
    assert json.loads((tmp_path / budget.PROGRESS_FILE).read_text())["done"] == 250


def test_runner_prints_the_progress_line_while_a_stage_runs(tmp_path, capsys):
    import time

    from emolib import runner
    with runner.watch_progress(tmp_path, every=0.05):
        prog = budget.Progress({"run_dir": str(tmp_path)}, "04_layer_analysis", 0, 5.0)
        prog.step("dose-response")
        prog.add(7)
        time.sleep(0.3)
    out = capsys.readouterr().out
    assert "04_layer_analysis · dose-response · 7 item-masks" in out and out.count("dose-response") == 1  # once
    assert not (tmp_path / budget.PROGRESS_FILE).exists()  # a later stage never shows this one's line


def test_progress_bars_report_to_the_runner(tmp_path, monkeypatch):
    from emolib import progress
    path = tmp_path / "bar.json"
    monkeypatch.setattr(progress, "EVERY", 0.0)
    monkeypatch.setenv(progress.ENV, str(path))
    for _ in progress.tqdm(range(4), desc="recording activations"):
        pass
    line = progress.bar_line(str(path), "02_neuron_identification")
    assert line.startswith("  02_neuron_identification · recording activations · 4 of 4 ·")
    for _ in progress.tqdm(range(3), desc="quiet", disable=True):  # a disabled bar reports nothing
        pass
    assert "recording activations" in path.read_text()
    assert progress.bar_line(str(tmp_path / "none.json"), "x") is None


def test_grid_cost_counts_the_content_free_item_under_recomputed_calibration():
    assert budget.grid_cost(2, 4, 6, 20, 2) == 2 * 4 * 6 * 21 * 2
    assert budget.grid_cost(2, 4, 6, 20, 2, calibrates=True) == 2 * 4 * 6 * 21 * 3
