"""Parameter sets: the schema every notebook shares, YAML loading and validation before any model loads."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .emotions import EMOTIONS, normalize

ALL = ("01", "02", "03", "04")
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
    "dtype": Param("auto", ALL, "choice", "weights dtype; auto = bfloat16 on GPU, float32 on CPU",
                   choices=("auto", "float32", "bfloat16", "float16")),
    "device": Param("auto", ALL, "str", "auto, cpu, cuda, cuda:N or mps"),
    "device_map": Param(None, ALL, "str", "accelerate device_map (e.g. auto) for models larger than one GPU",
                        nullable=True),
    "seed": Param(0, ALL, "int", "seed for sampling, splits and random controls", low=0),
    "batch_size": Param(16, ALL, "int", "sequences per forward pass", low=1),
    "emotions": Param(list(EMOTIONS), ALL, "emotions", "emotions studied (joy = happiness)"),
    # --- classification prompt (annotators, framing, ablation)
    "prompt_style": Param("auto", CLASSIFY, "choice", "chat = chat template, plain = text prompt, auto = chat if "
                          "the tokenizer has a template", choices=("auto", "chat", "plain")),
    "prompt_template": Param(None, CLASSIFY, "str", "custom prompt with a {dialogue} slot (and {labels})",
                             nullable=True),
    "few_shot": Param(0, CLASSIFY, "int", "worked examples (one per emotion, cycled) shown before the dialogue",
                      low=0, high=12),
    "calibrate": Param(True, CLASSIFY, "bool", "subtract the label scores of a content-free input"),
    "annotator_few_shot": Param(0, ("01",), "int", "worked examples shown to base-model annotators (instruct "
                                "annotators are prompted zero-shot through their chat template)", low=0, high=12),
    # --- 01 data construction
    "data_source": Param("template", ("01",), "choice", "where dialogues come from",
                         choices=("template", "hf", "emoprism")),
    "data_path": Param(None, ("01",), "path", "emoprism.json(.gz) for data_source: emoprism", nullable=True),
    "topic_pool": Param("all", ("01",), "choice", "sample from the 315 base topics or all 5,040",
                        choices=("base", "all")),
    "n_topics": Param(40, ("01",), "int", "topics sampled", low=1, high=5040),
    "dialogues_per_topic": Param(2, ("01",), "int", "dialogues per topic and emotion", low=1, high=50),
    "explicit_share": Param(0.5, ("01",), "float", "share of template dialogues that name the emotion",
                            low=0.0, high=1.0),
    "synth_model": Param("smollm2-135m-instruct", ("01",), "model", "chat model that writes dialogues (hf)"),
    "synth_max_new_tokens": Param(160, ("01",), "int", "generation budget per dialogue (hf)", low=16),
    "synth_retries": Param(2, ("01",), "int", "retries for outputs not in A:/B: format (hf)", low=0),
    "annotators": Param(["smollm2-135m-instruct", "gemma3-270m", "minilm"], ("01",), "list[str]",
                        "three labelling models: model specs or 'minilm'"),
    "min_agreement": Param(3, ("01",), "int", "votes (of theme + annotators) that must agree to keep a dialogue",
                           low=1, high=4),
    "eval_fraction": Param(0.4, ("01",), "float", "share of kept dialogues in the eval split",
                           low=0.0, high=1.0, low_open=True),
    "max_per_emotion": Param(None, ("01",), "int", "cap on kept dialogues per emotion (stratified sample)",
                             low=2, nullable=True),
    # --- 02 identification
    "record_tensor": Param("act", ("02",), "choice", "act = act_fn(gate_proj(x)); product = input of down_proj",
                           choices=("act", "product")),
    "record_tokens": Param("dialogue", ("02",), "choice", "count every dialogue token, or the last one only",
                           choices=("dialogue", "last")),
    "record_framing": Param("raw", ("02",), "choice", "feed the raw dialogue, or the dialogue inside the "
                            "classification prompt", choices=("raw", "prompt")),
    "top_rate": Param(0.01, ("02",), "float", "share of all neurons selected", low=0.0, high=1.0, low_open=True),
    "filter_quantile": Param(0.95, ("02",), "float", "keep neurons whose max P reaches this quantile of all P "
                             "(null = no filter)", low=0.0, high=1.0, nullable=True),
    "assign": Param("threshold", ("02",), "choice", "assign a neuron to every emotion over the threshold, or to "
                    "its argmax", choices=("threshold", "argmax")),
    # --- 03 ablation
    "protocol": Param("score", ("03", "04"), "choice", "score label likelihoods, or generate and parse",
                      choices=("score", "generate")),
    "max_new_tokens": Param(4, ("03", "04"), "int", "tokens generated (generate protocol)", low=1),
    "ablation_modes": Param(["zero"], ("03",), "list[str]", "zero, mean and/or scale",
                            extra={"choices": ("zero", "mean", "scale")}),
    "ablation_scale": Param(0.5, ("03",), "float", "factor for mode scale", low=0.0, high=10.0),
    "n_random_seeds": Param(3, ("03",), "int", "random neuron sets per emotion (matched per layer)", low=0),
    "eval_limit": Param(None, ("03",), "int", "cap on eval dialogues per emotion", low=1, nullable=True),
    "n_bootstrap": Param(1000, ("03",), "int", "bootstrap resamples for 95% intervals", low=0),
    # --- 04 layer analysis
    "layer_bins": Param(3, ("04",), "int", "equal depth ranges (bottom/middle/top for 3)", low=1, high=12),
    "sweep_top_rates": Param([0.01, 0.03, 0.05], ("04",), "list[float]", "re-selection rates (reading a)",
                             extra={"low": 0.0, "high": 1.0}),
    "sweep_fractions": Param([0.2, 0.6, 1.0], ("04",), "list[float]", "fractions of own neurons masked (reading b)",
                             extra={"low": 0.0, "high": 1.0}),
    "sweep_eval_per_emotion": Param(20, ("04",), "int", "eval dialogues per emotion in the sweep", low=1),
    "sweep_random_seeds": Param(1, ("04",), "int", "matched random sets per sweep cell", low=0),
}

RUN_KEYS = ("run_dir",)  # injected by the runner, not written in parameter files


def _fail(source: str, key: str, msg: str) -> None:
    raise ParamError(f"{source}: '{key}' {msg}")


def _check_number(source: str, key: str, value: Any, p: Param, as_int: bool, low=None, high=None) -> Any:
    low = p.low if low is None else low
    high = p.high if high is None else high
    ok_type = isinstance(value, int) if as_int else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type:
        _fail(source, key, f"must be {'an integer' if as_int else 'a number'}, got {value!r}")
    if low is not None and (value < low or (p.low_open and value <= low)):
        _fail(source, key, f"must be {'>' if p.low_open else '>='} {low}" + (f" and <= {high}" if high is not None
                                                                          else "") + f", got {value!r}")
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
            from .models import check_model_spec
            try:
                check_model_spec(value)
            except ValueError as e:
                _fail(source, key, str(e))
        if p.kind == "path" and not Path(value).expanduser().exists():
            _fail(source, key, f"names a file that does not exist: {value}")
        if key == "device" and not (value in ("auto", "cpu", "cuda", "mps") or value.startswith("cuda:")):
            _fail(source, key, f"must be auto, cpu, cuda, cuda:N or mps, got {value!r}")
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
                    _fail(source, key, f"must name exactly three annotators (models or 'minilm'), got {len(value)}")
                from .models import check_model_spec
                for v in value:
                    if v != "minilm":
                        try:
                            check_model_spec(v)
                        except ValueError as e:
                            _fail(source, key, str(e))
            return list(value)
        return [_check_number(source, key, v, p, False, p.extra.get("low"), p.extra.get("high")) for v in value]
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
            out[key] = value
            continue
        out[key] = check_value(key, value, source)
    if out["data_source"] == "emoprism" and not out["data_path"]:
        _fail(source, "data_path", "is required when data_source is emoprism (path to emoprism.json or .json.gz)")
    if out["data_source"] == "emoprism" and out["data_path"] and not str(out["data_path"]).endswith((".json", ".json.gz")):
        _fail(source, "data_path", f"must end in .json or .json.gz, got {out['data_path']!r}")
    if out["data_source"] != "emoprism" and out["data_path"]:
        _fail(source, "data_path", "is only used with data_source: emoprism")
    if not out["run_name"].replace("-", "").replace("_", "").replace(".", "").isalnum():
        _fail(source, "run_name", f"must use letters, digits, '-', '_' or '.', got {out['run_name']!r}")
    if out["prompt_template"] is not None and "{dialogue}" not in out["prompt_template"]:
        _fail(source, "prompt_template", "must contain a {dialogue} slot")
    return out


def load(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML parameter file and validate it; errors name the file and the key."""
    path = Path(path)
    if not path.exists():
        raise ParamError(f"{path}: parameter file not found")
    with open(path) as f:
        raw = yaml.safe_load(f) or {}
    return validate(raw, str(path))


def for_notebook(p: dict[str, Any], notebook: str) -> dict[str, Any]:
    """The subset of a validated parameter set that one notebook takes."""
    return {k: v for k, v in p.items() if k in SCHEMA and notebook in SCHEMA[k].notebooks}


def from_namespace(ns: dict[str, Any], notebook: str) -> dict[str, Any]:
    """Collect and validate a notebook's parameters from its globals (after papermill injected them)."""
    raw = {k: ns[k] for k in defaults(notebook) if k in ns}
    p = validate(raw, f"notebook {notebook}")
    p = for_notebook(p, notebook)
    p["run_dir"] = ns.get("run_dir") or f"outputs/{p['run_name']}"
    return p
