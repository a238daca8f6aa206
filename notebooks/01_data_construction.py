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
# # 1 · Building an emotion dialogue dataset (EmoPrism, reproduced)
#
# [02 →](02_neuron_identification.ipynb)
#
# **Runtime:** in the findings box above.
#
# **What you will learn**
# - how EmoPrism was built: topics, synthesis of two-speaker dialogues, and a 3-of-4 vote on labels;
# - how this book rebuilds it offline (template dialogues, three small annotators) or at full quality through an
#   OpenAI-compatible server;
# - how to read annotator agreement: confusion matrices and Fleiss' kappa;
# - why the eval split must be independent of the studied model and of the train dialogues.
#
# **Prerequisites:** none: this is the first stage. Concepts: supervised labels, train/eval splits, inter-annotator
# agreement.
#
# **References.** Lee et al., [Do Large Language Models Have “Emotion
# Neurons”?](https://aclanthology.org/2025.findings-acl.806/) (Findings of ACL 2025) · LAPE: Tang et al.,
# [Language-Specific Neurons: The Key to Multilingual Capabilities in Large Language
# Models](https://arxiv.org/abs/2402.16438) (ACL 2024) · EmoPrism, the paper's dataset
# ([10kH/Emotion-Neuron](https://github.com/10kH/Emotion-Neuron), MIT code, CC-BY-4.0 data) · attribution patching:
# [Nanda 2023](https://www.neelnanda.io/mechanistic-interpretability/attribution-patching), Syed et al. 2023 ([arXiv
# 2310.10348](https://arxiv.org/abs/2310.10348)).
#
# Lee et al. (2025) needed text in which one emotion is unambiguous, so they built **EmoPrism**:
#
# 1. **Topics.** 315 base topics (from the FITS topic set) were paraphrased in four rounds into 5,040 topics.
# 2. **Synthesis.** For every topic and each of Ekman's six emotions (anger, disgust, fear, happiness, sadness,
#    surprise), GPT-4o-mini wrote 10 two-speaker dialogues (`A: ...` / `B: ...`): 302,400 dialogues.
# 3. **Labelling.** Three models (GPT-4o-mini, Gemini-1.5-Flash, Claude-3-Haiku) labelled every dialogue. With the
#    intended emotion (the *theme*) that makes four votes; a dialogue was kept when at least 3 agreed (293,725 kept).
#
# This notebook runs the same pipeline offline, at the scale the parameters choose. The topics are EmoPrism's own
# taxonomy. Dialogues come from a compositional **template** generator by default (or from any chat model,
# `data_source: hf`, or from the released EmoPrism file, `data_source: emoprism`). The three annotators are small
# models that install with the book: SmolLM2-135M-Instruct and Gemma-3-270M scoring each emotion word after a
# prompt (calibrated against a content-free input, since small models are biased towards some labels), and
# MiniLM as a nearest-prototype sentence classifier.
#
# To rebuild EmoPrism at full quality, dialogues and labels can come from large models behind any
# OpenAI-compatible server (vLLM, SGLang, llama.cpp, `transformers serve`, a hosted API): `data_source: openai`
# writes the dialogues through `endpoint_model`, and an annotator named `openai:<model>` labels through the same
# server (or its own, `annotator_endpoints`). `params/emoprism-rebuild.yaml` is EmoPrism's full design that way.

# %%
from collections import Counter

import pandas as pd
from IPython.display import Markdown, display

from emolib.dataset import annotate, build_data, data, endpoint
from emolib.report import book, plots_data, tables

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
annotator_few_shot = 0
data_source = "template"
data_path = None
topic_pool = "all"
n_topics = 40
dialogues_per_topic = 2
explicit_share = 0.5
synth_model = "smollm2-135m-instruct"
synth_max_new_tokens = 160
synth_retries = 2
annotators = ["smollm2-135m-instruct", "gemma3-270m", "minilm"]
endpoint_base_url = "http://127.0.0.1:8000/v1"
endpoint_model = None
endpoint_api_key_env = None
endpoint_max_concurrency = 8
endpoint_temperature = 0.7
endpoint_max_tokens = 1024
endpoint_request_timeout = 120.0
endpoint_max_retries = 6
endpoint_malformed_retries = 2
annotator_endpoints = {}
min_agreement = 3
eval_fraction = 0.4
max_per_emotion = None
eval_exclude_studied = True
eval_source = "split"
eval_path = None
run_dir = None

