"""Checks a learner runs on their own version of the method's core (the course's exercises).

Each check prints one line, a pass (✓) or precisely what is wrong (✗), and returns True or False. A wrong answer, or
an error inside the learner's function, is reported, never raised; only NotImplementedError (an exercise's stub) is
let through, so an exercise notebook stops at its first unsolved exercise.

Longer than 400 lines: one short check per exercise of the course, each with its brute-force reference; splitting
them would scatter the course's answer key.
"""

from __future__ import annotations

import inspect
import math
from functools import lru_cache

import torch

from .identify import neurons, record
from .lm import ablate, models

DIALOGUES = [
    "A: You broke it again!\nB: I said I was sorry.",
    "A: The results came in.\nB: And?\nA: We won!",
    "A: Did you hear that noise?",
    "A: Look at this.\nB: Oh no, it is covered in mould.\nA: I know.",
]


def _report(name: str, problem: str | None, passed: str) -> bool:
    """Print the check's one line and return whether it passed."""
    print(f"✗ {name}: {problem}" if problem else f"✓ {name}: {passed}")
    return problem is None


def _call(fn, *args):
    """(result, None), or (None, what went wrong) when the learner's function raised (NotImplementedError excepted)."""
    try:
        return fn(*args), None
    except NotImplementedError:
        raise
    except Exception as e:  # a learner's bug is reported as one line, not a traceback
        return None, f"your function raised {type(e).__name__}: {e}"


def _tensor(x, shape: tuple[int, ...]) -> tuple[torch.Tensor | None, str | None]:
    """The learner's result as a float64 tensor of the expected shape, or what is wrong with it."""
    try:
        t = torch.as_tensor(x).double()
    except Exception:
        return None, f"returned a {type(x).__name__}; return a tensor of shape {list(shape)}"
    if tuple(t.shape) != shape:
        return (
            None,
            f"returned shape {list(t.shape)}; expected {list(shape)} ([layers, neurons]: the sum runs "
            f"over emotions, dim 0)",
        )
    return t, None


# ------------------------------------------------------------------ entropy


def _entropy_cases() -> tuple[torch.Tensor, dict[str, float]]:
    """Hand-computable neurons (6 emotions x 1 layer x 4 neurons, not normalised) and their entropies in nats."""
    cols = {
        "uniform over 6 emotions (ln 6)": ([0.3] * 6, math.log(6)),
        "one emotion only (0)": ([0.4, 0, 0, 0, 0, 0], 0.0),
        "two emotions equally, four never (ln 2, needs 0 log 0 = 0)": ([0.2, 0.2, 0, 0, 0, 0], math.log(2)),
        "worked example P = (0.2, 0.1, 0.1, 0, 0, 0) -> (1/2, 1/4, 1/4) -> 1.5 ln 2": (
            [0.2, 0.1, 0.1, 0, 0, 0],
            1.5 * math.log(2),
        ),
    }
    P = torch.tensor([c for c, _ in cols.values()], dtype=torch.float64).T.reshape(6, 1, len(cols))
    return P, {k: h for k, (_, h) in cols.items()}


def check_entropy(fn) -> bool:
    """fn(P [E, L, D]) -> H [L, D]: entropy (nats) over emotions of each neuron's P normalised to sum 1, 0 log 0 = 0."""
    name = "check_entropy"
    P, expected = _entropy_cases()
    out, err = _call(fn, P.clone())
    H, err = (None, err) if err else _tensor(out, (1, P.shape[2]))
    if err:
        return _report(name, err, "")
    H = H[0]
    if torch.isnan(H).any():
        bad = [k for k, v in zip(expected, H) if torch.isnan(v)]
        return _report(
            name,
            f"NaN for: {bad[0]}. A probability of 0 gives 0 x log 0 = NaN in floating point; "
            "define 0 log 0 = 0, e.g. torch.where(q > 0, q * q.log(), 0)",
            "",
        )
    uniform = float(H[0])
    if math.isclose(uniform, math.log2(6), rel_tol=1e-6):
        return _report(
            name,
            f"uniform over 6 emotions gave {uniform:.4f} = log2(6): use the natural log "
            f"(nats), ln 6 = {math.log(6):.4f}",
            "",
        )
    if math.isclose(uniform, -math.log(6), rel_tol=1e-6):
        return _report(name, f"uniform gave {uniform:.4f} = -ln 6: the entropy is -sum q log q (mind the sign)", "")
    for (case, h), got in zip(expected.items(), H.tolist()):
        if not math.isclose(got, h, rel_tol=1e-6, abs_tol=1e-9):
            raw = -(torch.where(P > 0, P * P.clamp(min=1e-300).log(), torch.zeros_like(P))).sum(0)[0]
            hint = (
                " (that is the entropy of P itself: normalise each neuron's P over emotions to sum 1 first)"
                if torch.allclose(H, raw)
                else ""
            )
            return _report(name, f"case {case}: expected {h:.4f}, got {got:.4f}{hint}", "")
    g = torch.Generator().manual_seed(0)
    R = torch.rand((6, 3, 5), generator=g, dtype=torch.float64)
    R[R < 0.2] = 0  # some zeros, never a whole neuron (each keeps its largest value)
    R = R + (R.sum(0, keepdim=True) == 0).double() * 0.5
    out, err = _call(fn, R.clone())
    Hr, err = (None, err) if err else _tensor(out, (3, 5))
    if err:
        return _report(name, f"on random input {err}", "")
    ref = neurons.entropy(R)
    worst = float((Hr - ref).abs().max())
    if not worst < 1e-6:
        return _report(
            name,
            f"hand cases pass, but on random P [6, 3, 5] you differ from emolib.identify.neurons.entropy by "
            f"up to {worst:.3g} nats",
            "",
        )
    return _report(
        name,
        None,
        f"{len(expected)} hand-computed cases and {R.shape[1] * R.shape[2]} random neurons "
        f"agree with emolib.identify.neurons.entropy",
    )


