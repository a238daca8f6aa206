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
# - how to give every intervention the same dose: the size of the push it writes into the residual stream;
# - why a steering test needs a positive control (a direction known to steer) and a prompting ceiling;
# - how replies are read by two scorers that are not the steered model, and why a claim needs both.
#
# **Prerequisites:** notebook 03 (its activation statistics and the random families of its pooled test) and notebook
# 02 (`neurons.json`, and the emotion directions). Concepts: activation steering, sampling with a fixed seed,
# perplexity, equivalence tests.
#
# **References.** Lee et al., [Do Large Language Models Have “Emotion
# Neurons”?](https://aclanthology.org/2025.findings-acl.806/) (Findings of ACL 2025) · LAPE: Tang et al.,
# [Language-Specific Neurons: The Key to Multilingual Capabilities in Large Language
# Models](https://arxiv.org/abs/2402.16438) (ACL 2024) · EmoPrism, the paper's dataset
# ([10kH/Emotion-Neuron](https://github.com/10kH/Emotion-Neuron), MIT code, CC-BY-4.0 data) · AxBench: Wu et al.
# 2025, [arXiv 2501.17148](https://arxiv.org/abs/2501.17148) (prompting as the steering ceiling).
#
# Notebook 03 asked whether the emotion neurons are **necessary**. This notebook asks whether they are
# **sufficient**: does pushing one emotion's neurons *up* while the model writes make its writing express that
# emotion, more than pushing matched random neurons by the same amount? A set can be necessary without being
# sufficient, and sufficient without being necessary, so the two tests answer different questions.
#
# **The dose: the same push for every intervention.** Adding Δa to a set's neurons (the input of `mlp.down_proj`)
# changes the layer's output by W_down · Δa at every position, so the push written into the residual stream has
# norm ‖W_down · Δa‖, the same at every position. A dose is that norm, in units of the stream's median norm after the
# middle layer (SD units were not the same push for two sets: neuron SDs are heavy-tailed). Each set's Δa keeps the
# shape of its neurons' SDs and is scaled, layer by layer, so that the write has the dose's norm (split over layers
# by neuron counts). Its random families (notebook 03's: every neuron of the set mapped to a random neuron of the same
# layer, firing decile and SD decile, so the emotions' random sets keep the sizes, layers and overlaps) get exactly
# the same push. The emotion direction and the random directions are added after the middle layer with the same norm.
#
# **Fixed in advance.**
# 1. *Test dose:* per intervention, the largest dose of the grid at which the median over its own replies of the
#    perplexity ratio to the unsteered reply on the same prompt and noise (both under the unsteered model) stays
#    within `steer_ppl_factor` (1.5×).
# 2. *Outcome:* per reply, each scorer's probability of the target emotion, paired with the unsteered reply to the
#    same prompt (the same sampling noise). A degenerate reply (empty, repetitive, or perplexity above `steer_ppl_cap`
#    × the unsteered median) counts as no change, never as a success; an own condition with more than
#    `steer_max_degenerate` of its replies degenerate is excluded from the test and listed. A random family keeps
#    its degenerate conditions: a random push that breaks the text is a draw of the null in which the target
#    emotion did not rise.
# 3. *Test (confirmatory):* notebook 03's pooled test: the mean over emotions of the own change against the same mean
#    for each of ≥ 20 random families (t prediction test, Holm over the named sets; TOST equivalence within
#    ±`steer_power_delta`). Per-emotion tests are secondary.
# 4. *Claim:* both scorers must agree. "Effect beyond random" only when both scorers' pooled tests reject in the same
#    direction; "equivalent to random" only when both show equivalence; one rejecting alone is "scorers disagree".
#    With one scorer (`steer_scorer: none`) no claim is made.
# 5. *Positive control first:* the emotion direction against random directions of the same norm, by the same test.
#    If it is not found, the instrument cannot find steering, and the neuron verdicts say little.
# 6. *Ceiling:* the same openings after "Reply as someone who feels ⟨emotion⟩.", read by the same scorers.

# %%
from pathlib import Path

import pandas as pd
from IPython.display import Markdown, display

