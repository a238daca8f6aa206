"""The stage 3-4 design fixed in params: variance components, the cost model, the planner, the progress line."""

import json

import numpy as np
import pandas as pd
import pytest

from emolib.causal import budget
from emolib.emotions import EMOTIONS

P = {
    "emotions": list(EMOTIONS),
    "n_random_sets": 20,
    "power_delta": 0.25,
    "secondary_random_sets": 3,
    "specificity_random_sets": 1,
    "grid_random_sets": 20,
    "grid_eval_limit": 4,
}


def test_components_recover_planted_variances():
    rng = np.random.default_rng(0)
    R, n = 400, 60
    d = rng.normal(0, 0.3, (R, 1)) + rng.normal(0, 1.0, (1, n)) + rng.normal(0, 0.8, (R, n))  # set + item + noise
    between, within = budget.components(d)
    assert between == pytest.approx(0.09, rel=0.2) and within == pytest.approx(0.64, rel=0.05)
    # the SD of a set's mean over these n items is what the components predict
    assert budget.predicted_sd(between, within, n) == pytest.approx(d.mean(1).std(ddof=1), rel=0.1)
    assert np.isnan(budget.components(d[:1])[0])


P_FIXED = {
    **P,
    "items_per_emotion": 6,
    "pilot_random_sets": 6,
    "intervention": "zero/recomputed",
    "titration_shares": [0.1, 0.25, 0.5, 1.0],
    "titration_draws": 5,
    "dose_rates": [0.0025, 0.01],
    "layer_bins": 3,
    "grid_ranges": ["bottom", "top"],
}


def test_the_design_is_the_parameter_files_and_no_timing_changes_it():
    d = budget.fixed_design(P_FIXED, available=40, n_sets=5, n_grid_sets=2, calibrates=True, dtype="bfloat16")
    assert (d.n_random, d.n_items, d.pilot_random, d.grid_items, d.intervention) == (20, 6, 6, 4, "zero/recomputed")
    assert d.titration_shares == [0.1, 0.25, 0.5, 1.0] and d.titration_draws == 5
    assert d.item_masks["titration"] == 4 * 5 * 6 * 7 and d.item_masks["pilot"] == 6 * 6 * 2 * 7
    assert not {"throughput", "rate", "seconds", "power"} & set(budget.Design.__dataclass_fields__)
    short = budget.fixed_design(P_FIXED, available=4, n_sets=5, n_grid_sets=2, calibrates=True)
    assert short.n_items == 4 and "only 4" in short.note


def test_design_file_holds_nothing_measured(tmp_path):
    p = {**P_FIXED, "run_dir": str(tmp_path)}
    d = budget.fixed_design(p, 40, 5, 2, True, "float32")
    budget.save(p, d)
    first = (tmp_path / budget.DESIGN_FILE).read_bytes()
    budget.save_timing(p, throughput=3.0)
    budget.save_timing(p, throughput=300.0)
    budget.save(p, budget.fixed_design(p, 40, 5, 2, True, "float32"))
    assert (tmp_path / budget.DESIGN_FILE).read_bytes() == first
    assert budget.load_timing(p)["throughput"] == 300.0


def test_the_planner_fits_the_budget_and_proposes_params_lines():
    comps = {e: (0.01, 0.5) for e in EMOTIONS}
    small = budget.plan(600, 10.0, comps, P_FIXED, 5, 2, 40, True, 6)
    big = budget.plan(6000, 10.0, comps, P_FIXED, 5, 2, 40, True, 6)
    assert small["minutes"] <= 10 and big["minutes"] <= 100
    assert big["delta_80"] <= small["delta_80"] and small["n_random_sets"] >= P["n_random_sets"]
    blind = budget.plan(600, 10.0, None, P_FIXED, 5, 2, 40, True, 6)  # no pilot: the most items that fit
    more = budget.plan(600, 10.0, None, {**P_FIXED}, 5, 2, 40, True, 6)
    assert blind == more and blind["n_random_sets"] == 20 and blind["delta_80"] is None
    cost = lambda n: sum(budget.cost(P_FIXED, 5, 2, 20, n, True).values()) / 10.0  # noqa: E731
    assert cost(blind["items_per_emotion"]) <= 600 < cost(blind["items_per_emotion"] + 1)
    lines = budget.plan_lines(small)
    assert lines.startswith(f"n_random_sets: {small['n_random_sets']}\nitems_per_emotion: {small['items_per_emotion']}")
    tiny = budget.plan(0.001, 10.0, None, P_FIXED, 5, 2, 40, True, 6)
    assert "does not fit" in tiny["note"]


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
