"""Stage 5 steering on the tiny random model: the add hook, common random numbers, random families, equal
residual-stream pushes at each dose, degenerate replies excluded, the both-scorers rule, scorers that are never the
steered model, the resumable runner and the steer command's one-line errors."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from emolib import params
from emolib.__main__ import main
from emolib.causal import emotion_scorers, generation, intervene, outcomes, steer
from emolib.lm import ablate
from emolib.report import findings

ROOT = Path(__file__).resolve().parent.parent
P = {
    **params.validate({"model": "tiny-random-llama", "steer_max_new_tokens": 4, "steer_prompts": 3, "batch_size": 16}),
    "run_dir": None,
}


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
    stops = generation.stop_ids(tok)
    ids = [tok("A: So, how did it go?\nB:")["input_ids"], tok("A: Any news?\nB:")["input_ids"]]
    sd = torch.ones(4, 128)

    def gen(masks, doses):
        gens = [generation.row_generator(0, i) for _ in masks for i in range(2)]
        with ablate.ablate_rows(model, masks, 2, mode="add", means=sd, scales=doses):
            return generation.sample_batch(model, tok, ids * len(masks), gens, 6, stops)

    a = gen([{}, {0: list(range(64))}], [0.0, 0.0])  # the baseline and a set at alpha = 0, batched together
    b = gen([{0: list(range(64))}], [0.0])
    assert a[:2] == a[2:] == b


class _Sets:
    """A stand-in for NeuronSets: emotion -> layer -> neurons."""

    def __init__(self, by):
        self.by = by

    def by_layer(self, e):
        return self.by.get(e, {})


def test_random_families_match_layer_counts_deciles_and_overlaps():
    g = torch.Generator().manual_seed(0)
    firing, _spread = torch.rand(4, 128, generator=g), torch.rand(4, 128, generator=g)
    own = {"anger": {0: [1, 5, 9], 2: [7, 100]}, "fear": {0: [5, 9], 3: [4]}}
    conds = intervene.random_conditions(
        {"paper": _Sets(own)}, ["anger", "fear", "sadness"], {"paper": 0.5}, 5, lambda ns: firing, None, seed=0
    )
    assert [c.random for c in conds] == [j for j in range(5) for _ in range(2)]
    assert {c.emotion for c in conds} == {"anger", "fear"} and all(c.dose == 0.5 for c in conds)
    bins = ablate.firing_bins(firing)
    for j in range(5):
        fam = {c.emotion: c.neurons for c in conds if c.random == j}
        for e, m in own.items():
            assert {k: len(v) for k, v in fam[e].items()} == {k: len(v) for k, v in m.items()}
            for layer, idx in m.items():
                assert sorted(bins[layer, idx]) == sorted(bins[layer, fam[e][layer]])
                assert not set(idx) & set(fam[e][layer])
        assert set(fam["anger"][0]) & set(fam["fear"][0]) and len(set(fam["anger"][0]) & set(fam["fear"][0])) == 2


@torch.inference_mode()
def test_own_and_random_sets_get_equal_residual_pushes_at_each_dose(tiny, tmp_path):
    """Measured with hooks on the tiny model: the mean over positions of ||change of down_proj's output||, root-sum-
    square over layers, equals dose x unit for an own set, its random families and the directions."""
    model, tok = tiny
    sd = torch.rand(4, 128, generator=torch.Generator().manual_seed(1)) * 3 + 0.05
    sd[1, 7] = 200.0  # a heavy-tailed neuron: SD units would give this set a far larger push
    r = generation.Runner(model, tok, P, ["A: hi\nB:", "A: So, what happened?\nB:"], sd, {}, tmp_path)
    own = {"anger": {0: [1, 2, 3], 1: [7, 9], 3: [5]}}
    firing = torch.rand(4, 128, generator=torch.Generator().manual_seed(2))
    conds = [intervene.Condition("paper", "anger", 0.0, intervene.OWN, own["anger"])]
    conds += intervene.random_conditions({"paper": _Sets(own)}, ["anger"], {"paper": 0.0}, 3, lambda ns: firing, sd, 0)
    ids = torch.tensor([tok("A: How was the trip?\nB: It was fine, I think.")["input_ids"]])
    downs = ablate.ffn_layers(model)
    H = downs[0].down_proj.out_features
    r.directions = {"anger": torch.nn.functional.normalize(torch.randn(H), dim=0)}

    def measure(pushes, vectors):
        """{layer: [T] ||W_down (input after the push - input before it)|| per position, measured at the down_proj
        input within one pass; 'h': the decoder layer's output}."""
        from emolib.lm.models import decoder_layers

        before, seen = {}, {}
        hs = [
            m.down_proj.register_forward_pre_hook(lambda mod, a, l=l: before.__setitem__(l, a[0].clone()))
            for l, m in enumerate(downs)
        ]  # registered first: runs before the steering pre-hook
        hs += [
            m.down_proj.register_forward_hook(
                lambda mod, a, o, l=l: seen.__setitem__(l, ((a[0] - before[l]) @ mod.weight.T)[0].norm(dim=-1))
            )
            for l, m in enumerate(downs)
        ]  # forward hooks see the input after every pre-hook
        try:
            with intervene.interventions(model, pushes, vectors, r.layer, 1):
                hs.append(
                    decoder_layers(model)[r.layer].register_forward_hook(
                        lambda mod, a, o: seen.__setitem__("h", (o[0] if isinstance(o, tuple) else o).clone())
                    )
                )
                model(ids)
        finally:
            for h in hs:
                h.remove()
        return seen

    plain = measure([{}], [None])
    for dose in (0.25, 1.0):
        sizes = []
        for c in conds:
            c.dose = dose
            push, vec = r.push(c)
            got = measure([push], [vec])
            sizes.append(float(torch.stack([got[l].mean() for l in range(len(downs))]).pow(2).sum().sqrt()))
        for e_dir in (
            intervene.Condition(intervene.DIRECTION_SET, "anger", dose, intervene.OWN),
            intervene.Condition(intervene.DIRECTION_SET, "anger", dose, 0),
        ):
            push, vec = r.push(e_dir)
            got = measure([push], [vec])
            sizes.append(float((got["h"] - plain["h"])[0].norm(dim=-1).mean()))
        assert sizes == pytest.approx([dose * r.unit] * len(sizes), rel=1e-3)


@torch.inference_mode()
def test_pushes_through_a_post_ffn_norm_are_measured_where_they_enter_the_stream(tiny, tmp_path):
    """Gemma's FFN output passes post_feedforward_layernorm before the residual add, so W_down Delta a is not the push.
    Measured with hooks on a random Gemma3, one layer's push at a time (so the norm sees the unsteered FFN output, as
    in the calibration): the mean over the prompts' tokens (after the first) of ||change of the norm's output||,
    root-sum-square over layers, equals dose x unit for an own set and its random families; the closed form of the
    Llama layout would give another push (the test could fail)."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    from emolib.lm.models import decoder_layers, post_ffn_norms

    _, tok = tiny
    torch.manual_seed(0)
    g = Gemma3ForCausalLM(
        Gemma3TextConfig(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=8,
            pad_token_id=tok.pad_token_id,
        )
    ).eval()
    for layer in decoder_layers(g):  # a non-trivial norm weight, as in the real model
        layer.post_feedforward_layernorm.weight.normal_(0, 2)
    assert post_ffn_norms(g) is not None and post_ffn_norms(tiny[0]) is None
    sd = torch.rand(3, 48, generator=torch.Generator().manual_seed(1)) + 0.05
    prompt = "A: So, what happened?\nB:"
    r = generation.Runner(g, tok, P, [prompt], sd, {}, tmp_path)
    own = {"anger": {0: [1, 2, 3], 2: [7, 9]}}
    firing = torch.rand(3, 48, generator=torch.Generator().manual_seed(2))
    conds = [intervene.Condition("paper", "anger", 0.0, intervene.OWN, own["anger"])]
    conds += intervene.random_conditions({"paper": _Sets(own)}, ["anger"], {"paper": 0.0}, 2, lambda ns: firing, sd, 0)
    ids = torch.tensor([r.prompt_ids[0]])
    norms = post_ffn_norms(g)

    def written(pushes):
        seen = {}
        hs = [
            n.register_forward_hook(lambda mod, a, o, l=l: seen.__setitem__(l, o[0, 1:].float().clone()))
            for l, n in enumerate(norms)
        ]
        try:
            with intervene.interventions(g, pushes, [None] * len(pushes), r.layer, 1):
                g(ids)
        finally:
            for h in hs:
                h.remove()
        return seen

    plain = written([{}])
    for dose in (0.05, 0.2):
        sizes, closed = [], []
        for c in conds:
            c.dose = dose
            for push, out in (
                (r.push(c)[0], sizes),
                (intervene.neuron_push(r.W, sd, c.neurons, dose * r.unit), closed),
            ):
                per = [(written([{l: a}])[l] - plain[l]).norm(dim=-1).mean() for l, a in push.items()]
                out.append(float(torch.stack(per).pow(2).sum().sqrt()))
        assert sizes == pytest.approx([dose * r.unit] * len(sizes), rel=2e-3)
        assert closed != pytest.approx([dose * r.unit] * len(closed), rel=0.05)


def test_the_test_dose_follows_paired_perplexity_ratios_not_a_median_of_few_unsteered_replies():
    """Planted: five unsteered replies whose median (3) understates their spread (2 to 9); at dose 0.1 every steered
    reply equals its prompt's unsteered perplexity x 1.2 (fluent), at 0.2 x 2 (not). The paired rule picks 0.1; a
    ratio of medians (6 / 3 = 2 at dose 0.1) would have picked none."""
    base = [2.0, 2.5, 3.0, 8.0, 9.0]
    rows = [
        {
            "scorer": "s",
            "kind": "unsteered",
            "set": "none",
            "emotion": "none",
            "dose": 0.0,
            "random": intervene.BASELINE,
            "prompt": i,
            "sample": 0,
            "ppl": q,
        }
        for i, q in enumerate(base)
    ]
    for a, f in ((0.1, 1.2), (0.2, 2.0)):
        for e in ("anger", "fear"):
            rows += [
                {
                    "scorer": "s",
                    "kind": "own",
                    "set": "paper",
                    "emotion": e,
                    "dose": a,
                    "random": intervene.OWN,
                    "prompt": i,
                    "sample": 0,
                    "ppl": q * f,
                }
                for i, q in enumerate(base)
            ]
    t = outcomes.test_doses(pd.DataFrame(rows), ["paper"], [0.0, 0.1, 0.2], 1.5)
    assert t.ratio.tolist() == pytest.approx([1.2, 2.0])
    assert outcomes.chosen_doses(t) == {"paper": 0.1}


def test_no_fluent_dose_gives_empty_tables_not_an_error():
    """When no intervention keeps fluency, nothing is tested and every table is empty with its columns."""
    eff = pd.DataFrame(
        [
            {
                "scorer": "s",
                "kind": "own",
                "set": "paper",
                "emotion": "anger",
                "dose": 0.5,
                "random": -1,
                "n": 3,
                "target_p": 0.2,
                "baseline_p": 0.1,
                "d_p": 0.1,
                "bad_share": 0.0,
                "excluded": False,
                "median_ppl": 9.0,
            }
        ]
    )
    t = outcomes.pooled_table(eff, {}, ["anger"], 0.05, 0.05)
    assert t.empty and {"intervention", "verdict"} <= set(t.columns)
    c = outcomes.claims(t, 2)
    assert c.empty and {"intervention", "claim"} <= set(c.columns)
    assert outcomes.per_emotion_table(eff, {}, ["anger"], 0.05, 0.05).empty


def test_degenerate_replies_are_excluded_and_never_a_success():
    """Planted: the own condition's replies are all degenerate yet read as the target emotion with certainty; a
    random family's condition has one degenerate reply with P(target) = 1, another family's condition is all degenerate.
    The own emotion is excluded and listed, a degenerate reply counts as no change, the random families all stay
    (the wholly degenerate condition as no change), and the pooled test never reports a gain from them."""
    rec = _records(
        {("own", -1, "anger"): [1.0] * 4, ("own", -1, "fear"): [0.3] * 4},
        bad={
            ("own", -1, "anger"): ["repetition"] * 4,
            ("random", 0, "fear"): ["perplexity", "", "", ""],
            ("random", 1, "fear"): ["perplexity"] * 4,
        },
        random_p={"anger": 0.2, "fear": 0.3},
        n_random=6,
    )
    eff = outcomes.effects(rec, ["anger", "fear"], 0.25)
    own_anger = eff[(eff.kind == "own") & (eff.emotion == "anger")].iloc[0]
    assert own_anger.excluded and own_anger.bad_share == 1.0
    r0 = eff[(eff.random == 0) & (eff.emotion == "fear")].iloc[0]
    assert not r0.excluded and r0.d_p == pytest.approx(3 * (0.3 - 0.2) / 4 + 0.0 / 4, abs=1e-9)
    r1 = eff[(eff.random == 1) & (eff.emotion == "fear")].iloc[0]
    assert r1.degenerate and not r1.excluded and r1.d_p == 0.0
    t = outcomes.pooled_table(eff, {"paper": 2.0}, ["anger", "fear"], 0.05, 0.05)
    row = t.iloc[0]
    assert row.emotions == "fear" and "own anger" in row.excluded
    assert row.families_dropped == 0 and row.n_random == 6
    assert "1 degenerate random condition(s) kept" in outcomes.degenerate_note(eff, 10.0)
    assert "gain" not in row.verdict


def test_claims_follow_the_both_scorers_rule():
    def t(verdicts):
        return pd.DataFrame(
            [
                {"scorer": f"s{k}", "intervention": n, "role": "test", "dose": 0.25, "verdict": v}
                for n, vs in verdicts.items()
                for k, v in enumerate(vs)
            ]
        )

    c = (
        outcomes.claims(
            t(
                {
                    "a": ["effect beyond random (gain)"] * 2,
                    "b": ["effect beyond random (gain)", "undecided"],
                    "c": ["effect beyond random (gain)", "effect beyond random (drop)"],
                    "d": ["equivalent to random within ±0.05 in P(target)"] * 2,
                    "e": ["equivalent to random within ±0.05 in P(target)", "undecided"],
                    "f": ["effect beyond random (drop)"] * 2,
                }
            ),
            2,
        )
        .set_index("intervention")
        .claim
    )
    assert c.to_dict() == {
        "a": "effect beyond random (gain)",
        "b": "scorers disagree",
        "c": "scorers disagree",
        "d": "equivalent to random",
        "e": "undecided",
        "f": "effect beyond random (drop)",
    }
    one = outcomes.claims(t({"a": ["effect beyond random (gain)"]}), 1)
    assert one.claim.iloc[0] == "no claim (one scorer only)"


def test_pooled_steering_verdicts_follow_the_both_scorers_rule():
    """Two scorers: a planted gain that both scorers see is an effect; one seen by one scorer only is not."""
    E = ["anger", "fear"]
    rows = []
    rng = np.random.default_rng(0)
    for scorer, gain in (
        ("lm", 0.5),
        ("minilm", 0.5),
    ):
        for name, g in (("both", gain), ("one", gain if scorer == "lm" else 0.0)):
            for e in E:
                rows.append(
                    {
                        "scorer": scorer,
                        "kind": "own",
                        "set": name,
                        "emotion": e,
                        "dose": 0.25,
                        "random": -1,
                        "d_p": g,
                        "excluded": False,
                        "median_ppl": 5.0,
                        "bad_share": 0.0,
                    }
                )
                for j in range(20):
                    rows.append(
                        {
                            "scorer": scorer,
                            "kind": "random",
                            "set": name,
                            "emotion": e,
                            "dose": 0.25,
                            "random": j,
                            "d_p": float(rng.normal(0, 0.02)),
                            "excluded": False,
                            "median_ppl": 5.0,
                            "bad_share": 0.0,
                        }
                    )
    eff = pd.DataFrame(rows)
    t = outcomes.pooled_table(eff, {"both": 0.25, "one": 0.25}, E, 0.05, 0.05)
    assert (t.n_random == 20).all()
    c = outcomes.claims(t, 2).set_index("intervention").claim
    assert c["both"] == "effect beyond random (gain)" and c["one"] == "scorers disagree"
    assert findings.steering(outcomes.claims(t, 2), t, pd.DataFrame(), pd.DataFrame())


def _records(own_p: dict, bad: dict, random_p: dict, n_random: int, n: int = 4) -> pd.DataFrame:
    """Records of one scorer: the unsteered replies (P = 0.2 for every emotion), own conditions with the given P(target)
    per prompt, and n_random random families at random_p[e], with planted degenerate labels."""
    E = ["anger", "fear"]
    rows = []

    def add(kind, name, e, dose, rnd, ps, flags):
        for i, (pv, f) in enumerate(zip(ps, flags)):
            rows.append(
                {
                    "kind": kind,
                    "set": name,
                    "emotion": e,
                    "dose": dose,
                    "random": rnd,
                    "prompt": i,
                    "sample": 0,
                    "scorer": "s",
                    "text": "x",
                    "ppl": 5.0,
                    "degenerate": "",
                    "bad": f,
                    "p_anger": pv if e == "anger" else 0.2,
                    "p_fear": pv if e == "fear" else 0.2,
                    "target_p": pv,
                    "top": e,
                }
            )

    add("unsteered", "none", "none", 0.0, intervene.BASELINE, [0.2] * n, [""] * n)
    for (kind, rnd, e), ps in own_p.items():
        add(kind, "paper", e, 2.0, rnd, ps, bad.get((kind, rnd, e), [""] * n))
    for j in range(n_random):
        for e in E:
            ps = [1.0 if f else random_p[e] for f in bad.get(("random", j, e), [""] * n)]
            add("random", "paper", e, 2.0, j, ps, bad.get(("random", j, e), [""] * n))
    return pd.DataFrame(rows)


def test_scorers_are_never_the_steered_model():
    assert emotion_scorers.resolve_scorer("smollm2-135m-instruct", "auto") == "gemma3-270m"
    assert emotion_scorers.resolve_scorer("gemma3-270m", "auto") == "smollm2-135m-instruct"
    assert emotion_scorers.resolve_scorer("tiny-random-llama", "none") is None
    for model in ("smollm2-135m-instruct", "gemma3-270m", "tiny-random-llama"):
        assert not params.same_model(emotion_scorers.resolve_scorer(model, "auto"), model)
    with pytest.raises(ValueError, match="is the steered model"):
        emotion_scorers.resolve_scorer("tiny-random-llama", "tiny-random-llama")
    with pytest.raises(ValueError, match="is the steered model"):  # refused before anything loads
        emotion_scorers.lm_scorer("tiny-random-llama", ["anger", "fear"], P)
    with pytest.raises(params.ParamError, match="'steer_scorer' must not be the steered model"):
        params.validate({"model": "tiny-random-llama", "steer_scorer": "tiny-random-llama"})


def test_lm_scorer_reads_other_models(tiny):
    model, _ = tiny
    fn = emotion_scorers.lm_scorer(
        "tiny-random-llama", ["anger", "fear"], {**P, "model": "smollm2-135m-instruct"}, model
    )
    probs = fn(["A: hi\nB: I am furious.", "A: hi\nB: I'm scared."])
    assert probs.shape == (2, 2) and np.allclose(probs.sum(1), 1)


@pytest.mark.parametrize(
    "raw,needle",
    [
        ({"steer_doses": [1, 2]}, "'steer_doses' must include 0"),
        ({"steer_doses": [0.0]}, "'steer_doses' must include a dose above 0"),
        ({"steer_random_dose": 2}, "unknown key 'steer_random_dose'"),
        ({"steer_doses": [0, -1]}, "'steer_doses' must be >= 0.0"),
        ({"steer_random_sets": 1}, "'steer_random_sets' must be >= 2"),
    ],
)
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
        return emotion_scorers.softmax(np.random.default_rng(len(texts)).normal(size=(len(texts), len(E))))

    prompts = generation.neutral_prompts(3, 0, {"cats"})
    assert len(set(prompts)) == 3 and all(x.startswith("A: ") and x.endswith("\nB:") for x in prompts)
    r = generation.Runner(model, tok, P, prompts, sd, {"fake": fake}, tmp_path)
    sets = {"paper": _Sets({"anger": {0: [1, 2]}, "fear": {3: [4]}})}
    conds = (
        [intervene.baseline()]
        + intervene.own_conditions(sets, E, [0.0, 2.0])
        + [intervene.Condition("paper", e, 2.0, j, {1: [10 + j]}) for e in ("anger", "fear") for j in range(2)]
        + intervene.prompt_conditions(["anger"])
    )
    r.run(conds)
    assert r.per_condition() and sum(calls) == 3 * len(conds)
    again = generation.Runner(model, tok, P, prompts, sd, {"fake": fake}, tmp_path)
    again.run(conds)
    assert sum(calls) == 3 * len(conds)  # all from the cache
    assert again.per_condition() == pytest.approx(r.per_condition(), abs=1e-3)  # the last session's speed
    rec, cap = outcomes.mark_degenerate(again.records(conds), 10.0)
    assert np.isfinite(cap) and {"kind", "bad"} <= set(rec.columns)
    dose_t = outcomes.test_doses(rec, ["paper"], [0.0, 2.0], 1e6)
    assert outcomes.chosen_doses(dose_t) == {"paper": 2.0}
    eff = outcomes.effects(rec, E, 0.25)
    t = outcomes.pooled_table(eff, {"paper": 2.0}, E, 0.05, 0.05)
    assert t.iloc[0].n_emotions == 2 and t.iloc[0].n_random == 2
    doses = outcomes.dose_table(rec, E, [0.0, 2.0], 100, 0)
    assert (doses[doses.dose == 0].d_p == 0).all()
    assert generation.choose_random_sets(again, conds, 2, budget_s=0.0, elapsed_s=1.0) == 2  # all cached
    more = conds + [intervene.Condition("paper", "anger", 2.0, j, {1: [20 + j]}) for j in range(2, 6)]
    assert (
        generation.choose_random_sets(r, more, 6, budget_s=1.0, elapsed_s=1.0, floor=2) == 2
    )  # no time left: the least


def _stats(run_dir: Path) -> None:
    from emolib.causal import matched

    sums = {
        "sum": torch.zeros(4, 128, dtype=torch.float64),
        "sumsq": torch.ones(4, 128, dtype=torch.float64),
        "count": 1,
    }
    matched.save(run_dir, sums, "t")


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--emotion", "boredom", "--alpha", "2"], "--emotion: unknown emotion 'boredom'"),
        (["--emotion", "surprise", "--alpha", "2"], "--emotion: 'surprise' has no neurons in set paper"),
        (["--emotion", "anger", "--alpha", "-1"], "--alpha must be a finite number of SDs from 0 to 100"),
        (["--emotion", "anger", "--alpha", "inf"], "--alpha must be a finite number"),
        (["--emotion", "anger", "--alpha", "2", "--set", "selective"], "--set: 'selective' is not in"),
        (["--emotion", "anger", "--alpha", "2", "--n", "0"], "--n must be from 1 to 64"),
        (["--emotion", "anger", "--alpha", "2", "--prompt", " "], "--prompt must not be empty"),
        (["--emotion", "anger", "--alpha", "2", "--no-stats"], "activation_stats.safetensors is missing"),
    ],
)
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
    assert (
        main(
            [
                "steer",
                "--params",
                str(ROOT / "params/test-tiny.yaml"),
                "--neurons",
                str(path),
                "--emotion",
                "anger",
                "--alpha",
                "1",
                "--prompt",
                "A: hi\\nB:",
                "--n",
                "2",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "anger neurons +1 SD" in out and "[2]" in out and "minilm: top" in out


def test_the_widget_is_inert_headless_and_builds_live(tiny, monkeypatch):
    monkeypatch.setenv("EMOLIB_HEADLESS", "1")
    assert not steer.interactive()  # the runner sets it for papermill: the notebook builds no widget
    model, tok = tiny
    form = steer.widget(model, tok, P, {"paper": _Sets({"anger": {0: [1]}})}, torch.ones(4, 128), {}, ["A: hi\nB:"])
    assert len(form.children) == 6


def test_random_sets_without_spread_are_not_tested():
    E = ["anger", "fear"]
    rows = [
        {
            "scorer": "s",
            "kind": k,
            "set": "paper",
            "emotion": e,
            "dose": 0.25,
            "random": j,
            "d_p": 0.3 if j == -1 else 0.0,
            "excluded": False,
            "median_ppl": 5.0,
            "bad_share": 0.0,
        }
        for e in E
        for j, k in [(-1, "own"), (0, "random"), (1, "random")]
    ]
    t = outcomes.pooled_table(pd.DataFrame(rows), {"paper": 0.25}, E, 0.05, 0.05)
    assert t.iloc[0].verdict == "not tested" and t.iloc[0].random_sd == 0
