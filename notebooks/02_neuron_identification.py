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
# # 2 · Identifying emotion neurons
#
# A *neuron* here is one unit of a decoder layer's gated FFN: index $i$ of $\mathrm{act}(W_{gate}x)$, the
# activation that, multiplied by $W_{up}x$, enters `down_proj`. Following the language-specific-neuron method
# (LAPE, Tang et al. 2024) that Lee et al. adapt:
#
# 1. Over the `train` dialogues of emotion $e$, count $f(u,e)$, the tokens on which neuron $u$ fires
#    (activation $> 0$), and $T_e$, the tokens counted.
# 2. $P(u,e) = f(u,e)/T_e$, normalised over emotions: $\hat P(u,e) = P(u,e)/\sum_{e'} P(u,e')$.
# 3. Entropy $H(u) = -\sum_e \hat P(u,e)\log \hat P(u,e)$ (nats; $0\log 0 = 0$). Low entropy = fires for few emotions.
# 4. Neurons that rarely fire would win with zero entropy, so LAPE keeps only neurons whose largest $P$ reaches
#    the `filter_quantile` (0.95) of all $P$ values.
# 5. The `top_rate` (1%) of all $L \times d_{ff}$ neurons with the lowest entropy are **emotion neurons**; each is
#    assigned to every emotion whose $P$ exceeds that same threshold.
#
# Counting uses plain forward hooks on each layer's `mlp.act_fn` (the model's own activation: SiLU for Llama,
# GELU for Gemma), masked to the dialogue's own tokens (no prompt template, special tokens or padding).

# %%
import numpy as np
from IPython.display import display

from emolib import book, identify, models, neurons, plots, sweep

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
record_tensor = "act"
record_tokens = "dialogue"
record_framing = "raw"
top_rate = 0.01
filter_quantile = 0.95
assign = "threshold"
run_dir = None

# %%
P = book.setup(globals(), "02")
LABEL = book.label(P)

# %% [markdown]
# ## Recording
# One pass over the `train` split, batched per emotion, counting on the model's device. Partial counts are saved
# as it goes (`cache/counts.partial.pt`), so an interrupted run resumes where it stopped; a finished run is
# reloaded from `cache/counts.pt`. Each dialogue also belongs to one of two seeded halves, so the selection's
# stability can be checked below without a second pass.

# %%
lm, tok = models.load_model(P["model"], P["dtype"], P["device"], P["device_map"], P["seed"])
L, D = models.ffn_shape(lm)
state = identify.record_train(P, lm, tok)
T = state["tokens"].sum(0)
print(f"{L} layers x {D} neurons = {L * D:,} FFN neurons; tensor '{P['record_tensor']}', tokens '{P['record_tokens']}', "
      f"framing '{P['record_framing']}'")
print("tokens counted per emotion (T_e):", dict(zip(state["emotions"], T.tolist())))
print(f"recording took {state['seconds']:.0f} s ({int(T.sum()) / max(state['seconds'], 1e-9):,.0f} counted tokens/s)")

# %% [markdown]
# ## Selecting
# The invariant first: no neuron fires on more tokens than were counted.

# %%
assert (state["counts"].sum(0) <= T.view(-1, 1, 1)).all()
result = identify.select_all(state, P)
path = identify.save_neurons(P, state, result)
print(f"selected {len(result['selected'])} of {L * D:,} neurons ({len(result['selected']) / (L * D):.2%}); "
      f"{result['n_eligible']:,} passed the filter (threshold P >= {result['threshold']:.3f}); saved {path}")
per_emotion = {e: len(v) for e, v in result["sets"].items()}
print("neurons per emotion:", per_emotion)

# %%
H = result["entropy"].numpy().ravel()
eligible = None
if P["filter_quantile"] is not None:
    eligible = (result["P"].max(0).values >= result["threshold"]).numpy().ravel()
