"""Emotion classification with a causal LM: label log-likelihoods (score) or greedy decoding (generate)."""

from __future__ import annotations

import copy
import json
import re
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..progress import tqdm
from . import models, prompts
from .models import model_device


@dataclass
class Classifier:
    """A model, its tokenizer and the prompt parts it classifies with."""

    model: torch.nn.Module
    tokenizer: object
    parts: prompts.PromptParts
    batch_size: int = 16
    calibrate: bool = True
    prefix_cache: bool = True
    truncated: int = 0  # dialogues cut from the left to fit the model's context, over every call

    @property
    def labels(self) -> list[str]:
        """The label names, in score-column order."""
        return self.parts.label_names


def make_classifier(
    model,
    tokenizer,
    emotions: list[str],
    chat: bool,
    few_shot: int = 0,
    template: str | None = None,
    batch_size: int = 16,
    calibrate: bool = True,
) -> Classifier:
    """Build a Classifier with the prompt of the given style."""
    parts = prompts.build(tokenizer, emotions, chat, few_shot, template)
    return Classifier(model, tokenizer, parts, batch_size, calibrate)


def context_length(model) -> int | None:
    """The model's context in tokens (max_position_embeddings), or None when its config states none."""
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    n = getattr(cfg, "max_position_embeddings", None)
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else None


def dialogue_budget(clf: Classifier, reserve: int | None = None) -> int | None:
    """Tokens left for a dialogue in the model's context after the prompt's prefix and suffix and reserve tokens
    (default: the longest label); None when the model states no context."""
    n = context_length(clf.model)
    if n is None:
        return None
    parts = clf.parts
    reserve = max(len(lab) for lab in parts.labels) if reserve is None else reserve
    budget = n - len(parts.prefix) - len(parts.suffix) - reserve
    if budget < 1:
        raise ValueError(
            f"prompt_template / few_shot: the prompt without its dialogue takes "
            f"{n - budget} tokens, the model's whole context of {n}; shorten it"
        )
    return budget


def encode_dialogues(clf: Classifier, dialogues: list[str], reserve: int | None = None) -> list[list[int]]:
    """Each dialogue's token ids, cut from the left to fit the model's context (see dialogue_budget); cut dialogues
    are counted in clf.truncated, with a warning."""
    budget = dialogue_budget(clf, reserve)
    if budget is None:
        return [prompts.encode_dialogue(clf.tokenizer, d) for d in dialogues]
    fitted = [prompts.fit_dialogue(clf.tokenizer, d, budget) for d in dialogues]
    cut = sum(c for _, c in fitted)
    if cut:
        clf.truncated += cut
        warnings.warn(
            f"{cut} dialogue(s) longer than the model's context ({budget} tokens left for a dialogue) "
            "were cut from the left, keeping their end",
            stacklevel=3,
        )
    return [ids for ids, _ in fitted]


def cache_prefix(model, prefix: list[int]):
    """Key/value cache of the shared prompt prefix (batch of one)."""
    ids = torch.tensor([prefix], device=model_device(model))
    out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
    return out.cache


