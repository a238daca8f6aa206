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
# # 4 · Where in the depth? Masking by layer range and proportion
#
# Lee et al. report that emotion information is processed across several layers: masking the neurons of one
# depth range alone hurts less than masking them all. Here, for every emotion:
#
# * **layer ranges**: the bottom, middle and top thirds of the depth (`layer_bins`), and all layers;
# * **proportions**, in both readings the paper allows: (b) mask a fraction of the emotion's own neurons
#   (`sweep_fractions`) or (a) re-select with a larger `top_rate` (`sweep_top_rates`) from notebook 02's counts;
# * a **matched random control** for every cell: random neurons with the same count per layer.
#
# Each cell is evaluated on the masked emotion's own dialogues and a few of each other emotion; the baseline is
# computed once per emotion and reused, and every prediction is cached, so the sweep resumes when interrupted.

# %%
from IPython.display import display

from emolib import ablate, book, evaluate, neurons, plots, sweep

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
protocol = "score"
max_new_tokens = 4
layer_bins = 3
sweep_top_rates = [0.01, 0.03, 0.05]
sweep_fractions = [0.2, 0.6, 1.0]
sweep_eval_per_emotion = 20
sweep_random_seeds = 1
run_dir = None

# %%
P = book.setup(globals(), "04")
LABEL = book.label(P)
ns = neurons.load(f"{P['run_dir']}/neurons.json")
ranges = ablate.layer_bins(ns.n_layers, P["layer_bins"])
print({name: f"layers {r.start}-{r.stop - 1}" for name, r in ranges.items()})

# %% [markdown]
# ## Where each emotion's neurons sit
# The share of each emotion's neurons by relative depth (0 = first layer, 1 = last), the coordinate in which
# models of different depth compare.

# %%
profile = sweep.depth_profile(ns)
book.show(plots.depth_heatmap(profile, LABEL), P, "04_depth_profile")
for e in ns.emotions:
    d = [neurons.relative_depth(layer, ns.n_layers) for layer, _ in ns.sets[e]]
    if d:
        print(f"{e:<10} {len(d):4d} neurons, median relative depth {sorted(d)[len(d) // 2]:.2f}")

# %% [markdown]
# ## The sweep

# %%
lm, tok, clf = evaluate.load_classifier(P)
table = sweep.run_sweep(clf, P, ns)
print(f"{len(table)} rows written to {P['run_dir']}/layer_sweep.csv")

# %% [markdown]
# ## Accuracy change by range and proportion
# Each panel is one emotion; cells show the accuracy change on that emotion's own dialogues caused by its neurons,
# minus the change caused by the matched random neurons (percentage points). Negative = the emotion's neurons in
# that range matter more than random ones. The second figure shows the same for the other emotions' dialogues,
# a check of specificity.

# %%
book.show(plots.sweep_heatmaps(table, P["emotions"], LABEL, "own emotion"), P, "04_sweep_own")
book.show(plots.sweep_heatmaps(table, P["emotions"], LABEL, "other emotions"), P, "04_sweep_others")

# %% [markdown]
# ## Reading the sweep
# Which range hurts each emotion most when its own neurons are masked (largest drop relative to random)?

# %%
own = table[(table.target == "own emotion")]
rel = (own[own.condition == "own"].groupby(["masked", "range", "proportion"])["delta"].mean()
       - own[own.condition == "random"].groupby(["masked", "range", "proportion"])["delta"].mean()).dropna()
if len(rel):
    worst = rel.groupby(level=[0, 1]).min().unstack("range")
    display((100 * worst).round(1).rename_axis(columns="range (pp, own minus random, worst proportion)"))
    for e, row in worst.iterrows():
        r = row.idxmin()
        print(f"{e:<10} largest relative drop when masking the {r} range: {100 * row[r]:+.0f} pp "
              f"(all layers: {100 * row.get('all', float('nan')):+.0f} pp)")
