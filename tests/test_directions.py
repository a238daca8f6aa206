"""The second identification method (emolib.identify.directions): topic-centred emotion directions recover a planted
direction, contributions match a brute-force recomputation on the tiny model, the permuted-label null carries no
signal and is seeded, and the steering hook adds exactly alpha x the direction and always comes off."""

import numpy as np
import pytest
import torch

from emolib.emotions import EMOTIONS
from emolib.identify import directions, record
from emolib.lm import models
from emolib.lm.synth_template import generate_dialogues

E = len(EMOTIONS)


def _planted(n_topics=5, per=3, H=16, offset=20.0, noise=0.05, seed=0, single=()):
    """Hand-built per-item token sums: topic offset (large) + planted emotion direction + noise, random lengths.
    Topics listed in `single` hold one emotion only (as EmoPrism's often do)."""
    rng = np.random.default_rng(seed)
    planted = rng.normal(size=(E, H))
    offsets = {t: offset * rng.normal(size=H) for t in range(n_topics)}
    emo, top, ntok, S = [], [], [], []
    for t in range(n_topics):
        for e in [t % E] if t in single else range(E):
            for _ in range(per * (1 + (e == 0 and t == 0) * 3)):  # unbalanced: topic 0 has extra anger items
                n = int(rng.integers(3, 30))
                emo.append(e), top.append(f"topic {t}"), ntok.append(n)
                S.append(n * (offsets[t] + planted[e]) + rng.normal(scale=noise, size=(n, H)).sum(0))
    return np.array(emo), top, np.array(ntok), np.array(S), planted


def _cos(a, b):
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_centring_within_topic_recovers_a_planted_direction_under_topic_offsets():
    emo, top, ntok, S, planted = _planted()
    w = directions.centring_weights(emo, top, ntok, E)
    dirs = w @ S
    target = planted - planted.mean(0)  # every topic holds every emotion: centring leaves e's part minus the mean
    for e in range(E):
        assert _cos(dirs[e], target[e]) > 0.999
    # without centring (each emotion's plain token-mean), the unbalanced topic offset dominates anger's direction
    plain = np.array([S[emo == e].sum(0) / ntok[emo == e].sum() for e in range(E)])
    plain -= plain.mean(0)
    assert _cos(plain[0], target[0]) < 0.9
    # weights of one emotion sum to zero over items: a shared offset cancels exactly
    assert np.allclose((w * ntok).sum(1), 0, atol=1e-12)


def test_single_emotion_topics_are_centred_globally():
    emo, top, ntok, S, planted = _planted(n_topics=8, offset=0.0, single=range(2, 8))
    groups = directions.centring_groups(emo, top)
    assert {g for g, t in zip(groups, top) if t in ("topic 0", "topic 1")} == {("t", "topic 0"), ("t", "topic 1")}
    assert {g for g, t in zip(groups, top) if t not in ("topic 0", "topic 1")} == {("global",)}
    w = directions.centring_weights(emo, top, ntok, E)
    target = planted - planted.mean(0)
    for e in range(E):
        assert _cos(w[e] @ S, target[e]) > 0.999


def test_permuted_labels_give_directions_without_the_planted_signal():
    emo, top, ntok, S, planted = _planted(n_topics=6, per=4, offset=0.0, noise=3.0)
    null = record.null_labels([int((emo == e).sum()) for e in range(E)], 4, seed=3)
    order = np.argsort(emo, kind="stable")  # null_labels numbers items emotion by emotion
    emo, top, ntok, S = emo[order], [top[i] for i in order], ntok[order], S[order]
    rows = directions.weight_rows(emo, np.zeros(len(emo), int), null, top, ntok, E)
    target = planted - planted.mean(0)
    real = rows[:E] @ S
    assert min(_cos(real[e], target[e]) for e in range(E)) > 0.95
    for k in range(4):
        nd = rows[(3 + k) * E : (4 + k) * E] @ S
        assert np.mean([abs(_cos(nd[e], target[e])) for e in range(E)]) < 0.5
    assert np.array_equal(rows, directions.weight_rows(emo, np.zeros(len(emo), int), null, top, ntok, E))


@pytest.fixture(scope="module")
def recorded(tiny):
    """The tiny model's recording with direction sums at the MLP output (three permutations)."""
    model, tok = tiny
    rows = generate_dialogues(["cats", "knitting"], list(EMOTIONS), 1, 3)
    by = {e: [r["dialogue"] for r in rows if r["theme"] == e] for e in EMOTIONS}
    tp = {e: [r["topic"] for r in rows if r["theme"] == e] for e in EMOTIONS}
    st = record.record_counts(model, tok, by, batch_size=4, n_null=3, direction_site="mlp", topics=tp)
    return model, tok, by, tp, directions.finish(st, model)


