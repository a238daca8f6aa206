"""Tests for emolib.plots: every figure builds from small synthetic inputs; sweep arithmetic is right."""

import matplotlib

matplotlib.use("Agg")

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from emolib import plots

EMO = list(plots.EMOTION_ORDER)
LABEL = "TestModel-1M · run test"
RNG = np.random.default_rng(0)


def _check(fig: Figure) -> None:
    """A figure with the label in its suptitle and at least one labelled axis; then close it."""
    try:
        assert isinstance(fig, Figure)
        assert fig._suptitle is not None and LABEL in fig._suptitle.get_text()
        labelled = [ax for ax in fig.axes if ax.get_xlabel() or ax.get_ylabel()]
        assert labelled, "no axis has a label"
    finally:
        plt.close(fig)


def _dialogue(n: int) -> str:
    return "\n".join(f"{'AB'[i % 2]}: " + " ".join(["word"] * (3 + i)) for i in range(n))


def _sweep_table() -> pd.DataFrame:
    rows = []
    for e in EMO:
        for rng_name in ["bottom", "middle", "top", "all"]:
            for prop in ["50% of own", "100% of own", "top 3%"]:
                for seed in range(2):
                    for target in ["own emotion", "other emotions"]:
                        rows.append(dict(masked=e, range=rng_name, proportion=prop, condition="own",
                                         seed=seed, target=target, delta=-0.2 + 0.01 * seed))
                        rows.append(dict(masked=e, range=rng_name, proportion=prop, condition="random",
                                         seed=seed, target=target, delta=-0.05))
    return pd.DataFrame(rows)


def _profile(bins: int = 10) -> pd.DataFrame:
    centres = (np.arange(bins) + 0.5) / bins
    raw = RNG.random((bins, len(EMO)))
    return pd.DataFrame(raw / raw.sum(axis=0), index=centres, columns=EMO)


def test_save_writes_png(tmp_path):
    fig = plots.neurons_per_emotion({e: i + 1 for i, e in enumerate(EMO)}, LABEL)
    path = plots.save(fig, tmp_path / "run", "neurons")
    plt.close(fig)
    assert path == tmp_path / "run" / "figures" / "neurons.png"
    assert path.exists() and path.stat().st_size > 1000


def test_annotator_confusions():
    theme = [EMO[i % 6] for i in range(60)]
    df = pd.DataFrame({"theme": theme,
                       "judgeA": theme,
                       "judgeB": [t if i % 3 else "none" for i, t in enumerate(theme)]})
    _check(plots.annotator_confusions(df, ["judgeA", "judgeB"], EMO, LABEL))


def test_kept_fraction_and_split_counts():
    df = pd.DataFrame({"theme": [EMO[i % 6] for i in range(30)], "kept": [i % 4 != 0 for i in range(30)]})
    _check(plots.kept_fraction(df, EMO, LABEL))
    _check(plots.split_counts({"train": {e: 10 for e in EMO}, "eval": {e: 3 for e in EMO}}, LABEL))


def test_length_distribution_drops_unlabelled():
    df = pd.DataFrame({"dialogue": [_dialogue(2 + i % 5) for i in range(20)],
                       "label": [EMO[i % 6] if i % 7 else None for i in range(20)]})
    df.loc[3, "label"] = np.nan
    _check(plots.length_distribution(df, LABEL))


def test_entropy_hist_handles_inf():
    ent = RNG.uniform(0, math.log(6), 500)
    ent[:20] = np.inf
    eligible = RNG.random(500) > 0.5
    fig = plots.entropy_hist(ent, cutoff=0.3, eligible=eligible, label=LABEL)
    texts = " ".join(t.get_text() for t in fig.axes[0].get_legend().get_texts())
    assert "20 neurons never fired" in texts and "selection cut-off" in texts
    _check(fig)
    _check(plots.entropy_hist(ent, cutoff=0.3, eligible=None, label=LABEL))


