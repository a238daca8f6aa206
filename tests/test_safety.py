"""Issue 11: run folders and artefacts that can be trusted. Each problem reproduced, and shown fixed: one line,
nothing executed, nothing lost."""

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from emolib import params, runner, safeio
from emolib.__main__ import main
from emolib.dataset import build_data, data
from emolib.emotions import EMOTIONS
from emolib.identify import record
from emolib.lm import classify
from emolib.params import ParamError
from emolib.report import compare

ROOT = Path(__file__).resolve().parent.parent
TINY = str(ROOT / "params/test-tiny.yaml")


def one_line(text: str) -> bool:
    """Exactly one non-empty line."""
    return text.count("\n") <= 1 and text.strip() != "" and "Traceback" not in text


# --- 1. a shared run folder must not execute code ---------------------------------------------------------------


class Evil:
    """Unpickling this runs a shell command that creates a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


def crafted_counts(run_dir: Path, marker: Path, fmt: str = "zip") -> Path:
    """A cache/counts.pt whose unpickling would run a command (torch's zip format, its legacy format, raw pickle)."""
    path = run_dir / "cache" / "counts.pt"
    path.parent.mkdir(parents=True)
    state = {"sums": Evil(marker), "tokens": torch.ones(2)}
    if fmt == "pickle":
        path.write_bytes(pickle.dumps(state))
    else:
        torch.save(state, path, _use_new_zipfile_serialization=fmt == "zip")
    return path


def tiny_neurons(run_dir: Path, **change) -> Path:
    """A neurons.json for the tiny random model (4 layers x 128)."""
    d = {
        "model": "tiny-random-llama",
        "n_layers": 4,
        "d_ff": 128,
        "emotions": ["anger", "fear"],
        "params": {},
        "n_selected": 3,
        "neurons": {"anger": [[0, 1], [3, 5]], "fear": [[1, 2]]},
        "some_future_key": {"x": 1},
    }
    d.update(change)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "neurons.json").write_text(json.dumps(d))
    return run_dir / "neurons.json"


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_the_crafted_pickle_is_live(tmp_path, fmt):
    """The fixture would run its command under the old loader (so the tests below can fail)."""
    marker = tmp_path / "pwned"
    path = crafted_counts(tmp_path / "run", marker, fmt)
    torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("fmt", ["zip", "legacy", "pickle"])
def test_counts_pt_is_loaded_without_running_code(tmp_path, fmt):
    marker = tmp_path / "pwned"
    path = crafted_counts(tmp_path / "run", marker, fmt)
    with pytest.raises(ValueError) as e:
        safeio.load_tensors(path)
    assert str(e.value).startswith(str(path)) and "rm '" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ValueError, match="cannot be loaded safely"):
        record.means_from_counts(tmp_path / "run")
    assert not marker.exists()