@contextmanager
def float32_readout(model):
    """Within the block, the output head computes its logits in float32 (a float32 copy of its weight, made once), so
    label scores and margins are not rounded to bfloat16's 1/16-nat steps; a no-op for float32 models."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None or not isinstance(head, torch.nn.Linear) or head.weight.dtype == torch.float32:
        yield
        return
    w32 = getattr(head, "_emolib_w32", None)
    if w32 is None or w32.device != head.weight.device or w32.is_inference():
        with torch.inference_mode(False):  # a normal tensor, usable where gradients are taken (attribution)
            head._emolib_w32 = head.weight.detach().float().clone()
            head._emolib_b32 = None if head.bias is None else head.bias.detach().float().clone()

    def hook(module, args, output):
        return torch.nn.functional.linear(args[0].float(), module._emolib_w32, module._emolib_b32)

    h = head.register_forward_hook(hook)
    try:
        yield
    finally:
        h.remove()


def score_batch(
    model, prefix: list[int], bodies: list[list[int]], labels: list[list[int]], pad_id: int, cache=None
) -> torch.Tensor:
    """Sum of label-token log-probs after prefix + body, for a batch; bodies are padded between prefix and body;
    the logits are computed in float32 (float32_readout)."""
    with float32_readout(model):
        return _score_batch_inner(model, prefix, bodies, labels, pad_id, cache).cpu()


def _score_batch_inner(
    model, prefix: list[int], bodies: list[list[int]], labels: list[list[int]], pad_id: int, cache=None
) -> torch.Tensor:
    """score_batch's work, in whatever precision the head computes."""
    dev = model_device(model)
    B, P = len(bodies), len(prefix)
    L = max(len(b) for b in bodies)
    ids = torch.full((B, L), pad_id, dtype=torch.long)
    mask = torch.zeros((B, L), dtype=torch.long)
    for i, b in enumerate(bodies):
        ids[i, L - len(b) :] = torch.tensor(b)
        mask[i, L - len(b) :] = 1
    pos = (P + mask.cumsum(1) - 1).clamp(min=P)
    full_mask = torch.cat([torch.ones((B, P), dtype=torch.long), mask], 1)
    ids, pos, full_mask = ids.to(dev), pos.to(dev), full_mask.to(dev)
    if cache is not None:
        past = copy.deepcopy(cache)
        past.batch_repeat_interleave(B)
        out = model(
            input_ids=ids, attention_mask=full_mask, position_ids=pos, cache=past, use_cache=True, logits_to_keep=1
        )
    else:
        pre = torch.tensor([prefix], device=dev).expand(B, P)
        pre_pos = torch.arange(P, device=dev).expand(B, P)
        out = model(
            input_ids=torch.cat([pre, ids], 1),
            attention_mask=full_mask,
            position_ids=torch.cat([pre_pos, pos], 1),
            use_cache=True,
            logits_to_keep=1,
        )
    first = torch.log_softmax(out.logits[:, -1].float(), -1)  # [B, V]
    n = len(labels)
    scores = torch.stack([first[:, lab[0]] for lab in labels], 1)  # [B, n]
    m = max(len(lab) for lab in labels)
    if m > 1:  # remaining tokens of multi-token labels, continuing every row's cache once per label
        past = out.cache
        past.batch_repeat_interleave(n)
        lab_ids = torch.full((n, m - 1), pad_id, dtype=torch.long)
        for j, lab in enumerate(labels):
            lab_ids[j, : len(lab) - 1] = torch.tensor(lab[:-1])
        lab_ids = lab_ids.repeat(B, 1).to(dev)
        last = pos[:, -1:].repeat_interleave(n, 0)
        lab_pos = last + 1 + torch.arange(m - 1, device=dev)
        lab_mask = torch.cat(
            [full_mask.repeat_interleave(n, 0), torch.ones((B * n, m - 1), dtype=torch.long, device=dev)], 1
        )
        out2 = model(input_ids=lab_ids, attention_mask=lab_mask, position_ids=lab_pos, cache=past)
        # rows = out.logits' rows (B, or more where a hook tiles the batch, as emolib.lm.batched does) x labels
        logp = torch.log_softmax(out2.logits.float(), -1).view(-1, n, m - 1, out2.logits.shape[-1])
        for j, lab in enumerate(labels):
            for t in range(1, len(lab)):
                scores[:, j] += logp[:, j, t - 1, lab[t]]
    return scores


@torch.inference_mode()
def calibration_vector(clf: Classifier) -> np.ndarray:
    """Label scores of the content-free dialogue, [labels]: the calibration to hold fixed (compute it unablated)."""
    tok, parts = clf.tokenizer, clf.parts
    free = prompts.encode_dialogue(tok, prompts.CONTENT_FREE) + parts.suffix
    cache = cache_prefix(clf.model, parts.prefix) if clf.prefix_cache else None
    return score_batch(clf.model, parts.prefix, [free], parts.labels, tok.pad_token_id, cache)[0].numpy()


