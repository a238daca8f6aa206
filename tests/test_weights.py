"""The control chosen from the weights alone: a planted neuron ranks first and is selected, the scores equal the
model's own modules read one neuron at a time (Llama and Gemma-3 norms), top_tokens finds the planted token, and
the named set lands in neurons.json beside the others."""

import copy
import json

import pytest
import torch

from emolib.emotions import EMOTIONS
from emolib.identify import neurons, weights
from emolib.lm import classify

E = list(EMOTIONS)


@pytest.fixture()
def planted(tiny):
    """(model, tok, label ids, e, layer, index): a copy of the tiny Llama with a random final-norm scale, and neuron
    (2, 7) writing 40 x the label row of `fear` (divided by the norm scale, so g * column points along it)."""
    model, tok = tiny
    model = copy.deepcopy(model)
    clf = classify.make_classifier(model, tok, E, chat=False)
    ids = weights.label_token_ids(clf)
    j, layer, index = E.index("fear"), 2, 7
    with torch.no_grad():
        g = weights.final_norm(model).weight
        g.copy_(0.5 + torch.rand_like(g))
        row = weights.unembedding(model)[ids[j]]
        model.model.layers[layer].mlp.down_proj.weight[:, index] = 40 * row / row.norm() / g
    return model, tok, ids, j, layer, index


def test_label_tokens_are_the_first_tokens_the_classifier_scores(tiny):
    model, tok = tiny
    clf = classify.make_classifier(model, tok, E, chat=False)
    ids = weights.label_token_ids(clf)
    assert ids == [tok(" " + e, add_special_tokens=False)["input_ids"][0] for e in E]
    assert len(set(ids)) == len(E)


def test_a_planted_neuron_ranks_first_and_is_selected(planted):
    model, tok, ids, j, layer, index = planted
    s = weights.scores(model, ids)
    L, D = len(model.model.layers), model.config.intermediate_size
    assert s.shape == (len(E), L, D) and s.dtype == torch.float32
    assert weights.ranked(s, j, 1) == [[layer, index]]
    sets = weights.select(s, [3] * len(E), E)
    assert [layer, index] in sets["fear"] and all(len(v) == 3 for v in sets.values())
    assert sets["fear"] == sorted(sets["fear"])
    assert all([layer, index] not in v for e, v in sets.items() if e != "fear")  # it lowers the others' scores


def test_scores_are_each_label_minus_the_mean_of_the_others(planted):
    model, _, ids, *_ = planted
    c, s = weights.contributions(model, ids), weights.scores(model, ids)
    for j in range(len(E)):
        others = [k for k in range(len(E)) if k != j]
        assert torch.allclose(s[j], c[j] - c[others].mean(0), atol=1e-5)


def _rms(x: torch.Tensor, eps: float) -> torch.Tensor:
    """The RMS an RMSNorm divides by (eps included)."""
    return torch.sqrt(x.pow(2).mean() + eps)


@torch.no_grad()
def _direct(model, layer: int, index: int, ids: list[int], eps: float) -> torch.Tensor:
    """One neuron's logits for the label tokens through the model's own modules: a one-hot down_proj input, the
    post-FFN norm where there is one, the final norm and the LM head, with every norm's RMS division undone."""
    mlp = model.model.layers[layer].mlp
    x = torch.zeros(mlp.down_proj.in_features)
    x[index] = 1.0
    h = mlp.down_proj(x)
    post = getattr(model.model.layers[layer], "post_feedforward_layernorm", None)
    if post is not None:
        h = post(h) * _rms(h, eps)
    return model.lm_head(model.model.norm(h) * _rms(h, eps))[ids]


def _check_direct(model, ids: list[int], eps: float) -> None:
    """contributions() equals _direct() for a few neurons of every layer."""
    c = weights.contributions(model, ids)
    for layer in range(c.shape[1]):
        for index in (0, 5, c.shape[2] - 1):
            assert torch.allclose(c[:, layer, index], _direct(model, layer, index, ids, eps), rtol=1e-4, atol=1e-5)


def test_scores_equal_the_llama_modules_read_one_neuron_at_a_time(planted):
    model, _, ids, *_ = planted
    _check_direct(model, ids, model.config.rms_norm_eps)


