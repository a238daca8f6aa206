"""Entropy and selection on a hand-computed example; the filter; neurons.json round trip."""

import math

import pytest
import torch

from emolib.identify import neurons


def test_entropy_matches_hand_computation():
    # 3 emotions, 1 layer, 4 neurons
    P = torch.tensor([[[0.5, 0.2, 0.0, 0.0]], [[0.5, 0.2, 0.0, 0.0]], [[0.0, 0.2, 0.3, 0.0]]], dtype=torch.float64)
    H = neurons.entropy(P)[0]
    assert H[0].item() == pytest.approx(math.log(2))  # split evenly over two emotions
    assert H[1].item() == pytest.approx(math.log(3))  # uniform over three
    assert H[2].item() == 0.0  # one emotion only: 0 log 0 = 0
    assert math.isinf(H[3].item())  # never fires: never selected


def test_probabilities_divide_by_tokens():
    counts = torch.tensor([[[2, 4]], [[1, 0]]])
    P = neurons.probabilities(counts, torch.tensor([4, 2]))
    assert P[:, 0].tolist() == [[0.5, 1.0], [0.5, 0.0]]


def _example():
    # 2 emotions x 1 layer x 6 neurons, 100 tokens each
    f = torch.tensor([[[90, 80, 1, 50, 0, 40]], [[10, 0, 0, 50, 0, 45]]])
    return f, torch.tensor([100, 100])


def test_selection_and_assignment_by_hand():
    f, T = _example()
    # P values: e0 = .9 .8 .01 .5 0 .4 ; e1 = .1 0 0 .5 0 .45
    res = neurons.select(f, T, ["anger", "fear"], top_rate=2 / 6, filter_quantile=0.5, assign="threshold")
    thr = res["threshold"]
    assert thr == pytest.approx(
        torch.quantile(torch.tensor([0.9, 0.8, 0.01, 0.5, 0, 0.4, 0.1, 0, 0, 0.5, 0, 0.45]), 0.5).item()
    )
    # eligible (max P >= thr): neurons 0, 1, 3, 5; lowest entropy: 1 (H=0), then 0 (H(.9,.1))
    assert [s[:2] for s in res["selected"]] == [[0, 1], [0, 0]]
    assert res["sets"] == {"anger": [[0, 1], [0, 0]], "fear": []}
    # neuron 2 fires once, only for anger (H = 0) but is filtered out; without the filter it wins
    nofilter = neurons.select(f, T, ["anger", "fear"], top_rate=2 / 6, filter_quantile=None)
    assert [0, 2] in [s[:2] for s in nofilter["selected"]]


def test_filter_never_selects_never_firing_neurons():
    g = torch.Generator().manual_seed(0)
    f = torch.randint(0, 50, (6, 3, 40), generator=g)
    f[:, :, :5] = 0  # never fire
    f[0, :, 5:8] = 1  # fire rarely, for one emotion only (zero entropy)
    f[:, :, 5:8][1:] = 0
    res = neurons.select(f, torch.full((6,), 100), [str(i) for i in range(6)], top_rate=0.1)
    picked = {(l, i) for l, i, _ in res["selected"]}
    assert picked and not any(i < 8 for _, i in picked)
    assert len(picked) == round(0.1 * 3 * 40)


def test_argmax_assignment_gives_one_emotion_each():
    f, T = _example()
    res = neurons.select(f, T, ["anger", "fear"], top_rate=0.5, filter_quantile=0.5, assign="argmax")
    assigned = [tuple(x) for v in res["sets"].values() for x in v]
    assert len(assigned) == len(set(assigned)) == len(res["selected"])


def test_neurons_json_round_trip(tmp_path):
    f, T = _example()
    res = neurons.select(f, T, ["anger", "fear"], top_rate=0.5, filter_quantile=0.5)
    neurons.save(tmp_path / "neurons.json", "m", {"top_rate": 0.5}, res, T, ["anger", "fear"], (1, 6))
    ns = neurons.load(tmp_path / "neurons.json")
    assert {e: [list(x) for x in v] for e, v in ns.sets.items()} == res["sets"]
    assert ns.n_layers == 1 and ns.d_ff == 6 and ns.meta["tokens_per_emotion"] == {"anger": 100, "fear": 100}
    assert ns.by_layer("anger") == {0: [i for _, i in res["sets"]["anger"]]}
    with pytest.raises(FileNotFoundError, match="run notebook 02"):
        neurons.load(tmp_path / "missing.json")


def test_jaccard():
    assert neurons.jaccard([[0, 1], [0, 2]], [[0, 2], [1, 1]]) == pytest.approx(1 / 3)
    assert 0 < neurons.random_jaccard(10, 10, 100, n_draws=50) < 0.2
