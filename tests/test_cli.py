"""python -m emolib classify on a small file; bad files fail with one clear line before any model loads."""

import json
from pathlib import Path

import pytest

from emolib.__main__ import main

ROOT = Path(__file__).resolve().parent.parent


def _write(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def test_classify_command_on_a_small_file(tmp_path, capsys, dialogues):
    texts, emos = dialogues
    src = tmp_path / "in.jsonl"
    _write(src, [{"dialogue": t, "label": e} for t, e in zip(texts[:4], emos[:4])] + [{"text": texts[5]}])
    out = tmp_path / "pred.jsonl"
    assert main(["classify", "--params", str(ROOT / "params/test-tiny.yaml"), "--input", str(src),
                 "--output", str(out)]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 5 and [r.get("dialogue", r.get("text")) for r in rows] == texts[:4] + [texts[5]]
    assert all(r["prediction"] in r["scores"] and len(r["scores"]) == 6 for r in rows)
    printed = capsys.readouterr().out
    assert "wrote 5 predictions" in printed and "overall" in printed


def test_classify_with_ablation(tmp_path, dialogues):
    texts, _ = dialogues
    src = tmp_path / "in.jsonl"
    _write(src, [{"dialogue": t} for t in texts[:3]])
    ns = {"model": "tiny-random-llama", "n_layers": 4, "d_ff": 128, "emotions": ["anger", "fear"], "params": {},
          "n_selected": 2, "neurons": {"anger": [[0, 1], [3, 5]], "fear": [[1, 2]]}}
    (tmp_path / "neurons.json").write_text(json.dumps(ns))
    for target in ("anger", "all"):
        out = tmp_path / f"pred-{target}.jsonl"
        assert main(["classify", "--params", str(ROOT / "params/test-tiny.yaml"), "--input", str(src), "--output",
                     str(out), "--neurons", str(tmp_path / "neurons.json"), "--ablate", target]) == 0
        assert len(out.read_text().splitlines()) == 3


@pytest.mark.parametrize("content,needle", [
    ('{"dialogue": "A: hi"}\nnot json\n', "line 2 of"),
    ('{"label": "anger"}\n', "needs a non-empty 'dialogue' or 'text'"),
    ('{"dialogue": "A: hi", "label": "boredom"}\n', "unknown emotion 'boredom'"),
    ('\n', "has no dialogues"),
])
def test_bad_input_files(tmp_path, capsys, content, needle):
    src = tmp_path / "in.jsonl"
    src.write_text(content)
    code = main(["classify", "--params", str(ROOT / "params/test-tiny.yaml"), "--input", str(src),
                 "--output", str(tmp_path / "o.jsonl")])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and err.count("\n") == 1


def test_ablate_needs_neurons(tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text('{"dialogue": "A: hi"}\n')
    assert main(["classify", "--params", str(ROOT / "params/test-tiny.yaml"), "--input", str(src),
                 "--output", str(tmp_path / "o.jsonl"), "--ablate", "anger"]) == 2
    assert "--ablate needs --neurons" in capsys.readouterr().err
