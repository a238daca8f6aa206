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
# several layers: masking one depth range hurts less than masking them all. Two grids test this with the same
# design as notebook 03 (the instrument chosen there, margins, matched random sets, Holm):
#
# * **dose-response**: for each emotion, its k lowest-entropy neurons under the set's own selection rule, for k in
#   `dose_rates` (shares of all FFN neurons), against `grid_random_sets` matched random sets at every k;
# * **depth ranges**: the set's neurons inside the bottom, middle and top thirds of the depth (`layer_bins`) and in
#   all layers, each against its matched random sets (matched per layer, so they sit in the same range).
#
# Every cell shows how many neurons it masks. Each grid is one family for Holm's correction, and no cell is picked
# after the fact: every cell's corrected verdict is reported.
#
# Reading the figures: a band or interval is the 95% bootstrap CI **over items** of the own-minus-random change,
# so it shows how precisely this run measured the change on these items. The test asks a different question:
# whether the own set stands out from the spread **between** random sets of the same size, layers and firing
# rates. With `grid_random_sets` random sets per cell and Holm's correction over every cell, a change whose band
# excludes zero can still be well inside what random sets do; such a cell is reported as no detectable effect.

# %%
from IPython.display import Markdown, display

from emolib import book, effects, evaluate, models, plots, sweep

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
grid_random_sets = 5
grid_eval_limit = None
n_bootstrap = 1000
run_dir = None

# %%
P = book.setup(globals(), "04")
LABEL = book.label(P)
sets = evaluate.named_sets(P)
lm, tok, clf, inst = effects.load_instrument(P)
scorer = effects.Scorer(clf, P, inst)
items = effects.eval_table(P, P["grid_eval_limit"] or P["eval_limit"])
L, D = models.ffn_shape(lm)
print(f"instrument {inst}; sets {', '.join(sets)}; eval items per emotion:",
      items.label.value_counts().reindex(P["emotions"]).to_dict())

# %% [markdown]
# ## Where each set's neurons sit
# The share of each emotion's neurons by relative depth (0 = first layer, 1 = last).

# %%
for name, ns in sets.items():
    book.show(plots.depth_heatmap(sweep.depth_profile(ns), f"{LABEL} · set {name}"), P, f"04_depth_profile_{name}")

# %% [markdown]
# ## Dose-response

# %%
dose = effects.combine({name: effects.grid_test(scorer, P, ns, items, {r: effects.dose_sets(P, ns, r)
                                                                      for r in P["dose_rates"]},
                                                P["grid_random_sets"], "rate") for name, ns in sets.items()})
evaluate.save_table(P, {"all": dose}, "dose_response.csv")
book.show(plots.dose_response(dose, P["emotions"], LABEL, L * D), P, "04_dose_response")
display(dose.pivot_table(index=["set", "emotion"], columns="rate", values="n_neurons", aggfunc="first")
        .rename_axis(columns="neurons masked at rate"))

# %% [markdown]
# ## Depth ranges

# %%
ranges = effects.combine({name: effects.grid_test(scorer, P, ns, items, effects.range_cells(ns, P["layer_bins"]),
                                                  P["grid_random_sets"], "range") for name, ns in sets.items()})
evaluate.save_table(P, {"all": ranges}, "layer_sweep.csv")
for name in sets:
    book.show(plots.range_heatmap(ranges, P["emotions"], LABEL, name), P, f"04_ranges_{name}")

# %% [markdown]
# ## What this run shows
# Generated from the corrected tests: the cells with an effect, then what the rest could have detected.

# %%
display(Markdown("\n".join(f"- {line}" for line in effects.grid_findings(dose, "rate") +
                           effects.grid_findings(ranges, "range"))))
