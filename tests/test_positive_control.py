"""Stage 3 can say yes: the test's power against a simulation, intervals that cover a planted contrast, the pilot
rule, the cache key of each intervention, ties, the scoring-sequence statistics and attribution against brute force,
and a planted causal neuron set in the tiny model that the test rejects."""

import copy
import math

import numpy as np
import pandas as pd
import pytest
import torch

from emolib.causal import attribution, effects, instrument, matched, stats
from emolib.emotions import EMOTIONS
from emolib.lm import ablate, batched, classify, prompts

# ---------------------------------------------------------------- statistics that match the test


def test_power_matches_a_simulation_of_the_t_prediction_test_with_holm():
    """One true shift among m tests, each own value against its own R random sets, Holm over the m: the share of
    runs that reject the true one is what t_power (Holm's first step) says, or a little more."""
    rng = np.random.default_rng(0)
    R, m, sd, delta, n_sim = 20, 6, 1.0, 3.5, 1500
    hits = 0
    for _ in range(n_sim):
        ps = []
        for k in range(m):
            null = rng.normal(0, sd, R)
            own = rng.normal(delta if k == 0 else 0.0, sd)
            ps.append(stats.normal_p(own, null, "two-sided"))
        hits += stats.holm(np.array(ps))[0] < 0.05
    simulated, formula = hits / n_sim, stats.t_power(delta, sd, R, 0.05, m)
    assert 0.2 < formula < 0.9
    assert simulated == pytest.approx(formula, abs=0.045)
    assert simulated >= formula - 0.035  # Holm never rejects less than its first step


def test_power_is_alpha_over_m_at_no_shift_and_grows_with_r():
    assert stats.t_power(0.0, 1.0, 20, 0.05, 6) == pytest.approx(0.05 / 6, rel=1e-3)
    assert stats.t_power(3.0, 1.0, 50, 0.05, 6) > stats.t_power(3.0, 1.0, 10, 0.05, 6)
    d80 = stats.delta_for_power(0.2, 20, 0.05, 12)
    assert stats.t_power(d80, 0.2, 20, 0.05, 12) == pytest.approx(0.8, abs=1e-3)


def test_interval_covers_a_planted_contrast_at_its_nominal_rate():
    """Random sets' true effects spread (tau) and each is measured with item noise; the own set is shifted by a
    planted delta: the prediction interval covers delta in 95% of runs."""
    rng = np.random.default_rng(1)
    R, delta, n_sim, covered = 20, -0.7, 3000, 0
    for _ in range(n_sim):
        tau, item = 0.3, 0.2
        null = rng.normal(0.1, tau, R) + rng.normal(0, item, R)
        own = 0.1 + delta + rng.normal(0, tau) + rng.normal(0, item)
        d, lo, hi = stats.prediction_ci(own, null)
        covered += lo <= delta <= hi
    assert covered / n_sim == pytest.approx(0.95, abs=0.012)


