"""Recording counts firing tokens exactly: brute-force recount, masking of padding and prompt, resume, determinism."""

import torch

from emolib.emotions import EMOTIONS
from emolib.identify import record
from emolib.lm import models, prompts


def _capture(model, ids):
    """Activations of every layer's act_fn and down_proj input for one unpadded sequence."""
    acts, prods, hs = [], [], []
    for mlp in models.ffn_layers(model):
        hs.append(mlp.act_fn.register_forward_hook(lambda m, a, o: acts.append(o[0].clone())))
        hs.append(mlp.down_proj.register_forward_pre_hook(lambda m, a: prods.append(a[0][0].clone())))
    try:
        with torch.inference_mode():
            model.model(input_ids=torch.tensor([ids]))
    finally:
        for h in hs:
            h.remove()
    return torch.stack(acts), torch.stack(prods)  # [L, T, D]


def _brute(model, tok, by_emotion, tensor, framing, parts, answer=False):
    L, D = models.ffn_shape(model)
    counts = torch.zeros((len(by_emotion), L, D), dtype=torch.long)
    tokens = torch.zeros(len(by_emotion), dtype=torch.long)
    sums = torch.zeros((L, D), dtype=torch.float64)
    for ei, ds in enumerate(by_emotion.values()):
        for d in ds:
            ids, a, b = record.encode(tok, d, framing, parts)
            act, prod = _capture(model, ids)
            a, b = (len(ids) - 1, len(ids)) if answer else (a, b)  # answer: the prompt's last position
            h = (act if tensor == "act" else prod)[:, a:b]
            counts[ei] += (h > 0).sum(1)
            tokens[ei] += h.shape[1]
            sums += prod[:, a:b].double().sum(1)
    return counts, tokens, sums


def _data(dialogues):
    texts, emos = dialogues
    return {e: [t for t, x in zip(texts, emos) if x == e] for e in EMOTIONS}


def test_counts_equal_a_brute_force_recount(tiny, dialogues):
    model, tok = tiny
    by = _data(dialogues)
    for tensor in ("act", "product"):
        st = record.record_counts(model, tok, by, tensor=tensor, batch_size=3)
        c, t, s = _brute(model, tok, by, tensor, "raw", None)
        assert torch.equal(st["counts"].sum(0), c) and torch.equal(st["tokens"].sum(0), t)
        assert torch.allclose(st["sums"], s, rtol=1e-4, atol=1e-4)
        assert (st["counts"].sum(0) <= t.view(-1, 1, 1)).all()


def test_padding_and_template_tokens_are_not_counted(tiny, dialogues):
    model, tok = tiny
    by = _data(dialogues)
    parts = prompts.build(tok, list(EMOTIONS), chat=True)
    st = record.record_counts(model, tok, by, framing="prompt", parts=parts, batch_size=4)
    c, t, _ = _brute(model, tok, by, "act", "prompt", parts)
    assert torch.equal(st["counts"].sum(0), c)
    n_dialogue_tokens = sum(len(prompts.encode_dialogue(tok, d)) for ds in by.values() for d in ds)
    assert int(st["tokens"].sum()) == n_dialogue_tokens  # no prefix, suffix, special or pad token
    last = record.record_counts(model, tok, by, tokens="answer", framing="prompt", parts=parts, batch_size=4)
    c, t, _ = _brute(model, tok, by, "act", "prompt", parts, answer=True)
    assert torch.equal(last["counts"].sum(0), c) and torch.equal(last["tokens"].sum(0), torch.tensor([2] * 6))


def test_deterministic_and_resumable(tiny, dialogues, tmp_path, monkeypatch):
    model, tok = tiny
    by = _data(dialogues)
    full = record.record_counts(model, tok, by, batch_size=1)
    again = record.record_counts(model, tok, by, batch_size=1)
    assert torch.equal(full["counts"], again["counts"])
    # interrupt after 5 batches, then resume from the saved partial state
    path = tmp_path / "counts.partial.pt"
    calls = {"n": 0}
    base_forward = model.model.forward

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return base_forward(*a, **k)

    monkeypatch.setattr(model.model, "forward", flaky)
    try:
        record.record_counts(model, tok, by, batch_size=1, state_path=path, save_every=0)
    except KeyboardInterrupt:
        pass
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["done"] == 5
    resumed = record.record_counts(model, tok, by, batch_size=1, state_path=path, save_every=0)
    assert torch.equal(resumed["counts"], full["counts"]) and torch.equal(resumed["tokens"], full["tokens"])
    assert torch.allclose(resumed["sums"], full["sums"])


def test_halves_partition_the_dialogues(tiny, dialogues):
    model, tok = tiny
    st = record.record_counts(model, tok, _data(dialogues), batch_size=4)
    assert st["counts"].shape[0] == 2 and (st["tokens"] > 0).any(1).all()


def test_counts_use_the_models_own_activation_on_gemma3(tiny, dialogues):
    """Gemma3 uses GELU: counting goes through its act_fn hook, checked against a brute-force recount."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    _, tok = tiny
    torch.manual_seed(0)
    gemma = Gemma3ForCausalLM(
        Gemma3TextConfig(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=8,
            pad_token_id=tok.pad_token_id,
        )
    ).eval()
    by = _data(dialogues)
    st = record.record_counts(gemma, tok, by, batch_size=4)
    c, t, _ = _brute(gemma, tok, by, "act", "raw", None)
    assert torch.equal(st["counts"].sum(0), c) and torch.equal(st["tokens"].sum(0), t)
