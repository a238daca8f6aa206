"""Random families: each keeps the named set's sizes, layers, bins and overlaps between emotions; draws are seeded
by the family's number alone; titrated families replace the share they say."""

import numpy as np
import pytest
import torch

from emolib.causal import families
from emolib.lm import ablate


def _sets():
    """Six emotions' sets that overlap heavily, as the paper sets do, over three layers."""
    rng = np.random.default_rng(0)
    core = [(layer, int(i)) for layer in range(3) for i in rng.choice(300, 12, replace=False)]
    out = {}
    for k, e in enumerate(["anger", "disgust", "fear", "happiness", "sadness", "surprise"]):
        extra = [(k % 3, 300 + 5 * k + j) for j in range(3)]
        keep = [x for j, x in enumerate(core) if (j + k) % 4]  # 75% of the core each
        out[e] = families.as_mask(keep + extra)
    return out


def test_a_family_keeps_sizes_layers_bins_and_every_overlap():
    sets = _sets()
    firing, spread = torch.rand(3, 400), torch.rand(3, 400)
    bins, _ = ablate.joint_bins(firing, spread)
    union = families.union(sets)
    own = list(sets.values())
    for fmap in families.family_maps(union, firing, 5, seed=3, spread=spread):
        rnd = [families.image(fmap, m) for m in own]
        assert (families.overlaps(rnd) == families.overlaps(own)).all()  # sizes on the diagonal, overlaps off it
        drawn = set(fmap.values())
        assert len(drawn) == len(fmap) and not drawn & set(fmap)  # injective, never a neuron of the union
        for (l1, i), (l2, j) in fmap.items():
            assert l1 == l2 and bins[l1][i] == bins[l2][j]  # same layer, same firing x SD bin (room here)
    assert families.overlaps(own)[0, 1] > 0.5 * families.overlaps(own)[0, 0]  # the sets do overlap


def test_families_are_seeded_by_their_number_alone():
    sets = _sets()
    firing = torch.rand(3, 400)
    union = families.union(sets)
    a = families.family_maps(union, firing, 4, seed=1)
    b = families.family_maps(union, firing, 2, seed=1, start=2)
    assert a[2:] == b and a[0] != a[1]
    assert families.family_maps(union, firing, 1, seed=2)[0] != a[0]


def test_a_bin_that_runs_out_borrows_from_its_neighbour():
    firing = torch.arange(20, dtype=torch.float32).repeat(1, 1)  # one layer, 20 neurons, 2 per decile
    own = {0: [0, 1]}  # both of the lowest decile: one free neuron... none: the decile holds only these two
    fmap = families.family_maps(own, firing, 1, seed=0)[0]
    assert sorted(j for _, j in fmap.values()) == [2, 3]  # the next decile up
    with pytest.raises(ValueError, match="fewer free neurons"):
        families.family_maps({0: list(range(15))}, firing, 1, seed=0)


def test_titrated_families_replace_the_share_they_say():
    sets = _sets()
    own = list(sets.values())
    control = [families.as_mask([(2, 390 + j) for j in range(10)]) for _ in own]
    fmap = families.family_maps(families.union(sets), torch.rand(3, 400), 1, seed=0)[0]
    for share in (0.0, 0.25, 1.0):
        fam = families.titrated_family(fmap, own, control, share, seed=0, draw=0)
        for m, t, c in zip(own, fam, control):
            size = len(families.as_pairs(m))
            k = min(round(share * size), 10)
            got = set(families.as_pairs(t)) & set(families.as_pairs(c))
            assert len(got) == k and len(families.as_pairs(t)) == size
    assert families.titrated_family(fmap, own, control, 0.5, 0, 1) != families.titrated_family(
        fmap, own, control, 0.5, 0, 2
    )
