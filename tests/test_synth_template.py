"""Tests for emolib.lm.synth_template: format, determinism, uniqueness, style purity, variety."""

import collections
import json
import os
import random
import re
import subprocess
import sys

import pytest

from emolib.lm import synth_template as st
from emolib.lm.synth_template import EMOTION_LEXICON, EMOTIONS, STYLES, generate_dialogue, generate_dialogues

# Topics free of lexicon words and of sentence punctuation (so sentence counts are exact).
TOPICS = [
    "basket making",
    "Steven Spielberg Movies",
    "I would like to discuss about financial independency",
    "U.S. Senate",
    "chess",
    "quantum computing",
    "gardening",
    "jazz music",
    "the Roman Empire",
    "marathon training",
    "vintage cars",
    "cooking with tofu",
    "climate policy",
    "knitting",
    "Formula 1",
    "birdwatching",
    "cryptocurrency",
    "medieval history",
    "yoga",
    "photography",
    "board games",
    "space exploration",
    "stand-up comedy",
    "ancient Egypt",
    "urban planning",
    "origami",
    "the Olympics",
    "opera",
    "home brewing",
    "machine learning",
    "poetry",
    "surfing",
    "tax law",
    "Renaissance art",
    "video game design",
    "beekeeping",
    "public transport",
    "K-pop",
    "mountain climbing",
    "stamp collecting",
]
PLAIN_TOPICS = [t for t in TOPICS if "." not in t]

_SENT_END = re.compile(r"[.!?]+(?=\s|$)")
_LEX_RE = {
    e: re.compile(r"\b(?:" + "|".join(r"\s+".join(map(re.escape, w.split())) for w in ws) + r")\b", re.I)
    for e, ws in EMOTION_LEXICON.items()
}


def _turns(dialogue):
    return dialogue.split("\n")


def _sentences(dialogue):
    out = []
    for line in _turns(dialogue):
        body = line[3:]
        parts = re.split(r"(?<=[.!?])\s+", body)
        out.extend(p.strip() for p in parts if p.strip())
    return out


@pytest.fixture(scope="module")
def corpus():
    return generate_dialogues(TOPICS, list(EMOTIONS), 3, seed=123)


def test_format(corpus):
    assert len(corpus) == len(TOPICS) * len(EMOTIONS) * 3
    for row in corpus:
        assert set(row) == {"topic", "theme", "dialogue", "style"}
        assert row["style"] in STYLES and row["theme"] in EMOTIONS
        lines = _turns(row["dialogue"])
        assert 3 <= len(lines) <= 8, row["dialogue"]
        for i, line in enumerate(lines):
            assert line.startswith("AB"[i % 2] + ": "), row["dialogue"]
            assert line[3:].strip() and line == line.rstrip()
            if row["topic"] in PLAIN_TOPICS:
                n = len(_SENT_END.findall(line[3:]))
                assert 1 <= n <= 3, line
        assert row["topic"] in row["dialogue"]


def test_shape_varies(corpus):
    lengths = collections.Counter(len(_turns(r["dialogue"])) for r in corpus)
    assert set(lengths) == set(range(3, 9))
    assert min(lengths.values()) > 0.08 * len(corpus)  # roughly uniform over 6 values
    # Who tells the story varies: the situation line is sometimes A's, sometimes B's.
    speakers = collections.Counter()
    for r in corpus:
        for line in _turns(r["dialogue"]):
            if any(s.replace("{topic}", r["topic"]) in line for s in st.EMOTION_TEMPLATES[r["theme"]]["situations"]):
                speakers[line[0]] += 1
                break
    assert speakers["A"] > 0.3 * len(corpus) and speakers["B"] > 0.3 * len(corpus)


def test_deterministic_and_seed_dependent():
    a = generate_dialogues(TOPICS[:5], list(EMOTIONS), 2, seed=7)
    b = generate_dialogues(TOPICS[:5], list(EMOTIONS), 2, seed=7)
    c = generate_dialogues(TOPICS[:5], list(EMOTIONS), 2, seed=8)
    assert a == b
    assert sum(x["dialogue"] != y["dialogue"] for x, y in zip(a, c)) > 0.9 * len(a)


def test_deterministic_across_processes():
    """Derived RNGs must not depend on Python's randomized hash()."""
    code = (
        "import json; from emolib.lm.synth_template import generate_dialogues as g;"
        "print(json.dumps(g(['chess', 'yoga'], ['anger', 'fear'], 2, seed=5)))"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    outs = []
    for hashseed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=hashseed, PYTHONPATH=root)
        res = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, cwd=root
        )
        outs.append(json.loads(res.stdout))
    assert outs[0] == outs[1] == generate_dialogues(["chess", "yoga"], ["anger", "fear"], 2, seed=5)


def test_no_duplicates(corpus):
    dialogues = [r["dialogue"] for r in corpus]
    assert len(set(dialogues)) == len(dialogues)
    many = generate_dialogues(["chess"], ["sadness"], 400, seed=1)
    assert len({r["dialogue"] for r in many}) == 400


def test_repeated_topic_still_unique():
    rows = generate_dialogues(["chess", "chess"], ["anger"], 5, seed=3)
    assert len({r["dialogue"] for r in rows}) == 10


def test_exhaustion_raises(monkeypatch):
    monkeypatch.setattr(st, "generate_dialogue", lambda *a, **k: "A: x\nB: y\nA: z")
    with pytest.raises(RuntimeError, match="attempts"):
        st.generate_dialogues(["chess"], ["anger"], 2, seed=0)


