"""The eval split is independent of the studied model and disjoint from train; the external eval slot."""

import json
import random
from collections import Counter
from pathlib import Path

import pytest

from emolib import params
from emolib.dataset import build_data, data
from emolib.emotions import EMOTIONS
from emolib.lm import synth_template as st
from emolib.params import ParamError

FIXTURES = Path(__file__).parent / "fixtures"
STUDIED = "smollm2-135m-instruct"
ANNOTATORS = [STUDIED, "gemma3-270m", "minilm"]


def _p(tmp_path, **kw) -> dict:
    """A validated parameter set for a small template run under tmp_path."""
    p = params.validate({"n_topics": 10, "annotators": ANNOTATORS, "model": STUDIED, **kw})
    return {**p, "run_dir": str(tmp_path / "run")}


def _fake_annotate(studied_vote):
    """annotate.annotate stand-in: the studied model votes studied_vote(theme, i), the others follow fixed rules."""

    def annotate(name, dialogues, emotions, p, cache_dir, lm_voter=None):
        themes = [FAKE_THEMES[d] for d in dialogues]
        if name == STUDIED:
            return [studied_vote(t, i) for i, t in enumerate(themes)]
        rng = random.Random(name)  # each other annotator: right 70% of the time, else a fixed wrong label
        return [t if rng.random() < 0.7 else emotions[(emotions.index(t) + 1) % len(emotions)] for t in themes]

    return annotate


FAKE_THEMES: dict[str, str] = {}


def _labelled(p, studied_vote, monkeypatch):
    """label() on the run's dialogues with fake annotators; rows carry their split."""
    rows = build_data.with_splits(build_data.synthesize(p, Path(p["run_dir"]) / "cache")[0], p)
    FAKE_THEMES.update({r["dialogue"]: r["theme"] for r in rows})
    monkeypatch.setattr(build_data.annotate, "annotate", _fake_annotate(studied_vote))
    return build_data.vote(rows, p, Path(p["run_dir"]) / "cache")


def _wrong(theme, i):
    return EMOTIONS[(EMOTIONS.index(theme) + 2) % 6]


def _right(theme, i):
    return theme


def _noise(theme, i):
    return random.Random(i).choice(EMOTIONS)


# --- disjointness -------------------------------------------------------------------------------------------------


def test_topic_split_is_seeded_disjoint_and_covers_every_topic():
    topics = data.sample_topics("all", 40, 0)
    s = data.split_topics(topics, 0.4, 0)
    assert s == data.split_topics(list(reversed(topics)), 0.4, 0)  # order of the list does not matter
    assert set(s) == set(topics) and Counter(s.values()) == {"eval": 16, "train": 24}
    assert s != data.split_topics(topics, 0.4, 1)
    assert Counter(data.split_topics(topics[:3], 0.01, 0).values()) == {"eval": 1, "train": 2}  # both non-empty
    assert Counter(data.split_topics(topics[:3], 1.0, 0).values()) == {"eval": 2, "train": 1}
    with pytest.raises(ValueError, match="n_topics: .*at least 2 distinct topics"):
        data.split_topics(["chess", "chess"], 0.4, 0)


@pytest.mark.parametrize("emotion", EMOTIONS)
def test_template_pools_partition_the_story_tables(emotion):
    train, evl = st.pool(emotion, "train"), st.pool(emotion, "eval")
    full = st.EMOTION_TEMPLATES[emotion]
    for k in st.PARTITIONED:
        assert not set(train[k]) & set(evl[k]), k
        assert sorted(train[k] + evl[k]) == sorted(full[k]), k
        assert len(evl[k]) >= 4 and len(train[k]) >= 7, k
    for k in set(full) - set(st.PARTITIONED):
        assert train[k] == evl[k] == full[k]
    assert st.pool(emotion, None) == full
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        st.pool(emotion, "dev")


