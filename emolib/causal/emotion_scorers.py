"""Stage 5's scorers, which read the emotion of the continuations and are never the steered model: another LM's
calibrated label scores (auto: the other embedded model, SmolLM2 <-> Gemma-3) and MiniLM's prototype similarities,
each giving [N, emotions] probabilities."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..params import same_model

MINILM_TAU = 0.05  # temperature turning MiniLM's cosine similarities into label probabilities
OTHER_SCORER = {"smollm2-135m-instruct": "gemma3-270m", "gemma3-270m": "smollm2-135m-instruct"}
FALLBACK_SCORER = "smollm2-135m-instruct"


def resolve_scorer(model: str, scorer: str) -> str | None:
    """The LM label scorer's spec: auto = the other embedded model (SmolLM2 <-> Gemma-3), none = MiniLM only."""
    if scorer == "none":
        return None
    spec = OTHER_SCORER.get(model, FALLBACK_SCORER) if scorer == "auto" else scorer
    if scorer == "auto" and same_model(spec, model):
        spec = "gemma3-270m"
    check_scorer(model, spec)
    return spec


def check_scorer(model: str, scorer: str) -> None:
    """A scorer must never be the steered model: one clear error otherwise."""
    if same_model(model, scorer):
        raise ValueError(
            f"steer_scorer: {scorer!r} is the steered model; the emotion of its continuations must be "
            "read by another model (auto, none, or another model spec)"
        )


def softmax(x: np.ndarray, tau: float = 1.0) -> np.ndarray:
    """Row-wise softmax of x / tau."""
    z = np.asarray(x, dtype=float) / tau
    z = np.exp(z - z.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


def minilm_scorer(emotions: list[str]) -> Callable[[list[str]], np.ndarray]:
    """[N, emotions] probabilities from MiniLM's prototype similarities (softmax at MINILM_TAU)."""
    from ..dataset.annotate import minilm_similarities

    sims = minilm_similarities(emotions)
    return lambda texts: softmax(sims(texts), MINILM_TAU)


def lm_scorer(spec: str, emotions: list[str], p: dict, steered=None) -> Callable[[list[str]], np.ndarray]:
    """[N, emotions] probabilities from another LM's calibrated label scores (softmax over the labels); refuses the
    steered model (by spec, and by object when given)."""
    from ..lm import classify, models, prompts

    check_scorer(p["model"], spec)
    model, tok = models.load_model(spec, p["dtype"], p["device"], None, p["seed"])
    if steered is not None and model is steered:
        raise AssertionError("steering scorer: the scorer is the steered model object")
    chat = prompts.use_chat("auto", models.is_instruct(spec, tok), tok)
    clf = classify.make_classifier(model, tok, emotions, chat, 0, None, p["batch_size"], True)
    return lambda texts: softmax(classify.label_scores(clf, texts))


def load_scorers(p: dict, steered=None) -> dict[str, Callable[[list[str]], np.ndarray]]:
    """The scorers of the run: the other model's label scorer (first: the primary) and MiniLM."""
    out = {}
    spec = resolve_scorer(p["model"], p["steer_scorer"])
    if spec is not None:
        out[f"lm:{spec}"] = lm_scorer(spec, p["emotions"], p, steered)
    out["minilm"] = minilm_scorer(p["emotions"])
    return out
