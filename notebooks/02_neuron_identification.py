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
# # 2 · Identifying emotion neurons, and testing whether they are emotion-selective
#
# [← 01](01_data_construction.ipynb) · [03 →](03_ablation.ipynb)
#
# **Runtime:** in the findings box above.
#
# **What you will learn**
# - LAPE's entropy selection of emotion neurons, step by step, and why its filter behaves differently for emotions
#   than for languages;
# - how a label-permutation null tells what the same procedure selects from noise (cut-off p, expected false
#   selections, FDR);
# - how to judge a selection by its selectivity, its split-half stability and its depth against the right baseline;
# - a second method (emotion directions and per-neuron contributions) and how the two compare.
#
# **Prerequisites:** notebook 01 (its `data/` train split). Concepts: an FFN neuron in a gated MLP, entropy of a
# distribution, permutation tests, Jaccard overlap.
#
# **References.** Lee et al., [Do Large Language Models Have “Emotion
# Neurons”?](https://aclanthology.org/2025.findings-acl.806/) (Findings of ACL 2025) · LAPE: Tang et al.,
# [Language-Specific Neurons: The Key to Multilingual Capabilities in Large Language
# Models](https://arxiv.org/abs/2402.16438) (ACL 2024) · EmoPrism, the paper's dataset
# ([10kH/Emotion-Neuron](https://github.com/10kH/Emotion-Neuron), MIT code, CC-BY-4.0 data) · attribution patching:
# [Nanda 2023](https://www.neelnanda.io/mechanistic-interpretability/attribution-patching), Syed et al. 2023 ([arXiv
# 2310.10348](https://arxiv.org/abs/2310.10348)).
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
#    the `filter_quantile` quantile of all $P$ values.
# 5. The `top_rate` share of all $L \times d_{ff}$ neurons with the lowest entropy are **emotion neurons**; each is
#    assigned to every emotion whose $P$ exceeds that same threshold.
#
# This run's values of these parameters are printed just below the parameters.
#
# **Why this filter behaves differently for emotions than for languages.** A language-specific neuron fires on most
# tokens of its language and almost never on others: languages have their own words and scripts, so "fires
# often" and "fires for one language only" go together, and LAPE's filter keeps exactly those neurons. Emotions
# share their words, grammar and topics; an emotion is a property of a whole dialogue, carried by a few tokens. A
# neuron that fires on most tokens of one emotion fires on most tokens of every emotion, so after the filter the
# lowest entropies sit just below the maximum $\ln 6$. The question this notebook answers is therefore not only
# "which neurons have the lowest entropy?" but **"is their preference for an emotion larger than what the same
# procedure finds when the labels carry no information?"**
#
# **The null.** In the same forward pass, every dialogue's firing counts are also added to the emotion it would
# have under `n_null` seeded permutations of the labels (whole dialogues permuted, the number per emotion kept).
# Running the selection on each permuted count table shows what the procedure selects from noise: its entropy
# cut-off, how many neurons pass the real cut-off (the expected false selections, hence an empirical FDR), and how
# selective those neurons look.

# %%
import pandas as pd
from IPython.display import Markdown, display

from emolib.identify import directions, headtohead, neurons
from emolib.identify import selection as identify
from emolib.lm import models
from emolib.report import book, findings, plots_identify, tables

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
record_tensor = "act"
record_tokens = "dialogue"
record_framing = "raw"
top_rate = 0.01
filter_quantile = 0.95
assign = "threshold"
min_count = 20
selection_scope = "global"
n_null = 20
answer_pass = True
selective_variant = "auto"
find_directions = True
direction_site = "residual"
direction_tokens = "dialogue"
run_dir = None

# %%
P = book.setup(globals(), "02")
LABEL = book.run_title(P)
display(
    Markdown(
        f"This run: LAPE filter at the **{P['filter_quantile']:g}** quantile of $P$ "
        f"(`filter_quantile`), the lowest-entropy **{P['top_rate']:.2%}** of neurons selected (`top_rate`), "
        f"**{P['n_null']}** label permutations for the null (`n_null`)."
    )
)

# %% [markdown]
# ## Recording
# One pass over the `train` split counts both candidate tensors (`act`, and `product`, the input of `down_proj`),
# per emotion, per half of the data (for the stability check) and under each label permutation (the null), all on
# the model's device. Partial counts are saved as it goes (`cache/counts.partial.pt`), so an interrupted run
# resumes; a finished run is reloaded from `cache/counts.pt`. A second, short pass (`answer_pass`) reads each
# dialogue inside the classification prompt and counts only the prompt's last position, where the model is about
# to name the emotion.

