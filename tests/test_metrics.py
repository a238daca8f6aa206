"""Metrics and the result tables of stages 3-5 on small hand-made inputs."""

import numpy as np
import pandas as pd
import pytest

from emolib.causal import metrics
from emolib.identify import neurons
from emolib.lm import classify
from emolib.report import compare

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
    c = classify.PredictionCache(tmp_path / "p.jsonl")
    calls = []
    assert c.get_or_run("k1", lambda: calls.append(1) or ["anger"]) == ["anger"]
    again = classify.PredictionCache(tmp_path / "p.jsonl")
    assert again.get_or_run("k1", lambda: calls.append(2) or ["fear"]) == ["anger"] and calls == [1]


def _tests(verdicts: dict[str, str], omr: dict[str, float]) -> pd.DataFrame:
    """A minimal own_vs_random table of the paper set."""
    return pd.DataFrame(
        [
            {"emotion": e, "baseline_accuracy": 0.8, "own_minus_random_accuracy": omr[e], "verdict": v}
            for e, v in verdicts.items()
        ]
    ).set_index("emotion")


def test_depth_profile_and_comparison(tmp_path):
    sets = {"anger": [(0, 1), (3, 2)], "fear": [(1, 0)]}
    ns = neurons.NeuronSets("m", 4, 8, ["anger", "fear"], sets, {"n_selected": 3})
    prof = neurons.depth_profile(ns, bins=4)
    assert prof["anger"].tolist() == [0.5, 0, 0, 0.5] and prof["fear"].sum() == 1
    a = _tests({"anger": "own drop beyond random", "fear": "no detectable effect"}, {"anger": -0.3, "fear": -0.02})
    b = _tests({"anger": "own drop beyond random", "fear": "not tested"}, {"anger": -0.2, "fear": np.nan})
    R = {"a": {"neurons": ns, "tests": a, "sweep": None}, "b": {"neurons": ns, "tests": b, "sweep": None}}
    sens = compare.sensitivity(R)
    assert sens.loc["anger", "a"] == pytest.approx(-0.3) and np.isnan(sens.loc["fear", "b"])
    concl = compare.conclusions(R)
    assert concl.loc["anger", "a"] == "own drop beyond random" and concl.loc["fear", "b"] == "not measured"
    lines = compare.agreement_lines(concl)
    assert "agree on 1 of 2" in lines[0] and any("Not measured" in x for x in lines)
    assert compare.overview(R).loc["a", "baseline accuracy (mean over emotions)"] == pytest.approx(0.8)


def test_one_accuracy_rule_in_the_notebook_summary_and_the_tests():
    """metrics (notebook 03's baseline table) and effects/stats (own_vs_random's baseline_accuracy) give the same
    accuracy on the same tie-heavy scores: a tie of k labels counts 1/k in both (argmax would favour the first)."""
    from emolib.causal import effects, stats

    rng = np.random.default_rng(0)
    scores = rng.integers(0, 3, size=(60, len(E))).astype(float)  # coarse scores: many ties, as bfloat16 gives
    y = rng.integers(0, len(E), 60)
    true = [E[j] for j in y]
    pred = [E[j] for j in scores.argmax(1)]
    table = metrics.summary(true, pred, E, n_boot=0, scores=scores)
    for j, e in enumerate(E):
        sel = y == j
        row = effects.effect_row(scores[sel], scores[sel], np.stack([scores[sel]] * 2), y[sel], 10, 0)
        assert table.loc[e, "accuracy"] == pytest.approx(row["baseline_accuracy"])
        assert metrics.per_emotion_accuracy(true, pred, E, scores)[e] == pytest.approx(row["baseline_accuracy"])
    argmax = metrics.summary(true, pred, E, n_boot=0)
    assert not np.allclose(argmax["accuracy"], table["accuracy"])  # the rule matters on these scores
    assert table.loc["overall", "accuracy"] == pytest.approx(stats.correct(scores, y).mean())