# %%
P = book.setup(globals(), "01")
LABEL = book.run_title(P)

# %% [markdown]
# ## Topics
# EmoPrism's taxonomy ships with `emolib` (MIT, © 2025 Woojin Lee and contributors). A seeded sample of it is the
# run's topic list.

# %%
base, everything = data.load_topics("base"), data.load_topics("all")
print(f"{len(base)} base topics, {len(everything)} topics in all ({len(set(everything))} distinct strings)")
if P["data_source"] != "emoprism":
    topics = data.sample_topics(P["topic_pool"], P["n_topics"], P["seed"])
    print(f"{len(topics)} topics sampled from the '{P['topic_pool']}' pool, e.g.:", "; ".join(topics[:8]))

# %% [markdown]
# ## Endpoints (large models behind an OpenAI-compatible server)
# Used only with `data_source: openai` or an `openai:<model>` annotator; the cell below says whether this run uses
# one, and if it does, shows the prompts sent and the servers.

# %%
if endpoint.uses_endpoints(P):
    display(Markdown(endpoint.HOW_IT_WORKS))
    for name in ("synthesis", "labelling"):
        display(Markdown(f"**{name}** (`emolib/data/endpoint-prompts/{name}.txt`)\n\n```\n{endpoint.prompt(name)}```"))
    display(
        pd.DataFrame(
            [
                {
                    "model": ep.model,
                    "server": ep.base_url,
                    "temperature": ep.temperature,
                    "max_tokens": ep.max_tokens,
                    "concurrent": ep.max_concurrency,
                    "key from": ep.api_key_env or "(none)",
                }
                for ep in endpoint.endpoints(P)
            ]
        ).style.hide(axis="index")
    )
else:
    display(
        Markdown(
            f"*This run uses no endpoint* (`data_source: {P['data_source']}`, local annotators "
            f"{', '.join(P['annotators'])}), so no prompt is sent anywhere and this section is skipped."
        )
    )

# %% [markdown]
# ## Synthesis, labelling and splitting
# One call runs the whole stage and caches each step on disk (dialogues, then each annotator's labels), so a
# re-run or an interrupted run does not redo finished work. The annotators' labels are cached per annotator and
# setting, and shared by the runs in one `outputs/` folder.

# %%
dd, df, stats = build_data.build(P)
display(tables.pairs(stats, "build step", "count", caption="What the build did"))
display(pd.DataFrame({s: {"rows": dd[s].num_rows, "columns": ", ".join(dd[s].column_names)} for s in dd}).T)

# %% [markdown]
# What the endpoints cost, when the run uses one: requests and tokens per model, summed over every reply in the
# endpoint cache (the cache of this `outputs/` folder, so builds that share it are counted once).

# %%
if endpoint.uses_endpoints(P):
    display(endpoint.usage(endpoint.cache_dir(P)).style.format(thousands=",").hide(axis="index"))
else:
    display(Markdown("*No endpoint was used, so nothing was paid for.*"))

# %% [markdown]
# ## What the dialogues look like
# One kept dialogue per emotion, with its style: *explicit* dialogues name the feeling, *implicit* ones convey it
# only through the situation and the reactions.

# %%
kept = df[df["kept"]]
for e in P["emotions"]:
    row = kept[kept["label"] == e].head(1)
    if len(row):
        r = row.iloc[0]
        display(Markdown(f"**{e}** · topic *{r['topic']}* · style {r['style']}\n\n```\n{r['dialogue']}\n```"))

# %% [markdown]
# ## How well do the annotators agree with the intended emotion?
# Each heatmap is one annotator's confusion matrix against the theme, row-normalised: a strong diagonal means
# the annotator recovers the intended emotion. Fleiss' kappa measures agreement among the four votes beyond chance
# (0 = chance, 1 = perfect).

