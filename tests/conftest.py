"""Shared fixtures: the tiny random Llama (loaded once) and a few dialogues."""

import pytest
import torch

from emolib import models
from emolib.emotions import EMOTIONS
from emolib.synth_template import generate_dialogues


@pytest.fixture(scope="session")
def tiny():
    """(model, tokenizer) of the 4-layer random Llama, in float32."""
    model, tok = models.load_model("tiny-random-llama", dtype="float32", device="cpu")
    return model, tok


@pytest.fixture(scope="session")
def dialogues():
    """A dozen template dialogues of varied length, with their emotions."""
    rows = generate_dialogues(["cats", "knitting"], list(EMOTIONS), 1, 3)
    return [r["dialogue"] for r in rows], [r["theme"] for r in rows]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