# ------------------------------------------------------------------ selection


def _selection_table() -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded firing counts [6, 3, 40] over 1000 tokens per emotion, with rarely firing one-emotion neurons that
    only LAPE's filter keeps out."""
    g = torch.Generator().manual_seed(1)
    counts = torch.randint(100, 900, (6, 3, 40), generator=g)
    counts[:, :, :6] = 0
    counts[0, :, :6] = torch.randint(1, 20, (3, 6), generator=g)  # zero entropy, but rare
    return counts, torch.full((6,), 1000)


def _as_pairs(x) -> set[tuple[int, int]] | None:
    """A learner's selection as a set of (layer, index), or None when it is not a list of pairs."""
    try:
        return {(int(a), int(b)) for a, b in (x.tolist() if torch.is_tensor(x) else x)}
    except Exception:
        return None


def check_selection(fn, top_rate: float = 0.1, filter_quantile: float = 0.8) -> bool:
    """fn(P [E, L, D], top_rate, filter_quantile) -> the (layer, index) pairs of the top_rate x L x D lowest-entropy
    neurons among those whose largest P reaches the filter_quantile of all P values (LAPE's filter)."""
    name = "check_selection"
    counts, tokens = _selection_table()
    E, L, D = counts.shape
    emotions = [f"e{j}" for j in range(E)]
    ref = neurons.select(counts, tokens, emotions, top_rate, filter_quantile, min_count=0)
    want = {(a, b) for a, b, _ in ref["selected"]}
    P = ref["P"]
    out, err = _call(fn, P.clone(), top_rate, filter_quantile)
    if err:
        return _report(name, err, "")
    got = _as_pairs(out)
    if got is None:
        return _report(name, f"returned {type(out).__name__}; return a list of (layer, index) pairs", "")
    if got == want:
        return _report(
            name,
            None,
            f"the same {len(want)} of {L * D} neurons as emolib.identify.neurons.select "
            f"(top_rate {top_rate}, filter_quantile {filter_quantile})",
        )
    H = ref["entropy"]
    unfiltered = neurons.select(counts, tokens, emotions, top_rate, None, min_count=0)
    if got == {(a, b) for a, b, _ in unfiltered["selected"]}:
        return _report(
            name,
            "you selected without LAPE's filter: keep only neurons whose largest P is at least the "
            f"filter_quantile of all P values (here {ref['threshold']:.3f}); rarely firing neurons "
            "otherwise win with zero entropy",
            "",
        )
    if len(got) != len(want):
        return _report(name, f"{len(got)} neurons selected; expected k = round(top_rate x L x D) = {ref['k']}", "")
    ineligible = [u for u in got if not (0 <= u[0] < L and 0 <= u[1] < D) or not ref["eligible"][u]]
    if ineligible:
        return _report(
            name,
            f"{len(ineligible)} of your neurons do not pass the filter (largest P >= "
            f"{ref['threshold']:.3f}), e.g. {ineligible[0]}",
            "",
        )
    if min(float(H[u]) for u in got) > max(float(H[u]) for u in want):
        return _report(name, "you picked the highest entropies: emotion neurons are the lowest-entropy ones", "")
    return _report(
        name,
        f"{len(got - want)} of your {len(got)} neurons differ from emolib's, e.g. {sorted(got - want)[0]}"
        f" (entropy {float(H[sorted(got - want)[0]]):.4f}; the largest selected entropy is "
        f"{max(float(H[u]) for u in want):.4f})",
        "",
    )


