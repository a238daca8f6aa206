"""Stages 3-4 tests: the own-vs-random row on a hand example, Holm verdicts with direction, power, the cached
batched scorer, the instrument rule, and the external eval slot feeding stage 3."""

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from emolib.causal import effect_tables, effects, grids, instrument, splits, stats
from emolib.emotions import EMOTIONS
from emolib.lm import classify
from emolib.report import findings

ROOT = Path(__file__).resolve().parent.parent


def _scores(margins: np.ndarray) -> np.ndarray:
    """[N, 2] scores whose label-0 margin is the given value (true label 0)."""
    return np.stack([margins, np.zeros_like(margins)], 1)


def test_effect_row_by_hand():
    y = np.zeros(4, dtype=int)
    base = _scores(np.array([1.0, 1.0, 1.0, -1.0]))
    own = _scores(np.array([-1.0, 0.5, 1.0, -1.0]))  # margin deltas -2, -0.5, 0, 0; accuracy deltas -1, 0, 0, 0
    rand = np.stack([_scores(np.array([1.0, 1.0, 1.0, -1.0]) + s) for s in (0.1, -0.1, 0.0)])
    r = effects.effect_row(base, own, rand, y, n_boot=200, seed=0)
    assert r["own_d_margin"] == pytest.approx(-0.625) and r["own_d_accuracy"] == pytest.approx(-0.25)
    assert r["random_d_margin"] == pytest.approx(0.0) and r["random_d_margin_sd"] == pytest.approx(0.1)
    assert r["own_minus_random_margin"] == pytest.approx(-0.625) and r["n_random"] == 3
    half = 4.302653 * 0.1 * math.sqrt(1 + 1 / 3)  # t_{0.975, 2} sd sqrt(1 + 1/R): the test's own interval
    assert r["omr_margin_lo"] == pytest.approx(-0.625 - half, abs=1e-5)
    assert r["omr_margin_hi"] == pytest.approx(-0.625 + half, abs=1e-5)
    assert r["p"] == pytest.approx(stats.normal_p(-0.625, np.array([0.1, -0.1, 0.0]), "two-sided"))
    assert "p_empirical" not in r
    assert r["baseline_accuracy"] == pytest.approx(0.75)


def test_family_correction_gives_direction_and_skips_untested():
    t = pd.DataFrame({"p": [0.001, 0.004, 0.2, np.nan], "own_minus_random_margin": [-1.0, 0.5, -0.2, np.nan]})
    out = effects.correct_family(t)
    assert out["p_holm"].tolist()[:3] == pytest.approx([0.003, 0.008, 0.2])
    assert out["verdict"].tolist() == [
        "own drop beyond random",
        "own gain beyond random",
        "no detectable effect",
        "not tested",
    ]


def test_power_is_that_of_the_test_run():
    t = pd.DataFrame(
        {
            "random_d_margin_sd": [0.1, 0.1, 0.1, np.nan],
            "n_random": [20, 20, 50, np.nan],
            "set": ["a"] * 4,
            "p": [0.5, 0.5, 0.5, np.nan],
        }
    )
    t = pd.concat([t] + [t.iloc[:3]] * 3, ignore_index=True)  # 12 tested rows in the set: Holm's m within it
    out = effects.add_power(t, delta=0.25)
    assert out["power"][0] == pytest.approx(stats.t_power(0.25, 0.1, 20, 0.05, 12))
    assert out["power"][2] > out["power"][0]  # more random sets, fewer lost degrees of freedom
    assert stats.t_power(out["delta_80"][0], 0.1, 20, 0.05, 12) == pytest.approx(0.8, abs=1e-3)
    assert np.isnan(out["power"][3]) and np.isnan(out["delta_80"][3])


