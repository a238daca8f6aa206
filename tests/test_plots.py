"""Tests for the figure modules emolib.report.plots_*: every figure builds from small synthetic inputs, labelled; grid
values are right."""

import matplotlib

matplotlib.use("Agg")

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from emolib.report import plots_ablation, plots_common, plots_compare, plots_data, plots_identify

EMO = list(plots_common.EMOTION_ORDER)
LABEL = "TestModel-1M · run test"
RNG = np.random.default_rng(0)


def _check(fig: Figure) -> None:
    """A figure with the label in its suptitle and at least one labelled axis; then close it."""
    try:
        assert isinstance(fig, Figure)
        assert fig._suptitle is not None and LABEL in fig._suptitle.get_text()
        labelled = [ax for ax in fig.axes if ax.get_xlabel() or ax.get_ylabel()]
        assert labelled, "no axis has a label"
        plots_common.check(fig, "under test")  # readable: no offset text, ticks >= 8 pt and not overlapping, titled
    finally:
        plt.close(fig)


def _dialogue(n: int) -> str:
    return "\n".join(f"{'AB'[i % 2]}: " + " ".join(["word"] * (3 + i)) for i in range(n))


def _grid_table(what: str, values: list) -> pd.DataFrame:
    rows = []
    for s_ in ["paper", "selective"]:
        for v in values:
            for e in EMO:
                d = -0.1 if e == "anger" else 0.02
                rows.append(
                    {
                        "set": s_,
                        what: v,
                        "emotion": e,
                        "n_neurons": 10,
                        "own_minus_random_accuracy": d,
                        "omr_accuracy_lo": d - 0.05,
                        "omr_accuracy_hi": d + 0.05,
                        "own_minus_random_margin": d,
                        "omr_margin_lo": d - 0.05,
                        "omr_margin_hi": d + 0.05,
                        "verdict": "own drop beyond random" if e == "anger" else "no detectable effect",
                    }
                )
    return pd.DataFrame(rows)


def _profile(bins: int = 10) -> pd.DataFrame:
    centres = (np.arange(bins) + 0.5) / bins
    raw = RNG.random((bins, len(EMO)))
    return pd.DataFrame(raw / raw.sum(axis=0), index=centres, columns=EMO)


def test_save_writes_png(tmp_path):
    fig = plots_identify.neurons_per_emotion({e: i + 1 for i, e in enumerate(EMO)}, LABEL)
    path = plots_common.save(fig, tmp_path / "run", "neurons")
    plt.close(fig)
    assert path == tmp_path / "run" / "figures" / "neurons.png"
    assert path.exists() and path.stat().st_size > 1000


def test_annotator_confusions():
    theme = [EMO[i % 6] for i in range(60)]
    df = pd.DataFrame(
        {"theme": theme, "judgeA": theme, "judgeB": [t if i % 3 else "none" for i, t in enumerate(theme)]}
    )
    _check(plots_data.annotator_confusions(df, ["judgeA", "judgeB"], EMO, LABEL))


def test_kept_fraction_and_split_counts():
    df = pd.DataFrame({"theme": [EMO[i % 6] for i in range(30)], "kept": [i % 4 != 0 for i in range(30)]})
    _check(plots_data.kept_fraction(df, EMO, LABEL))
    _check(plots_data.split_counts({"train": {e: 10 for e in EMO}, "eval": {e: 3 for e in EMO}}, LABEL))


def test_length_distribution_drops_unlabelled():
    df = pd.DataFrame(
        {
            "dialogue": [_dialogue(2 + i % 5) for i in range(20)],
            "label": [EMO[i % 6] if i % 7 else None for i in range(20)],
        }
    )
    df.loc[3, "label"] = np.nan
    _check(plots_data.length_distribution(df, LABEL))


def test_entropy_hist_handles_inf():
    ent = RNG.uniform(0, math.log(6), 500)
    ent[:20] = np.inf
    eligible = RNG.random(500) > 0.5
    fig = plots_identify.entropy_hist(ent, cutoff=0.3, eligible=eligible, label=LABEL)
    texts = " ".join(t.get_text() for t in fig.axes[0].get_legend().get_texts())
    assert "20 neurons never fired" in texts and "selection cut-off" in texts
    _check(fig)
    _check(plots_identify.entropy_hist(ent, cutoff=0.3, eligible=None, label=LABEL))


def test_selection_figures():
    _check(plots_identify.neurons_per_emotion({e: 5 * i for i, e in enumerate(EMO)}, LABEL))
    _check(plots_identify.layer_heatmap(pd.DataFrame(RNG.integers(0, 20, (12, 6)), columns=EMO), LABEL))
    _check(plots_identify.layer_heatmap(pd.DataFrame(RNG.integers(0, 20, (48, 6)), columns=EMO), LABEL))
    _check(plots_identify.depth_heatmap(_profile(), LABEL))
    counts = RNG.integers(0, 5, (6, 6))
    np.fill_diagonal(counts, 30)
    ov = pd.DataFrame(counts, index=EMO, columns=EMO)
    _check(plots_identify.overlap_heatmap(ov, LABEL))
    P = RNG.random((6, 4, 16))
    _check(plots_identify.activation_profiles(P, [(0, 1), (3, 15), (2, 2)], EMO, LABEL))
    stab = pd.DataFrame({"jaccard": RNG.random(6), "random_jaccard": RNG.random(6) * 0.1}, index=EMO)
    _check(plots_identify.stability_bars(stab, LABEL))


