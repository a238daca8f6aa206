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
    assert (
        main(["classify", "--params", str(ROOT / "params/test-tiny.yaml"), "--input", str(src), "--output", str(out)])
        == 0
    )
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 5 and [r.get("dialogue", r.get("text")) for r in rows] == texts[:4] + [texts[5]]
    assert all(r["prediction"] in r["scores"] and len(r["scores"]) == 6 for r in rows)
    printed = capsys.readouterr().out
    assert "wrote 5 predictions" in printed and "overall" in printed


def test_classify_with_ablation(tmp_path, dialogues):
    texts, _ = dialogues
    src = tmp_path / "in.jsonl"
    _write(src, [{"dialogue": t} for t in texts[:3]])
    ns = {
        "model": "tiny-random-llama",
        "n_layers": 4,
        "d_ff": 128,
        "emotions": ["anger", "fear"],
        "params": {},
        "n_selected": 2,
        "neurons": {"anger": [[0, 1], [3, 5]], "fear": [[1, 2]]},
    }
    (tmp_path / "neurons.json").write_text(json.dumps(ns))
    for target in ("anger", "all"):
        out = tmp_path / f"pred-{target}.jsonl"
        assert (
            main(
                [
                    "classify",
                    "--params",
                    str(ROOT / "params/test-tiny.yaml"),
                    "--input",
                    str(src),
                    "--output",
                    str(out),
                    "--neurons",
                    str(tmp_path / "neurons.json"),
                    "--ablate",
                    target,
                ]
            )
            == 0
        )
        assert len(out.read_text().splitlines()) == 3


@pytest.mark.parametrize(
    "content,needle",
    [
        ('{"dialogue": "A: hi"}\nnot json\n', "line 2 of"),
        ('{"label": "anger"}\n', "needs a non-empty 'dialogue' or 'text'"),
        ('{"dialogue": "A: hi", "label": "boredom"}\n', "unknown emotion 'boredom'"),
        ("\n", "has no dialogues"),
    ],
)
def test_bad_input_files(tmp_path, capsys, content, needle):
    src = tmp_path / "in.jsonl"
    src.write_text(content)
    code = main(
        [
            "classify",
            "--params",
            str(ROOT / "params/test-tiny.yaml"),
            "--input",
            str(src),
            "--output",
            str(tmp_path / "o.jsonl"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and needle in err and err.count("\n") == 1


def test_ablate_needs_neurons(tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text('{"dialogue": "A: hi"}\n')
    assert (
        main(
            [
                "classify",
                "--params",
                str(ROOT / "params/test-tiny.yaml"),
                "--input",
                str(src),
                "--output",
                str(tmp_path / "o.jsonl"),
                "--ablate",
                "anger",
            ]
        )
        == 2
    )
    assert "--ablate needs --neurons" in capsys.readouterr().err


def test_lint_command_reports_problems_and_exits_1(tmp_path, capsys):
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x", metadata={"tags": ["parameters"]})]
    nbformat.write(nb, tmp_path / "06_model_comparison.ipynb")
    assert main(["lint", str(tmp_path)]) == 1
    assert "06_model_comparison.ipynb cell 0: parameter cell" in capsys.readouterr().out
    nb.cells[0].metadata["jupyter"] = {"source_hidden": True}
    nbformat.write(nb, tmp_path / "06_model_comparison.ipynb")
    assert main(["lint", str(tmp_path)]) == 0 and "no problems" in capsys.readouterr().out
    assert main(["lint", str(tmp_path / "missing")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_quick_timings_record_and_the_runtime_line(tmp_path):
    from emolib import runner

    path = tmp_path / "quick-timings.json"
    assert "no quick run is recorded yet" in runner.runtime_line("03_ablation", 12.3, path)
    runner.record_quick_timing("03_ablation", 41.6, path)
    line = runner.runtime_line("03_ablation", 12.3, path)
    assert line.startswith("Runtime: this run took 12 s") and "params/quick.yaml` it takes 42 s (measured 20" in line
    assert "no quick run" in runner.runtime_line("04_layer_analysis", None, path)


def test_papermill_kernel_talks_over_ipc():
    """No TCP socket, so the kernel has no 'running over TCP without encryption' warning to give."""
    import os

    from emolib import runner

    c = runner.kernel_config("/tmp/x")
    if os.name == "posix":
        assert c.KernelManager.transport == "ipc" and c.KernelManager.ip == "/tmp/x/kernel"


def test_exercises_command_refuses_bad_input_with_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(["exercises", "--out", str(tmp_path / "file" / "sub")]) == 2
    assert "--out" in capsys.readouterr().err
    assert main(["exercises", "--out", str(tmp_path / "ex"), "--params", str(tmp_path / "missing.yaml")]) == 2
    assert "not found" in capsys.readouterr().err and not any((tmp_path / "ex").glob("*.ipynb"))


def test_plan_command_prints_params_lines_and_refuses_a_bad_budget(capsys, monkeypatch):
    """`plan` times the scorer (forced here, so the test is exact) and prints the lines to paste; a bad budget is
    one line before any model loads."""
    monkeypatch.setenv("EMOLIB_THROUGHPUT", "200")
    assert main(["plan", str(ROOT / "params/test-tiny.yaml"), "--budget-min", "2"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0] == "n_random_sets: 3" and out[1].startswith("items_per_emotion: ")
    assert "at 200.0 item-masks/s (budget 2 min)" in out[1]
    for bad in ("0", "-3", "nan"):
        assert main(["plan", str(ROOT / "params/test-tiny.yaml"), "--budget-min", bad]) == 2
        assert "--budget-min" in capsys.readouterr().err