def test_scorer_caches_and_matches_one_mask_at_a_time(tiny, tmp_path):
    model, tok = tiny
    p = {"run_dir": str(tmp_path), "model": "tiny", "prompt_template": None, "emotions": list(EMOTIONS)}
    clf = classify.make_classifier(model, tok, list(EMOTIONS), chat=True, batch_size=4, calibrate=True)
    sc = instrument.Scorer(clf, p, {"prompt_style": "chat", "few_shot": 0})
    d = ["A: I am so angry.\nB: Why?", "A: What a lovely day!\nB: Indeed."]
    masks = [{}, {1: [3, 5]}, {0: [1], 2: [7]}]
    raw = sc.scores(d, masks)
    assert raw.shape == (3, 2, 6)
    from emolib.lm import ablate

    for m, r in zip(masks, raw):
        with ablate.ablate(model, m):
            ref = classify.label_scores(
                classify.make_classifier(model, tok, list(EMOTIONS), True, 0, None, 4, False), d
            )
        assert np.allclose(r, ref, atol=1e-4)
    n_lines = len((tmp_path / "cache" / "scores.jsonl").read_text().splitlines())
    again = instrument.Scorer(clf, p, {"prompt_style": "chat", "few_shot": 0}).scores(d, masks)  # from the cache
    assert np.allclose(again, raw) and len((tmp_path / "cache" / "scores.jsonl").read_text().splitlines()) == n_lines
    assert np.allclose(sc.calibrate(raw[0]), raw[0] - sc.base_cf)  # calibration held fixed


def test_scorer_scores_only_the_pairs_it_lacks(tiny, tmp_path):
    model, tok = tiny
    p = {"run_dir": str(tmp_path), "model": "tiny", "prompt_template": None, "emotions": list(EMOTIONS)}
    clf = classify.make_classifier(model, tok, list(EMOTIONS), chat=True, batch_size=4, calibrate=True)
    sc = instrument.Scorer(clf, p, {"prompt_style": "chat", "few_shot": 0}, masks_per_pass=2)
    d = ["A: I am so angry.\nB: Why?", "A: What a lovely day!\nB: Indeed.", "A: A spider!\nB: Where?"]
    masks = [{1: [3, 5]}, {0: [1], 2: [7]}, {3: [2]}]
    n0 = sc.computed  # the content-free item, scored unmasked at construction
    first = sc.scores(d[:2], masks[:2])
    n = sc.computed
    assert n - n0 == 4
    both = sc.scores(d + d[:1], masks + masks[:1])  # a repeated item or mask is scored once
    assert sc.computed - n == 2 * 1 + 1 * 3  # the new item under the two old masks, every item under the new mask
    assert both.shape == (4, 4, 6) and np.allclose(both[:2, :2], first) and np.allclose(both[3], both[0])
    fresh = instrument.Scorer(clf, {**p, "run_dir": str(tmp_path / "fresh")}, {"prompt_style": "chat", "few_shot": 0})
    assert np.allclose(fresh.scores(d, masks), both[:3, :3], atol=1e-5)  # the same scores, however they were batched


def test_instrument_rule_prefers_what_holds_on_both_halves(monkeypatch, tiny, tmp_path):
    model, tok = tiny
    p = {
        "run_dir": str(tmp_path),
        "model": "tiny-random-llama",
        "prompt_template": None,
        "emotions": list(EMOTIONS),
        "batch_size": 4,
    }
    dev = pd.DataFrame({"dialogue": [f"A: line {i}.\nB: ok." for i in range(12)], "label": list(EMOTIONS) * 2})
    table, chosen = instrument.choose_instrument(model, tok, p, dev)
    assert len(table) == len(instrument.instrument_candidates(p, tok)) == 12
    best = table["holds_on_both_halves"].max()
    row = table[
        (table.prompt_style == chosen["prompt_style"])
        & (table.few_shot == chosen["few_shot"])
        & (table.calibrate == chosen["calibrate"])
    ].iloc[0]
    assert row.holds_on_both_halves == best
    tied = table[table.holds_on_both_halves == best]
    assert row.dev_accuracy == tied.dev_accuracy.max()
    assert row.few_shot == tied[tied.dev_accuracy == tied.dev_accuracy.max()].few_shot.min()


def test_external_eval_file_feeds_stage_3(tmp_path):
    p = {
        "eval_source": "file",
        "eval_path": str(ROOT / "tests/fixtures/external-eval.jsonl"),
        "emotions": list(EMOTIONS),
        "seed": 0,
        "run_dir": str(tmp_path),
    }
    items = splits.eval_table(p, per_emotion=1)
    assert sorted(items.label) == sorted(EMOTIONS) and items.dialogue.str.len().min() > 0
    p["eval_path"] = str(ROOT / "tests/fixtures/external-eval.csv")
    assert len(splits.eval_table(p)) == 12


