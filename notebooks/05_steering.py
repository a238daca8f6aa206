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
# # 5 · Are the emotion neurons sufficient? Steering generation
#
# [← 04](04_layer_analysis.ipynb) · next: notebook 06 (model comparison), run on two finished runs
#
# **Runtime:** in the findings box above.
#
# **What you will learn**
# - the difference between necessity (notebook 03's ablation) and sufficiency (steering), and why a set can have one
#   without the other;
# - how to steer generation by adding α activation SDs to chosen neurons, and why SD units make the doses fair across
#   neurons and against matched random sets;
# - how replies are read by scorers that are not the steered model, with common random numbers across conditions;
# - how the target share, its test against random sets, and the fluency cost are read together.
#
# **Prerequisites:** notebook 03 (its activation statistics and matched random sets) and notebook 02 (`neurons.json`,
# and the emotion directions). Concepts: activation steering, sampling with a fixed seed, perplexity.
#
# **References.** Lee et al., [Do Large Language Models Have “Emotion
# Neurons”?](https://aclanthology.org/2025.findings-acl.806/) (Findings of ACL 2025) · LAPE: Tang et al.,
# [Language-Specific Neurons: The Key to Multilingual Capabilities in Large Language
# Models](https://arxiv.org/abs/2402.16438) (ACL 2024) · EmoPrism, the paper's dataset
# ([10kH/Emotion-Neuron](https://github.com/10kH/Emotion-Neuron), MIT code, CC-BY-4.0 data) · attribution patching:
# [Nanda 2023](https://www.neelnanda.io/mechanistic-interpretability/attribution-patching), Syed et al. 2023 ([arXiv
# 2310.10348](https://arxiv.org/abs/2310.10348)).
#
# Notebook 03 asked whether the emotion neurons are **necessary**: does removing them hurt the model's recognition
# of the emotion more than removing matched random neurons? This notebook asks the converse question, whether they
# are **sufficient**: does pushing one emotion's neurons *up* while the model writes make its writing express that
# emotion, more than pushing up matched random neurons by the same amount? A set can be necessary without being
# sufficient (it is one link in a longer chain) and sufficient without being necessary (other neurons can stand in
# when it is removed), so the two tests answer different questions.
#
# **The intervention.** During generation, each chosen neuron's value (the input of `mlp.down_proj`, through the
# same pre-hooks as the ablations of notebook 03, mode `add`) gets **α times its activation SD** added, at every
# position. The SD is each neuron's spread on the scoring sequences of notebook 03's pass. We add SDs rather than
# set neurons to α times their mean because (a) a neuron's mean input to `down_proj` can be near zero or negative
# (it is a gated product), so multiples of it push some neurons nowhere or backwards; (b) SD units make one dose
# the same-sized push for every neuron, so an emotion's own set and its matched random sets (same layer counts,
# firing deciles and SD deciles, the draws of notebook 03) get comparable perturbations at the same α; (c) α = 0
# is exactly the unsteered model.
#
# **The readout.** Replies to neutral openings (`A: … about <topic> …\nB:`, topics the run's data never used) are
# sampled with common random numbers: each prompt has its own seeded noise stream, the same under every condition,
# so a prompt's steered and unsteered replies differ only through the steering. Their emotion is read by scorers
# that are **not the steered model**: the other embedded model's calibrated label scorer (SmolLM2 ↔ Gemma-3) and
# the MiniLM prototype classifier of notebook 01. The outcome is the **target share**: the share of replies whose
# top label is the steered emotion. Fluency is the reply's perplexity under the unsteered model, with empty and
# repetitive replies counted.
#
# **The test**, per scorer, set and emotion, at one dose fixed in advance (`steer_random_dose`): the own set's
# change of the target share from α = 0 against the same change for matched random sets (t prediction p, R − 1
# df, and its inverted 95% interval), Holm-corrected over sets × emotions within each scorer, with its power. The
# other doses are descriptive (a dose-response with paired intervals over prompts).

# %%
from pathlib import Path

import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from emolib.report import book, findings, plots, tables
from emolib.lm import models
from emolib.causal import steer

