"""Stage 2's permutation null, selection variants and per-neuron diagnostics: invariants, a planted selective
neuron that must be found and beat the null, and a model without signal whose selections must not."""

import math
import random

import pytest
import torch

from emolib.emotions import EMOTIONS
from emolib.identify import neurons, record
from emolib.identify import selection as identify
from emolib.lm.synth_template import generate_dialogues

NOFILTER = dict(tensor="act", tokens="dialogue", filter_quantile=None, assign="argmax", scope="global")
PAPER = dict(tensor="act", tokens="dialogue", filter_quantile=0.95, assign="threshold", scope="global")


def _by_emotion(n_topics=4):
    rows = generate_dialogues([f"topic {i}" for i in range(n_topics)] + ["cats", "knitting"], list(EMOTIONS), 1, 5)
    return {e: [r["dialogue"] for r in rows if r["theme"] == e] for e in EMOTIONS}


def test_null_counts_sum_to_the_true_counts(tiny):
    model, tok = tiny
    st = record.record_counts(model, tok, _by_emotion(), batch_size=5, n_null=7)
    for t in record.TENSORS:
        true = st[f"counts_{t}"].sum((0, 1))  # all emotions, both halves: [L, D]
        null = st[f"null_{t}"].long()
        assert null.shape[0] == 7
        for k in range(7):  # each permutation redistributes the same firing events over the emotions
            assert torch.equal(null[k].sum(0), true)
            assert int(st["null_tokens"][k].sum()) == int(st["tokens"].sum())
            assert (null[k] <= st["null_tokens"][k].view(-1, 1, 1)).all()
    # permutations keep the number of dialogues per emotion but move them: token totals differ from the true ones
    assert not all(torch.equal(st["null_tokens"][k], st["tokens"].sum(0)) for k in range(7))


def test_null_labels_keep_counts_per_emotion_and_differ_by_seed():
    lab = record.null_labels([3, 5, 2], 4, seed=1)
    assert lab.shape == (4, 10)
    for row in lab:
        assert sorted(row.tolist()) == [0] * 3 + [1] * 5 + [2] * 2
    assert (lab != record.null_labels([3, 5, 2], 4, seed=2)).any()
    assert (lab == record.null_labels([3, 5, 2], 4, seed=1)).all()


def test_resume_with_null_is_identical(tiny, tmp_path, monkeypatch):
    model, tok = tiny
    by = _by_emotion(2)
    kw = dict(direction_site="residual")  # the direction sums resume too (no topics: centred globally)
    full = record.record_counts(model, tok, by, batch_size=2, n_null=3, **kw)
    path = tmp_path / "p.pt"
    calls = {"n": 0}
    fwd = model.model.forward

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return fwd(*a, **k)

    monkeypatch.setattr(model.model, "forward", flaky)
    with pytest.raises(KeyboardInterrupt):
        record.record_counts(model, tok, by, batch_size=2, n_null=3, state_path=path, save_every=0, **kw)
    monkeypatch.undo()
    again = record.record_counts(model, tok, by, batch_size=2, n_null=3, state_path=path, save_every=0, **kw)
    assert calls["n"] == 4 and full["dir_raw"].abs().sum() > 0
    for key in (
        "counts_act",
        "counts_product",
        "null_act",
        "null_product",
        "tokens",
        "null_tokens",
        "dir_raw",
        "dir_raw_half",
        "dir_raw_null",
        "act_sums",
        "null_act_sums",
    ):
        assert torch.equal(full[key], again[key]), key


def _plant(model, tok, word=" zebra", layer=0, neuron=5):
    """Make FFN neuron (layer, neuron) fire on one token id only: embeddings get a +1 coordinate 0, that token -1,
    and the neuron's gate reads -20 x coordinate 0."""
    tid = tok(word, add_special_tokens=False)["input_ids"][0]
    m = type(model)(model.config)
    m.load_state_dict(model.state_dict())
    m.config.name_or_path = "tiny-planted"
    with torch.no_grad():
        emb = m.model.embed_tokens.weight
        emb[:, 0] = 1.0
        emb[tid, 0] = -1.0
        g = m.model.layers[layer].mlp.gate_proj.weight
        g[neuron] = 0
        g[neuron, 0] = -20.0
    return m.eval(), tid