@torch.inference_mode()
def label_scores(
    clf: Classifier, dialogues: list[str], progress: str | None = None, calibration: np.ndarray | None = None
) -> np.ndarray:
    """Log-likelihood of each label after each dialogue's prompt, [N, labels]; minus a given calibration vector
    (held fixed), else minus the content-free scores recomputed now if clf.calibrate, else raw."""
    tok, parts = clf.tokenizer, clf.parts
    bodies = [ids + parts.suffix for ids in encode_dialogues(clf, dialogues)]
    order = sorted(range(len(bodies)), key=lambda i: -len(bodies[i]))  # similar lengths batch together
    cache = cache_prefix(clf.model, parts.prefix) if clf.prefix_cache else None
    out = torch.zeros((len(bodies), len(parts.labels)))
    steps = range(0, len(order), clf.batch_size)
    for s in tqdm(steps, desc=progress, disable=progress is None, leave=False):
        idx = order[s : s + clf.batch_size]
        out[idx] = score_batch(clf.model, parts.prefix, [bodies[i] for i in idx], parts.labels, tok.pad_token_id, cache)
    if calibration is not None:
        out -= torch.as_tensor(np.asarray(calibration), dtype=out.dtype)
    elif clf.calibrate:
        free = prompts.encode_dialogue(tok, prompts.CONTENT_FREE) + parts.suffix
        out -= score_batch(clf.model, parts.prefix, [free], parts.labels, tok.pad_token_id, cache)[0]
    return out.numpy()


def parse_label(text: str, labels: list[str]) -> str | None:
    """First emotion word in a generated text (aliases such as joy included), or None."""
    from ..emotions import ALIASES

    words = {w: w for w in labels}
    words.update({a: c for a, c in ALIASES.items() if c in labels})
    for m in re.finditer(r"[a-zA-Z]+", text.lower()):
        if m.group(0) in words:
            return words[m.group(0)]
    return None