cutoff = max(h for _, _, h in result["selected"])
book.show(plots.entropy_hist(H, cutoff, eligible, LABEL), P, "02_entropy")
sel_H = np.array([h for _, _, h in result["selected"]])
spread = result["P"][:, [l for l, _, _ in result["selected"]], [i for _, i, _ in result["selected"]]]
print(f"selected entropies: {sel_H.min():.3f} to {sel_H.max():.3f} nats (uniform over {len(P['emotions'])} emotions: "
      f"{np.log(len(P['emotions'])):.3f}); median gap between a selected neuron's highest and lowest firing "
      f"probability across emotions: {float((spread.max(0).values - spread.min(0).values).median()):.3f}")

# %% [markdown]
# Most neurons fire for all emotions alike (entropy near $\log 6 \approx 1.79$). The filter keeps only neurons that
# fire on a large share of tokens for at least one emotion, and among those the selection takes the lowest
# entropies. How far below $\log 6$ they sit says how selective they are: when the selected entropies are close to
# $\log 6$, the emotion preference of these neurons is a difference of a few points in firing rate, not an on/off
# switch (the profiles further down show it). Without the filter, the tail would be dominated by neurons that fire a
# handful of times in one emotion only:

# %%
unfiltered = neurons.select(state["counts"].sum(0), T, state["emotions"], P["top_rate"], None, P["assign"])
firing = result["P"].max(0).values
sel_f = [firing[l, i].item() for l, i, _ in result["selected"]]
sel_u = [firing[l, i].item() for l, i, _ in unfiltered["selected"]]
print(f"median max-P of selected neurons: with filter {np.median(sel_f):.3f}, without {np.median(sel_u):.4f}; "
      f"overlap of the two selections: {neurons.jaccard([s[:2] for s in result['selected']], [s[:2] for s in unfiltered['selected']]):.2f} (Jaccard)")

# %%
book.show(plots.neurons_per_emotion(per_emotion, LABEL), P, "02_neurons_per_emotion")

# %% [markdown]
# ## Where are they? (the study's key figure)
# Emotion neurons per layer and emotion, then the same by relative depth (0 = first layer, 1 = last), which
# lets models of different depth be compared.

# %%
table = identify.counts_table(result, state["emotions"], L)
book.show(plots.layer_heatmap(table, LABEL), P, "02_layer_heatmap")

# %%
ns = neurons.load(path)
profile = sweep.depth_profile(ns)
book.show(plots.depth_heatmap(profile, LABEL), P, "02_depth_heatmap")
thirds = {name: int(table.iloc[r].values.sum()) for name, r in
          zip(["bottom", "middle", "top"], np.array_split(np.arange(L), 3))}
print("neurons by third of the depth:", thirds)

# %% [markdown]
# ## Do emotions share neurons?
# With threshold assignment a neuron may serve several emotions; the off-diagonal cells count those shared.

# %%
overlap = identify.overlap_table(result["sets"], state["emotions"])
book.show(plots.overlap_heatmap(overlap, LABEL), P, "02_overlap")
served = identify.emotions_per_neuron(result)
print("selected neurons by the number of emotions they serve:", served.to_dict())
print(f"{served[served.index > 1].sum()} of {len(result['selected'])} serve more than one emotion; those serving "
      f"{len(P['emotions']) - 1} fire often for every emotion but one, i.e. they are selective by staying quiet")

# %% [markdown]
# ## Activation profiles of the most selective neurons
# Firing probability per emotion for the lowest-entropy neuron of each emotion (a different neuron for each).

# %%
picks = identify.profile_picks(result, state["emotions"])
book.show(plots.activation_profiles(result["P"].numpy(), picks, state["emotions"], LABEL), P, "02_profiles")

# %% [markdown]
# ## Is the selection stable?
# Select again on each of two disjoint halves of the train split and compare the two sets per emotion (Jaccard
# overlap), against two random sets of the same sizes. Overlap far above the random baseline means the neurons
# reflect the emotions, not sampling noise.

# %%
stab = identify.stability(state, P)
display(stab.style.format({"jaccard": "{:.2f}", "random_jaccard": "{:.4f}"}))
book.show(plots.stability_bars(stab, LABEL), P, "02_stability")
