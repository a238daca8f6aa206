"""Stages 3-4 tests: the own-vs-random row on a hand example, Holm verdicts with direction, power, the cached
batched scorer, the instrument rule, and the external eval slot feeding stage 3."""

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from emolib import classify, effects, stats
from emolib.emotions import EMOTIONS

ROOT = Path(__file__).resolve().parent.parent


def _scores(margins: np.ndarray) -> np.ndarray:
    """[N, 2] scores whose label-0 margin is the given value (true label 0)."""
    return np.stack([margins, np.zeros_like(margins)], 1)


def test_effect_row_by_hand():
    y = np.zeros(4, dtype=int)
    base = _scores(np.array([1.0, 1.0, 1.0, -1.0]))
    own = _scores(np.array([-1.0, 0.5, 1.0, -1.0]))       # margin deltas -2, -0.5, 0, 0; accuracy deltas -1, 0, 0, 0
    rand = np.stack([_scores(np.array([1.0, 1.0, 1.0, -1.0]) + s) for s in (0.1, -0.1, 0.0)])
    r = effects.effect_row(base, own, rand, y, n_boot=200, seed=0)
    assert r["own_d_margin"] == pytest.approx(-0.625) and r["own_d_accuracy"] == pytest.approx(-0.25)
    assert r["random_d_margin"] == pytest.approx(0.0) and r["random_d_margin_sd"] == pytest.approx(0.1)
    assert r["own_minus_random_margin"] == pytest.approx(-0.625)
    assert r["omr_margin_lo"] <= -0.625 <= r["omr_margin_hi"]
    assert r["p"] == pytest.approx(stats.normal_p(-0.625, np.array([0.1, -0.1, 0.0]), "two-sided"))
    assert r["p_empirical"] == pytest.approx(2 * 1 / 4)  # no random set is as low: (1 + 0) / 4, two-sided
    assert r["baseline_accuracy"] == pytest.approx(0.75)


def test_family_correction_gives_direction_and_skips_untested():
    t = pd.DataFrame({"p": [0.001, 0.004, 0.2, np.nan], "own_minus_random_margin": [-1.0, 0.5, -0.2, np.nan]})
    out = effects.correct_family(t)
    assert out["p_holm"].tolist()[:3] == pytest.approx([0.003, 0.008, 0.2])
    assert out["verdict"].tolist() == ["own drop beyond random", "own gain beyond random", "no detectable effect",
                                       "not tested"]


def test_power_has_a_floor_and_reports_infinite_needs():
    t = pd.DataFrame({"item_sd_accuracy": [0.0, 0.3, 0.3], "between_set_sd_accuracy": [0.0, 0.0, 0.2],
                      "n_items": [30, 30, 30]})
    out = effects.add_power(t, m=6)
    assert 0 < out["power_at_10pp"][0] < 1            # no observed variance still leaves the binomial floor
    assert out["power_at_10pp"][0] == pytest.approx(out["power_at_10pp"][1])
    assert math.isinf(out["items_for_80pct"][2])       # random sets alone spread 20 pp: no n reaches 80%
    assert out["items_for_80pct"][1] > 30


def test_scorer_caches_and_matches_one_mask_at_a_time(tiny, tmp_path):
    model, tok = tiny
    p = {"run_dir": str(tmp_path), "model": "tiny", "prompt_template": None, "emotions": list(EMOTIONS)}
    clf = classify.make_classifier(model, tok, list(EMOTIONS), chat=True, batch_size=4, calibrate=True)
    sc = effects.Scorer(clf, p, {"prompt_style": "chat", "few_shot": 0})
    d = ["A: I am so angry.\nB: Why?", "A: What a lovely day!\nB: Indeed."]
    masks = [{}, {1: [3, 5]}, {0: [1], 2: [7]}]
    raw = sc.scores(d, masks)
    assert raw.shape == (3, 2, 6)
    from emolib import ablate
    for m, r in zip(masks, raw):
        with ablate.ablate(model, m):
            ref = classify.label_scores(classify.make_classifier(model, tok, list(EMOTIONS), True, 0, None, 4, False), d)
        assert np.allclose(r, ref, atol=1e-4)
    n_lines = len((tmp_path / "cache" / "scores.jsonl").read_text().splitlines())
    again = effects.Scorer(clf, p, {"prompt_style": "chat", "few_shot": 0}).scores(d, masks)  # from the cache
    assert np.allclose(again, raw) and len((tmp_path / "cache" / "scores.jsonl").read_text().splitlines()) == n_lines
    assert np.allclose(sc.calibrate(raw[0]), raw[0] - sc.base_cf)  # calibration held fixed