@torch.inference_mode()
def generate_labels(
    clf: Classifier, dialogues: list[str], max_new_tokens: int = 4, progress: str | None = None
) -> list[str | None]:
    """Greedy-decode a few tokens after each prompt; the first emotion word found is the prediction."""
    tok, parts, dev = clf.tokenizer, clf.parts, model_device(clf.model)
    seqs = [parts.prefix + ids + parts.suffix for ids in encode_dialogues(clf, dialogues, max_new_tokens)]
    preds: list[str | None] = [None] * len(seqs)
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
    for s in tqdm(range(0, len(order), clf.batch_size), desc=progress, disable=progress is None, leave=False):
        idx = order[s : s + clf.batch_size]
        L = max(len(seqs[i]) for i in idx)
        ids = torch.full((len(idx), L), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, i in enumerate(idx):
            ids[r, L - len(seqs[i]) :] = torch.tensor(seqs[i])
            mask[r, L - len(seqs[i]) :] = 1
        gen = clf.model.generate(
            input_ids=ids.to(dev),
            attention_mask=mask.to(dev),
            do_sample=False,
            max_new_tokens=max_new_tokens,
            pad_token_id=tok.pad_token_id,
        )
        for r, i in enumerate(idx):
            preds[i] = parse_label(tok.decode(gen[r, L:], skip_special_tokens=True), clf.labels)
    return preds


def predict(
    clf: Classifier,
    dialogues: list[str],
    protocol: str = "score",
    max_new_tokens: int = 4,
    progress: str | None = None,
    calibration: np.ndarray | None = None,
) -> tuple[list[str | None], np.ndarray | None]:
    """Predicted labels (None = no emotion word, counted wrong) and, for score, the label scores (calibration: as
    label_scores; margins come from these scores, see emolib.causal.stats.margin)."""
    if protocol == "score":
        s = label_scores(clf, dialogues, progress, calibration)
        return [clf.labels[j] for j in s.argmax(1)], s
    if protocol == "generate":
        return generate_labels(clf, dialogues, max_new_tokens, progress), None
    raise ValueError(f"protocol: must be score or generate, got {protocol!r}")


def load_classifier(p: dict):
    """(model, tokenizer, Classifier) for the run's model and prompt parameters."""
    model, tok = models.load_model(p["model"], p["dtype"], p["device"], p["device_map"], p["seed"])
    chat = prompts.use_chat(p["prompt_style"], models.is_instruct(p["model"], tok), tok)
    clf = make_classifier(
        model, tok, p["emotions"], chat, p["few_shot"], p["prompt_template"], p["batch_size"], p["calibrate"]
    )
    return model, tok, clf


class PredictionCache:
    """Predictions per condition, appended to a JSON-lines file as each condition finishes."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.base = self.path.parent.parent if self.path.parent.name == "cache" else None  # a linked cache/ refused
        self.rows: dict[str, list] = {}
        if self.path.exists():
            self._read()

    def _read(self) -> None:
        """Load the cached lines; a torn last line is dropped with a warning, any other bad line is an error."""
        import warnings

        from ..safeio import atomic_write_text, clear_hint

        try:
            lines = self.path.read_bytes().decode("utf-8").split("\n")
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(
                f"{self.path}: corrupt prediction cache ({type(e).__name__}); delete it to recompute "
                f"({clear_hint(self.path)})"
            ) from None
        good = []
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
                ok = isinstance(r, dict) and isinstance(r.get("key"), str) and isinstance(r.get("preds"), list)
            except json.JSONDecodeError:
                ok = False
            if not ok and not any(x.strip() for x in lines[n:]):  # the last line, cut short by an interruption
                warnings.warn(
                    f"{self.path}: line {n} is incomplete (an interrupted write); dropped, that condition "
                    "will be recomputed",
                    stacklevel=3,
                )
                atomic_write_text(self.path, "".join(x + "\n" for x in good), self.base)
                break
            if not ok:
                raise ValueError(
                    f"{self.path}: line {n} is corrupt; delete the file to recompute its predictions "
                    f"({clear_hint(self.path)})"
                )
            good.append(line)
            self.rows[r["key"]] = r["preds"]
        else:
            if good and lines[-1].strip():  # complete last line without its newline: end it before appending
                atomic_write_text(self.path, "".join(x + "\n" for x in good), self.base)

    def get_or_run(self, key: str, fn) -> list:
        """Cached predictions for key, or run fn() and append its result as one line in one write."""
        from ..safeio import append_line

        if key not in self.rows:
            self.rows[key] = fn()
            append_line(self.path, json.dumps({"key": key, "preds": self.rows[key]}), self.base)
        return self.rows[key]

    def put_many(self, rows: dict[str, list]) -> None:
        """Store many keys' predictions, appended as lines in one write."""
        from ..safeio import append_line

        new = {k: v for k, v in rows.items() if k not in self.rows}
        if new:
            self.rows.update(new)
            append_line(self.path, "\n".join(json.dumps({"key": k, "preds": v}) for k, v in new.items()), self.base)


def lm_voter(spec: str, emotions: list[str], p: dict) -> Callable[[list[str]], list[str]]:
    """An annotator's votes from a causal LM scoring each emotion word after the classification prompt (calibrated)."""
    model, tok = models.load_model(spec, p["dtype"], p["device"], p["device_map"], p["seed"])
    chat = prompts.use_chat(p["prompt_style"], models.is_instruct(spec, tok), tok)
    few_shot = 0 if chat else p["annotator_few_shot"]
    clf = make_classifier(model, tok, emotions, chat, few_shot, p["prompt_template"], p["batch_size"], p["calibrate"])
    return lambda dialogues: predict(clf, dialogues, "score")[0]