# %%
lm, tok = models.load_model(P["model"], P["dtype"], P["device"], P["device_map"], P["seed"])
L, D = models.ffn_shape(lm)
states = {"dialogue": identify.record_train(P, lm, tok)}
if identify.needs_answer_pass(P):
    states["answer"] = identify.record_train(P, lm, tok, tokens="answer")
state = states["dialogue"]
T = state["tokens"].sum(0)
print(
    f"{L} layers x {D} neurons = {L * D:,} FFN neurons, {state['dtype']}; both tensors counted, "
    f"{P['n_null']} label permutations"
)
display(tables.row(dict(zip(state["emotions"], T.tolist())), "tokens counted (T_e)", fmt="{:,}"))
for name, st in states.items():
    n = int(st["tokens"].sum())
    print(f"{name} pass: {n:,} counted positions in {st['seconds']:.0f} s")

# %% [markdown]
# Invariants first: no neuron fires on more tokens than were counted, and every permutation redistributes exactly
# the same firing events over the emotions.

# %%
for st in states.values():
    for t in ("act", "product"):
        assert (st[f"counts_{t}"].sum(0) <= st["tokens"].sum(0).view(-1, 1, 1)).all()
        for k in range(st["n_null"]):
            assert (st[f"null_{t}"][k].sum(0) == st[f"counts_{t}"].sum((0, 1))).all()
            assert int(st["null_tokens"][k].sum()) == int(st["tokens"].sum())
print("invariants hold")

# %% [markdown]
# ### The counting, in code
# On every layer, the recorder's hook hands the activation to this function: per batch row, how many counted tokens
# (the dialogue's own, never padding or the prompt) each neuron fires on, value $> 0$. The recorder then adds the
# rows to their emotion, half and permuted labels with one matrix product.

# %%
from emolib import checks
from emolib.identify import record

book.show_source(record.fired_per_row)

# %% [markdown]
# ### Exercise: the counting hook
# Write `make_counting_hook(counts, keep)`: it returns a forward hook for one layer's `mlp.act_fn` that adds to
# `counts` (one integer per neuron of the layer) how many positions with `keep` True (a `[batch, tokens]` mask) have
# an activation $> 0$. The check runs your hook on every layer of a tiny random Llama and compares its counts with
# a brute-force recount and with `emolib.identify.record`.


# %%
def make_counting_hook(counts, keep):
    """A forward hook for mlp.act_fn: counts [D] gets, per neuron, the kept positions (keep [B, T]) where it fires (>
    0)."""

    def hook(module, args, output):
        # BEGIN SOLUTION
        counts.add_((output[keep] > 0).sum(0))
        # END SOLUTION

    return hook


# %%
checks.check_counting_hook(make_counting_hook)
# %% [markdown]
# ## The paper's selection
# The run's own setting (`record_tensor`, `filter_quantile`, `assign`, `selection_scope`, `record_tokens`; by
# default LAPE's exact setting) makes the named set **`paper`**.

# %%
paper_state = states[P["record_tokens"]]
result = identify.select_all(paper_state, P)
per_emotion = {e: len(v) for e, v in result["sets"].items()}
print(
    f"selected {len(result['selected'])} of {L * D:,} neurons ({len(result['selected']) / (L * D):.2%}); "
    f"{result['n_eligible']:,} passed the filter (threshold P >= {result['threshold']:.3f})"
)
display(tables.row(per_emotion, "neurons per emotion"))
H = result["entropy"].numpy().ravel()
book.show(
    plots_identify.entropy_hist(H, neurons.summary_cutoff(result), result["eligible"].numpy().ravel(), LABEL),
    P,
    "02_entropy",
)

# %% [markdown]
# ### Entropy and selection, in code
# Steps 2-5 above as the book runs them: the probabilities, their entropy over emotions, and LAPE's pick of the
# lowest-entropy eligible neurons (`neurons.select` computes the threshold, calls it and assigns each neuron to its
# emotions).

# %%
book.show_source(neurons.probabilities, neurons.entropy, neurons.lowest_entropy)

# %% [markdown]
# ### Exercise: entropy
# Write `my_entropy(P)`: for firing probabilities `P` of shape `[emotions, layers, neurons]`, each neuron's entropy
# in nats over emotions, after normalising its probabilities to sum 1, with $0 \log 0 = 0$. The check compares it
# with hand-computed cases and with `emolib.identify.neurons.entropy`.

