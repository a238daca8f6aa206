"""The emotion-classification prompt, split around the dialogue so its prefix can be computed once."""

from __future__ import annotations

import random
from dataclasses import dataclass

SLOT = "\x00DIALOGUE\x00"
INSTRUCTION = "Read the dialogue and name the emotion it expresses. Choose one of: {labels}."
ANSWER = "Emotion:"
CONTENT_FREE = "A: N/A\nB: N/A"
FEW_SHOT_TOPIC = "weekend plans"


@dataclass(frozen=True)
class PromptParts:
    """Token ids of a prompt around its dialogue: prefix + dialogue + suffix, then a label."""

    prefix: list[int]
    suffix: list[int]
    labels: list[list[int]]
    label_names: list[str]
    chat: bool


def few_shot_block(k: int, emotions: list[str], seed: int = 1234) -> str:
    """k worked examples (emotions cycled), written by the template generator on a fixed topic from the train
    pool of situations and reactions (never the eval pool, so no eval dialogue is paraphrased in the prompt)."""
    from .synth_template import generate_dialogue

    rng = random.Random(seed)
    out = []
    for i in range(k):
        emotion = emotions[i % len(emotions)]
        d = generate_dialogue(FEW_SHOT_TOPIC, emotion, rng, "implicit" if i % 2 else "explicit", split="train")
        out.append(f"Dialogue:\n{d}\n{ANSWER} {emotion}\n\n")
    return "".join(out)


def render(
    tokenizer, emotions: list[str], chat: bool, few_shot: int = 0, template: str | None = None, dialogue: str = SLOT
) -> str:
    """The full prompt text for one dialogue (with the SLOT marker by default), ending just before the label."""
    labels = ", ".join(emotions)
    shots = few_shot_block(few_shot, emotions) if few_shot else ""
    if template:
        body = template.replace("{labels}", labels).replace("{dialogue}", dialogue)
        body = shots + body
    else:
        body = INSTRUCTION.format(labels=labels) + "\n\n" + shots + f"Dialogue:\n{dialogue}\n"
    if chat:
        msgs = [{"role": "user", "content": body + ("" if template else "\nAnswer with one word.")}]
        text = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        return text + ANSWER
    return body + ("" if template else ANSWER)


def build(tokenizer, emotions: list[str], chat: bool, few_shot: int = 0, template: str | None = None) -> PromptParts:
    """Tokenise the prompt's prefix and suffix around the dialogue slot, and each label word."""
    text = render(tokenizer, emotions, chat, few_shot, template)
    prefix, suffix = text.split(SLOT)
    prefix_ids = tokenizer(prefix, add_special_tokens=not chat)["input_ids"]
    if not prefix_ids:
        prefix_ids = [tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id]
    suffix_ids = tokenizer(suffix, add_special_tokens=False)["input_ids"]
    labels = [tokenizer(" " + e, add_special_tokens=False)["input_ids"] for e in emotions]
    return PromptParts(prefix_ids, suffix_ids, labels, list(emotions), chat)


CHARS_PER_TOKEN_MAX = 64  # with max_tokens, only a dialogue's last max_tokens * 64 characters are tokenised


def fit_dialogue(tokenizer, dialogue: str, max_tokens: int) -> tuple[list[int], bool]:
    """A dialogue's token ids cut from the left to at most max_tokens (its end kept), and whether it was cut."""
    chars = max_tokens * CHARS_PER_TOKEN_MAX
    ids = tokenizer(dialogue[-chars:], add_special_tokens=False)["input_ids"]
    return ids[-max_tokens:], len(dialogue) > chars or len(ids) > max_tokens


def encode_dialogue(tokenizer, dialogue: str, max_tokens: int | None = None) -> list[int]:
    """Token ids of a dialogue alone (no special tokens), as placed in the prompt's slot; with max_tokens, at most
    that many, cut from the left so that the dialogue's end is kept."""
    if max_tokens is None:
        return tokenizer(dialogue, add_special_tokens=False)["input_ids"]
    return fit_dialogue(tokenizer, dialogue, max_tokens)[0]


def use_chat(prompt_style: str, instruct: bool, tokenizer) -> bool:
    """Resolve prompt_style (auto/chat/plain) for a model."""
    if prompt_style == "chat":
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("prompt_style: chat needs a tokenizer with a chat template; use plain or auto")
        return True
    if prompt_style == "plain":
        return False
    return instruct and bool(getattr(tokenizer, "chat_template", None))
