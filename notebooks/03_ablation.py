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
# # 3 · Do the neurons matter? Ablation and emotion classification
#
# If the neurons found in notebook 02 carry emotion information, removing them should hurt the model's ability to
# recognise that emotion, more than removing the same number of random neurons does.
#
# **Classification.** The model reads each `eval` dialogue (never used for selection) inside a prompt and we
# compare the log-likelihood of each emotion word, i.e. its whole token sequence, after the prompt (`score`
# protocol; optionally calibrated against a content-free input). The `generate` protocol (greedy decoding, the
# first emotion word wins) is the one of the published re-implementation.
#
# **Ablation.** A forward pre-hook on each layer's `mlp.down_proj` sets the chosen neurons to 0 at every position
# (`zero`), to their mean train activation (`mean`) or scales them (`scale`); the hooks are removed afterwards.
#
# **Controls.** For each emotion, random neuron sets with the same number of neurons in each layer (several seeds).

# %%
from IPython.display import display

from emolib import book, evaluate, metrics, neurons, plots

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
ablation_modes = ["zero"]
ablation_scale = 0.5
n_random_seeds = 3
eval_limit = None
n_bootstrap = 1000
run_dir = None

# %%
P = book.setup(globals(), "03")
LABEL = book.label(P)
ns = neurons.load(f"{P['run_dir']}/neurons.json")
lm, tok, clf = evaluate.load_classifier(P)
print(f"prompt: {'chat template' if clf.parts.chat else 'plain text'}, {len(clf.parts.prefix)} prefix tokens "
      f"(computed once per condition), labels {clf.labels}")
print(tok.decode(clf.parts.prefix + tok("<dialogue>", add_special_tokens=False)["input_ids"] + clf.parts.suffix))

# %% [markdown]
# ## Run every condition
# Baseline, each emotion's own neurons, and matched random sets, for each ablation mode. Predictions are cached
# per condition (`cache/predictions.jsonl`), so an interrupted run resumes.

# %%
table, result = evaluate.run_ablation(clf, P, ns)
print(f"{len(table)} rows written to {P['run_dir']}/ablation.csv")

# %% [markdown]
# ## Baseline
# How well does the unmodified model classify the eval dialogues? One caveat when reading the level: with the
# default annotators, the model under study (SmolLM2 or Gemma-3) was itself one of the three annotators whose vote
# decided which dialogues were kept, so the kept dialogues lean towards ones it already gets right. The ablation
# effects below are changes against this same baseline, so they are not affected by that lean.

# %%
base_pred = result["preds"][("baseline", "none", "none", -1)]
summary = metrics.summary(result["true"], base_pred, P["emotions"], P["n_bootstrap"], P["seed"])
print(f"macro-F1 {metrics.macro_f1(result['true'], base_pred, P['emotions']):.3f}; chance accuracy {1 / len(P['emotions']):.1%}")
display(summary.style.format({"accuracy": "{:.1%}", "ci_low": "{:.1%}", "ci_high": "{:.1%}"}))
conf = metrics.confusion(result["true"], base_pred, P["emotions"])
book.show(plots.confusion_heatmap(conf, LABEL), P, "03_baseline_confusion")

# %% [markdown]
# ## Masking each emotion's neurons
# Rows: whose neurons are masked; columns: the true emotion of the dialogues; cells: change in accuracy against
# the baseline (percentage points). A dark diagonal means an emotion's neurons matter for that emotion
# specifically.

# %%
for mode in P["ablation_modes"]:
    delta = evaluate.delta_matrix(table, mode).reindex(index=P["emotions"], columns=P["emotions"])
    book.show(plots.delta_heatmap(delta, LABEL, f"own neurons masked ({mode})"), P, f"03_delta_{mode}")
    if P["n_random_seeds"]:
        rnd = evaluate.delta_matrix(table, mode, "random").reindex(index=P["emotions"], columns=P["emotions"])
        book.show(plots.delta_heatmap(rnd, LABEL, f"matched random neurons masked ({mode}, mean of seeds)"), P,
                  f"03_delta_random_{mode}")

# %% [markdown]
# ## Own neurons against random neurons
# For each emotion: the accuracy change on its own dialogues when its neurons are masked (with a paired 95%
# bootstrap interval), beside the changes caused by random sets of the same size and layer distribution.

# %%
mode = P["ablation_modes"][0]
ovr = evaluate.own_vs_random(table, result, P["emotions"], mode, P["n_bootstrap"], P["seed"])
display(ovr.style.format({c: "{:+.1%}" for c in ovr.columns if c.endswith(("delta", "low", "high", "mean", "min", "random"))}
                         | {"baseline": "{:.1%}"}))
book.show(plots.own_vs_random(ovr, evaluate.random_deltas(result, P["emotions"], mode), LABEL), P, "03_own_vs_random")

# %% [markdown]
# ## Reading the results against the paper
# In Llama-3.1-8B-Instruct, Lee et al. found that masking anger and fear neurons dropped accuracy on those emotions
# sharply, while joy (happiness) and surprise barely moved or even improved. The lines below state what this run
# shows, emotion by emotion; differences are expected for a much smaller model, a different dataset scale and, by
# default, a likelihood-scoring rather than generation protocol.

# %%
for e, r in ovr.iterrows():
    verdict = ("drops more than every random set" if r["own_larger_drop_than_all_random"] else
               "does not drop more than every random set")
    print(f"{e:<10} baseline {r['baseline']:.0%}, own neurons {r['own_delta']:+.0%} "
          f"[{r['own_ci_low']:+.0%}, {r['own_ci_high']:+.0%}], random {r['random_delta_mean']:+.0%} -> {verdict}")
paper = {"anger": "sharp drop", "fear": "sharp drop", "happiness": "little change or gain", "surprise": "little change or gain"}
agree = [e for e, exp in paper.items() if e in ovr.index and
         ((exp == "sharp drop") == (ovr.loc[e, "own_delta"] <= -0.10))]
print(f"\nPattern of the paper (anger, fear drop >= 10 pp; happiness, surprise do not) holds here for: "
      f"{', '.join(agree) or 'none'}; differs for: {', '.join(e for e in paper if e not in agree and e in ovr.index) or 'none'}")
