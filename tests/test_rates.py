"""Stage 2, told straight: how often a named set's neurons fire on each emotion's tokens, and the findings that say
when a set is near-saturated."""

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from emolib.identify import rates
from emolib.identify.neurons import NeuronSets

E = ["anger", "fear"]


def _ns(sets: dict) -> NeuronSets:
    return NeuronSets("tiny", 2, 4, E, sets, {}, "paper")


def _write(tmp_path, P: torch.Tensor):
    save_file({"dialogue_P_act": P.contiguous()}, str(tmp_path / rates.PROBABILITIES_FILE))
    return {"tokens": "dialogue", "tensor": "act"}


def test_set_rates_and_summary_by_hand(tmp_path):
    P = torch.zeros(2, 2, 4)
    P[0, 0, 1], P[1, 0, 1] = 0.9, 0.8  # (0, 1): anger's neuron, fires on most tokens of both
    P[0, 1, 2], P[1, 1, 2] = 0.7, 0.9  # (1, 2): fear's neuron
    settings = _write(tmp_path, P)
    ns = _ns({"anger": [[0, 1]], "fear": [[1, 2]]})
    t = rates.set_rates(rates.probabilities(tmp_path, settings), ns)
    assert t.loc["anger"].tolist() == pytest.approx([0.9, 0.8]) and t.loc["fear"].tolist() == pytest.approx([0.7, 0.9])
    s = rates.summary(tmp_path, {"paper": ns}, {"paper": settings}).iloc[0]
    assert s["lowest rate"] == pytest.approx(0.8) and s["highest rate"] == pytest.approx(
        0.85
    )  # (0.9+0.7)/2, (0.8+0.9)/2
    assert s["fires on most tokens of every emotion"]
    assert s["own/other rate"] == pytest.approx(np.median([0.9 / 0.8, 0.9 / 0.7]))
    line = rates.lines(rates.summary(tmp_path, {"paper": ns}, {"paper": settings}))[0]
    assert "fires on most tokens of every emotion (80% to 85%" in line and "near-saturated" in line


def test_a_rarely_firing_set_is_not_called_saturated(tmp_path):
    P = torch.full((2, 2, 4), 0.05)
    P[0, 0, 1] = 0.4
    settings = _write(tmp_path, P)
    ns = _ns({"anger": [[0, 1]], "fear": [[1, 2]]})
    line = rates.lines(rates.summary(tmp_path, {"paper": ns}, {"paper": settings}))[0]
    assert (
        "most tokens" not in line and "near-saturated" not in line and "5% to 23%" in line
    )  # (0.4 + 0.05) / 2 on anger tokens (float32)