def test_classification_figures():
    conf = pd.DataFrame(RNG.integers(0, 10, (6, 7)), index=EMO, columns=EMO + ["none"])
    _check(plots_ablation.confusion_heatmap(conf, LABEL))
    shift = pd.DataFrame(RNG.uniform(-0.3, 0.1, (6, 6)), index=EMO, columns=EMO)
    _check(plots_ablation.shift_heatmap(shift, LABEL, "margin change", "mean margin change"))


def test_stage2_null_figures():
    _check(
        plots_identify.selectivity_distributions(
            {"selected": RNG.uniform(1, 3, 50), "pool": RNG.uniform(1, 2, 500), "null": RNG.uniform(1, 2, 80)}, LABEL
        )
    )
    table = pd.DataFrame(
        {"cutoff": [1.7, 1.75], "n_selected": [100, 100], "expected_false": [2.0, 60.0]},
        index=["paper", "nofilter-argmax"],
    )
    nulls = {
        "paper": {"n_null": 3, "cutoff_null": [1.78, 1.79, 1.77]},
        "nofilter-argmax": {"n_null": 3, "cutoff_null": [1.74, 1.75, 1.76]},
    }
    _check(plots_identify.null_cutoffs(table, nulls, LABEL))
    depth = pd.DataFrame(
        {
            "relative depth": (np.arange(6) + 0.5) / 6,
            "selected (paper)": np.full(6, 1 / 6),
            "eligible pool (paper)": np.full(6, 1 / 6),
            "all neurons": np.full(6, 1 / 6),
        }
    )
    _check(plots_identify.depth_vs_pool(depth, LABEL))


def test_effect_figures():
    t = pd.DataFrame(
        [
            {
                "set": "paper",
                "emotion": e,
                "own_d_margin": -0.2 * i,
                "own_d_margin_lo": -0.2 * i - 0.1,
                "own_d_margin_hi": -0.2 * i + 0.1,
                "own_d_accuracy": -0.05 * i,
                "verdict": "no detectable effect",
            }
            for i, e in enumerate(EMO)
        ]
    )
    rnd = {("paper", e): RNG.normal(0, 0.1, 5) for e in EMO}
    _check(plots_ablation.effect_forest(t, rnd, LABEL, "margin"))
    _check(plots_ablation.effect_forest(t, rnd, LABEL, "accuracy"))
    _check(plots_ablation.dose_response(_grid_table("rate", [0.001, 0.01, 0.05]), EMO, LABEL, 46080))
    fig = plots_ablation.range_heatmap(_grid_table("range", ["bottom", "top", "all"]), EMO, LABEL, "paper")
    data = np.asarray(fig.axes[0].collections[0].get_array(), dtype=float)
    assert np.allclose(np.unique(np.round(data, 3)), [-0.1, 0.02])  # own minus random margin, in nat
    _check(fig)
    c = pd.DataFrame(
        [
            {
                "set": s_,
                "emotion": e,
                "contrast": k,
                "own_minus_random_margin": -0.1 * i,
                "omr_margin_lo": -0.1 * i - 0.2,
                "omr_margin_hi": -0.1 * i + 0.2,
                "verdict": "own drop beyond random" if i > 3 else "no detectable effect",
            }
            for s_ in ("attribution", "paper")
            for k in ("dose slope", "top minus bottom")
            for i, e in enumerate(EMO)
        ]
    )
    _check(plots_ablation.contrast_forest(c, LABEL))
    own = pd.DataFrame(RNG.normal(0, 0.3, (6, 6)), index=EMO, columns=EMO)
    fig = plots_ablation.specificity_pair(own, own * 0.1, LABEL)
    assert len([a for a in fig.axes if a.get_title()]) == 2
    _check(fig)


def test_cross_model_figures():
    _check(plots_compare.depth_lines({"small": _profile(5), "big": _profile(10)}, LABEL))
    vals = pd.DataFrame(RNG.random((6, 3)), index=EMO, columns=["run-a", "run-b", "run-c"])
    _check(plots_compare.compare_bars(vals, "emotion neurons", LABEL))


def test_check_names_the_figure_and_each_unreadable_part():
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([1_000_000.0, 1_000_000.1], [0, 1])  # offset text: "+1e6"
    ax.set_yticks([0, 0.5, 1], ["zero", "half", "one"], fontsize=6)  # tiny
    ax.set_xlabel("x")
    try:
        with pytest.raises(plots_common.FigureError, match="figure bad one:.*no title.*offset.*6 pt"):
            plots_common.save(fig, "unused", "bad one")
    finally:
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.set_xticks(range(6), [f"a long label {i}" for i in range(6)])
    ax.set_xlabel("x")
    fig.suptitle("crowded")
    try:
        with pytest.raises(plots_common.FigureError, match="x tick labels overlap"):
            plots_common.check(fig, "crowded")
    finally:
        plt.close(fig)


def test_narrow_log_axis_and_many_variants_stay_readable():
    """Notebook 02's selectivity (values 1.0-1.2 on a log axis gave '1.1x10^0') and null figures."""
    _check(
        plots_identify.selectivity_distributions(
            {"selected": RNG.uniform(1.0, 1.2, 400), "pool": RNG.uniform(1.0, 1.15, 2000)}, LABEL
        )
    )
    names = [f"variant-{i}-nofilter-per-emotion" for i in range(9)]
    table = pd.DataFrame({"cutoff": RNG.uniform(1.3, 1.8, 9), "n_selected": 400, "expected_false": 3.0}, index=names)
    nulls = {n: {"n_null": 20, "cutoff_null": RNG.uniform(1.7, 1.8, 20)} for n in names}
    _check(plots_identify.null_cutoffs(table, nulls, LABEL))