def test_ties_are_neither_right_nor_wrong():
    s = np.array([[1.0, 1.0, 0.0], [2.0, 1.0, 2.0], [0.5, 0.5, 0.5], [3.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    y = np.array([0, 0, 1, 0, 0])
    assert stats.correct(s, y).tolist() == pytest.approx([0.5, 0.5, 1 / 3, 1.0, 0.0])


# ---------------------------------------------------------------- the pilot and the cache key


def test_pilot_names_the_quietest_arm_and_ties_go_to_the_papers():
    rows = [
        {"arm": a, "emotion": e, "random_d_margin_sd": sd}
        for a, sds in {
            "zero/fixed": [0.3, 0.25, 0.4],
            "zero/recomputed": [0.1, 0.12, 0.5],
            "mean/fixed": [0.2, 0.2, 0.2],
            "mean/recomputed": [0.15, 0.3, 0.11],
        }.items()
        for e, sd in zip(EMOTIONS, sds)
    ]
    d = effects.pilot_decision(pd.DataFrame(rows))
    assert d["quietest"] == "zero/recomputed" and d["median_sd"]["zero/recomputed"] == pytest.approx(0.12)
    assert d["sd_ratio_to_paper_arm"]["zero/recomputed"] == pytest.approx(0.12 / 0.3) and "descriptive" in d["rule"]
    assert "chosen" not in d  # the primary arm is the parameter file's, never the pilot's
    tie = pd.DataFrame([{**r, "random_d_margin_sd": 0.2} for r in rows])
    assert effects.pilot_decision(tie)["quietest"] == instrument.PAPER_ARM


def test_cache_key_changes_with_the_intervention_and_the_means(tiny, tmp_path):
    model, tok = tiny
    p = {"run_dir": str(tmp_path), "model": "tiny", "prompt_template": None, "emotions": list(EMOTIONS)}
    clf = classify.make_classifier(model, tok, list(EMOTIONS), chat=True, batch_size=4, calibrate=True)
    tag = {"prompt_style": "chat", "few_shot": 0}
    mu = torch.rand(4, 128)
    a = instrument.Scorer(clf, p, tag, means=mu)
    b = instrument.Scorer(clf, p, tag, means=mu + 1)
    d, m = ["A: hi.\nB: hello."], {1: [3, 5]}
    keys = {a.key(d[0], m, "zero"), a.key(d[0], m, "mean"), b.key(d[0], m, "mean"), a.key(d[0], m, "scale")}
    assert len(keys) == 4 and a.key(d[0], m, "zero") == b.key(d[0], m, "zero")
    with pytest.raises(ValueError, match="ablation mode"):
        a.key(d[0], m, "halve")
    zero, mean = a.scores(d, [m], mode="zero"), a.scores(d, [m], mode="mean")
    assert not np.allclose(zero, mean)  # a switch of mode is never served the other mode's scores
    with ablate.ablate(model, m, "mean", means=mu):
        ref = classify.label_scores(classify.make_classifier(model, tok, list(EMOTIONS), True, 0, None, 4, False), d)
    assert np.allclose(mean[0], ref, atol=1e-4)


def test_arms_apply_fixed_or_recomputed_calibration(tiny, tmp_path):
    model, tok = tiny
    p = {"run_dir": str(tmp_path), "model": "tiny", "prompt_template": None, "emotions": list(EMOTIONS)}
    clf = classify.make_classifier(model, tok, list(EMOTIONS), chat=True, batch_size=4, calibrate=True)
    sc = instrument.Scorer(clf, p, {"prompt_style": "chat", "few_shot": 0}, means=torch.zeros(4, 128))
    d, masks = ["A: I am so angry.\nB: Why?"], [{}, {2: list(range(0, 128, 2))}]
    raw = sc.scores(d, masks, mode="zero")
    assert np.allclose(sc.arm_scores(d, masks, "zero/fixed"), raw - sc.base_cf)
    assert np.allclose(sc.arm_scores(d, masks, "zero/recomputed"), raw - sc.content_free(masks, "zero")[:, None])
    assert np.allclose(sc.arm_scores(d, masks, "mean/fixed"), sc.arm_scores(d, masks, "zero/fixed"), atol=1e-5)
    assert np.allclose(sc.arm_scores(d, masks[:1], "zero/recomputed"), sc.arm_scores(d, masks[:1], "zero/fixed"))


# ---------------------------------------------------------------- the scoring-sequence pass and attribution


def _pass(model, tok, texts, y, calibrate=True):
    clf = classify.make_classifier(model, tok, list(EMOTIONS), chat=True, batch_size=4, calibrate=calibrate)
    cal = classify.calibration_vector(clf) if calibrate else None
    return clf, cal, attribution.scoring_pass(clf, texts, y, cal, len(EMOTIONS), batch_size=3, progress=None)


def test_scoring_pass_moments_match_a_brute_force_recount(tiny, dialogues):
    model, tok = tiny
    texts, themes = dialogues
    texts = texts[:5]
    y = np.array([EMOTIONS.index(t) for t in themes[:5]])
    clf, _, sums = _pass(model, tok, texts, y)
    seen = []
    h = model.model.layers[2].mlp.down_proj.register_forward_pre_hook(lambda m, a: seen.append(a[0][0].detach()))
    try:
        with torch.no_grad():
            for t in texts:  # one sequence at a time, no padding: every position counts
                ids = clf.parts.prefix + prompts.encode_dialogue(tok, t) + clf.parts.suffix
                model(input_ids=torch.tensor([ids]))
    finally:
        h.remove()
    x = torch.cat(seen)
    assert sums["count"] == x.shape[0]
    mean, sd = matched.moments(sums)
    assert torch.allclose(mean[2], x.mean(0), atol=1e-5)
    assert torch.allclose(sd[2], x.std(0, unbiased=False), atol=1e-4)
    assert sums["n"].sum() == 5


def test_attribution_estimate_matches_ablating_one_neuron(tiny, dialogues):
    """First order is close for one neuron: the neurons with the largest estimated drops (what attribution selects)
    lower the measured margin by about as much. (Estimated gains are rougher in a random model, whose other labels
    nearly tie, so the runner-up changes.)"""
    model, tok = tiny
    texts, themes = dialogues
    texts, y = texts[:4], np.full(4, EMOTIONS.index("anger"))
    clf, cal, sums = _pass(model, tok, texts, y)
    est = attribution.estimate(sums, "zero", "fixed")[EMOTIONS.index("anger")]
    top = torch.topk(-est.reshape(-1), 4).indices.tolist()
    ref_clf = classify.make_classifier(model, tok, list(EMOTIONS), True, 0, None, 4, False)
    base = stats.margin(classify.label_scores(ref_clf, texts, calibration=cal), y).mean()
    measured, estimated = [], []
    for i in top:
        layer, n = divmod(i, est.shape[1])
        with ablate.ablate(model, {layer: [n]}):
            measured.append(stats.margin(classify.label_scores(ref_clf, texts, calibration=cal), y).mean() - base)
        estimated.append(float(est[layer, n]))
    assert max(measured) < 0 and max(estimated) < 0
    assert np.allclose(measured, estimated, atol=0.4 * max(map(abs, measured)))


def _planted(tiny, texts, scale=0.002, gain=0.25):
    """A copy of the tiny model in which five last-layer neurons fire at the answer position (their gate and up read
    the direction of that position's normed state) and write the anger label's direction; and the neurons."""
    model, tok = tiny
    m = copy.deepcopy(model)
    layer = m.model.layers[3]
    planted = [5, 17, 40, 77, 101]
    clf = classify.make_classifier(m, tok, list(EMOTIONS), chat=True, batch_size=4, calibrate=False)
    seen = []
    h = layer.mlp.gate_proj.register_forward_pre_hook(lambda mod, a: seen.append(a[0][0, -1].detach()))
    try:
        with torch.no_grad():
            for t in texts:
                m(input_ids=torch.tensor([clf.parts.prefix + prompts.encode_dialogue(tok, t) + clf.parts.suffix]))
    finally:
        h.remove()
    v = torch.stack(seen).mean(0)
    anger = tok(" anger", add_special_tokens=False)["input_ids"][0]
    W = m.lm_head.weight.detach()
    u = W[anger] - W.mean(0)
    with torch.no_grad():
        for i in planted:  # activation silu(s) * s = s^2 sigmoid(s) > 0, large where the state points along v
            layer.mlp.gate_proj.weight[i] = gain * v / v.norm()
            layer.mlp.up_proj.weight[i] = gain * v / v.norm()
            layer.mlp.down_proj.weight[:, i] = scale * u / u.norm()
    return m, tok, {3: planted}


def test_a_planted_causal_set_is_rejected_and_found_by_attribution(tiny, dialogues):
    texts = dialogues[0][:8]
    model, tok, own = _planted(tiny, texts)
    y = np.full(len(texts), EMOTIONS.index("anger"))
    clf, cal, sums = _pass(model, tok, texts, y)
    mean, sd = matched.moments(sums)
    firing = (mean.abs() > 0).float() * torch.rand(mean.shape)  # any firing proxy: matching is what is tested
    rnd = [dict(ablate.random_matched(own, firing, 100 + j, exclude=own, spread=sd)) for j in range(20)]
    sc = batched.score_masks(clf, texts, [{}, own] + rnd, calibration=cal)
    row = effects.effect_row(sc[0], sc[1], sc[2:], y, n_boot=100, seed=0)
    assert row["own_minus_random_margin"] < 0 and row["p"] < 1e-4
    table = effects.correct_family(
        pd.DataFrame([{**row, "set": "planted", "emotion": "anger"}] + [{"p": 0.5, "own_minus_random_margin": 0.0}] * 5)
    )
    assert table.verdict[0] == "own drop beyond random"
    est = attribution.estimate(sums, "zero", "fixed")
    picked = attribution.select(est, [5] * len(EMOTIONS), list(EMOTIONS))["anger"]
    assert {tuple(x) for x in picked} == {(3, i) for i in own[3]}


def test_matching_on_activation_sd_keeps_the_sd_decile():
    rng = np.random.default_rng(0)
    firing, spread = torch.tensor(rng.random((2, 400))), torch.tensor(rng.random((2, 400)))
    own = {0: [1, 2, 3, 50, 60], 1: [7, 8]}
    bins, n = ablate.joint_bins(firing, spread)
    assert n == 100
    for seed in range(5):
        r = ablate.random_matched(own, firing, seed, exclude=own, spread=spread)
        for layer, idx in own.items():
            assert sorted(bins[layer][idx]) == sorted(bins[layer][r[layer]])
            assert not set(idx) & set(r[layer])


def test_float32_readout_leaves_float32_models_alone_and_lifts_bf16(tiny):
    model, tok = tiny
    ids = torch.tensor([[1, 5, 9, 3]])
    with torch.no_grad():
        ref = model(input_ids=ids).logits
        with classify.float32_readout(model):
            assert torch.equal(model(input_ids=ids).logits, ref)
        half = copy.deepcopy(model).to(torch.bfloat16)
        with classify.float32_readout(half):
            out = half(input_ids=ids).logits
        assert out.dtype == torch.float32 and half(input_ids=ids).logits.dtype == torch.bfloat16
    assert not math.isnan(float(out.sum()))


def test_recomputed_calibration_estimate_subtracts_the_content_free_change(tiny, dialogues):
    """With the calibration recomputed under the mask, the estimate for a planted set's neuron is its item effect
    minus the content-free dialogue's, and matches the measured change under that arm."""
    texts = dialogues[0][:6]
    model, tok, own = _planted(tiny, texts)
    y = np.full(len(texts), EMOTIONS.index("anger"))
    clf, cal, sums = _pass(model, tok, texts, y)
    fixed = attribution.estimate(sums, "zero", "fixed")[0]
    recomputed = attribution.estimate(sums, "zero", "recomputed")[0]
    i = own[3][0]
    assert recomputed[3, i] != pytest.approx(float(fixed[3, i]), abs=1e-6)
    sc = batched.score_masks(clf, texts, [{}, {3: [i]}])  # clf calibrates: recomputed under each mask
    measured = (stats.margin(sc[1], y) - stats.margin(sc[0], y)).mean()
    assert float(recomputed[3, i]) == pytest.approx(measured, rel=0.35, abs=2e-3)


def _planted_all(tiny, texts, scale=0.002, gain=0.25):
    """A copy of the tiny model in which, per emotion, four last-layer neurons fire at the answer position and write
    that emotion's label direction; and each emotion's neurons."""
    from emolib.causal import families

    model, tok = tiny
    m = copy.deepcopy(model)
    layer = m.model.layers[3]
    clf = classify.make_classifier(m, tok, list(EMOTIONS), chat=True, batch_size=4, calibrate=False)
    seen = []
    h = layer.mlp.gate_proj.register_forward_pre_hook(lambda mod, a: seen.append(a[0][0, -1].detach()))
    try:
        with torch.no_grad():
            for t in texts:
                m(input_ids=torch.tensor([clf.parts.prefix + prompts.encode_dialogue(tok, t) + clf.parts.suffix]))
    finally:
        h.remove()
    v = torch.stack(seen).mean(0)
    W = m.lm_head.weight.detach()
    sets = {}
    for k, e in enumerate(EMOTIONS):
        label = tok(" " + e, add_special_tokens=False)["input_ids"][0]
        u = W[label] - W.mean(0)
        idx = [10 + 17 * k + j for j in range(4)]
        with torch.no_grad():
            for i in idx:
                layer.mlp.gate_proj.weight[i] = gain * v / v.norm()
                layer.mlp.up_proj.weight[i] = gain * v / v.norm()
                layer.mlp.down_proj.weight[:, i] = scale * u / u.norm()
        sets[e] = families.as_mask([(3, i) for i in idx])
    return m, tok, sets


def test_a_planted_pooled_effect_is_rejected_by_the_pooled_test(tiny, dialogues):
    """Every emotion's planted neurons write its own label: ablating them lowers each emotion's margin on its own
    items, and the pooled test over emotions, against random families, rejects it (and keeps the overlaps)."""
    from emolib.causal import families, pooled

    texts, themes = dialogues
    model, tok, sets = _planted_all(tiny, texts)
    y = np.array([EMOTIONS.index(t) for t in themes])
    clf, cal, sums = _pass(model, tok, texts, y)
    _, sd = matched.moments(sums)
    firing = torch.rand(sd.shape)
    maps = families.family_maps(families.union(sets), firing, 20, seed=0, spread=sd)
    rows = []
    for j, e in enumerate(EMOTIONS):
        sel = y == j
        d = [t for t, s in zip(texts, sel) if s]
        rnd = [families.image(fm, sets[e]) for fm in maps]
        sc = batched.score_masks(clf, d, [{}, sets[e]] + rnd, calibration=cal)
        rows += effects.arm_records("planted", "zero/fixed", e, 4, sc[0], sc[1], sc[2:], y[sel])
    rs = pooled.frame(rows)
    t = pooled.pooled(rs, "zero/fixed", 0.25, 0.25).iloc[0]
    assert t.n_emotions == 6 and t.own_minus_random < 0
    assert t.verdict == "effect beyond random (drop)" and t.p < 1e-3
    per = pooled.per_emotion(rs, "zero/fixed", 0.25, 0.25)
    assert (per.own_minus_random < 0).all()
