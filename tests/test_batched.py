"""Batched masks are exact: K masks in one pass = one mask at a time (also reusing lower layers); fixed calibration."""

import dataclasses

import numpy as np
import pytest
import torch

from emolib.emotions import EMOTIONS
from emolib.lm import ablate, batched, classify, models

MASKS = [{}, {0: [1, 2, 3], 2: [5]}, {1: list(range(0, 128, 3))}, {3: [7, 8]}, {0: []}]
UPPER = [{2: [4, 9, 30]}, {}, {3: list(range(40))}, {2: [1], 3: [2]}]


def _one_at_a_time(clf, texts, masks, calibration=None, **kw):
    out = []
    for m in masks:
        with ablate.ablate(clf.model, m, **kw):
            out.append(classify.label_scores(clf, texts, calibration=calibration))
    return np.stack(out)


@pytest.mark.parametrize("reuse_lower", [False, True])
@pytest.mark.parametrize("masks", [MASKS, UPPER], ids=["all-layers", "upper-layers"])
def test_batched_masks_equal_one_mask_at_a_time(tiny, dialogues, reuse_lower, masks):
    model, tok = tiny
    clf = classify.make_classifier(model, tok, list(EMOTIONS), True, few_shot=1, batch_size=5, calibrate=True)
    want = _one_at_a_time(clf, dialogues[0], masks)
    got = batched.score_masks(clf, dialogues[0], masks, reuse_lower=reuse_lower, items_per_batch=5)
    assert got.shape == (len(masks), len(dialogues[0]), 6)
    assert np.allclose(got, want, atol=1e-4)
    # the masks do change the scores, so equality is not trivial
    assert max(np.abs(want[k] - want[1 if masks is UPPER else 0]).max() for k in range(len(masks))) > 1e-3


def test_batched_fixed_calibration_uncalibrated_and_no_prefix_cache(tiny, dialogues):
    model, tok = tiny
    clf = classify.make_classifier(model, tok, list(EMOTIONS), False, batch_size=4, calibrate=False)
    texts = dialogues[0][:7]
    assert np.allclose(batched.score_masks(clf, texts, MASKS), _one_at_a_time(clf, texts, MASKS), atol=1e-4)
    cal = classify.calibration_vector(clf)
    assert np.allclose(
        batched.score_masks(clf, texts, UPPER, calibration=cal),
        _one_at_a_time(clf, texts, UPPER, calibration=cal),
        atol=1e-4,
    )
    clf.prefix_cache = False
    assert np.allclose(
        batched.score_masks(clf, texts, UPPER, items_per_batch=3), _one_at_a_time(clf, texts, UPPER), atol=1e-4
    )


@pytest.mark.parametrize("reuse_lower", [False, True])
def test_batched_multi_token_labels(tiny, dialogues, reuse_lower):
    model, tok = tiny
    clf = classify.make_classifier(model, tok, list(EMOTIONS), False, batch_size=3, calibrate=True)
    clf.parts = dataclasses.replace(clf.parts, labels=[[11, 12, 13], [14], [15, 16]], label_names=["a", "b", "c"])
    texts = dialogues[0][:5]
    got = batched.score_masks(clf, texts, UPPER, reuse_lower=reuse_lower)
    assert got.shape == (len(UPPER), 5, 3) and np.allclose(got, _one_at_a_time(clf, texts, UPPER), atol=1e-4)


@pytest.mark.parametrize("mode", ["mean", "scale"])
def test_batched_mean_and_scale_modes(tiny, dialogues, mode):
    model, tok = tiny
    clf = classify.make_classifier(model, tok, list(EMOTIONS), True, batch_size=6)
    means = torch.randn(4, 128)
    kw = {"mode": mode, "means": means, "scale": 0.25}
    assert np.allclose(
        batched.score_masks(clf, dialogues[0][:6], MASKS, **kw),
        _one_at_a_time(clf, dialogues[0][:6], MASKS, **kw),
        atol=1e-4,
    )


def _ids(tok):
    return torch.tensor([tok("A: I can't believe they did that!\nB: Neither can I.")["input_ids"]])