# %%
import torch


def my_entropy(P):
    """[L, D] entropy (nats) over emotions (dim 0) of each neuron's P normalised to sum 1; 0 log 0 = 0."""
    # BEGIN SOLUTION
    q = P / P.sum(0, keepdim=True)
    return -torch.where(q > 0, q * q.log(), torch.zeros_like(q)).sum(0)
    # END SOLUTION


# %%
checks.check_entropy(my_entropy)

# %% [markdown]
# ### Exercise: LAPE's selection
# Write `my_select(P, top_rate, filter_quantile)`: the `(layer, index)` pairs of the `round(top_rate × L × D)`
# lowest-entropy neurons among those whose largest firing probability is at least the `filter_quantile` of all
# values of `P` (LAPE's filter). Use `neurons.entropy` or your own. The check compares it with
# `emolib.identify.neurons.select`
# on a small table that contains rarely firing, single-emotion neurons.


# %%
def my_select(P, top_rate, filter_quantile):
    """The (layer, index) pairs of the top_rate x L x D lowest-entropy neurons that pass LAPE's filter."""
    # BEGIN SOLUTION
    E, L, D = P.shape
    H = neurons.entropy(P)
    thr = torch.quantile(P.flatten().float(), filter_quantile)
    eligible = torch.isfinite(H) & (P.max(0).values >= thr)
    k = max(1, round(top_rate * L * D))
    ranked = torch.argsort(torch.where(eligible, H, torch.inf).flatten(), stable=True)
    return [divmod(int(u), D) for u in ranked[: min(k, int(eligible.sum()))]]
    # END SOLUTION


# %%
checks.check_selection(my_select)
# %% [markdown]
# ## Are the selected neurons selective?
# For each neuron, **selectivity** is the ratio of its highest to its lowest firing probability across emotions
# (the lowest floored at one token's worth, so a neuron silent for one emotion has a finite ratio): 1 means no
# preference at all. Below, the selected neurons against the pool they were chosen from (the eligible neurons) and
# against what the same procedure selects under the label permutations.

# %%
ratio = neurons.selectivity(result["P"], paper_state["tokens"].sum(0))
sel_idx = [(l, i) for l, i, _ in result["selected"]]
null_ratios = []
for k in range(paper_state["n_null"]):
    r = identify.select_variant(paper_state, identify.paper_settings(P), P["top_rate"], P["min_count"], null=k)
    rk = neurons.selectivity(r["P"], paper_state["null_tokens"][k])
    null_ratios += [float(rk[l, i]) for l, i, _ in r["selected"]]
groups = {
    "selected (paper)": [float(ratio[l, i]) for l, i in sel_idx],
    "eligible pool": ratio[result["eligible"]].numpy(),
    "selected under the null (all permutations)": null_ratios,
}
book.show(plots_identify.selectivity_distributions(groups, LABEL), P, "02_selectivity")
served = identify.emotions_per_neuron(result)
display(
    tables.row(
        {f"{k} emotion{'s' * (k > 1)}": v for k, v in served.items()},
        "selected neurons",
        caption="Selected neurons by the number of emotions each is assigned to",
    )
)

# %% [markdown]
# ## Every faithful variant, from the same recordings
# The method leaves choices open: which tensor (`act` or `product`), which tokens (every dialogue token, or the
# prompt's answer position), LAPE's filter or none (then a `min_count` floor: a rebuild that ranks never- and
# rarely-firing neurons first selects neurons that fired a handful of times in one emotion, whose zero entropy is
# noise; the floor and the null keep the book from doing that), threshold or argmax assignment, and a global or
# per-emotion top-k. Each row below is one variant: how many it selects, how selective they are against what the
# null selects, whether it beats the null (p of its entropy cut-off against the permuted cut-offs, expected false
# selections, empirical FDR), its split-half stability against the chance overlap within its eligible pool, and its
# share of neurons in the bottom / middle / top third of the depth.