def test_a_planted_selective_neuron_is_found_and_beats_the_null(tiny):
    model, tok = tiny
    planted, tid = _plant(model, tok)
    by = _by_emotion()
    by["anger"] = [d + "\nA: zebra, zebra." for d in by["anger"]]
    for e in EMOTIONS[1:]:
        assert all(tid not in tok(d, add_special_tokens=False)["input_ids"] for d in by[e])
    st = record.record_counts(planted, tok, by, batch_size=6, n_null=20)
    counts = st["counts_act"].sum(0)
    assert counts[1:, 0, 5].sum() == 0 and counts[0, 0, 5] >= 2 * len(by["anger"])  # fires on anger only
    top_rate = 10 / (4 * 128)
    res = identify.select_variant(st, NOFILTER, top_rate, min_count=5)
    assert [0, 5] in res["sets"]["anger"] and res["entropy"][0, 5] == 0
    nul = identify.null_summary(st, NOFILTER, res, top_rate, 5)
    assert nul["p_cutoff"] == pytest.approx(1 / 21)  # no permutation reaches the real cut-off
    assert nul["expected_false"] < 1 and nul["fdr"] < 0.1
    diag = {
        (r["layer"], r["index"]): r
        for r in neurons.diagnostics(res["P"], res["entropy"], st["tokens"].sum(0), res["sets"], st["emotions"])
    }
    d = diag[(0, 5)]
    assert d["emotions"] == ["anger"] and d["top_emotion"] == "anger" and d["entropy"] == 0
    T = st["tokens"].sum(0).double()
    expected = (float(counts[0, 0, 5]) / float(T[0])) / (1 / float(T[1:].max()))  # silent elsewhere: floor 1/T_e
    assert d["ratio"] == pytest.approx(expected, rel=1e-3)


def test_without_signal_the_selections_do_not_beat_the_null(tiny):
    """Labels assigned at random to dialogues: the real labels are one more permutation, so no variant beats it."""
    model, tok = tiny
    pool = [d for ds in _by_emotion(6).values() for d in ds]
    random.Random(3).shuffle(pool)
    by = {e: pool[i::6] for i, e in enumerate(EMOTIONS)}
    st = record.record_counts(model, tok, by, batch_size=8, n_null=20)
    for settings in (PAPER, NOFILTER):
        res = identify.select_variant(st, settings, 0.02, 5)
        nul = identify.null_summary(st, settings, res, 0.02, 5)
        assert nul["p_cutoff"] > 0.05 or nul["fdr"] > 0.05
        assert nul["fdr"] > 0.3  # most of what is selected is what the null selects as well


def test_diagnostics_match_a_hand_computed_example():
    # 3 emotions, 1 layer, 2 neurons; 10 tokens per emotion
    counts = torch.tensor([[[8, 5]], [[2, 5]], [[0, 5]]])
    T = torch.tensor([10, 10, 10])
    res = neurons.select(
        counts, T, ["anger", "fear", "joy"], top_rate=0.5, filter_quantile=None, assign="argmax", min_count=1
    )
    assert res["selected"][0][:2] == [0, 0]
    (row,) = neurons.diagnostics(res["P"], res["entropy"], T, res["sets"], ["anger", "fear", "joy"])
    assert row["p"] == {"anger": 0.8, "fear": 0.2, "joy": 0.0}
    assert row["ratio"] == pytest.approx(0.8 / 0.1)  # lowest floored at one token in ten
    assert row["gap"] == pytest.approx(0.6)
    assert row["entropy"] == pytest.approx(-(0.8 * math.log(0.8) + 0.2 * math.log(0.2)), abs=1e-5)
    assert row["emotions"] == ["anger"] and row["n_emotions"] == 1


def test_min_count_and_per_emotion_scope():
    counts = torch.tensor([[[1, 30, 0, 9]], [[0, 2, 0, 1]], [[0, 1, 40, 0]]])
    T = torch.tensor([50, 50, 50])
    E = ["anger", "fear", "joy"]
    # without a floor, neuron 0 (fired once) ranks first with entropy 0
    assert neurons.select(counts, T, E, 1 / 4, None, "argmax", 0)["selected"][0][:2] == [0, 0]
    res = neurons.select(counts, T, E, 1 / 4, None, "argmax", min_count=5)
    assert res["selected"][0][:2] == [0, 2] and not res["eligible"][0, 0]
    per = neurons.select(counts, T, E, 3 / 4, None, "argmax", 5, scope="per_emotion")
    assert per["sets"]["anger"] == [[0, 3]] and per["sets"]["joy"] == [[0, 2]] and per["sets"]["fear"] == []
    with pytest.raises(ValueError, match="selection_scope"):
        neurons.select(counts, T, E, 0.5, None, "argmax", 0, scope="local")


def test_stability_baseline_draws_from_the_eligible_pool():
    small, large = neurons.pool_jaccard(20, 20, 100, 300, 0), neurons.random_jaccard(20, 20, 10_000, 300, 0)
    # expected overlap of two 20-sets from 100 is about 20/100 per element: J ~ 0.11; from 10,000 it is ~0.001
    assert 0.07 < small < 0.16 and large < 0.01
    assert math.isnan(neurons.pool_jaccard(0, 5, 100))


def test_false_selections_counts_null_neurons_below_the_cutoff():
    H = torch.tensor([[0.1, 0.5, 0.9, 0.2]])
    null = {
        "entropy": H,
        "eligible": torch.tensor([[True, True, True, False]]),
        "P": torch.tensor([[[0.9, 0.1, 0.1, 0.1]], [[0.1, 0.9, 0.9, 0.9]]]),
    }
    assert neurons.false_selections(null, {"all": 0.5}, ["a", "b"]) == 2  # 0.1 and 0.5; 0.2 is not eligible
    assert neurons.false_selections(null, {"a": 0.05, "b": 1.0}, ["a", "b"]) == 2  # b's neurons 1, 2