def test_instrument_rule_prefers_what_holds_on_both_halves(monkeypatch, tiny, tmp_path):
    model, tok = tiny
    p = {"run_dir": str(tmp_path), "model": "tiny-random-llama", "prompt_template": None, "emotions": list(EMOTIONS),
         "batch_size": 4}
    dev = pd.DataFrame({"dialogue": [f"A: line {i}.\nB: ok." for i in range(12)], "label": list(EMOTIONS) * 2})
    table, chosen = effects.choose_instrument(model, tok, p, dev)
    assert len(table) == len(effects.instrument_candidates(p, tok)) == 12
    best = table["holds_on_both_halves"].max()
    row = table[(table.prompt_style == chosen["prompt_style"]) & (table.few_shot == chosen["few_shot"])
                & (table.calibrate == chosen["calibrate"])].iloc[0]
    assert row.holds_on_both_halves == best
    tied = table[table.holds_on_both_halves == best]
    assert row.dev_accuracy == tied.dev_accuracy.max()
    assert row.few_shot == tied[tied.dev_accuracy == tied.dev_accuracy.max()].few_shot.min()


def test_external_eval_file_feeds_stage_3(tmp_path):
    p = {"eval_source": "file", "eval_path": str(ROOT / "tests/fixtures/external-eval.jsonl"),
         "emotions": list(EMOTIONS), "seed": 0, "run_dir": str(tmp_path)}
    items = effects.eval_table(p, per_emotion=1)
    assert sorted(items.label) == sorted(EMOTIONS) and items.dialogue.str.len().min() > 0
    p["eval_path"] = str(ROOT / "tests/fixtures/external-eval.csv")
    assert len(effects.eval_table(p)) == 12


def test_findings_say_what_the_numbers_say():
    t = effects.add_power(effects.correct_family(pd.DataFrame([
        {"set": "paper", "emotion": "anger", "n_neurons": 10, "n_items": 30, "p": 0.001, "own_minus_random_margin": -1.2,
         "omr_margin_lo": -1.5, "omr_margin_hi": -0.9, "own_minus_random_accuracy": -0.2, "omr_accuracy_lo": -0.3,
         "omr_accuracy_hi": -0.1, "item_sd_accuracy": 0.4, "between_set_sd_accuracy": 0.02},
        {"set": "paper", "emotion": "fear", "n_neurons": 12, "n_items": 30, "p": 0.5, "own_minus_random_margin": 0.1,
         "omr_margin_lo": -0.2, "omr_margin_hi": 0.4, "own_minus_random_accuracy": 0.0, "omr_accuracy_lo": -0.1,
         "omr_accuracy_hi": 0.1, "item_sd_accuracy": 0.4, "between_set_sd_accuracy": 0.3}])), m=2)
    lines = effects.findings(t)
    assert "own drop beyond random" in lines[0] and "-20 pp" in lines[0]
    assert "no detectable effect" in lines[1] and "no number of items reaches 80%" in lines[1]
    comp = effects.paper_comparison(t)
    assert comp.set_index("emotion").loc["anger", "agrees"] and not comp.set_index("emotion").loc["fear", "agrees"]