def test_split_dialogues_use_only_their_pool():
    topics = ["chess", "yoga", "tax law", "opera"]
    for split, _other in (("train", "eval"), ("eval", "train")):
        rows = st.generate_dialogues(topics, list(EMOTIONS), 25, seed=3, split=split)
        assert len({r["dialogue"] for r in rows}) == len(rows)
        for r in rows:
            own = st.pool(r["theme"], split)
            assert any(s.replace("{topic}", r["topic"]) in r["dialogue"] for s in own["situations"]), r["dialogue"]
            assert st.foreign_templates(r["dialogue"], r["topic"], r["theme"], split) == [], r["dialogue"]
        # the check can fail: the unpartitioned generator does use the other pool's templates
        mixed = st.generate_dialogues(topics, list(EMOTIONS), 25, seed=3)
        assert sum(bool(st.foreign_templates(r["dialogue"], r["topic"], r["theme"], split)) for r in mixed) > 0.5 * len(
            mixed
        )
    assert st.generate_dialogues(topics, ["fear"], 3, 3, split="eval") == st.generate_dialogues(
        topics, ["fear"], 3, 3, split="eval"
    )


def test_stage1_dialogues_are_disjoint_by_topic_and_pool(tmp_path):
    p = _p(tmp_path, n_topics=12, eval_fraction=0.25)
    rows, _ = build_data.synthesize(p, tmp_path / "cache")
    by = {s: [r for r in rows if r["split"] == s] for s in ("train", "eval")}
    assert {len({r["topic"] for r in by[s]}) for s in by} == {3, 9}
    assert not {r["topic"] for r in by["train"]} & {r["topic"] for r in by["eval"]}
    assert len(by["eval"]) == 3 * 6 * 2 and len(rows) == 12 * 6 * 2
    for r in rows:
        assert st.foreign_templates(r["dialogue"], r["topic"], r["theme"], r["split"]) == []
    other = build_data.synthesize({**p, "eval_fraction": 0.5}, tmp_path / "cache")[0]  # not served from the cache
    assert Counter(r["split"] for r in other)["eval"] == 6 * 6 * 2


def test_split_by_topic_keeps_splits_and_caps(tmp_path):
    rows = [
        {"label": e, "topic": f"t{i}", "split": "eval" if i < 4 else "train", "dialogue": f"{e}{i}"}
        for e in EMOTIONS
        for i in range(10)
    ]
    tr, ev = data.split_by_topic(rows, 0.4, 0, None, list(EMOTIONS))
    assert len(ev) == 24 and len(tr) == 36 and {r["split"] for r in ev} == {"eval"}
    tr, ev = data.split_by_topic(rows, 0.4, 0, 5, list(EMOTIONS))
    assert Counter(r["label"] for r in ev) == {e: 2 for e in EMOTIONS}
    assert Counter(r["label"] for r in tr) == {e: 3 for e in EMOTIONS}
    with pytest.raises(ValueError, match="no kept dialogue for anger in the eval split"):
        data.split_by_topic(
            [r for r in rows if not (r["label"] == "anger" and r["split"] == "eval")], 0.4, 0, None, list(EMOTIONS)
        )


# --- eval labels do not use the studied model ------------------------------------------------------------------------


def test_scaled_agreement_rule():
    assert [data.scaled_agreement(m, 4) for m in (1, 2, 3, 4)] == [1, 2, 3, 4]  # train: unchanged
    assert [data.scaled_agreement(m, 3) for m in (1, 2, 3, 4)] == [1, 2, 3, 3]  # 3 of 4 -> 3 of 3
    assert [data.scaled_agreement(m, 2) for m in (1, 2, 3, 4)] == [1, 1, 2, 2]
    assert [data.scaled_agreement(m, 1) for m in (1, 2, 3, 4)] == [1, 1, 1, 1]  # theme alone


def test_eval_voters_drop_the_studied_model():
    assert data.eval_voters(ANNOTATORS, STUDIED, True) == ["gemma3-270m", "minilm"]
    assert data.eval_voters(ANNOTATORS, STUDIED, False) == ANNOTATORS
    assert data.eval_voters(ANNOTATORS, "gemma3-270m", True) == [STUDIED, "minilm"]
    # a preset and its hub id are the same model
    hub = ["meta-llama/llama-3.1-8b-instruct", "gemma3-270m", "minilm"]
    assert data.eval_voters(hub, "llama-3.1-8b-instruct", True) == ["gemma3-270m", "minilm"]
    assert data.eval_voters(["tiny-random-llama", "tiny-random-llama", "minilm"], "tiny-random-llama", True) == [
        "minilm"
    ]


