# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 4 · How much, and where? Dose-response and depth
#
# [← 03](03_ablation.ipynb) · [05 →](05_steering.ipynb)
#
# **Runtime:** in the findings box above.
#
# **What you will learn**
# - how to ask "how much" (dose-response) and "where" (depth ranges) without picking cells after looking;
# - how a small, pre-specified family of contrasts (dose slope, top minus bottom) is tested against matched random
#   series and Holm-corrected;
# - why descriptive grids with intervals are shown but not tested;
# - how to read an extreme cell: its size, its between-set SD and its number of items.
#
# **Prerequisites:** notebook 03 (its instrument, intervention arm, means and spreads) and notebook 02
# (`neurons.json`). Concepts: dose-response, relative depth, pre-registration of contrasts, Holm correction.
#
# **References.** Lee et al., [Do Large Language Models Have “Emotion
# Neurons”?](https://aclanthology.org/2025.findings-acl.806/) (Findings of ACL 2025) · LAPE: Tang et al.,
# [Language-Specific Neurons: The Key to Multilingual Capabilities in Large Language
# Models](https://arxiv.org/abs/2402.16438) (ACL 2024) · EmoPrism, the paper's dataset
# ([10kH/Emotion-Neuron](https://github.com/10kH/Emotion-Neuron), MIT code, CC-BY-4.0 data) · attribution patching:
# [Nanda 2023](https://www.neelnanda.io/mechanistic-interpretability/attribution-patching), Syed et al. 2023 ([arXiv
# 2310.10348](https://arxiv.org/abs/2310.10348)).
#
# Lee et al. report that masking more emotion neurons hurts more, and that emotion information is spread over
# several layers. This notebook asks both questions with the design of notebook 03 (its instrument, the
# parameter file's intervention, margins, random families), as a **small family of contrasts fixed in advance**,
# per named set, pooled over the emotions:
#
# * **dose slope**: the slope of the margin change against log10 of the share of neurons masked, for each
#   emotion's k neurons under the set's own rule at k in `dose_rates`, against the same slope of
#   `grid_random_sets` random series (series j = matched random set j at every dose);
# * **top minus bottom**: the margin change with the set's top-third neurons minus that with its bottom-third
#   neurons, against the same difference for each random series (matched per layer, so in the same range).
#
# The family (named sets × two contrasts, pooled over emotions) is Holm-corrected as one, with an equivalence test
# beside each; the control sets are tested apart, and the per-emotion contrasts are secondary. The full grids (every
# dose, every depth range) are shown too, as
# descriptive figures with intervals: no cell of them is tested or picked afterwards.

# %%
from IPython.display import Markdown, display

from emolib.causal import budget, grids, instrument, splits
from emolib.identify import neurons
from emolib.lm import models
from emolib.report import book, findings, plots_ablation, plots_identify, tables

# %% tags=["parameters"] jupyter={"source_hidden": true}
run_name = "smollm2-135m"
model = "smollm2-135m-instruct"
dtype = "auto"
device = "auto"
device_map = None
seed = 0
batch_size = 16
emotions = ["anger", "disgust", "fear", "happiness", "sadness", "surprise"]
prompt_style = "auto"
prompt_template = None
few_shot = 0
calibrate = True
eval_source = "split"
eval_path = None
eval_limit = None
dose_rates = [0.001, 0.0025, 0.005, 0.01, 0.02, 0.05]
layer_bins = 3
grid_random_sets = 20
grid_sets = None
grid_ranges = None
grid_eval_limit = None
items_per_emotion = 8
equivalence_margin = 0.25
power_delta = 0.25
n_bootstrap = 1000
run_dir = None

# %%
P = book.setup(globals(), "04")
LABEL = book.run_title(P)
sets = neurons.named_sets(P)
grid_sets = {n: s for n, s in sets.items() if P["grid_sets"] is None or n in P["grid_sets"]}
lm, tok, clf, inst, scorer, spread = instrument.load_scorer(P)
items = splits.eval_table(P, budget.grid_items(P))
L, D = models.ffn_shape(lm)
progress = budget.progress_for_grids(P)
scorer.on_progress = progress.add
display(Markdown(f"**Instrument** {tables.inline(inst)}; **arm** {scorer.arm}; **sets** {', '.join(grid_sets)}."))
display(
    tables.row(
        items.label.value_counts().reindex(P["emotions"]).fillna(0).astype(int).to_dict(), "eval items per emotion"
    )
)

# %% [markdown]
# ## Where each set's neurons sit
# The share of each emotion's neurons by relative depth (0 = first layer, 1 = last).

# %%
for name, ns in sets.items():
    book.show(
        plots_identify.depth_heatmap(neurons.depth_profile(ns), f"{LABEL} · set {name}"), P, f"04_depth_profile_{name}"
    )

# %% [markdown]
# ## Dose-response
# Every dose of every set against its matched random sets (descriptive), then the tested slope.

