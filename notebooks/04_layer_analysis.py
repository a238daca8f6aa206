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
# Lee et al. report that masking more emotion neurons hurts more, and that emotion information is spread over
# several layers. This notebook asks both questions with the design of notebook 03 (its instrument, the pilot's
# intervention, margins, matched random sets), as a **small family of contrasts fixed in advance**, per named set
# and emotion:
#
# * **dose slope**: the slope of the margin change against log10 of the share of neurons masked, for each
#   emotion's k neurons under the set's own rule at k in `dose_rates`, against the same slope of
#   `grid_random_sets` random series (series j = matched random set j at every dose);
# * **top minus bottom**: the margin change with the set's top-third neurons minus that with its bottom-third
#   neurons, against the same difference for each random series (matched per layer, so in the same range).
#
# The family is Holm-corrected as one. The full grids (every dose, every depth range) are shown too, as
# descriptive figures with intervals: no cell of them is tested or picked afterwards.

# %%
from IPython.display import Markdown, display

from emolib.report import book, findings, plots
from emolib.causal import budget, effects
from emolib.lm import models

# %% tags=["parameters"]
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
effects_budget_min = None
power_delta = 0.25
n_bootstrap = 1000
run_dir = None

# %%
P = book.setup(globals(), "04")
LABEL = book.run_title(P)
sets = neurons.named_sets(P)
grid_sets = {n: s for n, s in sets.items() if P["grid_sets"] is None or n in P["grid_sets"]}
lm, tok, clf, inst, scorer, spread = effects.load_scorer(P)
items = effects.eval_table(P, budget.grid_items(P))
L, D = models.ffn_shape(lm)
progress = budget.progress_for_grids(P)
scorer.on_progress = progress.add
print(f"instrument {inst}; arm {scorer.arm}; sets {', '.join(grid_sets)}; eval items per emotion:",
      items.label.value_counts().reindex(P["emotions"]).to_dict())

# %% [markdown]
# ## Where each set's neurons sit
# The share of each emotion's neurons by relative depth (0 = first layer, 1 = last).

# %%
for name, ns in sets.items():
    book.show(plots.depth_heatmap(neurons.depth_profile(ns), f"{LABEL} · set {name}"), P, f"04_depth_profile_{name}")

# %% [markdown]
# ## Dose-response
# Every dose of every set against its matched random sets (descriptive), then the tested slope.

# %%
progress.step("dose-response")
rates = sorted(P["dose_rates"])
dose_g = {name: effects.grid_scores(scorer, P, ns, items, {r: effects.dose_sets(P, ns, r) for r in rates},
                                    P["grid_random_sets"], spread) for name, ns in grid_sets.items()}
dose = effects.grid_table(dose_g, "rate")
book.save_table(P, {"all": dose}, "dose_response.csv")
book.show(plots.dose_response(dose, P["emotions"], LABEL, L * D), P, "04_dose_response")

# %% [markdown]
# ## Depth ranges
# Each set's neurons inside the bottom, middle and top thirds of the depth, and in all layers (descriptive;
# `grid_ranges` can limit the ranges scored to those the tested contrast needs).

# %%
progress.step("depth ranges")
range_g = {name: effects.grid_scores(scorer, P, ns, items, effects.range_cells(ns, P["layer_bins"], P["grid_ranges"]),
                                     P["grid_random_sets"], spread) for name, ns in grid_sets.items()}
ranges = effects.grid_table(range_g, "range")
book.save_table(P, {"all": ranges}, "layer_sweep.csv")
for name in grid_sets:
    book.show(plots.range_heatmap(ranges, P["emotions"], LABEL, name), P, f"04_ranges_{name}")

# %% [markdown]
# ## The tested contrasts
# One family, Holm-corrected: per set and emotion, the dose slope and top minus bottom, each against its random
# series.

# %%
contrasts = effects.grid_contrasts(dose_g, range_g, P["emotions"], rates)
book.save_table(P, {"all": contrasts}, "grid_contrasts.csv")
book.show(plots.contrast_forest(contrasts, LABEL + f" · arm {scorer.arm}"), P, "04_contrasts")
display(contrasts[["set", "emotion", "contrast", "n_random", "own", "random_mean", "own_minus_random_margin",
                   "p_holm", "verdict"]].style.format(
    {"own": "{:+.2f}", "random_mean": "{:+.2f}", "own_minus_random_margin": "{:+.2f}", "p_holm": "{:.3g}"},
    na_rep="–").hide(axis="index"))

# %% [markdown]
# ## What this run shows
# Generated from the corrected contrasts.

# %%
findings.show(P["run_dir"], "04")