# %%
table, results, nulls = identify.evaluate_variants(states, P)
shown = table.assign(
    **{
        "selectivity (null)": [
            f"{a:.2f}x ({b:.2f}x)" for a, b in zip(table.median_selectivity, table.null_selectivity)
        ],
        "jaccard (chance)": [f"{a:.2f} ({b:.3f})" for a, b in zip(table.jaccard, table.jaccard_chance)],
    }
)
display(
    tables.narrow(
        shown,
        ["n_selected", "selectivity (null)", "p_cutoff", "fdr", "jaccard (chance)", "beats_null", "stable"],
        {"p_cutoff": "{:.3f}", "fdr": "{:.3f}"},
        csv="variants.csv",
        index=True,
    )
)
display(
    Markdown(
        f"With {P['n_null']} permutations the smallest possible `p_cutoff` is 1/{P['n_null'] + 1} ≈ "
        f"{1 / (P['n_null'] + 1):.3f}. Rules: beats the null when p_cutoff < {identify.ALPHA:g} and fdr ≤ "
        f"{identify.ALPHA:g}; stable when jaccard ≥ {identify.STABLE_FACTOR:g}× chance. "
        f"{int(table.beats_null.sum())} of {len(table)} variants beat the null and "
        f"{int(table.stable.sum())} are stable; each variant's depth shares are in the CSV."
    )
)
book.show(plots_identify.null_cutoffs(table, nulls, LABEL), P, "02_null")

# %% [markdown]
# How to read it: each row is a variant, named by its tensor, tokens, filter, assignment and scope (those columns,
# and the eligible pool, are in `variants.csv`). **p_cutoff** is the share of permutations (plus one) whose cut-off
# is as low as the real one, so it cannot go below 1/(`n_null` + 1) (printed above). **expected_false** is the mean
# number of neurons the
# null puts below the real cut-off, so **fdr** = expected_false / n_selected. A variant **beats the null** when both
# p_cutoff and fdr are below a fixed level, and is **stable** when its split-half Jaccard is a fixed multiple of the
# chance level (both rules are printed under the table).
# With thousands of tokens per emotion, tiny differences in firing rate are real, so beating the null is necessary
# but weak: the effect size is the selectivity, and notebook 03 tests whether the neurons matter causally.
#
# A caution on the `answer` variants: they read the position where the model is about to name the emotion, so a
# neuron selective there may encode the label the model is about to say rather than the emotion of the dialogue.
# Masking such neurons in notebook 03's classification task is close to masking the answer itself; an effect of
# them is weaker evidence of emotion processing than an effect of neurons selected on the dialogue's own tokens.

# %% [markdown]
# ## The named sets for stages 3 and 4
# `paper` is the run's setting. The second set, `selective`, is the variant named by `selective_variant`; with
# `auto` it is chosen by a rule fixed before looking: among the other variants that beat the null and are stable,
# the one with the highest median selectivity.

# %%
chosen, why = identify.choose_selective(table, P["selective_variant"])
path = identify.save_neurons(P, states, results, nulls, table, chosen, why)
print(f"selective set: {chosen or 'none'} ({why})")
print(f"saved {path}, variants.csv, neuron_diagnostics.csv and probabilities.safetensors")
for name in neurons.set_names(path):
    ns = neurons.load(path, name)
    print(f"{name:<10} " + ", ".join(f"{e} {len(v)}" for e, v in ns.sets.items()))

# %% [markdown]
# ## How often do the named sets fire? Emotion-specific or always on
# The entropy ranking picks neurons whose firing is spread least evenly over the emotions, but says nothing about
# how often they fire. A neuron that fires on 90% of anger tokens and 86% of every other emotion's has a low
# entropy, yet it is closer to always on than to an anger neuron. Per named set: the mean firing probability of each
# emotion's neurons on the tokens of each emotion, and a summary (the lowest and highest rate of the set's union
# over the emotions' tokens, and how much more its emotion sets fire on their own emotion than on the others).

# %%
from emolib.identify import rates

stage2_sets = {n: neurons.load(path, n) for n in neurons.set_names(path) if n not in neurons.CONTROL_SETS}
settings = {
    n: s.meta["named_sets"][n].get("settings") or s.meta["named_sets"]["paper"]["settings"]
    for n, s in stage2_sets.items()
}
rate_table = rates.summary(P["run_dir"], stage2_sets, settings)
display(
    rate_table.style.format({"lowest rate": "{:.0%}", "highest rate": "{:.0%}", "own/other rate": "{:.2f}"}).hide(
        axis="index"
    )
)
book.show(
    plots_identify.set_rates(
        {n: rates.set_rates(rates.probabilities(P["run_dir"], settings[n]), s) for n, s in stage2_sets.items()}, LABEL
    ),
    P,
    "02_set_rates",
)
display(Markdown(" ".join(rates.lines(rate_table))))