def test_implicit_has_no_emotion_words(corpus):
    implicit = [r for r in corpus if r["style"] == "implicit"]
    assert len(implicit) > 0.3 * len(corpus)
    for r in implicit:
        for emotion, rx in _LEX_RE.items():
            assert not rx.search(r["dialogue"]), (emotion, rx.search(r["dialogue"]).group(), r["dialogue"])
        assert st.lexicon_hits(r["dialogue"]) == {}


def test_explicit_names_own_emotion_only(corpus):
    explicit = [r for r in corpus if r["style"] == "explicit"]
    assert len(explicit) > 0.3 * len(corpus)
    for r in explicit:
        assert _LEX_RE[r["theme"]].search(r["dialogue"]), r["dialogue"]
        others = [e for e in EMOTIONS if e != r["theme"] and _LEX_RE[e].search(r["dialogue"])]
        assert not others, (others, r["dialogue"])


def test_explicit_uses_many_words():
    for emotion in EMOTIONS:
        rows = generate_dialogues(PLAIN_TOPICS[:20], [emotion], 5, seed=11, explicit_share=1.0)
        assert all(r["style"] == "explicit" for r in rows)
        words = collections.Counter(w for r in rows for w in st.lexicon_hits(r["dialogue"])[emotion])
        assert len(words) >= 8, (emotion, words)


def test_explicit_share_respected():
    assert all(r["style"] == "implicit" for r in generate_dialogues(TOPICS[:10], list(EMOTIONS), 2, 4, 0.0))
    assert all(r["style"] == "explicit" for r in generate_dialogues(TOPICS[:10], list(EMOTIONS), 2, 4, 1.0))
    rows = generate_dialogues(TOPICS, list(EMOTIONS), 2, seed=4, explicit_share=0.25)
    share = sum(r["style"] == "explicit" for r in rows) / len(rows)
    assert 0.15 < share < 0.35


@pytest.mark.parametrize("emotion", EMOTIONS)
def test_variety(emotion):
    rows = generate_dialogues(["chess"], [emotion], 300, seed=9)
    situations = [s.replace("{topic}", "chess") for s in st.EMOTION_TEMPLATES[emotion]["situations"]]
    first_situation = collections.Counter()
    sentence_df = collections.Counter()
    for r in rows:
        hit = next((s for line in _turns(r["dialogue"]) for s in situations if s in line), None)
        assert hit is not None, r["dialogue"]
        first_situation[hit] += 1
        sentence_df.update(set(_sentences(r["dialogue"])))
    assert len(first_situation) >= 12
    assert max(first_situation.values()) <= 0.15 * len(rows)
    sentence, count = sentence_df.most_common(1)[0]
    assert count <= 0.3 * len(rows), (sentence, count)
    assert len({r["dialogue"].split("\n")[0] for r in rows}) >= 30


def test_subset_stability():
    full = generate_dialogues(TOPICS, list(EMOTIONS), 2, seed=21)
    for topic in ("chess", "U.S. Senate"):
        alone = generate_dialogues([topic], list(EMOTIONS), 2, seed=21)
        assert alone == [r for r in full if r["topic"] == topic]
    some = generate_dialogues(TOPICS[:3], ["fear"], 2, seed=21)
    assert some == [r for r in full if r["topic"] in TOPICS[:3] and r["theme"] == "fear"]


def test_bad_emotion_and_style():
    with pytest.raises(ValueError, match="joy"):
        generate_dialogues(["chess"], ["anger", "joy"], 1, seed=0)
    with pytest.raises(ValueError, match="Anger"):
        generate_dialogue("chess", "Anger", random.Random(0), "explicit")
    with pytest.raises(ValueError, match="loud"):
        generate_dialogue("chess", "anger", random.Random(0), "loud")
    with pytest.raises(ValueError):
        generate_dialogues(["chess"], ["anger"], 1, seed=0, explicit_share=1.5)


def test_generate_dialogue_direct():
    rng = random.Random(0)
    for style in STYLES:
        for emotion in EMOTIONS:
            d = generate_dialogue("chess", emotion, rng, style)
            assert 3 <= len(_turns(d)) <= 8 and d.startswith("A: ")
            assert generate_dialogue("chess", emotion, random.Random(5), style) == generate_dialogue(
                "chess", emotion, random.Random(5), style
            )


def test_template_tables():
    for emotion in EMOTIONS:
        bank = st.EMOTION_TEMPLATES[emotion]
        assert len(bank["situations"]) >= 15
        assert len(bank["reactions"]) >= 12
        assert len(bank["followups"]) >= 10
        assert len(bank["closings"]) >= 8
        assert all("{topic}" in s for s in bank["situations"])
        for key, items in bank.items():
            assert len(set(items)) == len(items), (emotion, key)
            for t in items:
                hits = st.lexicon_hits(t)
                if key.startswith("explicit"):
                    assert set(hits) == {emotion}, (emotion, key, t, hits)
                else:
                    assert hits == {}, (emotion, key, t, hits)
                assert len(_SENT_END.findall(t)) <= 2, t
        words = {w for t in bank["explicit_self"] + bank["explicit_other"] for w in st.lexicon_hits(t)[emotion]}
        assert len(words) >= 8, (emotion, words)
    for key, items in st.NEUTRAL_TEMPLATES.items():
        for t in items:
            assert st.lexicon_hits(t) == {}, (key, t)