# %%
progress.step("dose-response")
rates = sorted(P["dose_rates"])
dose_g = {
    name: grids.grid_scores(
        scorer, P, ns, items, {r: grids.dose_sets(P, ns, r) for r in rates}, P["grid_random_sets"], spread
    )
    for name, ns in grid_sets.items()
}
dose = grids.grid_table(dose_g, "rate")
book.save_table(P, {"all": dose}, "dose_response.csv")
book.show(plots_ablation.dose_response(dose, P["emotions"], LABEL, L * D), P, "04_dose_response")
acc = dose.dropna(subset=["own_minus_random_accuracy"])
if len(acc):
    ext = acc.loc[[acc.own_minus_random_accuracy.idxmin(), acc.own_minus_random_accuracy.idxmax()]]
    display(
        Markdown(
            "The two extreme cells of the dose grid (descriptive; no grid cell is tested): "
            + "; ".join(
                f"**{r.set} / {r.emotion} at {r.rate:.2%}** of neurons, own − random accuracy "
                f"{100 * r.own_minus_random_accuracy:+.0f} pp (margin {r.own_minus_random_margin:+.2f} nat), "
                f"between random sets SD {100 * r.random_d_accuracy_sd:.0f} pp and {r.random_d_margin_sd:.2f} nat over "
                f"{r.n_random} sets"
                for r in ext.drop_duplicates().itertuples()
            )
            + f". Each cell has {'-'.join(map(str, sorted({int(acc.n_items.min()), int(acc.n_items.max())})))} items "
            "per emotion, so its accuracy "
            f"moves in steps of at least {100 / acc.n_items.max():.0f} pp; read the margin and its SD, not the "
            "accuracy, and only the tested contrasts below for conclusions."
        )
    )

# %% [markdown]
# ## Depth ranges
# Each set's neurons inside the bottom, middle and top thirds of the depth, and in all layers (descriptive;
# `grid_ranges` can limit the ranges scored to those the tested contrast needs).

# %%
progress.step("depth ranges")
range_g = {
    name: grids.grid_scores(
        scorer, P, ns, items, grids.range_cells(ns, P["layer_bins"], P["grid_ranges"]), P["grid_random_sets"], spread
    )
    for name, ns in grid_sets.items()
}
ranges = grids.grid_table(range_g, "range")
book.save_table(P, {"all": ranges}, "layer_sweep.csv")
for name in grid_sets:
    book.show(plots_ablation.range_heatmap(ranges, P["emotions"], LABEL, name), P, f"04_ranges_{name}")

# %% [markdown]
# ## The tested contrasts
# One family, Holm-corrected over the named sets × contrasts (the control sets apart): per set, the dose slope and
# top minus bottom, each **pooled over the emotions** (the mean of the six emotions' contrasts) against the same
# mean of each random series, with the equivalence test beside it, as in notebook 03. Per emotion, the same
# contrasts follow as secondary tests (Holm within each set and contrast).

# %%
contrasts, per_emotion = grids.grid_contrasts(dose_g, range_g, P["emotions"], rates, P["equivalence_margin"])
book.save_table(P, {"all": contrasts}, "grid_contrasts.csv")
book.save_table(P, {"all": per_emotion}, "grid_contrasts_per_emotion.csv")
display(
    tables.narrow(
        contrasts.assign(
            **{"own − random [95% CI]": tables.interval(contrasts.own_minus_random, contrasts.lo, contrasts.hi)}
        ),
        ["set", "role", "contrast", "own − random [95% CI]", "p_holm", "equivalence_bound", "verdict"],
        {"p_holm": "{:.3g}", "equivalence_bound": "{:.2f}"},
        csv="grid_contrasts.csv",
        na_rep="–",
    )
)
book.show(plots_ablation.contrast_forest(per_emotion, LABEL + f" · arm {scorer.arm}"), P, "04_contrasts")
display(
    tables.narrow(
        per_emotion,
        ["set", "emotion", "contrast", "own", "random_mean", "random_d_margin_sd", "p_holm", "verdict"],
        {"own": "{:+.2f}", "random_mean": "{:+.2f}", "random_d_margin_sd": "{:.2f}", "p_holm": "{:.3g}"},
        csv="grid_contrasts_per_emotion.csv",
        na_rep="–",
    )
)

# %% [markdown]
# ## What this run shows
# Generated from the corrected contrasts.

# %%
findings.show(P["run_dir"], "04")

# %% [markdown]
# ## Questions
# Answerable from this notebook (fastbook-style questionnaire).
# 1. Why is the dose slope computed against log10 of the share of neurons masked, and against the slope of random
#    *series* rather than of independent random sets?
# 2. Why are the dose and depth grids shown as descriptive figures, while only two contrasts per set and emotion are
#    tested? What would go wrong if the most striking grid cell were tested afterwards?
# 3. The top-minus-bottom contrast uses random sets matched per layer. Why does that make the random series land in
#    the same depth ranges as the own set?
# 4. Pick the extreme dose-grid cell named above. Is it evidence of an emotion effect? Use its between-set SD and its
#    number of items in your answer.
# 5. The positive control's lines say whether each contrast can find even the control at this size. Why must 'no
#    detectable difference' be read together with that line?