# %% [markdown]
# ## A second method: emotion directions and per-neuron contributions
# Wang et al. (2025, "Do LLMs 'Feel'? Emotion Circuits Discovery and Control") look for neurons that **push the
# hidden state towards an emotion**, not neurons that fire differently. In the same recording pass:
#
# 1. Per layer, each emotion's **direction**: its mean vector (`direction_site`: the residual stream after the
#    layer, or the MLP output; at `direction_tokens`) minus the mean over the emotions of the same topic, averaged
#    over topics, so that shared content cancels. The template generator writes every topic in all six emotions
#    (the paper's matched scenarios); a topic with a single emotion (EmoPrism data) is centred globally instead.
#    Normalised to unit length.
# 2. Per FFN neuron $i$ of layer $l$ and emotion $e$, its **contribution**: the mean over $e$'s tokens of
#    $\mathrm{act}_i \times (W_{down}[:, i] \cdot d_e^l)$, with act the input of `down_proj` (post-gate).
# 3. The named set **`directions`**: per emotion, its top contributions, **as many as the `paper` set has for that
#    emotion**, so stages 3 and 4 compare the two methods at equal size. Its random sets are matched like the
#    `paper` set's.
#
# The null: the same directions and contributions from the `n_null` label permutations, counted in the same pass.

# %%
if "directions" in neurons.set_names(path):
    dstate = states[P["direction_tokens"]]
    dentry = neurons.load(path, "directions").meta["named_sets"]["directions"]
    E = state["emotions"]
    print(
        f"directions at the {dentry['method']['site']} stream, {dentry['method']['tokens']} tokens; "
        f"{dentry['n_selected']} neurons: " + ", ".join(f"{e} {len(v)}" for e, v in dentry["neurons"].items())
    )
    book.show(
        plots_identify.direction_cosines(directions.cosines(dstate["dir_unit"]).numpy(), E, LABEL),
        P,
        "02_direction_cosines",
    )
    book.show(
        plots_identify.direction_stability(
            directions.half_cosines(dstate).numpy(), directions.null_cosines(dstate).numpy(), E, LABEL
        ),
        P,
        "02_direction_stability",
    )
    display(
        pd.DataFrame(dentry["split_half"])
        .set_index("emotion")
        .style.format(
            {"cosine_mean": "{:.2f}", "cosine_min": "{:.2f}", "jaccard": "{:.2f}", "random_jaccard": "{:.4f}"}
        )
    )
    if dentry["null"].get("n_null"):
        book.show(plots_identify.contribution_null(dentry["null"], E, LABEL), P, "02_direction_null")
else:
    dentry = None
    print("find_directions: false, so this run has no directions set")

# %% [markdown]
# ## The two methods head to head
# Per emotion, the neurons the entropy method (`paper`) and the contribution method (`directions`) share, against
# random sets of the same sizes among all neurons; and where each set sits in depth. Their overlap with the
# `attribution` positive control and their causal results side by side come after stages 3 and 4 (notebook 05).

# %%
if dentry is not None:
    two = {n: neurons.load(path, n) for n in ("paper", "directions")}
    methods = headtohead.overlap(two["paper"], two["directions"], seed=P["seed"])
    display(methods.style.format({"jaccard": "{:.3f}", "chance jaccard": "{:.4f}", "x chance": "{:.1f}"}))
    book.show(plots_identify.depth_vs_pool(headtohead.depth_shares(two), LABEL), P, "02_methods_depth")

# %% [markdown]
# ## Where are they? Depth against the right baseline
# The share of each named set's neurons in every layer, at relative depth $(l + 0.5)/L$, beside the share of the
# pool they were selected from and of all neurons (a flat line). A set that merely follows its eligible pool says
# nothing about where emotion lives; what differs from the pool does.

# %%
names = ["paper"] + ([chosen] if chosen and chosen != "paper" else [])
depth = identify.depth_table(results, names, L)
book.show(plots_identify.depth_vs_pool(depth, LABEL), P, "02_depth")
table_layers = identify.counts_table(result, state["emotions"], L)
book.show(plots_identify.layer_heatmap(table_layers, LABEL), P, "02_layer_heatmap")

# %% [markdown]
# ## Do emotions share neurons?
# With threshold assignment a neuron may serve several emotions; the off-diagonal cells count those shared.