from emolib.causal import emotion_scorers, generation, intervene, outcomes, steer
from emolib.lm import models
from emolib.report import book, findings, plots_steering, tables

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
steer_doses = [0.0, 0.125, 0.25, 0.5]
steer_ppl_factor = 1.5
steer_ppl_cap = 10.0
steer_max_degenerate = 0.25
steer_random_sets = 20
steer_prompts = 20
steer_max_new_tokens = 24
steer_sets = None
steer_scorer = "auto"
steer_budget_min = 5.0
steer_power_delta = 0.05
run_dir = None

# %%
P = book.setup(globals(), "05")
LABEL = book.run_title(P)
sets = steer.select_sets(P)
_, sd = steer.activation_sd(P["run_dir"])
lm, tok = models.load_model(P["model"], P["dtype"], P["device"], P["device_map"], P["seed"])
if tuple(sd.shape) != models.ffn_shape(lm):
    raise ValueError(f"{P['run_dir']}: activation statistics of another FFN shape; rerun notebook 03")
prompts = generation.neutral_prompts(P["steer_prompts"], P["seed"], generation.run_topics(P["run_dir"]))
scorers = emotion_scorers.load_scorers(P, steered=lm)
runner = generation.Runner(lm, tok, P, prompts, sd, scorers, Path(P["run_dir"]) / "cache")
display(
    Markdown(
        f"**Sets** {', '.join(sets)} · **scorers** {', '.join(scorers)} (the steered model is "
        f"{P['model']}) · **{len(prompts)} prompts**, for example:\n\n```\n{prompts[0]}\n```"
    )
)
if len(scorers) < 2:
    display(
        Markdown(
            "**One scorer only (`steer_scorer: none`): no claim can be made.** The tables below show the "
            "method; a claim needs two scorers that agree."
        )
    )

# %% [markdown]
# ## Generating
# The unsteered model, the prompted replies, and every own set and emotion direction at every dose first; then each
# intervention's test dose by the fluency rule; then the random families and random directions at it. One generate
# call carries many conditions (a push per row). Every condition is cached as it finishes, so an interrupted run
# resumes.

# %%
records, info = steer.run_stage(runner, P, sets, sd)
records, cap = outcomes.mark_degenerate(records, P["steer_ppl_cap"])
display(Markdown(steer.budget_note(info)))
display(Markdown(steer.dose_note(info, P["steer_ppl_factor"])))
display(
    tables.narrow(
        info["doses"],
        ["intervention", "dose", "median_ppl", "ratio", "fluent", "chosen"],
        {"dose": "{:g}", "median_ppl": "{:.1f}", "ratio": "{:.2f}"},
        csv="steering_dose_choice.csv",
    )
)

# %% [markdown]
# ## The verdicts: the positive control first, then the named sets
# Per scorer, the pooled test at each intervention's test dose (`own`: the mean over emotions of the change of mean
# P(target) from the unsteered replies; `own_minus_random` with its 95% interval; `p_holm` over the named sets;
# `p_equivalence_holm` against ±`steer_power_delta`). Then the claim under the both-scorers rule.

# %%
eff = outcomes.effects(records, P["emotions"], P["steer_max_degenerate"])
dose_of = info["dose_of"]
pooled_t = outcomes.pooled_table(eff, dose_of, P["emotions"], P["steer_power_delta"], P["steer_power_delta"])
claims = outcomes.claims(pooled_t, len(scorers))
secondary = outcomes.per_emotion_table(eff, dose_of, P["emotions"], P["steer_power_delta"], P["steer_power_delta"])
trade = outcomes.tradeoff_table(eff, dose_of)
beside = outcomes.beside_table(eff, dose_of)
doses = outcomes.dose_table(records, P["emotions"], P["steer_doses"], P["n_bootstrap"], P["seed"])
for name, table in {
    "steering_pooled.csv": pooled_t,
    "steering_claims.csv": claims,
    "steering_tests.csv": secondary,
    "steering_tradeoff.csv": trade,
    "steering_prompting.csv": beside,
    "steering_doses.csv": doses,
    "steering_conditions.csv": eff,
    "steering_dose_choice.csv": info["doses"],
}.items():
    steer.save_csv(table, P["run_dir"], name)
