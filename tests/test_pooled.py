"""The pooled test: its statistic and null from random_sets.csv, equivalence (TOST) and its bound, the three
verdicts, Holm over the named sets only, the detection curve, and power that stays finite."""

import numpy as np
import pandas as pd
import pytest

from emolib.causal import pooled, stats
from emolib.emotions import EMOTIONS


def _random_sets(effects: dict[str, float], R: int = 20, sd: float = 0.1, seed: int = 0) -> pd.DataFrame:
    """random_sets.csv rows: per set, an own value per emotion shifted by the set's effect, and R families."""
    rng = np.random.default_rng(seed)
    rows = []
    for name, eff in effects.items():
        fam = rng.normal(0, sd, (R, 1)) + rng.normal(0, sd / 2, (R, len(EMOTIONS)))
        own = eff + rng.normal(0, sd, 1) + rng.normal(0, sd / 2, len(EMOTIONS))
        for j, e in enumerate(EMOTIONS):
            rows += pooled.records(name, "zero/recomputed", "own", e, 6, 10, own[j], 0.0)
            rows += pooled.records(name, "zero/recomputed", "random", e, 6, 10, fam[:, j], np.zeros(R))
    return pooled.frame(rows)


def test_pooled_statistic_is_the_mean_over_emotions_against_each_familys_mean():
    rs = _random_sets({"paper": -1.0})
    own, null, keep = pooled.pooled_values(rs, "paper", "zero/recomputed")
    g = rs[rs.kind == "random"].pivot_table(index="draw", columns="emotion", values="d_margin")
    assert keep == list(EMOTIONS) and own == pytest.approx(rs[rs.kind == "own"].d_margin.mean())
    assert null == pytest.approx(g[list(EMOTIONS)].mean(axis=1).to_numpy())
    t = pooled.pooled(rs, "zero/recomputed", 0.25, 0.25)
    r = t.iloc[0]
    assert r.p == pytest.approx(stats.normal_p(own, null, "two-sided"))
    assert (r.own_minus_random, r.lo, r.hi) == pytest.approx(stats.prediction_ci(own, null))
    assert r.in_sds == pytest.approx(r.own_minus_random / null.std(ddof=1))


def test_three_verdicts_holm_over_named_sets_and_controls_apart():
    rs = _random_sets({"attribution": -3.0, "paper": 0.0, "selective": -1.0, "directions": 0.15}, sd=0.05)
    t = pooled.pooled(rs, "zero/recomputed", 0.25, 0.25).set_index("set")
    assert t.loc["attribution", "role"] == "control" and (t.drop("attribution").role == "test").all()
    assert t.loc["attribution", "verdict"] == "effect beyond random (drop)"
    assert t.loc["selective", "verdict"] == "effect beyond random (drop)"
    assert t.loc["paper", "verdict"] == "equivalent to random within ±0.25 nat"
    tests = t[t.role == "test"]
    assert tests.p_holm.tolist() == pytest.approx(stats.holm(tests.p.to_numpy()).tolist())  # 3 sets, not 4
    wide = _random_sets({"paper": 0.0}, sd=1.0)
    assert pooled.pooled(wide, "zero/recomputed", 0.25, 0.25).verdict[0] == "undecided"


def test_equivalence_bound_is_where_tost_starts_to_reject():
    rng = np.random.default_rng(3)
    null = rng.normal(0, 0.2, 20)
    for own in (-0.3, 0.0, 0.1):
        b = stats.equivalence_bound(own, null, 0.05)
        assert stats.tost_p(own, null, b * 1.001) < 0.05 < stats.tost_p(own, null, b * 0.999)
        assert b >= abs(own - null.mean())
    # TOST at alpha is the (1 - 2 alpha) prediction interval inside +-delta
    d, lo, hi = stats.prediction_ci(0.05, null, 0.90)
    assert stats.equivalence_bound(0.05, null, 0.05) == pytest.approx(max(abs(lo), abs(hi)))


def test_equivalence_holds_at_its_level_under_a_planted_boundary():
    """A true shift exactly at +delta: TOST claims equivalence in at most alpha of the runs."""
    rng = np.random.default_rng(1)
    hits = 0
    for _ in range(2000):
        null = rng.normal(0, 0.1, 20)
        own = 0.25 + rng.normal(0, 0.1)
        hits += stats.tost_p(own, null, 0.25) < 0.05
    assert hits / 2000 <= 0.05 + 0.012


def test_power_stays_finite_at_large_noncentrality(monkeypatch):
    assert stats.t_power(100.0, 1.0, 20, 0.05, 48) == 1.0
    assert stats.t_power(8.0, 1.0, 20, 0.05, 48) > 0.99
    import scipy.stats

    monkeypatch.setattr(scipy.stats.nct, "sf", lambda *a, **k: np.nan)  # as it fails past about 7 on some builds
    p = stats.t_power(6.0, 1.0, 20, 0.05, 6)
    assert np.isfinite(p) and 0.5 < p <= 1.0
    assert stats.t_power(50.0, 1.0, 20, 0.05, 6) == pytest.approx(1.0)


def test_detection_curve_reads_titrated_families_against_the_reference_null():
    rs = _random_sets({"paper": 0.0}, sd=0.05)
    rows = []
    for share, eff in ((0.1, -0.02), (0.5, -0.3), (1.0, -1.0)):
        for k in range(5):
            for e in EMOTIONS:
                rows += pooled.records(
                    "paper", "zero/recomputed", "titrated", e, 6, 10, eff + 0.01 * k, 0.0, share=share, start=k
                )
    rs = pd.concat([rs, pooled.frame(rows)], ignore_index=True)
    tit = pooled.titration(rs, "zero/recomputed", "paper", n_tests=3)
    curve = pooled.detection_curve(tit).set_index("share")
    assert curve.draws.tolist() == [5, 5, 5] and curve.loc[1.0, "detected"] == 1.0
    assert curve.loc[0.1, "detected"] < 0.8
    small = pooled.smallest_detected(curve.reset_index())
    assert small == pytest.approx(abs(curve.loc[0.5, "effect"]))
    own, null, _ = pooled.pooled_values(rs, "paper", "zero/recomputed")
    assert tit.effect.iloc[-1] == pytest.approx(tit.own.iloc[-1] - null.mean())


def test_per_emotion_tests_are_holm_within_each_set():
    rs = _random_sets({"paper": -0.5, "directions": 0.0}, sd=0.05)
    t = pooled.per_emotion(rs, "zero/recomputed", 0.25, 0.25)
    for _name, g in t.groupby("set"):
        assert len(g) == 6 and g.p_holm.tolist() == pytest.approx(stats.holm(g.p.to_numpy()).tolist())
