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
# # 6 · Comparing models
#
# previous: notebook 05 (each compared run has its own notebooks 01-05 under `outputs/<run>/`)
#
# **Runtime:** in the findings box above.
#
# **What you will learn**
# - how to compare runs of models of different size and depth: shares instead of counts, relative depth instead of
#   layer numbers;
# - which conclusions two runs share, and why a difference of verdicts is not itself a tested difference;
# - how the entropy method, the contribution method and the attribution control overlap in each run, beside chance.
#
# **Prerequisites:** finished runs of notebooks 01-05 for each model (here the two showcase runs under `outputs/`).
# Concepts: relative depth, Jaccard overlap against chance, Holm verdicts.
#
# **References.** Lee et al., [Do Large Language Models Have “Emotion
# Neurons”?](https://aclanthology.org/2025.findings-acl.806/) (Findings of ACL 2025) · LAPE: Tang et al.,
# [Language-Specific Neurons: The Key to Multilingual Capabilities in Large Language
# Models](https://arxiv.org/abs/2402.16438) (ACL 2024) · EmoPrism, the paper's dataset
# ([10kH/Emotion-Neuron](https://github.com/10kH/Emotion-Neuron), MIT code, CC-BY-4.0 data) · attribution patching:
# [Nanda 2023](https://www.neelnanda.io/mechanistic-interpretability/attribution-patching), Syed et al. 2023 ([arXiv
# 2310.10348](https://arxiv.org/abs/2310.10348)).
#
# Lee et al. compared Llama-3.1-8B-Instruct with Llama-3.1-70B-Instruct and found that emotion neurons sit
# differently in the two. This notebook reads finished runs (their `neurons.json`, `own_vs_random.csv` and, when
# present, `layer_sweep.csv`) and sets them side by side: how many neurons each emotion gets, where they sit in
# relative depth (so models of different depth compare), how sensitive each emotion is to losing its neurons, and
# whether the runs reach the same conclusions. Offline, the two runs are SmolLM2-135M-Instruct and Gemma-3-270M;
# with GPUs, the same notebook compares the 8B and 70B runs:
# `python -m emolib compare outputs/llama-3.1-8b-instruct outputs/llama-3.1-70b-instruct`.

# %%
from pathlib import Path

from IPython.display import Markdown, display

from emolib.identify import headtohead, neurons
from emolib.report import compare, plots_common, plots_compare, plots_identify

# %% tags=["parameters"] jupyter={"source_hidden": true}
runs = ["outputs/smollm2-135m", "outputs/gemma3-270m"]
out_dir = "outputs/comparison"

# %%
R = compare.load_runs(runs)
P = {"run_dir": out_dir}
LABEL = "comparison of " + " vs ".join(R)
Path(out_dir, "figures").mkdir(parents=True, exist_ok=True)
display(compare.overview(R))

# %% [markdown]
# ## Neurons per emotion
# Counts depend on the model's size (each run selects its `top_rate` share of all FFN neurons), so the figure
# below the table gives each emotion's share of its run's emotion neurons.

# %%
counts = compare.neurons_per_emotion(R)
display(counts)
_ = plots_common.save(
    plots_compare.compare_bars(counts.div(counts.sum()), "share of the run's emotion neurons", LABEL),
    out_dir,
    "06_neurons_per_emotion",
)

# %% [markdown]
# ## Where they sit, by relative depth
# One panel per emotion, one line per model: the share of that emotion's neurons in each tenth of the depth.

# %%
profiles = compare.depth_profiles(R)
_ = plots_common.save(plots_compare.depth_lines(profiles, LABEL), out_dir, "06_depth_profiles")
display(compare.median_depth(R).round(2))

# %% [markdown]
# ## Ablation sensitivity
# From notebook 03's test of the `paper` set: the accuracy change on each emotion's own eval items when its neurons
# are ablated (under that run's primary intervention arm), minus the mean change under matched random sets
# (percentage points; negative = the neurons matter more than random ones).

# %%
sens = compare.sensitivity(R)
display((100 * sens).round(1))
_ = plots_common.save(
    plots_compare.compare_bars(100 * sens, "own minus random accuracy change (pp)", LABEL), out_dir, "06_sensitivity"
)

# %% [markdown]
# ## Stage 3's answer in each run
# Notebook 03's pooled verdict per named set (the mean over emotions against random families, Holm over the named
# sets, with the equivalence test), then its own-minus-random effect (nat) and the smallest margin within which the
# set was shown equivalent to random. The controls were tested the same way, outside the family.

# %%
display(compare.pooled_verdicts(runs))

# %% [markdown]
# ## Do the runs reach the same conclusions, per emotion?
# Each cell is notebook 03's per-emotion (secondary) verdict for that run and emotion, Holm within the set; a
# difference between runs is only a difference of verdicts, not itself tested.

# %%
concl = compare.conclusions(R)
display(concl)
for line in compare.agreement_lines(concl):
    print(line)

# %% [markdown]
# ## Two identification methods head to head
# Per run: the entropy method's `paper` set against the contribution method's `directions` set (emotion
# directions, Wang et al. 2025; same size per emotion), each against the `attribution` positive control (the
# neurons that move the readout by construction), with the overlap expected for random sets of the same sizes; their
# depth; and every causal result of stages 3 and 4 side by side, read out in plain language from the numbers.

# %%
for d in runs:
    name, path = Path(d).name, Path(d) / "neurons.json"
    have = neurons.set_names(path)
    if "directions" not in have:
        print(f"{name}: no directions set (stage 2 ran with find_directions: false, or before the method existed)")
        continue
    sets = {n: neurons.load(path, n) for n in ("paper", "directions", "attribution") if n in have}
    display(Markdown(f"### {name}"))
    pairs = [("paper", "directions")] + [(n, "attribution") for n in ("paper", "directions") if "attribution" in sets]
    lines = []
    for a, b in pairs:
        ov = headtohead.overlap(sets[a], sets[b])
        display(
            ov.style.format({"jaccard": "{:.3f}", "chance jaccard": "{:.4f}", "x chance": "{:.1f}"}).set_caption(
                f"{a} vs {b}"
            )
        )
        lines += headtohead.overlap_lines(ov, a, b)
    _ = plots_common.save(
        plots_identify.depth_vs_pool(headtohead.depth_shares(sets), f"{LABEL} · run {name}"),
        out_dir,
        f"06_methods_depth_{name}",
    )
    lines.append(
        "Median relative depth: " + ", ".join(f"`{n}` {v:.2f}" for n, v in headtohead.median_depth(sets).items()) + "."
    )
    display(headtohead.causal_table(d, ("attribution", "paper", "directions")).style.format(precision=2, na_rep="-"))
    lines += headtohead.causal_lines(d)
    display(Markdown("\n".join(f"- {line}" for line in lines)))

# %% [markdown]
# ## Questions
# Answerable from this notebook (fastbook-style questionnaire).
# 1. Why are emotion neurons compared as shares of a run's emotion neurons and by relative depth, not as counts and
#    layer numbers?
# 2. The two runs can give different verdicts for the same emotion. Why is that not evidence that the models differ?
#    What test would be?
# 3. How much do the `paper` and `directions` sets overlap in each run, against the chance overlap shown? What does a
#    low overlap say about the two methods?
# 4. Which of the two runs' positive controls were found, and how does that change how you read each run's other
#    verdicts?