def test_selection_figures():
    _check(plots.neurons_per_emotion({e: 5 * i for i, e in enumerate(EMO)}, LABEL))
    _check(plots.layer_heatmap(pd.DataFrame(RNG.integers(0, 20, (12, 6)), columns=EMO), LABEL))
    _check(plots.layer_heatmap(pd.DataFrame(RNG.integers(0, 20, (48, 6)), columns=EMO), LABEL))
    _check(plots.depth_heatmap(_profile(), LABEL))
    counts = RNG.integers(0, 5, (6, 6))
    np.fill_diagonal(counts, 30)
    ov = pd.DataFrame(counts, index=EMO, columns=EMO)
    _check(plots.overlap_heatmap(ov, LABEL))
    P = RNG.random((6, 4, 16))
    _check(plots.activation_profiles(P, [(0, 1), (3, 15), (2, 2)], EMO, LABEL))
    stab = pd.DataFrame({"jaccard": RNG.random(6), "random_jaccard": RNG.random(6) * 0.1}, index=EMO)
    _check(plots.stability_bars(stab, LABEL))


def test_classification_figures():
    conf = pd.DataFrame(RNG.integers(0, 10, (6, 7)), index=EMO, columns=EMO + ["none"])
    _check(plots.confusion_heatmap(conf, LABEL))
    delta = pd.DataFrame(RNG.uniform(-0.3, 0.1, (6, 6)), index=EMO, columns=EMO)
    _check(plots.delta_heatmap(delta, LABEL, "own neurons masked"))
    summary = pd.DataFrame({"own_delta": -RNG.random(6) * 0.3}, index=EMO)
    summary["own_ci_low"] = summary["own_delta"] - 0.05
    summary["own_ci_high"] = summary["own_delta"] + 0.05
    rand = {e: list(RNG.normal(0, 0.02, 5)) for e in EMO}
    _check(plots.own_vs_random(summary, rand, LABEL))


def test_sweep_matrix_known_values():
    t = pd.DataFrame([
        dict(masked="fear", range="top", proportion="50%", condition="own", seed=0, target="own emotion", delta=-0.30),
        dict(masked="fear", range="top", proportion="50%", condition="own", seed=1, target="own emotion", delta=-0.10),
        dict(masked="fear", range="top", proportion="50%", condition="random", seed=0, target="own emotion", delta=-0.04),
        dict(masked="fear", range="top", proportion="50%", condition="random", seed=1, target="own emotion", delta=0.00),
        dict(masked="fear", range="bottom", proportion="50%", condition="own", seed=0, target="own emotion", delta=0.10),
        dict(masked="fear", range="bottom", proportion="50%", condition="random", seed=0, target="own emotion", delta=0.05),
        dict(masked="fear", range="top", proportion="50%", condition="own", seed=0, target="other emotions", delta=-0.9),
        dict(masked="anger", range="top", proportion="50%", condition="own", seed=0, target="own emotion", delta=-0.5),
    ])
    m = plots.sweep_matrix(t, "fear", "own emotion")
    assert list(m.index) == ["top", "bottom"] and list(m.columns) == ["50%"]
    assert m.loc["top", "50%"] == pytest.approx(-0.20 - (-0.02))
    assert m.loc["bottom", "50%"] == pytest.approx(0.05)
    assert m.attrs["vs_random"]
    a = plots.sweep_matrix(t, "anger", "own emotion")  # no random rows: plain own mean
    assert a.loc["top", "50%"] == pytest.approx(-0.5) and not a.attrs["vs_random"]


def test_sweep_heatmaps():
    table = _sweep_table()
    fig = plots.sweep_heatmaps(table, EMO, LABEL)
    # own mean -0.195, random -0.05 -> -14.5 pp in every cell
    data = np.asarray(fig.axes[0].collections[0].get_array(), dtype=float)
    assert np.allclose(data, -14.5)
    assert "accuracy change vs matched random (pp)" in [ax.get_ylabel() for ax in fig.axes]
    _check(fig)
    _check(plots.sweep_heatmaps(table, EMO, LABEL, target="other emotions"))


def test_cross_model_figures():
    _check(plots.depth_lines({"small": _profile(5), "big": _profile(10)}, LABEL))
    vals = pd.DataFrame(RNG.random((6, 3)), index=EMO, columns=["run-a", "run-b", "run-c"])
    _check(plots.compare_bars(vals, "emotion neurons", LABEL))
