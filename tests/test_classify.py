"""Label scoring is exact: batched = one at a time, prefix cache = full recompute, multi-token labels = brute force."""

import numpy as np
import pytest
import torch

from emolib.emotions import EMOTIONS
from emolib.lm import classify, prompts


@pytest.mark.parametrize("chat", [True, False])
def test_batched_equals_one_at_a_time_and_prefix_cache_is_exact(tiny, dialogues, chat):
    model, tok = tiny
    clf = classify.make_classifier(model, tok, list(EMOTIONS), chat, few_shot=1, batch_size=5, calibrate=True)
    batched = classify.label_scores(clf, dialogues[0])
    clf.batch_size = 1
    single = classify.label_scores(clf, dialogues[0])
    clf.prefix_cache = False
    full = classify.label_scores(clf, dialogues[0])
    assert np.allclose(batched, single, atol=1e-4) and np.allclose(batched, full, atol=1e-4)
    assert (batched.argmax(1) == single.argmax(1)).all()
    preds, _ = classify.predict(clf, dialogues[0])
    assert preds == [clf.labels[j] for j in single.argmax(1)]


def test_multi_token_labels_match_brute_force(tiny, dialogues):
    model, tok = tiny
    prefix = tok("Say something:", add_special_tokens=False)["input_ids"]
    bodies = [tok(d, add_special_tokens=False)["input_ids"] for d in dialogues[0][:3]]
    labels = [[11, 12, 13], [14], [15, 16]]
    with torch.inference_mode():
        got = classify.score_batch(
            model, prefix, bodies, labels, tok.pad_token_id, classify.cache_prefix(model, prefix)
        )
        for i, b in enumerate(bodies):
            for j, lab in enumerate(labels):
                logp = torch.log_softmax(model(torch.tensor([prefix + b + lab])).logits.float(), -1)[0]
                n = len(prefix) + len(b)
                want = sum(logp[n - 1 + t, lab[t]].item() for t in range(len(lab)))
                assert abs(got[i, j].item() - want) < 1e-3


def test_calibration_subtracts_the_content_free_scores(tiny, dialogues):
    model, tok = tiny
    clf = classify.make_classifier(model, tok, list(EMOTIONS), True, calibrate=False)
    raw = classify.label_scores(clf, dialogues[0][:2])
    free = classify.label_scores(clf, [prompts.CONTENT_FREE])[0]
    clf.calibrate = True
    assert np.allclose(classify.label_scores(clf, dialogues[0][:2]), raw - free, atol=1e-4)


def test_generate_protocol_and_parsing(tiny, dialogues):
    model, tok = tiny
    clf = classify.make_classifier(model, tok, list(EMOTIONS), True, batch_size=4)
    preds, scores = classify.predict(clf, dialogues[0][:5], "generate", max_new_tokens=3)
    assert scores is None and len(preds) == 5 and all(p is None or p in EMOTIONS for p in preds)
    assert classify.parse_label("I think: Joy!", list(EMOTIONS)) == "happiness"
    assert classify.parse_label("Fear, then anger", list(EMOTIONS)) == "fear"
    assert classify.parse_label("no idea", list(EMOTIONS)) is None


def test_prompt_parts_surround_the_dialogue(tiny):
    _, tok = tiny
    parts = prompts.build(tok, list(EMOTIONS), chat=True)
    text = tok.decode(parts.prefix + prompts.encode_dialogue(tok, "A: hi\nB: hello") + parts.suffix)
    assert "A: hi\nB: hello" in text and text.rstrip().endswith(prompts.ANSWER)
    assert len(parts.labels) == 6 and all(parts.labels)


@pytest.mark.parametrize("sliding_window", [512, 16])
def test_exact_on_gemma3_layout_with_sliding_window(tiny, dialogues, sliding_window):
    """Gemma3 mixes sliding-window and global attention layers; the prefix cache and padding stay exact."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

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
            sliding_window=sliding_window,
            pad_token_id=tok.pad_token_id,
        )
    ).eval()
    clf = classify.make_classifier(g, tok, list(EMOTIONS), False, few_shot=1, batch_size=5)
    batched = classify.label_scores(clf, dialogues[0])
    clf.batch_size, clf.prefix_cache = 1, False
    assert np.allclose(batched, classify.label_scores(clf, dialogues[0]), atol=1e-4)