# ------------------------------------------------------------------ counting hook


@lru_cache(maxsize=1)
def tiny_model():
    """The 4-layer random Llama of the tests (float32, CPU; no download)."""
    return models.load_model("tiny-random-llama", dtype="float32", device="cpu")


def _hook_unit(hook_factory) -> str | None:
    """The counting hook on a hand-made activation: what is wrong, or None."""
    counts = torch.zeros(4, dtype=torch.long)
    keep = torch.tensor([[True, True, False]])
    out = torch.tensor([[[1.0, 0.0, -1.0, 2.0], [0.5, 0.0, 0.0, -3.0], [9.0, 9.0, 9.0, 9.0]]])
    hook, err = _call(hook_factory, counts, keep)
    if err:
        return err
    ret, err = _call(hook, None, (out.clone(),), out)
    if err and "UnboundLocalError" in err:
        return (
            err.replace("your function", "your hook") + " (inside the hook, `counts += ...` makes counts a new "
            "local name: add in place with counts.add_(...))"
        )
    if err:
        return err.replace("your function", "your hook")
    if ret is not None:
        return "your hook returned a value, which would replace act_fn's output: add to counts and return nothing"
    want = [2, 0, 0, 1]
    got = counts.tolist()
    if got == want:
        return None
    hand = "a hand-made activation [[1, 0, -1, 2], [0.5, 0, 0, -3]] plus a position outside keep"
    if got == [0, 0, 0, 0]:
        return f"on {hand}, counts stayed zero: add into the given tensor in place (counts.add_(...))"
    if got == [2, 2, 1, 1]:
        return (
            f"on {hand}, you counted activations equal to 0 as firing ({got}, expected {want}): a neuron fires "
            f"when its activation is > 0, strictly"
        )
    if got == [3, 1, 1, 2]:
        return (
            f"on {hand}, you counted positions outside keep ({got}, expected {want}): count only where keep is "
            f"True (not padding, not the prompt)"
        )
    return f"on {hand}: expected counts {want}, got {got}"


def _recount(model, tok, texts: list[str]) -> tuple[torch.Tensor, int]:
    """Brute force: ([L, D] firing counts over the dialogues' own tokens, tokens counted), one unpadded text at a
    time."""
    L, D = models.ffn_shape(model)
    counts, n = torch.zeros((L, D), dtype=torch.long), 0
    for d in texts:
        ids, a, b = record.encode(tok, d, "raw", None)
        acts: list[torch.Tensor] = []
        hs = [
            m.act_fn.register_forward_hook(lambda mod, args, o: acts.append(o[0, a:b].clone()))  # noqa: B023 (the hook runs within this iteration)
            for m in models.ffn_layers(model)
        ]
        try:
            with torch.inference_mode():
                model.model(input_ids=torch.tensor([ids]))
        finally:
            for h in hs:
                h.remove()
        counts += (torch.stack(acts) > 0).sum(1)
        n += b - a
    return counts, n


def check_counting_hook(hook_factory) -> bool:
    """hook_factory(counts [D], keep [B, T] bool) -> a forward hook for mlp.act_fn that adds to counts, per neuron,
    the positions where keep is True and the activation is > 0."""
    name = "check_counting_hook"
    problem = _hook_unit(hook_factory)
    if problem:
        return _report(name, problem, "")
    model, tok = tiny_model()
    L, D = models.ffn_shape(model)
    ids, attn, keep = record.make_batch([record.encode(tok, d, "raw", None) for d in DIALOGUES], tok.pad_token_id)
    counts = [torch.zeros(D, dtype=torch.long) for _ in range(L)]
    handles = []
    try:
        for layer, mlp in enumerate(models.ffn_layers(model)):
            hook, err = _call(hook_factory, counts[layer], keep)
            if err:
                return _report(name, err, "")
            handles.append(mlp.act_fn.register_forward_hook(hook))
        with torch.inference_mode():
            _, err = _call(lambda: model.model(input_ids=ids, attention_mask=attn, use_cache=False))
        if err:
            return _report(name, err.replace("your function", "the forward pass with your hook"), "")
    finally:
        for h in handles:
            h.remove()
    got = torch.stack(counts).long()
    brute, n_tokens = _recount(model, tok, DIALOGUES)
    if (got > n_tokens).any():
        return _report(
            name, f"some neuron fires on more than the {n_tokens} counted tokens: count only where keep is True", ""
        )
    ours = record.record_counts(model, tok, {"all": DIALOGUES}, tensor="act", batch_size=2)
    ours = ours["counts"].sum(0)[0]
    if not torch.equal(got, brute):
        n = int((got != brute).sum())
        return _report(
            name,
            f"on the tiny model ({len(DIALOGUES)} padded dialogues, {n_tokens} counted tokens) your "
            f"counts differ from a brute-force recount for {n} of {L * D} neurons",
            "",
        )
    assert torch.equal(brute, ours), (
        "emolib.identify.record disagrees with the brute-force recount"
    )  # the book's own bug
    return _report(
        name,
        None,
        f"{L} layers x {D} neurons over {n_tokens} counted tokens ({len(DIALOGUES)} padded "
        f"dialogues) equal a brute-force recount and emolib.identify.record's counts",
    )