def test_findings_say_what_the_numbers_say():
    t = effects.add_power(
        effects.correct_family(
            pd.DataFrame(
                [
                    {
                        "set": "paper",
                        "emotion": "anger",
                        "n_neurons": 10,
                        "n_items": 30,
                        "n_random": 20,
                        "p": 0.001,
                        "own_minus_random_margin": -1.2,
                        "omr_margin_lo": -1.5,
                        "omr_margin_hi": -0.9,
                        "random_d_margin_sd": 0.1,
                    },
                    {
                        "set": "paper",
                        "emotion": "fear",
                        "n_neurons": 12,
                        "n_items": 30,
                        "n_random": 20,
                        "p": 0.5,
                        "own_minus_random_margin": 0.1,
                        "omr_margin_lo": -0.2,
                        "omr_margin_hi": 0.4,
                        "random_d_margin_sd": 0.3,
                    },
                ]
            )
        )
    )
    lines = findings.tests(t)
    assert "own drop beyond random" in lines[0] and "-1.20 nat" in lines[0] and "20 random sets" in lines[0]
    assert "no detectable effect" in lines[1] and "80% power needs a shift of" in lines[1]
    comp = effect_tables.paper_comparison(t)
    assert comp.set_index("emotion").loc["anger", "agrees"] and not comp.set_index("emotion").loc["fear", "agrees"]


def test_control_check_reads_the_positive_control_first():
    rows = [
        {"set": "attribution", "emotion": e, "p": p, "own_minus_random_margin": -1.0}
        for e, p in zip(EMOTIONS, [1e-4, 1e-4, 1e-4, 1e-4, 0.5, 0.5])
    ]
    t = effects.correct_family(pd.DataFrame(rows))
    assert "4 of 6" in findings.control(t) and "can find" in findings.control(t)
    weak = effects.correct_family(pd.DataFrame([{**r, "p": 0.5} for r in rows]))
    assert "too weak" in findings.control(weak)
    assert findings.control(weak.assign(set="paper")) is None


def test_grid_contrasts_are_pooled_one_family_and_read_the_control():
    rng = np.random.default_rng(0)

    def grid(effect: float, labels) -> dict:
        return {
            (e, r): {
                "own": (own, 0.0),
                "random": np.stack([rng.normal(0, 0.05, 20), np.zeros(20)], 1),
                "n_neurons": 5,
                "n_items": 4,
            }
            for e in EMOTIONS
            for r, own in zip(labels, [0.0, effect])
        }

    dose = {"attribution": grid(-2.0, [0.01, 0.1]), "paper": grid(0.0, [0.01, 0.1])}
    rng_ = {"attribution": grid(0.0, ["bottom", "top"]), "paper": grid(0.0, ["bottom", "top"])}
    pooled_t, per = grids.grid_contrasts(dose, rng_, list(EMOTIONS), [0.01, 0.1], delta=0.25)
    rows = grids.contrast_rows(dose["attribution"], "attribution", list(EMOTIONS), "dose slope", [0.01, 0.1])
    assert rows[0]["own"] == pytest.approx(-2.0) and rows[0]["n_random"] == 20  # per tenfold dose
    t = pooled_t.set_index(["set", "contrast"])
    assert t.loc[("attribution", "dose slope"), "role"] == "control"
    assert t.loc[("attribution", "dose slope"), "verdict"] == "effect beyond random (drop)"
    assert t.loc[("paper", "dose slope"), "verdict"].startswith("equivalent to random within")
    assert (t.loc["paper", "n_emotions"] == 6).all() and "random_values" not in per
    assert len(per) == 4 * 6 and set(per.verdict) <= {"own drop beyond random", "no detectable effect"}
    lines = findings.grid(pooled_t)
    assert "Holm over 2 named-set contrasts" in lines[0] and "`paper` dose slope: equivalent" in lines[0]
    assert "Controls" in lines[1] and "`attribution` dose slope: effect beyond random (drop)" in lines[1]