# %%
overlap = identify.overlap_table(result["sets"], state["emotions"])
book.show(plots_identify.overlap_heatmap(overlap, LABEL), P, "02_overlap")

# %% [markdown]
# ## Activation profiles
# Firing probability per emotion of the lowest-entropy neuron picked for each emotion, in the `paper` set and (if
# there is one) in the `selective` set.

# %%
for name in names:
    r = results[name]
    Pm = r["P"].numpy()
    book.show(
        plots_identify.activation_profiles(
            Pm,
            identify.profile_picks(r, state["emotions"]),
            state["emotions"],
            f"{LABEL} · set {name}",
            identify.picked_for(r, state["emotions"]),
        ),
        P,
        f"02_profiles_{name}",
    )

# %% [markdown]
# ## Is the `paper` selection stable?
# Select again on each of two disjoint halves of the train split and compare the two sets per emotion (Jaccard),
# against two random sets of the same sizes drawn from the **eligible pool** (the neurons the selection could
# have picked; drawing from all neurons would make chance look far smaller than it is).

# %%
stab = identify.stability(paper_state, P, result=result)
display(stab.style.format({"jaccard": "{:.2f}", "random_jaccard": "{:.3f}", "random_jaccard_all_neurons": "{:.4f}"}))
book.show(plots_identify.stability_bars(stab, LABEL), P, "02_stability")

# %% [markdown]
# ## What this run shows
# Generated from the tables above.

# %%
findings.show(P["run_dir"], "02")

# %% [markdown]
# ## What a selected neuron looks like
# The sections above count neurons; here are a few of them. For the first neurons of each named set and emotion
# (five per set and emotion, ranked by the set's own criterion: the entropy for `paper` and `selective`, the
# contribution for `directions`), a **neuron card** shows what the neuron fires on and what it writes:
#
# - its firing rate per emotion (the share of each emotion's tokens on which it is $> 0$);
# - its **top contexts**: the train dialogues on which its largest activation is highest, each as a window of
#   tokens around that maximum, shaded by the activation (orange positive, blue negative), with the dialogue's
#   emotion; and the same view of a few **random** train dialogues (the same ones for every card), to show how
#   typical the top ones are;
# - the tokens its `down_proj` column promotes and suppresses most, read through the unembedding (first order, as
#   the `weights` control reads them).
#
# Which neurons get cards is known only after the selection, so the recording pass keeps, for every neuron, just
# its best few dialogues (their numbers and maxima); the dialogues the cards need are then read again, once. If the
# selected neurons are emotion neurons, their top contexts should come from their own emotion far more often than
# that emotion's share of the train dialogues. Below, one card per set, for the emotion with the most neurons in
# that set; every card is in `cards.json` and, on the site, on one page per set.

# %%
from IPython.display import HTML

from emolib.identify import cards
from emolib.report import cards as card_view

card_sets = cards.stage2_sets(results, chosen, states.get(P["direction_tokens"]) if dentry else None, path)
run_cards = cards.build(P, lm, tok, state, card_sets)
cards.save(P["run_dir"], run_cards)
print(
    f"{len(run_cards['cards'])} cards; {run_cards['dialogues_rerun']} of {run_cards['dialogues_total']} train "
    f"dialogues read again, in {run_cards['seconds']:.0f} s"
)
own = cards.own_share(run_cards)
display(own.style.format({"share": "{:.0%}", "chance share": "{:.0%}"}))
display(Markdown(card_view.share_sentence(own)))
sizes = {n: {e: len(v) for e, v in neurons.load(path, n).sets.items()} for n in run_cards["sets"]}
for card in cards.pick_shown(run_cards, sizes):
    display(HTML(card_view.card_html(card, run_cards)))
    display(Markdown(card_view.card_sentence(card, run_cards)))

# %% [markdown]
# ## Questions
# Answerable from this notebook (fastbook-style questionnaire).
# 1. Write out the five steps of LAPE's selection. Which step would select neurons that fired a handful of times in
#    one emotion if it were removed, and what does this notebook use instead when the filter is off?
# 2. Why does LAPE's filter behave differently for emotions than for languages? Use the entropy histogram of this run
#    in your answer.
# 3. What does the label-permutation null estimate, and why is beating it necessary but weak evidence that the neurons
#    encode emotion?
# 4. Why is split-half stability compared with random sets drawn from the eligible pool rather than from all neurons?
# 5. Why is a neuron selected at the `answer` position weaker evidence of emotion processing than one selected on the
#    dialogue's own tokens?
