"""Stage 5 steering on the tiny random model: the add hook, common random numbers, matched random sets, scorers
that are never the steered model, the resumable runner and the steer command's one-line errors."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from emolib.causal import ablate, steer
from emolib.report import findings
from emolib import params
from emolib.__main__ import main

ROOT = Path(__file__).resolve().parent.parent
P = {**params.validate({"model": "tiny-random-llama", "steer_max_new_tokens": 4, "steer_prompts": 3,
                        "batch_size": 16}), "run_dir": None}


def _ids(tok, n: int = 3) -> torch.Tensor:
    return torch.tensor([tok("A: How was the trip?\nB: It was")["input_ids"]] * n)


@torch.inference_mode()
def test_alpha_zero_changes_no_logit(tiny):
    model, tok = tiny
    ids = _ids(tok)
    sd = torch.rand(4, 128) + 0.5
    plain = model(ids).logits
    with ablate.ablate_rows(model, [{0: [1, 2], 3: [5]}] * 3, 1, mode="add", means=sd, scales=[0.0] * 3):
        rows = model(ids).logits
    with ablate.ablate(model, {0: [1, 2], 3: [5]}, mode="add", means=sd, scale=0.0):
        one = model(ids).logits
    assert torch.equal(plain, rows) and torch.equal(plain, one)


@torch.inference_mode()
def test_the_hook_touches_only_the_chosen_neurons(tiny):
    model, tok = tiny
    ids = _ids(tok, 2)
    sd = torch.rand(4, 128) + 0.5
    down = ablate.ffn_layers(model)[1].down_proj
    seen = []
    h = down.register_forward_pre_hook(lambda m, a: seen.append(a[0].clone()))
    try:
        model(ids)
    finally:
        h.remove()
    chosen = [3, 40, 77]
    with ablate.ablate_rows(model, [{1: chosen}, {}], 1, mode="add", means=sd, scales=[2.5, 2.5]):
        h = down.register_forward_pre_hook(lambda m, a: seen.append(a[0].clone()))  # runs after the steering hook
        try:
            model(ids)
        finally:
            h.remove()
    diff = seen[1] - seen[0]
    touched = (diff.abs() > 0).any(0).any(0).nonzero().squeeze(1).tolist()
    assert touched == chosen
    assert torch.allclose(diff[0, :, chosen], (2.5 * sd[1, chosen]).expand(diff.shape[1], 3), atol=1e-5)
    assert diff[1].abs().max() == 0  # the other row's mask is empty: untouched
    assert not down._forward_pre_hooks  # removed on leaving


def test_common_random_numbers_make_alpha_zero_the_baseline(tiny):
    model, tok = tiny
    stops = steer.stop_ids(tok)
    ids = [tok("A: So, how did it go?\nB:")["input_ids"], tok("A: Any news?\nB:")["input_ids"]]
    sd = torch.ones(4, 128)

    def gen(masks, doses):
        gens = [steer.row_generator(0, i) for _ in masks for i in range(2)]
        with ablate.ablate_rows(model, masks, 2, mode="add", means=sd, scales=doses):
            return steer.sample_batch(model, tok, ids * len(masks), gens, 6, stops)
    a = gen([{}, {0: list(range(64))}], [0.0, 0.0])  # the baseline and a set at alpha = 0, batched together
    b = gen([{0: list(range(64))}], [0.0])
    assert a[:2] == a[2:] == b


class _Sets:
    """A stand-in for NeuronSets: emotion -> layer -> neurons."""

    def __init__(self, by):
        self.by = by

    def by_layer(self, e):
        return self.by.get(e, {})


def test_random_sets_match_layer_counts_and_deciles():
    g = torch.Generator().manual_seed(0)
    firing, spread = torch.rand(4, 128, generator=g), torch.rand(4, 128, generator=g)
    own = {0: [1, 5, 9], 2: [7, 100]}
    conds = steer.random_conditions({"paper": _Sets({"anger": own})}, ["anger", "fear"], 2.0, 5,
                                    lambda ns: firing, spread, seed=0)
    assert [c.random for c in conds] == list(range(5)) and {c.emotion for c in conds} == {"anger"}
    bins = ablate.firing_bins(firing)  # firing deciles within the layer (SD deciles inside them where free)
    for c in conds:
        assert {k: len(v) for k, v in c.neurons.items()} == {0: 3, 2: 2} and c.dose == 2.0
        for layer, idx in own.items():
            assert sorted(bins[layer, idx]) == sorted(bins[layer, c.neurons[layer]])
            assert not set(idx) & set(c.neurons[layer])


def test_scorers_are_never_the_steered_model():
    assert steer.resolve_scorer("smollm2-135m-instruct", "auto") == "gemma3-270m"
    assert steer.resolve_scorer("gemma3-270m", "auto") == "smollm2-135m-instruct"
    assert steer.resolve_scorer("tiny-random-llama", "none") is None
    for model in ("smollm2-135m-instruct", "gemma3-270m", "tiny-random-llama"):
        assert not steer.same_model(steer.resolve_scorer(model, "auto"), model)
    with pytest.raises(ValueError, match="is the steered model"):
        steer.resolve_scorer("tiny-random-llama", "tiny-random-llama")
    with pytest.raises(ValueError, match="is the steered model"):  # refused before anything loads
        steer.lm_scorer("tiny-random-llama", ["anger", "fear"], P)
    with pytest.raises(params.ParamError, match="'steer_scorer' must not be the steered model"):
        params.validate({"model": "tiny-random-llama", "steer_scorer": "tiny-random-llama"})


def test_lm_scorer_reads_other_models(tiny):
    model, _ = tiny
    fn = steer.lm_scorer("tiny-random-llama", ["anger", "fear"], {**P, "model": "smollm2-135m-instruct"}, model)
    probs = fn(["A: hi\nB: I am furious.", "A: hi\nB: I'm scared."])
    assert probs.shape == (2, 2) and np.allclose(probs.sum(1), 1)


@pytest.mark.parametrize("raw,needle", [
    ({"steer_doses": [1, 2]}, "'steer_doses' must include 0"),
    ({"steer_doses": [0, 1], "steer_random_dose": 3}, "'steer_random_dose' must be one of steer_doses above 0"),
    ({"steer_doses": [0, -1]}, "'steer_doses' must be >= 0.0"),
    ({"steer_random_sets": 1}, "'steer_random_sets' must be >= 2"),
])
def test_steering_params_fail_with_one_clear_line(raw, needle):
    with pytest.raises(params.ParamError, match=needle):
        params.validate(raw)


def test_runner_caches_each_condition_and_the_tables(tiny, tmp_path):
    model, tok = tiny
    sd = torch.rand(4, 128) + 0.5
    E = P["emotions"]
    calls = []

    def fake(texts):
        calls.append(len(texts))
        return steer.softmax(np.random.default_rng(len(texts)).normal(size=(len(texts), len(E))))
    prompts = steer.neutral_prompts(3, 0, {"cats"})
    assert len(set(prompts)) == 3 and all(x.startswith("A: ") and x.endswith("\nB:") for x in prompts)
    r = steer.Runner(model, tok, P, prompts, sd, {"fake": fake}, tmp_path)
    sets = {"paper": _Sets({"anger": {0: [1, 2]}, "fear": {3: [4]}})}
    conds = [steer.baseline()] + steer.own_conditions(sets, E, [0.0, 2.0]) + [
        steer.Condition("paper", e, 2.0, j, {1: [10 + j]}) for e in ("anger", "fear") for j in range(2)]
    r.run(conds)
    assert r.per_condition() and sum(calls) == 3 * len(conds)
    again = steer.Runner(model, tok, P, prompts, sd, {"fake": fake}, tmp_path)
    again.run(conds)
    assert sum(calls) == 3 * len(conds)  # all from the cache
    assert again.per_condition() == pytest.approx(r.per_condition(), abs=1e-3)  # the last session's speed
    rec = again.records(conds)
    tests = steer.test_table(rec, E, 2.0, 0.25)
    assert set(tests.emotion) == {"anger", "fear"} and (tests.n_random == 2).all()
    assert {"own_minus_random_share", "omr_lo", "omr_hi", "p", "p_holm", "verdict", "power"} <= set(tests.columns)
    doses = steer.dose_table(rec, E, [0.0, 2.0], 100, 0)
    assert (doses[doses.dose == 0].d_share == 0).all()
    fl = steer.fluency_table(steer.condition_summary(rec, E))
    assert set(fl.kind) == {"unsteered", "own", "random"}
    assert findings.steering(tests, fl, 3)
    assert steer.choose_random_sets(again, conds, 2, budget_s=0.0, elapsed_s=1.0) == 2  # all cached
    more = conds + [steer.Condition("paper", "anger", 2.0, j, {1: [20 + j]}) for j in range(2, 6)]
    assert steer.choose_random_sets(r, more, 6, budget_s=1.0, elapsed_s=1.0) == 2  # no time left: the least


def _stats(run_dir: Path) -> None:
    from emolib.causal import attribution
    sums = {"sum": torch.zeros(4, 128, dtype=torch.float64), "sumsq": torch.ones(4, 128, dtype=torch.float64),
            "count": 1}
    attribution.save(run_dir, sums, "t")


@pytest.mark.parametrize("args,needle", [
    (["--emotion", "boredom", "--alpha", "2"], "--emotion: unknown emotion 'boredom'"),
    (["--emotion", "surprise", "--alpha", "2"], "--emotion: 'surprise' has no neurons in set paper"),
    (["--emotion", "anger", "--alpha", "-1"], "--alpha must be a finite number of SDs from 0 to 100"),
    (["--emotion", "anger", "--alpha", "inf"], "--alpha must be a finite number"),
    (["--emotion", "anger", "--alpha", "2", "--set", "selective"], "--set: 'selective' is not in"),
    (["--emotion", "anger", "--alpha", "2", "--n", "0"], "--n must be from 1 to 64"),
    (["--emotion", "anger", "--alpha", "2", "--prompt", " "], "--prompt must not be empty"),
    (["--emotion", "anger", "--alpha", "2", "--no-stats"], "activation_stats.safetensors is missing"),
])
def test_steer_command_errors_are_one_line(tmp_path, capsys, args, needle):
    from test_safety import tiny_neurons
    path = tiny_neurons(tmp_path / "run")
    if "--no-stats" in args:
        args = [a for a in args if a != "--no-stats"]
    else:
        _stats(tmp_path / "run")
    if "--prompt" not in args:
        args += ["--prompt", "A: hi\\nB:"]
    code = main(["steer", "--params", str(ROOT / "params/test-tiny.yaml"), "--neurons", str(path), *args])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and err.count("\n") == 1, err


def test_steer_command_prints_scored_replies(tmp_path, capsys):
    from test_safety import tiny_neurons
    path = tiny_neurons(tmp_path / "run")
    _stats(tmp_path / "run")
    assert main(["steer", "--params", str(ROOT / "params/test-tiny.yaml"), "--neurons", str(path), "--emotion",
                 "anger", "--alpha", "1", "--prompt", "A: hi\\nB:", "--n", "2"]) == 0
    out = capsys.readouterr().out
    assert "anger neurons +1 SD" in out and "[2]" in out and "minilm: top" in out


def test_the_widget_is_inert_headless_and_builds_live(tiny, monkeypatch):
    monkeypatch.setenv("EMOLIB_HEADLESS", "1")
    assert not steer.interactive()  # the runner sets it for papermill: the notebook builds no widget
    model, tok = tiny
    form = steer.widget(model, tok, P, {"paper": _Sets({"anger": {0: [1]}})}, torch.ones(4, 128), {},
                        ["A: hi\nB:"])
    assert len(form.children) == 6


def test_random_sets_without_spread_leave_the_test_undecided():
    import pandas as pd
    E = ["anger", "fear"]
    rows = []
    for rnd, name, emo, dose, top in [(steer.BASELINE, "none", "none", 0.0, "fear"), (steer.OWN, "paper", "anger", 2.0,
                                      "anger"), (0, "paper", "anger", 2.0, "fear"), (1, "paper", "anger", 2.0, "fear")]:
        for i in range(4):
            rows.append({"scorer": "s", "set": name, "emotion": emo, "dose": dose, "random": rnd, "prompt": i,
                         "top": top, "p_anger": float(top == "anger"), "p_fear": float(top == "fear"),
                         "target_p": float(top == emo)})
    t = steer.test_table(pd.DataFrame(rows), E, 2.0, 0.25)
    r = t[t.emotion == "anger"].iloc[0]
    assert r.own_d_share == 1.0 and not np.isfinite(r.p) and r.verdict == "not tested (random sets without spread)"
