"""Metrics and the result tables of stages 3-5 on small hand-made inputs."""

import numpy as np
import pandas as pd
import pytest

from emolib import compare, evaluate, metrics, neurons, sweep

E = ["anger", "fear", "happiness"]


def test_accuracy_f1_and_confusion_by_hand():
    true = ["anger", "anger", "fear", "happiness"]
    pred = ["anger", "fear", "fear", None]
    acc = metrics.per_emotion_accuracy(true, pred, E)
    assert acc == {"anger": 0.5, "fear": 1.0, "happiness": 0.0, "overall": 0.5}
    # F1: anger 2/3 (p=1, r=.5), fear 2/3 (p=.5, r=1), happiness 0
    assert metrics.macro_f1(true, pred, E) == pytest.approx((2 / 3 + 2 / 3) / 3)
    conf = metrics.confusion(true, pred, E)
    assert conf.loc["happiness", "none"] == 1 and conf.values.sum() == 4 and conf.loc["anger", "fear"] == 1


def test_bootstrap_intervals():
    x = np.array([1] * 30 + [0] * 70)
    lo, hi = metrics.bootstrap_ci(x, 2000, 0)
    assert lo < 0.3 < hi and hi - lo < 0.25
    lo, hi = metrics.bootstrap_diff_ci(x, x, 500, 0)
    assert lo == hi == 0.0


def test_prediction_cache_resumes(tmp_path):
    c = evaluate.PredictionCache(tmp_path / "p.jsonl")
    calls = []
    assert c.get_or_run("k1", lambda: calls.append(1) or ["anger"]) == ["anger"]
    again = evaluate.PredictionCache(tmp_path / "p.jsonl")
    assert again.get_or_run("k1", lambda: calls.append(2) or ["fear"]) == ["anger"] and calls == [1]


def _result():
    true = ["anger"] * 4 + ["fear"] * 4
    base = ["anger"] * 4 + ["fear"] * 4
    preds = {("baseline", "none", "none", -1): base,
             ("own", "anger", "zero", -1): ["fear"] * 4 + ["fear"] * 4,          # anger 100% -> 0%
             ("own", "fear", "zero", -1): ["anger"] * 4 + ["fear"] * 3 + ["anger"],  # fear 100% -> 75%
             ("random", "anger", "zero", 0): ["anger"] * 3 + ["fear"] + ["fear"] * 4,
             ("random", "fear", "zero", 0): base}
    rows = []
    for (c, m, mo, s), pr in preds.items():
        rows += evaluate.rows_for(c, m, mo, s, 0, true, pr, ["anger", "fear"])
    return pd.DataFrame(rows), {"true": true, "preds": preds}


def test_delta_matrix_and_own_vs_random():
    table, result = _result()
    d = evaluate.delta_matrix(table)
    assert d.loc["anger", "anger"] == -1.0 and d.loc["fear", "fear"] == -0.25 and d.loc["fear", "anger"] == 0.0
    ovr = evaluate.own_vs_random(table, result, ["anger", "fear"], n_boot=200)
    assert ovr.loc["anger", "own_delta"] == -1.0 and ovr.loc["anger", "random_delta_mean"] == -0.25
    assert ovr.loc["anger", "own_minus_random"] == -0.75 and ovr.loc["anger", "own_larger_drop_than_all_random"]
    assert ovr.loc["fear", "own_ci_low"] <= -0.25 <= ovr.loc["fear", "own_ci_high"]
    assert evaluate.random_deltas(result, ["anger", "fear"]) == {"anger": [-0.25], "fear": [0.0]}


def test_depth_profile_and_comparison(tmp_path):
    table, _ = _result()
    sets = {"anger": [(0, 1), (3, 2)], "fear": [(1, 0)]}
    ns = neurons.NeuronSets("m", 4, 8, ["anger", "fear"], sets, {"n_selected": 3})
    prof = sweep.depth_profile(ns, bins=4)
    assert prof["anger"].tolist() == [0.5, 0, 0, 0.5] and prof["fear"].sum() == 1
    R = {"a": {"neurons": ns, "ablation": table, "sweep": None}, "b": {"neurons": ns, "ablation": table, "sweep": None}}
    sens = compare.sensitivity(R)
    assert sens.loc["anger", "a"] == pytest.approx(-0.75) and sens.loc["fear", "b"] == pytest.approx(-0.25)
    concl = compare.conclusions(R)
    assert concl.loc["anger", "a"] == "masking hurts" and "agree on 2 of 2" in compare.agreement_lines(concl)[0]
