"""Interventions: an empty mask changes nothing, a full layer mask zeroes the MLP, hooks never leak."""

import pytest
import torch

from emolib.identify import neurons, selection
from emolib.lm import ablate, models


def _ids(tok):
    return torch.tensor([tok("A: I can't believe they did that!\nB: Neither can I.")["input_ids"]])


def test_empty_mask_changes_no_logit(tiny):
    model, tok = tiny
    with torch.inference_mode():
        ref = model(_ids(tok)).logits
        with ablate.ablate(model, {}, "zero"):
            out = model(_ids(tok)).logits
        with ablate.ablate(model, {0: [], 2: []}, "zero"):
            out2 = model(_ids(tok)).logits
    assert torch.equal(ref, out) and torch.equal(ref, out2)


def test_masking_every_neuron_of_a_layer_zeroes_that_mlp_output(tiny):
    model, tok = tiny
    mlp = models.ffn_layers(model)[1]
    seen = {}
    h = mlp.register_forward_hook(lambda m, a, o: seen.__setitem__("out", o.detach().clone()))
    try:
        with torch.inference_mode(), ablate.ablate(model, {1: list(range(128))}, "zero"):
            model(_ids(tok))
    finally:
        h.remove()
    assert seen["out"].abs().max() == 0
    with torch.inference_mode():
        model(_ids(tok))  # and it is back afterwards
    assert not mlp.down_proj._forward_pre_hooks


def test_hooks_are_removed_after_an_exception(tiny):
    model, _ = tiny
    with pytest.raises(RuntimeError, match="boom"):
        with ablate.ablate(model, {0: [1, 2], 3: [5]}, "scale", scale=0.0):
            assert models.ffn_layers(model)[0].down_proj._forward_pre_hooks
            raise RuntimeError("boom")
    assert all(not m.down_proj._forward_pre_hooks for m in models.ffn_layers(model))


def test_mean_and_scale_modes_set_the_down_proj_input(tiny):
    model, tok = tiny
    mlp = models.ffn_layers(model)[2]
    got = {}
    h = mlp.down_proj.register_forward_pre_hook(lambda m, a: got.__setitem__("x", a[0].detach().clone()))
    means = torch.arange(4 * 128, dtype=torch.float32).view(4, 128)
    try:
        with torch.inference_mode():
            model(_ids(tok))
            plain = got["x"]
            # registered after ours, the inspection hook sees the modified input
            h.remove()
            with ablate.ablate(model, {2: [3, 7]}, "mean", means=means):
                h = mlp.down_proj.register_forward_pre_hook(lambda m, a: got.__setitem__("x", a[0].detach().clone()))
                model(_ids(tok))
            assert torch.all(got["x"][..., 3] == means[2, 3]) and torch.all(got["x"][..., 7] == means[2, 7])
            assert torch.allclose(got["x"][..., 4], plain[..., 4])
            h.remove()
            with ablate.ablate(model, {2: [3]}, "scale", scale=0.5):
                h = mlp.down_proj.register_forward_pre_hook(lambda m, a: got.__setitem__("x", a[0].detach().clone()))
                model(_ids(tok))
            assert torch.allclose(got["x"][..., 3], 0.5 * plain[..., 3])
    finally:
        h.remove()
    with pytest.raises(ValueError, match="ablation mode: must be one of zero, mean, scale"):
        with ablate.ablate(model, {0: [1]}, "erase"):
            pass


def test_random_controls_match_per_layer_counts_and_avoid_own():
    own = {0: [1, 2, 3], 5: [10], 7: list(range(20))}
    for seed in range(5):
        r = ablate.random_like(own, 64, seed, exclude=own)
        assert {k: len(v) for k, v in r.items()} == {k: len(v) for k, v in own.items()}
        assert all(not set(r[k]) & set(own[k]) for k in own) and all(len(set(v)) == len(v) for v in r.values())
    assert ablate.random_like(own, 64, 1) != ablate.random_like(own, 64, 2)


def test_restrict_and_layer_bins():
    bins = ablate.layer_bins(30, 3)
    assert [(n, r.start, r.stop) for n, r in bins.items()] == [
        ("bottom", 0, 10),
        ("middle", 10, 20),
        ("top", 20, 30),
        ("all", 0, 30),
    ]
    own = {1: [1, 2], 12: [3, 4, 5, 6], 25: [7]}
    assert ablate.restrict(own, bins["middle"]) == {12: [3, 4, 5, 6]}
    half = ablate.restrict(own, bins["all"], 0.5, seed=0)
    assert sum(map(len, half.values())) == 4 and all(set(v) <= set(own[k]) for k, v in half.items())
    assert ablate.restrict(own, range(26, 30)) == {}


def test_one_depth_binning_for_ranges_thirds_and_profiles():
    # stage 3-4 ranges, the b/m/t thirds and the depth profiles all read neurons.depth_bins
    assert neurons.depth_bins(5, 3) == [range(0, 2), range(2, 3), range(3, 5)]
    assert list(ablate.layer_bins(5, 3).values())[:3] == neurons.depth_bins(5, 3)
    assert selection.thirds({"selected": [(0, 1, 0.1), (1, 2, 0.1), (2, 3, 0.1), (4, 4, 0.1)]}, 5) == "50/25/25"
    assert neurons.bin_shares([0, 4, 4, 4], 5, 3).tolist() == [0.25, 0, 0.75]
    assert neurons.bin_shares([], 5, 3).tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="bins: must be"):
        neurons.depth_bins(5, 0)