print(outcomes.BOTH_SCORERS_RULE)
display(claims.style.hide(axis="index"))
if len(pooled_t) and "own_minus_random" in pooled_t:
    shown = pooled_t.assign(
        **{"own − random [95% CI]": tables.interval(pooled_t.own_minus_random, pooled_t.lo, pooled_t.hi, "{:+.3f}")}
    )
    display(
        tables.narrow(
            shown,
            [
                "scorer",
                "intervention",
                "dose",
                "n_random",
                "own − random [95% CI]",
                "p_holm",
                "p_equivalence_holm",
                "verdict",
            ],
            {"dose": "{:g}", "p_holm": "{:.3g}", "p_equivalence_holm": "{:.3g}"},
            csv="steering_pooled.csv",
        )
    )
print(outcomes.RANDOM_DEGENERATE_RULE)
display(Markdown(outcomes.degenerate_note(eff, cap)))

# %% [markdown]
# ## Secondary: per emotion
# The same test per emotion (Holm over the emotions within each scorer and intervention). Descriptive beside the
# pooled verdict.

# %%
if len(secondary) and "own_minus_random" in secondary:
    display(
        tables.narrow(
            secondary,
            ["scorer", "intervention", "emotion", "own", "own_minus_random", "p_holm", "verdict"],
            {"own": "{:+.3f}", "own_minus_random": "{:+.3f}", "p_holm": "{:.3g}"},
            csv="steering_tests.csv",
        )
    )

# %% [markdown]
# ## The prompting ceiling beside every steered condition, and the trade-off
# Per scorer and emotion: the change of mean P(target) under the instruction, and under each intervention at its
# test dose (its random families' mean beside it), with median perplexities. Then the trade-off figure: target score
# against fluency, one panel per scorer.

# %%
display(
    tables.narrow(
        beside,
        (["scorer", "emotion", "prompt d_p", "prompt ppl"] + [f"{n} d_p" for n in dose_of])[:8],
        {c: "{:+.3f}" for c in beside.columns if c.endswith("d_p")} | {"prompt ppl": "{:.1f}"},
        csv="steering_prompting.csv",
    )
)
book.show(plots_steering.steering_tradeoff(trade, LABEL), P, "05_steering_tradeoff")

# %% [markdown]
# ## Dose-response (descriptive)
# Each own set and the direction over the whole grid, read by each scorer, with paired 95% intervals over prompts.

# %%
for name in scorers:
    tag = name.replace(":", "_").replace("/", "_")
    book.show(plots_steering.steering_dose(doses, P["emotions"], name, LABEL), P, f"05_steering_dose_{tag}")

# %% [markdown]
# ## Sample continuations
# The first prompt's reply per emotion (rows) and dose (columns) under each intervention, and the prompted reply;
# dose 0 is the same unsteered reply in every row.

# %%
shown_sets = list(sets) + ([intervene.DIRECTION_SET] if info["directions"] else [])
samples = {name: outcomes.samples_table(records, P["emotions"], P["steer_doses"], name) for name in shown_sets}
steer.save_csv(pd.concat(samples, names=["set", "emotion"]).reset_index(), P["run_dir"], "steering_samples.csv")
display(Markdown(f"Prompt:\n\n```\n{prompts[0]}\n```"))
for name, table in samples.items():
    display(Markdown(f"**{name}**"))
    display(table)

# %% [markdown]
# ## What this run shows
# Generated from the tables above (no number is typed by hand).

# %%
findings.show(P["run_dir"], "05")

# %% [markdown]
# ## Try it
# Pick an emotion, a set, a dose and a prompt to see a steered reply (in Jupyter; not built when the notebook runs
# headless under papermill). The widget and the shell command push in activation SDs (the older, descriptive unit):
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
# 1. Why is a dose defined as the norm of the push written into the residual stream rather than in activation SDs?
# 2. Why are the replies scored by the *other* model and by MiniLM, never by the steered model itself, and why must
#    both agree before a claim is made?
# 3. What do common random numbers buy in this design? What would the paired changes lose without them?
# 4. Why is the test dose chosen by fluency, and why is a degenerate reply counted as no change?
# 5. The emotion direction is tested first. What would it mean for the neuron verdicts if it were not found?
