"""Stage 1 pieces: topics, voting, splits, Fleiss' kappa, the EmoPrism loader, parsing generated dialogues."""

import gzip
import json
from pathlib import Path

import pytest

from emolib.dataset import annotate, data
from emolib.emotions import EMOTIONS

FIXTURE = Path(__file__).parent / "fixtures" / "emoprism-mini.json.gz"


def test_topics_are_emoprism_taxonomy():
    assert len(data.load_topics("base")) == 315 and len(data.load_topics("all")) == 5040
    a, b = data.sample_topics("all", 20, 1), data.sample_topics("all", 20, 1)
    assert a == b and len(set(a)) == 20 and a != data.sample_topics("all", 20, 2)
    with pytest.raises(ValueError, match="n_topics"):
        data.sample_topics("base", 400, 0)


def test_vote_follows_emoprism_rule():
    assert data.vote("anger", ["anger", "anger", "fear"], 3) == "anger"
    assert data.vote("anger", ["anger", "fear", "fear"], 3) is None
    assert data.vote("anger", ["fear", "fear", "fear"], 3) == "fear"
    assert data.vote("anger", ["fear", "sadness", "disgust"], 1) == "anger"  # ties favour the theme


def test_stratified_split_keeps_every_emotion():
    rows = [{"label": e, "dialogue": f"{e}{i}"} for e in EMOTIONS for i in range(10)]
    tr, ev = data.stratified_split(rows, 0.3, 0, None, list(EMOTIONS))
    assert len(ev) == 18 and len(tr) == 42 and not {r["dialogue"] for r in tr} & {r["dialogue"] for r in ev}
    assert {r["label"] for r in ev} == set(EMOTIONS)
    tr2, _ = data.stratified_split(rows, 0.3, 0, 4, list(EMOTIONS))
    assert len(tr2) == 6 * 3
    with pytest.raises(ValueError, match="only 1 kept dialogue"):
        data.stratified_split(rows[:11], 0.3, 0, None, list(EMOTIONS))


def test_fleiss_kappa_known_values():
    assert annotate.fleiss_kappa([["a", "a"], ["b", "b"]], ["a", "b"]) == pytest.approx(1.0)
    # Fleiss (1971)-style toy: 4 items, 3 raters
    k = annotate.fleiss_kappa([["a", "a", "b"], ["a", "b", "b"], ["a", "a", "a"], ["b", "b", "b"]], ["a", "b"])
    assert k == pytest.approx(1 / 3, abs=1e-9)


def test_emoprism_loader_on_fixture():
    rows = data.load_emoprism(FIXTURE, list(EMOTIONS))
    raw = json.loads(gzip.open(FIXTURE, "rt").read())
    assert len(rows) == sum(r["label"] is not None for r in raw) and rows
    assert {"topic", "dialogue", "theme", "label", "style", "gpt-4o-mini"} <= set(rows[0])
    only = data.load_emoprism(FIXTURE, ["anger", "fear"])
    assert {r["theme"] for r in only} <= {"anger", "fear"}


def test_emoprism_loader_rejects_bad_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"topic": "x", "dialogue": "A: hi"}]))
    with pytest.raises(ValueError, match="record 0 .* lacks field\\(s\\) theme, label"):
        data.load_emoprism(bad, list(EMOTIONS))
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="is not a JSON list or JSON-lines file"):
        data.load_emoprism(bad, list(EMOTIONS))
    bad.write_text(json.dumps([{"topic": "x", "dialogue": "A: hi", "theme": "boredom", "label": "anger"}]))
    with pytest.raises(ValueError, match="unknown emotion 'boredom'"):
        data.load_emoprism(bad, list(EMOTIONS))
    with pytest.raises(ValueError, match="file not found"):
        data.load_emoprism(tmp_path / "none.json", list(EMOTIONS))


def test_parse_generated_dialogue():
    assert (
        data.parse_dialogue("A: hi\nB: hey\nA: so sad\nB: sorry\nThanks for reading!")
        == "A: hi\nB: hey\nA: so sad\nB: sorry"
    )
    assert data.parse_dialogue("A: hi\nB: hey") is None  # too short
    assert data.parse_dialogue("A: hi\nA: again\nB: hey") is None  # not alternating
    assert data.parse_dialogue("Sure! Here it is") is None


def test_hf_synthesis_keeps_formatted_outputs_and_counts_the_rest(tiny):
    import torch

    model, tok = tiny
    replies = iter(
        [
            " I lost my keys again!\nB: Oh no, where?\nA: No idea, I'm so mad.",  # good
            "Sure, here is a dialogue about it.",
        ]
        * 10
    )  # off-format

    class Fake(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def get_input_embeddings(self):
            return model.get_input_embeddings()

        def generate(self, input_ids, attention_mask, **kw):
            outs = [
                torch.cat(
                    [row, torch.tensor(tok(next(replies), add_special_tokens=False)["input_ids"] + [tok.eos_token_id])]
                )
                for row in input_ids
            ]
            L = max(len(o) for o in outs)
            return torch.stack([torch.nn.functional.pad(o, (0, L - len(o)), value=tok.pad_token_id) for o in outs])

    rows, stats = data.synthesize_hf(Fake(), tok, ["keys"], ["anger", "fear"], 1, seed=0, retries=1, batch_size=2)
    assert [r["theme"] for r in rows] == ["anger"] and rows[0]["dialogue"].startswith("A: I lost my keys")
    # try 1: one good, one off-format; try 2 retries the missing one, gets the good text again: a duplicate, dropped
    cut = data.parse_dialogue("A: one\nB: two\nA: three\nB: fou")
    assert cut is not None  # parse alone keeps a cut-off turn; synthesize_hf drops it when no EOS was generated
    assert stats["generated"] == 3 and stats["off_format"] == 1 and stats["dropped"] == 1 and stats["duplicate"] == 1