# ------------------------------------------------------------------ ablation hook


def _logits(model, ids: torch.Tensor, layer: int | None = None, hook=None, capture: dict | None = None) -> torch.Tensor:
    """Logits with an optional forward pre-hook on a layer's down_proj (and that MLP's output kept in capture)."""
    mlp = models.ffn_layers(model)[layer if layer is not None else 0]
    handles = [mlp.down_proj.register_forward_pre_hook(hook)] if hook is not None else []
    if capture is not None:
        handles.append(mlp.register_forward_hook(lambda m, a, o: capture.__setitem__("out", o.detach().clone())))
    try:
        with torch.no_grad():
            return model(ids).logits
    finally:
        for h in handles:
            h.remove()


def check_ablation_hook(hook_factory) -> bool:
    """hook_factory(idx: LongTensor) -> a forward pre-hook (module, args) for mlp.down_proj that sets neurons idx of
    its input to 0 and leaves the others alone."""
    name = "check_ablation_hook"
    model, tok = tiny_model()
    L, D = models.ffn_shape(model)
    ids = torch.tensor([tok("A: I can't believe they did that!\nB: Neither can I.")["input_ids"]])
    ref = _logits(model, ids)
    hook, err = _call(hook_factory, torch.tensor([], dtype=torch.long))
    if err:
        return _report(name, err, "")
    if not callable(hook):
        return _report(name, f"hook_factory returned {type(hook).__name__}; return the hook function", "")
    try:
        n_args = len(inspect.signature(hook).parameters)
    except (TypeError, ValueError):
        n_args = 2
    if n_args == 3:
        return _report(
            name,
            "your hook takes (module, args, output): that is a forward hook, acting on down_proj's "
            "output (the residual stream's dimensions). Ablation acts on its input, the FFN neurons: "
            "write a forward pre-hook (module, args) that zeroes args[0][..., idx]",
            "",
        )
    steps = []
    out, err = _call(_logits, model, ids, 1, hook)
    if err:
        return _report(name, f"with an empty mask, {err.replace('your function', 'your hook')}", "")
    if not torch.equal(out, ref):
        return _report(
            name,
            f"an empty mask changed the logits (by up to {float((out - ref).abs().max()):.3g}): "
            "only neurons idx may change",
            "",
        )
    steps.append("an empty mask changes no logit")
    hook, err = _call(hook_factory, torch.arange(D))
    cap: dict = {}
    if not err:
        _, err = _call(_logits, model, ids, 1, hook, cap)
    if err:
        return _report(name, f"with every neuron of a layer masked, {err.replace('your function', 'your hook')}", "")
    if float(cap["out"].abs().max()) != 0:
        return _report(
            name,
            "with all neurons of layer 1 masked, that MLP's output is not zero (largest "
            f"{float(cap['out'].abs().max()):.3g}): set args[0][..., idx] = 0 and return the input "
            "(or change it in place)",
            "",
        )
    steps.append("a fully masked layer zeroes that MLP's output")
    idx = torch.arange(3, D, 7)
    with ablate.ablate(model, {2: idx.tolist()}, "zero"), torch.no_grad():
        want = model(ids).logits
    hook, err = _call(hook_factory, idx.clone())
    if not err:
        out, err = _call(_logits, model, ids, 2, hook)
    if err:
        return _report(
            name, f"with {len(idx)} neurons of layer 2 masked, {err.replace('your function', 'your hook')}", ""
        )
    if not torch.allclose(out, want, atol=1e-5, rtol=1e-5):
        return _report(
            name,
            f"with {len(idx)} neurons of layer 2 masked, your logits differ from emolib.lm.ablate's by up "
            f"to {float((out - want).abs().max()):.3g}",
            "",
        )
    steps.append(f"{len(idx)} masked neurons match emolib.lm.ablate")
    return _report(name, None, ", ".join(steps) + " (tiny random Llama)")