def test_classify_mode_mean_on_a_crafted_run_folder(tmp_path, capsys, monkeypatch):
    marker = tmp_path / "pwned"
    crafted_counts(tmp_path / "run", marker)
    tiny_neurons(tmp_path / "run")
    src = tmp_path / "in.jsonl"
    src.write_text('{"dialogue": "A: hi\\nB: hello"}\n')
    monkeypatch.setattr(classify, "load_classifier", lambda p: pytest.fail("model loaded"))
    code = main(
        [
            "classify",
            "--params",
            TINY,
            "--input",
            str(src),
            "--output",
            str(tmp_path / "o.jsonl"),
            "--neurons",
            str(tmp_path / "run" / "neurons.json"),
            "--ablate",
            "anger",
            "--mode",
            "mean",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and one_line(err) and "counts.pt" in err and not marker.exists()


def test_safe_loader_reads_a_genuine_counts_file(tmp_path):
    (tmp_path / "cache").mkdir()
    state = {
        "sums": torch.ones(4, 128, dtype=torch.float64),
        "tokens": torch.tensor([[2, 2], [2, 2]]),
        "emotions": ["anger", "fear"],
        "shape": (4, 128),
        "key": "abc",
        "done": 3,
        "seconds": 1.5,
    }
    torch.save(state, tmp_path / "cache" / "counts.pt")
    assert safeio.load_tensors(tmp_path / "cache" / "counts.pt")["emotions"] == ["anger", "fear"]
    means = record.means_from_counts(tmp_path, shape=(4, 128))
    assert means.shape == (4, 128) and float(means[0, 0]) == pytest.approx(1 / 8)
    with pytest.raises(ValueError, match="loaded model has 30 x 1536"):
        record.means_from_counts(tmp_path, shape=(30, 1536))


# --- 2. the EmoPrism cache follows the file's content; duplicates removed before the split ------------------------


def emoprism_file(path: Path, dialogues: list[str], shift: int = 0) -> list[dict]:
    """A small EmoPrism-format file: dialogue i has emotion i % 6 and topic t{i // 6 + shift} (of 4 topics)."""
    recs = [
        {
            "topic": f"t{(i // 6 + shift) % 4}",
            "dialogue": d,
            "theme": EMOTIONS[i % 6],
            "label": EMOTIONS[i % 6],
            "gpt-4o-mini": EMOTIONS[i % 6],
            "gemini-1.5-flash": None,
            "claude-3-haiku-20240307": EMOTIONS[i % 6],
        }
        for i, d in enumerate(dialogues)
    ]
    path.write_text(json.dumps(recs))
    return recs


def emoprism_params(tmp_path: Path, path: Path) -> dict:
    p = params.validate({"data_source": "emoprism", "data_path": str(path), "eval_fraction": 0.5})
    p["run_dir"] = str(tmp_path / "run")
    return p


def test_emoprism_cache_is_keyed_on_content_not_path(tmp_path):
    f = tmp_path / "emoprism.json"
    emoprism_file(f, [f"A: old {i}\nB: x" for i in range(12)])
    p = emoprism_params(tmp_path, f)
    rows, _ = build_data.synthesize(p, tmp_path / "cache")
    assert all("old" in r["dialogue"] for r in rows)
    emoprism_file(f, [f"A: new {i}\nB: x" for i in range(12)])  # replaced at the same path
    rows, _ = build_data.synthesize(p, tmp_path / "cache")
    assert rows and all("new" in r["dialogue"] for r in rows)


def test_emoprism_duplicates_are_removed_before_the_split_and_counted(tmp_path, capsys):
    f = tmp_path / "emoprism.json"
    texts = [f"A: line {i}\nB: x" for i in range(24)]
    dups = emoprism_file(f, texts[:6], shift=1) + emoprism_file(f, texts[:3], shift=2)  # same text, other topics
    f.write_text(json.dumps(emoprism_file(f, texts) + dups))  # nine duplicate records
    p = emoprism_params(tmp_path, f)
    dd, _, stats = build_data.build(p)
    assert stats["duplicates_removed"] == 9 and "9 duplicate dialogue(s) removed" in capsys.readouterr().out
    train, evl = set(dd["train"]["dialogue"]), set(dd["eval"]["dialogue"])
    assert not train & evl and len(train) + len(evl) == 24
    assert "duplicates_removed: 9" in (tmp_path / "run" / "data" / "README.md").read_text()


def test_corrupt_dialogues_cache_names_the_file_and_how_to_clear_it(tmp_path):
    f = tmp_path / "emoprism.json"
    emoprism_file(f, [f"A: d {i}\nB: x" for i in range(12)])
    p = emoprism_params(tmp_path, f)
    build_data.synthesize(p, tmp_path / "cache")
    (cached,) = (tmp_path / "cache").glob("dialogues-*.json")
    cached.write_text(cached.read_text()[:50])  # torn
    with pytest.raises(ValueError) as e:
        build_data.synthesize(p, tmp_path / "cache")
    msg = str(e.value)
    assert msg.startswith(str(cached)) and f"rm '{cached}'" in msg and "\n" not in msg
    cached.unlink()  # the command it names, and the cache is rebuilt
    assert build_data.synthesize(p, tmp_path / "cache")[0]


def test_truncated_json_gz_names_the_file(tmp_path):
    src = ROOT / "tests/fixtures/emoprism-mini.json.gz"
    bad = tmp_path / "emoprism.json.gz"
    bad.write_bytes(src.read_bytes()[: len(src.read_bytes()) // 2])
    with pytest.raises(ValueError) as e:
        data.load_emoprism(bad, list(EMOTIONS))
    assert str(bad) in str(e.value) and "truncated" in str(e.value) and "\n" not in str(e.value)


# --- 3. compare claims no agreement that isn't there ---------------------------------------------------------------


def fake_run(folder: Path, emotions: list[str], own_delta: dict[str, float], model: str = "tiny-random-llama"):
    """A finished run folder: neurons.json and an own_vs_random.csv with the given own-minus-random changes
    (emotions without one were not tested)."""
    neurons = {e: [[0, i]] for i, e in enumerate(emotions)}
    d = {
        "model": model,
        "n_layers": 4,
        "d_ff": 128,
        "emotions": emotions,
        "params": {},
        "n_selected": len(emotions),
        "neurons": neurons,
    }
    folder.mkdir(parents=True)
    (folder / "neurons.json").write_text(json.dumps(d))
    rows = [
        {
            "set": "paper",
            "emotion": e,
            "baseline_accuracy": 0.8,
            "own_minus_random_accuracy": own_delta.get(e, float("nan")),
            "verdict": "no detectable effect" if e in own_delta else "not tested",
        }
        for e in emotions
    ]
    pd.DataFrame(rows).to_csv(folder / "own_vs_random.csv", index=False)


def test_compare_limits_itself_to_shared_emotions_and_says_so(tmp_path):
    fake_run(tmp_path / "a", list(EMOTIONS), {e: 0.0 for e in EMOTIONS})
    fake_run(tmp_path / "b", ["anger", "fear", "sadness"], {"anger": 0.0, "fear": 0.0})  # sadness never ablated
    R = compare.load_runs([str(tmp_path / "a"), str(tmp_path / "b")])
    concl = compare.conclusions(R)
    assert list(concl.index) == ["anger", "fear", "sadness"]
    assert concl.loc["sadness", "b"] == "not measured"  # NaN is not "no clear effect"
    text = "\n".join(compare.agreement_lines(concl))
    assert "of 6" not in text and "agree on 2 of 3 shared emotions" in text
    assert "left out" in text and "disgust" in text and "Not measured in every run" in text and "sadness" in text


def test_compare_refuses_runs_without_a_shared_emotion(tmp_path, monkeypatch):
    fake_run(tmp_path / "a", ["anger", "fear"], {"anger": 0.0})
    fake_run(tmp_path / "b", ["sadness", "surprise"], {"sadness": 0.0})
    monkeypatch.setattr(runner, "execute", lambda *a, **k: pytest.fail("notebook executed"))
    with pytest.raises(ParamError, match="the runs share no emotion"):
        runner.compare([str(tmp_path / "a"), str(tmp_path / "b")], out=str(tmp_path / "cmp"))


# --- 4. classify trusts no neurons.json, no silent defaults, outputs checked before any model loads ---------------


def classify_cli(tmp_path, *extra, src=None, out=None):
    """The classify command on one dialogue (or src), its exit code."""
    if src is None:
        src = tmp_path / "in.jsonl"
        src.write_text('{"dialogue": "A: hi\\nB: hello", "label": "anger"}\n')
    return main(
        ["classify", "--params", TINY, "--input", str(src), "--output", str(out or tmp_path / "o.jsonl"), *extra]
    )


@pytest.mark.parametrize(
    "change,needle",
    [
        ({"neurons": {"anger": [[7, 1]], "fear": []}}, "[7, 1] outside layers 0..3"),
        ({"neurons": {"anger": [[0, 500]], "fear": []}}, "[0, 500] outside layers 0..3 and indices 0..127"),
        ({"neurons": {"anger": [[0, -1]], "fear": []}}, "[0, -1] outside"),
        ({"neurons": {"anger": [[0, 1.5]], "fear": []}}, "must be [layer, index] integer pairs"),
        ({"model": "smollm2-135m-instruct"}, "was made for model 'smollm2-135m-instruct', not 'tiny-random-llama'"),
        ({"neurons": {"anger": [[0, 1]]}}, "no list of [layer, index] pairs for fear"),
        ({"emotions": ["anger", "anger"]}, "lists an emotion twice"),
    ],
)
def test_bad_neurons_json_is_refused_before_the_model_loads(tmp_path, capsys, monkeypatch, change, needle):
    path = tiny_neurons(tmp_path / "run", **change)
    monkeypatch.setattr(classify, "load_classifier", lambda p: pytest.fail("model loaded"))
    assert classify_cli(tmp_path, "--neurons", str(path), "--ablate", "anger") == 2
    err = capsys.readouterr().err
    assert one_line(err) and needle in err and str(path) in err


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"model": "x"}', b"\xff\xfe{}"])
def test_malformed_neurons_json_is_one_line(tmp_path, capsys, content):
    path = tmp_path / "neurons.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    assert classify_cli(tmp_path, "--neurons", str(path), "--ablate", "anger") == 2
    err = capsys.readouterr().err
    assert one_line(err) and str(path) in err


def test_neurons_json_of_another_shape_is_refused_once_the_model_is_known(tmp_path, capsys):
    path = tiny_neurons(tmp_path / "run", n_layers=99)
    out = tmp_path / "o.jsonl"
    assert classify_cli(tmp_path, "--neurons", str(path), "--ablate", "anger", out=out) == 2
    err = capsys.readouterr().err
    assert one_line(err) and "99 layers x 128 neurons; the loaded model has 4 x 128" in err and not out.exists()


@pytest.mark.parametrize(
    "extra,needle",
    [
        (["--mode", "scale"], "--mode scale needs --scale"),
        (["--mode", "scale", "--scale", "nan"], "--scale must be a finite number"),
        (["--mode", "scale", "--scale", "inf"], "--scale must be a finite number"),
        (["--mode", "scale", "--scale", "-1"], "--scale must be a finite number from 0.0 to 10.0"),
        (["--scale", "0.3"], "--scale is only used with --mode scale"),
    ],
)
def test_scale_has_no_silent_default_and_must_be_finite(tmp_path, capsys, monkeypatch, extra, needle):
    path = tiny_neurons(tmp_path / "run")
    monkeypatch.setattr(classify, "load_classifier", lambda p: pytest.fail("model loaded"))
    assert classify_cli(tmp_path, "--neurons", str(path), "--ablate", "anger", *extra) == 2
    err = capsys.readouterr().err
    assert one_line(err) and needle in err


def test_output_path_checked_before_any_model_loads(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(classify, "load_classifier", lambda p: pytest.fail("model loaded"))
    assert classify_cli(tmp_path, out=tmp_path / "missing" / "o.jsonl") == 2
    err = capsys.readouterr().err
    assert one_line(err) and "folder" in err and "does not exist" in err
    assert classify_cli(tmp_path, out=tmp_path) == 2
    assert "is a folder" in capsys.readouterr().err


def test_output_equal_to_input_is_refused_and_the_input_kept(tmp_path, capsys, monkeypatch):
    src = tmp_path / "in.jsonl"
    src.write_text('{"dialogue": "A: hi\\nB: hello"}\n')
    before = src.read_text()
    monkeypatch.setattr(classify, "load_classifier", lambda p: pytest.fail("model loaded"))
    assert classify_cli(tmp_path, src=src, out=src) == 2
    assert classify_cli(tmp_path, src=src, out=tmp_path / "." / "in.jsonl") == 2
    os.symlink(src, tmp_path / "link.jsonl")
    assert classify_cli(tmp_path, src=src, out=tmp_path / "link.jsonl") == 2
    err = capsys.readouterr().err
    assert "is the input file" in err and src.read_text() == before


def test_scale_ablation_writes_strict_json(tmp_path):
    path = tiny_neurons(tmp_path / "run")
    out = tmp_path / "o.jsonl"
    assert (
        classify_cli(tmp_path, "--neurons", str(path), "--ablate", "all", "--mode", "scale", "--scale", "0.25", out=out)
        == 0
    )
    row = json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in output"))
    assert len(row["scores"]) == 6


# --- 5. parameter files: empty, NaN/inf, devices, duplicate emotions, emotions unlike the run's -----------------


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n"])
def test_empty_params_file_is_an_error(tmp_path, capsys, text):
    f = tmp_path / "empty.yaml"
    f.write_text(text)
    with pytest.raises(ParamError, match="parameter file is empty"):
        params.load(f)
    assert main(["run", str(f)]) == 2 and "is empty" in capsys.readouterr().err


NUMBER_KEYS = [k for k, p in params.SCHEMA.items() if p.kind in ("float", "list[float]")]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("key", NUMBER_KEYS)
def test_nan_and_inf_are_refused_for_every_number(key, bad):
    assert {"top_rate", "filter_quantile"} <= set(NUMBER_KEYS)
    value = [bad] if params.SCHEMA[key].kind == "list[float]" else bad
    with pytest.raises(ParamError, match=f"'{key}' must be a finite number"):
        params.validate({key: value}, "x.yaml")


def test_nan_from_yaml_fails_at_check(tmp_path, capsys):
    f = tmp_path / "p.yaml"
    f.write_text("top_rate: .nan\nfilter_quantile: .nan\n")
    assert main(["check", str(f)]) == 2
    err = capsys.readouterr().err
    assert one_line(err) and "'top_rate' must be a finite number" in err
    f.write_text("n_topics: .inf\n")
    assert main(["check", str(f)]) == 2 and "'n_topics' must be an integer" in capsys.readouterr().err


@pytest.mark.parametrize(
    "device,ok",
    [
        ("cuda:abc", False),
        ("cuda:", False),
        ("cuda:0x", False),
        ("cpu:0", False),
        ("cuda:1", True),
        ("cuda", True),
        ("mps", True),
        ("auto", True),
    ],
)
def test_device_strings_are_checked(device, ok):
    if ok:
        assert params.validate({"device": device})["device"] == device
    else:
        with pytest.raises(ParamError, match="'device' must be auto, cpu, cuda, cuda:N or mps"):
            params.validate({"device": device})


@pytest.mark.parametrize("emotions", [["anger", "anger"], ["joy", "happiness", "fear"], ["Fear", "fear"]])
def test_duplicate_emotions_are_refused(emotions):
    with pytest.raises(ParamError, match="'emotions' lists .* more than once"):
        params.validate({"emotions": emotions}, "x.yaml")


def test_emotions_unlike_the_runs_neurons_json_stop_before_stage_03(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    tiny_neurons(run_dir)  # anger, fear; the parameters study all six
    monkeypatch.setattr(runner, "execute", lambda *a, **k: pytest.fail("notebook executed"))
    with pytest.raises(ParamError) as e:
        runner.run(TINY, only=["03"], out=str(run_dir))
    assert "has emotions anger, fear; the parameters have anger, disgust" in str(e.value)
    assert "\n" not in str(e.value) and not (run_dir / "params.yaml").exists()


# --- 6. one line instead of a traceback -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "content,needle",
    [
        (b"top_rate: [0.1\n", "is not valid YAML (line 2"),
        (b"run_name: caf\xe9\n", "is not UTF-8 text (byte 0xe9"),
        (b"- a\n- b\n", "must be a mapping of key: value"),
    ],
)
def test_bad_params_files_are_one_line_naming_the_file(tmp_path, capsys, content, needle):
    f = tmp_path / "p.yaml"
    f.write_bytes(content)
    assert main(["check", str(f)]) == 2
    err = capsys.readouterr().err
    assert one_line(err) and needle in err and str(f) in err


def test_params_path_that_is_a_folder(tmp_path, capsys):
    assert main(["check", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert one_line(err) and "is a folder, not a parameter file" in err


def test_out_that_is_a_file_or_not_writable(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(runner, "execute", lambda *a, **k: pytest.fail("notebook executed"))
    f = tmp_path / "afile"
    f.write_text("keep me")
    assert main(["run", TINY, "--out", str(f)]) == 2
    err = capsys.readouterr().err
    assert one_line(err) and "is a file, not a folder" in err and f.read_text() == "keep me"
    assert main(["run", TINY, "--out", str(f / "run")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert main(["run", TINY, "--out", "/proc/emolib-run"]) == 2  # not writable, even for root
    err = capsys.readouterr().err
    assert one_line(err) and "cannot write into /proc/emolib-run" in err


def test_torn_last_prediction_line_is_skipped_recomputed_and_repaired(tmp_path):
    path = tmp_path / "predictions.jsonl"
    c = classify.PredictionCache(path)
    c.get_or_run("k1", lambda: ["anger"])
    c.get_or_run("k2", lambda: ["fear"])
    path.write_text(path.read_text()[:-12])  # the second line cut short
    with pytest.warns(UserWarning, match="line 2 is incomplete"):
        again = classify.PredictionCache(path)
    calls = []
    assert again.get_or_run("k1", lambda: calls.append(1) or ["x"]) == ["anger"] and not calls
    assert again.get_or_run("k2", lambda: calls.append(2) or ["fear"]) == ["fear"] and calls == [2]
    assert [json.loads(x)["key"] for x in path.read_text().splitlines()] == ["k1", "k2"]


def test_complete_last_line_without_newline_is_kept_and_ended(tmp_path):
    path = tmp_path / "predictions.jsonl"
    path.write_text('{"key": "k1", "preds": ["anger"]}')
    c = classify.PredictionCache(path)
    c.get_or_run("k2", lambda: ["fear"])
    assert [json.loads(x)["key"] for x in path.read_text().splitlines()] == ["k1", "k2"]


def test_corrupt_prediction_line_names_the_file_and_how_to_clear_it(tmp_path):
    path = tmp_path / "predictions.jsonl"
    path.write_text('{"key": "k1", "preds": ["anger"]}\ngarbage\n{"key": "k2", "preds": ["fear"]}\n')
    with pytest.raises(ValueError) as e:
        classify.PredictionCache(path)
    assert str(e.value).startswith(f"{path}: line 2 is corrupt") and f"rm '{path}'" in str(e.value)


def test_torn_counts_pt_names_the_file_and_how_to_clear_it(tmp_path):
    path = tmp_path / "cache" / "counts.pt"
    path.parent.mkdir()
    torch.save({"sums": torch.ones(4, 128), "tokens": torch.ones(2)}, path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ValueError) as e:
        record.means_from_counts(tmp_path)
    msg = str(e.value)
    assert msg.startswith(str(path)) and f"rm '{path}'" in msg and "\n" not in msg


def test_timings_are_written_atomically_and_a_damaged_file_rebuilt(tmp_path):
    (tmp_path / "timings.json").write_text('{"01_data_construction": 1')  # torn
    runner.record_timing(tmp_path, "02_neuron_identification", 3.0)
    assert json.loads((tmp_path / "timings.json").read_text()) == {"02_neuron_identification": 3.0}
    assert not list(tmp_path.glob(".*.tmp"))


# --- 7. one run per folder; showcase runs protected -----------------------------------------------------------


def test_second_process_on_a_locked_run_folder_gets_one_line(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with safeio.folder_lock(run_dir):
        with pytest.raises(safeio.FolderBusy, match=f"in use by another run \\(pid {os.getpid()}\\)"):
            with safeio.folder_lock(run_dir):
                pass
        r = subprocess.run(
            [sys.executable, "-m", "emolib", "run", TINY, "--out", str(run_dir)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == 2 and one_line(r.stderr) and "is in use by another run" in r.stderr
        assert not (run_dir / "params.yaml").exists()
    assert not (run_dir / ".emolib.lock").exists()
    with safeio.folder_lock(run_dir):  # released: the next run gets it
        pass


def test_run_into_a_folder_with_other_params_needs_force(tmp_path, monkeypatch):
    ran = []
    monkeypatch.setattr(runner, "_run_stages", lambda nbs, p, run_dir, **kw: ran.append(run_dir))
    showcase = tmp_path / "outputs" / "smollm2-135m"
    showcase.mkdir(parents=True)
    committed = (ROOT / "params/smollm2-135m.yaml").read_text()
    (showcase / "params.yaml").write_text(committed)
    monkeypatch.setattr(runner, "ROOT", tmp_path)
    mine = tmp_path / "mine.yaml"
    mine.write_text("seed: 1\nn_topics: 3\n")  # run_name defaults to the showcase run's
    with pytest.raises(ParamError) as e:
        runner.run(str(mine))
    msg = str(e.value)
    assert "differing: " in msg and "n_topics" in msg and "seed" in msg and "--force" in msg and "\n" not in msg
    assert (showcase / "params.yaml").read_text() == committed and not ran
    runner.run(str(ROOT / "params/smollm2-135m.yaml"))  # the same parameters: a resumed run, no --force needed
    runner.run(str(mine), force=True)
    assert len(ran) == 2 and (showcase / "params.yaml").read_text() == mine.read_text()