def test_masks_that_select_nothing_change_no_logit(tiny):
    model, tok = tiny
    ids = _ids(tok)
    with torch.inference_mode():
        ref = model(ids).logits
        with ablate.ablate_rows(model, [{}, {0: [], 3: []}], n_items=1):
            assert not any(m.down_proj._forward_pre_hooks for m in models.ffn_layers(model))
            empty = model(ids.repeat(2, 1)).logits
        with ablate.ablate_rows(model, [{}, {1: [4, 5]}, {}], n_items=1):
            mixed = model(ids.repeat(3, 1)).logits
    assert torch.equal(empty, ref.repeat(2, 1, 1))
    # rows whose mask is empty are unchanged (keep = 1 exactly), the masked row is not
    assert torch.allclose(mixed[0], ref[0], atol=1e-5) and torch.allclose(mixed[2], ref[0], atol=1e-5)
    assert (mixed[1] - ref[0]).abs().max() > 1e-4


def test_row_masks_follow_set_rows_and_repeats(tiny):
    model, tok = tiny
    ids = _ids(tok)
    masks = [{}, {1: [4, 5]}]
    with torch.inference_mode():
        ref = model(ids).logits
        with ablate.ablate(model, masks[1]):
            masked = model(ids).logits
        with ablate.ablate_rows(model, masks) as rows:
            rows.set_rows([1, 0])
            two = model(ids.repeat(2, 1)).logits
            four = model(ids.repeat(4, 1)).logits  # each set row repeated twice in place: masks 1, 1, 0, 0
            with pytest.raises(ValueError, match="does not repeat"):
                model(ids.repeat(3, 1))
    assert torch.allclose(two[0], masked[0], atol=1e-5) and torch.allclose(two[1], ref[0], atol=1e-5)
    assert torch.allclose(four[1], masked[0], atol=1e-5) and torch.allclose(four[2], ref[0], atol=1e-5)


def test_hooks_are_removed_after_an_exception(tiny):
    model, _ = tiny
    layers = models.decoder_layers(model)
    with pytest.raises(RuntimeError, match="boom"):
        with ablate.ablate_rows(model, [{0: [1]}, {3: [2]}], n_items=2), batched.tile_from(model, 1, 2):
            assert models.ffn_layers(model)[0].down_proj._forward_pre_hooks and layers[1]._forward_pre_hooks
            raise RuntimeError("boom")
    assert all(not m.down_proj._forward_pre_hooks for m in models.ffn_layers(model))
    assert all(not layer._forward_pre_hooks for layer in layers)
    with pytest.raises(ValueError, match="ablation mode"):
        with ablate.ablate_rows(model, [{0: [1]}], mode="erase"):
            pass


def test_first_masked_layer():
    assert batched.first_masked_layer([{}, {5: [1], 2: [3]}, {3: []}]) == 2
    assert batched.first_masked_layer([{}, {1: []}]) is None


# calibration held fixed (classify.calibration_vector)


def test_fixed_calibration_equals_recomputed_without_ablation(tiny, dialogues):
    model, tok = tiny
    clf = classify.make_classifier(model, tok, list(EMOTIONS), True, batch_size=4, calibrate=True)
    cal = classify.calibration_vector(clf)
    recomputed = classify.label_scores(clf, dialogues[0])
    with ablate.ablate(model, {}):
        fixed = classify.label_scores(clf, dialogues[0], calibration=cal)
    assert np.allclose(fixed, recomputed, atol=1e-5)
    clf.calibrate = False
    raw = classify.label_scores(clf, dialogues[0])
    assert np.allclose(raw - cal, fixed, atol=1e-5)  # uncalibrated still works, and fixed = raw - vector
    preds, s = classify.predict(clf, dialogues[0], calibration=cal)
    assert np.allclose(s, fixed, atol=1e-5) and preds == [clf.labels[j] for j in fixed.argmax(1)]


def test_fixed_calibration_under_a_mask_keeps_the_unablated_prior(tiny, dialogues):
    model, tok = tiny
    clf = classify.make_classifier(model, tok, list(EMOTIONS), True, batch_size=4, calibrate=True)
    cal = classify.calibration_vector(clf)
    mask = {1: list(range(0, 128, 2)), 2: list(range(64))}
    with ablate.ablate(model, mask):
        recomputed = classify.label_scores(clf, dialogues[0])
        fixed = classify.label_scores(clf, dialogues[0], calibration=cal)
        cal_masked = classify.calibration_vector(clf)
    # fixed - recomputed = (masked content-free scores) - (unablated ones): the same shift for every item, not zero
    diff = fixed - recomputed
    assert np.allclose(diff, cal_masked - cal, atol=1e-4)
    assert np.abs(cal_masked - cal).max() > 1e-3