# %%
if P["data_source"] != "emoprism":
    agree = build_data.agreement(df, P["annotators"])
    votes = df[["theme"] + P["annotators"]].values.tolist()
    kappa = annotate.fleiss_kappa(votes, P["emotions"])
    display(agree.style.format({"agreement_with_theme": "{:.1%}"}).hide(axis="index"))
    print(f"Fleiss' kappa over the four votes (theme + 3 annotators): {kappa:.3f}")
    best = agree.sort_values("agreement_with_theme").iloc[-1]
    print(f"Most faithful annotator: {best.annotator} ({best.agreement_with_theme:.0%} agreement with the theme).")
    book.show(plots_data.annotator_confusions(df, P["annotators"], P["emotions"], LABEL), P, "01_annotator_confusions")

# %% [markdown]
# ## Which dialogues survive the vote?
# A dialogue is kept when at least `min_agreement` of the four votes agree. Emotions whose dialogues the
# annotators find ambiguous lose more; the kept label can differ from the theme when three annotators outvote it.

# %%
if P["data_source"] != "emoprism":
    by_emotion = df.groupby("theme")["kept"].mean()
    print("kept fraction per theme:", ", ".join(f"{e} {by_emotion[e]:.0%}" for e in P["emotions"]))
    print(
        f"kept {df['kept'].sum()} of {len(df)} dialogues ({df['kept'].mean():.0%}); "
        f"{(kept['label'] != kept['theme']).sum()} kept with a label other than their theme"
    )
    by_style = df.groupby("style")["kept"].mean()
    print("kept fraction by style:", ", ".join(f"{s} {v:.0%}" for s, v in by_style.items()))
    book.show(plots_data.kept_fraction(df, P["emotions"], LABEL), P, "01_kept_fraction")

# %% [markdown]
# ## The final dataset
# The `train` split is used to find emotion neurons (notebook 02), the `eval` split only to test them (notebook
# 03). The split is by topic (seeded): every topic carries every emotion, so both splits are balanced by theme
# before the vote.

# %%
counts = {s: dict(Counter(dd[s]["label"])) for s in dd}
display(pd.DataFrame(counts).reindex(P["emotions"]).fillna(0).astype(int))
book.show(plots_data.split_counts(counts, LABEL), P, "01_split_counts")

# %% [markdown]
# ## Is the eval split independent?
# Notebook 03 tests the studied model on `eval`, so eval labels must not come from that model, and an eval dialogue
# must not be a paraphrase of a train dialogue. Topics are split first (`eval_fraction` of them go to eval), and
# the template generator draws each split's situations, reactions and follow-ups from its own part of the phrase
# tables. On eval items the vote leaves out any annotator that is the studied model (`eval_exclude_studied`) and
# keeps an item when the same share of the remaining votes agrees, rounded up: 3 of 4 becomes 3 of 3. The eval
# dialogues before the vote are saved too (`data/eval_unfiltered.jsonl`, labelled by their theme), so that notebook
# 03 can report its baseline on them.

# %%
display(build_data.eval_construction(df, P).style.hide(axis="index"))

# %%
book.show(plots_data.length_distribution(kept, LABEL), P, "01_lengths")

# %% [markdown]
# The dataset is saved with `DatasetDict.save_to_disk` under `<run>/data/`, with a dataset card beside it.

# %%
card = open(f"{P['run_dir']}/data/README.md").read()
display(Markdown(card.replace("# Emotion dialogues", "#### Emotion dialogues", 1)))

# %% [markdown]
# ## Questions
# Answerable from this notebook (fastbook-style questionnaire).
# 1. EmoPrism keeps a dialogue when at least 3 of 4 votes agree. Which four votes, and what does the kept fraction per
#    theme in this run say about which emotions the annotators find ambiguous?
# 2. Why are *implicit* dialogues kept less often than *explicit* ones, and what would a dataset of only explicit
#    dialogues let a neuron get away with?
# 3. Why does the vote on eval items leave out an annotator that is the studied model, and why is the split made by
#    topic rather than by dialogue?
# 4. Fleiss' kappa and the per-annotator agreement with the theme measure different things. Which one would you report
#    to argue that the labels are trustworthy, and why?
# 5. Why are the small annotators' label scores calibrated against a content-free input?