# %% tags=["parameters"] jupyter={"source_hidden": true}
run_name = "smollm2-135m"
model = "smollm2-135m-instruct"
dtype = "auto"
device = "auto"
device_map = None
seed = 0
batch_size = 16
emotions = ["anger", "disgust", "fear", "happiness", "sadness", "surprise"]
n_bootstrap = 1000
steer_doses = [0.0, 1.0, 2.0, 4.0]
steer_random_dose = 2.0
steer_random_sets = 20
steer_prompts = 20
steer_max_new_tokens = 24
steer_sets = None
steer_scorer = "auto"
steer_budget_min = 5.0
steer_power_delta = 0.25
run_dir = None

# %%
P = book.setup(globals(), "05")
LABEL = book.run_title(P)
sets = steer.select_sets(P)
_, sd = steer.activation_sd(P["run_dir"])
lm, tok = models.load_model(P["model"], P["dtype"], P["device"], P["device_map"], P["seed"])
if tuple(sd.shape) != models.ffn_shape(lm):
    raise ValueError(f"{P['run_dir']}: activation statistics of another FFN shape; rerun notebook 03")
prompts = steer.neutral_prompts(P["steer_prompts"], P["seed"], steer.run_topics(P["run_dir"]))
scorers = steer.load_scorers(P, steered=lm)
runner = steer.Runner(lm, tok, P, prompts, sd, scorers, Path(P["run_dir"]) / "cache")
display(Markdown(f"**Sets** {', '.join(sets)} · **scorers** {', '.join(scorers)} (the steered model is "
                 f"{P['model']}) · **{len(prompts)} prompts**, for example:\n\n```\n{prompts[0]}\n```"))

# %% [markdown]
# ## How large one dose is
# One SD is a different amount for every neuron, and the SDs are heavy-tailed (the line below the table): a set
# holding a few neurons of very large spread (the attribution set's rule can favour them) gets a large push at
# any dose, which can break the model's writing. The matched random sets are drawn from the same SD deciles, so
# the test stays fair; the fluency figure below shows the cost.

# %%
display(steer.set_sd_table(sets, sd, P["emotions"]).round(3))
q = sd.flatten().float().quantile(sd.new_tensor([0.5, 0.99, 0.999])).tolist()
print(f"all {sd.numel():,} FFN neurons: median SD {q[0]:.3g}, 99th percentile {q[1]:.3g}, 99.9th {q[2]:.3g}, "
      f"largest {sd.max().item():.3g}")

# %% [markdown]
# ## Generating
# The unsteered model and every own set at every dose first, then the matched random sets at the test dose,
# several conditions per batch (one mask and dose per row). Every condition is cached as it finishes, so an
# interrupted run resumes; the number of random sets per test is cut to fit `steer_budget_min` at the measured
# speed (never below 2, the least the test needs), and the cut is reported.

# %%
records, info = steer.run_stage(runner, P, sets, sd)
display(Markdown(steer.budget_note(info)))

# %% [markdown]
# ## The test: own sets against matched random sets at the test dose
# `own_d_share`: the own set's change of the target share from α = 0 (fraction of prompts); `omr_*`: own minus
# random, with the unadjusted 95% interval of the t prediction test; `p_holm` over sets × emotions per scorer.

# %%
tests = steer.test_table(records, P["emotions"], P["steer_random_dose"], P["steer_power_delta"])
doses = steer.dose_table(records, P["emotions"], P["steer_doses"], P["n_bootstrap"], P["seed"])
summary = steer.condition_summary(records, P["emotions"])
fluency = steer.fluency_table(summary)
for name, table in {"steering_tests.csv": tests, "steering_doses.csv": doses, "steering_fluency.csv": fluency,
                    "steering_conditions.csv": summary}.items():
    steer.save_csv(table, P["run_dir"], name)
shown = tests.assign(**{"own − random [95% CI]": tables.interval(tests.own_minus_random_share, tests.omr_lo,
                                                                   tests.omr_hi, "{:+.0%}")})
display(tables.narrow(shown, ["scorer", "set", "emotion", "baseline_share", "own_d_share", "own − random [95% CI]",
                              "p_holm", "verdict"],
                      {"baseline_share": "{:.0%}", "own_d_share": "{:+.0%}", "p_holm": "{:.3g}"},
                      csv="steering_tests.csv"))

