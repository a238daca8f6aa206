"""Stage 3-4 statistics on hand examples and seeded simulations; the firing-matched random neuron sampler."""

import math

import numpy as np
import pytest
import torch

from emolib.causal import stats
from emolib.lm import ablate


def test_margin_and_correct_by_hand():
    scores = np.array([[1.0, 3.0, 2.0], [5.0, 0.0, -1.0], [2.0, 2.0, 0.0], [0.0, 1.0, 4.0]])
    true = np.array([1, 0, 0, 1])
    assert np.allclose(stats.margin(scores, true), [1.0, 5.0, 0.0, -3.0])
    assert stats.correct(scores, true).tolist() == [1.0, 1.0, 0.5, 0.0]  # a tie of two counts one half


def test_paired_delta_by_hand_and_own_effect():
    d = stats.paired_delta([1, 1, 0, 1], [0, 1, 0, 0], n_boot=500)
    assert d.mean == -0.5 and d.n == 4 and -1 <= d.lo <= d.mean <= d.hi <= 0
    assert math.isclose(d.sd, np.std([-1, 0, 0, -1], ddof=1))
    base = np.array([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0]])
    abl = np.array([[0.0, 1.0], [0.0, 2.0], [2.5, 1.0]])
    eff = stats.own_effect(base, abl, np.array([0, 1, 0]), n_boot=200)
    assert math.isclose(eff["margin"].mean, np.mean([-3.0, 1.0, -0.5]))
    assert math.isclose(eff["accuracy"].mean, -1 / 3)
    with pytest.raises(ValueError):
        stats.paired_delta([], [])


def test_bootstrap_ci_covers_the_true_mean_about_95_percent():
    rng = np.random.default_rng(7)
    hits = 0
    for rep in range(300):
        base = rng.normal(0, 1, 40)
        treated = base + rng.normal(-0.3, 0.8, 40)  # true paired mean -0.3
        d = stats.paired_delta(base, treated, n_boot=1000, seed=rep)
        hits += d.lo <= -0.3 <= d.hi
    assert 0.89 <= hits / 300 <= 0.99


def test_empirical_p_by_hand():
    null = [0.1, -0.2, 0.0, -0.5, 0.3]
    assert stats.empirical_p(-0.2, null) == 3 / 6  # (1 + #{-0.2, -0.5}) / (1 + 5)
    assert stats.empirical_p(-1.0, null) == 1 / 6  # below every random set: the floor 1 / (n + 1)
    assert stats.empirical_p(0.3, null, "greater") == 2 / 6
    assert stats.empirical_p(-1.0, null, "two-sided") == 2 / 6
    assert stats.empirical_p(-0.2, null + [float("nan")]) == 3 / 6
    with pytest.raises(ValueError, match="tail"):
        stats.empirical_p(0.0, null, "lower")