@pytest.mark.parametrize("min_agreement", [1, 2, 3, 4])
def test_studied_model_cannot_keep_or_drop_an_eval_item(tmp_path, monkeypatch, min_agreement):
    p = _p(tmp_path, min_agreement=min_agreement)
    runs = {
        name: _labelled(p, vote, monkeypatch)
        for name, vote in (("wrong", _wrong), ("right", _right), ("noise", _noise))
    }
    ev = {k: df[df["split"] == "eval"] for k, df in runs.items()}
    tr = {k: df[df["split"] == "train"] for k, df in runs.items()}
    assert len(ev["wrong"]) == 4 * 6 * 2
    for k in ("right", "noise"):
        assert ev[k]["label"].fillna("-").tolist() == ev["wrong"]["label"].fillna("-").tolist()
    if min_agreement > 1:  # the test can fail: on train items the studied model's vote does change the outcome
        assert tr["right"]["label"].fillna("-").tolist() != tr["wrong"]["label"].fillna("-").tolist()
    # with the exclusion switched off, the studied model decides eval items too
    incl = _p(tmp_path, min_agreement=3, eval_exclude_studied=False)
    a, b = (_labelled(incl, v, monkeypatch) for v in (_right, _wrong))
    assert a.loc[a["split"] == "eval", "kept"].sum() > b.loc[b["split"] == "eval", "kept"].sum()


def test_eval_rule_is_three_of_three(tmp_path, monkeypatch):
    df = _labelled(_p(tmp_path), _right, monkeypatch)
    ev = df[df["split"] == "eval"]
    agree = (ev["gemma3-270m"] == ev["theme"]) & (ev["minilm"] == ev["theme"])
    assert ev["kept"].tolist() == agree.tolist() and 0 < agree.sum() < len(ev)
    assert (ev.loc[ev["kept"], "label"] == ev.loc[ev["kept"], "theme"]).all()


def test_build_saves_disjoint_splits_and_unfiltered_eval(tmp_path, monkeypatch):
    p = _p(tmp_path, n_topics=16)
    rows = build_data.with_splits(build_data.synthesize(p, Path(p["run_dir"]) / "cache")[0], p)
    FAKE_THEMES.update({r["dialogue"]: r["theme"] for r in rows})
    monkeypatch.setattr(build_data.annotate, "annotate", _fake_annotate(_wrong))
    dd, df, stats = build_data.build(p)
    loaded = data.load_splits(p["run_dir"])
    assert set(loaded) == {"train", "eval"} and "split" not in loaded["eval"].column_names
    assert not set(loaded["train"]["topic"]) & set(loaded["eval"]["topic"])
    assert len(set(loaded["eval"]["topic"])) == stats["eval_topics"] == round(16 * 0.4)
    unf = data.load_eval_unfiltered(p["run_dir"])
    assert len(unf) == stats["eval_unfiltered"] == stats["eval_topics"] * 6 * 2 > len(loaded["eval"])
    assert all(r["label"] == r["theme"] for r in unf) and any(r["vote"] is None for r in unf)
    assert {r["dialogue"] for r in unf} >= set(loaded["eval"]["dialogue"])
    assert stats["eval_voters"] == ["gemma3-270m", "minilm"]
    report = dict(build_data.eval_construction(df, p).values.tolist())
    assert report["topics: train / eval / shared"] == "10 / 6 / 0"
    assert report["dialogues using a template of the other split's pool"] == "0"
    assert report["votes on eval items"] == "theme + gemma3-270m, minilm; kept at >= 3 of 3"
    assert "(theme + 3 annotators) agree" in (Path(p["run_dir"]) / "data" / "README.md").read_text()