# %% [markdown]
# ## Dose-response and the fluency trade-off
# Per scorer: the own sets' change of the target share against α (paired intervals over prompts), with the random
# sets at the test dose in grey; then the change against the replies' perplexity under the unsteered model.

# %%
for name in scorers:
    tag = name.replace(":", "_").replace("/", "_")
    book.show(plots.steering_dose(doses, tests, P["emotions"], name, LABEL), P, f"05_steering_dose_{tag}")
book.show(plots.steering_fluency(doses, fluency, next(iter(scorers)), LABEL), P, "05_steering_fluency")

# %%
display(tables.narrow(fluency, ["kind", "set", "emotion", "dose", "ppl", "degenerate", "n_conditions"],
                      {"dose": "{:g}", "ppl": "{:.1f}", "degenerate": "{:.0%}"}, csv="steering_fluency.csv"))
display(tables.row(summary.assign(kind=np.where(summary.random == steer.BASELINE, "unsteered",
                   np.where(summary.random == steer.OWN, "own", "random"))).groupby("kind").degenerate.mean().to_dict(),
                   "share of degenerate replies", fmt="{:.1%}"))

# %% [markdown]
# ## Sample continuations
# The first prompt's reply per emotion (rows) and dose (columns) under each set's own neurons; α = 0 is the same
# unsteered reply in every row.

# %%
samples = {name: steer.samples_table(records, P["emotions"], P["steer_doses"], name) for name in sets}
steer.save_csv(pd.concat(samples, names=["set", "emotion"]).reset_index(), P["run_dir"],
               "steering_samples.csv")
display(Markdown(f"Prompt:\n\n```\n{prompts[0]}\n```"))
for name, table in samples.items():
    display(Markdown(f"**set {name}**"))
    display(table)

# %% [markdown]
# ## A third intervention: the emotion direction
# Issue 17's directions steer without naming neurons: at the middle decoder layer, the emotion's unit direction
# (topic-centred, from notebook 02) is added to the residual stream, α SDs of the stream's projection on it over
# these prompts, at the test dose. Beside it, each neuron set at the same dose: the three interventions side by side
# (entropy neurons, contribution neurons where steered, and the direction). Descriptive: no random directions test it.

# %%
direction_records, note = steer.direction_baseline(P, runner)
print(note)
if direction_records is not None:
    at_dose = records[(records.random == steer.OWN) & (records.dose == P["steer_random_dose"])]
    side = steer.direction_table(records, direction_records, at_dose, P["emotions"])
    steer.save_csv(side, P["run_dir"], "steering_direction.csv")
    display(side.style.format({"dose": "{:g}", "d_target_share": "{:+.0%}", "d_target_p": "{:+.3f}",
                               "ppl": "{:.1f}"}).hide(axis="index"))

# %% [markdown]
# ## What this run shows
# Generated from the tables above (no number is typed by hand).

# %%
findings.show(P["run_dir"], "05")

# %% [markdown]
# ## Try it
# Pick an emotion, a set, a dose and a prompt to see a steered reply (in Jupyter; not built when the notebook runs
# headless under papermill). The same from a shell:
# `python -m emolib steer --params params/<run>.yaml --neurons outputs/<run>/neurons.json --emotion fear --alpha 5
# --prompt "A: How was the trip?\nB:"`.

# %%
if steer.interactive():
    display(steer.widget(lm, tok, P, sets, sd, scorers, prompts))
else:
    print("headless run: the interactive widget is built only in a live notebook")

# %% [markdown]
# ## Questions
# Answerable from this notebook (fastbook-style questionnaire).
# 1. Why is the steering dose α measured in each neuron's activation SD rather than as a multiple of its mean?
# 2. Why are the replies scored by the *other* model and by MiniLM, never by the steered model itself?
# 3. What do common random numbers buy in this design? What would the comparison between conditions lose without them?
# 4. A set raises the target share but also the replies' perplexity and the share of degenerate replies. How do the
#    dose-response and fluency figures tell steering apart from breaking the model?
# 5. The direction intervention is descriptive here (no random directions). What control would make it a test?