def test_holm_by_hand_and_verdict():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> monotone 0.02, 0.03, 0.06, 0.06
    assert np.allclose(stats.holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    assert np.allclose(stats.holm([0.5, 0.9]), [1.0, 1.0])  # capped at 1
    got = stats.holm([0.01, np.nan, 0.02])
    assert np.isnan(got[1]) and np.allclose(got[[0, 2]], [0.02, 0.02])  # NaN is not counted as a test
    assert stats.holm(np.array([[0.01, 0.04], [0.03, 0.005]])).shape == (2, 2)
    assert stats.verdict([0.03, 0.06, np.nan]) == ["effect", "no detectable effect", "not tested"]


def test_t_distribution_without_scipy():
    assert math.isclose(stats.t_sf(0.0, 5), 0.5, abs_tol=1e-9)
    assert math.isclose(stats.t_sf(1.0, 1), 0.25, abs_tol=1e-9)  # Cauchy: 1/2 - atan(1)/pi
    assert math.isclose(stats.t_sf(2.0, 2), 0.5 - 1 / math.sqrt(6), abs_tol=1e-9)  # closed form for df = 2
    assert math.isclose(stats.t_isf(0.025, 1000), 1.962, abs_tol=2e-3)
    assert math.isclose(stats.t_sf(stats.t_isf(0.01, 7), 7), 0.01, abs_tol=1e-9)


def test_normal_p_and_smallest_significant_agree():
    rng = np.random.default_rng(3)
    null = rng.normal(-0.05, 0.08, 20)
    thr = stats.smallest_significant(null.std(ddof=1), 0.05, m=6, n_random=20)
    assert math.isclose(stats.normal_p(null.mean() - thr, null), 0.05 / 6, rel_tol=1e-4)
    assert stats.normal_p(null.mean(), null) == pytest.approx(0.5)
    assert stats.smallest_significant(0.1, 0.05, 1) == pytest.approx(0.1 * 1.6449, rel=1e-4)


def test_random_sets_needed_for_empirical_p_to_pass_holm():
    assert stats.min_random_sets(0.05, 1) == 20 and stats.min_random_sets(0.05, 6) == 120
    for m in (1, 6):
        r = stats.min_random_sets(0.05, m)
        below_all = [stats.empirical_p(-9.0, np.zeros(k)) for k in (r - 1, r)]
        assert stats.verdict(stats.holm([below_all[0]] + [1.0] * (m - 1)))[0] == "no detectable effect"
        assert stats.verdict(stats.holm([below_all[1]] + [1.0] * (m - 1)))[0] == "effect"


def _simulated_power(d, sd, n, alpha, m, reps=4000, seed=0):
    """Share of seeded studies in which a one-sided z test (known sd) at alpha / m finds a drop of d."""
    means = np.random.default_rng(seed).normal(-d, sd, (reps, n)).mean(1)
    return float((means / (sd / math.sqrt(n)) < -stats.z_crit(alpha, m)).mean())


def test_power_formula_matches_simulation():
    d, sd, m = 0.10, 0.40, 6
    n = stats.n_required(d, sd, 0.05, m, 0.8)
    assert stats.power(d, sd, n, 0.05, m) >= 0.8 > stats.power(d, sd, n - 1, 0.05, m)
    for k in (n, 40):
        assert abs(_simulated_power(d, sd, int(k), 0.05, m) - stats.power(d, sd, k, 0.05, m)) < 0.03
    # set-to-set spread that more items cannot remove
    assert n < stats.n_required(d, sd, 0.05, m, tau=0.02) < math.inf
    assert stats.n_required(d, sd, 0.05, m, tau=0.04) == math.inf  # tau above 0.10 / (2.39 + 0.84) = 0.031
    assert stats.power(d, sd, 10**9, 0.05, m, tau=0.04) < 0.8


def test_spread_of_random_sets_gives_item_sd_and_tau():
    rng = np.random.default_rng(1)
    sd, tau, n = 0.5, 0.03, 50
    null = rng.normal(0, math.sqrt(tau**2 + sd**2 / n), 4000)
    assert stats.between_set_sd(null, sd, n) == pytest.approx(tau, abs=0.01)
    assert stats.item_sd_from_null(rng.normal(0, sd / math.sqrt(n), 4000), n) == pytest.approx(sd, rel=0.05)


# the firing-matched random neuron sampler (emolib.lm.ablate.random_matched)


@pytest.fixture
def firing():
    return np.random.default_rng(0).random((4, 200))


def test_firing_bins_are_within_layer_deciles(firing):
    bins = ablate.firing_bins(firing)
    assert all((np.bincount(row, minlength=10) == 20).all() for row in bins)
    top = np.argsort(firing[1])[-20:]
    assert (bins[1, top] == 9).all()
    zeros = np.zeros((1, 50))  # ties (never-firing neurons) still give equal bins
    assert (np.bincount(ablate.firing_bins(zeros)[0]) == 5).all()


def test_random_matched_keeps_layer_counts_and_deciles(firing):
    bins = ablate.firing_bins(firing)
    top0 = np.argsort(firing[0])[-10:].tolist()  # the dense pool, as selected neurons tend to be
    own = {0: top0, 2: list(range(0, 200, 9)), 3: []}
    extra = {2: [1, 2, 3]}
    draws = [ablate.random_matched(own, firing, seed, exclude=extra) for seed in range(6)]
    for r in draws:
        assert {k: len(v) for k, v in r.items()} == {k: len(v) for k, v in own.items()}
        for layer in own:
            assert (
                np.bincount(bins[layer, r[layer]], minlength=10) == np.bincount(bins[layer, own[layer]], minlength=10)
            ).all()
            assert not set(r[layer]) & set(own[layer]) and len(set(r[layer])) == len(r[layer])
        assert not set(r[2]) & set(extra[2]) and r.fallbacks == 0
    assert ablate.random_matched(own, torch.tensor(firing), 3, exclude=extra) == draws[3]  # seeded, tensor input
    assert len({str(r) for r in draws}) == len(draws)


def test_random_matched_falls_back_to_the_nearest_decile():
    firing = np.arange(50, dtype=float)[None]  # bins of 5: neuron i is in bin i // 5
    own = {0: list(range(42, 50))}  # bin 9 entirely (5) and 3 of bin 8
    r = ablate.random_matched(own, firing, 0)
    assert len(r[0]) == 8 and not set(r[0]) & set(own[0]) and r.fallbacks == 6
    assert {40, 41} <= set(r[0]) and min(r[0]) >= 30  # bin 8's free two, then bins 7 and 6 only
    with pytest.raises(ValueError, match="fewer free neurons"):
        ablate.random_matched({0: list(range(30))}, firing, 0)