# --- external eval slot ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["external-eval.jsonl", "external-eval.csv"])
def test_external_eval_fixture(name):
    rows = data.load_eval_file(FIXTURES / name, list(EMOTIONS))
    assert len(rows) == 12 and Counter(r["label"] for r in rows) == {e: 2 for e in EMOTIONS}  # joy -> happiness
    assert all(set(r) == {"dialogue", "label"} and r["dialogue"].startswith("A: ") for r in rows)
    only = data.load_eval_file(FIXTURES / name, ["anger", "fear"])
    assert [r["label"] for r in only] == ["anger", "anger", "fear", "fear"]


def test_external_eval_jsonl_and_csv_agree():
    a = data.load_eval_file(FIXTURES / "external-eval.jsonl", list(EMOTIONS))
    b = data.load_eval_file(FIXTURES / "external-eval.csv", list(EMOTIONS))
    assert a == b


@pytest.mark.parametrize(
    "name,content,needle",
    [
        ("x.txt", "hi", "must be a .jsonl, .json, .csv file"),
        ("x.jsonl", "", "holds no records"),
        ("x.jsonl", '{"dialogue": "A: hi"\n', "is not a readable JSON-lines file"),
        ("x.jsonl", json.dumps({"dialogue": "A: hi"}), "record 1 of .* needs a non-empty 'dialogue' \\(or 'text'\\)"),
        ("x.jsonl", json.dumps({"text": "  ", "label": "fear"}), "record 1 .* needs a non-empty"),
        ("x.jsonl", json.dumps({"dialogue": "A: hi", "label": "boredom"}), "unknown emotion 'boredom'"),
        ("x.jsonl", json.dumps(["A: hi", "fear"]), "record 1 .* needs"),
        ("x.csv", "dialogue,emotion\nA: hi,fear\n", "record 1 .* needs .* 'label'"),
        ("x.csv", "text,label\nA: hi,fear\n,anger\n", "record 2 .* needs a non-empty"),
        ("x.csv", "text,label\n", "holds no records"),
        (
            "x.jsonl",
            json.dumps({"dialogue": "A: hi", "label": "sadness"}),
            "no record labelled with one of anger, fear",
        ),
    ],
)
def test_external_eval_bad_files(tmp_path, name, content, needle):
    f = tmp_path / name
    f.write_text(content)
    with pytest.raises(ValueError, match=needle) as e:
        data.load_eval_file(f, ["anger", "fear"])
    assert str(e.value).startswith("eval_path: ") and "\n" not in str(e.value)


def test_external_eval_missing_file(tmp_path):
    with pytest.raises(ValueError, match="eval_path: file not found"):
        data.load_eval_file(tmp_path / "none.jsonl", list(EMOTIONS))


# --- parameters ------------------------------------------------------------------------------------------------------


def test_eval_params_defaults_and_file_source():
    p = params.validate({})
    assert p["eval_exclude_studied"] is True and p["eval_source"] == "split" and p["eval_path"] is None
    f = str(FIXTURES / "external-eval.csv")
    q = params.validate({"eval_source": "file", "eval_path": f})
    assert q["eval_path"] == f
    assert set(params.for_notebook(q, "03")) >= {"eval_source", "eval_path"}
    assert "eval_exclude_studied" not in params.for_notebook(q, "03")


@pytest.mark.parametrize(
    "raw,needle",
    [
        ({"eval_source": "file"}, "'eval_path' is required when eval_source is file"),
        ({"eval_source": "external"}, "'eval_source' must be one of split, file"),
        ({"eval_source": "file", "eval_path": "/no/such/eval.jsonl"}, "'eval_path' names a file that does not exist"),
        ({"eval_path": str(FIXTURES / "external-eval.jsonl")}, "'eval_path' is only used with eval_source: file"),
        ({"eval_source": "file", "eval_path": str(FIXTURES / "README.md")}, "'eval_path' must end in .jsonl, .json"),
        ({"eval_exclude_studied": "yes"}, "'eval_exclude_studied' must be true or false"),
        ({"n_topics": 1}, "'n_topics' must be >= 2"),
    ],
)
def test_eval_params_errors(raw, needle):
    with pytest.raises(ParamError) as e:
        params.validate(raw, "x.yaml")
    assert needle in str(e.value) and "\n" not in str(e.value) and str(e.value).startswith("x.yaml: ")