@torch.inference_mode()
def test_contributions_match_a_brute_force_recomputation(recorded):
    model, tok, by, tp, st = recorded
    mlps = models.ffn_layers(model)
    L = len(mlps)
    grab = {}
    hs = [
        m.register_forward_hook(lambda mod, a, o, l=l: grab.__setitem__(("out", l), o[0])) for l, m in enumerate(mlps)
    ]
    hs += [
        m.down_proj.register_forward_pre_hook(lambda mod, a, l=l: grab.__setitem__(("act", l), a[0][0]))
        for l, m in enumerate(mlps)
    ]
    per = {}  # (topic, emotion) -> lists of [T, H] outputs and [T, D] acts per layer
    try:
        for e in EMOTIONS:
            for d, t in zip(by[e], tp[e]):
                ids, a, b = record.encode(tok, d, "raw", None)
                model.model(input_ids=torch.tensor([ids]))
                per.setdefault((t, e), []).append(
                    [(grab[("out", l)][a:b].double(), grab[("act", l)][a:b].double()) for l in range(L)]
                )
    finally:
        for h in hs:
            h.remove()
    topics = sorted({t for t, _ in per})
    for l in range(L):
        mu = {k: torch.cat([x[l][0] for x in v]).mean(0) for k, v in per.items()}
        W = mlps[l].down_proj.weight.double()
        for j, e in enumerate(EMOTIONS):
            raw = torch.stack([mu[(t, e)] - torch.stack([mu[(t, f)] for f in EMOTIONS]).mean(0) for t in topics]).mean(
                0
            )
            d = raw / raw.norm()
            assert torch.allclose(st["dir_unit"][j, l].double(), d, atol=1e-4)
            acts = torch.cat([x[l][1] for t in topics for x in per[(t, e)]])  # [tokens of e, D]
            brute = (acts * (d @ W)).mean(0)  # mean over e's tokens of act x (W_down column . direction)
            assert torch.allclose(st["contrib"][j, l].double(), brute, atol=1e-4, rtol=1e-3)


def test_null_is_seeded_and_a_null_like_selection_does_not_beat_it(recorded):
    model, tok, by, tp, st = recorded
    other = directions.finish(
        record.record_counts(model, tok, by, batch_size=4, n_null=3, direction_site="mlp", topics=tp, seed=1), model
    )
    assert not torch.equal(st["contrib_null"], other["contrib_null"])  # seeded: another seed, other permutations
    assert torch.allclose(
        st["contrib"], other["contrib"], atol=1e-6
    )  # ... and the real labels' contributions unchanged
    k = [3] * E
    # a "real" recording that is itself a permutation ties with that permutation: never the smallest p
    fake = {**st, "contrib": st["contrib_null"][0].clone()}
    assert directions.null_summary(fake, k, EMOTIONS)["p_mean"] >= 2 / 4
    # a planted strong neuron per emotion beats every permutation and exceeds the null's maximum
    planted = st["contrib"].clone()
    for j in range(E):
        planted[j, 1, j] = 10 * float(st["contrib_null"].abs().max())
    s = directions.null_summary({**st, "contrib": planted}, [1] * E, EMOTIONS)
    assert s["p_mean"] == 1 / 4 and s["n_above_null_max"] == E and s["expected_false"] == 0


def test_add_direction_adds_alpha_times_the_vector_and_always_unhooks(tiny):
    model, tok = tiny
    layers = models.decoder_layers(model)
    ids = torch.tensor([tok("a calm day at the lake")["input_ids"]])
    vec = torch.randn(model.config.hidden_size)
    seen = []  # the input of layer 2, i.e. the residual stream after layer 1
    probe = layers[2].register_forward_pre_hook(
        lambda m, a, kw: seen.append((a[0] if a else kw["hidden_states"]).clone()), with_kwargs=True
    )
    try:
        with torch.no_grad():
            model.model(input_ids=ids)
            with directions.add_direction(model, 1, vec, 2.5):
                model.model(input_ids=ids)
            model.model(input_ids=ids)
    finally:
        probe.remove()
    assert torch.allclose(seen[1] - seen[0], (2.5 * vec).expand_as(seen[0]), atol=1e-5)
    assert torch.equal(seen[2], seen[0])  # removed on exit
    with pytest.raises(RuntimeError), directions.add_direction(model, 0, vec, 1.0):
        raise RuntimeError("boom")
    assert not layers[0]._forward_hooks
    with pytest.raises(ValueError, match="layer"):
        with directions.add_direction(model, 99, vec, 1.0):
            pass
    with pytest.raises(ValueError, match="vec"):
        with directions.add_direction(model, 0, vec[:3], 1.0):
            pass