def test_scores_equal_the_gemma3_modules_with_their_one_plus_weight_norms():
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    cfg = Gemma3TextConfig(
        vocab_size=96,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
    )
    model = Gemma3ForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, w in model.named_parameters():
            if name.endswith("norm.weight"):
                w.copy_(torch.randn_like(w) * 0.5)  # Gemma's norms start at 0 (a scale of 1): make them matter
    ids = [3, 10, 20, 40]
    _check_direct(model, ids, cfg.rms_norm_eps)
    assert torch.allclose(weights.norm_scale(model.model.norm), 1 + model.model.norm.weight)


def test_top_tokens_puts_the_planted_token_first(planted):
    model, tok, ids, j, layer, index = planted
    t = weights.top_tokens(model, tok, layer, index, k=5)
    assert len(t["promoted"]) == len(t["suppressed"]) == 5
    assert t["promoted"][0][0] == tok.decode([ids[j]])
    vals = [v for _, v in t["promoted"]]
    assert vals == sorted(vals, reverse=True) and t["suppressed"][0][1] <= t["suppressed"][-1][1] < vals[-1]


def _neurons_json(path, L: int, D: int, with_attribution: bool) -> dict:
    """A neurons.json with a paper set of uneven sizes and other named sets (attribution first when asked)."""
    paper = {e: [[0, i] for i in range(n)] for e, n in zip(E, (3, 1, 2, 0, 4, 2))}
    settings = {"tokens": "dialogue", "tensor": "act"}
    named = {
        "paper": {"variant": "paper", "settings": settings, "neurons": paper},
        "directions": {"variant": "directions", "settings": settings, "neurons": {e: [[1, 1]] for e in E}},
    }
    if with_attribution:
        named = {
            "attribution": {"variant": "attribution", "settings": settings, "neurons": {e: [] for e in E}},
            **named,
        }
    meta = {
        "model": "tiny-random-llama",
        "n_layers": L,
        "d_ff": D,
        "emotions": E,
        "neurons": paper,
        "named_sets": named,
    }
    path.write_text(json.dumps(meta))
    return meta


@pytest.mark.parametrize("with_attribution", [True, False])
def test_add_named_set_writes_a_loadable_set_sized_like_paper(planted, tmp_path, with_attribution):
    model, tok, ids, j, layer, index = planted
    L, D = len(model.model.layers), model.config.intermediate_size
    before = _neurons_json(tmp_path / "neurons.json", L, D, with_attribution)
    p = {"run_dir": str(tmp_path)}
    entry = weights.add_named_set(p, model, tok, ids)
    meta = json.loads((tmp_path / "neurons.json").read_text())
    order = (
        ["attribution", "weights", "paper", "directions"] if with_attribution else ["weights", "paper", "directions"]
    )
    assert list(meta["named_sets"]) == order
    assert all(meta["named_sets"][k] == v for k, v in before["named_sets"].items())  # the others untouched
    sets = neurons.named_sets(p)
    assert {e: len(sets["weights"].sets[e]) for e in E} == {e: len(sets["paper"].sets[e]) for e in E}
    assert entry["variant"] == "weights" and entry["settings"] == before["named_sets"]["paper"]["settings"]
    assert entry["why"] and [layer, index] in entry["neurons"]["fear"]
    top = entry["top_neurons"]["fear"]
    assert len(top) == weights.N_SHOWN and top[0]["neuron"] == [layer, index]
    assert top[0]["promoted"][0] == tok.decode([ids[j]]) == entry["label_tokens"]["fear"]
    assert torch.equal(weights.load(tmp_path), weights.scores(model, ids))
    assert weights.dose_select(tmp_path, [1] * len(E), E)["fear"] == [[layer, index]]
    weights.add_named_set(p, model, tok, ids)  # again: replaced in place, not doubled
    assert list(json.loads((tmp_path / "neurons.json").read_text())["named_sets"]) == order


def test_weights_is_a_control_set_and_a_grid_set(tmp_path):
    import pandas as pd

    from emolib import params
    from emolib.report import findings

    assert neurons.CONTROL_SETS == ("attribution", "weights")
    assert "weights" in params.SCHEMA["grid_sets"].extra["choices"]
    t = pd.DataFrame(
        [
            {
                "set": s,
                "emotion": e,
                "p": 0.01,
                "p_holm": 0.01,
                "verdict": "own drop beyond random",
                "own_minus_random_margin": -1.0,
            }
            for s in neurons.CONTROL_SETS
            for e in E
        ]
    )
    assert findings.set_lines(tmp_path, t) == []  # the named sets' sentences leave the controls out
